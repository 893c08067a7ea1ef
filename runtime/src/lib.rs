//! What the server and the notifier binaries both need to run: the
//! shutdown signal, the log subscriber, the one metrics recorder,
//! an error printed with its causes, and a self-healing Redis link.
//!
//! ```no_run
//! # async fn example() {
//! onestop_runtime::init_tracing("json", "info");
//! // … start the work, then:
//! onestop_runtime::shutdown_signal().await;
//! # }
//! ```

mod error_chain;
pub mod metrics;
pub mod redis_link;
mod shutdown;
mod tracing_setup;

pub use error_chain::ErrorChain;
pub use shutdown::shutdown_signal;
pub use tracing_setup::init_tracing;
