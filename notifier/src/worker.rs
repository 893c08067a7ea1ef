//! The consume loop: read events from the Redis stream as one consumer of
//! the `notifiers` group, push them to every device of the recipient, and
//! acknowledge an entry only once every device's outcome is recorded.
//!
//! Delivery is at least once, and handling is idempotent per event and
//! device: a device that already has a `delivered`, `failed` or
//! `token_removed` attempt for the event is not pushed again, so an entry
//! seen twice (a notifier died before acknowledging it, or the relay
//! published it again) sends only what is missing; phones collapse the rest
//! by collapse key.
//!
//! - New entries come with `XREADGROUP`. Entries a dead notifier left
//!   pending are taken over with `XAUTOCLAIM` once idle for
//!   `reclaim_idle_ms`.
//! - A push to be retried does not keep its entry pending: the entry is
//!   acknowledged and parked in a sorted set (`events:retry`) until it is
//!   due, after an exponential, jittered pause that is never shorter than
//!   the provider's Retry-After. Due entries go back to the stream as new
//!   entries carrying their delivery count.
//! - After `max_deliveries` an entry goes to the dead-letter stream with
//!   the reason.
//! - The database is told which events are finished (`outbox.handled_at`)
//!   or still held for a retry (`outbox.seen_at`); the server's relay
//!   publishes again anything published but neither, so Redis restarting
//!   empty loses nothing.
//! - Nothing here is state another notifier needs: the retry schedule and
//!   the pending entries live in Redis, the attempts in the database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use onestop_model::catalog::Texts;
use onestop_model::entities::{case, device, outbox, push_attempt};
use onestop_model::events::{
    dead_letter_key, retry_key, stream_key, CONSUMER_GROUP, DELIVERIES_FIELD, STREAM_FIELD,
    STREAM_MAX_LEN,
};
use onestop_model::{CaseStatus, Platform, StreamEvent};
use onestop_runtime::redis_link::{RedisLink, RedisLinkConfig};
use rand::Rng;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply,
    StreamPendingCountReply, StreamPendingReply, StreamReadOptions, StreamReadReply,
};
use redis::AsyncCommands;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, EntityTrait, QueryFilter,
    QuerySelect, Set,
};
use tokio::sync::{RwLock, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{ErrorChain, NotifierError};
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

/// Dead-letter entries are trimmed to about this many.
const DEAD_LETTER_MAX_LEN: usize = 100_000;
/// Texts are read again from the database this often, so edits to the
/// catalog reach pushes without a restart.
const TEXTS_MAX_AGE: Duration = Duration::from_secs(60);
const DETAIL_MAX_CHARS: usize = 500;
/// Rows per INSERT, well under PostgreSQL's limit of bind parameters.
const INSERT_CHUNK: usize = 1000;

/// Moves the due members of the retry set back into the stream, at most
/// ARGV[2] of them, atomically, so two notifiers never both take one.
const PROMOTE_DUE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local cut = string.find(member, '\n', 1, true)
  if cut then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
      ARGV[4], string.sub(member, cut + 1), ARGV[5], string.sub(member, 1, cut - 1))
  end
end
return #due
"#;

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

/// What one [`Notifier::process_batch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// New entries read.
    pub read: usize,
    /// Stale pending entries taken over from a notifier that died.
    pub reclaimed: usize,
    /// Entries due for a retry put back into the stream.
    pub promoted: usize,
    /// Entries finished and acknowledged, including those that push
    /// nothing.
    pub acked: usize,
    /// Entries parked until a push is retried.
    pub retry_later: usize,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: usize,
    /// Entries acknowledged without a push because their case was
    /// withdrawn.
    pub withdrawn: usize,
    /// Pushes handed to a gateway, whatever the answer.
    pub pushes: usize,
    /// Pushes the gateway accepted.
    pub delivered: usize,
}

impl BatchOutcome {
    /// Nothing was read, taken over or put back.
    pub fn is_idle(&self) -> bool {
        self.read == 0 && self.reclaimed == 0 && self.promoted == 0
    }
}

/// One stream entry to handle.
struct Entry {
    id: String,
    raw: Option<String>,
    /// Deliveries so far, this one included.
    deliveries: u64,
}

/// What becomes of an entry.
enum Verdict {
    Ack,
    /// A second copy of an event already in this batch (the relay
    /// republished it): acknowledged in Redis, nothing else; the first
    /// copy decides what happens to the event.
    Copy,
    Withdrawn,
    Retry {
        after: Duration,
    },
    Dead {
        class: &'static str,
        reason: String,
    },
}

enum DeviceOutcome {
    Delivered,
    TokenRemoved,
    Retry {
        detail: String,
        retry_after: Option<Duration>,
    },
    Failed,
}

struct PushDone {
    entry: usize,
    device: device::Model,
    provider: &'static str,
    recorded: &'static str,
    detail: Option<String>,
    latency: Duration,
    next: DeviceOutcome,
}

struct CachedTexts {
    texts: Arc<Texts>,
    loaded_at: Option<Instant>,
}

/// A notifier: cheap to clone, every clone shares the connections.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    db: DatabaseConnection,
    redis: RedisLink,
    gateways: Gateways,
    /// Pushes in flight per provider.
    android_permits: Semaphore,
    ios_permits: Semaphore,
    texts: RwLock<CachedTexts>,
    group_ready: AtomicBool,
    claim_cursor: std::sync::Mutex<String>,
    started: Instant,
    last_success: std::sync::Mutex<Option<Instant>>,
    last_maintenance: std::sync::Mutex<Option<Instant>>,
    promote: redis::Script,
    stream: String,
    dead_letters: String,
    retries: String,
}

impl Notifier {
    /// Connects to the database, prepares Redis and the gateways the
    /// settings ask for. The schema is the server's to migrate.
    pub async fn build(settings: Settings) -> Result<Self, NotifierError> {
        let gateways = Gateways::from_settings(&settings)?;
        Self::build_with_gateways(settings, gateways).await
    }

    /// As [`Self::build`], with gateways of the caller's choosing.
    pub async fn build_with_gateways(
        settings: Settings,
        gateways: Gateways,
    ) -> Result<Self, NotifierError> {
        settings.validate()?;
        let mut options = ConnectOptions::new(settings.database_url.clone());
        options
            .max_connections(settings.database_max_connections)
            .connect_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        // A read waits up to `block_ms` for new entries before Redis answers.
        let redis = RedisLink::with_config(
            &settings.redis_url,
            &settings.redis_prefix,
            RedisLinkConfig {
                response_timeout: settings.block() + Duration::from_secs(5),
                retries: 1,
                max_delay: Duration::from_secs(1),
            },
        )?;
        tracing::info!(
            consumer = %settings.consumer,
            android = gateways.android.provider().as_str(),
            ios = gateways.ios.provider().as_str(),
            "notifier ready"
        );
        Ok(Notifier {
            inner: Arc::new(Inner {
                stream: stream_key(&settings.redis_prefix),
                dead_letters: dead_letter_key(&settings.redis_prefix),
                retries: retry_key(&settings.redis_prefix),
                android_permits: Semaphore::new(settings.concurrency),
                ios_permits: Semaphore::new(settings.concurrency),
                settings,
                db,
                redis,
                gateways,
                texts: RwLock::new(CachedTexts {
                    texts: Arc::new(Texts::default()),
                    loaded_at: None,
                }),
                group_ready: AtomicBool::new(false),
                claim_cursor: std::sync::Mutex::new("0-0".to_owned()),
                started: Instant::now(),
                last_success: std::sync::Mutex::new(None),
                last_maintenance: std::sync::Mutex::new(None),
                promote: redis::Script::new(PROMOTE_DUE),
            }),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn database(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// When a batch last completed without error.
    pub fn last_success(&self) -> Option<Instant> {
        *self.inner.last_success.lock().unwrap()
    }

    /// Whether the loop made progress lately: a batch succeeded within a
    /// minute (or three read timeouts, if longer), or the process is
    /// younger than that.
    pub fn is_healthy(&self) -> bool {
        let window = Duration::from_secs(60).max(self.inner.settings.block() * 3);
        let since = self.last_success().unwrap_or(self.inner.started);
        since.elapsed() <= window
    }

    /// Runs [`Self::process_batch`] until `cancel` fires, backing off
    /// while Redis or the database fails. A batch in flight is finished
    /// (a read waits at most `block_ms`).
    pub async fn run(&self, cancel: CancellationToken) {
        const FIRST_PAUSE: Duration = Duration::from_millis(200);
        let mut pause = FIRST_PAUSE;
        while !cancel.is_cancelled() {
            match self.process_batch().await {
                Ok(_) => pause = FIRST_PAUSE,
                Err(error) => {
                    metrics::counter!("notifier_batch_errors_total").increment(1);
                    tracing::warn!(error = %ErrorChain(&error), retry_in = ?pause,
                        "the notifier could not process a batch; events stay in the stream");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!("the notifier stopped reading");
    }

    /// [`Self::run`] on a task of its own.
    pub fn spawn(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let notifier = self.clone();
        tokio::spawn(async move { notifier.run(cancel).await })
    }

    /// One step: make sure the group exists, put due retries back, take
    /// over entries of dead notifiers, read new ones (waiting up to
    /// `block_ms` when there is nothing else to do), and handle them all.
    pub async fn process_batch(&self) -> Result<BatchOutcome, NotifierError> {
        let result = self.step().await;
        match &result {
            Ok(_) => *self.inner.last_success.lock().unwrap() = Some(Instant::now()),
            Err(NotifierError::Redis(_) | NotifierError::RedisTimeout(_)) => {
                self.inner.redis.reset().await;
                self.inner.group_ready.store(false, Ordering::SeqCst);
            }
            Err(_) => {}
        }
        result
    }

    async fn step(&self) -> Result<BatchOutcome, NotifierError> {
        let settings = &self.inner.settings;
        let mut redis = self.inner.redis.connection().await?;
        self.ensure_group(&mut redis).await?;
        let texts = self.texts().await?;
        self.maintain_if_due(&mut redis).await;

        let mut outcome = BatchOutcome {
            promoted: self.promote_due(&mut redis).await?,
            ..BatchOutcome::default()
        };
        let mut entries = self.reclaim(&mut redis).await?;
        outcome.reclaimed = entries.len();
        let room = settings.batch_size.saturating_sub(entries.len());
        if room > 0 {
            let wait = (entries.is_empty() && outcome.promoted == 0).then(|| settings.block());
            let fresh = self.read_new(&mut redis, room, wait).await?;
            outcome.read = fresh.len();
            entries.extend(fresh.into_iter().map(|entry| entry_of(entry, 1)));
        }
        if entries.is_empty() {
            return Ok(outcome);
        }
        self.handle(&mut redis, entries, &texts, &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// `XGROUP CREATE … 0 MKSTREAM`, once per connection. From `0`, not
    /// `$`: a group made again after Redis lost it must not skip the
    /// entries already in the stream.
    async fn ensure_group(&self, redis: &mut ConnectionManager) -> Result<(), NotifierError> {
        if self.inner.group_ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        let created: Result<(), redis::RedisError> = redis
            .xgroup_create_mkstream(&self.inner.stream, CONSUMER_GROUP, "0")
            .await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %self.inner.stream, group = CONSUMER_GROUP, "consumer group created");
            }
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) => return Err(error.into()),
        }
        self.inner.group_ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn lost_group(&self, error: &redis::RedisError) -> bool {
        let lost = error.code() == Some("NOGROUP");
        if lost {
            tracing::warn!(stream = %self.inner.stream,
                "the consumer group is gone (Redis restarted without its data?); making it again from the start");
            self.inner.group_ready.store(false, Ordering::SeqCst);
            *self.inner.claim_cursor.lock().unwrap() = "0-0".to_owned();
        }
        lost
    }

    /// Puts retries that are due back into the stream.
    async fn promote_due(&self, redis: &mut ConnectionManager) -> Result<usize, NotifierError> {
        let now_ms = Utc::now().timestamp_millis();
        let promoted: usize = self
            .inner
            .promote
            .key(&self.inner.retries)
            .key(&self.inner.stream)
            .arg(now_ms)
            .arg(self.inner.settings.batch_size)
            .arg(STREAM_MAX_LEN)
            .arg(STREAM_FIELD)
            .arg(DELIVERIES_FIELD)
            .invoke_async(redis)
            .await?;
        Ok(promoted)
    }

    /// Entries pending longer than `reclaim_idle_ms` (their notifier died
    /// or hangs), with how many times each was delivered (counting this
    /// claim).
    async fn reclaim(&self, redis: &mut ConnectionManager) -> Result<Vec<Entry>, NotifierError> {
        let settings = &self.inner.settings;
        let cursor = self.inner.claim_cursor.lock().unwrap().clone();
        let claimed: Result<StreamAutoClaimReply, _> = redis
            .xautoclaim_options(
                &self.inner.stream,
                CONSUMER_GROUP,
                &settings.consumer,
                settings.reclaim_idle_ms,
                &cursor,
                StreamAutoClaimOptions::default().count(settings.batch_size),
            )
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) if self.lost_group(&error) => {
                self.ensure_group(redis).await?;
                return Ok(Vec::new());
            }
            Err(error) => return Err(error.into()),
        };
        *self.inner.claim_cursor.lock().unwrap() = claimed.next_stream_id.clone();
        if !claimed.deleted_ids.is_empty() {
            tracing::warn!(entries = ?claimed.deleted_ids,
                "pending entries were trimmed from the stream before they were handled; the relay publishes them again");
        }
        if claimed.claimed.is_empty() {
            return Ok(Vec::new());
        }
        let first = claimed
            .claimed
            .first()
            .map(|e| e.id.clone())
            .unwrap_or_default();
        let last = claimed
            .claimed
            .last()
            .map(|e| e.id.clone())
            .unwrap_or_default();
        let pending: StreamPendingCountReply = redis
            .xpending_consumer_count(
                &self.inner.stream,
                CONSUMER_GROUP,
                &first,
                &last,
                claimed.claimed.len() * 2 + 10,
                &settings.consumer,
            )
            .await?;
        let deliveries: HashMap<String, u64> = pending
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect();
        tracing::info!(
            entries = claimed.claimed.len(),
            "took over entries another notifier left unfinished"
        );
        Ok(claimed
            .claimed
            .into_iter()
            .map(|entry| {
                // A claimed entry was delivered at least twice: once to its
                // first reader, once to us.
                let count = deliveries.get(&entry.id).copied().unwrap_or(2);
                entry_of(entry, count)
            })
            .collect())
    }

    async fn read_new(
        &self,
        redis: &mut ConnectionManager,
        count: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<StreamId>, NotifierError> {
        let mut options = StreamReadOptions::default()
            .group(CONSUMER_GROUP, &self.inner.settings.consumer)
            .count(count);
        if let Some(wait) = wait {
            options = options.block(wait.as_millis() as usize);
        }
        let keys = [self.inner.stream.as_str()];
        let mut read: Result<Option<StreamReadReply>, _> =
            redis.xread_options(&keys, &[">"], &options).await;
        if let Err(error) = &read {
            if self.lost_group(error) {
                self.ensure_group(redis).await?;
                read = redis.xread_options(&keys, &[">"], &options).await;
            }
        }
        Ok(read?
            .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
            .unwrap_or_default())
    }

    async fn texts(&self) -> Result<Arc<Texts>, NotifierError> {
        {
            let cached = self.inner.texts.read().await;
            if cached
                .loaded_at
                .is_some_and(|at| at.elapsed() < TEXTS_MAX_AGE)
            {
                return Ok(cached.texts.clone());
            }
        }
        let mut cached = self.inner.texts.write().await;
        match Texts::load(&self.inner.db).await {
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

    /// Handles a batch: a few queries for all its events, the pushes in
    /// parallel (bounded per provider), one insert of every attempt, then
    /// one atomic round trip to Redis acknowledging, parking or
    /// dead-lettering each entry. Nothing is acknowledged before its
    /// attempts are in the database.
    /// Runs `work` while keeping the entries `ids` claimed by this
    /// notifier: a batch slower than `reclaim_idle_ms` (a provider answering
    /// slowly) must not look abandoned to the other notifiers, which would
    /// push the same phones again. `XCLAIM … 0 … JUSTID` resets the
    /// entries' idle time without counting a delivery.
    async fn keep_claimed<T>(
        &self,
        redis: &ConnectionManager,
        ids: Vec<String>,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let settings = &self.inner.settings;
        let mut redis = redis.clone();
        let every = Duration::from_millis((settings.reclaim_idle_ms / 3).max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tick.tick(), if !ids.is_empty() => {
                    let refreshed: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
                        .arg(&self.inner.stream)
                        .arg(CONSUMER_GROUP)
                        .arg(&settings.consumer)
                        .arg(0)
                        .arg(&ids)
                        .arg("JUSTID")
                        .query_async(&mut redis)
                        .await;
                    if let Err(error) = refreshed {
                        tracing::warn!(%error, "the batch in hand could not be marked as still worked on");
                    }
                }
            }
        }
    }

    async fn handle(
        &self,
        redis: &mut ConnectionManager,
        entries: Vec<Entry>,
        texts: &Texts,
        outcome: &mut BatchOutcome,
    ) -> Result<(), NotifierError> {
        let settings = &self.inner.settings;
        let db = &self.inner.db;
        let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(entries.len());
        let mut events: Vec<Option<StreamEvent>> = Vec::with_capacity(entries.len());
        for entry in &entries {
            let parsed = entry
                .raw
                .as_deref()
                .map(serde_json::from_str::<StreamEvent>);
            let (event, verdict) = match parsed {
                Some(Ok(event)) if entry.deliveries > settings.max_deliveries => (
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
            events.push(event);
            verdicts.push(verdict);
        }

        // What the database knows about the events still undecided.
        let open: Vec<(usize, &StreamEvent)> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| verdicts[*i].is_none())
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
            .collect();
        let mut jobs: Vec<(usize, device::Model)> = Vec::new();
        if !open.is_empty() {
            let event_ids: Vec<Uuid> = unique(open.iter().map(|(_, e)| e.event_id));
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
            let case_ids: Vec<Uuid> = unique(open.iter().filter_map(|(_, e)| e.case_id));
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
            let users: Vec<Uuid> = unique(open.iter().map(|(_, e)| e.recipient_user_id));
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
            let mut in_batch: HashSet<Uuid> = HashSet::new();
            for (index, event) in open {
                if !in_batch.insert(event.event_id) {
                    verdicts[index] = Some(Verdict::Copy);
                } else if handled.contains(&event.event_id) {
                    verdicts[index] = Some(Verdict::Ack);
                } else if event.case_id.is_some_and(|case| withdrawn.contains(&case)) {
                    tracing::info!(event_id = %event.event_id,
                        "the case was withdrawn since; nothing is pushed");
                    metrics::counter!("notifier_events_skipped_total", "reason" => "withdrawn")
                        .increment(1);
                    verdicts[index] = Some(Verdict::Withdrawn);
                } else {
                    for found in devices.get(&event.recipient_user_id).into_iter().flatten() {
                        if !settled.contains(&(event.event_id, found.id)) {
                            jobs.push((index, found.clone()));
                        }
                    }
                }
            }
        }

        outcome.pushes += jobs.len();
        let claimed: Vec<String> = if jobs.is_empty() {
            Vec::new()
        } else {
            entries.iter().map(|e| e.id.clone()).collect()
        };
        let pushing = stream::iter(jobs)
            .map(|(index, found)| {
                let event = events[index].as_ref().expect("jobs are for parsed events");
                self.push_to_device(index, event, found, texts)
            })
            .buffer_unordered(settings.concurrency * 2)
            .collect::<Vec<PushDone>>();
        let done = self.keep_claimed(redis, claimed, pushing).await;

        // Record every attempt before any entry is acknowledged.
        let mut retry_after: HashMap<usize, Duration> = HashMap::new();
        let mut needs_retry: HashSet<usize> = HashSet::new();
        let mut removed: Vec<&device::Model> = Vec::new();
        let now = Utc::now();
        let mut rows = Vec::with_capacity(done.len());
        for push in &done {
            let event = events[push.entry].as_ref().expect("parsed");
            match &push.next {
                DeviceOutcome::Delivered => outcome.delivered += 1,
                DeviceOutcome::Retry {
                    retry_after: after, ..
                } => {
                    needs_retry.insert(push.entry);
                    if let Some(after) = after {
                        let longest = retry_after.entry(push.entry).or_default();
                        *longest = (*longest).max(*after);
                    }
                }
                DeviceOutcome::TokenRemoved => removed.push(&push.device),
                DeviceOutcome::Failed => {}
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
        for (index, verdict) in verdicts.iter_mut().enumerate() {
            if verdict.is_some() {
                continue;
            }
            let deliveries = entries[index].deliveries;
            *verdict = Some(if !needs_retry.contains(&index) {
                Verdict::Ack
            } else if deliveries >= settings.max_deliveries {
                let details: Vec<&str> = done
                    .iter()
                    .filter(|p| p.entry == index)
                    .filter_map(|p| match &p.next {
                        DeviceOutcome::Retry { detail, .. } => Some(detail.as_str()),
                        _ => None,
                    })
                    .collect();
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
                let after = backoff.max(retry_after.get(&index).copied().unwrap_or_default());
                Verdict::Retry { after }
            });
        }

        let mut finished: Vec<Uuid> = Vec::new();
        let mut held: Vec<(Uuid, Duration)> = Vec::new();
        for (index, verdict) in verdicts.iter().enumerate() {
            let Some(event) = &events[index] else {
                continue;
            };
            match verdict {
                Some(Verdict::Retry { after }) => held.push((event.event_id, *after)),
                Some(Verdict::Copy) => {}
                Some(_) => finished.push(event.event_id),
                None => {}
            }
        }
        let txn = onestop_model::begin_write(db).await?;
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

        for push in &done {
            metrics::counter!("notifier_pushes_total", "provider" => push.provider, "outcome" => push.recorded)
                .increment(1);
            metrics::histogram!("notifier_push_latency_seconds", "provider" => push.provider)
                .record(push.latency.as_secs_f64());
        }

        // One atomic round trip: acknowledge, park or dead-letter.
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut acked: Vec<&str> = Vec::new();
        let now_ms = Utc::now().timestamp_millis();
        for (entry, verdict) in entries.iter().zip(&verdicts) {
            match verdict.as_ref().expect("every entry has a verdict") {
                Verdict::Ack | Verdict::Copy => outcome.acked += 1,
                Verdict::Withdrawn => {
                    outcome.acked += 1;
                    outcome.withdrawn += 1;
                }
                Verdict::Retry { after } => {
                    outcome.retry_later += 1;
                    let due = now_ms + after.as_millis().min(i64::MAX as u128) as i64;
                    let member = format!(
                        "{}\n{}",
                        entry.deliveries,
                        entry.raw.as_deref().unwrap_or_default()
                    );
                    pipe.zadd(&self.inner.retries, member, due).ignore();
                    tracing::info!(entry = %entry.id, deliveries = entry.deliveries, retry_in = ?after,
                        "a push is to be retried; the entry waits for its turn");
                }
                Verdict::Dead { class, reason } => {
                    outcome.dead_lettered += 1;
                    tracing::error!(entry = %entry.id, deliveries = entry.deliveries, %reason,
                        "event moved to the dead-letter stream");
                    metrics::counter!("notifier_dead_letters_total", "reason" => *class)
                        .increment(1);
                    pipe.cmd("XADD")
                        .arg(&self.inner.dead_letters)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(DEAD_LETTER_MAX_LEN)
                        .arg("*")
                        .arg(STREAM_FIELD)
                        .arg(entry.raw.as_deref().unwrap_or_default())
                        .arg("reason")
                        .arg(reason)
                        .arg("entry_id")
                        .arg(&entry.id)
                        .arg("deliveries")
                        .arg(entry.deliveries)
                        .arg("consumer")
                        .arg(&settings.consumer)
                        .arg("failed_at")
                        .arg(Utc::now().to_rfc3339())
                        .ignore();
                }
            }
            acked.push(&entry.id);
        }
        pipe.xack(&self.inner.stream, CONSUMER_GROUP, &acked)
            .ignore();
        pipe.query_async::<()>(redis).await?;

        // Commit to push, measured where the push was accepted.
        let arrived = Utc::now();
        for push in done
            .iter()
            .filter(|p| matches!(p.next, DeviceOutcome::Delivered))
        {
            let event = events[push.entry].as_ref().expect("parsed");
            let waited = (arrived - event.occurred_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("notifier_decision_to_push_seconds", "kind" => event.kind.as_str())
                .record(waited);
        }
        Ok(())
    }

    async fn push_to_device(
        &self,
        entry: usize,
        event: &StreamEvent,
        device: device::Model,
        texts: &Texts,
    ) -> PushDone {
        let gateway = self.inner.gateways.for_platform(device.platform);
        let provider = gateway.provider().as_str();
        let permits = match device.platform {
            Platform::Android => &self.inner.android_permits,
            Platform::Ios => &self.inner.ios_permits,
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
            entry,
            device,
            provider,
            recorded,
            detail,
            latency,
            next,
        }
    }

    async fn maintain_if_due(&self, redis: &mut ConnectionManager) {
        {
            let mut last = self.inner.last_maintenance.lock().unwrap();
            if last.is_some_and(|at| at.elapsed() < self.inner.settings.maintenance()) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(error) = self.maintain(redis).await {
            tracing::warn!(error = %ErrorChain(&error), "stream upkeep failed; it runs again later");
        }
    }

    /// Trims the stream of entries every notifier is done with (older than
    /// both the oldest pending entry and the group's last delivered one)
    /// and measures the gauges: lag, pending entries, parked retries and
    /// dead letters.
    pub async fn maintain(&self, redis: &mut ConnectionManager) -> Result<(), NotifierError> {
        let groups: StreamInfoGroupsReply = match redis.xinfo_groups(&self.inner.stream).await {
            Ok(groups) => groups,
            // No stream yet.
            Err(error) if error.code() == Some("ERR") => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let Some(group) = groups.groups.iter().find(|g| g.name == CONSUMER_GROUP) else {
            return Ok(());
        };
        metrics::gauge!("notifier_stream_lag").set(group.lag.unwrap_or_default() as f64);
        metrics::gauge!("notifier_pending_entries").set(group.pending as f64);
        let retries: usize = redis.zcard(&self.inner.retries).await?;
        metrics::gauge!("notifier_retry_entries").set(retries as f64);
        let dead: usize = redis.xlen(&self.inner.dead_letters).await?;
        metrics::gauge!("notifier_dead_letter_entries").set(dead as f64);

        let pending: StreamPendingReply =
            redis.xpending(&self.inner.stream, CONSUMER_GROUP).await?;
        let mut keep_from = group.last_delivered_id.clone();
        if let StreamPendingReply::Data(data) = &pending {
            if entry_id_less(&data.start_id, &keep_from) {
                keep_from = data.start_id.clone();
            }
        }
        if keep_from != "0-0" {
            let trimmed: usize = redis::cmd("XTRIM")
                .arg(&self.inner.stream)
                .arg("MINID")
                .arg("~")
                .arg(&keep_from)
                .query_async(redis)
                .await?;
            if trimmed > 0 {
                tracing::debug!(trimmed, "finished entries trimmed from the stream");
            }
        }
        Ok(())
    }
}

fn entry_of(entry: StreamId, deliveries: u64) -> Entry {
    let before: u64 = entry
        .get::<String>(DELIVERIES_FIELD)
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    Entry {
        raw: entry.get(STREAM_FIELD),
        id: entry.id,
        deliveries: before.saturating_add(deliveries),
    }
}

fn unique<T: std::hash::Hash + Eq + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(*item)).collect()
}

/// Whether stream entry id `a` is older than `b` (`ms-seq`).
fn entry_id_less(a: &str, b: &str) -> bool {
    fn parts(id: &str) -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
    parts(a) < parts(b)
}

#[cfg(test)]
mod tests {
    use super::entry_id_less;

    #[test]
    fn entry_ids_compare_by_time_then_sequence() {
        assert!(entry_id_less("1700000000000-5", "1700000000001-0"));
        assert!(entry_id_less("9-1", "10-0"));
        assert!(!entry_id_less("10-2", "10-1"));
    }
}
