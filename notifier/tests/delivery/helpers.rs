use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use onestop_migrations::{Migrator, MigratorTrait};
use onestop_model::catalog::Catalog;
use onestop_model::entities::{device, push_attempt, user};
use onestop_model::events::{dead_letter_key, retry_key, stream_key, CONSUMER_GROUP, STREAM_FIELD};
use onestop_model::{EventKind, Platform, Role, StreamEvent};
use onestop_notifier::{BatchOutcome, Notifier, Settings};
use onestop_test_support::FakeFcm;
use redis::AsyncCommands;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, Set,
};
use serde_json::Value;
use uuid::Uuid;

const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

pub const USERNAME: &str = "lan.nguyen";
pub const DISPLAY_NAME: &str = "Nguyễn Thị Lan";

/// A notifier on its own PostgreSQL database and Redis key prefix, pushing
/// Android to a local FCM; one applicant with an Android phone in
/// Vietnamese and an iPhone (iOS has no credentials: the log gateway).
pub struct TestNotifier {
    pub notifier: Notifier,
    pub fcm: FakeFcm,
    pub db: DatabaseConnection,
    pub redis: redis::aio::MultiplexedConnection,
    pub settings: Settings,
    pub user_id: Uuid,
    pub android: device::Model,
    pub ios: device::Model,
    /// The real Redis, in this test's logical database.
    pub redis_url: String,
    database_name: String,
    scratch: PathBuf,
}

pub struct Options {
    /// Where the notifier finds Redis; unset, the real one (logical
    /// database `redis_db`).
    pub redis_url: Option<String>,
    /// The logical database of the real Redis this test uses. Tests share
    /// database 0, each under its own key prefix; a test that empties its
    /// database takes one of its own.
    pub redis_db: u8,
    pub reclaim_idle_ms: u64,
    pub batch_size: usize,
    pub max_deliveries: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            redis_url: None,
            redis_db: 0,
            reclaim_idle_ms: 1000,
            batch_size: 100,
            max_deliveries: 10,
        }
    }
}

async fn create_database() -> (String, String) {
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = Database::connect(POSTGRES_ADMIN_URL)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    (name, url)
}

pub async fn spawn_notifier() -> TestNotifier {
    spawn_notifier_with(Options::default()).await
}

pub async fn spawn_notifier_with(options: Options) -> TestNotifier {
    let _ = rustls::crypto::ring::default_provider().install_default();
    onestop_notifier::telemetry::init_tracing("text");
    let scratch =
        std::env::temp_dir().join(format!("onestop-notifier-{}", Uuid::new_v4().simple()));
    let (database_name, database_url) = create_database().await;
    let db = Database::connect(&database_url).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    Catalog::embedded().seed(&db).await.unwrap();

    let user_id = Uuid::now_v7();
    user::ActiveModel {
        id: Set(user_id),
        username: Set(USERNAME.into()),
        password_hash: Set("not-a-real-hash".into()),
        role: Set(Role::Applicant),
        display_name: Set(DISPLAY_NAME.into()),
        locale: Set("vi".into()),
        disabled: Set(false),
        created_at: Set(Utc::now()),
        // Region, agency and the registry link stay empty (NULL).
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();
    let android = add_device(&db, user_id, Platform::Android, "vi-VN").await;
    let ios = add_device(&db, user_id, Platform::Ios, "ko-KR").await;

    let fcm = FakeFcm::start().await;
    let redis_url = format!("redis://{REDIS_ADDR}/{}", options.redis_db);
    let settings = Settings {
        database_url,
        database_max_connections: 3,
        redis_url: options.redis_url.unwrap_or_else(|| redis_url.clone()),
        batch_size: options.batch_size,
        redis_prefix: format!("test:{}:", Uuid::new_v4().simple()),
        fcm_service_account: Some(fcm.write_service_account(&scratch)),
        fcm_endpoint: fcm.endpoint(),
        consumer: "notifier-under-test".into(),
        block_ms: 100,
        reclaim_idle_ms: options.reclaim_idle_ms,
        max_deliveries: options.max_deliveries,
        push_timeout_secs: 5,
        ..Settings::default()
    };
    let notifier = Notifier::build(settings.clone())
        .await
        .expect("the notifier starts");
    let redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379");
    TestNotifier {
        notifier,
        fcm,
        db,
        redis,
        settings,
        user_id,
        android,
        ios,
        redis_url,
        database_name,
        scratch,
    }
}

pub async fn add_device(
    db: &DatabaseConnection,
    user_id: Uuid,
    platform: Platform,
    locale: &str,
) -> device::Model {
    device::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        platform: Set(platform),
        push_token: Set(format!(
            "{}-token-{}",
            platform.as_str(),
            Uuid::new_v4().simple()
        )),
        locale: Set(locale.into()),
        created_at: Set(Utc::now()),
        updated_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .unwrap()
}

impl TestNotifier {
    pub fn stream(&self) -> String {
        stream_key(&self.settings.redis_prefix)
    }

    /// An event for this test's applicant.
    pub fn event(&self, kind: EventKind, status: &str) -> StreamEvent {
        StreamEvent {
            event_id: Uuid::now_v7(),
            kind,
            occurred_at: Utc::now(),
            recipient_user_id: self.user_id,
            submission_id: Uuid::now_v7(),
            case_id: Some(Uuid::now_v7()),
            status: Some(status.into()),
        }
    }

    /// Settings for another notifier of the same group.
    pub fn settings_for(&self, consumer: &str) -> Settings {
        Settings {
            consumer: consumer.into(),
            ..self.settings.clone()
        }
    }

    /// The built notifier binary, configured like this test's notifier
    /// under the consumer name `consumer`.
    pub fn notifier_command(&self, consumer: &str) -> std::process::Command {
        let settings = &self.settings;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_onestop-notifier"));
        command
            .env("DATABASE_URL", &settings.database_url)
            .env("REDIS_URL", &settings.redis_url)
            .env("REDIS_PREFIX", &settings.redis_prefix)
            .env(
                "FCM_SERVICE_ACCOUNT",
                settings.fcm_service_account.as_ref().expect("FCM is set"),
            )
            .env("FCM_ENDPOINT", &settings.fcm_endpoint)
            .env("NOTIFIER_CONSUMER", consumer)
            .env("NOTIFIER_METRICS_ADDR", "127.0.0.1:0")
            .env("NOTIFIER_BLOCK_MS", "100")
            .env(
                "NOTIFIER_RECLAIM_IDLE_MS",
                settings.reclaim_idle_ms.to_string(),
            )
            .env(
                "NOTIFIER_MAX_DELIVERIES",
                settings.max_deliveries.to_string(),
            )
            .env("RUST_LOG", "warn");
        for variable in [
            "APNS_KEY_PATH",
            "APNS_KEY_ID",
            "APNS_TEAM_ID",
            "APNS_TOPIC",
            "NOTIFIER_CONFIG",
        ] {
            command.env_remove(variable);
        }
        command
    }

    /// The Android messages FCM accepted for `event`.
    pub fn messages_for(&self, event: &StreamEvent) -> Vec<Value> {
        let id = event.event_id.to_string();
        self.fcm
            .messages()
            .into_iter()
            .filter(|m| m["data"]["event_id"] == id.as_str())
            .collect()
    }

    /// XADDs `event` as the server's relay does; returns the entry id.
    pub async fn publish(&self, event: &StreamEvent) -> String {
        self.publish_raw(&serde_json::to_string(event).unwrap())
            .await
    }

    pub async fn publish_raw(&self, field: &str) -> String {
        let mut redis = self.redis.clone();
        redis
            .xadd(self.stream(), "*", &[(STREAM_FIELD, field)])
            .await
            .unwrap()
    }

    /// Steps the notifier until `done` holds, failing after `timeout`.
    /// Batches that fail (Redis away) are retried like the run loop does.
    pub async fn drive_until<F>(&self, timeout: Duration, mut done: F) -> Vec<BatchOutcome>
    where
        F: FnMut(&TestNotifier, &[BatchOutcome]) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut outcomes = Vec::new();
        loop {
            match self.notifier.process_batch().await {
                Ok(outcome) => outcomes.push(outcome),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            if done(self, &outcomes) {
                return outcomes;
            }
            assert!(
                Instant::now() < deadline,
                "not done within {timeout:?}; batches: {outcomes:#?}; FCM got {:#?}",
                self.fcm.messages()
            );
        }
    }

    /// Steps until FCM holds `count` messages; returns them.
    pub async fn drive_until_messages(&self, count: usize, timeout: Duration) -> Vec<Value> {
        self.drive_until(timeout, |app, _| app.fcm.messages().len() >= count)
            .await;
        self.fcm.messages()
    }

    /// Steps until a batch finds nothing new, nothing is pending for the
    /// group and no retry is waiting; returns the batches.
    pub async fn drive_until_settled(&self, timeout: Duration) -> Vec<BatchOutcome> {
        let mut redis = self.redis.clone();
        let stream = self.stream();
        let deadline = Instant::now() + timeout;
        let mut outcomes = Vec::new();
        loop {
            if let Ok(outcome) = self.notifier.process_batch().await {
                let idle = outcome.is_idle();
                outcomes.push(outcome);
                let pending: redis::streams::StreamPendingReply =
                    redis.xpending(&stream, CONSUMER_GROUP).await.unwrap();
                let parked: usize = redis
                    .zcard(retry_key(&self.settings.redis_prefix))
                    .await
                    .unwrap();
                if idle && pending.count() == 0 && parked == 0 {
                    return outcomes;
                }
            }
            assert!(
                Instant::now() < deadline,
                "entries still pending: {outcomes:#?}"
            );
        }
    }

    pub async fn attempts(&self, event_id: Uuid) -> Vec<push_attempt::Model> {
        push_attempt::Entity::find()
            .filter(push_attempt::Column::EventId.eq(event_id))
            .order_by_asc(push_attempt::Column::CreatedAt)
            .all(&self.db)
            .await
            .unwrap()
    }

    pub async fn devices(&self) -> Vec<device::Model> {
        device::Entity::find()
            .filter(device::Column::UserId.eq(self.user_id))
            .all(&self.db)
            .await
            .unwrap()
    }

    pub async fn dead_letters(&self) -> redis::streams::StreamRangeReply {
        let mut redis = self.redis.clone();
        redis
            .xrange_all(dead_letter_key(&self.settings.redis_prefix))
            .await
            .unwrap()
    }
}

impl Drop for TestNotifier {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
        let name = self.database_name.clone();
        let redis_url = self.redis_url.clone();
        let keys = [
            self.stream(),
            dead_letter_key(&self.settings.redis_prefix),
            retry_key(&self.settings.redis_prefix),
        ];
        // Dropping needs async; a short-lived runtime on another thread
        // keeps the test's runtime out of it.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(client) = redis::Client::open(redis_url.as_str()) {
                    if let Ok(mut redis) = client.get_multiplexed_async_connection().await {
                        let _: Result<(), _> = redis.del(&keys).await;
                    }
                }
                if let Ok(admin) = Database::connect(POSTGRES_ADMIN_URL).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
