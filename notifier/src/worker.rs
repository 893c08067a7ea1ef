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
//!
//! The Redis side (the consumer group: reading, claiming, settling,
//! trimming) is `worker::stream`; what the events mean for phones (devices,
//! pushes, attempts, verdicts) is `worker::delivery`; [`Notifier`] drives
//! one step of both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onestop_model::catalog::Texts;
use onestop_runtime::redis_link::{RedisLink, RedisLinkConfig};
use redis::aio::ConnectionManager;
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorChain, NotifierError};
use crate::settings::Settings;

mod delivery;
mod stream;

use delivery::{Batch, Delivery};
use stream::{Entry, StreamConsumer};

pub use delivery::{outcome, Gateways};

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

/// A notifier: cheap to clone, every clone shares the connections.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    db: DatabaseConnection,
    stream: StreamConsumer,
    delivery: Delivery,
    started: Instant,
    last_success: std::sync::Mutex<Option<Instant>>,
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
        let settings = Arc::new(settings);
        Ok(Notifier {
            inner: Arc::new(Inner {
                stream: StreamConsumer::new(settings.clone(), redis),
                delivery: Delivery::new(settings.clone(), db.clone(), gateways),
                settings,
                db,
                started: Instant::now(),
                last_success: std::sync::Mutex::new(None),
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
                self.inner.stream.reset().await;
            }
            Err(_) => {}
        }
        result
    }

    async fn step(&self) -> Result<BatchOutcome, NotifierError> {
        let settings = &self.inner.settings;
        let stream = &self.inner.stream;
        let mut redis = stream.connection().await?;
        stream.ensure_group(&mut redis).await?;
        let texts = self.inner.delivery.texts().await?;
        stream.maintain_if_due(&mut redis).await;

        let mut outcome = BatchOutcome {
            promoted: stream.promote_due(&mut redis).await?,
            ..BatchOutcome::default()
        };
        let mut entries = stream.reclaim(&mut redis).await?;
        outcome.reclaimed = entries.len();
        let room = settings.batch_size.saturating_sub(entries.len());
        if room > 0 {
            let wait = (entries.is_empty() && outcome.promoted == 0).then(|| settings.block());
            let fresh = stream.read_new(&mut redis, room, wait).await?;
            outcome.read = fresh.len();
            entries.extend(fresh);
        }
        if entries.is_empty() {
            return Ok(outcome);
        }
        self.handle(&mut redis, entries, &texts, &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// Handles a batch: a few queries for all its events, the pushes in
    /// parallel (bounded per provider), one insert of every attempt, then
    /// one atomic round trip to Redis acknowledging, parking or
    /// dead-lettering each entry. Nothing is acknowledged before its
    /// attempts are in the database.
    async fn handle(
        &self,
        redis: &mut ConnectionManager,
        entries: Vec<Entry>,
        texts: &Texts,
        outcome: &mut BatchOutcome,
    ) -> Result<(), NotifierError> {
        let (stream, delivery) = (&self.inner.stream, &self.inner.delivery);
        let mut batch = Batch::open(entries, self.inner.settings.max_deliveries);
        let jobs = delivery.plan(&mut batch).await?;
        outcome.pushes += jobs.len();
        let claimed = if jobs.is_empty() {
            Vec::new()
        } else {
            batch.entry_ids()
        };
        let pushing = delivery.push_all(&batch, jobs, texts);
        let pushes = stream.keep_claimed(redis, claimed, pushing).await;
        batch.attach(pushes);
        batch.decide(&self.inner.settings);
        outcome.delivered += batch.delivered();

        // Record every attempt before any entry is acknowledged.
        delivery.record(&batch).await?;
        batch.count_pushes();
        stream.settle(redis, batch.verdicts(), outcome).await?;
        batch.measure_arrival();
        Ok(())
    }

    /// Trims the stream of finished entries and measures its gauges now,
    /// whenever the last upkeep ran.
    pub async fn maintain(&self, redis: &mut ConnectionManager) -> Result<(), NotifierError> {
        self.inner.stream.maintain(redis).await
    }
}
