//! Limits and headers every response gets: bounded headers and time,
//! `nosniff`, and no caching of personal data unless a route says otherwise.

use std::sync::Arc;
use std::time::Duration;

use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::error::{Problem, ProblemJson};

pub struct HttpGuard {
    pub request_timeout: Duration,
    pub upload_timeout: Duration,
    pub allowed_methods: Arc<AllowedMethods>,
}

/// The methods each path of the API document answers, for the `Allow`
/// header a 405 must carry.
pub struct AllowedMethods {
    routes: Vec<(Vec<Option<String>>, String)>,
}

impl AllowedMethods {
    /// From an OpenAPI document: `{name}` segments match anything.
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        let mut routes = Vec::new();
        if let Some(paths) = spec["paths"].as_object() {
            for (path, operations) in paths {
                let segments = path
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                    .collect();
                let mut methods: Vec<String> = operations
                    .as_object()
                    .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                    .unwrap_or_default();
                if methods.iter().any(|m| m == "GET") {
                    methods.push("HEAD".into());
                }
                routes.push((segments, methods.join(", ")));
            }
        }
        AllowedMethods { routes }
    }

    pub fn for_path(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.split('/').collect();
        self.routes
            .iter()
            .find(|(segments, _)| {
                segments.len() == parts.len()
                    && segments
                        .iter()
                        .zip(&parts)
                        .all(|(s, p)| s.as_deref().is_none_or(|s| s == *p))
            })
            .map(|(_, methods)| methods.as_str())
    }
}

impl<E: Endpoint> Middleware<E> for HttpGuard {
    type Output = HttpGuardEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        HttpGuardEndpoint {
            inner: ep,
            request_timeout: self.request_timeout,
            upload_timeout: self.upload_timeout,
            allowed_methods: self.allowed_methods.clone(),
        }
    }
}

pub struct HttpGuardEndpoint<E> {
    inner: E,
    request_timeout: Duration,
    upload_timeout: Duration,
    allowed_methods: Arc<AllowedMethods>,
}

/// At most this many request headers, and this many bytes of them in all.
/// Phones send about a dozen; hyper's own ceilings are far higher.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;

fn refuse(status: StatusCode, kind: &str, detail: String) -> Response {
    ProblemJson(Problem::new(status, kind, Some(detail))).into_response()
}

impl<E: Endpoint> Endpoint for HttpGuardEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let headers = request.headers();
        let header_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
            return Ok(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header-fields-too-large",
                format!(
                    "send at most {MAX_HEADERS} headers of at most {MAX_HEADER_BYTES} bytes in all"
                ),
            ));
        }
        let is_upload = request.uri().path().starts_with("/v1/attachments")
            || request.uri().path().starts_with("/v1/uploads");
        let limit = if is_upload {
            self.upload_timeout
        } else {
            self.request_timeout
        };
        let path = request.uri().path().to_owned();
        let mut response = match tokio::time::timeout(limit, self.inner.call(request)).await {
            Ok(outcome) => outcome?.into_response(),
            Err(_) => {
                tracing::warn!(timeout = ?limit, "a request took too long and was cut off");
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the request took too long; nothing was changed, try again".into(),
                )
            }
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED
            && !response.headers().contains_key(header::ALLOW)
        {
            if let Some(methods) = self.allowed_methods.for_path(&path) {
                if let Ok(value) = HeaderValue::from_str(methods) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
            }
        }
        let headers = response.headers_mut();
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        Ok(response)
    }
}
