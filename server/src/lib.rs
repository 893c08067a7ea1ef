//! The One-Stop Mobile server: the HTTP API the phone and tablet apps use,
//! the transactional outbox and its relay to Redis.

pub mod access;
pub mod access_log;
pub mod api;
pub mod app;
pub mod auth;
pub mod body_limit;
pub mod cases;
pub mod client_address;
pub mod demo;
pub mod eligibility;
pub mod error;
pub mod facts;
pub mod http_guard;
pub mod idempotency;
pub mod identity;
pub mod media;
pub mod notification;
pub mod ops;
pub mod outbox;
pub mod pagination;
pub mod rate_limit;
pub use onestop_runtime::redis_link;
pub mod registry;
pub mod routing;
pub mod serving;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod uploads;
pub mod vault;

pub use app::Application;
pub use settings::Settings;
