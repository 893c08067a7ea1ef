use std::time::Duration;

use onestop_model::EventKind;
use onestop_notifier::ops::OpsServer;
use onestop_notifier::telemetry;
use tokio_util::sync::CancellationToken;

use crate::helpers::spawn_notifier;

#[tokio::test]
async fn the_run_loop_pushes_reports_health_and_metrics_and_stops_when_told() {
    let app = spawn_notifier().await;
    let ops = OpsServer::bind(
        "127.0.0.1:0",
        app.notifier.clone(),
        telemetry::metrics_handle().clone(),
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", ops.port());
    let cancel = CancellationToken::new();
    let served = tokio::spawn(ops.run_until_stopped(cancel.clone().cancelled_owned()));
    let worker = app.notifier.spawn(cancel.clone());

    let event = app.event(EventKind::CaseDecided, "approved");
    app.publish(&event).await;
    app.fcm.wait_for_messages(1, Duration::from_secs(10)).await;

    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    // The push reached FCM before the notifier counted it (it records the
    // attempt first), and the event's time to push is recorded once all
    // its pushes are: read the metrics until both show.
    let delivered = r#"notifier_pushes_total{provider="fcm",outcome="delivered"}"#;
    let timed = "notifier_decision_to_push_seconds";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let shown = metrics.contains(delivered) && metrics.contains(timed);
        if shown || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(metrics.contains(delivered), "{metrics}");
    assert!(metrics.contains(timed), "{metrics}");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the loop stops within one read")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the ops endpoint stops")
        .unwrap()
        .unwrap();
}
