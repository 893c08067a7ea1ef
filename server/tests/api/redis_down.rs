//! Redis down while an official decides: the decision succeeds, and the push
//! arrives once Redis is back.

use std::time::Duration;

use onestop_test_support::{FakeFcm, RedisProxy};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_with, Backend, Options, REDIS_ADDR};
use crate::journey::start_notifier;

#[tokio::test]
async fn a_decision_made_while_redis_is_down_reaches_the_phone_when_it_is_back() {
    let proxy = RedisProxy::start(REDIS_ADDR).await;
    let app = spawn_app_with(
        Backend::Postgres,
        Options {
            redis_url: proxy.url(),
            ..Options::default()
        },
    )
    .await;
    let fcm = FakeFcm::start().await;
    let notifier = start_notifier(&app, &fcm, &proxy.url()).await;

    let mother = app.login("mother1").await;
    let registered = app
        .post_json(
            "/v1/devices",
            &mother,
            &json!({ "platform": "android", "push_token": "fcm-token-redis-down-0123456789", "locale": "en" }),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap().to_owned();
    let official = app.login("official.municipality").await;
    let (_, etag) = app.review_case(&official, &case_id).await;

    proxy.pause();
    let decided = app.decide(&official, &case_id, &etag, "approved", "").await;
    assert_eq!(
        decided.status(),
        StatusCode::OK,
        "the decision does not depend on Redis"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "readiness tells Redis is gone"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        fcm.messages().is_empty(),
        "nothing can be pushed while Redis is down"
    );

    proxy.resume();
    let messages = fcm.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(messages[0]["data"]["case_id"], case_id);
    assert_eq!(messages[0]["notification"]["title"], "A decision is ready");
    notifier.cancel();
    app.stop().await;
}
