//! What the server and the notifier share: the database entities, the
//! catalog seed, the event schema on the Redis stream, and the vocabulary
//! (roles, statuses, platforms, locales) both speak.

pub mod catalog;
pub mod entities;
pub mod events;
pub mod locale;
mod transaction;
mod vocabulary;

pub use events::{EventKind, StreamEvent};

/// The database both the server and the notifier use when `DATABASE_URL`
/// is not set: the embedded default's SQLite file.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/onestop.db?mode=rwc";
pub use locale::Locale;
pub use transaction::begin_write;
pub use vocabulary::{CaseStatus, Platform, Role, SubmissionKind};
