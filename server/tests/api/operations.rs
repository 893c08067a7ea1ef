use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{problem, spawn_app, Backend};

#[tokio::test]
async fn health_readiness_metrics_and_docs_are_served() {
    let app = spawn_app(Backend::Sqlite).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["database"], true);
    assert_eq!(ready["checks"]["redis"], true);

    let _ = app
        .client
        .get(app.url("/v1/catalog/services"))
        .send()
        .await
        .unwrap();
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");

    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/v1/submissions"]["post"]["operationId"] == "createSubmission");
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
}

#[tokio::test]
async fn framework_errors_are_problems_too() {
    let app = spawn_app(Backend::Sqlite).await;
    let missing = app
        .client
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    problem(missing, StatusCode::NOT_FOUND).await;

    let wrong_method = app
        .client
        .delete(app.url("/v1/catalog/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, HEAD");
    problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    let trace = app
        .client
        .request(
            reqwest::Method::TRACE,
            app.url("/v1/devices/0193a1b0-0000-7000-8000-000000000001"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(trace.headers()["allow"], "DELETE");

    // Oversized headers are refused before any route runs.
    let bloated = app
        .client
        .get(app.url("/v1/catalog/services"))
        .header("x-padding", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    let body = problem(bloated, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    assert_eq!(body["type"], "urn:onestop:problem:header-fields-too-large");

    let no_token = app.client.get(app.url("/v1/me")).send().await.unwrap();
    let body = problem(no_token, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["type"], "urn:onestop:problem:unauthenticated");

    let bad_token = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    problem(bad_token, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn the_catalog_speaks_the_readers_language() {
    let app = spawn_app(Backend::Postgres).await;
    let services: Value = app
        .client
        .get(app.url("/v1/catalog/services"))
        .header("Accept-Language", "vi-VN,vi;q=0.9")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let electricity = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "electricity_bill_cut")
        .unwrap();
    assert_eq!(electricity["name"], "Giảm tiền điện");
    assert_eq!(services.as_array().unwrap().len(), 7);

    let forms: Value = app
        .client
        .get(app.url("/v1/catalog/forms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report = forms
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "nursery_subsidy_final_accounts")
        .unwrap();
    assert!(report["offices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["id"] == "muni-gangnam"));
}

/// Pooled connections are not pinged before each use, so a database that
/// dropped every connection (a restart, a failover) costs each pooled
/// connection the one request it was used for: those are answered with a
/// problem, the connection is replaced, and the server carries on.
#[tokio::test]
async fn connections_the_database_dropped_are_replaced_after_one_failed_request_each() {
    use sea_orm::{ConnectionTrait, Database, Statement};

    let app = spawn_app(Backend::Postgres).await;
    let mother = app.login("mother1").await;
    assert_eq!(app.get("/v1/me", &mother).await.status(), StatusCode::OK);

    let admin = Database::connect(&app.settings.database_url).await.unwrap();
    admin
        .execute(Statement::from_string(
            admin.get_database_backend(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ))
        .await
        .unwrap();
    admin.close().await.unwrap();

    let pooled = app.settings.database_max_connections as usize;
    let mut failed = 0;
    let mut answered = false;
    for _ in 0..=2 * pooled {
        let response = app.get("/v1/me", &mother).await;
        if response.status() == StatusCode::OK {
            answered = true;
            break;
        }
        assert!(response.status().is_server_error(), "{}", response.status());
        problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
        failed += 1;
    }
    assert!(answered, "the server never recovered its connections");
    assert!(
        failed <= pooled,
        "{failed} requests failed for {pooled} connections"
    );
    for _ in 0..5 {
        assert_eq!(app.get("/v1/me", &mother).await.status(), StatusCode::OK);
    }
    app.stop().await;
}
