//! The transactional outbox. An event is written in the same database
//! transaction as the change it describes; the relay hands it to the Redis
//! stream afterwards and marks it published only once Redis has it. Redis
//! being down loses nothing: the rows wait.
//!
//! Redis keeps nothing on disk, so an event it had can still be lost (a
//! restart, a trim). The notifier marks each event it finished
//! (`handled_at`) or still holds for a retry (`seen_at`); an event
//! published longer ago than the republish deadline with neither is
//! published again. The notifier handles an event once per device, so a
//! copy that was not lost after all costs nothing but a read.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use onestop_model::entities::outbox;
use onestop_model::events::{stream_key, STREAM_FIELD};
use onestop_model::StreamEvent;
use sea_orm::prelude::*;
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{ActiveValue::Set, DatabaseBackend, QueryOrder, QuerySelect};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::redis_link::{RedisLink, RedisLinkError};

/// Events handed to Redis in one round trip.
const BATCH: u64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Database(#[from] DbErr),
    #[error(transparent)]
    Redis(#[from] RedisLinkError),
}

impl From<redis::RedisError> for RelayError {
    fn from(error: redis::RedisError) -> Self {
        RelayError::Redis(error.into())
    }
}

/// Writes `event` to the outbox inside the caller's transaction.
pub async fn record(db: &impl ConnectionTrait, event: &StreamEvent) -> Result<(), DbErr> {
    outbox::ActiveModel {
        event_id: Set(event.event_id),
        kind: Set(event.kind),
        payload: Set(serde_json::to_value(event).expect("events serialise")),
        created_at: Set(event.occurred_at),
        published_at: Set(None),
        publish_attempts: Set(0),
        handled_at: Set(None),
        seen_at: Set(None),
        case_id: Set(event.case_id),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// When the relay looks for work.
#[derive(Clone, Copy, Debug)]
pub struct RelayTiming {
    /// How often it looks when no commit woke it.
    pub poll: Duration,
    /// Published this long ago, and neither handled nor held by a notifier
    /// since: published again.
    pub republish_after: Duration,
}

/// Which rows a batch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Never published.
    New,
    /// Published before the cutoff and not handled or held since.
    Overdue(chrono::DateTime<Utc>),
}

/// Publishes one batch of waiting events; returns how many went out.
pub async fn publish_pending(
    db: &DatabaseConnection,
    redis: &RedisLink,
) -> Result<usize, RelayError> {
    publish_waiting(db, redis, Waiting::New).await
}

/// Publishes again one batch of events published before `republish_after`
/// ago that no notifier has handled or held since; returns how many.
pub async fn republish_overdue(
    db: &DatabaseConnection,
    redis: &RedisLink,
    republish_after: Duration,
) -> Result<usize, RelayError> {
    let cutoff = chrono::Duration::from_std(republish_after)
        .ok()
        .and_then(|after| Utc::now().checked_sub_signed(after))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let sent = publish_waiting(db, redis, Waiting::Overdue(cutoff)).await?;
    if sent > 0 {
        tracing::warn!(
            events = sent,
            "events published earlier were not handled in time (Redis lost them?); published again"
        );
        metrics::counter!("outbox_republished_total").increment(sent as u64);
    }
    Ok(sent)
}

async fn publish_waiting(
    db: &DatabaseConnection,
    redis: &RedisLink,
    which: Waiting,
) -> Result<usize, RelayError> {
    if db.get_database_backend() == DatabaseBackend::Postgres {
        // Rows stay locked until marked, so several servers relay side by
        // side without sending a row twice.
        let txn = onestop_model::begin_write(db).await?;
        match publish_batch(&txn, redis, which, true).await {
            Ok(sent) => {
                txn.commit().await?;
                Ok(sent)
            }
            Err((error, ids)) => {
                txn.rollback().await?;
                count_failed_attempt(db, redis, ids).await?;
                Err(error)
            }
        }
    } else {
        // SQLite has one writer anyway; a read-then-write transaction would
        // only collide with the requests' own writes.
        match publish_batch(db, redis, which, false).await {
            Ok(sent) => Ok(sent),
            Err((error, ids)) => {
                count_failed_attempt(db, redis, ids).await?;
                Err(error)
            }
        }
    }
}

async fn count_failed_attempt(
    db: &DatabaseConnection,
    redis: &RedisLink,
    ids: Vec<Uuid>,
) -> Result<(), RelayError> {
    redis.reset().await;
    metrics::counter!("outbox_publish_failures_total").increment(1);
    if !ids.is_empty() {
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::PublishAttempts,
                Expr::col(outbox::Column::PublishAttempts).add(1),
            )
            .filter(outbox::Column::EventId.is_in(ids))
            .exec(db)
            .await?;
    }
    Ok(())
}

async fn publish_batch(
    conn: &impl ConnectionTrait,
    redis: &RedisLink,
    which: Waiting,
    lock: bool,
) -> Result<usize, (RelayError, Vec<Uuid>)> {
    let mut query = match which {
        Waiting::New => outbox::Entity::find().filter(outbox::Column::PublishedAt.is_null()),
        Waiting::Overdue(cutoff) => outbox::Entity::find()
            .filter(outbox::Column::HandledAt.is_null())
            .filter(outbox::Column::PublishedAt.lt(cutoff))
            .filter(
                outbox::Column::SeenAt
                    .is_null()
                    .or(outbox::Column::SeenAt.lt(cutoff)),
            ),
    };
    query = query
        .order_by_asc(outbox::Column::CreatedAt)
        .order_by_asc(outbox::Column::EventId)
        .limit(BATCH);
    if lock {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let waiting = query.all(conn).await.map_err(|e| (e.into(), Vec::new()))?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = waiting.iter().map(|row| row.event_id).collect();
    let sent = async {
        let mut connection = redis.connection().await?;
        let stream = stream_key(&redis.prefix);
        let mut pipe = redis::pipe();
        for row in &waiting {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(onestop_model::events::STREAM_MAX_LEN)
                .arg("*")
                .arg(STREAM_FIELD)
                .arg(row.payload.to_string());
        }
        pipe.query_async::<Vec<String>>(&mut connection).await?;
        Ok::<_, RelayError>(())
    }
    .await;
    if let Err(error) = sent {
        return Err((error, ids));
    }
    outbox::Entity::update_many()
        .col_expr(outbox::Column::PublishedAt, Expr::value(Utc::now()))
        .col_expr(
            outbox::Column::PublishAttempts,
            Expr::col(outbox::Column::PublishAttempts).add(1),
        )
        .filter(outbox::Column::EventId.is_in(ids))
        .exec(conn)
        .await
        .map_err(|e| (e.into(), Vec::new()))?;
    metrics::counter!("outbox_published_total").increment(waiting.len() as u64);
    Ok(waiting.len())
}

/// Relays until cancelled: woken by commits, and polling as a fallback;
/// at every poll it also publishes again what is overdue. While Redis is
/// unreachable it retries with a growing pause.
pub async fn run_relay(
    db: DatabaseConnection,
    redis: Arc<RedisLink>,
    wakeup: Arc<Notify>,
    timing: RelayTiming,
    cancel: CancellationToken,
) {
    let poll = timing.poll;
    let mut backoff = Duration::from_millis(100);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        if last_sweep.elapsed() >= poll {
            last_sweep = tokio::time::Instant::now();
            if let Err(error) = republish_overdue(&db, &redis, timing.republish_after).await {
                tracing::warn!(error = %crate::error::ErrorChain(&error),
                    "outbox relay could not publish overdue events again; it tries at the next poll");
            }
        }
        let pause = match publish_pending(&db, &redis).await {
            Ok(sent) if sent as u64 == BATCH => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(_) => {
                backoff = Duration::from_millis(100);
                poll
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::ErrorChain(&error), retry_in = ?backoff,
                    "outbox relay could not publish; events wait in the database");
                let pause = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                pause
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    // A last attempt, so events committed just before shutdown leave now.
    if let Err(error) = publish_pending(&db, &redis).await {
        tracing::info!(error = %crate::error::ErrorChain(&error), "events left in the outbox for the next start");
    }
}
