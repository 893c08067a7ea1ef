//! End-to-end tests of the server over real sockets, against real
//! PostgreSQL, SQLite and Redis.

mod access_chain;
mod auth;
mod bad_input;
mod catalog_names;
mod edge;
mod filing;
mod helpers;
mod idempotency;
mod identifiers;
mod isolation;
mod journey;
mod one_stop;
mod operations;
mod redis_down;
mod security;
mod uploads_fixtures;
mod uploads_orphans;
mod uploads_photos;
mod uploads_s3;
mod uploads_tus;
