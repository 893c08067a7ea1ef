//! What a push says, and how it is written for FCM and APNs. Pure
//! functions, so the mobile contract can print examples from the same code.
//!
//! A push passes through Google's or Apple's servers, so it carries no
//! personal data: a localised title and body that name nobody, the ids of
//! the case and submission, the event kind, the new status and a deep link.
//! The app fetches the details over the authenticated API.

use std::collections::BTreeMap;
use std::time::Duration;

use a2::request::payload::Payload;
use a2::{CollapseId, DefaultNotificationBuilder, NotificationBuilder, NotificationOptions};
use chrono::{DateTime, Utc};
use onestop_model::catalog::{Catalog, Texts};
use onestop_model::{EventKind, Locale, StreamEvent};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// How urgently the platform should deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushPriority {
    /// Wakes the phone now: a decision or a request the person must answer.
    High,
    /// Delivered when convenient for the battery.
    Normal,
}

/// A push for one event in one language, ready to be written for a
/// platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RenderedPush {
    pub event_id: Uuid,
    pub kind: EventKind,
    pub submission_id: Uuid,
    pub case_id: Option<Uuid>,
    pub status: Option<String>,
    pub locale: Locale,
    pub title: String,
    pub body: String,
    /// One per case and status: a retried delivery replaces the earlier
    /// notification instead of showing twice.
    pub collapse_key: String,
    pub deep_link: String,
    pub priority: PushPriority,
    /// How long the platform keeps trying to reach a phone that is off.
    #[serde(with = "seconds")]
    pub ttl: Duration,
}

mod seconds {
    pub fn serialize<S: serde::Serializer>(
        value: &std::time::Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("{0:?} events are not pushed")]
    NotPushed(EventKind),
    #[error("the catalog has no text {0} in any language")]
    MissingText(String),
}

const DAY: u64 = 24 * 3600;

/// How long a push of this kind is worth delivering late. A decision is
/// also in the inbox, so after four days a prompt adds little; a request
/// for information has a deadline of its own and keeps a week.
pub fn ttl_for(kind: EventKind) -> Duration {
    Duration::from_secs(match kind {
        EventKind::CaseDecided => 4 * DAY,
        EventKind::CaseInfoRequested | EventKind::DocumentReturned => 7 * DAY,
        EventKind::SubmissionReceived => DAY,
    })
}

pub fn priority_for(kind: EventKind) -> PushPriority {
    match kind {
        EventKind::CaseDecided | EventKind::CaseInfoRequested => PushPriority::High,
        EventKind::DocumentReturned | EventKind::SubmissionReceived => PushPriority::Normal,
    }
}

/// The catalog key of a kind's push text, e.g. `push.case.decided`.
pub fn text_key(kind: EventKind) -> String {
    format!("push.{}", kind.as_str())
}

/// Where the app opens: the case, or the submission when the event is not
/// about one case.
pub fn deep_link(event: &StreamEvent) -> String {
    match event.case_id {
        Some(case) => format!("onestop://cases/{case}"),
        None => format!("onestop://submissions/{}", event.submission_id),
    }
}

impl RenderedPush {
    /// The push for `event` in the language closest to the device's BCP 47
    /// tag (`vi-VN` → Vietnamese; a language without texts → English).
    pub fn render(
        event: &StreamEvent,
        texts: &Texts,
        device_locale: &str,
    ) -> Result<Self, RenderError> {
        if !event.kind.is_pushed() {
            return Err(RenderError::NotPushed(event.kind));
        }
        let locale = Locale::negotiate(device_locale);
        let key = text_key(event.kind);
        // No placeholders are filled: nothing about the person goes out.
        let (title, body) = texts
            .render(&key, locale, &[])
            .ok_or(RenderError::MissingText(key))?;
        Ok(Self::compose(event, locale, title, body))
    }

    /// As [`Self::render`], with the texts of a catalog file instead of
    /// the database (for examples and documentation).
    pub fn from_catalog(
        event: &StreamEvent,
        catalog: &Catalog,
        device_locale: &str,
    ) -> Result<Self, RenderError> {
        if !event.kind.is_pushed() {
            return Err(RenderError::NotPushed(event.kind));
        }
        let locale = Locale::negotiate(device_locale);
        let key = text_key(event.kind);
        let by_locale = catalog
            .texts
            .get(&key)
            .ok_or_else(|| RenderError::MissingText(key.clone()))?;
        let text = [locale, Locale::En, Locale::Ko]
            .into_iter()
            .find_map(|l| by_locale.get(l.as_str()))
            .ok_or(RenderError::MissingText(key))?;
        Ok(Self::compose(
            event,
            locale,
            text.title.clone(),
            text.body.clone(),
        ))
    }

    fn compose(event: &StreamEvent, locale: Locale, title: String, body: String) -> Self {
        RenderedPush {
            event_id: event.event_id,
            kind: event.kind,
            submission_id: event.submission_id,
            case_id: event.case_id,
            status: event.status.clone(),
            locale,
            title,
            body,
            collapse_key: event.collapse_key(),
            deep_link: deep_link(event),
            priority: priority_for(event.kind),
            ttl: ttl_for(event.kind),
        }
    }

    /// The data both platforms carry, every value a string; absent ids are
    /// left out.
    pub fn data(&self) -> BTreeMap<&'static str, String> {
        let mut data = BTreeMap::from([
            ("event_id", self.event_id.to_string()),
            ("kind", self.kind.as_str().to_owned()),
            ("submission_id", self.submission_id.to_string()),
            ("deep_link", self.deep_link.clone()),
        ]);
        if let Some(case) = self.case_id {
            data.insert("case_id", case.to_string());
        }
        if let Some(status) = &self.status {
            data.insert("status", status.clone());
        }
        data
    }
}

/// The FCM HTTP v1 `message` for one device (the request body is
/// `{"message": …}`). Android only: iOS goes through APNs directly.
pub fn fcm_message(device_token: &str, push: &RenderedPush) -> Value {
    let priority = match push.priority {
        PushPriority::High => "HIGH",
        PushPriority::Normal => "NORMAL",
    };
    json!({
        "token": device_token,
        "notification": {
            "title": push.title,
            "body": push.body,
        },
        "data": push.data(),
        "android": {
            "collapse_key": push.collapse_key,
            "priority": priority,
            "ttl": format!("{}s", push.ttl.as_secs()),
            "notification": {
                // The same tag replaces the notification already shown.
                "tag": push.collapse_key,
            },
        },
    })
}

/// The a2 request for one device: the payload and the `apns-*` headers
/// (`apns-collapse-id`, `apns-priority`, `apns-expiration`,
/// `apns-push-type`, `apns-topic`).
pub fn apns_request<'a>(
    device_token: &'a str,
    push: &'a RenderedPush,
    topic: &'a str,
    now: DateTime<Utc>,
) -> Payload<'a> {
    let options = NotificationOptions {
        apns_push_type: Some(a2::PushType::Alert),
        apns_expiration: Some(expires_at(push, now)),
        apns_priority: Some(match push.priority {
            PushPriority::High => a2::Priority::High,
            PushPriority::Normal => a2::Priority::Normal,
        }),
        apns_topic: Some(topic),
        // At most 64 bytes: 32 hex digits, a dash and a status.
        apns_collapse_id: CollapseId::new(&push.collapse_key).ok(),
        apns_id: None,
    };
    let mut payload = DefaultNotificationBuilder::new()
        .set_title(&push.title)
        .set_body(&push.body)
        .set_sound("default")
        .build(device_token, options);
    for (key, value) in push.data() {
        payload.data.insert(key, Value::String(value));
    }
    payload
}

/// The JSON body APNs receives for `push`.
pub fn apns_payload(push: &RenderedPush) -> Value {
    let payload = apns_request("", push, "", DateTime::UNIX_EPOCH);
    serde_json::to_value(&payload).expect("APNs payloads serialise")
}

/// The `apns-*` headers sent with `push`, for documentation.
pub fn apns_headers(
    push: &RenderedPush,
    topic: &str,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    vec![
        ("apns-push-type", "alert".to_owned()),
        ("apns-topic", topic.to_owned()),
        ("apns-collapse-id", push.collapse_key.clone()),
        (
            "apns-priority",
            match push.priority {
                PushPriority::High => "10",
                PushPriority::Normal => "5",
            }
            .to_owned(),
        ),
        ("apns-expiration", expires_at(push, now).to_string()),
    ]
}

fn expires_at(push: &RenderedPush, now: DateTime<Utc>) -> u64 {
    (now.timestamp().max(0) as u64).saturating_add(push.ttl.as_secs())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;
    use sea_orm::{ConnectOptions, Database};

    pub(crate) fn decision() -> StreamEvent {
        StreamEvent {
            event_id: Uuid::parse_str("0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
            kind: EventKind::CaseDecided,
            occurred_at: Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap(),
            recipient_user_id: Uuid::parse_str("5f0c6d1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f").unwrap(),
            submission_id: Uuid::parse_str("0193a1b0-1111-7222-8333-444455556666").unwrap(),
            case_id: Some(Uuid::parse_str("0193a1b0-aaaa-7bbb-8ccc-ddddeeeeffff").unwrap()),
            status: Some("approved".into()),
        }
    }

    /// The shipped catalog's texts, through a private in-memory database.
    pub(crate) async fn catalog_texts() -> Texts {
        use onestop_migrations::MigratorTrait;
        let mut options = ConnectOptions::new("sqlite::memory:");
        options.max_connections(1).sqlx_logging(false);
        let db = Database::connect(options).await.unwrap();
        onestop_migrations::Migrator::up(&db, None).await.unwrap();
        onestop_model::catalog::Catalog::embedded()
            .seed(&db)
            .await
            .unwrap();
        Texts::load(&db).await.unwrap()
    }

    #[tokio::test]
    async fn a_vietnamese_phone_gets_vietnamese_and_an_unknown_language_english() {
        let texts = catalog_texts().await;
        let vietnamese = RenderedPush::render(&decision(), &texts, "vi-VN").unwrap();
        assert_eq!(vietnamese.locale, Locale::Vi);
        assert_eq!(vietnamese.title, "Đã có kết quả");
        let thai = RenderedPush::render(&decision(), &texts, "th").unwrap();
        assert_eq!(thai.locale, Locale::En);
        assert_eq!(thai.title, "A decision is ready");
        let korean = RenderedPush::render(&decision(), &texts, "ko-KR").unwrap();
        assert_eq!(korean.title, "신청 결과가 나왔습니다");
        // The catalog file gives the same pushes as the database.
        let catalog = Catalog::embedded();
        for tag in ["vi-VN", "th", "ko-KR", "zh-Hant-TW"] {
            assert_eq!(
                RenderedPush::from_catalog(&decision(), &catalog, tag).unwrap(),
                RenderedPush::render(&decision(), &texts, tag).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn every_pushed_kind_has_its_text_and_receipts_are_not_pushed() {
        let texts = catalog_texts().await;
        for kind in [
            EventKind::CaseDecided,
            EventKind::CaseInfoRequested,
            EventKind::DocumentReturned,
        ] {
            let event = StreamEvent { kind, ..decision() };
            for locale in Locale::ALL {
                let push = RenderedPush::render(&event, &texts, locale.as_str()).unwrap();
                assert!(!push.title.is_empty() && !push.body.is_empty());
                assert!(
                    !push.body.contains('{'),
                    "unfilled placeholder: {}",
                    push.body
                );
            }
        }
        let receipt = StreamEvent {
            kind: EventKind::SubmissionReceived,
            ..decision()
        };
        assert_eq!(
            RenderedPush::render(&receipt, &texts, "en"),
            Err(RenderError::NotPushed(EventKind::SubmissionReceived))
        );
    }

    #[tokio::test]
    async fn payloads_carry_the_collapse_key_and_only_ids_kind_and_status() {
        let texts = catalog_texts().await;
        let event = decision();
        let push = RenderedPush::render(&event, &texts, "en").unwrap();
        let collapse = "0193a1b0aaaa7bbb8cccddddeeeeffff-approved";
        assert_eq!(push.collapse_key, collapse);

        let message = fcm_message("fcm-token-1", &push);
        assert_eq!(message["android"]["collapse_key"], collapse);
        assert_eq!(message["android"]["notification"]["tag"], collapse);
        assert_eq!(message["android"]["priority"], "HIGH");
        assert_eq!(message["android"]["ttl"], "345600s");
        assert!(message.get("apns").is_none());
        let data = message["data"].as_object().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "case_id",
                "deep_link",
                "event_id",
                "kind",
                "status",
                "submission_id"
            ]
        );
        assert!(data.values().all(Value::is_string));
        assert_eq!(
            data["deep_link"],
            "onestop://cases/0193a1b0-aaaa-7bbb-8ccc-ddddeeeeffff"
        );

        let apns = apns_payload(&push);
        assert_eq!(apns["aps"]["alert"]["title"], "A decision is ready");
        assert_eq!(apns["case_id"], "0193a1b0-aaaa-7bbb-8ccc-ddddeeeeffff");
        let headers = apns_headers(
            &push,
            "kr.go.onestop",
            Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap(),
        );
        assert!(headers.contains(&("apns-collapse-id", collapse.to_owned())));
        assert!(headers.contains(&("apns-priority", "10".to_owned())));

        // Nothing that names the person: the only strings are ids, the
        // kind, the status, the deep link and the catalog's fixed texts.
        let allowed: Vec<String> = vec![
            "fcm-token-1".into(),
            push.title.clone(),
            push.body.clone(),
            collapse.into(),
            "HIGH".into(),
            "345600s".into(),
            "default".into(),
            event.event_id.to_string(),
            event.submission_id.to_string(),
            event.case_id.unwrap().to_string(),
            "case.decided".into(),
            "approved".into(),
            push.deep_link.clone(),
        ];
        for value in [message, apns] {
            for text in strings_in(&value) {
                assert!(
                    allowed.contains(&text),
                    "unexpected string in a push: {text}"
                );
            }
        }
        assert!(!format!("{push:?}").contains(&event.recipient_user_id.to_string()));
    }

    fn strings_in(value: &Value) -> Vec<String> {
        match value {
            Value::String(text) => vec![text.clone()],
            Value::Array(items) => items.iter().flat_map(strings_in).collect(),
            Value::Object(map) => map.values().flat_map(strings_in).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn an_event_without_a_case_links_to_its_submission() {
        let event = StreamEvent {
            case_id: None,
            ..decision()
        };
        assert_eq!(
            deep_link(&event),
            "onestop://submissions/0193a1b0-1111-7222-8333-444455556666"
        );
    }
}
