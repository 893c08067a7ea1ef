use std::time::{Duration, Instant};

use onestop_model::EventKind;
use onestop_test_support::RedisProxy;

use crate::helpers::{spawn_notifier, spawn_notifier_with, Options, REDIS_ADDR};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_push_arrives_after_fcm_was_unavailable_twice() {
    let app = spawn_notifier().await;
    app.fcm.fail_next(2, 1);
    let started = Instant::now();
    let event = app.event(EventKind::CaseDecided, "rejected");
    app.publish(&event).await;

    let messages = app.drive_until_messages(1, PATIENCE).await;
    assert_eq!(messages[0]["data"]["status"], "rejected");
    // Retry-After: 1 was honoured: no request in between, so two refused
    // and one accepted, at least two seconds apart in all.
    assert_eq!(app.fcm.send_requests(), 3);
    assert!(started.elapsed() >= Duration::from_secs(2));

    app.drive_until_settled(PATIENCE).await;
    let android: Vec<_> = app
        .attempts(event.event_id)
        .await
        .into_iter()
        .filter(|a| a.device_id == app.android.id)
        .collect();
    assert_eq!(android.last().unwrap().outcome, "delivered");
    assert_eq!(android.iter().filter(|a| a.outcome == "retry").count(), 2);
    // The iPhone was served on the first try and not pushed again.
    let ios = app
        .attempts(event.event_id)
        .await
        .into_iter()
        .filter(|a| a.device_id == app.ios.id)
        .count();
    assert_eq!(ios, 1);
    assert!(app.dead_letters().await.ids.is_empty());
}

#[tokio::test]
async fn an_unreadable_entry_goes_to_the_dead_letter_stream() {
    let app = spawn_notifier().await;
    let id = app.publish_raw("{ not json").await;
    let outcomes = app.drive_until_settled(PATIENCE).await;
    assert!(
        outcomes.iter().any(|o| o.dead_lettered == 1),
        "{outcomes:#?}"
    );
    let dead = app.dead_letters().await;
    assert_eq!(dead.ids.len(), 1);
    let entry = &dead.ids[0];
    assert_eq!(entry.get::<String>("entry_id").unwrap(), id);
    assert!(entry
        .get::<String>("reason")
        .unwrap()
        .starts_with("unparseable event"));
    assert!(app.fcm.messages().is_empty());
}

#[tokio::test]
async fn pushes_resume_when_redis_comes_back() {
    let proxy = RedisProxy::start(REDIS_ADDR).await;
    let app = spawn_notifier_with(Options {
        redis_url: Some(proxy.url()),
        ..Options::default()
    })
    .await;
    app.drive_until(PATIENCE, |_, outcomes| !outcomes.is_empty())
        .await;

    proxy.pause();
    let failed = app.notifier.process_batch().await;
    assert!(failed.is_err(), "a batch without Redis fails: {failed:?}");
    // Published straight to Redis while the notifier cannot reach it.
    let event = app.event(EventKind::DocumentReturned, "approved");
    app.publish(&event).await;
    proxy.resume();

    let messages = app.drive_until_messages(1, PATIENCE).await;
    assert_eq!(messages[0]["data"]["kind"], "document.returned");
    assert_eq!(messages[0]["android"]["priority"], "NORMAL");
}
