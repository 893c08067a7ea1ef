//! Accepting connections and speaking HTTP/1.1 on them, with the bounds a
//! public address needs.
//!
//! poem's own server gives no way to bound the time a client takes to
//! send its request head (hyper's timer is not set, so its header timeout
//! never runs), nor the number of connections, and it also answers
//! HTTP/2 without TLS (h2c), which the apps never speak. This loop hands
//! each connection to hyper's HTTP/1.1 server with a timer, so:
//!
//! - a request head must arrive whole within `header_read_timeout`, and an
//!   idle keep-alive connection is closed after the same time (hyper runs
//!   the head timer from the moment it waits for the next request);
//! - a head is at most [`MAX_HEAD_BYTES`] in at most [`MAX_HEADERS`]
//!   fields;
//! - at most `max_connections` are open; past that, new ones wait in the
//!   kernel's backlog;
//! - h2c is not served: the HTTP/2 preface is a malformed HTTP/1 request.
//!
//! TLS and HTTP/2 to the phones are the reverse proxy's job.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt, IntoEndpoint};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Fields in one request head; phones send about a dozen. Past this hyper
/// answers 431 itself; below it, the API's own tighter check answers with
/// a problem ([`crate::http_guard`]).
pub const MAX_HEADERS: usize = 100;
/// Bytes of one request head (and hyper's read buffer, so also the
/// largest piece a body arrives in).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// How long requests in flight may finish after the stop signal.
    pub grace: Duration,
}

/// Serves `endpoint` on `listener` until `shutdown` resolves, then lets
/// requests in flight finish within the grace period.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let endpoint = Arc::new(endpoint.into_endpoint().map_to_response());
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("http_connections_open").increment(1.0);
        let endpoint = endpoint.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let endpoint = endpoint.clone();
            async move {
                let request = poem::Request::from((
                    request,
                    LocalAddr(local.into()),
                    RemoteAddr(remote.into()),
                    Scheme::HTTP,
                ));
                let response = endpoint.get_response(request).await;
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                log_connection_end(&error, remote);
            }
            metrics::gauge!("http_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.grace) => {
            tracing::warn!("connections still open after the grace period were cut");
        }
    }
    Ok(())
}

/// A connection that ended badly: a client too slow with its head is
/// counted, the rest (resets, malformed requests) only logged at debug.
fn log_connection_end(error: &hyper::Error, remote: SocketAddr) {
    if error.is_timeout() {
        metrics::counter!("http_connections_cut_total", "reason" => "slow_head").increment(1);
        tracing::debug!(%remote, "a connection sent no complete request head in time");
    } else {
        tracing::debug!(%remote, %error, "a connection ended with an error");
    }
}
