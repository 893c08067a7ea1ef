//! The notifier against real Redis and PostgreSQL, with FCM played by a
//! local server that checks the OAuth2 exchange and the message shape.

mod faults;
mod helpers;
mod operations;
mod pushes;
mod trouble;
