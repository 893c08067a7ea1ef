//! Edge benchmark: requests made to exhaust a server's memory or its
//! connections, and whether they bend it.
//!
//! It starts the release server binary (`onestop-server` beside this
//! program, or `--server <path>`) as a child process on its embedded
//! defaults in a scratch folder, with only the sign-in and upload budgets
//! raised so they never answer in place of the limits measured. All
//! traffic goes to 127.0.0.1 over plain TCP (HTTP/1.1), so every byte and
//! every moment of a request is the bench's own.
//!
//! 1. Bursts of 20 requests at once of each kind: compressed bodies
//!    (250 MB of zeros in ~250 KB), an endless chunked upload, a multipart
//!    part whose headers never end, and JSON bodies over the limit. For
//!    each: the server's peak resident memory over its idle size during
//!    the burst, the time from the end of each request head to the status
//!    line, and how many answers had the expected status.
//! 2. A slow-header flood: one client's latency on `GET /v1/me` while 500
//!    connections each send a request head one byte a second, against the
//!    same client calm.
//!
//! ```sh
//! cargo build --release -p onestop-server -p onestop-loadtests
//! ./target/release/edge-bench [--header-timeout <s>] [--keep]
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use onestop_loadtests::memory::{rss_kib, Sampler};
use onestop_loadtests::target::{argument, load_average, sign_in, start_target};
use onestop_server::settings::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// Requests of each kind sent at once.
const BURST: usize = 20;
/// Connections of the slow-header flood.
const SLOW_CONNECTIONS: usize = 500;
/// What each compressed body holds once inflated.
const INFLATED_BYTES: u64 = 250_000_000;
/// Body bytes are written in pieces of this size.
const PIECE: usize = 64 * 1024;
/// The longest an exchange waits for its status line.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// The longest the whole program runs before it stops the server and
/// itself.
const WHOLE_RUN: Duration = Duration::from_secs(300);
const BOUNDARY: &str = "edgebenchboundary";

/// A request body: `start` as it is, then `zeros` zero bytes.
#[derive(Clone)]
struct Body {
    start: Bytes,
    zeros: u64,
    /// Every piece framed as an HTTP/1.1 chunk; the last chunk is never
    /// sent, so the body does not end.
    chunked: bool,
}

impl Body {
    fn none() -> Self {
        Body {
            start: Bytes::new(),
            zeros: 0,
            chunked: false,
        }
    }
}

/// One request kind of a burst.
struct Kind {
    name: String,
    expected: u16,
    /// Bytes one request declares or would inflate to; what a server
    /// that buffered it whole would hold.
    carries: u64,
    head: String,
    body: Body,
    /// Sent to a bare socket reader in this process instead of the
    /// server: the reference of the kind after it.
    to_sink: bool,
    /// The row whose time this one's is compared with.
    reference: usize,
}

/// What one request got.
struct Answer {
    status: Option<u16>,
    /// From the end of the request head to the end of the status line.
    after: Duration,
}

/// What one burst showed.
struct Burst {
    name: String,
    expected: u16,
    carries: u64,
    as_expected: usize,
    statuses: Vec<Option<u16>>,
    p50_ms: f64,
    max_ms: f64,
    reference: usize,
    /// The server's idle resident size and its growth during the burst;
    /// none when the burst did not go to the server.
    memory: Option<(f64, f64)>,
}

/// Writes `body` to `writer`, then keeps the write half open until this
/// task is stopped (the answer is awaited with the request unfinished).
async fn feed(mut writer: OwnedWriteHalf, body: Body) {
    let zeros = vec![0u8; PIECE];
    let mut framed = Vec::with_capacity(PIECE + 16);
    let mut send = async |data: &[u8]| {
        if body.chunked {
            framed.clear();
            write!(framed, "{:x}\r\n", data.len()).unwrap();
            framed.extend_from_slice(data);
            framed.extend_from_slice(b"\r\n");
            writer.write_all(&framed).await
        } else {
            writer.write_all(data).await
        }
    };
    for piece in body.start.chunks(PIECE) {
        if send(piece).await.is_err() {
            return;
        }
    }
    let mut left = body.zeros;
    while left > 0 {
        let n = left.min(PIECE as u64) as usize;
        if send(&zeros[..n]).await.is_err() {
            return;
        }
        left -= n as u64;
    }
    std::future::pending::<()>().await;
}

/// Reads up to the end of the status line; its code.
async fn status_line(reader: &mut OwnedReadHalf) -> Option<u16> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !seen.windows(2).any(|w| w == b"\r\n") {
        if seen.len() > 8 * 1024 {
            return None;
        }
        let read = reader.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        seen.extend_from_slice(&buffer[..read]);
    }
    std::str::from_utf8(&seen)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends one request on a connection of its own: connects, waits for the
/// rest of the burst, writes the head, then feeds the body while waiting
/// for the status line.
async fn exchange(addr: SocketAddr, head: String, body: Body, together: Arc<Barrier>) -> Answer {
    let stream = TcpStream::connect(addr).await;
    together.wait().await;
    let failed = Answer {
        status: None,
        after: ANSWER_WAIT,
    };
    let Ok(stream) = stream else { return failed };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    if writer.write_all(head.as_bytes()).await.is_err() {
        return failed;
    }
    let head_sent = Instant::now();
    let feeding = tokio::spawn(feed(writer, body));
    let status = tokio::time::timeout(ANSWER_WAIT, status_line(&mut reader))
        .await
        .ok()
        .flatten();
    let after = head_sent.elapsed();
    feeding.abort();
    Answer { status, after }
}

/// Sends `BURST` requests of `kind` at once; the server's memory is
/// sampled from just before the first until a moment after the last
/// answer.
async fn burst(addr: SocketAddr, pid: u32, kind: &Kind) -> Burst {
    let addr = if kind.to_sink {
        start_sink(kind.carries + UPLOAD_FRAMING_BYTES).await
    } else {
        addr
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);
    let sampler = Sampler::start(pid);
    let together = Arc::new(Barrier::new(BURST));
    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            tokio::spawn(exchange(
                addr,
                kind.head.clone(),
                kind.body.clone(),
                together.clone(),
            ))
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    // Work the server does after answering (dropping what it read) counts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak = sampler.peak_kib();
    let mut times: Vec<f64> = answers
        .iter()
        .map(|a| a.after.as_secs_f64() * 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    Burst {
        name: kind.name.clone(),
        expected: kind.expected,
        carries: kind.carries,
        as_expected: answers
            .iter()
            .filter(|a| a.status == Some(kind.expected))
            .count(),
        statuses: answers.iter().map(|a| a.status).collect(),
        p50_ms: percentile(&times, 50.0),
        max_ms: times.last().copied().unwrap_or(f64::NAN),
        reference: kind.reference,
        memory: (!kind.to_sink).then(|| {
            (
                idle as f64 / 1024.0,
                peak.saturating_sub(idle) as f64 / 1024.0,
            )
        }),
    }
}

/// What the edge lets an upload send past the file limit
/// (`body_limit::UPLOAD_FRAMING_BYTES`).
const UPLOAD_FRAMING_BYTES: u64 = 64 * 1024;

/// A bare reader of `BURST` connections in this process: it reads and
/// drops bytes until more than `answer_after` came (the head counted
/// too), then answers 413 and closes, as the server does at its limit
/// with no parsing, hashing or storing; what crossing the loopback costs
/// on this machine, in this run.
async fn start_sink(answer_after: u64) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..BURST {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            tokio::spawn(async move {
                let mut buffer = vec![0u8; PIECE];
                let mut seen = 0u64;
                while seen <= answer_after {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen += n as u64,
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

/// The value at `p` percent of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// 250 MB of zeros compressed as gzip and as zlib (HTTP's `deflate`).
fn bombs() -> (Bytes, Bytes) {
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    let block = vec![0u8; 1024 * 1024];
    let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::best());
    let mut left = INFLATED_BYTES;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        gzip.write_all(&block[..n]).unwrap();
        zlib.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    (
        Bytes::from(gzip.finish().unwrap()),
        Bytes::from(zlib.finish().unwrap()),
    )
}

/// The request kinds of the bursts, the baseline first.
fn kinds(host: &str, token: &str, limits: &Settings) -> Vec<Kind> {
    let (gzip, zlib) = bombs();
    let json_limit = limits.max_json_bytes;
    let upload_limit = limits.max_upload_bytes;
    let mut kinds = vec![Kind {
        name: "baseline: GET /v1/me, signed in".into(),
        expected: 200,
        carries: 0,
        head: format!(
            "GET /v1/me HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
        body: Body::none(),
        to_sink: false,
        reference: 0,
    }];
    for (coding, bytes, real) in [
        ("gzip", &gzip, true),
        ("deflate", &zlib, true),
        ("br", &gzip, false),
        ("zstd", &gzip, false),
    ] {
        kinds.push(Kind {
            name: format!(
                "(a) POST /v1/auth/token, Content-Encoding: {coding}, {} KB{}",
                bytes.len() / 1000,
                if real { "" } else { " (the gzip bytes)" }
            ),
            expected: 415,
            carries: INFLATED_BYTES,
            head: format!(
                "POST /v1/auth/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
                bytes.len()
            ),
            body: Body {
                start: bytes.clone(),
                zeros: 0,
                chunked: false,
            },
            to_sink: false,
            reference: 0,
        });
    }
    let upload_head = |framing: &str| {
        format!(
            "POST /v1/attachments HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}\r\n\r\n"
        )
    };
    // Endless: bounded only by the bench, at three times the limit. The
    // server must read up to its limit before it can refuse, so its time
    // is compared with the same bodies sent to a bare reader.
    let endless = Body {
        start: Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"endless.pdf\"\r\n\
             Content-Type: application/pdf\r\n\r\n%PDF-1.7\n"
        )),
        zeros: 3 * upload_limit,
        chunked: true,
    };
    let reference = kinds.len();
    kinds.push(Kind {
        name: "(b) reference: the same to a bare reader in this process, 413 at the same byte"
            .into(),
        expected: 413,
        carries: upload_limit,
        head: upload_head("Transfer-Encoding: chunked"),
        body: endless.clone(),
        to_sink: true,
        reference,
    });
    kinds.push(Kind {
        name: "(b) POST /v1/attachments, chunked, a PDF part that never ends".into(),
        expected: 413,
        carries: upload_limit,
        head: upload_head("Transfer-Encoding: chunked"),
        body: endless,
        to_sink: false,
        reference,
    });
    let start = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"");
    kinds.push(Kind {
        name: format!(
            "(c) POST /v1/attachments, part headers that never end, Content-Length {} MiB",
            upload_limit / (1024 * 1024)
        ),
        expected: 400,
        carries: upload_limit,
        head: upload_head(&format!("Content-Length: {upload_limit}")),
        body: Body {
            zeros: upload_limit - start.len() as u64,
            start: Bytes::from(start),
            chunked: false,
        },
        to_sink: false,
        reference: 0,
    });
    let json_head = |length: u64| {
        format!(
            "POST /v1/submissions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    // The first MiB of it is sent: the answer must not wait for it.
    kinds.push(Kind {
        name: "(d) POST /v1/submissions, Content-Length 1 GB".into(),
        expected: 413,
        carries: 1_000_000_000,
        head: json_head(1_000_000_000),
        body: Body {
            start: Bytes::from_static(b"{\"services\":[\""),
            zeros: 1024 * 1024,
            chunked: false,
        },
        to_sink: false,
        reference: 0,
    });
    let over = json_limit + 1;
    let padding = "a".repeat(over as usize - "{\"pad\":\"\"}".len());
    let body = format!("{{\"pad\":\"{padding}\"}}");
    assert_eq!(body.len() as u64, over);
    kinds.push(Kind {
        name: format!("(d) POST /v1/submissions, JSON of {over} bytes (limit + 1)"),
        expected: 413,
        carries: over,
        head: json_head(over),
        body: Body {
            start: Bytes::from(body),
            zeros: 0,
            chunked: false,
        },
        to_sink: false,
        reference: 0,
    });
    kinds
}

/// What the slow connections saw.
#[derive(Default)]
struct Flood {
    opened: AtomicUsize,
    open_now: AtomicUsize,
    /// Connections the server ended (read end or write refused).
    cut: AtomicUsize,
    /// How long each cut connection had lived, in milliseconds.
    lifetimes: Mutex<Vec<u64>>,
}

/// A request head sent one byte a second that never ends; when the
/// server ends the connection, another is opened in its place, until
/// `until`.
async fn slow_client(addr: SocketAddr, until: Instant, flood: Arc<Flood>) {
    let head = b"GET /v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    // At most one connection per second of the flood.
    for _ in 0..120 {
        if Instant::now() >= until {
            return;
        }
        let Ok(stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        flood.opened.fetch_add(1, Ordering::Relaxed);
        flood.open_now.fetch_add(1, Ordering::Relaxed);
        let connected = Instant::now();
        let (mut reader, mut writer) = stream.into_split();
        let mut buffer = [0u8; 512];
        let mut sent = 0usize;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let cut = loop {
            tokio::select! {
                _ = reader.read(&mut buffer) => break true,
                _ = tick.tick() => {
                    if Instant::now() >= until {
                        break false;
                    }
                    let byte = head.get(sent).copied().unwrap_or(b'a');
                    if writer.write_all(&[byte]).await.is_err() {
                        break true;
                    }
                    sent += 1;
                }
            }
        };
        flood.open_now.fetch_sub(1, Ordering::Relaxed);
        if cut {
            flood.cut.fetch_add(1, Ordering::Relaxed);
            flood
                .lifetimes
                .lock()
                .unwrap()
                .push(connected.elapsed().as_millis() as u64);
        } else {
            return;
        }
    }
}

/// Latencies of sequential `GET /v1/me` on one connection for `window`
/// (at most 200,000 requests), sorted, in milliseconds; the failures;
/// and the time they took.
async fn sequential(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    window: Duration,
) -> (Vec<f64>, usize, Duration) {
    let started = Instant::now();
    let mut times = Vec::new();
    let mut failed = 0;
    while started.elapsed() < window && times.len() + failed < 200_000 {
        let sent = Instant::now();
        let ok = match client
            .get(format!("{url}/v1/me"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
        } else {
            failed += 1;
        }
    }
    times.sort_by(f64::total_cmp);
    (times, failed, started.elapsed())
}

/// Open file descriptors and threads of `pid`.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    (fds, threads)
}

/// The server's count of connections it cut for a slow head.
async fn cut_by_server(client: &reqwest::Client, url: &str) -> Option<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let total = text
        .lines()
        .filter(|l| l.starts_with("http_connections_cut_total") && l.contains("slow_head"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let defaults = Settings::default();
    let header_timeout: u64 = argument("--header-timeout")
        .and_then(|s| s.parse().ok())
        .unwrap_or(defaults.header_read_timeout_secs);
    let scratch =
        std::env::temp_dir().join(format!("edge-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    let load_before = load_average();
    let mut env = Vec::new();
    if header_timeout != defaults.header_read_timeout_secs {
        env.push(("HEADER_READ_TIMEOUT_SECS", header_timeout.to_string()));
    }
    let target = start_target(&scratch, &env).await;
    let pid = target.pid.expect("the server's process id (--pid)");
    // However the run goes, the server and this program stop in time.
    std::thread::spawn(move || {
        std::thread::sleep(WHOLE_RUN);
        eprintln!("edge-bench: still running after {WHOLE_RUN:?}; stopping");
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        std::process::exit(2);
    });
    let url = target.url.clone();
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let host = addr.to_string();
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let token = sign_in(&client, &url).await;

    // 1. Bursts.
    let kinds = kinds(&host, &token, &defaults);
    let mut bursts = Vec::new();
    for kind in &kinds {
        bursts.push(burst(addr, pid, kind).await);
    }

    // 2. Slow-header flood: the same client calm, during the flood and
    // after it.
    let calm_window = Duration::from_secs(5);
    let calm = sequential(&client, &url, &token, calm_window).await;
    let cut_before = cut_by_server(&client, &url).await;
    let (fds_calm, threads_calm) = fds_and_threads(pid);
    let rss_calm = rss_kib(pid);
    let flood = Arc::new(Flood::default());
    // The flood outlasts the header timeout so the server's cuts (and the
    // reconnections in their place) fall inside the measurement.
    let ramp = Duration::from_secs(3);
    let flood_window = Duration::from_secs(header_timeout + 4).min(Duration::from_secs(60));
    let until = Instant::now() + ramp + flood_window;
    let slow: Vec<_> = (0..SLOW_CONNECTIONS)
        .map(|i| {
            let flood = flood.clone();
            tokio::spawn(async move {
                // Opened over the first two seconds.
                tokio::time::sleep(Duration::from_millis((i * 4) as u64)).await;
                slow_client(addr, until, flood).await;
            })
        })
        .collect();
    for _ in 0..50 {
        if flood.open_now.load(Ordering::Relaxed) >= SLOW_CONNECTIONS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_at_start = flood.open_now.load(Ordering::Relaxed);
    let watch = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let watcher = tokio::spawn({
        let watch = watch.clone();
        async move {
            loop {
                let (fds, threads) = fds_and_threads(pid);
                watch.0.fetch_max(fds as u64, Ordering::Relaxed);
                watch.1.fetch_max(threads as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let sampler = Sampler::start(pid);
    let window = until.saturating_duration_since(Instant::now());
    let flooded = sequential(&client, &url, &token, window).await;
    let rss_flood = sampler.peak_kib();
    watcher.abort();
    for task in slow {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let cut_after = cut_by_server(&client, &url).await;
    let after = sequential(&client, &url, &token, calm_window).await;

    // The report.
    let upload_mib = defaults.max_upload_bytes / (1024 * 1024);
    println!();
    println!(
        "machine: {} cores, load average {load_before} before, {} after",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    println!(
        "server: release binary as a child process on its embedded defaults (upload limit {upload_mib} MiB + 64 KiB framing, \
         JSON {} KiB, header read timeout {header_timeout} s, at most {} connections); sign-in and upload budgets raised",
        defaults.max_json_bytes / 1024,
        defaults.max_connections,
    );
    println!(
        "bursts: {BURST} requests at once of each kind, each on its own connection; time from the end of the request head \
         to its status line (goal < 1 s), as a multiple of its reference's in the same run (the baseline; for (b), a bare reader); memory: the server's peak \
         resident size over its idle size during the burst, sampled every 2 ms (goal < 64 MB), and as a share of what the \
         {BURST} requests declare or inflate to"
    );
    println!();
    println!(
        "| kind | expected | as expected | p50 ms | max ms | p50 / reference p50 | RSS growth MB | of what they carry | idle RSS MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, b) in bursts.iter().enumerate() {
        let ratio = if b.reference == i {
            "-".to_owned()
        } else {
            let against = if b.reference == 0 {
                "baseline"
            } else {
                "bare reader"
            };
            format!("{:.2}× {against}", b.p50_ms / bursts[b.reference].p50_ms)
        };
        let (growth, carried, idle) = match b.memory {
            Some((idle, growth)) if b.carries > 0 => {
                let share = growth * 1024.0 * 1024.0 / (b.carries as f64 * BURST as f64);
                (
                    format!("{growth:.1}"),
                    format!("{:.3}%", share * 100.0),
                    format!("{idle:.0}"),
                )
            }
            Some((idle, growth)) => (format!("{growth:.1}"), "-".into(), format!("{idle:.0}")),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {}/{BURST} | {:.1} | {:.1} | {ratio} | {growth} | {carried} | {idle} |",
            b.name, b.expected, b.as_expected, b.p50_ms, b.max_ms,
        );
    }
    for b in bursts.iter().filter(|b| b.as_expected < BURST) {
        let seen: Vec<String> = b
            .statuses
            .iter()
            .map(|s| s.map_or("none".into(), |s| s.to_string()))
            .collect();
        println!("  {}: answers {}", b.name, seen.join(" "));
    }

    println!();
    let lifetimes = {
        let mut l = flood.lifetimes.lock().unwrap().clone();
        l.sort_unstable();
        l
    };
    let cut_range = match (lifetimes.first(), lifetimes.last()) {
        (Some(first), Some(last)) => format!(
            ", each after {:.1}-{:.1} s",
            *first as f64 / 1000.0,
            *last as f64 / 1000.0
        ),
        _ => String::new(),
    };
    println!(
        "slow-header flood: {SLOW_CONNECTIONS} connections each sending a request head one byte a second, never ending \
         ({open_at_start} open at once when the measurement began, {} opened in all, reopened as the server cut them); \
         one client doing sequential GET /v1/me on one kept-alive connection, signed in; header read timeout {header_timeout} s",
        flood.opened.load(Ordering::Relaxed)
    );
    println!();
    println!("| client | requests | req/s | failed | p50 ms | p99 ms | p99 / calm p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let calm_p99 = percentile(&calm.0, 99.0);
    for (name, (times, failed, took)) in [
        ("calm, before", &calm),
        ("during the flood", &flooded),
        ("calm, after", &after),
    ] {
        let p99 = percentile(times, 99.0);
        println!(
            "| {name} | {} | {:.0} | {failed} | {:.2} | {:.2} | {:.2}× |",
            times.len(),
            times.len() as f64 / took.as_secs_f64(),
            percentile(times, 50.0),
            p99,
            p99 / calm_p99
        );
    }
    println!();
    println!(
        "flood p99 / calm p99: {:.2}× (goal < 2×)",
        percentile(&flooded.0, 99.0) / calm_p99
    );
    let server_cut = match (cut_before, cut_after) {
        (Some(before), Some(after)) => format!("{}", after.saturating_sub(before)),
        _ => "unknown".into(),
    };
    println!(
        "slow connections cut by the server by the end: {} seen by the clients{cut_range}; \
         http_connections_cut_total{{reason=\"slow_head\"}} grew by {server_cut}",
        flood.cut.load(Ordering::Relaxed)
    );
    println!(
        "server during the flood: open fds {fds_calm} calm, {} at most; threads {threads_calm} calm, {} at most; \
         resident size {:.0} MB calm, +{:.1} MB at most",
        watch.0.load(Ordering::Relaxed),
        watch.1.load(Ordering::Relaxed),
        rss_calm as f64 / 1024.0,
        rss_flood.saturating_sub(rss_calm) as f64 / 1024.0
    );

    drop(target);
    if std::env::args().any(|a| a == "--keep") {
        println!("kept {} (server.log)", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
