//! The small operations endpoint: `GET /healthz` and `GET /metrics`.

use std::future::Future;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::web::Data;
use poem::{get, handler, EndpointExt, IntoResponse, Response, Route, Server};
use serde_json::json;

use crate::error::NotifierError;
use crate::worker::Notifier;

pub struct OpsServer {
    acceptor: TcpAcceptor,
    notifier: Notifier,
    metrics: PrometheusHandle,
}

impl OpsServer {
    /// Binds `addr` (port 0 picks a free one).
    pub async fn bind(
        addr: &str,
        notifier: Notifier,
        metrics: PrometheusHandle,
    ) -> Result<Self, NotifierError> {
        let acceptor = TcpListener::bind(addr.to_owned())
            .into_acceptor()
            .await
            .map_err(|source| NotifierError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(OpsServer {
            acceptor,
            notifier,
            metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .unwrap_or_default()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let metrics = self.metrics.clone();
        // Histograms are summaries over a window; upkeep keeps them fresh.
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
        let app = Route::new()
            .at("/healthz", get(healthz))
            .at("/metrics", get(render_metrics))
            .data(self.notifier)
            .data(self.metrics);
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(2)))
            .await;
        upkeep.abort();
        served
    }
}

#[handler]
fn healthz(notifier: Data<&Notifier>) -> Response {
    let seconds_since_success = notifier.last_success().map(|at| at.elapsed().as_secs());
    let healthy = notifier.is_healthy();
    let body = json!({
        "status": if healthy { "ok" } else { "stalled" },
        "consumer": notifier.settings().consumer,
        "seconds_since_last_batch": seconds_since_success,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

#[handler]
fn render_metrics(metrics: Data<&PrometheusHandle>) -> impl IntoResponse {
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}
