//! A TCP proxy in front of a real Redis that a test can cut and restore.
//! Cutting drops every open connection and closes new ones as soon as they
//! are accepted, so clients see Redis gone; other tests keep using the real
//! server directly.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy. Stops, with every connection through it, when dropped.
pub struct RedisProxy {
    addr: SocketAddr,
    paused: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
}

impl RedisProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream`
    /// (`host:port`, e.g. `127.0.0.1:6379`).
    pub async fn start(upstream: &str) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (paused, _) = watch::channel(false);
        let paused = Arc::new(paused);
        let stop = CancellationToken::new();
        let upstream = upstream.to_owned();
        tokio::spawn(accept_loop(
            listener,
            upstream,
            paused.clone(),
            stop.clone(),
        ));
        RedisProxy { addr, paused, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://` URL of the proxy, for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drops every connection and refuses new ones until [`Self::resume`].
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    paused: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        if *paused.borrow() {
            drop(client);
            continue;
        }
        tokio::spawn(forward(
            client,
            upstream.clone(),
            paused.subscribe(),
            stop.clone(),
        ));
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: String,
    mut paused: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = paused.wait_for(|paused| *paused) => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
    // Both sockets close here, so the client sees the connection end.
}
