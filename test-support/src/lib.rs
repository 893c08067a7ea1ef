//! Local stand-ins for what the tests would otherwise need from outside:
//!
//! - [`FakeFcm`]: an FCM HTTP v1 server on `127.0.0.1:0`, with the OAuth2
//!   JWT-bearer token endpoint in front of it, that records the messages it
//!   accepts and can be told to fail;
//! - [`RedisProxy`]: a TCP proxy to a real Redis that can be cut and
//!   restored, to see what happens while Redis is unreachable without
//!   stopping the Redis other tests use.

mod fcm;
mod redis_proxy;

pub use fcm::{FakeFcm, TEST_CLIENT_EMAIL, TEST_PROJECT_ID, TEST_PUBLIC_KEY_PEM};
pub use redis_proxy::RedisProxy;
