//! Load test of the main journey against an already running server.
//!
//! Applicants (weight 4) sign in, grant consent, register a phone, then
//! repeatedly upload a photo, submit a two-service application, read it back
//! and open the inbox. Officials (weight 1) sign in, then repeatedly list the
//! municipality queue, open one of its cases and approve it with its ETag.
//!
//! ```sh
//! cargo run --release -p onestop-loadtests --bin journey -- \
//!     --host http://127.0.0.1:8080 --users 20 --hatch-rate 10 --run-time 30s
//! ```
//!
//! Defaults: host http://127.0.0.1:8080, 20 users started 10 a second, 30 s.
//! Every Goose option overrides them; `--hatch-rate` is accepted as the old
//! name of `--increase-rate`. The server must be started with the sign-in and
//! upload rate limits raised (see [`RATE_LIMIT_HINT`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use goose::config::GooseConfiguration;
use goose::goose::GooseResponse;
use goose::metrics::GooseRequestMetricAggregate;
use goose::prelude::*;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageBuffer, Rgb};
use reqwest::header::{HeaderMap, ETAG};
use reqwest::RequestBuilder;
use serde_json::{json, Value};

const DEFAULT_HOST: &str = "http://127.0.0.1:8080";
const DEFAULT_USERS: usize = 20;
const DEFAULT_INCREASE_RATE: &str = "10";
const DEFAULT_RUN_TIME_SECS: usize = 30;

const PASSWORD: &str = "onestop-demo";
const APPLICANTS: [&str; 2] = ["mother1", "mother2"];
const OFFICIAL: &str = "official.municipality";

const RATE_LIMIT_HINT: &str =
    "the server limits sign-ins and uploads; for a load test start it with \
     TOKEN_RATE_PER_MINUTE=100000 TOKEN_BURST=10000 ACCOUNT_SIGN_IN_PER_MINUTE=100000 \
     ACCOUNT_SIGN_IN_BURST=10000 UPLOAD_RATE_PER_MINUTE=100000 UPLOAD_BURST=10000";

/// Step names, in the order of the summary table.
const SIGN_IN: &str = "sign in";
const CONSENT: &str = "consent";
const REGISTER_DEVICE: &str = "register device";
const UPLOAD_PHOTO: &str = "upload photo";
const SUBMIT: &str = "submit";
const READ_SUBMISSION: &str = "read submission";
const INBOX: &str = "inbox";
const LIST_QUEUE: &str = "list queue";
const OPEN_CASE: &str = "open case";
const DECIDE: &str = "decide";
const STEPS: [&str; 10] = [
    SIGN_IN,
    CONSENT,
    REGISTER_DEVICE,
    UPLOAD_PHOTO,
    SUBMIT,
    READ_SUBMISSION,
    INBOX,
    LIST_QUEUE,
    OPEN_CASE,
    DECIDE,
];

/// How long an official waits before looking again at an empty queue.
const EMPTY_QUEUE_PAUSE: Duration = Duration::from_millis(250);
/// How many server error answers are written out in full.
const SERVER_ERRORS_SHOWN: usize = 10;

static PHOTO: OnceLock<Vec<u8>> = OnceLock::new();
static RATE_LIMITED: AtomicBool = AtomicBool::new(false);
static SERVER_ERRORS: AtomicUsize = AtomicUsize::new(0);
static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// What each simulated user keeps between requests.
#[derive(Clone)]
struct Session {
    username: &'static str,
    token: String,
}

/// A response read to the end.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn failed(reason: String) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(reason))
}

/// A value unique in this run and, with the process id and the clock, across runs.
fn unique(prefix: &str) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    format!(
        "{prefix}-{}-{started}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A real JPEG of about 100 KB: a 600×600 gradient with noise, quality 90.
fn make_photo() -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 24) as u8
    };
    let picture = ImageBuffer::from_fn(600, 600, |x, y| {
        let n = noise() / 5;
        Rgb([
            ((x * 200 / 600) as u8).saturating_add(n),
            ((y * 200 / 600) as u8).saturating_add(n),
            (((x + y) * 100 / 600) as u8).saturating_add(n),
        ])
    });
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 90)
        .encode_image(&picture)
        .expect("encoding a JPEG in memory cannot fail");
    jpeg
}

fn token(user: &GooseUser) -> String {
    user.get_session_data::<Session>()
        .map(|s| s.token.clone())
        .unwrap_or_default()
}

/// Sends one named request with the session's bearer token, reads the whole
/// response and counts it a success when its status is one of `accept`. A
/// 401 signs in again and repeats the request once.
async fn call(
    user: &mut GooseUser,
    step: &'static str,
    method: GooseMethod,
    path: &str,
    build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Sync),
    accept: &[u16],
) -> Result<Answer, Box<TransactionError>> {
    let mut signed_in_again = false;
    loop {
        let mut builder = build(user.get_request_builder(&method, path)?);
        if step != SIGN_IN {
            builder = builder.bearer_auth(token(user));
        }
        let request = GooseRequest::builder()
            .method(method)
            .path(path)
            .name(step)
            .set_request_builder(builder)
            .build();
        let GooseResponse {
            request: mut metric,
            response,
        } = user.request(request).await?;
        // A transport error is already recorded as a failure by Goose.
        let response = response.map_err(|e| failed(format!("{step}: {e}")))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) => {
                return user
                    .set_failure(&format!("{step}: body: {e}"), &mut metric, None, None)
                    .map(|()| unreachable!("set_failure always returns an error"))
            }
        };
        if status == 401 && step != SIGN_IN && !signed_in_again {
            signed_in_again = true;
            // Boxed: signing in is itself a call.
            Box::pin(sign_in(user)).await?;
            continue;
        }
        if accept.contains(&status) {
            user.set_success(&mut metric)?;
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        if status == 429
            && (step == SIGN_IN || step == UPLOAD_PHOTO)
            && !RATE_LIMITED.swap(true, Ordering::Relaxed)
        {
            eprintln!("{step} answered 429 Too Many Requests: {RATE_LIMIT_HINT}");
        }
        if status >= 500 && SERVER_ERRORS.fetch_add(1, Ordering::Relaxed) < SERVER_ERRORS_SHOWN {
            eprintln!("server error on {step} ({method:?} {path}): {status} {text}");
        }
        let tag = format!("{step}: {status}");
        return user
            .set_failure(&tag, &mut metric, Some(&headers), Some(&text))
            .map(|()| unreachable!("set_failure always returns an error"));
    }
}

/// Signs in as the session's account and keeps the access token.
async fn sign_in(user: &mut GooseUser) -> TransactionResult {
    let username = user
        .get_session_data::<Session>()
        .map(|s| s.username)
        .ok_or_else(|| failed("sign in: no account chosen".into()))?;
    let body = json!({ "username": username, "password": PASSWORD });
    let answer = call(
        user,
        SIGN_IN,
        GooseMethod::Post,
        "/v1/auth/token",
        &|b| b.json(&body),
        &[200],
    )
    .await?;
    let token = answer.json()["access_token"]
        .as_str()
        .ok_or_else(|| failed("sign in: no access_token in the answer".into()))?
        .to_owned();
    user.set_session_data(Session { username, token });
    Ok(())
}

/// Applicant, once: sign in, consent to shared facts, register the phone.
async fn applicant_start(user: &mut GooseUser) -> TransactionResult {
    let username = APPLICANTS[user.weighted_users_index % APPLICANTS.len()];
    user.set_session_data(Session {
        username,
        token: String::new(),
    });
    sign_in(user).await?;

    let consent = json!({ "purpose": "shared_facts" });
    call(
        user,
        CONSENT,
        GooseMethod::Post,
        "/v1/me/consents",
        &|b| b.json(&consent),
        &[200, 201],
    )
    .await?;

    let push_token = format!(
        "fcm:{}",
        unique("loadtest_device_registration_token_android").replace('-', "_")
    );
    let device = json!({ "platform": "android", "push_token": push_token, "locale": "vi-VN" });
    call(
        user,
        REGISTER_DEVICE,
        GooseMethod::Post,
        "/v1/devices",
        &|b| b.json(&device),
        &[200, 201],
    )
    .await?;
    Ok(())
}

/// Applicant, repeatedly: upload a photo, submit, read the submission, read the inbox.
async fn applicant_journey(user: &mut GooseUser) -> TransactionResult {
    let photo: &'static [u8] = PHOTO.get_or_init(make_photo);
    let upload = call(
        user,
        UPLOAD_PHOTO,
        GooseMethod::Post,
        "/v1/attachments",
        &|b| {
            let part = reqwest::multipart::Part::bytes(photo)
                .file_name("birth-certificate.jpg")
                .mime_str("image/jpeg")
                .expect("a valid media type");
            b.multipart(reqwest::multipart::Form::new().part("file", part))
        },
        &[200, 201],
    )
    .await?;
    let attachment = upload.json()["id"]
        .as_str()
        .ok_or_else(|| failed("upload photo: no id in the answer".into()))?
        .to_owned();

    let submission = json!({
        "services": [
            { "service": "childcare_allowance", "attachments": [attachment] },
            { "service": "breast_pump_rental" }
        ]
    });
    let key = format!("\"{}\"", unique("journey"));
    let submitted = call(
        user,
        SUBMIT,
        GooseMethod::Post,
        "/v1/submissions",
        &|b| b.header("Idempotency-Key", &key).json(&submission),
        &[201],
    )
    .await?;
    let id = submitted.json()["id"]
        .as_str()
        .ok_or_else(|| failed("submit: no id in the answer".into()))?
        .to_owned();

    call(
        user,
        READ_SUBMISSION,
        GooseMethod::Get,
        &format!("/v1/submissions/{id}"),
        &|b| b,
        &[200],
    )
    .await?;
    call(user, INBOX, GooseMethod::Get, "/v1/inbox", &|b| b, &[200]).await?;
    Ok(())
}

/// Official, once: sign in.
async fn official_start(user: &mut GooseUser) -> TransactionResult {
    user.set_session_data(Session {
        username: OFFICIAL,
        token: String::new(),
    });
    sign_in(user).await
}

/// Official, repeatedly: list the queue, open one of its cases, approve it.
/// Losing the race to another official (409 or 412) is an expected outcome.
async fn official_review(user: &mut GooseUser) -> TransactionResult {
    let queue = call(
        user,
        LIST_QUEUE,
        GooseMethod::Get,
        "/v1/review/cases?status=submitted&limit=20",
        &|b| b,
        &[200],
    )
    .await?;
    // Officials spread over the queue rather than all racing for its head.
    let spread = user.weighted_users_index;
    let chosen = queue.json()["items"]
        .as_array()
        .filter(|items| !items.is_empty())
        .and_then(|items| items[spread % items.len()]["id"].as_str())
        .map(str::to_owned);
    let Some(id) = chosen else {
        tokio::time::sleep(EMPTY_QUEUE_PAUSE).await;
        return Ok(());
    };

    let case_path = format!("/v1/review/cases/{id}");
    let opened = call(
        user,
        OPEN_CASE,
        GooseMethod::Get,
        &case_path,
        &|b| b,
        &[200],
    )
    .await?;
    let etag = opened
        .headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| failed("open case: no ETag".into()))?
        .to_owned();

    let decision = json!({ "outcome": "approved", "reason": "" });
    let decided = call(
        user,
        DECIDE,
        GooseMethod::Post,
        &format!("{case_path}/decision"),
        &|b| b.header("If-Match", &etag).json(&decision),
        &[200, 409, 412],
    )
    .await?;
    debug_assert!(matches!(decided.status, 200 | 409 | 412));
    Ok(())
}

/// Goose's configuration from the command line, with `--hatch-rate` read as
/// `--increase-rate`.
fn configuration() -> Result<Option<GooseConfiguration>, GooseError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args
        .iter()
        .any(|a| a == "--hatch-rate" || a.starts_with("--hatch-rate="))
    {
        return Ok(None);
    }
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match a.strip_prefix("--hatch-rate") {
            Some(rest) => format!("--increase-rate{rest}"),
            None => a,
        })
        .collect();
    GooseConfiguration::parse_args_default(&args).map(Some)
}

fn millis(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Requests per second, failures and p50/p95/p99 for each step.
fn print_summary(metrics: &GooseMetrics) {
    // Goose keys each request by "METHOD name".
    let mut by_step: BTreeMap<&str, Vec<&GooseRequestMetricAggregate>> = BTreeMap::new();
    for (key, aggregate) in &metrics.requests {
        let name = key.split_once(' ').map_or(key.as_str(), |(_, name)| name);
        by_step.entry(name).or_default().push(aggregate);
    }
    let seconds = metrics.duration.max(1) as f64;
    println!();
    println!(
        "Journey summary ({} s, {} users)",
        metrics.duration, metrics.maximum_users
    );
    println!(
        "{:<16} | {:>8} | {:>6} | {:>8} | {:>9} | {:>9} | {:>9}",
        "step", "requests", "failed", "req/s", "p50 ms", "p95 ms", "p99 ms"
    );
    println!("{}", "-".repeat(84));
    let (mut total, mut total_failed) = (0, 0);
    for step in STEPS {
        let Some(aggregates) = by_step.get(step) else {
            continue;
        };
        for a in aggregates {
            let count = a.success_count + a.fail_count;
            total += count;
            total_failed += a.fail_count;
            println!(
                "{:<16} | {:>8} | {:>6} | {:>8.1} | {:>9.1} | {:>9.1} | {:>9.1}",
                step,
                count,
                a.fail_count,
                count as f64 / seconds,
                millis(a.raw_data.percentile_us(0.50)),
                millis(a.raw_data.percentile_us(0.95)),
                millis(a.raw_data.percentile_us(0.99)),
            );
        }
    }
    println!("{}", "-".repeat(84));
    println!(
        "{:<16} | {:>8} | {:>6} | {:>8.1} |",
        "all",
        total,
        total_failed,
        total as f64 / seconds
    );
    let server_errors = SERVER_ERRORS.load(Ordering::Relaxed);
    if server_errors > 0 {
        println!("{server_errors} server error answers (5xx)");
    }
    if RATE_LIMITED.load(Ordering::Relaxed) {
        println!("rate limited: {RATE_LIMIT_HINT}");
    }
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    // Made once, before the clock starts.
    let photo = PHOTO.get_or_init(make_photo);
    eprintln!("test photo: {} bytes of JPEG", photo.len());

    let attack = match configuration()? {
        Some(configuration) => GooseAttack::initialize_with_config(configuration)?,
        None => GooseAttack::initialize()?,
    };
    let metrics = attack
        .register_scenario(
            scenario!("Applicant")
                .set_weight(4)?
                .register_transaction(transaction!(applicant_start).set_on_start())
                .register_transaction(transaction!(applicant_journey).set_name("journey")),
        )
        .register_scenario(
            scenario!("Official")
                .set_weight(1)?
                .register_transaction(transaction!(official_start).set_on_start())
                .register_transaction(transaction!(official_review).set_name("review")),
        )
        .set_default(GooseDefault::Host, DEFAULT_HOST)?
        .set_default(GooseDefault::Users, DEFAULT_USERS)?
        .set_default(GooseDefault::IncreaseRate, DEFAULT_INCREASE_RATE)?
        .set_default(GooseDefault::RunTime, DEFAULT_RUN_TIME_SECS)?
        .execute()
        .await?;
    print_summary(&metrics);
    Ok(())
}
