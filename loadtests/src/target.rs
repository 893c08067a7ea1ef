//! The server under test: the release binary started as a child process
//! in a scratch folder, or one already running (`--url`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The server a benchmark talks to; a child process is stopped when this
/// is dropped.
pub struct Target {
    pub url: String,
    /// The server's process, when known (always for a child).
    pub pid: Option<u32>,
    pub media_dir: PathBuf,
    pub child: Option<std::process::Child>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value after `name` on the command line (`--rounds 3`).
pub fn argument(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Starts the release server (`onestop-server` beside this program, or
/// `--server <path>`) on a free loopback port, with its working folder
/// under `scratch` (so the embedded SQLite file and the keys it makes go
/// there), media under `scratch/media`, its output in
/// `scratch/server.log`, a Redis prefix of its own, and sign-in and
/// upload budgets high enough that they never answer instead of what is
/// measured. `env` is set last, so it may add settings or override
/// these. Waits until `/healthz` answers (at most three minutes: a large
/// catalog is seeded at start); panics, with the end of its log, if the
/// server stops before that.
///
/// With `--url <base>` on the command line nothing is started: that
/// server is used, with `--pid` and `--media-dir` if given.
pub async fn start_target(scratch: &Path, env: &[(&str, String)]) -> Target {
    start_target_on(scratch, env, None).await
}

/// [`start_target`], the server started under `taskset -c <cpus>` when
/// given, so its runtime sizes itself to those cores.
pub async fn start_target_on(scratch: &Path, env: &[(&str, String)], cpus: Option<&str>) -> Target {
    if let Some(url) = argument("--url") {
        return Target {
            url,
            pid: argument("--pid").and_then(|p| p.parse().ok()),
            media_dir: argument("--media-dir")
                .map(PathBuf::from)
                .unwrap_or_else(|| scratch.to_owned()),
            child: None,
        };
    }
    let binary = argument("--server").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .expect("this program's path")
            .with_file_name("onestop-server")
    });
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p onestop-server (or pass --server)",
        binary.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let cwd = scratch.join("server");
    let media_dir = scratch.join("media");
    std::fs::create_dir_all(&cwd).unwrap();
    let log = std::fs::File::create(scratch.join("server.log")).unwrap();
    let mut command = match cpus {
        Some(cpus) => {
            let mut pinned = std::process::Command::new("taskset");
            pinned.arg("-c").arg(cpus).arg(&binary);
            pinned
        }
        None => std::process::Command::new(&binary),
    };
    command
        .arg("serve")
        .current_dir(&cwd)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("MEDIA_DIR", &media_dir)
        .env(
            "REDIS_PREFIX",
            format!("bench:{}:", uuid::Uuid::new_v4().simple()),
        )
        .env("UPLOAD_RATE_PER_MINUTE", "1000000")
        .env("UPLOAD_BURST", "1000000")
        .env("TOKEN_RATE_PER_MINUTE", "100000")
        .env("TOKEN_BURST", "10000")
        .env("ACCOUNT_SIGN_IN_PER_MINUTE", "100000")
        .env("ACCOUNT_SIGN_IN_BURST", "10000")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for inherited in ["DATABASE_URL", "REDIS_URL"] {
        command.env_remove(inherited);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the server starts");
    let url = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    for _ in 0..1800 {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(scratch.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "the server stopped ({status}) before answering:\n{}",
                tail.join("\n")
            );
        }
        if probe
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Target {
        url,
        pid: Some(child.id()),
        media_dir,
        child: Some(child),
    }
}

/// Signs in as the demo applicant `mother1`: her access token.
pub async fn sign_in(client: &reqwest::Client, url: &str) -> String {
    let response: serde_json::Value = client
        .post(format!("{url}/v1/auth/token"))
        .json(&serde_json::json!({ "username": "mother1", "password": "onestop-demo" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"]
        .as_str()
        .expect("signed in")
        .to_owned()
}

/// The machine's load averages (1, 5, 15 minutes), printed beside every
/// figure: this machine is shared.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
