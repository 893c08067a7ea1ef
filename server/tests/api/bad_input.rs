//! Bad input gets a clear problem and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{problem, spawn_app, spawn_app_with, Backend, Options};

/// Rows that any accepted write would add.
async fn written(app: &crate::helpers::TestApp) -> [i64; 5] {
    [
        app.count("submissions").await,
        app.count("cases").await,
        app.count("attachments").await,
        app.count("decisions").await,
        app.count("outbox").await,
    ]
}

#[tokio::test]
async fn malformed_json_and_unknown_services_change_nothing() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let before = written(&app).await;

    let malformed = app
        .request(Method::POST, "/v1/submissions", Some(&mother))
        .header("content-type", "application/json")
        .body("{\"services\": [")
        .send()
        .await
        .unwrap();
    let body = problem(malformed, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["type"], "urn:onestop:problem:malformed-request");

    let unknown = app
        .post_json(
            "/v1/submissions",
            &mother,
            &json!({ "services": [{ "service": "free_money" }] }),
        )
        .await;
    let body = problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("free_money"));

    // One unknown service among good ones: none of them is created.
    let mixed = app
        .post_json(
            "/v1/submissions",
            &mother,
            &json!({ "services": [{ "service": "childcare_allowance" }, { "service": "free_money" }] }),
        )
        .await;
    problem(mixed, StatusCode::UNPROCESSABLE_ENTITY).await;

    let empty = app
        .post_json("/v1/submissions", &mother, &json!({ "services": [] }))
        .await;
    problem(empty, StatusCode::UNPROCESSABLE_ENTITY).await;

    let foreign_attachment = app
        .post_json(
            "/v1/submissions",
            &mother,
            &json!({ "services": [{ "service": "childcare_allowance", "attachments": [uuid::Uuid::new_v4()] }] }),
        )
        .await;
    problem(foreign_attachment, StatusCode::UNPROCESSABLE_ENTITY).await;

    let wrong_type = app
        .request(Method::POST, "/v1/submissions", Some(&mother))
        .header("content-type", "text/plain")
        .body("services please")
        .send()
        .await
        .unwrap();
    problem(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    assert_eq!(written(&app).await, before);
}

#[tokio::test]
async fn oversized_photos_and_disguised_files_are_refused_and_leave_nothing() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Options {
            max_upload_bytes: 64 * 1024,
            ..Options::default()
        },
    )
    .await;
    let mother = app.login("mother1").await;
    let before = written(&app).await;

    // A photo over the limit: refused while streaming, nothing kept.
    let mut big = crate::helpers::tiny_jpeg();
    big.resize(200 * 1024, 0xAB);
    let body = problem(
        app.upload(&mother, "huge.jpg", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(body["type"], "urn:onestop:problem:payload-too-large");

    // Just over the limit, under the framing allowance: counted, refused.
    let mut just_over = crate::helpers::tiny_jpeg();
    just_over.resize(64 * 1024 + 10, 0xAB);
    problem(
        app.upload(&mother, "over.jpg", just_over).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Text named .jpg and declared image/jpeg: the bytes decide.
    let text = b"This is not a photo, whatever its name says.".to_vec();
    let body = problem(
        app.upload(&mother, "receipt.jpg", text).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_eq!(body["type"], "urn:onestop:problem:unsupported-media-type");

    problem(
        app.upload(&mother, "empty.jpg", Vec::new()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let not_multipart = app
        .request(Method::POST, "/v1/attachments", Some(&mother))
        .header("content-type", "image/jpeg")
        .body(crate::helpers::tiny_jpeg())
        .send()
        .await
        .unwrap();
    problem(not_multipart, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    assert_eq!(written(&app).await, before);
    assert_eq!(app.media_files(), 0, "no file is left behind");

    // A good photo still goes through afterwards.
    let ok = app
        .upload(&mother, "../../etc/passwd.jpg", crate::helpers::tiny_jpeg())
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let stored: Value = ok.json().await.unwrap();
    assert_eq!(stored["media_type"], "image/jpeg");
    assert_eq!(stored["file_name"], "passwd.jpg");
}

#[tokio::test]
async fn a_stale_or_missing_if_match_changes_nothing() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let (_, etag) = app.review_case(&official, &case_id).await;

    // Another official's claim moves the case on.
    let claim = app
        .post_json(
            &format!("/v1/review/cases/{case_id}/claim"),
            &official,
            &json!({}),
        )
        .await;
    assert_eq!(claim.status(), StatusCode::OK);
    let before = written(&app).await;

    let stale = app.decide(&official, &case_id, &etag, "approved", "").await;
    let body = problem(stale, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(body["type"], "urn:onestop:problem:stale-etag");

    let missing = app
        .request(
            Method::POST,
            &format!("/v1/review/cases/{case_id}/decision"),
            Some(&official),
        )
        .json(&json!({ "outcome": "approved" }))
        .send()
        .await
        .unwrap();
    let body = problem(missing, StatusCode::PRECONDITION_REQUIRED).await;
    assert_eq!(body["type"], "urn:onestop:problem:if-match-required");

    let (_, current) = app.review_case(&official, &case_id).await;
    let no_reason = app
        .decide(&official, &case_id, &current, "rejected", "  ")
        .await;
    problem(no_reason, StatusCode::UNPROCESSABLE_ENTITY).await;
    let bad_outcome = app.decide(&official, &case_id, &current, "maybe", "").await;
    problem(bad_outcome, StatusCode::BAD_REQUEST).await;

    assert_eq!(written(&app).await, before);
    let (case, _) = app.review_case(&official, &case_id).await;
    assert_eq!(case["case"]["status"], "in_review");

    // With the current ETag it goes through, once.
    let decided = app
        .decide(&official, &case_id, &current, "approved", "")
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let again = app
        .decide(&official, &case_id, &current, "rejected", "changed my mind")
        .await;
    problem(again, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_number_or_boolean_where_the_document_says_string_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let devices = app.count("devices").await;
    let sessions = app.count("refresh_tokens").await;

    for (path, token, body) in [
        (
            "/v1/devices",
            Some(&mother),
            json!({ "platform": "android", "push_token": 1234567890123_u64, "locale": "vi-VN" }),
        ),
        (
            "/v1/auth/token",
            None,
            json!({ "username": "mother1", "password": true }),
        ),
        ("/v1/auth/logout", None, json!({ "refresh_token": false })),
        ("/v1/me/consents", Some(&mother), json!({ "purpose": 7 })),
    ] {
        let mut request = app.request(Method::POST, path, token.map(String::as_str));
        request = request.json(&body);
        let response = request.send().await.unwrap();
        let problem = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem["type"], "urn:onestop:problem:malformed-request",
            "{path}"
        );
    }
    assert_eq!(app.count("devices").await, devices);
    assert_eq!(app.count("refresh_tokens").await, sessions);

    // Optional fields may be null: the document says so, and null means the default.
    let case = app.apply(&mother, &["childcare_allowance"], None).await["cases"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, etag) = app.review_case(&official, &case).await;
    let refused = app
        .request(
            Method::POST,
            &format!("/v1/review/cases/{case}/decision"),
            Some(&official),
        )
        .header("If-Match", etag)
        .json(&json!({ "outcome": "rejected", "reason": null }))
        .send()
        .await
        .unwrap();
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["type"], "urn:onestop:problem:validation-failed");
}

#[tokio::test]
async fn resumable_uploads_answer_401_and_405_before_the_protocol_version() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    let id = "0191e0a0-0000-7000-8000-000000000000";

    let anonymous = app
        .request(Method::HEAD, &format!("/v1/uploads/{id}"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["tus-resumable"], "1.0.0");

    let unserved = app
        .request(Method::PUT, &format!("/v1/uploads/{id}"), Some(&mother))
        .send()
        .await
        .unwrap();
    assert_eq!(unserved.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = unserved.headers()["allow"].to_str().unwrap().to_owned();
    for method in ["PATCH", "HEAD", "GET", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }

    let unversioned = app
        .request(Method::DELETE, &format!("/v1/uploads/{id}"), Some(&mother))
        .send()
        .await
        .unwrap();
    assert_eq!(unversioned.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(unversioned.headers()["tus-version"], "1.0.0");
}
