use std::path::PathBuf;
use std::time::Duration;

use onestop_server::{Application, Settings};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const DEMO_PASSWORD: &str = "onestop-demo";
const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A server running in-process on its own database, Redis key prefix and
/// media folder.
pub struct TestApp {
    pub address: String,
    /// The running server's state, for driving background work directly.
    pub state: onestop_server::state::AppState,
    pub client: Client,
    pub settings: Settings,
    pub scratch: PathBuf,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    postgres_database: Option<String>,
}

pub struct Options {
    pub redis_url: String,
    pub token_burst: u32,
    pub max_upload_bytes: u64,
    /// Changes any other setting before the server starts.
    pub adjust: Option<AdjustSettings>,
    /// Runs before the server first starts on its database (named by the
    /// settings), e.g. to put in place what an older version left there.
    pub before_start: Option<BeforeStart>,
}

pub type AdjustSettings = Box<dyn FnOnce(&mut Settings) + Send>;

pub type BeforeStart = Box<
    dyn FnOnce(Settings) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send,
>;

impl Default for Options {
    fn default() -> Self {
        Options {
            redis_url: format!("redis://{REDIS_ADDR}"),
            token_burst: 50,
            max_upload_bytes: 2 * 1024 * 1024,
            adjust: None,
            before_start: None,
        }
    }
}

async fn create_postgres_database() -> (String, String) {
    use sea_orm::{ConnectionTrait, Database};
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = Database::connect(POSTGRES_ADMIN_URL)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    (
        name.clone(),
        format!("postgres://postgres@127.0.0.1:5432/{name}"),
    )
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: Options) -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    onestop_server::telemetry::init_tracing("text");
    let scratch = std::env::temp_dir().join(format!("onestop-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    let (postgres_database, database_url) = match backend {
        Backend::Postgres => {
            let (name, url) = create_postgres_database().await;
            (Some(name), url)
        }
        Backend::Sqlite => (
            None,
            format!("sqlite://{}/onestop.db?mode=rwc", scratch.display()),
        ),
    };
    let settings = Settings {
        database_url,
        database_max_connections: 5,
        redis_url: options.redis_url,
        redis_prefix: format!("test:{}:", Uuid::new_v4().simple()),
        bind_addr: "127.0.0.1:0".into(),
        media_dir: scratch.join("media"),
        demo_mode: Some(true),
        docs_enabled: Some(true),
        auth_signing_key: Some(SecretString::from(
            Uuid::new_v4().simple().to_string().repeat(2),
        )),
        rrn_index_key: Some(SecretString::from(
            Uuid::new_v4().simple().to_string().repeat(2),
        )),
        rrn_kek: Some(SecretString::from(
            Uuid::new_v4().simple().to_string().repeat(2),
        )),
        access_log_key: Some(SecretString::from(
            Uuid::new_v4().simple().to_string().repeat(2),
        )),
        token_burst: options.token_burst,
        max_upload_bytes: options.max_upload_bytes,
        outbox_poll_ms: 200,
        shutdown_grace_secs: 5,
        ..Settings::default()
    };
    let mut settings = settings;
    if let Some(adjust) = options.adjust {
        adjust(&mut settings);
    }
    settings.validate().expect("test settings are valid");
    if let Some(before_start) = options.before_start {
        before_start(settings.clone()).await;
    }
    let application = Application::build(settings.clone())
        .await
        .expect("the server starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let state = application.state();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server =
        tokio::spawn(application.run_until_stopped(async move { stopped.cancelled().await }));
    TestApp {
        address,
        state,
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        settings,
        scratch,
        stop,
        server: Some(server),
        postgres_database,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Signs in with the demo password: the whole answer, both tokens.
    pub async fn sign_in(&self, username: &str) -> Value {
        let response = self
            .client
            .post(self.url("/v1/auth/token"))
            .json(&json!({ "username": username, "password": DEMO_PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "sign in as {username}");
        response.json().await.unwrap()
    }

    pub async fn login(&self, username: &str) -> String {
        let pair = self.sign_in(username).await;
        pair["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token))
            .send()
            .await
            .unwrap()
    }

    /// The JSON body of a GET, whatever its status.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        self.get(path, token).await.json().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(token))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn upload(&self, token: &str, file_name: &str, bytes: Vec<u8>) -> Response {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file_name.to_owned())
            .mime_str("image/jpeg")
            .unwrap();
        let form = reqwest::multipart::Form::new().part("file", part);
        self.request(Method::POST, "/v1/attachments", Some(token))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn upload_photo(&self, token: &str) -> String {
        let response = self.upload(token, "certificate.jpg", tiny_jpeg()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Consents to having facts looked up in public records.
    pub async fn grant_consent(&self, token: &str) {
        let response = self
            .post_json(
                "/v1/me/consents",
                token,
                &json!({ "purpose": "shared_facts" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    /// Applies for services as `token`'s applicant, with consent to share
    /// facts; returns the submission.
    pub async fn apply(&self, token: &str, services: &[&str], attachment: Option<&str>) -> Value {
        self.grant_consent(token).await;
        let requests: Vec<Value> = services
            .iter()
            .map(|code| json!({ "service": code, "attachments": attachment.map(|a| vec![a]).unwrap_or_default() }))
            .collect();
        let response = self
            .post_json("/v1/submissions", token, &json!({ "services": requests }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// The official's view of a case and its ETag.
    pub async fn review_case(&self, token: &str, case_id: &str) -> (Value, String) {
        let response = self
            .get(&format!("/v1/review/cases/{case_id}"), token)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        (response.json().await.unwrap(), etag)
    }

    pub async fn decide(
        &self,
        token: &str,
        case_id: &str,
        etag: &str,
        outcome: &str,
        reason: &str,
    ) -> Response {
        self.request(
            Method::POST,
            &format!("/v1/review/cases/{case_id}/decision"),
            Some(token),
        )
        .header("If-Match", etag)
        .json(&json!({ "outcome": outcome, "reason": reason }))
        .send()
        .await
        .unwrap()
    }

    /// Counts rows of a table straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        use sea_orm::{ConnectionTrait, Database, Statement};
        let db = Database::connect(&self.settings.database_url)
            .await
            .unwrap();
        let row = db
            .query_one(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        db.close().await.ok();
        n
    }

    /// The one text column `v` of a query's rows, straight from the
    /// database.
    pub async fn column(&self, sql: &str) -> Vec<String> {
        use sea_orm::{ConnectionTrait, Database, Statement};
        let db = Database::connect(&self.settings.database_url)
            .await
            .unwrap();
        let rows = db
            .query_all(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap();
        db.close().await.ok();
        rows.iter()
            .map(|row| row.try_get::<String>("", "v").unwrap())
            .collect()
    }

    /// Files in the media folder, partial ones included.
    pub fn media_files(&self) -> usize {
        fn walk(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| {
                            if e.path().is_dir() {
                                walk(&e.path())
                            } else {
                                1
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.settings.media_dir)
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some(name) = self.postgres_database.take() {
            // Dropping needs async; a short-lived runtime on another thread
            // keeps the test's runtime out of it.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    use sea_orm::{ConnectionTrait, Database};
                    if let Ok(admin) = Database::connect(POSTGRES_ADMIN_URL).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// A real, tiny JPEG (a 1×1 baseline image).
pub fn tiny_jpeg() -> Vec<u8> {
    const HEX: &str = "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080001000101011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00fbd3ffd9";
    (0..HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&HEX[i..i + 2], 16).unwrap())
        .collect()
}

pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "content type");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "problem status");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:onestop:problem:"),
        "{body}"
    );
    body
}
