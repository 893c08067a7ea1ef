//! Writes pushes to the structured log instead of sending them: used for a
//! platform whose provider credentials are not configured, e.g. on a
//! developer's machine.

use async_trait::async_trait;
use onestop_model::Platform;
use serde_json::json;

use super::{Delivered, Provider, PushError, PushGateway, PushMessage};
use crate::payload::{apns_payload, fcm_message};

pub struct LogGateway {
    platform: Platform,
}

impl LogGateway {
    pub fn new(platform: Platform) -> Self {
        LogGateway { platform }
    }
}

/// The first characters of a device token: enough to tell devices apart
/// in a log, not enough to push to one.
pub(crate) fn token_hint(token: &str) -> String {
    let shown: String = token.chars().take(8).collect();
    format!("{shown}…")
}

#[async_trait]
impl PushGateway for LogGateway {
    fn provider(&self) -> Provider {
        Provider::Log
    }

    async fn send(&self, message: &PushMessage) -> Result<Delivered, PushError> {
        let token = token_hint(&message.device_token);
        let payload = match self.platform {
            Platform::Android => json!({ "message": fcm_message(&token, &message.push) }),
            Platform::Ios => apns_payload(&message.push),
        };
        tracing::info!(
            platform = self.platform.as_str(),
            device = %token,
            event_id = %message.push.event_id,
            collapse_key = %message.push.collapse_key,
            payload = %payload,
            "push written to the log (no credentials for this platform)"
        );
        Ok(Delivered::default())
    }
}
