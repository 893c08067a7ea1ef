use std::ops::Deref;
use std::sync::Arc;

use onestop_model::catalog::Catalog;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::identity::RrnIndexer;
use crate::rate_limit::RateLimits;
use crate::redis_link::RedisLink;
use crate::registry::FactRegistry;
use crate::settings::Settings;

/// What every request handler may reach, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: DatabaseConnection,
    /// For reads outside any transaction that must not wait behind
    /// writes; the same pool as `db` except on SQLite
    /// ([`crate::app::connect_readers`]).
    pub reads: DatabaseConnection,
    pub settings: Settings,
    /// Signing in, refreshing and signing out.
    pub sessions: crate::auth::Sessions,
    pub limits: RateLimits,
    pub rrn_index: RrnIndexer,
    /// Seals resident registration numbers at rest.
    pub vault: crate::vault::Vault,
    /// Keys that link the access records.
    pub access_log: crate::access_log::ChainKeys,
    /// Writes the records of accesses that change nothing else, in batches.
    pub access_records: crate::access_log::Recorder,
    /// Where shared facts come from.
    pub registry: Arc<dyn FactRegistry>,
    /// Receiving files, the media store they go to, and thumbnails.
    pub uploads: crate::uploads::Uploads,
    pub redis: Arc<RedisLink>,
    /// The catalog as seeded at start (document names live only here).
    pub catalog: Catalog,
    /// Names of the catalog and texts of inbox entries, kept in memory.
    pub names: crate::cases::NameBook,
    /// Every transition of a case.
    pub cases: crate::cases::Cases,
    /// Woken after a commit that wrote to the outbox, so events leave at once
    /// instead of at the next poll.
    pub outbox_wakeup: Arc<Notify>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl<'a> From<&'a AppState> for crate::facts::Sources<'a> {
    fn from(state: &'a AppState) -> Self {
        crate::facts::Sources {
            db: &state.db,
            access_records: &state.access_records,
            registry: state.registry.as_ref(),
        }
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
