//! Structured logs and Prometheus metrics.

use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

/// What is logged when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,sea_orm=warn,poem=warn";

/// Installs the log subscriber once; later calls (tests) do nothing.
pub fn init_tracing(format: &str) {
    onestop_runtime::init_tracing(format, DEFAULT_LOG_FILTER);
}

/// The process-wide metrics recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    onestop_runtime::metrics::recorder(|builder| builder)
}

/// Logs every request with its status and time, and counts it.
pub struct RequestLog;

impl<E: Endpoint> Middleware<E> for RequestLog {
    type Output = RequestLogEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequestLogEndpoint(ep)
    }
}

pub struct RequestLogEndpoint<E>(E);

impl<E: Endpoint> Endpoint for RequestLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let response = match self.0.call(request).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        };
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        metrics::counter!("http_requests_total", "method" => method.clone(), "status" => status.to_string())
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "method" => method.clone())
            .record(elapsed.as_secs_f64());
        if status >= 500 {
            tracing::error!(%method, %path, status, elapsed_ms = elapsed.as_millis() as u64, "request");
        } else {
            tracing::info!(%method, %path, status, elapsed_ms = elapsed.as_millis() as u64, "request");
        }
        Ok(response)
    }
}
