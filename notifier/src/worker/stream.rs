//! The Redis side of the worker: this process as one consumer of the
//! `notifiers` group. It reads new entries, takes over stale ones, puts
//! due retries back, keeps a slow batch claimed, and settles each entry in
//! one atomic round trip: acknowledged, parked for a retry or moved to the
//! dead-letter stream. It also trims the stream and measures its gauges.
//! What an entry means is the delivery's business; this module only moves
//! entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use onestop_model::events::{
    dead_letter_key, retry_key, stream_key, CONSUMER_GROUP, DELIVERIES_FIELD, STREAM_FIELD,
    STREAM_MAX_LEN,
};
use onestop_runtime::redis_link::RedisLink;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply,
    StreamPendingCountReply, StreamPendingReply, StreamReadOptions, StreamReadReply,
};
use redis::AsyncCommands;

use super::BatchOutcome;
use crate::error::{ErrorChain, NotifierError};
use crate::settings::Settings;

/// Dead-letter entries are trimmed to about this many.
const DEAD_LETTER_MAX_LEN: usize = 100_000;

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

/// One stream entry to handle.
pub(super) struct Entry {
    pub(super) id: String,
    /// The event JSON, when the entry has the field.
    pub(super) raw: Option<String>,
    /// Deliveries so far, this one included.
    pub(super) deliveries: u64,
}

/// What becomes of an entry.
pub(super) enum Verdict {
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

/// This process's membership of the consumer group, over a self-healing
/// link.
pub(super) struct StreamConsumer {
    settings: Arc<Settings>,
    link: RedisLink,
    group_ready: AtomicBool,
    claim_cursor: std::sync::Mutex<String>,
    last_maintenance: std::sync::Mutex<Option<Instant>>,
    promote: redis::Script,
    stream: String,
    dead_letters: String,
    retries: String,
}

impl StreamConsumer {
    pub(super) fn new(settings: Arc<Settings>, link: RedisLink) -> Self {
        StreamConsumer {
            stream: stream_key(&settings.redis_prefix),
            dead_letters: dead_letter_key(&settings.redis_prefix),
            retries: retry_key(&settings.redis_prefix),
            settings,
            link,
            group_ready: AtomicBool::new(false),
            claim_cursor: std::sync::Mutex::new("0-0".to_owned()),
            last_maintenance: std::sync::Mutex::new(None),
            promote: redis::Script::new(PROMOTE_DUE),
        }
    }

    pub(super) async fn connection(&self) -> Result<ConnectionManager, NotifierError> {
        Ok(self.link.connection().await?)
    }

    /// After a Redis error: the next batch connects again and makes sure
    /// the group exists.
    pub(super) async fn reset(&self) {
        self.link.reset().await;
        self.group_ready.store(false, Ordering::SeqCst);
    }

    /// `XGROUP CREATE … 0 MKSTREAM`, once per connection. From `0`, not
    /// `$`: a group made again after Redis lost it must not skip the
    /// entries already in the stream.
    pub(super) async fn ensure_group(
        &self,
        redis: &mut ConnectionManager,
    ) -> Result<(), NotifierError> {
        if self.group_ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        let created: Result<(), redis::RedisError> = redis
            .xgroup_create_mkstream(&self.stream, CONSUMER_GROUP, "0")
            .await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %self.stream, group = CONSUMER_GROUP, "consumer group created");
            }
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) => return Err(error.into()),
        }
        self.group_ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn lost_group(&self, error: &redis::RedisError) -> bool {
        let lost = error.code() == Some("NOGROUP");
        if lost {
            tracing::warn!(stream = %self.stream,
                "the consumer group is gone (Redis restarted without its data?); making it again from the start");
            self.group_ready.store(false, Ordering::SeqCst);
            *self.claim_cursor.lock().unwrap() = "0-0".to_owned();
        }
        lost
    }

    /// Puts retries that are due back into the stream.
    pub(super) async fn promote_due(
        &self,
        redis: &mut ConnectionManager,
    ) -> Result<usize, NotifierError> {
        let now_ms = Utc::now().timestamp_millis();
        let promoted: usize = self
            .promote
            .key(&self.retries)
            .key(&self.stream)
            .arg(now_ms)
            .arg(self.settings.batch_size)
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
    pub(super) async fn reclaim(
        &self,
        redis: &mut ConnectionManager,
    ) -> Result<Vec<Entry>, NotifierError> {
        let settings = &self.settings;
        let cursor = self.claim_cursor.lock().unwrap().clone();
        let claimed: Result<StreamAutoClaimReply, _> = redis
            .xautoclaim_options(
                &self.stream,
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
        *self.claim_cursor.lock().unwrap() = claimed.next_stream_id.clone();
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
                &self.stream,
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

    /// Up to `count` entries no consumer has read yet, waiting up to
    /// `wait` for the first.
    pub(super) async fn read_new(
        &self,
        redis: &mut ConnectionManager,
        count: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<Entry>, NotifierError> {
        let mut options = StreamReadOptions::default()
            .group(CONSUMER_GROUP, &self.settings.consumer)
            .count(count);
        if let Some(wait) = wait {
            options = options.block(wait.as_millis() as usize);
        }
        let keys = [self.stream.as_str()];
        let mut read: Result<Option<StreamReadReply>, _> =
            redis.xread_options(&keys, &[">"], &options).await;
        if let Err(error) = &read {
            if self.lost_group(error) {
                self.ensure_group(redis).await?;
                read = redis.xread_options(&keys, &[">"], &options).await;
            }
        }
        Ok(read?
            .map(|reply| {
                let ids = reply.keys.into_iter().flat_map(|key| key.ids);
                ids.map(|entry| entry_of(entry, 1)).collect()
            })
            .unwrap_or_default())
    }

    /// Runs `work` while keeping the entries `ids` claimed by this
    /// notifier: a batch slower than `reclaim_idle_ms` (a provider answering
    /// slowly) must not look abandoned to the other notifiers, which would
    /// push the same phones again. `XCLAIM … 0 … JUSTID` resets the
    /// entries' idle time without counting a delivery.
    pub(super) async fn keep_claimed<T>(
        &self,
        redis: &ConnectionManager,
        ids: Vec<String>,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let settings = &self.settings;
        let mut redis = redis.clone();
        let every = Duration::from_millis((settings.reclaim_idle_ms / 3).max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tick.tick(), if !ids.is_empty() => {
                    let refreshed: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
                        .arg(&self.stream)
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

    /// Carries out every entry's verdict in one atomic round trip:
    /// acknowledge, park or dead-letter, then acknowledge them all.
    pub(super) async fn settle<'a>(
        &self,
        redis: &mut ConnectionManager,
        verdicts: impl Iterator<Item = (&'a Entry, &'a Verdict)>,
        outcome: &mut BatchOutcome,
    ) -> Result<(), NotifierError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut acked: Vec<&str> = Vec::new();
        let now_ms = Utc::now().timestamp_millis();
        for (entry, verdict) in verdicts {
            match verdict {
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
                    pipe.zadd(&self.retries, member, due).ignore();
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
                        .arg(&self.dead_letters)
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
                        .arg(&self.settings.consumer)
                        .arg("failed_at")
                        .arg(Utc::now().to_rfc3339())
                        .ignore();
                }
            }
            acked.push(&entry.id);
        }
        pipe.xack(&self.stream, CONSUMER_GROUP, &acked).ignore();
        pipe.query_async::<()>(redis).await?;
        Ok(())
    }

    pub(super) async fn maintain_if_due(&self, redis: &mut ConnectionManager) {
        {
            let mut last = self.last_maintenance.lock().unwrap();
            if last.is_some_and(|at| at.elapsed() < self.settings.maintenance()) {
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
    pub(super) async fn maintain(
        &self,
        redis: &mut ConnectionManager,
    ) -> Result<(), NotifierError> {
        let groups: StreamInfoGroupsReply = match redis.xinfo_groups(&self.stream).await {
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
        let retries: usize = redis.zcard(&self.retries).await?;
        metrics::gauge!("notifier_retry_entries").set(retries as f64);
        let dead: usize = redis.xlen(&self.dead_letters).await?;
        metrics::gauge!("notifier_dead_letter_entries").set(dead as f64);

        let pending: StreamPendingReply = redis.xpending(&self.stream, CONSUMER_GROUP).await?;
        let mut keep_from = group.last_delivered_id.clone();
        if let StreamPendingReply::Data(data) = &pending {
            if entry_id_less(&data.start_id, &keep_from) {
                keep_from = data.start_id.clone();
            }
        }
        if keep_from != "0-0" {
            let trimmed: usize = redis::cmd("XTRIM")
                .arg(&self.stream)
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
