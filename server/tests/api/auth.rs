use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{problem, spawn_app, Backend};

#[tokio::test]
async fn signing_in_refreshing_and_signing_out() {
    let app = spawn_app(Backend::Postgres).await;
    let response = app
        .client
        .post(app.url("/v1/auth/token"))
        .json(&json!({ "username": "mother1", "password": "onestop-demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();

    let me: Value = app.get("/v1/me", access).await.json().await.unwrap();
    assert_eq!(me["username"], "mother1");
    assert_eq!(me["role"], "applicant");

    // A refresh gives a new pair; the old refresh token is spent.
    let refreshed = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let second: Value = refreshed.json().await.unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, refresh);

    // Using the spent one again looks like theft: the whole sign-in ends.
    let replay = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    problem(replay, StatusCode::UNAUTHORIZED).await;
    let after_theft = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": second_refresh }))
        .send()
        .await
        .unwrap();
    problem(after_theft, StatusCode::UNAUTHORIZED).await;

    // Signing out ends a fresh sign-in's refresh tokens.
    let fresh = app.sign_in("mother1").await;
    let out = app
        .client
        .post(app.url("/v1/auth/logout"))
        .json(&json!({ "refresh_token": fresh["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after_logout = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": fresh["refresh_token"] }))
        .send()
        .await
        .unwrap();
    problem(after_logout, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut details = Vec::new();
    for (username, password) in [("mother1", "wrong-password"), ("nobody", "onestop-demo")] {
        let response = app
            .client
            .post(app.url("/v1/auth/token"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["type"], "urn:onestop:problem:invalid-credentials");
        details.push(body["detail"].clone());
    }
    assert_eq!(details[0], details[1]);
}

#[tokio::test]
async fn sign_in_floods_are_slowed_with_retry_after() {
    let app = crate::helpers::spawn_app_with(
        Backend::Sqlite,
        crate::helpers::Options {
            token_burst: 3,
            ..Default::default()
        },
    )
    .await;
    let mut limited = None;
    for _ in 0..10 {
        let response = app
            .client
            .post(app.url("/v1/auth/token"))
            .json(&json!({ "username": "mother1", "password": "guess" }))
            .send()
            .await
            .unwrap();
        assert!(!response.status().is_server_error());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the flood was limited");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:onestop:problem:rate-limited");
}
