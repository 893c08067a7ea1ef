//! One lazily made, self-healing connection to Redis. The server starts and
//! serves while Redis is down: the outbox keeps events until it is back.

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

pub struct RedisLink {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    pub prefix: String,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisLink {
    pub fn new(url: &str, prefix: &str) -> Result<Self, RedisLinkError> {
        Ok(RedisLink {
            client: redis::Client::open(url)?,
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
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
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
