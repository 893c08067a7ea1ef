//! iOS pushes straight to APNs through a2, with a token (`.p8`) key.

use std::time::Duration;

use a2::{Client, ClientConfig, Endpoint, ErrorReason};
use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::{Delivered, Provider, PushError, PushGateway, PushMessage};
use crate::payload::apns_request;
use crate::settings::{ApnsEnvironment, ApnsSettings};

pub struct ApnsGateway {
    client: Client,
    topic: String,
}

impl ApnsGateway {
    pub fn new(settings: &ApnsSettings, timeout: Duration) -> Result<Self, a2::Error> {
        let key = SecretString::from(std::fs::read_to_string(&settings.key_path)?);
        let endpoint = match settings.environment {
            ApnsEnvironment::Production => Endpoint::Production,
            ApnsEnvironment::Sandbox => Endpoint::Sandbox,
        };
        let config = ClientConfig {
            request_timeout_secs: Some(timeout.as_secs().max(1)),
            ..ClientConfig::new(endpoint)
        };
        let client = Client::token(
            key.expose_secret().as_bytes(),
            settings.key_id.clone(),
            settings.team_id.clone(),
            config,
        )?;
        Ok(ApnsGateway {
            client,
            topic: settings.topic.clone(),
        })
    }
}

#[async_trait]
impl PushGateway for ApnsGateway {
    fn provider(&self) -> Provider {
        Provider::Apns
    }

    async fn send(&self, message: &PushMessage) -> Result<Delivered, PushError> {
        let request = apns_request(
            &message.device_token,
            &message.push,
            &self.topic,
            Utc::now(),
        );
        match self.client.send(request).await {
            Ok(response) => Ok(Delivered {
                provider_id: response.apns_id,
            }),
            Err(a2::Error::ResponseError(response)) => Err(classify_apns_error(
                response.code,
                response.error.as_ref().map(|body| &body.reason),
            )),
            Err(
                error @ (a2::Error::ConnectionError(_)
                | a2::Error::ClientError(_)
                | a2::Error::RequestTimeout(_)),
            ) => Err(PushError::retryable(format!("APNs unreachable: {error}"))),
            Err(error) => Err(PushError::permanent(format!("APNs request: {error}"))),
        }
    }
}

/// What an APNs error answer means for the notifier.
pub fn classify_apns_error(status: u16, reason: Option<&ErrorReason>) -> PushError {
    let detail = format!(
        "APNs {status} {}",
        reason.map_or_else(|| "-".to_owned(), |r| format!("{r:?}"))
    );
    match reason {
        Some(ErrorReason::BadDeviceToken | ErrorReason::Unregistered) => {
            PushError::TokenGone { detail }
        }
        // Our topic, key or certificate is wrong, not the device.
        Some(
            ErrorReason::DeviceTokenNotForTopic
            | ErrorReason::BadTopic
            | ErrorReason::TopicDisallowed
            | ErrorReason::MissingTopic
            | ErrorReason::InvalidProviderToken
            | ErrorReason::MissingProviderToken
            | ErrorReason::BadCertificate
            | ErrorReason::BadCertificateEnvironment
            | ErrorReason::Forbidden,
        ) => PushError::misconfigured(detail, None),
        // a2 signs a fresh provider token when the old one ages out.
        Some(
            ErrorReason::TooManyRequests
            | ErrorReason::InternalServerError
            | ErrorReason::ServiceUnavailable
            | ErrorReason::Shutdown
            | ErrorReason::IdleTimeout
            | ErrorReason::ExpiredProviderToken
            | ErrorReason::TooManyProviderTokenUpdates,
        ) => PushError::retryable(detail),
        Some(_) => PushError::Permanent { detail },
        None if status == 429 || status >= 500 => PushError::retryable(detail),
        None if status == 410 => PushError::TokenGone { detail },
        None => PushError::Permanent { detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_reasons_map_to_what_the_notifier_does() {
        assert!(matches!(
            classify_apns_error(410, Some(&ErrorReason::Unregistered)),
            PushError::TokenGone { .. }
        ));
        assert!(matches!(
            classify_apns_error(400, Some(&ErrorReason::BadDeviceToken)),
            PushError::TokenGone { .. }
        ));
        // A wrong topic must not delete every iPhone.
        assert!(
            classify_apns_error(400, Some(&ErrorReason::DeviceTokenNotForTopic)).is_retryable()
        );
        assert!(classify_apns_error(429, Some(&ErrorReason::TooManyRequests)).is_retryable());
        assert!(classify_apns_error(503, Some(&ErrorReason::ServiceUnavailable)).is_retryable());
        assert!(classify_apns_error(502, None).is_retryable());
        assert!(classify_apns_error(400, Some(&ErrorReason::BadTopic)).is_retryable());
        assert!(classify_apns_error(403, Some(&ErrorReason::InvalidProviderToken)).is_retryable());
        assert!(matches!(
            classify_apns_error(400, Some(&ErrorReason::PayloadTooLarge)),
            PushError::Permanent { .. }
        ));
    }
}
