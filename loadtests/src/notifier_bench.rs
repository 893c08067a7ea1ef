//! Notifier benchmark: from a decision's commit to the push arriving at a
//! local FCM HTTP v1 server, through the server's outbox relay, the Redis
//! stream and the notifier, all real, all in this process, against the
//! local PostgreSQL and Redis.
//!
//! 1. Latency: decisions committed at a steady rate (one Android phone
//!    each); p50/p99 from commit to arrival.
//! 2. Throughput: a burst of decisions committed by many writers at once
//!    (several phones each) and relayed to the stream while the notifier
//!    is stopped: decisions per second committed; then the notifier is
//!    started and drains the stream: pushes per second, from its start to
//!    the last arrival.
//! 3. Ceiling: the same number of pushes through Redis and the FCM client
//!    alone (XADD → XREADGROUP → the local server → XACK, no database, no
//!    rendering, no accounting), on the same machine.
//!
//! A decision's commit is one transaction writing the outbox row, as the
//! review API does, followed by the wake-up of the relay.
//!
//! ```sh
//! cargo run --release -p onestop-loadtests --bin notifier-bench
//! ```
//!
//! Environment: `BENCH_POSTGRES_URL` (an existing database to connect to,
//! to create a scratch one; default `postgres://postgres@127.0.0.1:5432/test`),
//! `REDIS_URL`, `BENCH_RATE` (decisions/s, 200), `BENCH_SECONDS` (10),
//! `BENCH_BURST` (decisions, 10000), `BENCH_DEVICES` (phones per applicant in
//! the burst, 4), `BENCH_WRITERS` (32), `BENCH_CONCURRENCY` (pushes in flight, 64).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use onestop_migrations::{Migrator, MigratorTrait};
use onestop_model::catalog::{Catalog, Texts};
use onestop_model::entities::{device, outbox, user};
use onestop_model::{EventKind, Platform, Role, StreamEvent};
use onestop_notifier::gateway::{FcmGateway, ServiceAccount};
use onestop_notifier::{Notifier, PushGateway, PushMessage, RenderedPush, Settings};
use onestop_server::outbox::{record, run_relay, RelayTiming};
use onestop_server::redis_link::RedisLink;
use onestop_test_support::FakeFcm;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, Set, TransactionTrait,
};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Config {
    postgres_url: String,
    redis_url: String,
    rate: u64,
    seconds: u64,
    burst: usize,
    devices: usize,
    writers: usize,
    concurrency: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Self {
        Config {
            postgres_url: env_or(
                "BENCH_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            ),
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
            rate: env_or("BENCH_RATE", 200u64).max(1),
            seconds: env_or("BENCH_SECONDS", 10u64).max(1),
            burst: env_or("BENCH_BURST", 10_000usize).max(1),
            devices: env_or("BENCH_DEVICES", 4usize).max(1),
            writers: env_or("BENCH_WRITERS", 32usize).max(1),
            concurrency: env_or("BENCH_CONCURRENCY", 64usize).max(1),
        }
    }
}

/// Applicants, each with `devices` Android phones.
async fn applicants(db: &DatabaseConnection, count: usize, devices: usize) -> Vec<Uuid> {
    let now = Utc::now();
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    for chunk in ids.chunks(500) {
        user::Entity::insert_many(chunk.iter().map(|id| user::ActiveModel {
            id: Set(*id),
            username: Set(format!("bench-{}", id.simple())),
            password_hash: Set("not-a-real-hash".into()),
            role: Set(Role::Applicant),
            display_name: Set("Bench Applicant".into()),
            locale: Set("ko".into()),
            disabled: Set(false),
            created_at: Set(now),
            ..Default::default()
        }))
        .exec_without_returning(db)
        .await
        .expect("insert applicants");
        let phones: Vec<device::ActiveModel> = chunk
            .iter()
            .flat_map(|id| {
                (0..devices).map(move |n| device::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    user_id: Set(*id),
                    platform: Set(Platform::Android),
                    push_token: Set(format!("bench-{}-{n}", id.simple())),
                    locale: Set(["ko-KR", "en", "vi-VN", "zh-CN"][n % 4].into()),
                    created_at: Set(now),
                    updated_at: Set(now),
                })
            })
            .collect();
        device::Entity::insert_many(phones)
            .exec_without_returning(db)
            .await
            .expect("insert phones");
    }
    ids
}

/// Commits decisions and remembers when each committed.
#[derive(Clone)]
struct Committer {
    db: DatabaseConnection,
    wakeup: Arc<Notify>,
    committed: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Committer {
    async fn decide(&self, recipient: Uuid) {
        let event = StreamEvent {
            event_id: Uuid::now_v7(),
            kind: EventKind::CaseDecided,
            occurred_at: Utc::now(),
            recipient_user_id: recipient,
            submission_id: Uuid::now_v7(),
            case_id: Some(Uuid::now_v7()),
            status: Some("approved".into()),
        };
        let txn = self.db.begin().await.expect("begin");
        record(&txn, &event).await.expect("outbox row");
        txn.commit().await.expect("commit");
        let at = Instant::now();
        self.wakeup.notify_one();
        self.committed
            .lock()
            .await
            .insert(event.event_id.to_string(), at);
    }
}

/// Waits until FCM holds `count` messages; false after `timeout`.
async fn wait_for(fcm: &FakeFcm, count: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while fcm.message_count() < count {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::from_env();

    // A scratch database.
    let name = format!("bench_{}", Uuid::new_v4().simple());
    let admin = Database::connect(&config.postgres_url)
        .await
        .expect("PostgreSQL (BENCH_POSTGRES_URL)");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the scratch database");
    let base = config
        .postgres_url
        .rsplit_once('/')
        .map(|(base, _)| base.to_owned())
        .unwrap_or_default();
    let database_url = format!("{base}/{name}");
    let mut options = ConnectOptions::new(database_url.clone());
    options.max_connections(40).sqlx_logging(false);
    let db = Database::connect(options).await.expect("scratch database");
    Migrator::up(&db, None).await.expect("migrate");
    Catalog::embedded().seed(&db).await.expect("seed");

    let steady = applicants(&db, 200, 1).await;
    let bursty = applicants(&db, config.burst.min(2000), config.devices).await;

    let fcm = FakeFcm::start().await;
    let scratch = std::env::temp_dir().join(format!("notifier-bench-{}", Uuid::new_v4().simple()));
    let account: PathBuf = fcm.write_service_account(&scratch);
    let prefix = format!("bench:{}:", Uuid::new_v4().simple());

    let cancel = CancellationToken::new();
    let wakeup = Arc::new(Notify::new());
    let link = Arc::new(RedisLink::new(&config.redis_url, &prefix).expect("REDIS_URL"));
    let relay = tokio::spawn(run_relay(
        db.clone(),
        link,
        wakeup.clone(),
        RelayTiming {
            poll: Duration::from_secs(1),
            republish_after: Duration::from_secs(120),
        },
        cancel.child_token(),
    ));
    let settings = Settings {
        database_url: database_url.clone(),
        database_max_connections: 10,
        redis_url: config.redis_url.clone(),
        redis_prefix: prefix.clone(),
        fcm_service_account: Some(account.clone()),
        fcm_endpoint: fcm.endpoint(),
        consumer: "bench-notifier".into(),
        batch_size: 500,
        block_ms: 1000,
        concurrency: config.concurrency,
        metrics_addr: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    let notifier = Notifier::build(settings).await.expect("notifier");
    let worker_cancel = cancel.child_token();
    let worker = notifier.spawn(worker_cancel.clone());

    let committer = Committer {
        db: db.clone(),
        wakeup: wakeup.clone(),
        committed: Arc::default(),
    };

    // Warm-up: connections, the OAuth2 token, texts.
    for recipient in steady.iter().take(20) {
        committer.decide(*recipient).await;
    }
    assert!(
        wait_for(&fcm, 20, Duration::from_secs(30)).await,
        "warm-up pushes did not arrive"
    );
    committer.committed.lock().await.clear();
    let mut seen = fcm.message_count();

    // 1. Latency at a steady rate.
    let total = (config.rate * config.seconds) as usize;
    println!(
        "latency: {total} decisions at {}/s, one phone each …",
        config.rate
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        tick.tick().await;
        let committer = committer.clone();
        let recipient = steady[n % steady.len()];
        tasks.push(tokio::spawn(
            async move { committer.decide(recipient).await },
        ));
    }
    for task in tasks {
        task.await.expect("commit");
    }
    let committing = started.elapsed();
    let arrived_all = wait_for(&fcm, seen + total, Duration::from_secs(60)).await;
    let committed = std::mem::take(&mut *committer.committed.lock().await);
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    let mut first: HashMap<String, Instant> = HashMap::new();
    for (at, message) in fcm.arrivals_since(seen) {
        let id = message["data"]["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        first.entry(id).or_insert(at);
    }
    for (id, at) in &first {
        if let Some(commit) = committed.get(id) {
            latencies.push(at.saturating_duration_since(*commit));
        }
    }
    latencies.sort();
    let sustained = total as f64 / committing.as_secs_f64();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let max = latencies.last().copied().unwrap_or_default();
    seen = fcm.message_count();

    // 2. Throughput: a burst from many writers, committed and relayed
    // while the notifier is stopped; then the notifier drains it.
    let paused = cancel.child_token();
    worker_cancel.cancel();
    let _ = worker.await;
    let burst = config.burst;
    let pushes = burst * config.devices;
    println!(
        "throughput: {burst} decisions from {} writers, {} phones each ({pushes} pushes) …",
        config.writers, config.devices
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bursty = Arc::new(bursty);
    let started = Instant::now();
    let writers: Vec<_> = (0..config.writers)
        .map(|_| {
            let committer = committer.clone();
            let next = next.clone();
            let bursty = bursty.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= burst {
                        break;
                    }
                    committer.decide(bursty[n % bursty.len()]).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let committing_burst = started.elapsed();
    let decisions_per_sec = burst as f64 / committing_burst.as_secs_f64();
    // Everything relayed to the stream before the notifier starts.
    loop {
        let waiting = outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .count(&db)
            .await
            .expect("count");
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_started = Instant::now();
    let worker = notifier.spawn(paused.clone());
    let burst_arrived = wait_for(&fcm, seen + pushes, Duration::from_secs(300)).await;
    let last_arrival = fcm
        .arrivals_since(seen)
        .last()
        .map(|(at, _)| *at)
        .unwrap_or_else(Instant::now);
    let drain = last_arrival.saturating_duration_since(drain_started);
    let pushes_per_sec = pushes as f64 / drain.as_secs_f64();
    cancel.cancel();
    let _ = worker.await;
    let _ = relay.await;
    seen = fcm.message_count();

    // 3. The ceiling: Redis and the FCM client alone.
    println!("ceiling: {pushes} pushes through XADD → XREADGROUP → local FCM → XACK …");
    let texts = Texts::load(&db).await.expect("texts");
    let sample = StreamEvent {
        event_id: Uuid::now_v7(),
        kind: EventKind::CaseDecided,
        occurred_at: Utc::now(),
        recipient_user_id: Uuid::now_v7(),
        submission_id: Uuid::now_v7(),
        case_id: Some(Uuid::now_v7()),
        status: Some("approved".into()),
    };
    let push = RenderedPush::render(&sample, &texts, "ko-KR").expect("render");
    let gateway = Arc::new(
        FcmGateway::new(
            ServiceAccount::from_file(&account).expect("account"),
            &fcm.endpoint(),
            Duration::from_secs(10),
        )
        .expect("gateway"),
    );
    let ceiling = ceiling(
        &config.redis_url,
        &prefix,
        pushes,
        config.concurrency,
        gateway,
        push,
    )
    .await;
    let ceiling_arrived = wait_for(&fcm, seen + pushes, Duration::from_secs(60)).await;
    let ceiling_per_sec = pushes as f64 / ceiling.as_secs_f64();

    println!();
    println!(
        "notifier benchmark (release build, one process, {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "  latency     {total} decisions at {:.0}/s sustained: commit→push p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
        sustained,
        ms(p50),
        ms(p99),
        ms(max),
        if arrived_all { "" } else { "  (NOT ALL ARRIVED)" }
    );
    println!(
        "  throughput  {burst} decisions committed at {decisions_per_sec:.0}/s ({} writers); the notifier pushed {pushes} at {pushes_per_sec:.0}/s (start → last arrival){}",
        config.writers,
        if burst_arrived { "" } else { "  (NOT ALL ARRIVED)" }
    );
    println!(
        "  ceiling     {pushes} pushes at {ceiling_per_sec:.0}/s (Redis + FCM client + local server only){}",
        if ceiling_arrived { "" } else { "  (NOT ALL ARRIVED)" }
    );
    println!(
        "  ratio       {:.0}% of the ceiling",
        100.0 * pushes_per_sec / ceiling_per_sec
    );
    println!(
        "  goals       p50 < 20 ms: {}; p99 < 100 ms: {}; ≥ 10000 pushes/s: {}; ≥ 50% of ceiling: {}",
        yes(ms(p50) < 20.0),
        yes(ms(p99) < 100.0),
        yes(pushes_per_sec >= 10_000.0),
        yes(pushes_per_sec >= 0.5 * ceiling_per_sec)
    );

    // Clean up.
    if let Ok(client) = redis::Client::open(config.redis_url.as_str()) {
        if let Ok(mut redis) = client.get_multiplexed_async_connection().await {
            let keys: Vec<String> = redis.keys(format!("{prefix}*")).await.unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis.del(keys).await;
            }
        }
    }
    db.close().await.ok();
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    let _ = std::fs::remove_dir_all(&scratch);
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// XADD `count` entries while one consumer of a group reads them in
/// batches, sends each through the FCM client, and acknowledges them;
/// returns the time from the first XADD to the last XACK.
async fn ceiling(
    redis_url: &str,
    prefix: &str,
    count: usize,
    concurrency: usize,
    gateway: Arc<FcmGateway>,
    push: RenderedPush,
) -> Duration {
    let client = redis::Client::open(redis_url).expect("REDIS_URL");
    let mut producer = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let mut consumer = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let stream = format!("{prefix}ceiling");
    let _: () = consumer
        .xgroup_create_mkstream(&stream, "ceiling", "0")
        .await
        .expect("group");
    let started = Instant::now();
    let produce = {
        let stream = stream.clone();
        tokio::spawn(async move {
            for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
                let mut pipe = redis::pipe();
                for n in chunk {
                    pipe.xadd(&stream, "*", &[("token", format!("ceiling-{n}"))])
                        .ignore();
                }
                let _: () = pipe.query_async(&mut producer).await.expect("XADD");
            }
        })
    };
    let mut handled = 0;
    let options = StreamReadOptions::default()
        .group("ceiling", "one")
        .count(500)
        .block(1000);
    while handled < count {
        let reply: Option<StreamReadReply> = consumer
            .xread_options(&[&stream], &[">"], &options)
            .await
            .expect("XREADGROUP");
        let entries: Vec<_> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if entries.is_empty() {
            continue;
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        stream::iter(entries)
            .map(|entry| {
                let gateway = gateway.clone();
                let message = PushMessage {
                    device_token: entry.get("token").unwrap_or_default(),
                    push: push.clone(),
                };
                async move {
                    let _ = gateway.send(&message).await;
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<()>>()
            .await;
        let _: usize = consumer.xack(&stream, "ceiling", &ids).await.expect("XACK");
        handled += ids.len();
    }
    let elapsed = started.elapsed();
    let _ = produce.await;
    elapsed
}
