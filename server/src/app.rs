//! Building the server from its settings and running it until told to stop.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use onestop_migrations::{Migrator, MigratorTrait};
use onestop_model::catalog::Catalog;
use poem::middleware::{AddData, CatchPanic, Compression, Cors};
use poem::{get, EndpointExt, Route};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::body_limit::BodyLimit;
use crate::error::{framework_error_to_problem, ErrorChain};
use crate::http_guard::{AllowedMethods, HttpGuard};
use crate::identity::RrnIndexer;
use crate::rate_limit::RateLimits;
use crate::redis_link::RedisLink;
use crate::registry::DatabaseRegistry;
use crate::settings::Settings;
use crate::state::{AppState, Inner};
use crate::telemetry::{metrics_handle, RequestLog};
use crate::vault::Vault;
use crate::{api, demo, idempotency, ops, outbox};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("the database is unreachable or refused the migrations: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the catalog could not be seeded: {0}")]
    Catalog(#[from] onestop_model::catalog::CatalogError),
    #[error("the catalog file {path} could not be read: {source}")]
    CatalogFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the identifier keys are not usable: {0}")]
    Vault(#[from] crate::vault::VaultError),
    #[error("the key folder (KEY_DIR) could not be used: {0}")]
    Keys(std::io::Error),
    #[error("the media folder could not be prepared: {0}")]
    Media(std::io::Error),
    #[error("REDIS_URL is not usable: {0}")]
    Redis(#[from] crate::redis_link::RedisLinkError),
    #[error("the demo accounts could not be created: {0}")]
    Demo(#[from] crate::error::ApiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The vault of identifiers: the configured KEK (and the previous one while
/// rotating), or for the embedded default a key file in `KEY_DIR`.
pub fn vault_from_settings(settings: &Settings) -> Result<Vault, StartupError> {
    Ok(match &settings.rrn_kek {
        Some(kek) => {
            let previous = settings
                .rrn_kek_previous
                .as_ref()
                .zip(settings.rrn_kek_previous_id.as_deref());
            Vault::new(
                (&settings.rrn_kek_id, kek.expose_secret()),
                previous.map(|(key, id)| (id, key.expose_secret())),
            )?
        }
        None => Vault::from_key_file(
            &settings.rrn_kek_id,
            &settings
                .key_dir
                .join(format!("{}.key", settings.rrn_kek_id)),
        )?,
    })
}

/// The keys of the access-record chain: the configured key (and the
/// previous one while rotating), or for the embedded default a key file in
/// `KEY_DIR`, made on first start when `create` (a verifying command must
/// not make a new key: every record would then look altered).
pub fn access_log_keys_from_settings(
    settings: &Settings,
    create: bool,
) -> Result<crate::access_log::ChainKeys, StartupError> {
    Ok(match &settings.access_log_key {
        Some(key) => crate::access_log::ChainKeys::new(
            (&settings.access_log_key_id, key.expose_secret().as_bytes()),
            settings
                .access_log_key_previous
                .as_ref()
                .zip(settings.access_log_key_previous_id.as_deref())
                .map(|(key, id)| (id, key.expose_secret().as_bytes())),
        ),
        None => crate::access_log::ChainKeys::from_key_file(
            &settings.access_log_key_id,
            &settings
                .key_dir
                .join(format!("access-log-{}.key", settings.access_log_key_id)),
            create,
        )
        .map_err(StartupError::Keys)?,
    })
}

/// Seals the access records from before keyed links on the first start
/// with seals; a quick look on every later one.
async fn seal_access_records(
    db: &DatabaseConnection,
    keys: &crate::access_log::ChainKeys,
) -> Result<(), StartupError> {
    use crate::access_log::Sealing;
    match crate::access_log::seal_unkeyed(db, keys).await? {
        Sealing::AlreadySealed => {}
        Sealing::Sealed(people) => tracing::info!(
            people,
            key_id = keys.current_id(),
            "access records from before keyed links sealed"
        ),
        Sealing::RecordOfSealingMissing => tracing::error!(
            "the record of sealing the access records is missing while seals exist: nothing \
             was sealed again; `onestop-server verify-access-log` reports it"
        ),
    }
    Ok(())
}

pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    demo_accounts: Vec<String>,
}

/// Connects to the database, creating the SQLite folder when needed.
pub async fn connect_database(settings: &Settings) -> Result<DatabaseConnection, StartupError> {
    if let Some(path) = settings.database_url.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or_default();
        if let Some(parent) = Path::new(file).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(StartupError::Media)?;
            }
        }
    }
    let sqlite = settings.database_url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(settings.database_url.clone());
    options
        // SQLite has one writer. A pool of one keeps a transaction that
        // reads and then writes from failing when another connection wrote
        // in between (SQLITE_BUSY_SNAPSHOT); PostgreSQL gets a real pool.
        .max_connections(if sqlite {
            1
        } else {
            settings.database_max_connections
        })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        // Asking a pooled connection whether it is alive before each use
        // would add a round trip to every query (half the cost of a plain
        // read on PostgreSQL). A connection that did drop (a database
        // restart) fails the one statement it is used for and is closed;
        // idle ones are retired before a proxy or the server would cut
        // them.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(120))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    if db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
        // Readers do not block the writer, and the writer waits for a lock
        // instead of failing at once.
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;")
            .await?;
    }
    Ok(db)
}

/// Read-only connections SQLite readers get beside the one writer.
const SQLITE_READERS: u32 = 4;

/// The connections for reads that need no transaction of their own: the
/// sign-in check of every request and the screens opened most (lists,
/// a case, the catalog). SQLite has one connection for
/// everything else, so such a read would queue behind a write and its
/// commit; in WAL mode readers do not block the writer nor wait for it,
/// so they get a pool of read-only connections of their own, opened once
/// the writer has the database in WAL mode. PostgreSQL and an in-memory
/// SQLite database (which another connection would not see) use `db`.
pub async fn connect_readers(
    settings: &Settings,
    db: &DatabaseConnection,
) -> Result<DatabaseConnection, StartupError> {
    let url = &settings.database_url;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if db.get_database_backend() != sea_orm::DatabaseBackend::Sqlite || in_memory {
        return Ok(db.clone());
    }
    let mut options = ConnectOptions::new(url.clone());
    options
        .max_connections(SQLITE_READERS)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|options| options.read_only(true));
    Ok(Database::connect(options).await?)
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = connect_database(&settings).await?;
        Migrator::up(&db, None).await?;

        let catalog = match &settings.catalog_file {
            Some(path) => Catalog::parse(&std::fs::read_to_string(path).map_err(|source| {
                StartupError::CatalogFile {
                    path: path.display().to_string(),
                    source,
                }
            })?)?,
            None => Catalog::embedded(),
        };
        catalog.seed(&db).await?;
        let reads = connect_readers(&settings, &db).await?;
        let rrn_index = match &settings.rrn_index_key {
            Some(key) => RrnIndexer::from_secret(key.expose_secret()),
            None => RrnIndexer::from_key_file(&settings.key_dir.join("rrn-index.key"))
                .map_err(StartupError::Keys)?,
        };
        let vault = vault_from_settings(&settings)?;
        let access_log = access_log_keys_from_settings(&settings, true)?;
        seal_access_records(&db, &access_log).await?;
        let demo_accounts = if settings.demo_enabled() {
            demo::seed(&db, &rrn_index, &vault).await?;
            demo::describe()
        } else {
            Vec::new()
        };
        let names = crate::cases::NameBook::load(&db).await?;
        let media = crate::media::from_settings(&settings)
            .await
            .map_err(StartupError::Media)?;
        let redis = Arc::new(RedisLink::new(&settings.redis_url, &settings.redis_prefix)?);
        metrics_handle();

        let listener = tokio::net::TcpListener::bind(settings.bind_addr.as_str())
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.bind_addr.clone(),
                source,
            })?;

        let cancel = CancellationToken::new();
        let outbox_wakeup = Arc::new(Notify::new());
        let (access_records, access_writer) = crate::access_log::Recorder::start(
            db.clone(),
            access_log.clone(),
            cancel.child_token(),
        );
        let state = AppState::new(Inner {
            access_records,
            sessions: crate::auth::Sessions::new(
                db.clone(),
                reads.clone(),
                TokenKeys::from_settings(&settings),
                &settings,
            ),
            limits: RateLimits::from_settings(&settings),
            rrn_index,
            vault,
            access_log: access_log.clone(),
            registry: Arc::new(DatabaseRegistry::new(db.clone())),
            uploads: crate::uploads::Uploads::from_settings(&settings, db.clone(), media),
            redis: redis.clone(),
            catalog,
            names,
            cases: crate::cases::Cases::new(
                db.clone(),
                access_log.clone(),
                outbox_wakeup.clone(),
                settings.claim_ttl_secs,
            ),
            outbox_wakeup: outbox_wakeup.clone(),
            db: db.clone(),
            reads,
            settings: settings.clone(),
        });

        let tasks = vec![
            access_writer,
            tokio::spawn(outbox::run_relay(
                db.clone(),
                redis,
                outbox_wakeup,
                outbox::RelayTiming {
                    poll: settings.outbox_poll_interval(),
                    republish_after: settings.outbox_republish_after(),
                },
                cancel.child_token(),
            )),
            tokio::spawn(maintenance(state.clone(), cancel.child_token())),
            tokio::spawn(watch_catalog(state.clone(), cancel.child_token())),
            tokio::spawn(state.uploads.clone().background(cancel.child_token())),
        ];
        Ok(Application {
            listener,
            state,
            cancel,
            tasks,
            demo_accounts,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|addr| addr.port())
            .unwrap_or_default()
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub fn demo_accounts(&self) -> &[String] {
        &self.demo_accounts
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish
    /// (within the configured grace) and stops the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let settings = &self.state.settings;
        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        let limits = crate::serving::ConnectionLimits {
            header_read_timeout: Duration::from_secs(settings.header_read_timeout_secs),
            max_connections: settings.max_connections,
            grace,
        };
        let app = routes(self.state.clone());
        let served = crate::serving::serve(self.listener, app, limits, shutdown).await;
        self.cancel.cancel();
        for task in self.tasks {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("a background task did not stop within the grace period");
            }
        }
        served
    }
}

pub fn routes(state: AppState) -> impl poem::Endpoint {
    let settings = &state.settings;
    let api = api::service().server("/");
    let spec = api.spec_endpoint();
    let mut route = Route::new()
        .at("/openapi.json", spec)
        .at("/healthz", get(ops::healthz))
        .at(
            "/readyz",
            get(ops::readyz).data(ops::Readiness {
                db: state.db.clone(),
                redis: state.redis.clone(),
                media: state.uploads.media().clone(),
            }),
        )
        .at("/metrics", get(ops::metrics));
    if settings.docs_served() {
        route = route.nest("/docs", api.swagger_ui());
    }
    let body_limit = BodyLimit {
        max_json_bytes: settings.max_json_bytes,
        max_upload_bytes: settings.max_upload_bytes,
    };
    let guard = HttpGuard {
        request_timeout: Duration::from_secs(settings.request_timeout_secs),
        upload_timeout: Duration::from_secs(settings.upload_timeout_secs),
        allowed_methods: Arc::new(AllowedMethods::from_spec(
            &serde_json::from_str(&api.spec()).unwrap_or_default(),
        )),
    };
    let origins = settings.cors_origins();
    let cors = (!origins.is_empty()).then(|| {
        Cors::new()
            .allow_origins(origins)
            .allow_methods(["GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"])
            .allow_headers([
                "authorization",
                "content-type",
                "idempotency-key",
                "if-match",
                "if-none-match",
                "range",
                "if-range",
            ])
            .allow_headers(api::uploads::TUS_REQUEST_HEADERS)
            .expose_headers([
                "etag",
                "location",
                "retry-after",
                "content-range",
                "accept-ranges",
            ])
            .expose_headers(api::uploads::TUS_RESPONSE_HEADERS)
    });
    route
        .nest("/", api)
        .with(AddData::new(state.sessions.clone()))
        .with(AddData::new(state))
        .with(CatchPanic::new())
        .catch_all_error(|error| async move { framework_error_to_problem(error) })
        .with(guard)
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .with(Compression::new())
        .with(api::uploads::MediaRoutes)
        .with(body_limit)
        .with(RequestLog)
}

/// How often each server asks whether the catalog was seeded anew.
const CATALOG_CHECK: Duration = Duration::from_secs(5);

/// Reads the catalog's names and texts again when another server (or a
/// restart) seeded a new revision of the catalog.
async fn watch_catalog(state: AppState, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(CATALOG_CHECK);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        match state.names.refresh(&state.reads).await {
            Ok(true) => tracing::info!("the catalog changed; its names and texts are read again"),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "checking the catalog's revision failed")
            }
        }
    }
}

/// Periodic housekeeping: expired idempotency keys, idle rate-limit
/// entries, metric histograms.
async fn maintenance(state: AppState, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        state.limits.forget_idle_clients();
        metrics_handle().run_upkeep();
        if let Err(error) = idempotency::sweep(&state.db).await {
            tracing::warn!(error = %ErrorChain(&error), "sweeping idempotency keys failed");
        }
    }
}
