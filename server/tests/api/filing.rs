//! Devices, a teacher's report, withdrawal and the inbox.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{problem, spawn_app, Backend};

#[tokio::test]
async fn the_same_push_token_registered_again_updates_the_one_device() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let token = "dGVzdC10b2tlbi1mb3ItYS1waG9uZQ:APA91bExample_token-123";
    let first = app
        .post_json(
            "/v1/devices",
            &mother,
            &json!({ "platform": "android", "push_token": token, "locale": "vi-VN" }),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();

    let again = app
        .post_json(
            "/v1/devices",
            &mother,
            &json!({ "platform": "android", "push_token": token, "locale": "en" }),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["locale"], "en");
    assert_eq!(app.count("devices").await, 1);

    // The phone changes hands: the token now belongs to the new account.
    let mother2 = app.login("mother2").await;
    let moved = app
        .post_json(
            "/v1/devices",
            &mother2,
            &json!({ "platform": "android", "push_token": token, "locale": "zh" }),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    assert_eq!(app.count("devices").await, 1);
    let id = first["id"].as_str().unwrap();
    let not_hers = app
        .request(Method::DELETE, &format!("/v1/devices/{id}"), Some(&mother))
        .send()
        .await
        .unwrap();
    problem(not_hers, StatusCode::NOT_FOUND).await;
    let removed = app
        .request(Method::DELETE, &format!("/v1/devices/{id}"), Some(&mother2))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.count("devices").await, 0);

    let bad = app
        .post_json(
            "/v1/devices",
            &mother,
            &json!({ "platform": "ios", "push_token": "not hex at all!", "locale": "ko" }),
        )
        .await;
    problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    let bad_platform = app
        .post_json(
            "/v1/devices",
            &mother,
            &json!({ "platform": "windows", "push_token": "abcdefabcdef", "locale": "ko" }),
        )
        .await;
    problem(bad_platform, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_teacher_files_a_report_to_the_office_she_chooses() {
    let app = spawn_app(Backend::Sqlite).await;
    let teacher = app.login("teacher1").await;
    let page = app.upload_photo(&teacher).await;
    let report = json!({ "form": {
        "form": "nursery_subsidy_final_accounts",
        "office": "muni-gangnam",
        "fields": { "fiscal_year": 2025, "subsidy_received_krw": 12000000, "subsidy_spent_krw": 11800000 },
        "attachments": [page]
    }});
    let response = app.post_json("/v1/submissions", &teacher, &report).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let filed: Value = response.json().await.unwrap();
    assert_eq!(filed["kind"], "form");
    assert_eq!(filed["cases"].as_array().unwrap().len(), 1);
    assert_eq!(filed["cases"][0]["agency"]["id"], "muni-gangnam");
    assert_eq!(filed["cases"][0]["status"], "submitted");

    // The office sees the report with its fields and its page.
    let official = app.login("official.municipality").await;
    let (case, _) = app
        .review_case(&official, filed["cases"][0]["id"].as_str().unwrap())
        .await;
    assert_eq!(case["fields"]["fiscal_year"], 2025);
    assert_eq!(case["attachments"][0]["id"], page);

    // Wrong office, missing field, a mother filing a form, a teacher applying for services.
    let mut wrong_office = report.clone();
    wrong_office["form"]["office"] = "kepco".into();
    problem(
        app.post_json("/v1/submissions", &teacher, &wrong_office)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut missing = report.clone();
    missing["form"]["fields"] = json!({ "fiscal_year": 2025 });
    let body = problem(
        app.post_json("/v1/submissions", &teacher, &missing).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("subsidy_received_krw"));
    let mut no_pages = report.clone();
    no_pages["form"]["attachments"] = json!([]);
    problem(
        app.post_json("/v1/submissions", &teacher, &no_pages).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mother = app.login("mother1").await;
    problem(
        app.post_json("/v1/submissions", &mother, &report).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let services = json!({ "services": [{ "service": "childcare_allowance" }] });
    problem(
        app.post_json("/v1/submissions", &teacher, &services).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        app.post_json("/v1/submissions", &official, &services).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(app.count("submissions").await, 1);
}

/// Withdrawing a whole submission is the same step as withdrawing each of
/// its open cases: each gets one `withdrawn` history entry, and a case
/// already decided stays decided.
#[tokio::test]
async fn withdrawing_a_submission_writes_each_open_case_into_its_history_once() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app
        .apply(
            &mother,
            &["childcare_allowance", "breast_pump_rental"],
            None,
        )
        .await;
    let id = submission["id"].as_str().unwrap();
    let case_of = |service: &str| {
        submission["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == service)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (childcare, pump) = (
        case_of("childcare_allowance"),
        case_of("breast_pump_rental"),
    );
    let (_, etag) = app.review_case(&official, &childcare).await;
    let decided = app
        .decide(&official, &childcare, &etag, "approved", "")
        .await;
    assert_eq!(decided.status(), StatusCode::OK);

    for _ in 0..2 {
        let withdrawn = app
            .post_json(
                &format!("/v1/submissions/{id}/withdraw"),
                &mother,
                &json!({}),
            )
            .await;
        assert_eq!(withdrawn.status(), StatusCode::OK);
        let withdrawn: Value = withdrawn.json().await.unwrap();
        let status_of = |case: &str| {
            withdrawn["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == case)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(status_of(&childcare), "approved");
        assert_eq!(status_of(&pump), "withdrawn");
    }
    let history = |case: String| {
        format!(
            "SELECT action AS v FROM case_events WHERE case_id = '{case}' ORDER BY created_at, id"
        )
    };
    assert_eq!(app.column(&history(pump)).await, ["submitted", "withdrawn"]);
    let (detail, _) = app.review_case(&official, &childcare).await;
    let actions: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["submitted", "decided"]);
}

#[tokio::test]
async fn withdrawing_closes_open_cases_once() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let submission = app
        .apply(
            &mother,
            &["childcare_allowance", "breast_pump_rental"],
            None,
        )
        .await;
    let id = submission["id"].as_str().unwrap();
    let first: Value = app
        .post_json(
            &format!("/v1/submissions/{id}/withdraw"),
            &mother,
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(first["cases"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "withdrawn"));
    let again = app
        .post_json(
            &format!("/v1/submissions/{id}/withdraw"),
            &mother,
            &json!({}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["cases"], first["cases"]);

    // An official can no longer decide it.
    let official = app.login("official.municipality").await;
    let case_id = first["cases"][0]["id"].as_str().unwrap();
    let (_, etag) = app.review_case(&official, case_id).await;
    problem(
        app.decide(&official, case_id, &etag, "approved", "").await,
        StatusCode::CONFLICT,
    )
    .await;
}

#[tokio::test]
async fn lists_page_with_cursors() {
    let app = spawn_app(Backend::Sqlite).await;
    let mother = app.login("mother1").await;
    for _ in 0..5 {
        app.apply(&mother, &["breast_pump_rental"], None).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/submissions?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path, &mother).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/submissions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "no submission shows twice");
    problem(
        app.get("/v1/submissions?cursor=garbage", &mother).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let too_many = app.get("/v1/inbox?limit=100000", &mother).await;
    problem(too_many, StatusCode::BAD_REQUEST).await;
    let inbox = app.get_json("/v1/inbox?limit=100", &mother).await;
    assert_eq!(inbox["items"].as_array().unwrap().len(), 5);
}
