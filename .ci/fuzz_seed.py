"""Seeds a fresh demo server for contract fuzzing and writes one
schemathesis configuration per role.

Without real objects almost every `{id}` the fuzzer draws is unknown (404),
so the answers about existing submissions, cases, attachments and messages
would never be checked against the document. This files what the demo
journey files (an application with a photo, a nursery report, a request for
more information), then writes schemathesis.toml plus, for each role, a
dictionary of that role's own ids that the fuzzer uses for half of the ids
it sends.

usage: fuzz_seed.py BASE_URL SCHEMATHESIS_TOML OUTPUT_DIR
"""

import json
import struct
import sys
import urllib.request
import uuid
import zlib
from pathlib import Path

PASSWORD = "onestop-demo"


def call(base, method, path, token=None, body=None, raw=None, content_type=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", content_type or "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return response.headers, (json.loads(text) if text else None)


def png():
    """A small valid PNG, made here so the repository needs no binary file."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x80\x00" * 16 for _ in range(16))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def main():
    base, config, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    def api(method, path, token=None, **kwargs):
        return call(base, method, path, token, **kwargs)

    def sign_in(username):
        return api("POST", "/v1/auth/token", body={"username": username, "password": PASSWORD})[1]["access_token"]

    def upload(token):
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="page.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode() + png() + f"\r\n--{boundary}--\r\n".encode()
        return api("POST", "/v1/attachments", token, raw=body,
                   content_type=f"multipart/form-data; boundary={boundary}")[1]["id"]

    mother = sign_in("mother1")
    api("POST", "/v1/me/consents", mother, body={"purpose": "shared_facts"})
    photo = upload(mother)
    application = api("POST", "/v1/submissions", mother, body={"services": [
        {"service": "childcare_allowance", "attachments": [photo]},
        {"service": "childbirth_subsidy"},
        {"service": "electricity_bill_cut"},
    ]})[1]

    teacher = sign_in("teacher1")
    page = upload(teacher)
    report = api("POST", "/v1/submissions", teacher, body={"form": {
        "form": "nursery_subsidy_final_accounts",
        "office": "muni-gangnam",
        "fields": {"fiscal_year": 2025, "subsidy_received_krw": 12000000, "subsidy_spent_krw": 11800000},
        "attachments": [page],
    }})[1]

    official = sign_in("official.municipality")
    review = [c["id"] for c in api("GET", "/v1/review/cases?status=submitted", official)[1]["items"]]
    asked = application["cases"][0]["id"]
    api("POST", f"/v1/review/cases/{asked}/claim", official)
    etag = api("GET", f"/v1/review/cases/{asked}", official)[0]["ETag"]
    api("POST", f"/v1/review/cases/{asked}/decision", official, headers={"If-Match": etag},
        body={"outcome": "info_requested", "reason": "Please add the birth certificate."})
    inbox = [m["id"] for m in api("GET", "/v1/inbox", mother)[1]["items"]]

    def own(submission):
        return [submission["id"]], [c["id"] for c in submission["cases"]]

    mother_submissions, mother_cases = own(application)
    teacher_submissions, teacher_cases = own(report)
    ids = {
        "applicant": {
            "submission": mother_submissions,
            "case": mother_cases,
            "attachment": [photo],
            "message": inbox or [str(uuid.uuid4())],
        },
        "organisation-member": {
            "submission": teacher_submissions,
            "case": teacher_cases,
            "attachment": [page],
        },
        "official": {"review-case": review, "attachment": [photo, page]},
    }
    operations = {
        "submission": ["getSubmission", "withdrawSubmission"],
        "case": ["createSupplement", "withdrawCase"],
        "attachment": ["getAttachment", "getAttachmentThumbnail"],
        "message": ["markInboxRead"],
        "review-case": ["getReviewCase", "claimReviewCase", "decideReviewCase", "sendCaseDocument"],
    }
    shared = config.read_text()
    for role, kinds in ids.items():
        lines = [shared, "", "# Ids of objects the seeding made, for this role."]
        for kind, values in kinds.items():
            lines += ["", "[[operations]]",
                      f"include-operation-id = {json.dumps(operations[kind])}",
                      f'parameters = {{ "path.id" = {{ dictionary = "{kind}", probability = 0.5 }} }}']
        lines += ["", "[dictionaries]"]
        lines += [f'"{kind}" = {{ values = {json.dumps(values)} }}' for kind, values in kinds.items()]
        (out / f"fuzz-{role}.toml").write_text("\n".join(lines) + "\n")
    (out / "fuzz-anonymous.toml").write_text(shared)
    print(f"seeded: {len(review)} open cases for the official, {len(inbox)} inbox messages for the applicant")


if __name__ == "__main__":
    main()
