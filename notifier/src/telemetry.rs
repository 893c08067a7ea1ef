//! Structured logs and Prometheus metrics.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber once (JSON lines with `json`); later calls
/// do nothing.
pub fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,poem=warn,a2=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide metrics recorder, installed on first use.
///
/// - `notifier_events_consumed_total{kind}`
/// - `notifier_pushes_total{provider, outcome}`
/// - `notifier_push_latency_seconds{provider}` (histogram)
/// - `notifier_decision_to_push_seconds{kind}` (histogram: from the event's
///   `occurred_at` to the provider accepting the push)
/// - `notifier_dead_letters_total{reason}`, `notifier_batch_errors_total`
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("notifier_decision_to_push_seconds".into()),
                    &[
                        0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
                    ],
                )
            })
            .expect("bucket lists are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}
