//! The Prometheus recorder's defaults. Each binary installs one recorder,
//! once, and adds the buckets of its own metrics.

use metrics_exporter_prometheus::PrometheusBuilder;

/// Histogram buckets, in seconds, for anything timed in milliseconds to
/// seconds: requests, pushes, round trips.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A recorder builder with [`LATENCY_BUCKETS`] for every histogram.
pub fn prometheus() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .expect("the bucket list is not empty")
}
