//! Request bodies bounded by what the handlers read, not by what the
//! headers claim.
//!
//! A body is counted as it is read, whatever framed it: a declared
//! `Content-Length` over the limit is refused before a byte is read, and
//! a chunked body is cut off the moment it passes the limit, after which
//! the request is answered 413 whatever the handler made of the cut. A
//! compressed request body is refused (415): the apps have no need to
//! send one, and inflating it is how a 250 KB request becomes 250 MB.
//! Responses are still compressed for clients that ask. Methods that take
//! no body (GET, HEAD, DELETE, OPTIONS) have theirs left unread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};

use crate::error::{Problem, ProblemJson};

pub struct BodyLimit {
    pub max_json_bytes: u64,
    pub max_upload_bytes: u64,
}

/// Multipart framing and a resumable upload's bookkeeping add a little to
/// the file itself.
const UPLOAD_FRAMING_BYTES: u64 = 64 * 1024;

impl BodyLimit {
    /// The most a request to `path` may send.
    fn limit_for(&self, path: &str) -> u64 {
        if is_upload(path) {
            self.max_upload_bytes + UPLOAD_FRAMING_BYTES
        } else {
            self.max_json_bytes
        }
    }
}

/// The routes that take files: they stream what they read and may be sent
/// without a length.
fn is_upload(path: &str) -> bool {
    path.starts_with("/v1/attachments") || path.starts_with("/v1/uploads")
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            limits: BodyLimit {
                max_json_bytes: self.max_json_bytes,
                max_upload_bytes: self.max_upload_bytes,
            },
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    limits: BodyLimit,
}

fn too_large(limit: u64) -> Response {
    metrics::counter!("request_bodies_refused_total", "reason" => "too_large").increment(1);
    ProblemJson(Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        Some(format!(
            "the body is larger than the limit of {limit} bytes; nothing was changed"
        )),
    ))
    .into_response()
}

/// Whether a `Content-Encoding` value says the body is encoded at all.
fn is_encoded(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .map(|coding| coding.trim_ascii())
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        if !matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        ) {
            // No route of these methods reads a body: whatever was sent is
            // left unread, and nothing may try to decode it.
            request.headers_mut().remove(header::CONTENT_ENCODING);
            request.set_body(Body::empty());
            return self
                .inner
                .call(request)
                .await
                .map(IntoResponse::into_response);
        }
        if request
            .headers()
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .any(|value| is_encoded(value.as_bytes()))
        {
            metrics::counter!("request_bodies_refused_total", "reason" => "encoded").increment(1);
            let mut response = ProblemJson(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                Some("send the body without Content-Encoding; compressed request bodies are not accepted".into()),
            ))
            .into_response();
            // RFC 9110 §12.5.3: say which codings are accepted.
            response.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            return Ok(response);
        }
        let path = request.uri().path();
        let limit = self.limits.limit_for(path);
        let upload = is_upload(path);
        let length = request
            .header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|length| length > limit) {
            return Ok(too_large(limit));
        }
        let chunked = request
            .header(header::TRANSFER_ENCODING)
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked && !upload {
            return Ok(ProblemJson(Problem::new(
                StatusCode::LENGTH_REQUIRED,
                "length-required",
                Some("send Content-Length with the body".into()),
            ))
            .into_response());
        }
        let overflowed = Arc::new(AtomicBool::new(false));
        let counted = counted(request.take_body(), limit, overflowed.clone());
        request.set_body(counted);
        let outcome = self.inner.call(request).await;
        if overflowed.load(Ordering::Acquire) {
            return Ok(too_large(limit));
        }
        outcome.map(IntoResponse::into_response)
    }
}

/// The body's bytes as they come, ending in an error once more than
/// `limit` have come (and `overflowed` set, for the answer).
pub fn counted(body: Body, limit: u64, overflowed: Arc<AtomicBool>) -> Body {
    let mut seen = 0u64;
    let stream = body
        .into_bytes_stream()
        .map(move |chunk: std::io::Result<Bytes>| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            if seen > limit {
                overflowed.store(true, Ordering::Release);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the body is larger than the limit of {limit} bytes"),
                ));
            }
            Ok(chunk)
        });
    Body::from_bytes_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_cut_off_once_it_passes_the_limit() {
        let flag = Arc::new(AtomicBool::new(false));
        let read = counted(Body::from(vec![0u8; 100]), 99, flag.clone())
            .into_bytes()
            .await;
        assert!(read.is_err());
        assert!(flag.load(Ordering::Acquire));

        let flag = Arc::new(AtomicBool::new(false));
        let read = counted(Body::from(vec![0u8; 100]), 100, flag.clone())
            .into_bytes()
            .await
            .unwrap();
        assert_eq!(read.len(), 100);
        assert!(!flag.load(Ordering::Acquire));
    }

    #[test]
    fn identity_is_the_only_coding_taken() {
        assert!(!is_encoded(b"identity"));
        assert!(!is_encoded(b" IDENTITY "));
        assert!(is_encoded(b"gzip"));
        assert!(is_encoded(b"identity, br"));
        assert!(is_encoded(b"zstd"));
    }
}
