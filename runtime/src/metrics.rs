//! The process's one Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds, for anything timed in milliseconds to
/// seconds: requests, pushes, round trips.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder, installed by the first call with
/// [`LATENCY_BUCKETS`] for every histogram and what `configure` adds (the
/// buckets of particular metrics). Later calls return it as it is.
pub fn recorder(
    configure: impl FnOnce(PrometheusBuilder) -> PrometheusBuilder,
) -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("the bucket list is not empty");
        configure(builder)
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

#[cfg(test)]
mod tests {
    use super::recorder;

    #[test]
    fn the_recorder_is_installed_once() {
        let first = recorder(|builder| builder);
        let second = recorder(|_| unreachable!("the recorder is already installed"));
        assert!(std::ptr::eq(first, second));
    }
}
