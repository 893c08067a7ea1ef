//! The push providers behind one trait: FCM HTTP v1 for Android, APNs for
//! iOS, and the log for a platform whose credentials are not configured.

mod apns;
mod fcm;
mod log;

use std::time::Duration;

use async_trait::async_trait;

pub use apns::{classify_apns_error, ApnsGateway};
pub use fcm::{classify_fcm_error, parse_retry_after, FcmGateway, FcmSetupError, ServiceAccount};
pub use log::LogGateway;

use crate::payload::RenderedPush;

/// One push to one device.
#[derive(Clone, Debug)]
pub struct PushMessage {
    pub device_token: String,
    pub push: RenderedPush,
}

/// The provider accepted the push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's id of the message (FCM `name`, APNs `apns-id`).
    pub provider_id: Option<String>,
}

/// Why a push was not accepted, sorted by what the notifier does next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Try again later (provider overloaded or unreachable); the provider
    /// may say when.
    #[error("retry later: {detail}")]
    Retryable {
        retry_after: Option<Duration>,
        detail: String,
    },
    /// The app was uninstalled or the token is not valid: forget the
    /// device.
    #[error("device token no longer valid: {detail}")]
    TokenGone { detail: String },
    /// Refused for good (our payload, or a token of another sender);
    /// retrying cannot help.
    #[error("refused: {detail}")]
    Permanent { detail: String },
}

impl PushError {
    pub fn retryable(detail: impl Into<String>) -> Self {
        PushError::Retryable {
            retry_after: None,
            detail: detail.into(),
        }
    }

    pub fn permanent(detail: impl Into<String>) -> Self {
        PushError::Permanent {
            detail: detail.into(),
        }
    }

    /// The provider refuses our own credentials, project, endpoint or
    /// topic, not the device: no push can succeed until an operator fixes
    /// it, so it is logged loudly and retried, and the event ends in the
    /// dead-letter stream, from where it can be replayed. No device is
    /// ever deleted for it.
    pub fn misconfigured(detail: String, retry_after: Option<Duration>) -> Self {
        tracing::error!(%detail, "the provider refuses our configuration; pushes wait until it is fixed");
        PushError::Retryable {
            retry_after,
            detail,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, PushError::Retryable { .. })
    }
}

/// Who carried a push, as recorded in `push_attempts.provider`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Fcm,
    Apns,
    Log,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
            Provider::Log => "log",
        }
    }
}

#[async_trait]
pub trait PushGateway: Send + Sync {
    fn provider(&self) -> Provider;

    async fn send(&self, message: &PushMessage) -> Result<Delivered, PushError>;
}
