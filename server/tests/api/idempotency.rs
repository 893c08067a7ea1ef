use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{problem, spawn_app, Backend, TestApp};

async fn submit(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.request(Method::POST, "/v1/submissions", Some(token))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn a_retry_never_applies_twice(app: TestApp) {
    let mother = app.login("mother1").await;
    app.grant_consent(&mother).await;
    let body = json!({ "services": [{ "service": "childcare_allowance" }, { "service": "electricity_bill_cut" }] });

    let first = submit(&app, &mother, "\"retry-1\"", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();

    // The phone lost the answer and sends the same request again.
    let replay = submit(&app, &mother, "\"retry-1\"", &body).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(app.count("submissions").await, 1);
    assert_eq!(app.count("cases").await, 2);

    // The same key with another body is a client bug: 422, nothing written.
    let other = json!({ "services": [{ "service": "gas_bill_cut" }] });
    let body = problem(
        submit(&app, &mother, "\"retry-1\"", &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["type"], "urn:onestop:problem:idempotency-key-reused");
    assert_eq!(app.count("submissions").await, 1);

    // Another person's identical key is theirs alone.
    let mother2 = app.login("mother2").await;
    app.grant_consent(&mother2).await;
    let theirs = submit(
        &app,
        &mother2,
        "\"retry-1\"",
        &json!({ "services": [{ "service": "childcare_allowance" }] }),
    )
    .await;
    assert_eq!(theirs.status(), StatusCode::CREATED);

    // A failed request does not burn its key.
    let bad = json!({ "services": [{ "service": "free_money" }] });
    problem(
        submit(&app, &mother, "\"retry-2\"", &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fixed = submit(&app, &mother, "\"retry-2\"", &bad).await;
    problem(fixed, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn idempotency_on_postgres() {
    a_retry_never_applies_twice(spawn_app(Backend::Postgres).await).await;
}

#[tokio::test]
async fn idempotency_on_sqlite() {
    a_retry_never_applies_twice(spawn_app(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn a_key_still_in_progress_answers_409() {
    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    let body = json!({ "services": [{ "service": "childcare_allowance" }] });
    // A first request with the same body that is still running holds the key.
    {
        use poem_openapi::types::{ParseFromJSON, ToJSON};
        let parsed =
            onestop_server::api::submissions::NewSubmission::parse_from_json(Some(body.clone()))
                .ok()
                .unwrap();
        let fingerprint = onestop_server::idempotency::fingerprint(
            "createSubmission",
            &parsed.to_json().unwrap(),
        );
        use sea_orm::{ConnectionTrait, Database, Statement};
        let me: Value = app.get("/v1/me", &mother).await.json().await.unwrap();
        let db = Database::connect(&app.settings.database_url).await.unwrap();
        db.execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, created_at, updated_at) \
             VALUES ($1, 'busy', $2, 'in_progress', now(), now())",
            [uuid::Uuid::parse_str(me["id"].as_str().unwrap()).unwrap().into(), fingerprint.into()],
        ))
        .await
        .unwrap();
    }
    let response = submit(&app, &mother, "busy", &body).await;
    let problem_body = problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        problem_body["type"],
        "urn:onestop:problem:idempotency-key-in-progress"
    );
    assert_eq!(app.count("submissions").await, 0);
}
