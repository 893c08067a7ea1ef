use std::time::Duration;

use onestop_runtime::redis_link::RedisLinkError;

use crate::gateway::FcmSetupError;
use crate::settings::SettingsError;

pub use onestop_runtime::ErrorChain;

/// What stops the notifier from starting or from finishing a batch. Push
/// failures are not here: they are [`crate::gateway::PushError`], recorded
/// per device.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    RedisTimeout(Duration),
    #[error("FCM_SERVICE_ACCOUNT: {0}")]
    Fcm(#[from] FcmSetupError),
    #[error("APNS_KEY_PATH: the APNs client could not be made: {0}")]
    Apns(#[from] a2::Error),
    #[error("NOTIFIER_METRICS_ADDR: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The link's failures are Redis failures like any other: the batch stops
/// and the next one starts on a fresh connection.
impl From<RedisLinkError> for NotifierError {
    fn from(error: RedisLinkError) -> Self {
        match error {
            RedisLinkError::Redis(error) => NotifierError::Redis(error),
            RedisLinkError::Timeout(waited) => NotifierError::RedisTimeout(waited),
        }
    }
}
