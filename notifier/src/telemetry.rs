//! Structured logs and Prometheus metrics.

use metrics_exporter_prometheus::{Matcher, PrometheusHandle};

/// What is logged when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,sea_orm=warn,poem=warn,a2=warn";

/// Installs the log subscriber once (JSON lines with `json`); later calls
/// do nothing.
pub fn init_tracing(format: &str) {
    onestop_runtime::init_tracing(format, DEFAULT_LOG_FILTER);
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
    onestop_runtime::metrics::recorder(|builder| {
        builder
            .set_buckets_for_metric(
                Matcher::Full("notifier_decision_to_push_seconds".into()),
                &[
                    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
                ],
            )
            .expect("the bucket list is not empty")
    })
}
