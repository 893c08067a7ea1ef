//! Who is calling: password checks, signed access tokens, rotating refresh
//! tokens, and the bearer scheme every protected operation takes.

mod passwords;
mod principal;
mod sessions;
mod tokens;

pub use passwords::{hash_password, verify_password};
pub use principal::{BearerAuth, Principal};
pub use sessions::{disable_account, end_all_sessions, session_is_live, Sessions, TokenPair};
pub use tokens::TokenKeys;
