//! The delivery guarantee under faults: a notifier killed in the middle of a
//! batch, Redis losing everything, a long provider outage, two notifiers in
//! one group, and the operator replaying a dead letter.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onestop_model::entities::outbox;
use onestop_model::events::CONSUMER_GROUP;
use onestop_model::{EventKind, StreamEvent};
use onestop_notifier::{BatchOutcome, Notifier};
use onestop_server::outbox::{record, run_relay, RelayTiming};
use onestop_server::redis_link::RedisLink;
use redis::streams::StreamPendingCountReply;
use sea_orm::EntityTrait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_notifier, spawn_notifier_with, Options, TestNotifier};

const PATIENCE: Duration = Duration::from_secs(30);

fn decisions(app: &TestNotifier, count: usize) -> Vec<StreamEvent> {
    (0..count)
        .map(|i| {
            let status = ["approved", "rejected"][i % 2];
            app.event(EventKind::CaseDecided, status)
        })
        .collect()
}

/// Every event reached the Android phone at least once, and any second
/// copy carries the same collapse key, so the phone shows it once.
fn assert_each_arrived(app: &TestNotifier, events: &[StreamEvent]) -> usize {
    let mut duplicates = 0;
    for event in events {
        let messages = app.messages_for(event);
        assert!(!messages.is_empty(), "no push for {}", event.event_id);
        let keys: HashSet<&str> = messages
            .iter()
            .map(|m| m["android"]["collapse_key"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), 1, "{messages:#?}");
        assert_eq!(
            keys.into_iter().next().unwrap(),
            event.collapse_key().as_str()
        );
        duplicates += messages.len() - 1;
    }
    duplicates
}

#[tokio::test]
async fn a_notifier_killed_in_the_middle_of_a_batch_loses_no_push() {
    let app = spawn_notifier().await;
    // Slow answers keep the doomed notifier inside its batch.
    app.fcm.set_delay(Duration::from_millis(150));
    let events = decisions(&app, 20);
    for event in &events {
        app.publish(event).await;
    }
    let mut doomed = app
        .notifier_command("doomed")
        .env("NOTIFIER_BATCH_SIZE", "20")
        .env("NOTIFIER_CONCURRENCY", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the notifier binary starts");
    app.fcm.wait_for_messages(3, PATIENCE).await;

    let mut redis = app.redis.clone();
    let held: StreamPendingCountReply = redis::AsyncCommands::xpending_consumer_count(
        &mut redis,
        app.stream(),
        CONSUMER_GROUP,
        "-",
        "+",
        100,
        "doomed",
    )
    .await
    .unwrap();
    doomed.kill().expect("SIGKILL");
    doomed.wait().unwrap();
    // A send in flight may still land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed_before_the_kill = app.fcm.message_count();
    assert!(
        !held.ids.is_empty() && pushed_before_the_kill < events.len(),
        "the notifier was killed mid-batch: {} entries held, {pushed_before_the_kill} pushed",
        held.ids.len()
    );

    // Another notifier takes the dead one's entries over.
    app.fcm.set_delay(Duration::ZERO);
    app.drive_until(PATIENCE, |app, _| {
        events.iter().all(|e| !app.messages_for(e).is_empty())
    })
    .await;
    let outcomes = app.drive_until_settled(PATIENCE).await;
    let duplicates = assert_each_arrived(&app, &events);
    // Only what the dead notifier pushed but could not record is pushed
    // again.
    assert!(
        duplicates <= pushed_before_the_kill,
        "{duplicates} duplicates"
    );
    assert!(app.dead_letters().await.ids.is_empty(), "{outcomes:#?}");
    for event in &events {
        let attempts = app.attempts(event.event_id).await;
        assert!(attempts
            .iter()
            .any(|a| a.device_id == app.android.id && a.outcome == "delivered"));
    }
}

/// This test empties Redis between the decision and its delivery. Other
/// tests share Redis, so it works in a logical database of its own
/// (`redis://127.0.0.1:6379/9`) and `FLUSHDB` there is Redis restarting
/// empty as far as this notifier and this relay can tell; nobody else's keys
/// are touched.
#[tokio::test]
async fn every_push_arrives_although_redis_forgot_everything() {
    let app = spawn_notifier_with(Options {
        redis_db: 9,
        ..Options::default()
    })
    .await;
    let link = Arc::new(RedisLink::new(&app.redis_url, &app.settings.redis_prefix).unwrap());
    let wakeup = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let relay = tokio::spawn(run_relay(
        app.db.clone(),
        link,
        wakeup.clone(),
        RelayTiming {
            poll: Duration::from_millis(100),
            republish_after: Duration::from_secs(1),
        },
        cancel.clone(),
    ));
    // The group exists before the decision.
    app.notifier.process_batch().await.unwrap();

    let events = decisions(&app, 3);
    for event in &events {
        record(&app.db, event).await.unwrap();
    }
    wakeup.notify_one();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rows = outbox::Entity::find().all(&app.db).await.unwrap();
        if rows.len() == 3 && rows.iter().all(|r| r.published_at.is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "the relay did not publish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut redis = app.redis.clone();
    let _: () = redis::cmd("FLUSHDB").query_async(&mut redis).await.unwrap();

    app.drive_until(PATIENCE, |app, _| {
        events.iter().all(|e| !app.messages_for(e).is_empty())
    })
    .await;
    app.drive_until_settled(PATIENCE).await;
    assert_eq!(assert_each_arrived(&app, &events), 0);
    let rows = outbox::Entity::find().all(&app.db).await.unwrap();
    for row in rows {
        assert!(row.handled_at.is_some(), "{row:?}");
        assert!(row.publish_attempts >= 2, "published again: {row:?}");
    }
    cancel.cancel();
    relay.await.unwrap();
}

#[tokio::test]
async fn a_long_provider_outage_is_waited_out_honouring_retry_after() {
    let app = spawn_notifier().await;
    app.fcm.fail_next(6, 1);
    let events = decisions(&app, 4);
    for event in &events {
        app.publish(event).await;
    }
    app.drive_until(PATIENCE, |app, _| {
        events.iter().all(|e| !app.messages_for(e).is_empty())
    })
    .await;
    app.drive_until_settled(PATIENCE).await;
    assert_eq!(assert_each_arrived(&app, &events), 0);
    assert!(app.dead_letters().await.ids.is_empty());

    let mut retried = 0;
    for event in &events {
        let android: Vec<_> = app
            .attempts(event.event_id)
            .await
            .into_iter()
            .filter(|a| a.device_id == app.android.id)
            .collect();
        assert_eq!(android.last().unwrap().outcome, "delivered");
        // After a 503 with Retry-After: 1, the next try waited a second.
        for pair in android.windows(2) {
            assert_eq!(pair[0].outcome, "retry");
            assert!(
                pair[1].created_at - pair[0].created_at >= chrono::Duration::milliseconds(1000),
                "{pair:#?}"
            );
            retried += 1;
        }
    }
    assert!(retried >= 4, "every event met the outage");
}

#[tokio::test]
async fn two_notifiers_share_the_work_and_push_each_event_once() {
    let app = spawn_notifier_with(Options {
        batch_size: 4,
        ..Options::default()
    })
    .await;
    app.fcm.set_delay(Duration::from_millis(10));
    let second = Notifier::build(app.settings_for("second-notifier"))
        .await
        .unwrap();
    let events = decisions(&app, 40);
    for event in &events {
        app.publish(event).await;
    }
    let drive = |notifier: Notifier| {
        let fcm_done = || app.fcm.message_count() >= events.len();
        async move {
            let deadline = Instant::now() + PATIENCE;
            let mut total = BatchOutcome::default();
            while !fcm_done() && Instant::now() < deadline {
                if let Ok(outcome) = notifier.process_batch().await {
                    total.delivered += outcome.delivered;
                    total.acked += outcome.acked;
                }
            }
            total
        }
    };
    let (first, other) = tokio::join!(drive(app.notifier.clone()), drive(second.clone()));
    app.drive_until_settled(PATIENCE).await;

    assert_eq!(assert_each_arrived(&app, &events), 0);
    assert_eq!(app.fcm.message_count(), events.len());
    assert_eq!(app.fcm.send_requests(), events.len());
    assert!(
        first.acked > 0 && other.acked > 0,
        "both took part: {first:?} {other:?}"
    );
    let mut per_event: HashMap<uuid::Uuid, usize> = HashMap::new();
    for event in &events {
        for attempt in app.attempts(event.event_id).await {
            if attempt.device_id == app.android.id {
                *per_event.entry(attempt.event_id).or_default() += 1;
            }
        }
    }
    assert!(per_event.values().all(|n| *n == 1), "{per_event:?}");
}

#[tokio::test]
async fn an_operator_lists_inspects_and_replays_a_dead_letter() {
    let app = spawn_notifier_with(Options {
        max_deliveries: 1,
        ..Options::default()
    })
    .await;
    app.fcm.fail_next(1, 0);
    let event = app.event(EventKind::CaseDecided, "approved");
    app.publish(&event).await;
    app.drive_until_settled(PATIENCE).await;
    let dead = app.dead_letters().await;
    assert_eq!(dead.ids.len(), 1);
    let id = dead.ids[0].id.clone();
    assert!(app.fcm.messages().is_empty());

    let run = |args: &[&str]| {
        let output = app
            .notifier_command("operator")
            .arg("dead-letters")
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (status, listed) = run(&["list"]);
    assert_eq!(status, Some(0), "{listed}");
    assert!(
        listed.contains(&id) && listed.contains("case.decided") && listed.contains("gave up"),
        "{listed}"
    );
    let (status, shown) = run(&["show", &id]);
    assert_eq!(status, Some(0));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["event"]["event_id"], event.event_id.to_string());
    assert!(shown["reason"].as_str().unwrap().contains("UNAVAILABLE"));
    // Nonsense is refused, not a crash.
    assert_eq!(run(&["show", "not-an-id"]).0, Some(1));
    assert_eq!(run(&["replay"]).0, Some(2));
    assert_eq!(run(&["list", "--limit", "many"]).0, Some(2));

    let (status, replayed) = run(&["replay", &id]);
    assert_eq!(status, Some(0), "{replayed}");
    let messages = app.drive_until_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages[0]["data"]["event_id"], event.event_id.to_string());
    app.drive_until_settled(PATIENCE).await;
    assert!(app.dead_letters().await.ids.is_empty());
}

#[tokio::test]
async fn a_slow_provider_does_not_make_a_batch_look_abandoned() {
    // FCM answers after 2 s; entries count as abandoned after 0.6 s
    // without news. The first notifier keeps its batch claimed while it
    // waits, so the second finds nothing to take over.
    let app = spawn_notifier_with(Options {
        reclaim_idle_ms: 600,
        ..Options::default()
    })
    .await;
    app.fcm.set_delay(Duration::from_millis(2000));
    let second = Notifier::build(app.settings_for("second-notifier"))
        .await
        .unwrap();
    let event = app.event(EventKind::CaseDecided, "approved");
    app.publish(&event).await;

    let first = app.notifier.clone();
    let slow = tokio::spawn(async move { first.process_batch().await });
    let watching = Instant::now() + Duration::from_millis(2300);
    while Instant::now() < watching {
        let _ = second.process_batch().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slow.await.unwrap().unwrap();
    app.drive_until_settled(PATIENCE).await;

    assert_eq!(app.fcm.send_requests(), 1);
    assert_eq!(app.fcm.message_count(), 1);
}
