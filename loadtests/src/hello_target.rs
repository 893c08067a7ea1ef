//! The reads bench's reference: one poem-openapi operation answering a
//! small JSON object, served by the server's own connection loop
//! (`onestop_server::serving`) with its default limits, on a tokio
//! runtime like the server's. No middleware, no database: what a read
//! costs before the API does anything.
//!
//! ```sh
//! BIND_ADDR=127.0.0.1:18090 ./target/release/hello-target
//! curl http://127.0.0.1:18090/v1/hello
//! ```

use std::time::Duration;

use onestop_server::serving::{serve, ConnectionLimits};
use onestop_server::Settings;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService};

#[derive(Object)]
struct Hello {
    message: String,
    version: u32,
}

#[derive(ApiResponse)]
enum HelloAnswer {
    /// The greeting.
    #[oai(status = 200)]
    Ok(Json<Hello>),
}

struct HelloApi;

#[OpenApi(prefix_path = "/v1")]
impl HelloApi {
    /// A small JSON object.
    #[oai(path = "/hello", method = "get", operation_id = "getHello")]
    async fn hello(&self) -> HelloAnswer {
        HelloAnswer::Ok(Json(Hello {
            message: "hello".to_owned(),
            version: 1,
        }))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:18090".to_owned());
    let defaults = Settings::default();
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let api = OpenApiService::new(HelloApi, "hello", "1").server("/");
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(defaults.header_read_timeout_secs),
        max_connections: defaults.max_connections,
        grace: Duration::from_secs(1),
    };
    serve(listener, api, limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
