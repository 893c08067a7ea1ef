use std::time::Duration;

use crate::gateway::FcmSetupError;
use crate::settings::SettingsError;

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

/// Displays an error with its whole chain of causes.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
