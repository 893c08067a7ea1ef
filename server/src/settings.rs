//! All server configuration, in one place: built-in defaults, then an
//! optional TOML file named by `ONESTOP_CONFIG`, then environment variables
//! (names as in DESIGN.md: `DATABASE_URL`, `REDIS_URL`, `BIND_ADDR`, ...),
//! then [`Settings::validate`], which fails fast naming the variable.

use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use onestop_model::DEFAULT_DATABASE_URL;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Settings {
    /// sea-orm URL: `sqlite://…` or `postgres://…`.
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments (or tests) can
    /// share one Redis.
    pub redis_prefix: String,
    pub bind_addr: String,
    /// Where photos and PDFs are stored.
    pub media_dir: PathBuf,
    /// `local` (files under `media_dir`) or `s3` (the `s3_*` settings).
    pub media_store: String,
    pub s3_bucket: Option<String>,
    /// Base URL of an S3-compatible service; unset for AWS itself.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    #[serde(skip_serializing)]
    pub s3_access_key_id: Option<SecretString>,
    #[serde(skip_serializing)]
    pub s3_secret_access_key: Option<SecretString>,
    /// Largest photo accepted, in pixels (width × height, from its header).
    pub max_image_pixels: u64,
    /// How long an unfinished resumable upload is kept after its last
    /// chunk, and a finished one's record after it completed.
    pub upload_expiry_secs: u64,
    /// Thumbnails made at once; 0 means one per processor core.
    pub thumbnail_workers: usize,
    /// Seeds the demo accounts. Unset, it is on only for the embedded
    /// default database, so a production database never gets them by
    /// accident.
    pub demo_mode: Option<bool>,
    /// Another catalog file to seed instead of the shipped one.
    pub catalog_file: Option<PathBuf>,
    /// HMAC key for access tokens, at least 32 bytes. Unset, a random key is
    /// made at start (fine on one machine: apps refresh after a restart).
    #[serde(skip_serializing)]
    pub auth_signing_key: Option<SecretString>,
    /// Key of the blind index of resident registration numbers (any
    /// string of at least 32 bytes). Unset with the embedded database, a
    /// random key is kept in `KEY_DIR`.
    #[serde(skip_serializing)]
    pub rrn_index_key: Option<SecretString>,
    /// Key-encrypting key of stored resident registration numbers: 64 hex
    /// digits, kept outside the database. Unset with the embedded
    /// database, a random one is kept in `KEY_DIR`.
    #[serde(skip_serializing)]
    pub rrn_kek: Option<SecretString>,
    pub rrn_kek_id: String,
    /// The previous KEK while rotating to a new one.
    #[serde(skip_serializing)]
    pub rrn_kek_previous: Option<SecretString>,
    pub rrn_kek_previous_id: Option<String>,
    /// Where the embedded default keeps keys it made itself.
    pub key_dir: PathBuf,
    pub auth_issuer: String,
    pub auth_audience: String,
    pub access_token_ttl_secs: u64,
    /// Officials hold more, so their tokens live shorter.
    pub official_access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// No refresh extends a sign-in past this.
    pub refresh_family_ttl_secs: u64,
    pub max_upload_bytes: u64,
    pub max_json_bytes: u64,
    pub max_page_size: u64,
    /// Sign-in attempts per client address per minute (burst as given).
    pub token_rate_per_minute: u32,
    pub token_burst: u32,
    /// Uploads per account per minute.
    pub upload_rate_per_minute: u32,
    pub upload_burst: u32,
    /// Take the client address from `X-Forwarded-For` (behind a proxy only).
    pub trust_forwarded_for: bool,
    /// The proxies in front, comma-separated addresses or CIDR blocks
    /// (`10.0.0.0/8, 192.0.2.7`): with `TRUST_FORWARDED_FOR`, the client
    /// is the rightmost `X-Forwarded-For` address that is not one of them.
    pub trusted_proxies: String,
    /// Longest a client may take to send a request head, and longest a
    /// kept-alive connection may sit idle.
    pub header_read_timeout_secs: u64,
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How often the outbox relay looks for events when nothing woke it.
    pub outbox_poll_ms: u64,
    /// An event published this long ago that no notifier has finished (or
    /// held) since is published again: Redis may have lost it
    /// (`OUTBOX_REPUBLISH_AFTER_MS`).
    pub outbox_republish_after_ms: u64,
    /// Serve the Swagger UI at `/docs`. Unset, on only with the embedded
    /// database, so a production configuration does not show it.
    pub docs_enabled: Option<bool>,
    /// Browser origins allowed to call the API, comma-separated. Empty: no
    /// CORS headers at all (the phone apps need none).
    pub cors_allowed_origins: String,
    /// Longest a request may take, uploads excepted.
    pub request_timeout_secs: u64,
    /// Longest an upload request may take (slow phone networks).
    pub upload_timeout_secs: u64,
    /// Sign-in attempts per account per minute (burst as given), whatever
    /// address they come from. A budget, not a lockout: it refills.
    pub account_sign_in_per_minute: u32,
    pub account_sign_in_burst: u32,
    /// `text` or `json`.
    pub log_format: String,
    pub shutdown_grace_secs: u64,
    /// HMAC key that links the access records (any string of at least 32
    /// bytes), kept outside the database. Unset with the embedded
    /// database, a random key is kept in `KEY_DIR`.
    #[serde(skip_serializing)]
    pub access_log_key: Option<SecretString>,
    /// Stored with each record, naming the key that linked it.
    pub access_log_key_id: String,
    /// The previous key while rotating: records it linked still verify.
    #[serde(skip_serializing)]
    pub access_log_key_previous: Option<SecretString>,
    pub access_log_key_previous_id: Option<String>,
    /// A claim on a case lapses this long after it was made or renewed;
    /// then a colleague may decide or claim the case.
    pub claim_ttl_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_max_connections: 10,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_prefix: "onestop:".to_owned(),
            bind_addr: "127.0.0.1:8080".to_owned(),
            media_dir: PathBuf::from("./data/media"),
            media_store: "local".to_owned(),
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".to_owned(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            max_image_pixels: 100_000_000,
            upload_expiry_secs: 24 * 3600,
            thumbnail_workers: 0,
            demo_mode: None,
            catalog_file: None,
            auth_signing_key: None,
            rrn_index_key: None,
            rrn_kek: None,
            rrn_kek_id: "kek-1".to_owned(),
            rrn_kek_previous: None,
            rrn_kek_previous_id: None,
            key_dir: PathBuf::from("./data/keys"),
            auth_issuer: "onestop".to_owned(),
            auth_audience: "onestop-mobile".to_owned(),
            access_token_ttl_secs: 10 * 60,
            official_access_token_ttl_secs: 5 * 60,
            refresh_token_ttl_secs: 14 * 24 * 3600,
            refresh_family_ttl_secs: 60 * 24 * 3600,
            max_upload_bytes: 20 * 1024 * 1024,
            max_json_bytes: 256 * 1024,
            max_page_size: 100,
            token_rate_per_minute: 10,
            token_burst: 5,
            upload_rate_per_minute: 60,
            upload_burst: 20,
            trust_forwarded_for: false,
            trusted_proxies: String::new(),
            header_read_timeout_secs: 10,
            max_connections: 4096,
            outbox_poll_ms: 1000,
            outbox_republish_after_ms: 120_000,
            docs_enabled: None,
            cors_allowed_origins: String::new(),
            request_timeout_secs: 30,
            upload_timeout_secs: 600,
            account_sign_in_per_minute: 10,
            account_sign_in_burst: 10,
            log_format: "text".to_owned(),
            shutdown_grace_secs: 20,
            access_log_key: None,
            access_log_key_id: "alk-1".to_owned(),
            access_log_key_previous: None,
            access_log_key_previous_id: None,
            claim_ttl_secs: 8 * 3600,
        }
    }
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

impl Settings {
    /// Defaults, then the file named by `ONESTOP_CONFIG`, then the
    /// environment.
    pub fn load() -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Ok(path) = std::env::var("ONESTOP_CONFIG") {
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Settings = figment
            .merge(Env::raw().ignore(&["ONESTOP_CONFIG"]))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
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
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            return invalid("REDIS_URL", "must be a redis:// or rediss:// URL");
        }
        if self.bind_addr.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "BIND_ADDR",
                "must be an address with a port, e.g. 127.0.0.1:8080",
            );
        }
        if let Some(key) = &self.auth_signing_key {
            if key.expose_secret().len() < 32 {
                return invalid("AUTH_SIGNING_KEY", "must be at least 32 bytes");
            }
        } else if !self.uses_embedded_database() {
            return invalid(
                "AUTH_SIGNING_KEY",
                "must be set when the database is not the embedded default, so every server signs alike",
            );
        }
        match &self.rrn_index_key {
            Some(key) if key.expose_secret().len() < 32 => {
                return invalid("RRN_INDEX_KEY", "must be at least 32 bytes");
            }
            None if !self.uses_embedded_database() => {
                return invalid(
                    "RRN_INDEX_KEY",
                    "must be set when the database is not the embedded default, so every server finds the same people",
                );
            }
            _ => {}
        }
        match &self.rrn_kek {
            Some(key) if hex::decode(key.expose_secret().trim()).map(|k| k.len()) != Ok(32) => {
                return invalid("RRN_KEK", "must be 64 hexadecimal digits (32 bytes)");
            }
            None if !self.uses_embedded_database() => {
                return invalid(
                    "RRN_KEK",
                    "must be set when the database is not the embedded default; keep it outside the database",
                );
            }
            _ => {}
        }
        if self.rrn_kek_previous.is_some() != self.rrn_kek_previous_id.is_some() {
            return invalid("RRN_KEK_PREVIOUS", "goes together with RRN_KEK_PREVIOUS_ID");
        }
        if self.access_token_ttl_secs == 0 || self.official_access_token_ttl_secs == 0 {
            return invalid("ACCESS_TOKEN_TTL_SECS", "must be positive");
        }
        if self.refresh_family_ttl_secs < self.refresh_token_ttl_secs {
            return invalid(
                "REFRESH_FAMILY_TTL_SECS",
                "must not be shorter than REFRESH_TOKEN_TTL_SECS",
            );
        }
        if self.max_upload_bytes == 0 {
            return invalid("MAX_UPLOAD_BYTES", "must be positive");
        }
        match self.media_store.as_str() {
            "local" => {}
            "s3" if self.s3_bucket.as_deref().is_some_and(|b| !b.is_empty()) => {}
            "s3" => return invalid("S3_BUCKET", "must be set when MEDIA_STORE is s3"),
            _ => return invalid("MEDIA_STORE", "must be local or s3"),
        }
        if self.max_image_pixels == 0 {
            return invalid("MAX_IMAGE_PIXELS", "must be positive");
        }
        if self.upload_expiry_secs == 0 {
            return invalid("UPLOAD_EXPIRY_SECS", "must be positive");
        }
        if self.max_page_size == 0 || self.max_page_size > 500 {
            return invalid("MAX_PAGE_SIZE", "must be between 1 and 500");
        }
        if self.token_rate_per_minute == 0 || self.token_burst == 0 {
            return invalid("TOKEN_RATE_PER_MINUTE", "must be positive");
        }
        if self.upload_rate_per_minute == 0 || self.upload_burst == 0 {
            return invalid("UPLOAD_RATE_PER_MINUTE", "must be positive");
        }
        if self.account_sign_in_per_minute == 0 || self.account_sign_in_burst == 0 {
            return invalid("ACCOUNT_SIGN_IN_PER_MINUTE", "must be positive");
        }
        if self.request_timeout_secs == 0 || self.upload_timeout_secs == 0 {
            return invalid("REQUEST_TIMEOUT_SECS", "must be positive");
        }
        match self.trusted_proxy_networks() {
            Err(entry) => {
                return invalid(
                    "TRUSTED_PROXIES",
                    &format!("{entry} is not an IP address or CIDR block"),
                );
            }
            Ok(proxies) if proxies.is_empty() && self.trust_forwarded_for => {
                return invalid(
                    "TRUSTED_PROXIES",
                    "must list the proxies in front when TRUST_FORWARDED_FOR is set",
                );
            }
            Ok(_) => {}
        }
        if self.header_read_timeout_secs == 0 {
            return invalid("HEADER_READ_TIMEOUT_SECS", "must be positive");
        }
        if self.max_connections == 0 {
            return invalid("MAX_CONNECTIONS", "must be positive");
        }
        if let Some(origin) = self
            .cors_origins()
            .iter()
            .find(|o| !(o.starts_with("https://") || o.starts_with("http://")))
        {
            return invalid(
                "CORS_ALLOWED_ORIGINS",
                &format!("{origin} is not an http(s) origin"),
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid("LOG_FORMAT", "must be text or json");
        }
        match &self.access_log_key {
            Some(key) if key.expose_secret().len() < 32 => {
                return invalid("ACCESS_LOG_KEY", "must be at least 32 bytes");
            }
            None if !self.uses_embedded_database() => {
                return invalid(
                    "ACCESS_LOG_KEY",
                    "must be set when the database is not the embedded default; keep it outside the database",
                );
            }
            _ => {}
        }
        if self.access_log_key_id.trim().is_empty() {
            return invalid("ACCESS_LOG_KEY_ID", "must not be empty");
        }
        match (
            &self.access_log_key_previous,
            &self.access_log_key_previous_id,
        ) {
            (None, None) => {}
            (Some(key), Some(id)) => {
                if key.expose_secret().len() < 32 {
                    return invalid("ACCESS_LOG_KEY_PREVIOUS", "must be at least 32 bytes");
                }
                if id.trim().is_empty() || *id == self.access_log_key_id {
                    return invalid(
                        "ACCESS_LOG_KEY_PREVIOUS_ID",
                        "must name the previous key, not the current one",
                    );
                }
            }
            _ => {
                return invalid(
                    "ACCESS_LOG_KEY_PREVIOUS",
                    "goes together with ACCESS_LOG_KEY_PREVIOUS_ID",
                );
            }
        }
        if self.claim_ttl_secs == 0 {
            return invalid("CLAIM_TTL_SECS", "must be positive");
        }
        Ok(())
    }

    pub fn uses_embedded_database(&self) -> bool {
        self.database_url == DEFAULT_DATABASE_URL
    }

    pub fn docs_served(&self) -> bool {
        self.docs_enabled
            .unwrap_or_else(|| self.uses_embedded_database())
    }

    pub fn cors_origins(&self) -> Vec<String> {
        self.cors_allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `TRUSTED_PROXIES` as networks; an entry that is neither an address
    /// nor a CIDR block is returned as the error.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| entry.to_owned())
            })
            .collect()
    }

    pub fn demo_enabled(&self) -> bool {
        self.demo_mode
            .unwrap_or_else(|| self.uses_embedded_database())
    }

    pub fn outbox_poll_interval(&self) -> Duration {
        Duration::from_millis(self.outbox_poll_ms.max(10))
    }

    pub fn outbox_republish_after(&self) -> Duration {
        Duration::from_millis(self.outbox_republish_after_ms.max(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_accounts_only_come_with_the_embedded_database_unless_asked() {
        let embedded = Settings::default();
        assert!(embedded.demo_enabled());
        let production = Settings {
            database_url: "postgres://db/onestop".into(),
            ..Settings::default()
        };
        assert!(!production.demo_enabled());
    }

    #[test]
    fn a_shared_database_needs_a_signing_key() {
        let settings = Settings {
            database_url: "postgres://db/onestop".into(),
            ..Settings::default()
        };
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().starts_with("AUTH_SIGNING_KEY"), "{err}");
        let settings = Settings {
            auth_signing_key: Some(SecretString::from("k".repeat(32))),
            ..settings
        };
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().starts_with("RRN_INDEX_KEY"), "{err}");
    }

    #[test]
    fn trusting_forwarded_addresses_needs_the_proxies_named() {
        let settings = Settings {
            trust_forwarded_for: true,
            ..Settings::default()
        };
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().starts_with("TRUSTED_PROXIES"), "{err}");
        let settings = Settings {
            trusted_proxies: "10.0.0.0/8, 192.0.2.7 ,::1".into(),
            ..settings
        };
        settings.validate().unwrap();
        assert_eq!(settings.trusted_proxy_networks().unwrap().len(), 3);
        let settings = Settings {
            trusted_proxies: "10.0.0.0/8, proxy.internal".into(),
            ..settings
        };
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().contains("proxy.internal"), "{err}");
    }

    #[test]
    fn a_bad_bind_address_names_its_variable() {
        let settings = Settings {
            bind_addr: "localhost".into(),
            ..Settings::default()
        };
        assert!(settings
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("BIND_ADDR"));
    }

    #[test]
    fn a_shared_database_needs_an_access_log_key() {
        let secret = |c: &str| Some(SecretString::from(c.repeat(32)));
        let settings = Settings {
            database_url: "postgres://db/onestop".into(),
            auth_signing_key: secret("a"),
            rrn_index_key: secret("b"),
            rrn_kek: Some(SecretString::from("0".repeat(64))),
            ..Settings::default()
        };
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().starts_with("ACCESS_LOG_KEY:"), "{err}");
        let short = Settings {
            access_log_key: Some(SecretString::from("short")),
            ..settings.clone()
        };
        let err = short.validate().unwrap_err();
        assert!(err.to_string().starts_with("ACCESS_LOG_KEY:"), "{err}");
        let keyed = Settings {
            access_log_key: secret("c"),
            ..settings
        };
        keyed.validate().unwrap();
        let half_rotation = Settings {
            access_log_key_previous: secret("d"),
            ..keyed.clone()
        };
        let err = half_rotation.validate().unwrap_err();
        assert!(
            err.to_string().starts_with("ACCESS_LOG_KEY_PREVIOUS"),
            "{err}"
        );
        let no_claims = Settings {
            claim_ttl_secs: 0,
            ..keyed
        };
        let err = no_claims.validate().unwrap_err();
        assert!(err.to_string().starts_with("CLAIM_TTL_SECS"), "{err}");
    }
}
