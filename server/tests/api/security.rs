//! Tokens, the authorization matrix (BOLA and BFLA, generated from the
//! OpenAPI document), disabled accounts and floods.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{problem, spawn_app, spawn_app_with, Backend, Options, TestApp};

fn sign(app: &TestApp, header: &Value, claims: &Value) -> String {
    let key = app
        .settings
        .auth_signing_key
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.get("/v1/me", token).await.status()
}

#[tokio::test]
async fn forged_and_misused_tokens_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login("mother1").await;
    let claims = claims_of(&token);
    let hs256 = json!({ "alg": "HS256", "typ": "JWT" });
    let now = chrono::Utc::now().timestamp();

    // The crafting itself is right: the same claims, re-signed, pass.
    assert_eq!(
        status_with(&app, &sign(&app, &hs256, &claims)).await,
        StatusCode::OK
    );

    let mut cases: Vec<(&str, String)> = Vec::new();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    cases.push((
        "alg none",
        format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
        ),
    ));
    // HS/RS confusion: an RS256 header, MACed with the server's key.
    cases.push((
        "RS256 header",
        sign(&app, &json!({ "alg": "RS256", "typ": "JWT" }), &claims),
    ));
    cases.push((
        "HS512",
        sign(&app, &json!({ "alg": "HS512", "typ": "JWT" }), &claims),
    ));
    let with = |field: &str, value: Value| {
        let mut changed = claims.clone();
        changed[field] = value;
        changed
    };
    cases.push((
        "expired",
        sign(&app, &hs256, &with("exp", json!(now - 3600))),
    ));
    cases.push((
        "not yet valid",
        sign(&app, &hs256, &with("nbf", json!(now + 3600))),
    ));
    cases.push((
        "wrong audience",
        sign(&app, &hs256, &with("aud", json!("someone-else"))),
    ));
    cases.push((
        "wrong issuer",
        sign(&app, &hs256, &with("iss", json!("evil"))),
    ));
    cases.push((
        "refresh type",
        sign(&app, &hs256, &with("typ", json!("refresh"))),
    ));
    cases.push((
        "unknown session",
        sign(&app, &hs256, &with("sid", json!(uuid::Uuid::new_v4()))),
    ));
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("no expiry", sign(&app, &hs256, &no_exp)));
    let tampered = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with("role", json!("official")).to_string());
        parts.join(".")
    };
    cases.push(("tampered payload", tampered));
    let pair = app.sign_in("mother1").await;
    cases.push((
        "refresh token as access token",
        pair["refresh_token"].as_str().unwrap().to_owned(),
    ));

    for (name, forged) in cases {
        let response = app.get("/v1/me", &forged).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn signing_out_and_disabling_end_access_tokens_at_once() {
    signing_out_and_disabling_end_access_tokens_on(Backend::Postgres).await;
}

/// SQLite checks sign-ins on read-only connections of their own: what
/// the writer commits is seen there at once.
#[tokio::test]
async fn signing_out_and_disabling_end_access_tokens_at_once_on_sqlite() {
    signing_out_and_disabling_end_access_tokens_on(Backend::Sqlite).await;
}

async fn signing_out_and_disabling_end_access_tokens_on(backend: Backend) {
    let app = spawn_app(backend).await;
    let pair = app.sign_in("mother1").await;
    let access = pair["access_token"].as_str().unwrap();
    let other_phone = app.login("mother1").await;
    assert_eq!(status_with(&app, access).await, StatusCode::OK);
    let out = app
        .client
        .post(app.url("/v1/auth/logout"))
        .json(&json!({ "refresh_token": pair["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(status_with(&app, access).await, StatusCode::UNAUTHORIZED);
    // Her other phone's sign-in goes on.
    assert_eq!(status_with(&app, &other_phone).await, StatusCode::OK);

    // An operator disables the account: every token stops now.
    let official = app.login("official.kepco").await;
    let db = sea_orm::Database::connect(&app.settings.database_url)
        .await
        .unwrap();
    assert!(onestop_server::auth::disable_account(&db, "official.kepco")
        .await
        .unwrap());
    assert_eq!(status_with(&app, &official).await, StatusCode::UNAUTHORIZED);
    let again = app
        .client
        .post(app.url("/v1/auth/token"))
        .json(&json!({ "username": "official.kepco", "password": "onestop-demo" }))
        .send()
        .await
        .unwrap();
    problem(again, StatusCode::UNAUTHORIZED).await;

    // Signing out everywhere ends the other phone too.
    let pair = app.sign_in("mother1").await;
    let out = app
        .client
        .post(app.url("/v1/auth/logout"))
        .json(&json!({ "refresh_token": pair["refresh_token"], "everywhere": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_with(&app, &other_phone).await,
        StatusCode::UNAUTHORIZED
    );
}

/// On SQLite everything that writes shares one connection. A phone
/// opening its account screen while an upload holds that connection to
/// commit is answered without waiting for it.
#[tokio::test]
async fn a_signed_in_read_does_not_wait_for_a_write_in_progress() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login("mother1").await;
    let write = onestop_model::begin_write(&app.state.db).await.unwrap();
    // The request would wait for the connection until the write ends,
    // here never; the pool gives up after 10 s.
    let answered =
        tokio::time::timeout(std::time::Duration::from_secs(8), status_with(&app, &token)).await;
    assert_eq!(answered, Ok(StatusCode::OK));
    write.rollback().await.unwrap();
    app.stop().await;
}

/// The screens people open most (a mother's submissions and inbox, the
/// catalog, an official's queue and a case) are read beside the writer
/// too: a busy upload hour does not freeze the tablets.
#[tokio::test]
async fn the_screens_opened_most_do_not_wait_for_a_write_in_progress() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let submission_id = submission["id"].as_str().unwrap().to_owned();
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let screens = [
        (&mother, "/v1/submissions".to_owned()),
        (&mother, format!("/v1/submissions/{submission_id}")),
        (&mother, "/v1/inbox".to_owned()),
        (&mother, "/v1/me/consents".to_owned()),
        (&mother, "/v1/me/access-log".to_owned()),
        (&mother, "/v1/catalog/services".to_owned()),
        (&mother, "/v1/catalog/forms".to_owned()),
        (&official, "/v1/review/cases".to_owned()),
    ];
    let write = onestop_model::begin_write(&app.state.db).await.unwrap();
    for (token, path) in &screens {
        let answered =
            tokio::time::timeout(std::time::Duration::from_secs(8), app.get(path, token)).await;
        let status = answered.map(|response| response.status());
        assert_eq!(status, Ok(StatusCode::OK), "{path}");
    }
    write.rollback().await.unwrap();
    // Opening a case is recorded in the mother's access log, a write; her
    // log, read beside the writer, shows it at once.
    let (case, _) = app.review_case(&official, &case_id).await;
    assert_eq!(case["case"]["id"], case_id.as_str());
    let log = app.get_json("/v1/me/access-log", &mother).await;
    assert_eq!(log["items"][0]["action"], "case.viewed");
    assert_eq!(log["items"][0]["object_id"], case_id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn guessing_one_account_from_many_addresses_is_slowed_but_never_fails() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Options {
            token_burst: 1000,
            ..Options::default()
        },
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let response = app
            .client
            .post(app.url("/v1/auth/token"))
            .json(&json!({ "username": "Mother1", "password": "guess" }))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert!(
        statuses.iter().all(|s| !s.is_server_error()),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Other accounts are not held back by it.
    let other = app
        .client
        .post(app.url("/v1/auth/token"))
        .json(&json!({ "username": "mother2", "password": "onestop-demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

/// Objects of one person, and the people who may see them.
struct Fixture {
    ids: BTreeMap<&'static str, String>,
}

async fn fixture(app: &TestApp) -> Fixture {
    let mother = app.login("mother1").await;
    let teacher = app.login("teacher1").await;
    let photo = app.upload_photo(&mother).await;
    let device: Value = app
        .post_json(
            "/v1/devices",
            &mother,
            &json!({ "platform": "android", "push_token": "bola-device-token-0123456789", "locale": "ko" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let submission = app
        .apply(&mother, &["childcare_allowance"], Some(&photo))
        .await;
    let inbox: Value = app.get("/v1/inbox", &mother).await.json().await.unwrap();
    let page = app.upload_photo(&teacher).await;
    let report: Value = app
        .post_json(
            "/v1/submissions",
            &teacher,
            &json!({ "form": {
                "form": "nursery_subsidy_final_accounts", "office": "muni-gangnam",
                "fields": { "fiscal_year": 2025, "subsidy_received_krw": 1, "subsidy_spent_krw": 1 },
                "attachments": [page]
            }}),
        )
        .await
        .json()
        .await
        .unwrap();
    let mut ids = BTreeMap::new();
    ids.insert("attachment", photo);
    ids.insert("device", device["id"].as_str().unwrap().to_owned());
    ids.insert("submission", submission["id"].as_str().unwrap().to_owned());
    ids.insert(
        "case",
        submission["cases"][0]["id"].as_str().unwrap().to_owned(),
    );
    ids.insert(
        "inbox",
        inbox["items"][0]["id"].as_str().unwrap().to_owned(),
    );
    ids.insert("report", report["id"].as_str().unwrap().to_owned());
    ids.insert(
        "report_case",
        report["cases"][0]["id"].as_str().unwrap().to_owned(),
    );
    ids.insert("report_page", page);
    let upload = app
        .request(Method::POST, "/v1/uploads", Some(&mother))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1000")
        .send()
        .await
        .unwrap();
    let location = upload.headers()["location"].to_str().unwrap();
    ids.insert("upload", location.rsplit('/').next().unwrap().to_owned());
    Fixture { ids }
}

/// Every object route of the API: which object it takes, who owns it (and
/// so may see it), and a request body that gets past validation. A route
/// the OpenAPI document has and this table lacks fails the test: a new
/// object route cannot ship without its authorization checked.
fn object_routes() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    Value,
)> {
    const MOTHER: &[&str] = &["mother1"];
    const MOTHER_AND_OFFICE: &[&str] = &["mother1", "official.municipality"];
    const TEACHER: &[&str] = &["teacher1"];
    const OFFICE: &[&str] = &["official.municipality"];
    vec![
        (
            "get",
            "/v1/attachments/{id}",
            "attachment",
            MOTHER_AND_OFFICE,
            Value::Null,
        ),
        (
            "get",
            "/v1/attachments/{id}/thumbnail",
            "attachment",
            MOTHER_AND_OFFICE,
            Value::Null,
        ),
        ("delete", "/v1/devices/{id}", "device", MOTHER, Value::Null),
        ("get", "/v1/uploads/{id}", "upload", MOTHER, Value::Null),
        ("head", "/v1/uploads/{id}", "upload", MOTHER, Value::Null),
        ("patch", "/v1/uploads/{id}", "upload", MOTHER, Value::Null),
        ("delete", "/v1/uploads/{id}", "upload", MOTHER, Value::Null),
        ("post", "/v1/inbox/{id}/read", "inbox", MOTHER, json!({})),
        (
            "get",
            "/v1/submissions/{id}",
            "submission",
            MOTHER,
            Value::Null,
        ),
        (
            "get",
            "/v1/submissions/{id}",
            "report",
            TEACHER,
            Value::Null,
        ),
        (
            "post",
            "/v1/submissions/{id}/withdraw",
            "submission",
            MOTHER,
            json!({}),
        ),
        (
            "post",
            "/v1/submissions/{id}/withdraw",
            "report",
            TEACHER,
            json!({}),
        ),
        (
            "post",
            "/v1/cases/{id}/supplements",
            "case",
            MOTHER,
            json!({ "text": "answer" }),
        ),
        ("post", "/v1/cases/{id}/withdraw", "case", MOTHER, json!({})),
        (
            "post",
            "/v1/cases/{id}/withdraw",
            "report_case",
            TEACHER,
            json!({}),
        ),
        ("get", "/v1/review/cases/{id}", "case", OFFICE, Value::Null),
        (
            "get",
            "/v1/review/cases/{id}",
            "report_case",
            OFFICE,
            Value::Null,
        ),
        (
            "post",
            "/v1/review/cases/{id}/claim",
            "case",
            OFFICE,
            json!({}),
        ),
        (
            "post",
            "/v1/review/cases/{id}/take-over",
            "case",
            OFFICE,
            Value::Null,
        ),
        (
            "post",
            "/v1/review/cases/{id}/decision",
            "case",
            OFFICE,
            json!({ "outcome": "approved" }),
        ),
        (
            "post",
            "/v1/review/cases/{id}/documents",
            "case",
            OFFICE,
            json!({ "title": "Notice" }),
        ),
    ]
}

/// Routes whose path parameter names something of the caller's own
/// account, not another person's object.
const SELF_SCOPED: &[&str] = &["/v1/me/consents/{purpose}"];

const EVERYONE: &[&str] = &[
    "mother1",
    "mother2",
    "teacher1",
    "teacher2",
    "official.municipality",
    "official.kepco",
];

async fn call(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    let mut request = app
        .request(
            Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
            path,
            Some(token),
        )
        .header("If-Match", "\"v1\"")
        .header("Tus-Resumable", "1.0.0");
    if method == "patch" && path.starts_with("/v1/uploads/") {
        request = request
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream");
    }
    if !body.is_null() {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

async fn foreign_principals_find_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let fixture = fixture(&app).await;
    let mut tokens = BTreeMap::new();
    for username in EVERYONE {
        tokens.insert(*username, app.login(username).await);
    }
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let matrix = object_routes();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        if !path.contains('{') || SELF_SCOPED.contains(&path.as_str()) {
            continue;
        }
        for method in operations.as_object().unwrap().keys() {
            assert!(
                matrix.iter().any(|(m, p, ..)| m == method && p == path),
                "{method} {path} is an object route missing from the authorization matrix"
            );
        }
    }

    for (method, template, object, owners, body) in &matrix {
        if !spec["paths"][template].is_object() {
            continue;
        }
        let path = template.replace("{id}", &fixture.ids[object]);
        for principal in EVERYONE.iter().filter(|p| !owners.contains(p)) {
            let response = call(&app, &tokens[principal], method, &path, body).await;
            let status = response.status();
            // An official's route called by a citizen is a wrong role (403,
            // BFLA); anything else of someone else's is simply not there.
            let citizen_on_review =
                template.starts_with("/v1/review/") && !principal.starts_with("official.");
            let expected = if citizen_on_review {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(
                status, expected,
                "{principal} {method} {template} ({object})"
            );
            // A HEAD answer has no body to read.
            if *method != "head" {
                problem(response, expected).await;
            }
        }
    }

    // The fixtures are real: owners do reach them (safe calls only).
    for (method, template, object, owners) in [
        (
            "get",
            "/v1/attachments/{id}",
            "attachment",
            ["mother1", "official.municipality"].as_slice(),
        ),
        (
            "get",
            "/v1/submissions/{id}",
            "report",
            ["teacher1"].as_slice(),
        ),
        (
            "get",
            "/v1/review/cases/{id}",
            "report_case",
            ["official.municipality"].as_slice(),
        ),
        (
            "post",
            "/v1/cases/{id}/supplements",
            "case",
            ["mother1"].as_slice(),
        ),
        (
            "post",
            "/v1/review/cases/{id}/decision",
            "case",
            ["official.municipality"].as_slice(),
        ),
    ] {
        let path = template.replace("{id}", &fixture.ids[object]);
        let body = matrix
            .iter()
            .find(|(m, p, ..)| *m == method && *p == template)
            .unwrap()
            .4
            .clone();
        for owner in owners {
            let status = call(&app, &tokens[owner], method, &path, &body)
                .await
                .status();
            assert_ne!(status, StatusCode::NOT_FOUND, "{owner} {method} {template}");
            assert_ne!(status, StatusCode::FORBIDDEN, "{owner} {method} {template}");
        }
    }
}

#[tokio::test]
async fn bola_matrix_on_postgres() {
    foreign_principals_find_nothing(Backend::Postgres).await;
}

#[tokio::test]
async fn bola_matrix_on_sqlite() {
    foreign_principals_find_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn citizens_get_403_on_every_review_route() {
    let app = spawn_app(Backend::Sqlite).await;
    let fixture = fixture(&app).await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bodies: BTreeMap<&str, Value> = object_routes()
        .into_iter()
        .map(|(_, path, _, _, body)| (path, body))
        .collect();
    let mut checked = 0;
    for username in ["mother1", "teacher1"] {
        let token = app.login(username).await;
        for (template, operations) in spec["paths"].as_object().unwrap() {
            if !template.starts_with("/v1/review/") {
                continue;
            }
            for method in operations.as_object().unwrap().keys() {
                let path = template.replace("{id}", &fixture.ids["case"]);
                let body = bodies
                    .get(template.as_str())
                    .cloned()
                    .unwrap_or(Value::Null);
                let response = call(&app, &token, method, &path, &body).await;
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{username} {method} {template}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "every review route was tried ({checked})");
}

#[tokio::test]
async fn fields_a_client_must_not_set_are_ignored() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    app.grant_consent(&mother).await;
    let response = app
        .post_json(
            "/v1/submissions",
            &mother,
            &json!({
                "services": [{ "service": "childcare_allowance", "status": "approved", "agency": "kepco" }],
                "status": "approved", "applicant_id": uuid::Uuid::new_v4(), "agency_id": "kepco"
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["cases"][0]["status"], "submitted");
    assert_eq!(created["cases"][0]["agency"]["id"], "muni-gangnam");
    let mine = app.get_json("/v1/submissions", &mother).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn submission_floods_never_fail_with_5xx() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    app.grant_consent(&mother).await;
    let body = json!({ "services": [{ "service": "breast_pump_rental" }] });
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = app.client.clone();
        let url = app.url("/v1/submissions");
        let token = mother.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("flood-{}", i % 10))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| !s.is_server_error()),
        "{statuses:?}"
    );
    // Ten keys: ten submissions however many retries raced.
    assert_eq!(app.count("submissions").await, 10);
}
