//! One lazily made, self-healing connection to Redis. It is made on first
//! use, and made again after [`RedisLink::reset`], so a process starts and
//! keeps working while Redis is down and picks it up once it is back.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum RedisLinkError {
    #[error("redis is unreachable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// How long a connection waits for Redis, and how hard it tries again
/// before a command fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisLinkConfig {
    /// Longest wait for the answer to one command.
    pub response_timeout: Duration,
    /// Reconnections tried within one command before it fails.
    pub retries: usize,
    /// Longest pause between two reconnections.
    pub max_delay: Duration,
}

impl Default for RedisLinkConfig {
    /// For short commands: five seconds for an answer, two reconnections
    /// at most two seconds apart.
    fn default() -> Self {
        RedisLinkConfig {
            response_timeout: Duration::from_secs(5),
            retries: 2,
            max_delay: Duration::from_secs(2),
        }
    }
}

pub struct RedisLink {
    client: redis::Client,
    config: RedisLinkConfig,
    connection: Mutex<Option<ConnectionManager>>,
    /// Prefix of every Redis key of this deployment.
    pub prefix: String,
}

/// Longest wait for a connection to be made (the whole attempt may take
/// twice as long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisLink {
    /// A link with the [default](RedisLinkConfig::default) configuration.
    /// Nothing is connected yet.
    pub fn new(url: &str, prefix: &str) -> Result<Self, RedisLinkError> {
        Self::with_config(url, prefix, RedisLinkConfig::default())
    }

    pub fn with_config(
        url: &str,
        prefix: &str,
        config: RedisLinkConfig,
    ) -> Result<Self, RedisLinkError> {
        Ok(RedisLink {
            client: redis::Client::open(url)?,
            config,
            connection: Mutex::new(None),
            prefix: prefix.to_owned(),
        })
    }

    /// A connection, made on first use and after it was given up on.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisLinkError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.config.response_timeout))
            .set_number_of_retries(self.config.retries)
            .set_max_delay(self.config.max_delay);
        let connection = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| RedisLinkError::Timeout(CONNECT_TIMEOUT * 2))??;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets the connection after an error, so the next use makes a new one.
    pub async fn reset(&self) {
        *self.connection.lock().await = None;
    }

    /// `PING`, answered within two seconds; a link that fails it is reset.
    pub async fn ping(&self) -> Result<(), RedisLinkError> {
        let mut connection = self.connection().await?;
        let answer = tokio::time::timeout(
            CONNECT_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                self.reset().await;
                Err(error.into())
            }
            Err(_) => {
                self.reset().await;
                Err(RedisLinkError::Timeout(CONNECT_TIMEOUT))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_link_to_nowhere_fails_and_tries_again_on_the_next_use() {
        // Nothing listens on port 1.
        let link = RedisLink::new("redis://127.0.0.1:1", "test:").unwrap();
        assert!(link.connection().await.is_err());
        assert!(link.ping().await.is_err());
        assert!(link.connection.lock().await.is_none());
    }

    #[test]
    fn a_malformed_url_is_refused_at_once() {
        assert!(matches!(
            RedisLink::new("not a url", "test:"),
            Err(RedisLinkError::Redis(_))
        ));
    }
}
