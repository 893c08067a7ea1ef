use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{problem, spawn_app, Backend, TestApp};

async fn officials_and_applicants_see_only_their_own(app: TestApp) {
    let mother1 = app.login("mother1").await;
    let mother2 = app.login("mother2").await;
    let municipality = app.login("official.municipality").await;
    let kepco = app.login("official.kepco").await;

    let photo = app.upload_photo(&mother1).await;
    app.grant_consent(&mother1).await;
    let response = app
        .post_json(
            "/v1/submissions",
            &mother1,
            &json!({ "services": [
                { "service": "childcare_allowance", "attachments": [photo] },
                { "service": "electricity_bill_cut" }
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let submission: Value = response.json().await.unwrap();
    let submission_id = submission["id"].as_str().unwrap();
    let municipal_case = submission["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["agency"]["id"] == "muni-gangnam")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Another mother: as if none of it existed.
    for path in [
        format!("/v1/submissions/{submission_id}"),
        format!("/v1/attachments/{photo}"),
    ] {
        let body = problem(app.get(&path, &mother2).await, StatusCode::NOT_FOUND).await;
        assert_eq!(body["type"], "urn:onestop:problem:not-found");
    }
    let withdraw = app
        .post_json(
            &format!("/v1/submissions/{submission_id}/withdraw"),
            &mother2,
            &json!({}),
        )
        .await;
    problem(withdraw, StatusCode::NOT_FOUND).await;
    let listed = app.get_json("/v1/submissions", &mother2).await;
    assert!(listed["items"].as_array().unwrap().is_empty());

    // The electricity corporation cannot see or decide a municipality case,
    // nor read the photo that only the municipality case uses.
    problem(
        app.get(&format!("/v1/review/cases/{municipal_case}"), &kepco)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let decide = app
        .decide(&kepco, &municipal_case, "\"v1\"", "approved", "")
        .await;
    problem(decide, StatusCode::NOT_FOUND).await;
    problem(
        app.get(&format!("/v1/attachments/{photo}"), &kepco).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let kepco_queue = app.get_json("/v1/review/cases", &kepco).await;
    let queue = kepco_queue["items"].as_array().unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0]["service"], "electricity_bill_cut");

    // The municipality official reads the photo of their case.
    let photo_response = app
        .get(&format!("/v1/attachments/{photo}"), &municipality)
        .await;
    assert_eq!(photo_response.status(), StatusCode::OK);
    assert_eq!(photo_response.headers()["content-type"], "image/jpeg");
    assert_eq!(
        photo_response.bytes().await.unwrap().to_vec(),
        crate::helpers::tiny_jpeg()
    );

    // A mother calling an official's route: wrong role.
    let body = problem(
        app.decide(&mother1, &municipal_case, "\"v1\"", "approved", "")
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(body["type"], "urn:onestop:problem:forbidden");
    problem(
        app.get("/v1/review/cases", &mother1).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // No token at all.
    for (method, path) in [
        (Method::GET, format!("/v1/submissions/{submission_id}")),
        (Method::GET, "/v1/inbox".to_owned()),
        (Method::GET, format!("/v1/attachments/{photo}")),
        (Method::POST, "/v1/submissions".to_owned()),
        (Method::GET, "/v1/review/cases".to_owned()),
    ] {
        let response = app
            .request(method, &path, None)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn isolation_on_postgres() {
    officials_and_applicants_see_only_their_own(spawn_app(Backend::Postgres).await).await;
}

#[tokio::test]
async fn isolation_on_sqlite() {
    officials_and_applicants_see_only_their_own(spawn_app(Backend::Sqlite).await).await;
}
