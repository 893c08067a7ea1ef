//! What a stranger on the public address can send: compressed bombs,
//! bodies without a length, HTTP/2 without TLS, endless multipart heads,
//! request heads sent a byte at a time, forged forwarded addresses. Each
//! is refused quickly with a problem (or the connection is closed) and
//! changes nothing.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{problem, spawn_app, spawn_app_with, Backend, Options, DEMO_PASSWORD};

/// An answer read off a raw connection.
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

impl RawAnswer {
    fn problem(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("a problem: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads one HTTP/1.1 answer (head and a `Content-Length` body).
async fn read_answer(stream: &mut TcpStream, within: Duration) -> RawAnswer {
    let deadline = Instant::now() + within;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
                return RawAnswer { status, head, body };
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("the connection stays readable");
        assert!(
            read > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
    }
}

async fn connect(app: &crate::helpers::TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.unwrap()
}

/// Whether the server closed the connection within `within` (reading
/// and discarding anything it sent first).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn gzip_of_zeros(bytes: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..bytes / zeros.len() {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_compressed_body_is_refused_without_being_inflated() {
    let app = spawn_app(Backend::Sqlite).await;
    // 32 MB of zeros in about 32 KB: a JSON body limit of 256 KB would
    // have been compared with the small figure.
    let bomb = gzip_of_zeros(32 << 20);
    assert!(bomb.len() < 256 * 1024);
    for coding in ["gzip", "deflate", "br", "zstd", "identity, gzip"] {
        let started = Instant::now();
        let response = app
            .request(Method::POST, "/v1/auth/token", None)
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(bomb.clone())
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(
            response.headers()["accept-encoding"],
            "identity",
            "{coding}: the answer says what is accepted"
        );
        let body = problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert_eq!(body["type"], "urn:onestop:problem:unsupported-media-type");
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("Content-Encoding"));
        assert!(elapsed < Duration::from_secs(5), "{coding}: {elapsed:?}");
    }
    // Every kind of route that reads a body refuses it the same way,
    // before routing or signing in.
    for (method, path) in [
        (Method::POST, "/v1/attachments"),
        (
            Method::PATCH,
            "/v1/uploads/0190d5a0-0000-7000-8000-000000000000",
        ),
        (
            Method::POST,
            "/v1/review/cases/0190d5a0-0000-7000-8000-000000000000/documents",
        ),
        (Method::POST, "/v1/submissions"),
    ] {
        let response = app
            .request(method.clone(), path, Some("not-even-a-token"))
            .header("content-encoding", "gzip")
            .header("tus-resumable", "1.0.0")
            .body(bomb.clone())
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert_eq!(
            body["type"], "urn:onestop:problem:unsupported-media-type",
            "{method} {path}"
        );
    }
    // Declaring the identity coding is no coding at all.
    let response = app
        .request(Method::POST, "/v1/auth/token", None)
        .header("content-encoding", "identity")
        .json(&json!({ "username": "mother1", "password": DEMO_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Answers are still compressed for a client that asks.
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    app.stop().await;
}

#[tokio::test]
async fn a_body_without_a_length_is_refused_or_cut_off_at_the_limit() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login("mother1").await;

    // JSON routes want a length.
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n",
        )
        .await
        .unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(answer.status, 411);
    assert_eq!(
        answer.problem()["type"],
        "urn:onestop:problem:length-required"
    );

    // An upload may stream without one, but not past the limit: an
    // endless PDF is cut off and answered 413 while it is still coming.
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary=b0undary\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let part =
        b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\
                 Content-Type: application/pdf\r\n\r\n%PDF-1.7\n";
    stream
        .write_all(format!("{:x}\r\n", part.len()).as_bytes())
        .await
        .unwrap();
    stream.write_all(part).await.unwrap();
    stream.write_all(b"\r\n").await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let piece = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        // Far more than the limit (2 MiB in tests), unless cut off first.
        while sent < 64 << 20 {
            let frame = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            sent += piece.len();
        }
        sent
    });
    let mut answer = Vec::new();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        while let Ok(read) = reader.read(&mut chunk).await {
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..read]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload-too-large"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
    sender.abort();
    let _ = sender.await;
    assert_eq!(app.count("attachments").await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.media_files(), 0, "nothing of the cut upload is kept");
    app.stop().await;
}

#[tokio::test]
async fn http2_without_tls_is_not_served() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut stream = connect(&app).await;
    // The HTTP/2 connection preface, then an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    // An HTTP/2 server would answer with its own SETTINGS frame; this one
    // answers as HTTP/1.1 (or just closes).
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    assert!(h2.get(app.url("/healthz")).send().await.is_err());
    // HTTP/1.1 goes on as before.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn an_endless_multipart_head_is_refused_at_once() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login("mother1").await;
    let cases: [(&[u8], &str); 3] = [
        // A part whose headers never end.
        (
            b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"",
            "headers",
        ),
        // A body that never shows its boundary.
        (b"", "boundary"),
        // Parts without number.
        (b"", "parts"),
    ];
    for (front, expected) in cases {
        let mut body = front.to_vec();
        match expected {
            "parts" => {
                for _ in 0..40 {
                    body.extend_from_slice(
                        b"--b0undary\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n",
                    );
                }
            }
            _ => body.extend_from_slice(&vec![0u8; 128 * 1024]),
        }
        // The declared length is within the upload limit, and most of it
        // is never sent: the answer must not wait for it.
        let declared = 2 * 1024 * 1024;
        let mut stream = connect(&app).await;
        let head = format!(
            "POST /v1/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: {declared}\r\n\r\n"
        );
        let started = Instant::now();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(answer.status, 400, "{expected}: {}", answer.body);
        let problem = answer.problem();
        assert_eq!(problem["type"], "urn:onestop:problem:malformed-request");
        assert!(
            problem["detail"].as_str().unwrap().contains(expected),
            "{expected}: {problem}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(app.count("attachments").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_request_head_sent_too_slowly_and_an_idle_connection_are_closed() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Options {
            adjust: Some(Box::new(|s| s.header_read_timeout_secs = 1)),
            ..Options::default()
        },
    )
    .await;
    // A head that trickles in and never ends.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
        }
        closed_within(&mut slow, Duration::from_millis(10)).await
    });
    // A kept-alive connection after its first answer.
    let mut idle = connect(&app).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut idle, Duration::from_secs(5)).await.status,
        200
    );
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(trickle.await.unwrap(), "the trickling head was cut off");
    // A client that sends its head at once is served as usual.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

async fn sign_in_from(
    app: &crate::helpers::TestApp,
    forwarded: &str,
    password: &str,
) -> StatusCode {
    app.request(Method::POST, "/v1/auth/token", None)
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "username": "mother1", "password": password }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_forged_forwarded_address_neither_escapes_the_budget_nor_enters_the_records() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Options {
            token_burst: 3,
            adjust: Some(Box::new(|s| {
                s.trust_forwarded_for = true;
                // The test client is the proxy.
                s.trusted_proxies = "127.0.0.1/32, ::1/128".into();
                s.token_rate_per_minute = 1;
                s.account_sign_in_burst = 1000;
            })),
            ..Options::default()
        },
    )
    .await;
    // One client behind the proxy writes a new address on the left of
    // every request; the proxy appends the address it really saw.
    let mut statuses = Vec::new();
    for n in 0..6 {
        let forged = format!("10.9.{n}.{n}, 203.0.113.9");
        statuses.push(sign_in_from(&app, &forged, "wrong").await);
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 3]);
    // Another client behind the same proxy has a budget of its own.
    assert_eq!(
        sign_in_from(&app, "203.0.113.10", DEMO_PASSWORD).await,
        StatusCode::OK
    );

    // The address in an access record is the one the proxy saw.
    let mother = app.login("mother1").await;
    let official = app.login("official.municipality").await;
    let submission = app.apply(&mother, &["childcare_allowance"], None).await;
    let case_id = submission["cases"][0]["id"].as_str().unwrap();
    let response = app
        .request(
            Method::GET,
            &format!("/v1/review/cases/{case_id}"),
            Some(&official),
        )
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.23")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let addresses = app
        .column("SELECT client_address AS v FROM access_records WHERE action = 'case.viewed'")
        .await;
    assert_eq!(addresses, ["198.51.100.23"]);
    app.stop().await;
}
