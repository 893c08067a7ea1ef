//! A local FCM HTTP v1 server, token endpoint included.
//!
//! `POST /token` is the OAuth2 JWT-bearer grant (RFC 7523) as Google's
//! token endpoint speaks it: the RS256 assertion must be signed with the
//! test service account's key, name it as issuer, this server's token URL
//! as audience and the FCM scope. `POST /v1/projects/{project}/messages:send`
//! takes only access tokens this server issued and answers like FCM does,
//! errors included.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Form, Path as UrlPath};
use poem::{handler, post, EndpointExt, Request, Response, Route, Server};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The project of the test service account.
pub const TEST_PROJECT_ID: &str = "onestop-test";

/// The client e-mail of the test service account.
pub const TEST_CLIENT_EMAIL: &str = "notifier@onestop-test.iam.gserviceaccount.com";

/// The key of the test service account. TEST ONLY: it is published with
/// the code and protects nothing.
const TEST_PRIVATE_KEY_PEM: &str = include_str!("../keys/service-account.test-only.key.pem");

/// The public half of the test service account's key.
pub const TEST_PUBLIC_KEY_PEM: &str = include_str!("../keys/service-account.test-only.pub.pem");

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ACCESS_TOKEN_TTL_SECS: u64 = 3600;

/// A running fake FCM. Stops when dropped.
pub struct FakeFcm {
    state: Arc<State>,
    base_url: String,
    stop: CancellationToken,
}

struct State {
    token_url: String,
    decoding_key: DecodingKey,
    issued: Mutex<HashSet<String>>,
    messages: Mutex<Vec<(Instant, Value)>>,
    sends_by_token: Mutex<HashMap<String, usize>>,
    delay_ms: std::sync::atomic::AtomicU64,
    token_requests: AtomicUsize,
    send_requests: AtomicUsize,
    unregistered: Mutex<HashSet<String>>,
    outage: Mutex<Option<Outage>>,
}

struct Outage {
    remaining: usize,
    retry_after_secs: u64,
}

impl FakeFcm {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start() -> FakeFcm {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("a free port on 127.0.0.1");
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .expect("a TCP listener has a port");
        let base_url = format!("http://127.0.0.1:{port}");
        let state = Arc::new(State {
            token_url: format!("{base_url}/token"),
            decoding_key: DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes())
                .expect("the committed test public key is a valid PEM"),
            issued: Mutex::default(),
            messages: Mutex::default(),
            sends_by_token: Mutex::default(),
            delay_ms: std::sync::atomic::AtomicU64::new(0),
            token_requests: AtomicUsize::new(0),
            send_requests: AtomicUsize::new(0),
            unregistered: Mutex::default(),
            outage: Mutex::default(),
        });
        let app = Route::new()
            .at("/token", post(token_endpoint))
            .at("/v1/projects/*rest", post(send_endpoint))
            .data(state.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, stopped, Some(Duration::from_secs(1)))
                .await;
        });
        FakeFcm {
            state,
            base_url,
            stop,
        }
    }

    /// The base URL, for `FCM_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.base_url.clone()
    }

    /// The OAuth2 token URL, as the service account names it.
    pub fn token_url(&self) -> String {
        self.state.token_url.clone()
    }

    /// Writes a service-account JSON file into `dir` whose `token_uri`
    /// points at this server and whose key is the test-only key; returns
    /// its path, for `FCM_SERVICE_ACCOUNT`.
    pub fn write_service_account(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("create the service account's folder");
        let path = dir.join(format!(
            "fcm-service-account-{}.json",
            Uuid::new_v4().simple()
        ));
        let account = json!({
            "type": "service_account",
            "project_id": TEST_PROJECT_ID,
            "private_key_id": "0000000000000000000000000000000000000000",
            "private_key": TEST_PRIVATE_KEY_PEM,
            "client_email": TEST_CLIENT_EMAIL,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.state.token_url,
            "universe_domain": "googleapis.com",
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&account).unwrap())
            .expect("write the service account");
        path
    }

    /// The test service account's private key (PEM), to sign assertions
    /// in tests of the token endpoint itself.
    pub fn private_key_pem() -> &'static str {
        TEST_PRIVATE_KEY_PEM
    }

    /// Every message accepted so far (the `message` object of each send),
    /// in order.
    pub fn messages(&self) -> Vec<Value> {
        let messages = self.state.messages.lock().unwrap();
        messages
            .iter()
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// How many messages were accepted so far.
    pub fn message_count(&self) -> usize {
        self.state.messages.lock().unwrap().len()
    }

    /// Every message accepted so far with when it arrived, in order,
    /// starting at `from` (for readers that poll).
    pub fn arrivals_since(&self, from: usize) -> Vec<(Instant, Value)> {
        let messages = self.state.messages.lock().unwrap();
        messages.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// How many sends named `device_token`, answered with success or not.
    pub fn sends_to(&self, device_token: &str) -> usize {
        let sends = self.state.sends_by_token.lock().unwrap();
        sends.get(device_token).copied().unwrap_or(0)
    }

    /// From now on every send is answered only after `delay`, as a slow
    /// network would.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Waits until at least `count` messages were accepted and returns
    /// them all; panics after `timeout`.
    pub async fn wait_for_messages(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if Instant::now() >= deadline {
                panic!(
                    "FCM received {} message(s) within {timeout:?}, expected {count}: {messages:#?}",
                    messages.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many token requests arrived, good or bad.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// How many send requests arrived, answered with success or not.
    pub fn send_requests(&self) -> usize {
        self.state.send_requests.load(Ordering::SeqCst)
    }

    /// From now on, sends to `device_token` are answered 404 `UNREGISTERED`,
    /// as for an app that was uninstalled.
    pub fn unregister(&self, device_token: &str) {
        self.state
            .unregistered
            .lock()
            .unwrap()
            .insert(device_token.to_owned());
    }

    /// The next `requests` sends are answered 503 `UNAVAILABLE` with
    /// `Retry-After: retry_after_secs`.
    pub fn fail_next(&self, requests: usize, retry_after_secs: u64) {
        *self.state.outage.lock().unwrap() = Some(Outage {
            remaining: requests,
            retry_after_secs,
        });
    }
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json; charset=UTF-8")
        .body(body.to_string())
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    assertion: Option<String>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    scope: Option<String>,
    iat: Option<u64>,
    exp: u64,
}

fn invalid_grant(description: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({ "error": "invalid_grant", "error_description": description }),
    )
}

#[handler]
fn token_endpoint(state: Data<&Arc<State>>, Form(form): Form<TokenForm>) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    if form.grant_type.as_deref() != Some(GRANT_TYPE) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "unsupported_grant_type", "error_description": "Invalid grant_type" }),
        );
    }
    let Some(assertion) = form.assertion else {
        return invalid_grant("Missing assertion");
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&state.token_url]);
    validation.set_issuer(&[TEST_CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims =
        match jsonwebtoken::decode::<AssertionClaims>(&assertion, &state.decoding_key, &validation)
        {
            Ok(data) => data.claims,
            Err(error) => return invalid_grant(&format!("Invalid JWT: {error}")),
        };
    let scopes_fcm = claims
        .scope
        .as_deref()
        .is_some_and(|scope| scope.split(' ').any(|s| s == SCOPE));
    if !scopes_fcm {
        return invalid_grant("The assertion does not ask for the firebase.messaging scope");
    }
    match claims.iat {
        Some(iat) if claims.exp > iat && claims.exp - iat <= ACCESS_TOKEN_TTL_SECS => {}
        _ => return invalid_grant("Invalid JWT: iat missing or lifetime over one hour"),
    }
    let access_token = format!("ya29.test-{}", Uuid::new_v4().simple());
    state.issued.lock().unwrap().insert(access_token.clone());
    json_response(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "expires_in": ACCESS_TOKEN_TTL_SECS,
            "token_type": "Bearer",
        }),
    )
}

fn google_error(status: StatusCode, code_name: &str, message: &str, details: Value) -> Response {
    json_response(
        status,
        json!({ "error": {
            "code": status.as_u16(),
            "message": message,
            "status": code_name,
            "details": details,
        }}),
    )
}

fn fcm_error_detail(error_code: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": error_code,
    })
}

fn invalid_argument(field: &str, description: &str) -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        &format!("Invalid value at '{field}': {description}"),
        json!([
            fcm_error_detail("INVALID_ARGUMENT"),
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{ "field": field, "description": description }],
            }
        ]),
    )
}

#[handler]
async fn send_endpoint(
    state: Data<&Arc<State>>,
    UrlPath(rest): UrlPath<String>,
    request: &Request,
    body: Vec<u8>,
) -> Response {
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    send_inner(&state, &rest, request, &body)
}

fn send_inner(state: &State, rest: &str, request: &Request, body: &[u8]) -> Response {
    state.send_requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut outage = state.outage.lock().unwrap();
        if let Some(current) = outage.as_mut() {
            if current.remaining > 0 {
                current.remaining -= 1;
                let retry_after = current.retry_after_secs;
                let mut response = google_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "The service is currently unavailable.",
                    json!([fcm_error_detail("UNAVAILABLE")]),
                );
                response
                    .headers_mut()
                    .insert("retry-after", retry_after.to_string().parse().unwrap());
                return response;
            }
            *outage = None;
        }
    }
    let Some(project) = rest.strip_suffix("/messages:send") else {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "No such method.",
            json!([]),
        );
    };
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let authorised = bearer.is_some_and(|token| state.issued.lock().unwrap().contains(token));
    if !authorised {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            json!([]),
        );
    }
    if project != TEST_PROJECT_ID {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'cloudmessaging.messages.create' denied on resource.",
            json!([]),
        );
    }
    let Ok(mut request_body) = serde_json::from_slice::<Value>(body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            json!([]),
        );
    };
    let message = request_body["message"].take();
    if let Err((field, description)) = check_message(&message) {
        return invalid_argument(field, description);
    }
    let token = message["token"].as_str().unwrap_or_default().to_owned();
    *state
        .sends_by_token
        .lock()
        .unwrap()
        .entry(token.clone())
        .or_default() += 1;
    if state.unregistered.lock().unwrap().contains(&token) {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            json!([fcm_error_detail("UNREGISTERED")]),
        );
    }
    state
        .messages
        .lock()
        .unwrap()
        .push((Instant::now(), message));
    json_response(
        StatusCode::OK,
        json!({ "name": format!("projects/{project}/messages/0:{}", Uuid::new_v4().simple()) }),
    )
}

/// Checks the parts of the v1 `message` FCM would refuse.
fn check_message(message: &Value) -> Result<(), (&'static str, &'static str)> {
    let Some(object) = message.as_object() else {
        return Err(("message", "Required"));
    };
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|key| object.contains_key(**key))
        .count();
    if targets != 1 {
        return Err((
            "message",
            "Exactly one of token, topic or condition is required",
        ));
    }
    match object.get("token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => {}
        _ => return Err(("message.token", "Invalid registration token")),
    }
    if let Some(notification) = object.get("notification") {
        for field in ["title", "body"] {
            if notification.get(field).is_some_and(|v| !v.is_string()) {
                return Err(("message.notification", "title and body must be strings"));
            }
        }
    }
    if let Some(data) = object.get("data") {
        let Some(data) = data.as_object() else {
            return Err(("message.data", "Must be a map of strings"));
        };
        if data.values().any(|value| !value.is_string()) {
            return Err(("message.data", "Every value must be a string"));
        }
    }
    if let Some(android) = object.get("android") {
        if let Some(ttl) = android.get("ttl") {
            let valid = ttl
                .as_str()
                .and_then(|t| t.strip_suffix('s'))
                .is_some_and(|secs| {
                    let mut parts = secs.splitn(2, '.');
                    let whole = parts.next().unwrap_or_default();
                    let fraction = parts.next().unwrap_or("0");
                    !whole.is_empty()
                        && whole.bytes().all(|b| b.is_ascii_digit())
                        && fraction.bytes().all(|b| b.is_ascii_digit())
                        && fraction.len() <= 9
                });
            if !valid {
                return Err(("message.android.ttl", "Must be a duration such as \"3.5s\""));
            }
        }
        if let Some(priority) = android.get("priority") {
            if !matches!(priority.as_str(), Some("NORMAL" | "HIGH")) {
                return Err(("message.android.priority", "Must be NORMAL or HIGH"));
            }
        }
        if android
            .get("collapse_key")
            .is_some_and(|key| !key.is_string())
        {
            return Err(("message.android.collapse_key", "Must be a string"));
        }
    }
    Ok(())
}
