use std::time::Duration;

use onestop_model::{EventKind, Platform};

use crate::helpers::{add_device, spawn_notifier, DISPLAY_NAME, USERNAME};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_decision_reaches_each_phone_once_in_its_language() {
    let app = spawn_notifier().await;
    let event = app.event(EventKind::CaseDecided, "approved");
    app.publish(&event).await;

    let messages = app.drive_until_messages(1, PATIENCE).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["token"], app.android.push_token.as_str());
    // vi-VN reads Vietnamese.
    assert_eq!(message["notification"]["title"], "Đã có kết quả");
    let collapse = format!("{}-approved", event.case_id.unwrap().simple());
    assert_eq!(message["android"]["collapse_key"], collapse.as_str());
    assert_eq!(message["data"]["status"], "approved");
    assert_eq!(message["data"]["kind"], "case.decided");
    let text = message.to_string();
    assert!(
        !text.contains(USERNAME) && !text.contains(DISPLAY_NAME),
        "{text}"
    );
    assert!(!text.contains(&app.user_id.to_string()), "{text}");
    // One OAuth2 exchange, reused.
    assert_eq!(app.fcm.token_requests(), 1);

    app.drive_until_settled(PATIENCE).await;
    let attempts = app.attempts(event.event_id).await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let android = attempts
        .iter()
        .find(|a| a.device_id == app.android.id)
        .unwrap();
    assert_eq!(
        (android.provider.as_str(), android.outcome.as_str()),
        ("fcm", "delivered")
    );
    // No APNs credentials: the iPhone's push went to the log.
    let ios = attempts.iter().find(|a| a.device_id == app.ios.id).unwrap();
    assert_eq!(
        (ios.provider.as_str(), ios.outcome.as_str()),
        ("log", "delivered")
    );

    // The relay publishes the same event again (at least once): nothing
    // more is sent, and the entry is acknowledged.
    app.publish(&event).await;
    let outcomes = app.drive_until_settled(PATIENCE).await;
    assert!(
        outcomes.iter().any(|o| o.acked == 1 && o.pushes == 0),
        "{outcomes:#?}"
    );
    assert_eq!(app.fcm.messages().len(), 1);
    assert_eq!(app.fcm.send_requests(), 1);
    assert_eq!(app.attempts(event.event_id).await.len(), 2);
}

#[tokio::test]
async fn an_uninstalled_app_loses_its_device_and_receipts_push_nothing() {
    let app = spawn_notifier().await;
    let old_phone = add_device(&app.db, app.user_id, Platform::Android, "th-TH").await;
    app.fcm.unregister(&old_phone.push_token);

    // A receipt only goes to the inbox.
    app.publish(&app.event(EventKind::SubmissionReceived, "submitted"))
        .await;
    let event = app.event(EventKind::CaseInfoRequested, "info_requested");
    app.publish(&event).await;

    let messages = app.drive_until_messages(1, PATIENCE).await;
    app.drive_until_settled(PATIENCE).await;
    assert_eq!(app.fcm.messages().len(), 1, "{messages:#?}");
    assert_eq!(messages[0]["token"], app.android.push_token.as_str());
    assert_eq!(messages[0]["android"]["priority"], "HIGH");

    let devices = app.devices().await;
    assert!(
        devices.iter().all(|d| d.id != old_phone.id),
        "the unregistered device is deleted"
    );
    assert_eq!(devices.len(), 2);
    let attempts = app.attempts(event.event_id).await;
    let removed = attempts
        .iter()
        .find(|a| a.device_id == old_phone.id)
        .unwrap();
    assert_eq!(removed.outcome, "token_removed");
    assert!(removed.detail.as_deref().unwrap().contains("UNREGISTERED"));
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
}

#[tokio::test]
async fn a_token_fcm_forgot_is_never_tried_again() {
    let app = spawn_notifier().await;
    let old_phone = add_device(&app.db, app.user_id, Platform::Android, "en").await;
    app.fcm.unregister(&old_phone.push_token);

    let first = app.event(EventKind::CaseDecided, "approved");
    app.publish(&first).await;
    app.drive_until_settled(PATIENCE).await;
    assert_eq!(app.fcm.sends_to(&old_phone.push_token), 1);

    let second = app.event(EventKind::CaseInfoRequested, "info_requested");
    app.publish(&second).await;
    app.drive_until_messages(2, PATIENCE).await;
    app.drive_until_settled(PATIENCE).await;
    // The current phone got both; the forgotten token was not asked again.
    assert_eq!(app.messages_for(&second).len(), 1);
    assert_eq!(app.fcm.sends_to(&old_phone.push_token), 1);
    assert!(app
        .attempts(second.event_id)
        .await
        .iter()
        .all(|a| a.device_id != old_phone.id));
}

#[tokio::test]
async fn a_decision_on_a_case_withdrawn_since_is_not_pushed() {
    use chrono::Utc;
    use onestop_model::entities::{case, submission};
    use onestop_model::{CaseStatus, SubmissionKind};
    use sea_orm::{ActiveModelTrait, Set};

    let app = spawn_notifier().await;
    let decided = app.event(EventKind::CaseDecided, "approved");
    submission::ActiveModel {
        id: Set(decided.submission_id),
        applicant_id: Set(app.user_id),
        kind: Set(SubmissionKind::OneStop),
        organisation_id: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(&app.db)
    .await
    .unwrap();
    // She withdrew the application after the decision was committed and
    // before the notifier got to it.
    case::ActiveModel {
        id: Set(decided.case_id.unwrap()),
        submission_id: Set(decided.submission_id),
        applicant_id: Set(app.user_id),
        agency_id: Set("muni-gangnam".into()),
        service_code: Set(None),
        form_code: Set(None),
        status: Set(CaseStatus::Withdrawn),
        version: Set(3),
        claimed_by: Set(None),
        claimed_at: Set(None),
        fields: Set(serde_json::json!({})),
        created_at: Set(Utc::now()),
        updated_at: Set(Utc::now()),
    }
    .insert(&app.db)
    .await
    .unwrap();
    app.publish(&decided).await;
    let other = app.event(EventKind::CaseDecided, "rejected");
    app.publish(&other).await;

    let outcomes = app.drive_until_settled(PATIENCE).await;
    assert_eq!(outcomes.iter().map(|o| o.withdrawn).sum::<usize>(), 1);
    assert!(app.messages_for(&decided).is_empty());
    assert!(app.attempts(decided.event_id).await.is_empty());
    // Other cases are pushed as usual.
    assert_eq!(app.messages_for(&other).len(), 1);
}

#[tokio::test]
async fn copies_of_one_event_read_together_buzz_a_phone_once() {
    let app = spawn_notifier().await;
    // The relay republished while the notifier was away: three copies
    // wait in the stream and arrive in one batch.
    let event = app.event(EventKind::CaseDecided, "rejected");
    for _ in 0..3 {
        app.publish(&event).await;
    }

    let outcomes = app.drive_until_settled(PATIENCE).await;
    assert_eq!(
        outcomes.iter().map(|o| o.acked).sum::<usize>(),
        3,
        "{outcomes:#?}"
    );
    assert_eq!(app.fcm.messages().len(), 1);
    assert_eq!(app.fcm.send_requests(), 1);
    assert_eq!(app.attempts(event.event_id).await.len(), 2);
}
