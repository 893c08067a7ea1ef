//! What the native apps code against, generated from the code itself: the
//! OpenAPI document, the problem types, the push payloads for Android and
//! iOS, and the event schema on the Redis stream. The files are committed
//! beside this crate; a test fails when the code and the files disagree,
//! and `cargo run -p onestop-mobile-contract --bin write-contract` writes
//! them anew.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use onestop_model::{EventKind, StreamEvent};
use uuid::Uuid;

/// The folder of the committed contract files.
pub fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every contract file, by its path relative to [`contract_dir`], with the
/// content the code produces now.
pub fn generated_files() -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("openapi.json", openapi_json()),
        ("problem-types.md", problem_types_markdown()),
        (
            "events/case-decided.example.json",
            pretty(&serde_json::to_value(example_event()).unwrap()),
        ),
    ];
    files.extend(push_examples());
    files
}

/// The OpenAPI document of the server.
pub fn openapi_json() -> String {
    let spec = onestop_server::api::service().server("/").spec();
    let value: serde_json::Value = serde_json::from_str(&spec).expect("the spec is JSON");
    pretty(&value)
}

fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    text.push('\n');
    text
}

pub fn problem_types_markdown() -> String {
    let mut text = String::from(
        "# Problem types\n\n\
         Every error is an RFC 9457 problem (`application/problem+json`) whose `type` is\n\
         `urn:onestop:problem:<kind>`. Apps switch on `type`, show `detail` to people, and\n\
         wait `retry_after` seconds (also in `Retry-After`) where it is given.\n\n\
         | kind | status | meaning |\n|---|---|---|\n",
    );
    for (kind, status, meaning) in onestop_server::error::PROBLEM_KINDS {
        text.push_str(&format!("| `{kind}` | {status} | {meaning} |\n"));
    }
    text
}

/// A decision as it travels on the stream. Fixed ids so the file is stable.
pub fn example_event() -> StreamEvent {
    StreamEvent {
        event_id: Uuid::parse_str("0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
        kind: EventKind::CaseDecided,
        occurred_at: Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap(),
        recipient_user_id: Uuid::parse_str("5f0c6d1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f").unwrap(),
        submission_id: Uuid::parse_str("0193a1b0-1111-7222-8333-444455556666").unwrap(),
        case_id: Some(Uuid::parse_str("0193a1b0-aaaa-7bbb-8ccc-ddddeeeeffff").unwrap()),
        status: Some("approved".into()),
    }
}

/// Example pushes, rendered by the notifier's own code from the shipped
/// catalog: what FCM and APNs receive for a decision (in Vietnamese) and
/// for a document sent back (in Korean).
pub fn push_examples() -> Vec<(&'static str, String)> {
    use onestop_notifier::payload::{apns_headers, apns_payload, fcm_message, RenderedPush};
    let catalog = onestop_model::catalog::Catalog::embedded();
    let decided = example_event();
    let mut document = example_event();
    document.kind = EventKind::DocumentReturned;
    document.event_id = Uuid::parse_str("0193a1b2-7c4d-7e8f-9a0b-aaaabbbbcccc").unwrap();
    let sent_at = Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 1).unwrap();
    let mut files = Vec::new();
    for (event, locale, android, ios) in [
        (
            &decided,
            "vi-VN",
            "push/android.case-decided.vi.json",
            "push/ios.case-decided.vi.json",
        ),
        (
            &document,
            "ko-KR",
            "push/android.document-returned.ko.json",
            "push/ios.document-returned.ko.json",
        ),
    ] {
        let push = RenderedPush::from_catalog(event, &catalog, locale)
            .expect("the catalog has push texts");
        let fcm = serde_json::json!({ "message": fcm_message("<FCM registration token>", &push) });
        files.push((android, pretty(&fcm)));
        let headers: serde_json::Map<String, serde_json::Value> =
            apns_headers(&push, "kr.go.onestop.app", sent_at)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.into()))
                .collect();
        let apns = serde_json::json!({ "headers": headers, "payload": apns_payload(&push) });
        files.push((ios, pretty(&apns)));
    }
    files
}
