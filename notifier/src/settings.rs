//! All notifier configuration, in one place: built-in defaults, then an
//! optional TOML file named by `NOTIFIER_CONFIG` (keys are the field names
//! below, e.g. `batch_size = 50`), then environment variables, then
//! [`Settings::validate`], which fails fast naming the variable.
//!
//! Variables shared with the server keep their names (`DATABASE_URL`,
//! `REDIS_URL`, `REDIS_PREFIX`, `FCM_*`, `APNS_*`, `LOG_FORMAT`); the
//! notifier's own carry a `NOTIFIER_` prefix (`NOTIFIER_BATCH_SIZE` sets
//! `batch_size`).
//!
//! Settings hold paths to key files, never keys: the gateways read the key
//! material into `secrecy` types when they are built.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use onestop_model::DEFAULT_DATABASE_URL;

/// Unprefixed variables the notifier shares with the server.
const SHARED: [&str; 12] = [
    "database_url",
    "database_max_connections",
    "redis_url",
    "redis_prefix",
    "fcm_service_account",
    "fcm_endpoint",
    "apns_key_path",
    "apns_key_id",
    "apns_team_id",
    "apns_topic",
    "apns_env",
    "log_format",
];

#[derive(Clone, Deserialize, Serialize)]
pub struct Settings {
    /// sea-orm URL of the server's database: `sqlite://…` or `postgres://…`.
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: String,
    /// Prefix of every Redis key; the same as the server's.
    pub redis_prefix: String,
    /// Google service-account JSON. Unset: Android pushes go to the log.
    pub fcm_service_account: Option<PathBuf>,
    /// Base URL of the FCM HTTP v1 API.
    pub fcm_endpoint: String,
    /// The `.p8` token key. With the three below unset: iOS pushes go to
    /// the log.
    pub apns_key_path: Option<PathBuf>,
    pub apns_key_id: Option<String>,
    pub apns_team_id: Option<String>,
    /// The app's bundle id.
    pub apns_topic: Option<String>,
    /// `production` or `sandbox`.
    pub apns_env: String,
    /// Serves `/metrics` and `/healthz` (`NOTIFIER_METRICS_ADDR`).
    pub metrics_addr: String,
    /// This process's name in the consumer group (`NOTIFIER_CONSUMER`).
    /// Unique per process, or two notifiers would share pending entries.
    pub consumer: String,
    /// Entries read per step (`NOTIFIER_BATCH_SIZE`).
    pub batch_size: usize,
    /// How long a read waits for new entries (`NOTIFIER_BLOCK_MS`).
    pub block_ms: u64,
    /// Entries pending this long are taken over from their consumer, dead
    /// or retrying (`NOTIFIER_RECLAIM_IDLE_MS`).
    pub reclaim_idle_ms: u64,
    /// An entry delivered this many times without success goes to the
    /// dead-letter stream (`NOTIFIER_MAX_DELIVERIES`).
    pub max_deliveries: u64,
    /// Pushes in flight at once, per provider (`NOTIFIER_CONCURRENCY`).
    pub concurrency: usize,
    /// First pause before a push is retried; it doubles with every
    /// delivery, with jitter, up to `retry_max_ms`, and is never shorter
    /// than the provider's Retry-After (`NOTIFIER_RETRY_BASE_MS`).
    pub retry_base_ms: u64,
    /// Longest pause between two deliveries (`NOTIFIER_RETRY_MAX_MS`).
    pub retry_max_ms: u64,
    /// How often the stream is trimmed of finished entries and the
    /// stream gauges are measured (`NOTIFIER_MAINTENANCE_MS`).
    pub maintenance_ms: u64,
    /// Timeout of one request to FCM or APNs (`NOTIFIER_PUSH_TIMEOUT_SECS`).
    pub push_timeout_secs: u64,
    /// How long a stop waits for the batch in flight
    /// (`NOTIFIER_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace_secs: u64,
    /// `text` or `json`.
    pub log_format: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_max_connections: 5,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_prefix: "onestop:".to_owned(),
            fcm_service_account: None,
            fcm_endpoint: "https://fcm.googleapis.com".to_owned(),
            apns_key_path: None,
            apns_key_id: None,
            apns_team_id: None,
            apns_topic: None,
            apns_env: "production".to_owned(),
            metrics_addr: "127.0.0.1:9464".to_owned(),
            consumer: default_consumer_name(),
            batch_size: 100,
            block_ms: 2000,
            reclaim_idle_ms: 30_000,
            max_deliveries: 10,
            concurrency: 64,
            retry_base_ms: 1000,
            retry_max_ms: 300_000,
            maintenance_ms: 5000,
            push_timeout_secs: 10,
            shutdown_grace_secs: 20,
            log_format: "text".to_owned(),
        }
    }
}

/// `hostname-pid-random`: stable enough to read in `XINFO CONSUMERS`,
/// unique even when two notifiers share a host and a pid namespace.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "notifier".to_owned());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("{variable}: {problem}")]
    Invalid {
        variable: &'static str,
        problem: String,
    },
}

/// Which APNs endpoint to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

/// Everything the APNs gateway needs, present only when all of it is set.
#[derive(Clone, Debug)]
pub struct ApnsSettings {
    pub key_path: PathBuf,
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
    pub environment: ApnsEnvironment,
}

impl Settings {
    /// Defaults, then the file named by `NOTIFIER_CONFIG`, then the
    /// environment; validated.
    pub fn load() -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Ok(path) = std::env::var("NOTIFIER_CONFIG") {
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::raw().filter_map(|key| {
            let key = key.as_str().to_ascii_lowercase();
            if key == "notifier_config" {
                None
            } else if let Some(own) = key.strip_prefix("notifier_") {
                Some(own.to_owned().into())
            } else if SHARED.contains(&key.as_str()) {
                Some(key.into())
            } else {
                None
            }
        });
        let mut settings: Settings = figment.merge(env).extract().map_err(Box::new)?;
        settings.normalise();
        settings.validate()?;
        Ok(settings)
    }

    /// An empty variable means unset.
    fn normalise(&mut self) {
        fn none_if_empty<T: AsRef<Path>>(value: &mut Option<T>) {
            if value
                .as_ref()
                .is_some_and(|v| v.as_ref().as_os_str().is_empty())
            {
                *value = None;
            }
        }
        none_if_empty(&mut self.fcm_service_account);
        none_if_empty(&mut self.apns_key_path);
        for value in [
            &mut self.apns_key_id,
            &mut self.apns_team_id,
            &mut self.apns_topic,
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |variable, problem: &str| {
            Err(SettingsError::Invalid {
                variable,
                problem: problem.to_owned(),
            })
        };
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return invalid("DATABASE_URL", "must be a sqlite: or postgres:// URL");
        }
        if self.database_max_connections == 0 {
            return invalid("DATABASE_MAX_CONNECTIONS", "must be positive");
        }
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            return invalid("REDIS_URL", "must be a redis:// or rediss:// URL");
        }
        if self.redis_prefix.is_empty() {
            return invalid("REDIS_PREFIX", "must not be empty");
        }
        if let Some(path) = &self.fcm_service_account {
            if let Err(problem) = crate::gateway::ServiceAccount::from_file(path) {
                return invalid("FCM_SERVICE_ACCOUNT", &problem.to_string());
            }
        }
        if !(self.fcm_endpoint.starts_with("https://") || self.fcm_endpoint.starts_with("http://"))
        {
            return invalid("FCM_ENDPOINT", "must be an http(s):// URL");
        }
        if !matches!(self.apns_env.as_str(), "production" | "sandbox") {
            return invalid("APNS_ENV", "must be production or sandbox");
        }
        let apns = [
            ("APNS_KEY_PATH", self.apns_key_path.is_some()),
            ("APNS_KEY_ID", self.apns_key_id.is_some()),
            ("APNS_TEAM_ID", self.apns_team_id.is_some()),
            ("APNS_TOPIC", self.apns_topic.is_some()),
        ];
        if apns.iter().any(|(_, set)| *set) {
            if let Some((variable, _)) = apns.iter().find(|(_, set)| !*set) {
                return invalid(
                    variable,
                    "must be set with the other APNS_ variables (all four, or none for the log gateway)",
                );
            }
        }
        if let Some(path) = &self.apns_key_path {
            match std::fs::read_to_string(path) {
                Ok(text) if text.contains("-----BEGIN PRIVATE KEY-----") => {}
                Ok(_) => {
                    return invalid(
                        "APNS_KEY_PATH",
                        "is not a PKCS#8 PEM key (the .p8 file from Apple)",
                    )
                }
                Err(error) => {
                    return invalid(
                        "APNS_KEY_PATH",
                        &format!("cannot be read ({}): {error}", path.display()),
                    )
                }
            }
        }
        if self.metrics_addr.parse::<SocketAddr>().is_err() {
            return invalid(
                "NOTIFIER_METRICS_ADDR",
                "must be an address with a port, e.g. 127.0.0.1:9464",
            );
        }
        if self.consumer.trim().is_empty() {
            return invalid("NOTIFIER_CONSUMER", "must not be empty");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return invalid("NOTIFIER_BATCH_SIZE", "must be between 1 and 10000");
        }
        // BLOCK 0 would wait forever and never look at stale entries.
        if self.block_ms == 0 {
            return invalid("NOTIFIER_BLOCK_MS", "must be positive");
        }
        if self.reclaim_idle_ms == 0 {
            return invalid("NOTIFIER_RECLAIM_IDLE_MS", "must be positive");
        }
        if self.max_deliveries == 0 {
            return invalid("NOTIFIER_MAX_DELIVERIES", "must be positive");
        }
        if self.concurrency == 0 {
            return invalid("NOTIFIER_CONCURRENCY", "must be positive");
        }
        if self.retry_base_ms == 0 {
            return invalid("NOTIFIER_RETRY_BASE_MS", "must be positive");
        }
        if self.retry_max_ms < self.retry_base_ms {
            return invalid(
                "NOTIFIER_RETRY_MAX_MS",
                "must be at least NOTIFIER_RETRY_BASE_MS",
            );
        }
        if self.maintenance_ms == 0 {
            return invalid("NOTIFIER_MAINTENANCE_MS", "must be positive");
        }
        if self.push_timeout_secs == 0 {
            return invalid("NOTIFIER_PUSH_TIMEOUT_SECS", "must be positive");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid("LOG_FORMAT", "must be text or json");
        }
        Ok(())
    }

    /// The APNs settings when all four variables are set.
    pub fn apns(&self) -> Option<ApnsSettings> {
        Some(ApnsSettings {
            key_path: self.apns_key_path.clone()?,
            key_id: self.apns_key_id.clone()?,
            team_id: self.apns_team_id.clone()?,
            topic: self.apns_topic.clone()?,
            environment: if self.apns_env == "sandbox" {
                ApnsEnvironment::Sandbox
            } else {
                ApnsEnvironment::Production
            },
        })
    }

    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }

    pub fn reclaim_idle(&self) -> Duration {
        Duration::from_millis(self.reclaim_idle_ms)
    }

    /// The pause before delivery number `deliveries + 1`: exponential in
    /// the deliveries so far, capped, and jittered into its upper half so
    /// that notifiers retrying together spread out. `unit` in `[0, 1]` is
    /// the jitter (random in the worker).
    pub fn retry_delay(&self, deliveries: u64, unit: f64) -> Duration {
        let exponent = deliveries.saturating_sub(1).min(32) as u32;
        let full = self
            .retry_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.retry_max_ms);
        let half = full / 2;
        Duration::from_millis(half + ((full - half) as f64 * unit.clamp(0.0, 1.0)) as u64)
    }

    pub fn maintenance(&self) -> Duration {
        Duration::from_millis(self.maintenance_ms)
    }

    pub fn push_timeout(&self) -> Duration {
        Duration::from_secs(self.push_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Written by hand so passwords inside URLs never reach a log.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("fcm_service_account", &self.fcm_service_account)
            .field("fcm_endpoint", &self.fcm_endpoint)
            .field("apns_key_path", &self.apns_key_path)
            .field("apns_key_id", &self.apns_key_id)
            .field("apns_team_id", &self.apns_team_id)
            .field("apns_topic", &self.apns_topic)
            .field("apns_env", &self.apns_env)
            .field("metrics_addr", &self.metrics_addr)
            .field("consumer", &self.consumer)
            .field("batch_size", &self.batch_size)
            .field("block_ms", &self.block_ms)
            .field("reclaim_idle_ms", &self.reclaim_idle_ms)
            .field("max_deliveries", &self.max_deliveries)
            .field("concurrency", &self.concurrency)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("maintenance_ms", &self.maintenance_ms)
            .field("push_timeout_secs", &self.push_timeout_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Settings::default().validate().unwrap();
        assert_eq!(Settings::default().metrics_addr, "127.0.0.1:9464");
    }

    #[test]
    fn a_partial_apns_configuration_names_the_missing_variable() {
        let settings = Settings {
            apns_key_id: Some("ABC123DEFG".into()),
            apns_team_id: Some("TEAM123456".into()),
            ..Settings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.starts_with("APNS_KEY_PATH"), "{error}");
    }

    #[test]
    fn a_missing_service_account_file_names_its_variable() {
        let settings = Settings {
            fcm_service_account: Some("/nonexistent/service-account.json".into()),
            ..Settings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.starts_with("FCM_SERVICE_ACCOUNT"), "{error}");
    }

    #[test]
    fn a_read_that_would_block_forever_is_refused() {
        let settings = Settings {
            block_ms: 0,
            ..Settings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.starts_with("NOTIFIER_BLOCK_MS"), "{error}");
    }

    #[test]
    fn passwords_in_urls_are_not_printed() {
        let settings = Settings {
            database_url: "postgres://notifier:hunter2@db:5432/onestop".into(),
            redis_url: "redis://:s3cret@cache:6379".into(),
            ..Settings::default()
        };
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("s3cret"),
            "{printed}"
        );
        assert!(printed.contains("postgres://notifier:***@db:5432/onestop"));
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        let settings = Settings {
            retry_base_ms: 1000,
            retry_max_ms: 60_000,
            ..Settings::default()
        };
        let ms = |n, unit| settings.retry_delay(n, unit).as_millis();
        assert_eq!((ms(1, 0.0), ms(1, 1.0)), (500, 1000));
        assert_eq!((ms(2, 0.0), ms(2, 1.0)), (1000, 2000));
        assert_eq!((ms(4, 0.0), ms(4, 1.0)), (4000, 8000));
        assert_eq!((ms(30, 0.0), ms(30, 1.0)), (30_000, 60_000));
        assert_eq!(ms(u64::MAX, 1.0), 60_000);
    }

    #[test]
    fn consumer_names_differ_between_processes_on_one_host() {
        assert_ne!(default_consumer_name(), default_consumer_name());
    }
}
