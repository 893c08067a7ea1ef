//! Android pushes through the FCM HTTP v1 API.
//!
//! The OAuth2 exchange is written here on top of jsonwebtoken and reqwest.
//! The crates.io `fcm` crate speaks only the legacy HTTP API with a server
//! key, which Google shut down in 2024; HTTP v1 wants a short-lived OAuth2
//! access token instead. Getting one from a service account is a single
//! RS256-signed JWT POSTed as a form (RFC 7523), which the two crates we
//! already depend on do in a few lines.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Delivered, Provider, PushError, PushGateway, PushMessage};
use crate::payload::fcm_message;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ASSERTION_LIFETIME_SECS: i64 = 3600;
/// A Retry-After with at most this much left is waited out before sending.
const SHORT_WAIT: Duration = Duration::from_secs(1);
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The parts of a Google service-account JSON file FCM needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: SecretString,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FcmSetupError {
    #[error("cannot be read ({path}): {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("is not a service-account JSON file: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("its {0} is empty")]
    Empty(&'static str),
    #[error("its private_key is not an RSA key in PEM: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
    #[error("the HTTP client could not be built: {0}")]
    Http(#[from] reqwest::Error),
}

impl ServiceAccount {
    pub fn from_file(path: &Path) -> Result<Self, FcmSetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| FcmSetupError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self, FcmSetupError> {
        let account: ServiceAccount = serde_json::from_str(text)?;
        for (name, value) in [
            ("project_id", &account.project_id),
            ("client_email", &account.client_email),
            ("token_uri", &account.token_uri),
        ] {
            if value.trim().is_empty() {
                return Err(FcmSetupError::Empty(name));
            }
        }
        account.signing_key()?;
        Ok(account)
    }

    fn signing_key(&self) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
        EncodingKey::from_rsa_pem(self.private_key.expose_secret().as_bytes())
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    expires_in: u64,
}

struct AccessToken {
    value: SecretString,
    renew_at: Instant,
}

pub struct FcmGateway {
    http: reqwest::Client,
    send_url: String,
    account: ServiceAccount,
    signing_key: EncodingKey,
    /// Held while a token is fetched, so concurrent sends wait for one
    /// exchange instead of making their own.
    token: tokio::sync::Mutex<Option<AccessToken>>,
    /// FCM asked us (Retry-After) not to send before this.
    quiet_until: std::sync::Mutex<Option<Instant>>,
}

impl FcmGateway {
    /// A gateway sending as `account` to `endpoint` (the base URL, e.g.
    /// `https://fcm.googleapis.com`).
    pub fn new(
        account: ServiceAccount,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Self, FcmSetupError> {
        let signing_key = account.signing_key()?;
        // reqwest is built without a default TLS provider; binaries install
        // ring, and this covers a library user who did not.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            endpoint.trim_end_matches('/'),
            account.project_id
        );
        Ok(FcmGateway {
            http,
            send_url,
            account,
            signing_key,
            token: tokio::sync::Mutex::new(None),
            quiet_until: std::sync::Mutex::new(None),
        })
    }

    pub fn from_file(
        path: &Path,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Self, FcmSetupError> {
        Self::new(ServiceAccount::from_file(path)?, endpoint, timeout)
    }

    /// A cached access token, or a new one from the token endpoint.
    async fn access_token(&self) -> Result<SecretString, PushError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref() {
            if Instant::now() < token.renew_at {
                return Ok(token.value.clone());
            }
        }
        let now = Utc::now().timestamp();
        let claims = AssertionClaims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let assertion =
            jsonwebtoken::encode(&header, &claims, &self.signing_key).map_err(|error| {
                PushError::permanent(format!("signing the OAuth2 assertion: {error}"))
            })?;
        let response = self
            .http
            .post(&self.account.token_uri)
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|error| PushError::retryable(format!("OAuth2 token endpoint: {error}")))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after_header(&response);
            let body = response.text().await.unwrap_or_default();
            let detail = format!("OAuth2 token endpoint answered {status}: {}", clip(&body));
            return Err(
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    PushError::Retryable {
                        retry_after,
                        detail,
                    }
                } else {
                    // invalid_grant and friends: the key, e-mail or clock is wrong.
                    PushError::misconfigured(detail, retry_after)
                },
            );
        }
        let answer: TokenAnswer = response.json().await.map_err(|error| {
            PushError::retryable(format!("OAuth2 token endpoint sent no token: {error}"))
        })?;
        let lifetime = Duration::from_secs(answer.expires_in);
        let renew_in = if lifetime > TOKEN_MARGIN * 2 {
            lifetime - TOKEN_MARGIN
        } else {
            lifetime / 2
        };
        *slot = Some(AccessToken {
            value: answer.access_token.clone(),
            renew_at: Instant::now() + renew_in,
        });
        Ok(answer.access_token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    fn quiet_for(&self) -> Option<Duration> {
        let quiet = self.quiet_until.lock().unwrap();
        quiet.and_then(|until| until.checked_duration_since(Instant::now()))
    }
}

#[async_trait]
impl PushGateway for FcmGateway {
    fn provider(&self) -> Provider {
        Provider::Fcm
    }

    async fn send(&self, message: &PushMessage) -> Result<Delivered, PushError> {
        if let Some(wait) = self.quiet_for() {
            // A wait about to end is sat out here, rather than spending
            // one of the entry's deliveries on it.
            if wait > SHORT_WAIT {
                return Err(PushError::Retryable {
                    retry_after: Some(wait),
                    detail: "not sent: FCM asked to wait (Retry-After)".into(),
                });
            }
            tokio::time::sleep(wait).await;
        }
        let token = self.access_token().await?;
        let body = json!({ "message": fcm_message(&message.device_token, &message.push) });
        let response = self
            .http
            .post(&self.send_url)
            .bearer_auth(token.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|error| PushError::retryable(format!("FCM unreachable: {error}")))?;
        let status = response.status();
        if status.is_success() {
            let answer: Value = response.json().await.unwrap_or_default();
            return Ok(Delivered {
                provider_id: answer["name"].as_str().map(str::to_owned),
            });
        }
        let retry_after = retry_after_header(&response);
        let text = response.text().await.unwrap_or_default();
        let error = classify_fcm_error(status.as_u16(), retry_after, &text);
        if let PushError::Retryable {
            retry_after: Some(wait),
            ..
        } = &error
        {
            *self.quiet_until.lock().unwrap() = Some(Instant::now() + *wait);
        }
        if status == StatusCode::UNAUTHORIZED && error.is_retryable() {
            self.forget_token().await;
        }
        Err(error)
    }
}

fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()))
}

/// The longest wait a provider's `Retry-After` can impose; an absurd value
/// must neither overflow a clock nor park pushes for days.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as seconds or as an HTTP date, at most an hour.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(LONGEST_RETRY_AFTER));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(LONGEST_RETRY_AFTER),
    )
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(300) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// What an FCM v1 error answer means for the notifier. `body` is the
/// Google API error JSON (`{"error": {code, message, status, details}}`);
/// the `FcmError` detail's `errorCode` decides first, then the HTTP status.
pub fn classify_fcm_error(status: u16, retry_after: Option<Duration>, body: &str) -> PushError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed
        .as_ref()
        .map(|v| &v["error"])
        .filter(|e| e.is_object());
    let api_status = error.and_then(|e| e["status"].as_str());
    let message = error
        .and_then(|e| e["message"].as_str())
        .unwrap_or_else(|| clip(body));
    let details: &[Value] = error
        .and_then(|e| e["details"].as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let fcm_code = details
        .iter()
        .find(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
        })
        .and_then(|d| d["errorCode"].as_str());
    let names_the_token = details.iter().any(|d| {
        d["fieldViolations"]
            .as_array()
            .is_some_and(|v| v.iter().any(|f| f["field"] == "message.token"))
    }) || message.to_ascii_lowercase().contains("registration token");
    let detail = format!(
        "FCM {status} {}: {message}",
        fcm_code.or(api_status).unwrap_or("-")
    );
    let retry = || PushError::Retryable {
        retry_after,
        detail: detail.clone(),
    };
    let gone = || PushError::TokenGone {
        detail: detail.clone(),
    };
    let permanent = || PushError::Permanent {
        detail: detail.clone(),
    };
    let misconfigured = || PushError::misconfigured(detail.clone(), retry_after);
    match fcm_code {
        Some("UNREGISTERED") => return gone(),
        Some("INVALID_ARGUMENT") if names_the_token => return gone(),
        Some("INVALID_ARGUMENT") => return permanent(),
        // The token belongs to another sender: this device only.
        Some("SENDER_ID_MISMATCH") => return permanent(),
        // The APNs or web push credentials in the Firebase console are wrong.
        Some("THIRD_PARTY_AUTH_ERROR") => return misconfigured(),
        Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") => return retry(),
        _ => {}
    }
    match status {
        429 | 500 | 502 | 503 | 504 => retry(),
        // Our access token was refused (expired or revoked): the gateway
        // drops it and the next attempt fetches a new one.
        401 => retry(),
        // A Google API answer about the token; a 404 without one (an
        // HTML page) means FCM_ENDPOINT is wrong, and must not delete
        // every device.
        404 if api_status == Some("NOT_FOUND") => gone(),
        400 if names_the_token => gone(),
        // The project is not ours to send for, or FCM_ENDPOINT is wrong.
        403 | 404 => misconfigured(),
        _ => permanent(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn google_error(code: u16, status: &str, message: &str, details: Value) -> String {
        json!({ "error": { "code": code, "status": status, "message": message, "details": details } })
            .to_string()
    }

    fn fcm_detail(code: &str) -> Value {
        json!({ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code })
    }

    #[derive(Debug, PartialEq)]
    enum Kind {
        Retry(Option<u64>),
        Gone,
        Permanent,
    }

    fn kind(error: PushError) -> Kind {
        match error {
            PushError::Retryable { retry_after, .. } => {
                Kind::Retry(retry_after.map(|d| d.as_secs()))
            }
            PushError::TokenGone { .. } => Kind::Gone,
            PushError::Permanent { .. } => Kind::Permanent,
        }
    }

    #[test]
    fn every_fcm_error_code_maps_to_what_the_notifier_does() {
        let bad_token = json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": "message.token", "description": "Invalid registration token" }],
        });
        let bad_ttl = json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": "message.android.ttl", "description": "Invalid duration" }],
        });
        let table: Vec<(u16, Option<u64>, String, Kind)> = vec![
            (
                404,
                None,
                google_error(
                    404,
                    "NOT_FOUND",
                    "Requested entity was not found.",
                    json!([fcm_detail("UNREGISTERED")]),
                ),
                Kind::Gone,
            ),
            (
                400,
                None,
                google_error(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token",
                    json!([fcm_detail("INVALID_ARGUMENT"), bad_token]),
                ),
                Kind::Gone,
            ),
            (
                400,
                None,
                google_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Invalid value at 'message.android.ttl'",
                    json!([fcm_detail("INVALID_ARGUMENT"), bad_ttl]),
                ),
                Kind::Permanent,
            ),
            (
                403,
                None,
                google_error(
                    403,
                    "PERMISSION_DENIED",
                    "SenderId mismatch",
                    json!([fcm_detail("SENDER_ID_MISMATCH")]),
                ),
                Kind::Permanent,
            ),
            (
                401,
                None,
                google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Auth error from APNS or Web Push Service",
                    json!([fcm_detail("THIRD_PARTY_AUTH_ERROR")]),
                ),
                Kind::Retry(None),
            ),
            (
                429,
                Some(30),
                google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded.",
                    json!([fcm_detail("QUOTA_EXCEEDED")]),
                ),
                Kind::Retry(Some(30)),
            ),
            (
                503,
                Some(5),
                google_error(
                    503,
                    "UNAVAILABLE",
                    "The service is currently unavailable.",
                    json!([fcm_detail("UNAVAILABLE")]),
                ),
                Kind::Retry(Some(5)),
            ),
            (
                500,
                None,
                google_error(
                    500,
                    "INTERNAL",
                    "Internal error encountered.",
                    json!([fcm_detail("INTERNAL")]),
                ),
                Kind::Retry(None),
            ),
            // No FcmError detail: the HTTP status decides.
            (
                401,
                None,
                google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                    json!([]),
                ),
                Kind::Retry(None),
            ),
            (
                404,
                None,
                google_error(
                    404,
                    "NOT_FOUND",
                    "Requested entity was not found.",
                    json!([]),
                ),
                Kind::Gone,
            ),
            (
                404,
                None,
                "<html><body>Not Found</body></html>".into(),
                Kind::Retry(None),
            ),
            (
                403,
                None,
                google_error(
                    403,
                    "PERMISSION_DENIED",
                    "Permission denied on resource project.",
                    json!([]),
                ),
                Kind::Retry(None),
            ),
            (502, None, "Bad Gateway".into(), Kind::Retry(None)),
            (400, None, "not json".into(), Kind::Permanent),
        ];
        for (status, retry_after, body, expected) in table {
            let error = classify_fcm_error(status, retry_after.map(Duration::from_secs), &body);
            assert_eq!(kind(error.clone()), expected, "{status} {body} → {error}");
        }
    }

    #[test]
    fn the_detail_names_the_fcm_error_code() {
        let body = google_error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            json!([fcm_detail("UNREGISTERED")]),
        );
        let error = classify_fcm_error(404, None, &body);
        assert_eq!(
            error.to_string(),
            "device token no longer valid: FCM 404 UNREGISTERED: Requested entity was not found."
        );
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-02T09:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Mon, 02 Nov 2026 09:30:45 GMT", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // An absurd wait is cut to an hour instead of overflowing a clock.
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn a_service_account_without_a_usable_key_is_refused() {
        let account = json!({
            "project_id": "p", "client_email": "n@p.iam.gserviceaccount.com",
            "private_key": "not a key", "token_uri": "https://oauth2.googleapis.com/token",
        });
        let error = ServiceAccount::from_json(&account.to_string()).unwrap_err();
        assert!(error.to_string().contains("private_key"), "{error}");
    }
}
