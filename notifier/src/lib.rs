//! The notifier: reads events from the Redis stream as one consumer of a
//! group and pushes them to phones, through FCM HTTP v1 for Android and
//! APNs for iOS (or the log, for a platform without credentials).
//!
//! ```no_run
//! # async fn example() -> Result<(), onestop_notifier::NotifierError> {
//! use onestop_notifier::{Notifier, Settings};
//! let notifier = Notifier::build(Settings::load()?).await?;
//! let outcome = notifier.process_batch().await?; // one step, for tests
//! # Ok(()) }
//! ```

pub mod dead_letters;
pub mod error;
pub mod gateway;
pub mod ops;
pub mod payload;
pub mod settings;
pub mod telemetry;
pub mod worker;

pub use error::NotifierError;
pub use gateway::{Delivered, PushError, PushGateway, PushMessage};
pub use payload::{apns_payload, apns_request, fcm_message, RenderedPush};
pub use settings::Settings;
pub use worker::{BatchOutcome, Gateways, Notifier};
