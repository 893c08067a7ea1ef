//! The delivery side of the worker: what a batch of events means for
//! phones. Each event goes to every device of its recipient that has no
//! final outcome for it yet, through the gateway of the device's
//! platform; every attempt is recorded, a token the provider no longer
//! knows removes its device, and each entry gets its verdict: finished,
//! retried after a pause, or given up on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use onestop_model::catalog::Texts;
use onestop_model::entities::{case, device, outbox, push_attempt};
use onestop_model::events::STREAM_FIELD;
use onestop_model::{CaseStatus, Platform, StreamEvent};
use rand::Rng;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect, Set};
use tokio::sync::{RwLock, Semaphore};
use uuid::Uuid;

use super::stream::{Entry, Verdict};
use crate::error::NotifierError;
use crate::gateway::{
    ApnsGateway, Delivered, FcmGateway, LogGateway, PushError, PushGateway, PushMessage,
};
use crate::payload::RenderedPush;
use crate::settings::Settings;

/// Outcomes recorded in `push_attempts.outcome`.
pub mod outcome {
    pub const DELIVERED: &str = "delivered";
    pub const TOKEN_REMOVED: &str = "token_removed";
    pub const RETRY: &str = "retry";
    pub const FAILED: &str = "failed";
}

/// Texts are read again from the database this often, so edits to the
/// catalog reach pushes without a restart.
const TEXTS_MAX_AGE: Duration = Duration::from_secs(60);
const DETAIL_MAX_CHARS: usize = 500;
/// Rows per INSERT, well under PostgreSQL's limit of bind parameters.
const INSERT_CHUNK: usize = 1000;

/// The push gateway of each platform.
#[derive(Clone)]
pub struct Gateways {
    pub android: Arc<dyn PushGateway>,
    pub ios: Arc<dyn PushGateway>,
}

impl Gateways {
    /// FCM when `FCM_SERVICE_ACCOUNT` is set and APNs when the `APNS_*`
    /// variables are; the log for a platform without credentials.
    pub fn from_settings(settings: &Settings) -> Result<Self, NotifierError> {
        let android: Arc<dyn PushGateway> = match &settings.fcm_service_account {
            Some(path) => Arc::new(FcmGateway::from_file(
                path,
                &settings.fcm_endpoint,
                settings.push_timeout(),
            )?),
            None => Arc::new(LogGateway::new(Platform::Android)),
        };
        let ios: Arc<dyn PushGateway> = match settings.apns() {
            Some(apns) => Arc::new(ApnsGateway::new(&apns, settings.push_timeout())?),
            None => Arc::new(LogGateway::new(Platform::Ios)),
        };
        Ok(Gateways { android, ios })
    }

    fn for_platform(&self, platform: Platform) -> &Arc<dyn PushGateway> {
        match platform {
            Platform::Android => &self.android,
            Platform::Ios => &self.ios,
        }
    }
}

/// The entries of one step, each with its event, its verdict once there
/// is one, and the pushes made for it.
pub(super) struct Batch {
    items: Vec<Item>,
}

struct Item {
    entry: Entry,
    /// `None` when the entry holds no event that parses.
    event: Option<StreamEvent>,
    verdict: Option<Verdict>,
    pushes: Vec<PushDone>,
}

/// One push to make: an event of the batch to one device.
pub(super) struct Job {
    /// Its entry's place in the batch.
    item: usize,
    device: device::Model,
}

/// What a push means for its entry.
enum DeviceOutcome {
    Delivered,
    TokenRemoved,
    Retry {
        detail: String,
        retry_after: Option<Duration>,
    },
    Failed,
}

/// One push made: to which device, through which provider, what is
/// recorded of it and what it means for its entry.
pub(super) struct PushDone {
    /// Its entry's place in the batch.
    item: usize,
    device: device::Model,
    provider: &'static str,
    recorded: &'static str,
    detail: Option<String>,
    latency: Duration,
    next: DeviceOutcome,
}

/// What the database knows about the events still undecided.
struct Known {
    /// Events some notifier finished before.
    handled: HashSet<Uuid>,
    /// Cases withdrawn since their event.
    withdrawn: HashSet<Uuid>,
    devices: HashMap<Uuid, Vec<device::Model>>,
    /// Event and device pairs with a final outcome.
    settled: HashSet<(Uuid, Uuid)>,
}

impl Batch {
    /// Parses every entry. An entry with no event that parses, or one
    /// delivered more than `max_deliveries` times, is given up on; an
    /// event that is not pushed is finished at once.
    pub(super) fn open(entries: Vec<Entry>, max_deliveries: u64) -> Self {
        let items = entries
            .into_iter()
            .map(|entry| {
                let parsed = entry
                    .raw
                    .as_deref()
                    .map(serde_json::from_str::<StreamEvent>);
                let (event, verdict) = match parsed {
                    Some(Ok(event)) if entry.deliveries > max_deliveries => (
                        Some(event),
                        Some(Verdict::Dead {
                            class: "gave_up",
                            reason: format!(
                                "delivered {} times without being finished",
                                entry.deliveries
                            ),
                        }),
                    ),
                    Some(Ok(event)) => {
                        metrics::counter!("notifier_events_consumed_total", "kind" => event.kind.as_str())
                            .increment(1);
                        let verdict = (!event.kind.is_pushed()).then_some(Verdict::Ack);
                        (Some(event), verdict)
                    }
                    Some(Err(error)) => (
                        None,
                        Some(Verdict::Dead {
                            class: "unparseable",
                            reason: format!("unparseable event: {error}"),
                        }),
                    ),
                    None => (
                        None,
                        Some(Verdict::Dead {
                            class: "unparseable",
                            reason: format!("no `{STREAM_FIELD}` field in the entry"),
                        }),
                    ),
                };
                Item {
                    entry,
                    event,
                    verdict,
                    pushes: Vec::new(),
                }
            })
            .collect();
        Batch { items }
    }

    /// The events without a verdict yet.
    fn undecided(&self) -> Vec<&StreamEvent> {
        self.items
            .iter()
            .filter(|item| item.verdict.is_none())
            .filter_map(|item| item.event.as_ref())
            .collect()
    }

    /// Decides what the database already tells (a second copy in the
    /// batch, an event finished before, a withdrawn case) and lists a push
    /// for every device of the others that has no final outcome yet.
    fn plan(&mut self, known: &Known) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut in_batch: HashSet<Uuid> = HashSet::new();
        for (index, item) in self.items.iter_mut().enumerate() {
            let Item {
                event: Some(event),
                verdict,
                ..
            } = item
            else {
                continue;
            };
            if verdict.is_some() {
                continue;
            }
            if !in_batch.insert(event.event_id) {
                *verdict = Some(Verdict::Copy);
            } else if known.handled.contains(&event.event_id) {
                *verdict = Some(Verdict::Ack);
            } else if event
                .case_id
                .is_some_and(|case| known.withdrawn.contains(&case))
            {
                tracing::info!(event_id = %event.event_id,
                    "the case was withdrawn since; nothing is pushed");
                metrics::counter!("notifier_events_skipped_total", "reason" => "withdrawn")
                    .increment(1);
                *verdict = Some(Verdict::Withdrawn);
            } else {
                let devices = known.devices.get(&event.recipient_user_id);
                for found in devices.into_iter().flatten() {
                    if !known.settled.contains(&(event.event_id, found.id)) {
                        jobs.push(Job {
                            item: index,
                            device: found.clone(),
                        });
                    }
                }
            }
        }
        jobs
    }

    /// The ids of every entry, to keep them claimed.
    pub(super) fn entry_ids(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|item| item.entry.id.clone())
            .collect()
    }

    /// Files each push under its entry.
    pub(super) fn attach(&mut self, pushes: Vec<PushDone>) {
        for push in pushes {
            self.items[push.item].pushes.push(push);
        }
    }

    /// Pushes the gateways accepted.
    pub(super) fn delivered(&self) -> usize {
        self.pushes()
            .filter(|push| matches!(push.next, DeviceOutcome::Delivered))
            .count()
    }

    /// The verdict of every entry still without one: finished when no push
    /// is to be retried; else parked for a jittered, growing pause never
    /// shorter than the longest Retry-After, or given up on after
    /// `max_deliveries`.
    pub(super) fn decide(&mut self, settings: &Settings) {
        for item in &mut self.items {
            if item.verdict.is_some() {
                continue;
            }
            let deliveries = item.entry.deliveries;
            let mut needs_retry = false;
            let mut retry_after = Duration::ZERO;
            let mut details: Vec<&str> = Vec::new();
            for push in &item.pushes {
                if let DeviceOutcome::Retry {
                    detail,
                    retry_after: after,
                } = &push.next
                {
                    needs_retry = true;
                    retry_after = retry_after.max(after.unwrap_or_default());
                    details.push(detail);
                }
            }
            let verdict = if !needs_retry {
                Verdict::Ack
            } else if deliveries >= settings.max_deliveries {
                Verdict::Dead {
                    class: "gave_up",
                    reason: format!(
                        "gave up after {deliveries} deliveries: {}",
                        details.join("; ")
                    ),
                }
            } else {
                let jitter: f64 = rand::rng().random_range(0.0..=1.0);
                let backoff = settings.retry_delay(deliveries, jitter);
                Verdict::Retry {
                    after: backoff.max(retry_after),
                }
            };
            item.verdict = Some(verdict);
        }
    }

    /// Every entry with its verdict, once [`Self::decide`] gave each one.
    pub(super) fn verdicts(&self) -> impl Iterator<Item = (&Entry, &Verdict)> {
        self.items.iter().map(|item| {
            let verdict = item.verdict.as_ref().expect("every entry has a verdict");
            (&item.entry, verdict)
        })
    }

    /// Counts every push and its latency, per provider.
    pub(super) fn count_pushes(&self) {
        for push in self.pushes() {
            metrics::counter!("notifier_pushes_total", "provider" => push.provider, "outcome" => push.recorded)
                .increment(1);
            metrics::histogram!("notifier_push_latency_seconds", "provider" => push.provider)
                .record(push.latency.as_secs_f64());
        }
    }

    /// Commit to push, measured where the push was accepted.
    pub(super) fn measure_arrival(&self) {
        let arrived = Utc::now();
        for item in &self.items {
            let Some(event) = &item.event else {
                continue;
            };
            let waited = (arrived - event.occurred_at).num_milliseconds().max(0) as f64 / 1000.0;
            for push in &item.pushes {
                if matches!(push.next, DeviceOutcome::Delivered) {
                    metrics::histogram!("notifier_decision_to_push_seconds", "kind" => event.kind.as_str())
                        .record(waited);
                }
            }
        }
    }

    fn pushes(&self) -> impl Iterator<Item = &PushDone> {
        self.items.iter().flat_map(|item| &item.pushes)
    }
}

struct CachedTexts {
    texts: Arc<Texts>,
    loaded_at: Option<Instant>,
}

/// Pushes through the gateways and records them in the database.
pub(super) struct Delivery {
    settings: Arc<Settings>,
    db: DatabaseConnection,
    gateways: Gateways,
    /// Pushes in flight per provider.
    android_permits: Semaphore,
    ios_permits: Semaphore,
    texts: RwLock<CachedTexts>,
}

impl Delivery {
    pub(super) fn new(settings: Arc<Settings>, db: DatabaseConnection, gateways: Gateways) -> Self {
        Delivery {
            android_permits: Semaphore::new(settings.concurrency),
            ios_permits: Semaphore::new(settings.concurrency),
            settings,
            db,
            gateways,
            texts: RwLock::new(CachedTexts {
                texts: Arc::new(Texts::default()),
                loaded_at: None,
            }),
        }
    }

    /// The catalog's texts, read again once they are older than a minute.
    pub(super) async fn texts(&self) -> Result<Arc<Texts>, NotifierError> {
        {
            let cached = self.texts.read().await;
            if cached
                .loaded_at
                .is_some_and(|at| at.elapsed() < TEXTS_MAX_AGE)
            {
                return Ok(cached.texts.clone());
            }
        }
        let mut cached = self.texts.write().await;
        match Texts::load(&self.db).await {
            Ok(texts) => {
                cached.texts = Arc::new(texts);
                cached.loaded_at = Some(Instant::now());
            }
            // Texts loaded before are good enough while the database is
            // away; the first load must succeed.
            Err(error) if cached.loaded_at.is_some() => {
                tracing::warn!(error = %error, "texts could not be reloaded; using the ones loaded before");
            }
            Err(error) => return Err(error.into()),
        }
        Ok(cached.texts.clone())
    }

    /// Looks up what the database knows about the batch's undecided
    /// events, decides what that settles, and returns the pushes to make.
    pub(super) async fn plan(&self, batch: &mut Batch) -> Result<Vec<Job>, NotifierError> {
        let open = batch.undecided();
        if open.is_empty() {
            return Ok(Vec::new());
        }
        let known = self.look_up(&open).await?;
        Ok(batch.plan(&known))
    }

    /// A few queries for all the events at once.
    async fn look_up(&self, open: &[&StreamEvent]) -> Result<Known, DbErr> {
        let db = &self.db;
        let event_ids: Vec<Uuid> = unique(open.iter().map(|e| e.event_id));
        let handled: HashSet<Uuid> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::EventId)
            .filter(outbox::Column::EventId.is_in(event_ids.clone()))
            .filter(outbox::Column::HandledAt.is_not_null())
            .into_tuple::<Uuid>()
            .all(db)
            .await?
            .into_iter()
            .collect();
        let case_ids: Vec<Uuid> = unique(open.iter().filter_map(|e| e.case_id));
        let withdrawn: HashSet<Uuid> = if case_ids.is_empty() {
            HashSet::new()
        } else {
            case::Entity::find()
                .select_only()
                .column(case::Column::Id)
                .filter(case::Column::Id.is_in(case_ids))
                .filter(case::Column::Status.eq(CaseStatus::Withdrawn))
                .into_tuple::<Uuid>()
                .all(db)
                .await?
                .into_iter()
                .collect()
        };
        let users: Vec<Uuid> = unique(open.iter().map(|e| e.recipient_user_id));
        let mut devices: HashMap<Uuid, Vec<device::Model>> = HashMap::new();
        for found in device::Entity::find()
            .filter(device::Column::UserId.is_in(users))
            .all(db)
            .await?
        {
            devices.entry(found.user_id).or_default().push(found);
        }
        let settled: HashSet<(Uuid, Uuid)> = push_attempt::Entity::find()
            .select_only()
            .column(push_attempt::Column::EventId)
            .column(push_attempt::Column::DeviceId)
            .filter(push_attempt::Column::EventId.is_in(event_ids))
            .filter(push_attempt::Column::Outcome.is_in([
                outcome::DELIVERED,
                outcome::FAILED,
                outcome::TOKEN_REMOVED,
            ]))
            .into_tuple::<(Uuid, Uuid)>()
            .all(db)
            .await?
            .into_iter()
            .collect();
        Ok(Known {
            handled,
            withdrawn,
            devices,
            settled,
        })
    }

    /// Makes the pushes in parallel, at most `concurrency` in flight per
    /// provider.
    pub(super) async fn push_all(
        &self,
        batch: &Batch,
        jobs: Vec<Job>,
        texts: &Texts,
    ) -> Vec<PushDone> {
        stream::iter(jobs)
            .map(|job| {
                let event = batch.items[job.item]
                    .event
                    .as_ref()
                    .expect("jobs are for parsed events");
                self.push_to_device(job.item, event, job.device, texts)
            })
            .buffer_unordered(self.settings.concurrency * 2)
            .collect()
            .await
    }

    async fn push_to_device(
        &self,
        item: usize,
        event: &StreamEvent,
        device: device::Model,
        texts: &Texts,
    ) -> PushDone {
        let gateway = self.gateways.for_platform(device.platform);
        let provider = gateway.provider().as_str();
        let permits = match device.platform {
            Platform::Android => &self.android_permits,
            Platform::Ios => &self.ios_permits,
        };
        let _permit = permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let started = Instant::now();
        let result: Result<Delivered, PushError> =
            match RenderedPush::render(event, texts, &device.locale) {
                Ok(push) => {
                    let message = PushMessage {
                        device_token: device.push_token.clone(),
                        push,
                    };
                    gateway.send(&message).await
                }
                Err(error) => Err(PushError::permanent(format!("rendering: {error}"))),
            };
        let latency = started.elapsed();
        let (recorded, detail, next) = match result {
            Ok(delivered) => {
                tracing::debug!(event_id = %event.event_id, device_id = %device.id, provider,
                    latency_ms = latency.as_millis() as u64, "push delivered");
                (
                    outcome::DELIVERED,
                    delivered.provider_id,
                    DeviceOutcome::Delivered,
                )
            }
            Err(PushError::TokenGone { detail }) => {
                tracing::info!(device_id = %device.id, platform = device.platform.as_str(), %detail,
                    "the provider no longer knows this device; it is removed");
                (
                    outcome::TOKEN_REMOVED,
                    Some(detail),
                    DeviceOutcome::TokenRemoved,
                )
            }
            Err(PushError::Retryable {
                detail,
                retry_after,
            }) => {
                tracing::warn!(device_id = %device.id, event_id = %event.event_id, provider,
                    %detail, ?retry_after, "push to be retried");
                (
                    outcome::RETRY,
                    Some(detail.clone()),
                    DeviceOutcome::Retry {
                        detail,
                        retry_after,
                    },
                )
            }
            Err(PushError::Permanent { detail }) => {
                tracing::error!(device_id = %device.id, event_id = %event.event_id, provider,
                    %detail, "push refused: the payload or the provider configuration is wrong");
                (outcome::FAILED, Some(detail), DeviceOutcome::Failed)
            }
        };
        PushDone {
            item,
            device,
            provider,
            recorded,
            detail,
            latency,
            next,
        }
    }

    /// In one transaction: every attempt, the devices whose token is gone,
    /// and which events are finished or held for a retry.
    pub(super) async fn record(&self, batch: &Batch) -> Result<(), NotifierError> {
        let now = Utc::now();
        let mut rows = Vec::new();
        let mut removed: Vec<&device::Model> = Vec::new();
        let mut finished: Vec<Uuid> = Vec::new();
        let mut held: Vec<(Uuid, Duration)> = Vec::new();
        for item in &batch.items {
            let Some(event) = &item.event else {
                continue;
            };
            for push in &item.pushes {
                if matches!(push.next, DeviceOutcome::TokenRemoved) {
                    removed.push(&push.device);
                }
                rows.push(push_attempt::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    event_id: Set(event.event_id),
                    device_id: Set(push.device.id),
                    user_id: Set(push.device.user_id),
                    case_id: Set(event.case_id),
                    provider: Set(push.provider.to_owned()),
                    outcome: Set(push.recorded.to_owned()),
                    detail: Set(push
                        .detail
                        .as_ref()
                        .map(|d| d.chars().take(DETAIL_MAX_CHARS).collect())),
                    latency_ms: Set(push.latency.as_millis().min(i32::MAX as u128) as i32),
                    created_at: Set(now),
                });
            }
            match &item.verdict {
                Some(Verdict::Retry { after }) => held.push((event.event_id, *after)),
                Some(Verdict::Copy) | None => {}
                Some(_) => finished.push(event.event_id),
            }
        }

        let txn = onestop_model::begin_write(&self.db).await?;
        for chunk in rows.chunks(INSERT_CHUNK) {
            push_attempt::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
        for found in &removed {
            // Only if the phone did not register a new token meanwhile.
            device::Entity::delete_many()
                .filter(device::Column::Id.eq(found.id))
                .filter(device::Column::PushToken.eq(found.push_token.as_str()))
                .exec(&txn)
                .await?;
        }
        for chunk in finished.chunks(INSERT_CHUNK) {
            outbox::Entity::update_many()
                .col_expr(outbox::Column::HandledAt, Expr::value(now))
                .filter(outbox::Column::EventId.is_in(chunk.to_vec()))
                .exec(&txn)
                .await?;
        }
        // A parked event counts as held until its retry is due, so the
        // relay's republish deadline runs from then: a long backoff or
        // Retry-After is not cut short by a second copy.
        for (event_id, after) in &held {
            let due =
                now + chrono::Duration::from_std(*after).unwrap_or(chrono::Duration::hours(1));
            outbox::Entity::update_many()
                .col_expr(outbox::Column::SeenAt, Expr::value(due))
                .filter(outbox::Column::EventId.eq(*event_id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}

fn unique<T: std::hash::Hash + Eq + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(*item)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> StreamEvent {
        serde_json::from_value(serde_json::json!({
            "event_id": Uuid::now_v7(),
            "kind": kind,
            "occurred_at": Utc::now(),
            "recipient_user_id": Uuid::new_v4(),
            "submission_id": Uuid::new_v4(),
            "case_id": Uuid::new_v4(),
            "status": "approved",
        }))
        .unwrap()
    }

    fn entry(raw: Option<String>, deliveries: u64) -> Entry {
        Entry {
            id: format!("1700000000000-{deliveries}"),
            raw,
            deliveries,
        }
    }

    fn json(event: &StreamEvent) -> Option<String> {
        Some(serde_json::to_string(event).unwrap())
    }

    fn device(user_id: Uuid) -> device::Model {
        device::Model {
            id: Uuid::new_v4(),
            user_id,
            platform: Platform::Android,
            push_token: Uuid::new_v4().to_string(),
            locale: "en".to_owned(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn push(item: usize, next: DeviceOutcome) -> PushDone {
        PushDone {
            item,
            device: device(Uuid::new_v4()),
            provider: "log",
            recorded: outcome::RETRY,
            detail: None,
            latency: Duration::from_millis(5),
            next,
        }
    }

    fn retry(detail: &str, retry_after: Option<Duration>) -> DeviceOutcome {
        DeviceOutcome::Retry {
            detail: detail.to_owned(),
            retry_after,
        }
    }

    fn known() -> Known {
        Known {
            handled: HashSet::new(),
            withdrawn: HashSet::new(),
            devices: HashMap::new(),
            settled: HashSet::new(),
        }
    }

    #[test]
    fn entries_that_cannot_be_handled_are_given_up_on_at_once() {
        let decided = event("case.decided");
        let batch = Batch::open(
            vec![
                entry(None, 1),
                entry(Some("{not json".to_owned()), 1),
                entry(json(&decided), 11),
                entry(json(&event("submission.received")), 1),
                entry(json(&decided), 1),
            ],
            10,
        );
        let classes: Vec<Option<&str>> = batch
            .items
            .iter()
            .map(|item| match &item.verdict {
                Some(Verdict::Dead { class, .. }) => Some(*class),
                Some(Verdict::Ack) => Some("ack"),
                Some(_) => Some("other"),
                None => None,
            })
            .collect();
        assert_eq!(
            classes,
            [
                Some("unparseable"),
                Some("unparseable"),
                Some("gave_up"),
                Some("ack"),
                None
            ]
        );
        assert_eq!(batch.undecided(), [&decided]);
    }

    #[test]
    fn the_plan_skips_copies_handled_events_withdrawn_cases_and_settled_devices() {
        let fresh = event("case.decided");
        let handled = event("case.decided");
        let withdrawn = event("case.info_requested");
        let mut batch = Batch::open(
            vec![
                entry(json(&fresh), 1),
                entry(json(&fresh), 1),
                entry(json(&handled), 1),
                entry(json(&withdrawn), 1),
            ],
            10,
        );
        let mut known = known();
        known.handled.insert(handled.event_id);
        known.withdrawn.insert(withdrawn.case_id.unwrap());
        let (phone, tablet) = (
            device(fresh.recipient_user_id),
            device(fresh.recipient_user_id),
        );
        known.settled.insert((fresh.event_id, tablet.id));
        known
            .devices
            .insert(fresh.recipient_user_id, vec![phone.clone(), tablet]);

        let jobs = batch.plan(&known);
        let pushed: Vec<(usize, Uuid)> = jobs.iter().map(|j| (j.item, j.device.id)).collect();
        assert_eq!(pushed, [(0, phone.id)]);
        assert!(batch.items[0].verdict.is_none());
        assert!(matches!(batch.items[1].verdict, Some(Verdict::Copy)));
        assert!(matches!(batch.items[2].verdict, Some(Verdict::Ack)));
        assert!(matches!(batch.items[3].verdict, Some(Verdict::Withdrawn)));
    }

    #[test]
    fn a_retried_push_parks_its_entry_no_shorter_than_retry_after_until_the_last_delivery() {
        let settings = Settings {
            max_deliveries: 3,
            retry_base_ms: 1000,
            retry_max_ms: 10_000,
            ..Settings::default()
        };
        let decided = event("case.decided");
        let mut batch = Batch::open(
            vec![
                entry(json(&decided), 1),
                entry(json(&decided), 3),
                entry(json(&decided), 1),
            ],
            settings.max_deliveries,
        );
        batch.attach(vec![
            push(0, retry("unavailable", Some(Duration::from_secs(90)))),
            push(0, DeviceOutcome::Delivered),
            push(1, retry("unavailable", None)),
            push(1, retry("quota", None)),
            push(2, DeviceOutcome::Delivered),
        ]);
        batch.decide(&settings);

        assert_eq!(batch.delivered(), 2);
        let verdicts: Vec<&Verdict> = batch.verdicts().map(|(_, v)| v).collect();
        assert!(
            matches!(verdicts[0], Verdict::Retry { after } if *after == Duration::from_secs(90))
        );
        match verdicts[1] {
            Verdict::Dead { class, reason } => {
                assert_eq!(*class, "gave_up");
                assert_eq!(reason, "gave up after 3 deliveries: unavailable; quota");
            }
            _ => panic!("the last delivery gives up"),
        }
        assert!(matches!(verdicts[2], Verdict::Ack));
    }
}
