//! Reads bench: what the screens opened most cost the server, against
//! references measured on the same machine in the same run.
//!
//! It starts the release server (`onestop-server` beside this program, or
//! `--server <path>`) and the reference handler (`hello-target` beside it,
//! or `--hello <path>`: one poem-openapi operation answering a small JSON
//! object through the server's own connection loop) as child processes,
//! each under `taskset -c 0`, and loads them with `wrk -t1 -c32` under
//! `taskset -c 1`. `pgbench -j1` runs on core 1 too; the PostgreSQL
//! cluster itself is not pinned, so its backends use both cores, for the
//! server's queries as for pgbench's. Every load runs once per round,
//! after one unmeasured second of each, in an order that starts one later
//! each round; loads compared two by two (a catalog against the other,
//! submissions against inserts) run back to back, the first of the pair
//! swapped each round, and their ratio is the median of each round's. The
//! best round of each load is printed (its p99 with it) and every round's
//! figure beside it; shares of a reference are best over best.
//!
//! Sections (`--only <name>` runs one):
//!
//! - `sqlite`: the server on a temporary SQLite database in demo mode.
//!   `mother1` consents to shared facts and files two one-stop
//!   submissions, so `official.municipality` has cases. Then `GET /v1/me`,
//!   `/v1/inbox`, `/v1/submissions` as `mother1`, `GET /v1/review/cases`
//!   and one case (`/v1/review/cases/{id}`, which records the look in the
//!   applicant's access log) as the official, and the reference handler:
//!   each read's requests per second as a share of the handler's (goal:
//!   every read at least 0.3).
//! - `postgres`: the same on a fresh database of the local cluster (demo
//!   mode forced on), with `pgbench -S` (select-only, default scale 1,
//!   simple protocol, 32 clients) on a fresh pgbench database as a second
//!   reference (goal: every read at least 0.5 of its transactions per
//!   second).
//! - `catalog`: the reads on SQLite, one server with the shipped catalog
//!   and one with `CATALOG_FILE` naming the shipped catalog plus 2,600
//!   generated agencies and 900 generated services (checked by the
//!   catalog loader before the server starts); the generated one's
//!   requests per second over the shipped one's (goal: at least 0.9).
//! - `submissions`: `POST /v1/submissions` (two services, a fresh
//!   `Idempotency-Key` each, as the apps send) by 1 and by 8 clients on
//!   PostgreSQL, against a one-row `INSERT` by `pgbench -f` with the same
//!   clients (goal: at least 0.1); and where a submission's time goes,
//!   from the server's `filing_stage_seconds` histogram on `/metrics`.
//!
//! ```sh
//! cargo build --release -p onestop-server -p onestop-loadtests
//! ./target/release/reads-bench [--seconds 10] [--rounds 2] \
//!     [--only sqlite|postgres|catalog|submissions] [--keep]
//! ```
//!
//! Needs `wrk`, `pgbench`, `psql` and `taskset` on the path, Redis on
//! 127.0.0.1:6379 and PostgreSQL: `BENCH_POSTGRES_URL` names a database
//! of the cluster to connect to, to create and drop the scratch ones
//! (default `postgres://postgres@127.0.0.1:5432/test`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use onestop_loadtests::target::{argument, load_average, start_target_on, Target};
use onestop_model::catalog::{Catalog, EMBEDDED};
use serde_json::{json, Value};

/// Connections of every HTTP load and clients of the select-only one.
const CONNECTIONS: u32 = 32;
/// The core of the server and of the reference handler.
const SERVER_CPU: &str = "0";
/// The core of the load generators.
const CLIENT_CPU: &str = "1";
const DEFAULT_SECONDS: u64 = 10;
const DEFAULT_ROUNDS: usize = 2;
/// Unmeasured load before the first round, each load.
const WARM_UP_SECONDS: u64 = 1;
const GENERATED_AGENCIES: usize = 2_600;
const GENERATED_SERVICES: usize = 900;
/// Of the generated agencies, this many are of the shipped kinds (other
/// regions); the rest are of generated kinds.
const GENERATED_OF_SHIPPED_KINDS: usize = 650;
const GENERATED_KINDS: usize = 300;
const SUBMISSION_CLIENTS: [u32; 2] = [1, 8];
/// What each measured submission asks for: one service whose rule needs
/// the shared facts, one that needs none (as the journey files).
const SUBMISSION_BODY: &str =
    r#"{"services":[{"service":"childcare_allowance"},{"service":"breast_pump_rental"}]}"#;
/// The stages of a filing, in the order they happen; others the server
/// reports follow.
const STAGES: [&str; 5] = ["session", "routing", "write", "commit", "announce"];
const APPLICANT: &str = "mother1";
const OFFICIAL: &str = "official.municipality";
const PASSWORD: &str = "onestop-demo";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const GOAL_SQLITE: f64 = 0.3;
const GOAL_POSTGRES: f64 = 0.5;
const GOAL_CATALOG: f64 = 0.9;
const GOAL_SUBMISSIONS: f64 = 0.1;

struct Options {
    seconds: u64,
    rounds: usize,
    only: Option<String>,
    postgres_url: String,
    scratch: PathBuf,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == section)
    }
}

/// What one load gave in one run.
#[derive(Clone, Copy, Debug)]
struct Figure {
    per_second: f64,
    p99_ms: f64,
    requests: u64,
    /// Answers other than 2xx/3xx, socket errors, failed transactions.
    errors: u64,
}

/// A load generator's invocation.
enum Load {
    /// `wrk` against one URL, with a bearer token or a script.
    Wrk {
        url: String,
        token: Option<String>,
        script: Option<PathBuf>,
        connections: u32,
    },
    /// `pgbench` with `args` (`-S`, or `-f <script>`).
    Pgbench {
        database_url: String,
        args: Vec<String>,
        clients: u32,
    },
}

/// Runs `load` for `seconds`, its generator on the client core.
fn measure(load: &Load, seconds: u64, scratch: &Path) -> Figure {
    match load {
        Load::Wrk {
            url,
            token,
            script,
            connections,
        } => {
            let mut command = Command::new("taskset");
            command.args([
                "-c",
                CLIENT_CPU,
                "wrk",
                "-t1",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--timeout",
                "10s",
                "--latency",
            ]);
            if let Some(token) = token {
                command.args(["-H", &format!("Authorization: Bearer {token}")]);
            }
            if let Some(script) = script {
                command.arg("-s").arg(script);
            }
            command.arg(url);
            let output = command.output().expect("wrk runs (apt install wrk)");
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "wrk failed: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            );
            parse_wrk(&text)
        }
        Load::Pgbench {
            database_url,
            args,
            clients,
        } => {
            let prefix = format!("pgbench-{}", uuid::Uuid::new_v4().simple());
            let output = Command::new("taskset")
                .args(["-c", CLIENT_CPU, "pgbench", "-n", "-j", "1", "-l"])
                .arg(format!("--log-prefix={}", scratch.join(&prefix).display()))
                .args(["-c", &clients.to_string(), "-T", &seconds.to_string()])
                .args(args)
                .arg(database_url)
                .output()
                .expect("pgbench runs");
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "pgbench failed: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            );
            // Each transaction's latency, from pgbench's own log.
            let mut times = Vec::new();
            for entry in std::fs::read_dir(scratch).unwrap().flatten() {
                if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                    continue;
                }
                let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                times.extend(
                    log.lines()
                        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok())
                        .map(|us| us / 1000.0),
                );
                let _ = std::fs::remove_file(entry.path());
            }
            times.sort_by(f64::total_cmp);
            parse_pgbench(&text, percentile(&times, 99.0))
        }
    }
}

/// A wrk time (`812.00us`, `1.23ms`, `2.01s`, `1.00m`) in milliseconds.
fn wrk_ms(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    number
        * match unit {
            "us" => 0.001,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => f64::NAN,
        }
}

fn parse_wrk(text: &str) -> Figure {
    let mut figure = Figure {
        per_second: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        errors: 0,
    };
    let numbers = |s: &str| -> u64 {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    };
    let mut distribution = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            distribution = true;
        } else if distribution && line.starts_with("99%") {
            figure.p99_ms = line.split_whitespace().nth(1).map_or(f64::NAN, wrk_ms);
            distribution = false;
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            figure.per_second = rest.trim().parse().unwrap_or(f64::NAN);
        } else if line.contains(" requests in ") {
            figure.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            figure.errors += numbers(rest);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            figure.errors += numbers(rest);
        }
    }
    figure
}

fn parse_pgbench(text: &str, p99_ms: f64) -> Figure {
    let mut figure = Figure {
        per_second: f64::NAN,
        p99_ms,
        requests: 0,
        errors: 0,
    };
    let first_number = |s: &str| -> Option<f64> {
        s.split_whitespace()
            .find_map(|w| w.trim_end_matches(',').parse::<f64>().ok())
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps =") {
            figure.per_second = first_number(rest).unwrap_or(f64::NAN);
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            figure.requests = first_number(rest).unwrap_or(0.0) as u64;
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            figure.errors = first_number(rest).unwrap_or(0.0) as u64;
        }
    }
    figure
}

/// The value at `p` percent of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How the loads of a round follow one another.
#[derive(Clone, Copy)]
enum Order {
    /// Each round starts one later.
    Rotating,
    /// Loads compared two by two (0 with 1, 2 with 3, ...): each pair back
    /// to back, the pairs rotating, the first of a pair swapped each round.
    Paired,
}

/// Round `round`'s order of `n` loads.
fn order(n: usize, round: usize, how: Order) -> Vec<usize> {
    match how {
        Order::Rotating => (0..n).map(|i| (i + round) % n).collect(),
        Order::Paired => {
            let pairs = n / 2;
            (0..pairs)
                .map(|p| (p + round) % pairs)
                .flat_map(|p| {
                    if round % 2 == 0 {
                        [2 * p, 2 * p + 1]
                    } else {
                        [2 * p + 1, 2 * p]
                    }
                })
                .collect()
        }
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `a` over `b` in each round.
fn round_ratios(a: &Measured, b: &Measured) -> Vec<f64> {
    a.rounds
        .iter()
        .zip(&b.rounds)
        .map(|(a, b)| a.per_second / b.per_second)
        .collect()
}

fn listed(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Each load's figures, one per round.
struct Measured {
    name: String,
    rounds: Vec<Figure>,
}

impl Measured {
    /// The round with the most requests per second.
    fn best(&self) -> Figure {
        self.rounds
            .iter()
            .copied()
            .max_by(|a, b| a.per_second.total_cmp(&b.per_second))
            .expect("at least one round")
    }

    fn each_round(&self) -> String {
        self.rounds
            .iter()
            .map(|f| format!("{:.0}", f.per_second))
            .collect::<Vec<_>>()
            .join(" / ")
    }

    fn errors(&self) -> u64 {
        self.rounds.iter().map(|f| f.errors).sum()
    }
}

/// Runs every load once per round (after an unmeasured second of each);
/// `loads` is called at the start of each round (fresh sign-ins).
async fn alternate<F, Fut>(
    options: &Options,
    names: &[String],
    how: Order,
    mut loads: F,
) -> Vec<Measured>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Load>>,
{
    let mut measured: Vec<Measured> = names
        .iter()
        .map(|name| Measured {
            name: name.clone(),
            rounds: Vec::new(),
        })
        .collect();
    let warm = loads().await;
    for load in &warm {
        measure(load, WARM_UP_SECONDS, &options.scratch);
    }
    for round in 0..options.rounds {
        let current = loads().await;
        assert_eq!(current.len(), names.len());
        for i in order(current.len(), round, how) {
            let figure = measure(&current[i], options.seconds, &options.scratch);
            eprintln!(
                "  round {} {}: {:.0}/s, p99 {:.2} ms, {} errors",
                round + 1,
                names[i],
                figure.per_second,
                figure.p99_ms,
                figure.errors
            );
            measured[i].rounds.push(figure);
        }
    }
    measured
}

/// Signs in; the access token.
async fn sign_in_as(client: &reqwest::Client, url: &str, username: &str) -> String {
    let response = client
        .post(format!("{url}/v1/auth/token"))
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{username} signs in: {status} {body}"))
        .to_owned()
}

/// Files a submission as the applicant; panics unless it is created.
async fn submit(client: &reqwest::Client, url: &str, token: &str, body: &str) {
    let response = client
        .post(format!("{url}/v1/submissions"))
        .bearer_auth(token)
        .header("Idempotency-Key", format!("\"{}\"", uuid::Uuid::new_v4()))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    assert_eq!(
        status,
        201,
        "a submission is created: {}",
        response.text().await.unwrap_or_default()
    );
}

/// The applicant consents to shared facts and files two one-stop
/// submissions (four cases, two of them the municipality's); the id of
/// the official's first case.
async fn prepare(client: &reqwest::Client, url: &str) -> String {
    let applicant = sign_in_as(client, url, APPLICANT).await;
    let consent = client
        .post(format!("{url}/v1/me/consents"))
        .bearer_auth(&applicant)
        .json(&json!({ "purpose": "shared_facts" }))
        .send()
        .await
        .expect("the server answers");
    assert!(
        consent.status().is_success(),
        "consent: {}",
        consent.status()
    );
    submit(client, url, &applicant, SUBMISSION_BODY).await;
    submit(
        client,
        url,
        &applicant,
        r#"{"services":[{"service":"childbirth_subsidy"},{"service":"electricity_bill_cut"}]}"#,
    )
    .await;
    let official = sign_in_as(client, url, OFFICIAL).await;
    let queue: Value = client
        .get(format!("{url}/v1/review/cases"))
        .bearer_auth(&official)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON queue");
    queue["items"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the official has a case: {queue}"))
        .to_owned()
}

#[derive(Clone, Copy, PartialEq)]
enum Reader {
    Applicant,
    Official,
}

/// One read the bench measures.
struct Read {
    name: &'static str,
    path: String,
    reader: Reader,
}

fn reads(case_id: &str) -> Vec<Read> {
    vec![
        Read {
            name: "GET /v1/me",
            path: "/v1/me".into(),
            reader: Reader::Applicant,
        },
        Read {
            name: "GET /v1/inbox",
            path: "/v1/inbox".into(),
            reader: Reader::Applicant,
        },
        Read {
            name: "GET /v1/submissions",
            path: "/v1/submissions".into(),
            reader: Reader::Applicant,
        },
        Read {
            name: "GET /v1/review/cases",
            path: "/v1/review/cases".into(),
            reader: Reader::Official,
        },
        Read {
            name: "GET /v1/review/cases/{id}",
            path: format!("/v1/review/cases/{case_id}"),
            reader: Reader::Official,
        },
    ]
}

/// A prepared server: its URL and the official's case.
struct Signed {
    url: String,
    case_id: String,
}

impl Signed {
    /// Fresh tokens for both readers: (applicant, official).
    async fn tokens(&self, client: &reqwest::Client) -> (String, String) {
        (
            sign_in_as(client, &self.url, APPLICANT).await,
            sign_in_as(client, &self.url, OFFICIAL).await,
        )
    }

    /// The loads of every read, with fresh tokens.
    async fn read_loads(&self, client: &reqwest::Client) -> Vec<Load> {
        let (applicant, official) = self.tokens(client).await;
        reads(&self.case_id)
            .into_iter()
            .map(|read| Load::Wrk {
                url: format!("{}{}", self.url, read.path),
                token: Some(match read.reader {
                    Reader::Applicant => applicant.clone(),
                    Reader::Official => official.clone(),
                }),
                script: None,
                connections: CONNECTIONS,
            })
            .collect()
    }

    /// Every read answers 200; their body sizes.
    async fn check_reads(&self, client: &reqwest::Client) -> Vec<usize> {
        let (applicant, official) = self.tokens(client).await;
        let mut sizes = Vec::new();
        for read in reads(&self.case_id) {
            let token = match read.reader {
                Reader::Applicant => &applicant,
                Reader::Official => &official,
            };
            let response = client
                .get(format!("{}{}", self.url, read.path))
                .bearer_auth(token)
                .send()
                .await
                .expect("the server answers");
            let status = response.status();
            let body = response.bytes().await.unwrap_or_default();
            assert_eq!(
                status,
                200,
                "{}: {}",
                read.name,
                String::from_utf8_lossy(&body)
            );
            sizes.push(body.len());
        }
        sizes
    }
}

/// A database of the local cluster made for this run, dropped with this.
struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    fn create(admin_url: &str, purpose: &str) -> Self {
        let name = format!("bench_{purpose}_{}", uuid::Uuid::new_v4().simple());
        psql(admin_url, &format!("CREATE DATABASE {name}"));
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base.to_owned())
            .unwrap_or_default();
        ScratchDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) {
    let output = Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A pgbench database: its tables at scale 1, and a small table for the
/// one-row insert.
fn pgbench_database(options: &Options) -> ScratchDatabase {
    let database = ScratchDatabase::create(&options.postgres_url, "pgbench");
    let output = Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", &database.url])
        .output()
        .expect("pgbench runs");
    assert!(
        output.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    psql(
        &database.url,
        "CREATE TABLE bench_rows (id bigserial PRIMARY KEY, payload text NOT NULL, \
         created_at timestamptz NOT NULL DEFAULT now())",
    );
    database
}

/// A random secret of 64 hexadecimal digits.
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The server on core 0, on its embedded SQLite database in demo mode,
/// with the catalog file if given.
async fn sqlite_server(options: &Options, folder: &str, catalog: Option<&Path>) -> Target {
    let scratch = options.scratch.join(folder);
    std::fs::create_dir_all(&scratch).unwrap();
    let mut env = Vec::new();
    if let Some(catalog) = catalog {
        env.push(("CATALOG_FILE", catalog.display().to_string()));
    }
    start_target_on(&scratch, &env, Some(SERVER_CPU)).await
}

/// The server on core 0, on `database` in demo mode, with the keys a
/// shared database needs.
async fn postgres_server(options: &Options, folder: &str, database: &ScratchDatabase) -> Target {
    let scratch = options.scratch.join(folder);
    std::fs::create_dir_all(&scratch).unwrap();
    let env = [
        ("DATABASE_URL", database.url.clone()),
        ("DEMO_MODE", "true".to_owned()),
        ("AUTH_SIGNING_KEY", secret()),
        ("RRN_INDEX_KEY", secret()),
        ("RRN_KEK", secret()),
        ("ACCESS_LOG_KEY", secret()),
    ];
    start_target_on(&scratch, &env, Some(SERVER_CPU)).await
}

/// The reference handler on core 0; its URL.
async fn start_hello(options: &Options) -> (Target, String) {
    let binary = argument("--hello").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .expect("this program's path")
            .with_file_name("hello-target")
    });
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p onestop-loadtests (or pass --hello)",
        binary.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = std::fs::File::create(options.scratch.join("hello.log")).unwrap();
    let child = Command::new("taskset")
        .args(["-c", SERVER_CPU])
        .arg(&binary)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the reference handler starts");
    let url = format!("http://127.0.0.1:{port}");
    let hello = format!("{url}/v1/hello");
    let probe = reqwest::Client::new();
    for _ in 0..100 {
        if probe
            .get(&hello)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = Target {
        url,
        pid: Some(child.id()),
        media_dir: options.scratch.clone(),
        child: Some(child),
    };
    (target, hello)
}

/// A load of the reference handler.
fn hello_load(hello: &str) -> Load {
    Load::Wrk {
        url: hello.to_owned(),
        token: None,
        script: None,
        connections: CONNECTIONS,
    }
}

/// The cores `target`'s process may run on, as the kernel says.
fn allowed_cores(target: &Target) -> String {
    target
        .pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|cores| cores.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn ratio(a: Figure, b: Figure) -> f64 {
    a.per_second / b.per_second
}

/// The line under a table: whether every ratio reaches `goal`, and the
/// lowest.
fn goal_line(what: &str, goal: f64, ratios: &[(&str, f64)]) {
    let lowest = ratios
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one ratio");
    println!(
        "goal: {what} ≥ {goal}: {} (lowest: {} at {:.2})",
        met(ratios.iter().all(|(_, r)| *r >= goal)),
        lowest.0,
        lowest.1
    );
}

/// Reads against the reference handler and, when given, `pgbench -S`.
async fn read_section(
    options: &Options,
    client: &reqwest::Client,
    target: &Target,
    hello: &str,
    pgbench: Option<&ScratchDatabase>,
) -> Vec<Measured> {
    let case_id = prepare(client, &target.url).await;
    let signed = Signed {
        url: target.url.clone(),
        case_id,
    };
    let sizes = signed.check_reads(client).await;
    let mut names: Vec<String> = reads(&signed.case_id)
        .iter()
        .zip(&sizes)
        .map(|(r, size)| format!("{} ({size} B)", r.name))
        .collect();
    names.push("reference: poem-openapi hello".into());
    if pgbench.is_some() {
        names.push(format!("reference: pgbench -S, {CONNECTIONS} clients"));
    }
    let signed = &signed;
    alternate(options, &names, Order::Rotating, move || async move {
        let mut loads = signed.read_loads(client).await;
        loads.push(hello_load(hello));
        if let Some(database) = pgbench {
            loads.push(Load::Pgbench {
                database_url: database.url.clone(),
                args: vec!["-S".into()],
                clients: CONNECTIONS,
            });
        }
        loads
    })
    .await
}

fn print_read_table(measured: &[Measured], with_pgbench: bool) {
    let reads = reads("").len();
    let hello = measured[reads].best();
    let pgbench = with_pgbench.then(|| measured[reads + 1].best());
    println!();
    if with_pgbench {
        println!(
            "| read | req/s | p99 ms | each round, req/s | errors | share of hello | share of pgbench -S |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
    } else {
        println!("| read | req/s | p99 ms | each round, req/s | errors | share of hello |");
        println!("|---|---:|---:|---:|---:|---:|");
    }
    for m in measured {
        let best = m.best();
        let mut row = format!(
            "| {} | {:.0} | {:.2} | {} | {} | {:.2} |",
            m.name,
            best.per_second,
            best.p99_ms,
            m.each_round(),
            m.errors(),
            ratio(best, hello)
        );
        if let Some(pgbench) = pgbench {
            row.push_str(&format!(" {:.2} |", ratio(best, pgbench)));
        }
        println!("{row}");
    }
    println!();
}

async fn sqlite_section(options: &Options, client: &reqwest::Client, hello: &str) {
    eprintln!("sqlite: starting the server");
    let target = sqlite_server(options, "sqlite", None).await;
    let cores = allowed_cores(&target);
    let measured = read_section(options, client, &target, hello, None).await;
    drop(target);
    println!(
        "## SQLite: reads against the reference handler (server on core {cores}; wrk -t1 -c{CONNECTIONS}, \
         {} s a run, best of {} rounds)",
        options.seconds, options.rounds
    );
    print_read_table(&measured, false);
    let hello = measured[reads("").len()].best();
    let ratios: Vec<(&str, f64)> = reads("")
        .iter()
        .zip(&measured)
        .map(|(r, m)| (r.name, ratio(m.best(), hello)))
        .collect();
    goal_line("on SQLite every read, share of hello", GOAL_SQLITE, &ratios);
    println!();
}

async fn postgres_section(options: &Options, client: &reqwest::Client, hello: &str) {
    eprintln!("postgres: making the databases and starting the server");
    let pgbench = pgbench_database(options);
    let database = ScratchDatabase::create(&options.postgres_url, "reads");
    let target = postgres_server(options, "postgres", &database).await;
    let cores = allowed_cores(&target);
    let measured = read_section(options, client, &target, hello, Some(&pgbench)).await;
    drop(target);
    println!(
        "## PostgreSQL: reads against the reference handler and pgbench -S (-c{CONNECTIONS} -j1, simple protocol, scale 1; \
         server on core {cores}, the cluster not pinned), {} s a run, best of {} rounds",
        options.seconds, options.rounds
    );
    print_read_table(&measured, true);
    let n = reads("").len();
    let pgbench_best = measured[n + 1].best();
    let ratios: Vec<(&str, f64)> = reads("")
        .iter()
        .zip(&measured)
        .map(|(r, m)| (r.name, ratio(m.best(), pgbench_best)))
        .collect();
    goal_line(
        "on PostgreSQL every read, share of pgbench -S",
        GOAL_POSTGRES,
        &ratios,
    );
    println!();
}

/// Names of a generated catalog entry in every locale.
fn generated_names(what: &str, i: usize) -> Value {
    json!({
        "ko": format!("생성된 {what} {i}"),
        "en": format!("Generated {what} {i}"),
        "vi": format!("{what} được tạo {i}"),
        "zh": format!("生成的{what} {i}"),
    })
}

/// The shipped catalog plus generated agencies and services, as the
/// catalog loader accepts it.
fn generated_catalog() -> String {
    let mut catalog: Value = serde_json::from_str(EMBEDDED).expect("the shipped catalog");
    let shipped_kinds: Vec<String> = catalog["agencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str().map(str::to_owned))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let documents: Vec<String> = catalog["documents"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let agencies = catalog["agencies"].as_array_mut().unwrap();
    for i in 0..GENERATED_AGENCIES {
        let kind = if i < GENERATED_OF_SHIPPED_KINDS {
            shipped_kinds[i % shipped_kinds.len()].clone()
        } else {
            format!(
                "generated-kind-{:03}",
                (i - GENERATED_OF_SHIPPED_KINDS) % GENERATED_KINDS
            )
        };
        agencies.push(json!({
            "id": format!("generated-agency-{i:04}"),
            "kind": kind,
            "region": format!("generated-region-{:03}", i % 250),
            "names": generated_names("agency", i),
        }));
    }
    let services = catalog["services"].as_array_mut().unwrap();
    for i in 0..GENERATED_SERVICES {
        let rule = if i % 3 == 0 {
            json!({ "all": [{
                "fact": "children",
                "op": "gte",
                "value": 1 + i % 3,
                "unmet": generated_names("condition", i),
            }] })
        } else {
            json!({ "all": [] })
        };
        services.push(json!({
            "code": format!("generated_service_{i:03}"),
            "bundle": format!("generated-bundle-{:02}", i % 40),
            "agency_kind": format!("generated-kind-{:03}", i % GENERATED_KINDS),
            "position": 100 + i,
            "names": generated_names("service", i),
            "descriptions": generated_names("service description", i),
            "rule": rule,
            "required_documents": [documents[i % documents.len()]],
        }));
    }
    let text = serde_json::to_string_pretty(&catalog).unwrap();
    if let Err(error) = Catalog::parse(&text) {
        panic!("the generated catalog is refused by the loader: {error}");
    }
    text
}

async fn catalog_section(options: &Options, client: &reqwest::Client) {
    let path = options.scratch.join("catalog.json");
    std::fs::write(&path, generated_catalog()).unwrap();
    eprintln!("catalog: starting the servers (shipped, generated)");
    let shipped = sqlite_server(options, "catalog-shipped", None).await;
    let generated = sqlite_server(options, "catalog-generated", Some(&path)).await;
    let cores = format!(
        "{} and {}",
        allowed_cores(&shipped),
        allowed_cores(&generated)
    );
    let mut servers = Vec::new();
    for target in [&shipped, &generated] {
        let case_id = prepare(client, &target.url).await;
        let signed = Signed {
            url: target.url.clone(),
            case_id,
        };
        signed.check_reads(client).await;
        servers.push(signed);
    }
    let mut names = Vec::new();
    for read in reads("") {
        for catalog in ["shipped", "generated"] {
            names.push(format!("{} ({catalog})", read.name));
        }
    }
    let servers = &servers;
    let measured = alternate(options, &names, Order::Paired, move || async move {
        let shipped = servers[0].read_loads(client).await;
        let generated = servers[1].read_loads(client).await;
        shipped
            .into_iter()
            .zip(generated)
            .flat_map(|(a, b)| [a, b])
            .collect()
    })
    .await;
    drop((shipped, generated));
    println!(
        "## Catalog: reads on SQLite with the shipped catalog and with {GENERATED_AGENCIES} agencies and \
         {GENERATED_SERVICES} services more (servers on core {cores}; wrk -t1 -c{CONNECTIONS}, {} s a run, \
         best of {} rounds)",
        options.seconds, options.rounds
    );
    println!();
    println!(
        "| read | shipped req/s | generated req/s | shipped p99 ms | generated p99 ms | each round, shipped; generated | \
         generated / shipped, each round | median | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for (i, read) in reads("").iter().enumerate() {
        let (a, b) = (&measured[2 * i], &measured[2 * i + 1]);
        let each = round_ratios(b, a);
        let r = median(&each);
        ratios.push((read.name, r));
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {}; {} | {} | {r:.2} | {} |",
            read.name,
            a.best().per_second,
            b.best().per_second,
            a.best().p99_ms,
            b.best().p99_ms,
            a.each_round(),
            b.each_round(),
            listed(&each),
            a.errors() + b.errors()
        );
    }
    println!();
    goal_line(
        "with the generated catalog every read, share of the shipped (median of each round's)",
        GOAL_CATALOG,
        &ratios,
    );
    println!();
}

/// The filing stages' sums and counts, and the server's own time of POST
/// requests, from `/metrics`.
#[derive(Clone, Default)]
struct Stages {
    by_stage: BTreeMap<String, (f64, f64)>,
    post: (f64, f64),
}

impl Stages {
    async fn read(client: &reqwest::Client, url: &str) -> Self {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("the server answers")
            .text()
            .await
            .unwrap_or_default();
        Self::parse(&text)
    }

    /// From the Prometheus text format.
    fn parse(text: &str) -> Self {
        let mut stages = Stages::default();
        for line in text.lines() {
            let value = || {
                line.split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let stage = || {
                line.split_once("stage=\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(stage, _)| stage.to_owned())
            };
            if line.starts_with("filing_stage_seconds_sum") {
                if let Some(stage) = stage() {
                    stages.by_stage.entry(stage).or_default().0 += value();
                }
            } else if line.starts_with("filing_stage_seconds_count") {
                if let Some(stage) = stage() {
                    stages.by_stage.entry(stage).or_default().1 += value();
                }
            } else if line.starts_with("http_request_duration_seconds_sum")
                && line.contains("method=\"POST\"")
            {
                stages.post.0 += value();
            } else if line.starts_with("http_request_duration_seconds_count")
                && line.contains("method=\"POST\"")
            {
                stages.post.1 += value();
            }
        }
        stages
    }

    /// What grew from `before` to `self`, added to `into`.
    fn add_growth(&self, before: &Stages, into: &mut Stages) {
        for (stage, (sum, count)) in &self.by_stage {
            let (sum0, count0) = before.by_stage.get(stage).copied().unwrap_or_default();
            let entry = into.by_stage.entry(stage.clone()).or_default();
            entry.0 += sum - sum0;
            entry.1 += count - count0;
        }
        into.post.0 += self.post.0 - before.post.0;
        into.post.1 += self.post.1 - before.post.1;
    }
}

/// A wrk script that files `SUBMISSION_BODY` with a fresh key each time.
fn submission_script(options: &Options, token: &str) -> PathBuf {
    let path = options
        .scratch
        .join(format!("submit-{}.lua", uuid::Uuid::new_v4().simple()));
    let run = uuid::Uuid::new_v4().simple();
    std::fs::write(
        &path,
        format!(
            r#"local counter = 0
wrk.method = "POST"
wrk.body = '{SUBMISSION_BODY}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
request = function()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = '"{run}-' .. counter .. '"'
  return wrk.format()
end
"#
        ),
    )
    .unwrap();
    path
}

async fn submissions_section(options: &Options, client: &reqwest::Client) {
    eprintln!("submissions: making the databases and starting the server");
    let pgbench = pgbench_database(options);
    let insert = options.scratch.join("insert.sql");
    std::fs::write(
        &insert,
        "INSERT INTO bench_rows (payload) VALUES ('one-stop');\n",
    )
    .unwrap();
    let database = ScratchDatabase::create(&options.postgres_url, "submissions");
    let target = postgres_server(options, "submissions", &database).await;
    let cores = allowed_cores(&target);
    let url = target.url.clone();
    prepare(client, &url).await;

    let mut names = Vec::new();
    for clients in SUBMISSION_CLIENTS {
        names.push(format!("POST /v1/submissions, {}", with_clients(clients)));
        names.push(format!("pgbench one-row INSERT, {}", with_clients(clients)));
    }
    // The server's stage figures around each submission run, added up
    // over rounds, by number of clients.
    let mut growth: Vec<Stages> = vec![Stages::default(); SUBMISSION_CLIENTS.len()];
    let mut measured: Vec<Measured> = names
        .iter()
        .map(|name| Measured {
            name: name.clone(),
            rounds: Vec::new(),
        })
        .collect();
    let loads = |token: &str| -> Vec<Load> {
        let mut loads = Vec::new();
        for clients in SUBMISSION_CLIENTS {
            loads.push(Load::Wrk {
                url: format!("{url}/v1/submissions"),
                token: None,
                script: Some(submission_script(options, token)),
                connections: clients,
            });
            loads.push(Load::Pgbench {
                database_url: pgbench.url.clone(),
                args: vec!["-f".into(), insert.display().to_string()],
                clients,
            });
        }
        loads
    };
    let token = sign_in_as(client, &url, APPLICANT).await;
    for load in loads(&token) {
        measure(&load, WARM_UP_SECONDS, &options.scratch);
    }
    for round in 0..options.rounds {
        let token = sign_in_as(client, &url, APPLICANT).await;
        let current = loads(&token);
        for i in order(current.len(), round, Order::Paired) {
            let is_submission = i % 2 == 0;
            let before = if is_submission {
                Some(Stages::read(client, &url).await)
            } else {
                None
            };
            let figure = measure(&current[i], options.seconds, &options.scratch);
            if let Some(before) = before {
                Stages::read(client, &url)
                    .await
                    .add_growth(&before, &mut growth[i / 2]);
            }
            eprintln!(
                "  round {} {}: {:.0}/s, p99 {:.2} ms, {} errors",
                round + 1,
                names[i],
                figure.per_second,
                figure.p99_ms,
                figure.errors
            );
            measured[i].rounds.push(figure);
        }
    }
    drop(target);

    println!(
        "## Submissions on PostgreSQL: POST /v1/submissions (two services, a fresh Idempotency-Key each; wrk -t1; \
         server on core {cores}) against pgbench -f (one-row INSERT into a small table, -j1), {} s a run, \
         best of {} rounds",
        options.seconds, options.rounds
    );
    println!();
    println!(
        "| clients | submissions/s | p99 ms | each round | errors | INSERT tps | p99 ms | each round | \
         submissions / INSERTs, each round | median |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let labels: Vec<String> = SUBMISSION_CLIENTS.map(with_clients).to_vec();
    let mut ratios = Vec::new();
    for (k, clients) in SUBMISSION_CLIENTS.iter().enumerate() {
        let (post, insert) = (&measured[2 * k], &measured[2 * k + 1]);
        let each = round_ratios(post, insert);
        let r = median(&each);
        ratios.push((labels[k].as_str(), r));
        println!(
            "| {clients} | {:.1} | {:.2} | {} | {} | {:.0} | {:.2} | {} | {} | {r:.3} |",
            post.best().per_second,
            post.best().p99_ms,
            post.each_round(),
            post.errors() + insert.errors(),
            insert.best().per_second,
            insert.best().p99_ms,
            insert.each_round(),
            listed(&each),
        );
    }
    println!();
    goal_line(
        "submissions per second, share of one-row INSERTs (median of each round's)",
        GOAL_SUBMISSIONS,
        &ratios,
    );
    println!();
    for (k, clients) in SUBMISSION_CLIENTS.iter().enumerate() {
        print_breakdown(*clients, &growth[k]);
    }
}

/// `1 client`, `8 clients`.
fn with_clients(clients: u32) -> String {
    if clients == 1 {
        "1 client".into()
    } else {
        format!("{clients} clients")
    }
}

/// Where a submission's time went, from the stage histogram's growth.
fn print_breakdown(clients: u32, growth: &Stages) {
    let clients = with_clients(clients);
    if growth.by_stage.is_empty() {
        println!("breakdown ({clients}): not exposed by this server");
        return;
    }
    let total: f64 = growth.by_stage.values().map(|(sum, _)| sum).sum();
    let (post_sum, post_count) = growth.post;
    println!(
        "breakdown of a submission, {clients} (filing_stage_seconds over every round; \
         the server's whole POST, http_request_duration_seconds: {:.2} ms mean over {post_count:.0}):",
        post_sum / post_count * 1000.0
    );
    println!();
    println!("| stage | filings | mean ms | share of the stages | share of the whole request |");
    println!("|---|---:|---:|---:|---:|");
    let mut ordered: Vec<&String> = STAGES
        .iter()
        .filter_map(|s| growth.by_stage.get_key_value(*s).map(|(k, _)| k))
        .collect();
    ordered.extend(
        growth
            .by_stage
            .keys()
            .filter(|k| !STAGES.contains(&k.as_str())),
    );
    for stage in ordered {
        let (sum, count) = growth.by_stage[stage];
        println!(
            "| {stage} | {count:.0} | {:.3} | {:.1}% | {:.1}% |",
            sum / count * 1000.0,
            sum / total * 100.0,
            sum / post_sum * 100.0
        );
    }
    println!();
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let only = argument("--only");
    if let Some(only) = &only {
        assert!(
            ["sqlite", "postgres", "catalog", "submissions"].contains(&only.as_str()),
            "--only sqlite|postgres|catalog|submissions"
        );
    }
    let scratch =
        std::env::temp_dir().join(format!("reads-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    let options = Options {
        seconds: argument("--seconds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_SECONDS),
        rounds: argument("--rounds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_ROUNDS)
            .max(1),
        only,
        postgres_url: std::env::var("BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned()),
        scratch,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let load_before = load_average();
    println!(
        "machine: {} cores, load average {load_before} before; server and reference handler on core {SERVER_CPU}, \
         wrk and pgbench on core {CLIENT_CPU} (taskset); PostgreSQL not pinned",
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    println!();

    let hello = if options.runs("sqlite") || options.runs("postgres") {
        let (target, url) = start_hello(&options).await;
        println!("reference handler on core {}", allowed_cores(&target));
        println!();
        Some((target, url))
    } else {
        None
    };
    let hello_url = hello
        .as_ref()
        .map(|(_, url)| url.clone())
        .unwrap_or_default();
    if options.runs("sqlite") {
        sqlite_section(&options, &client, &hello_url).await;
    }
    if options.runs("postgres") {
        postgres_section(&options, &client, &hello_url).await;
    }
    drop(hello);
    if options.runs("catalog") {
        catalog_section(&options, &client).await;
    }
    if options.runs("submissions") {
        submissions_section(&options, &client).await;
    }

    println!(
        "load average {load_before} before, {} after",
        load_average()
    );
    if std::env::args().any(|a| a == "--keep") {
        println!(
            "kept {} (server.log of each server)",
            options.scratch.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&options.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_run_back_to_back_and_take_turns() {
        assert_eq!(order(4, 1, Order::Rotating), [1, 2, 3, 0]);
        assert_eq!(order(6, 0, Order::Paired), [0, 1, 2, 3, 4, 5]);
        assert_eq!(order(6, 1, Order::Paired), [3, 2, 5, 4, 1, 0]);
        assert_eq!(median(&[3.0, 1.0]), 2.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 2s test @ http://127.0.0.1:1/v1/me
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.05ms    1.02ms  12.00ms   80.00%
    Req/Sec    10.50k   300.00    11.00k    70.00%
  Latency Distribution
     50%    2.90ms
     75%    3.40ms
     90%    4.10ms
     99%  812.00us
  20912 requests in 2.00s, 5.00MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  10456.12
Transfer/sec:      2.50MB
";
        let figure = parse_wrk(text);
        assert_eq!(figure.requests, 20912);
        assert_eq!(figure.errors, 6);
        assert!((figure.per_second - 10456.12).abs() < 1e-6);
        assert!((figure.p99_ms - 0.812).abs() < 1e-9);
        assert!((wrk_ms("1.50s") - 1500.0).abs() < 1e-9);
    }

    #[test]
    fn pgbench_output_is_read() {
        let text = "transaction type: <builtin: select only>
number of clients: 32
number of transactions actually processed: 50874
number of failed transactions: 0 (0.000%)
latency average = 1.258 ms
tps = 25437.104331 (without initial connection time)
";
        let figure = parse_pgbench(text, 3.5);
        assert_eq!(figure.requests, 50874);
        assert_eq!(figure.errors, 0);
        assert!((figure.per_second - 25437.104331).abs() < 1e-6);
    }

    #[test]
    fn stage_figures_grow_between_two_readings() {
        let before = Stages::parse(
            "# TYPE filing_stage_seconds histogram
filing_stage_seconds_bucket{stage=\"write\",le=\"0.005\"} 1
filing_stage_seconds_sum{stage=\"write\"} 0.010
filing_stage_seconds_count{stage=\"write\"} 2
http_request_duration_seconds_sum{method=\"POST\"} 0.5
http_request_duration_seconds_count{method=\"POST\"} 4
http_request_duration_seconds_sum{method=\"GET\"} 9
",
        );
        let after = Stages::parse(
            "filing_stage_seconds_sum{stage=\"write\"} 0.030
filing_stage_seconds_count{stage=\"write\"} 4
filing_stage_seconds_sum{stage=\"commit\"} 0.004
filing_stage_seconds_count{stage=\"commit\"} 2
http_request_duration_seconds_sum{method=\"POST\"} 0.6
http_request_duration_seconds_count{method=\"POST\"} 6
",
        );
        let mut growth = Stages::default();
        after.add_growth(&before, &mut growth);
        let (sum, count) = growth.by_stage["write"];
        assert!((sum - 0.020).abs() < 1e-9 && (count - 2.0).abs() < 1e-9);
        assert_eq!(growth.by_stage["commit"].1, 2.0);
        assert!((growth.post.0 - 0.1).abs() < 1e-9 && (growth.post.1 - 2.0).abs() < 1e-9);
        assert!(Stages::parse("http_requests_total 3\n").by_stage.is_empty());
    }

    #[test]
    fn the_generated_catalog_is_accepted_and_as_large_as_said() {
        let catalog = Catalog::parse(&generated_catalog()).unwrap();
        let shipped = Catalog::parse(EMBEDDED).unwrap();
        assert_eq!(
            catalog.agencies.len(),
            shipped.agencies.len() + GENERATED_AGENCIES
        );
        assert_eq!(
            catalog.services.len(),
            shipped.services.len() + GENERATED_SERVICES
        );
    }
}
