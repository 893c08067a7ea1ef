//! One error type for the server and its RFC 9457 rendering.
//!
//! Every variant maps to one HTTP status and one stable problem `type`,
//! documented in `mobile-contract/problem-types.md`. Database and other
//! unexpected errors are logged with their whole cause chain and answered
//! as a plain 500 that reveals nothing.

use std::time::Duration;

use poem::http::{HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object};

pub use onestop_runtime::ErrorChain;

/// tus's status for a chunk that does not match its checksum.
pub const CHECKSUM_MISMATCH: StatusCode = match StatusCode::from_u16(460) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "urn:onestop:problem:";

/// Every problem kind the server answers with: kind, status, meaning. The
/// mobile contract publishes this table.
pub const PROBLEM_KINDS: &[(&str, u16, &str)] = &[
    ("malformed-request", 400, "The request could not be read: broken JSON, a missing or mistyped field, a bad parameter."),
    ("unauthenticated", 401, "No access token, or it expired or is invalid: refresh it or sign in."),
    ("invalid-credentials", 401, "Wrong username or password."),
    ("invalid-refresh-token", 401, "The refresh token is spent, revoked or expired: sign in again."),
    ("forbidden", 403, "The account's role may not do this."),
    ("not-found", 404, "No such object, or not one the caller may see."),
    ("method-not-allowed", 405, "The address exists but not with this method."),
    ("conflict", 409, "The object is in a state that does not allow this (e.g. a decided case)."),
    ("claimed-by-another", 409, "Another official holds a live claim on the case: wait for it to lapse, or take the case over (POST /v1/review/cases/{id}/take-over)."),
    ("idempotency-key-in-progress", 409, "A request with this Idempotency-Key is still running: retry later."),
    ("length-required", 411, "The body was sent without Content-Length (files may stream without one)."),
    ("stale-etag", 412, "If-Match names an old version: reload and try again."),
    ("tus-version-unsupported", 412, "A resumable upload request without `Tus-Resumable: 1.0.0`; `Tus-Version` lists the versions served."),
    ("payload-too-large", 413, "The body or file is larger than allowed."),
    ("unsupported-media-type", 415, "The body or file is of a type not accepted (decided from the bytes for files), or the body was sent with a `Content-Encoding`."),
    ("range-not-satisfiable", 416, "The requested byte range lies outside the file; `Content-Range` gives its size."),
    ("validation-failed", 422, "The request is well-formed but asks for something impossible; `detail` says what."),
    ("consent-required", 422, "Facts must be looked up and the person has not consented: `detail` names the consent (grant it with POST /v1/me/consents)."),
    ("not-eligible", 422, "The person does not qualify for a service; `detail` says why, in their language."),
    ("idempotency-key-reused", 422, "This Idempotency-Key was used with a different request body."),
    ("if-match-required", 428, "Send the object's ETag in If-Match."),
    ("rate-limited", 429, "Too many requests: wait `Retry-After` seconds."),
    ("header-fields-too-large", 431, "The request's headers are too many or too large."),
    ("checksum-mismatch", 460, "The chunk of a resumable upload does not match its `Upload-Checksum`; it was discarded, send it again."),
    ("internal", 500, "Something failed on the server; nothing was changed. Safe to retry with the same Idempotency-Key."),
    ("not-ready", 503, "The server cannot serve yet (readiness)."),
    ("unavailable", 503, "A component the request needs is unavailable: retry later."),
];

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("the request body is not valid: {0}")]
    MalformedBody(String),
    /// A header or parameter that cannot be used.
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in first: the access token is missing, expired or invalid")]
    Unauthenticated,
    #[error("the username or password is wrong")]
    InvalidCredentials,
    #[error("the refresh token is not valid any more; sign in again")]
    InvalidRefreshToken,
    #[error("this needs your consent `{0}` to look facts up in public records; grant it with POST /v1/me/consents")]
    ConsentRequired(&'static str),
    #[error("{0}")]
    NotEligible(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("another official has claimed this case (until {0}); take it over to work on it")]
    ClaimedByAnother(String),
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInProgress,
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error("the case changed since you loaded it; reload and decide again")]
    StaleEtag,
    #[error("send the case's ETag in If-Match so a decision cannot overwrite another one")]
    IfMatchRequired,
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the chunk does not match its Upload-Checksum; it was discarded, send it again")]
    ChecksumMismatch,
    #[error("too many requests; try again in {} seconds", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("the service is not ready: {0}")]
    Unavailable(&'static str),
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("storage error")]
    Storage(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::ConsentRequired(_) | ApiError::NotEligible(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::MalformedBody(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated
            | ApiError::InvalidCredentials
            | ApiError::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_)
            | ApiError::ClaimedByAnother(_)
            | ApiError::IdempotencyInProgress => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::StaleEtag => StatusCode::PRECONDITION_FAILED,
            ApiError::IfMatchRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ChecksumMismatch => CHECKSUM_MISMATCH,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Storage(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The stable, kebab-case kind the apps switch on.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation-failed",
            ApiError::ConsentRequired(_) => "consent-required",
            ApiError::NotEligible(_) => "not-eligible",
            ApiError::MalformedBody(_) | ApiError::BadRequest(_) => "malformed-request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::InvalidCredentials => "invalid-credentials",
            ApiError::InvalidRefreshToken => "invalid-refresh-token",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::ClaimedByAnother(_) => "claimed-by-another",
            ApiError::IdempotencyInProgress => "idempotency-key-in-progress",
            ApiError::IdempotencyKeyReused => "idempotency-key-reused",
            ApiError::StaleEtag => "stale-etag",
            ApiError::IfMatchRequired => "if-match-required",
            ApiError::TooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::ChecksumMismatch => "checksum-mismatch",
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Database(_) | ApiError::Storage(_) | ApiError::Internal(_) => "internal",
        }
    }

    pub fn into_problem(self) -> Problem {
        let status = self.status();
        if status.is_server_error() && !matches!(self, ApiError::Unavailable(_)) {
            tracing::error!(error = %ErrorChain(&self), "request failed");
            return Problem::new(status, "internal", None);
        }
        let detail = self.to_string();
        let mut problem = Problem::new(status, self.kind(), Some(detail));
        if let ApiError::RateLimited { retry_after } = self {
            problem.retry_after = Some(retry_after.as_secs().max(1));
        }
        problem
    }
}

/// Maps a unique-constraint violation to a 409 with `what` as the detail,
/// every other database error to itself.
pub fn conflict_on_unique(error: sea_orm::DbErr, what: &str) -> ApiError {
    match error.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ApiError::Conflict(what.to_owned()),
        _ => ApiError::Database(error),
    }
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// Stable identifier of the kind of problem, `urn:onestop:problem:<kind>`.
    #[oai(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem, the same for every occurrence.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, for a person to read.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    /// Seconds to wait before trying again (also in `Retry-After`).
    #[oai(skip_serializing_if_is_none)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: Option<String>) -> Self {
        Problem {
            kind: format!("{PROBLEM_BASE}{kind}"),
            title: match status.as_u16() {
                460 => "Checksum Mismatch",
                _ => status.canonical_reason().unwrap_or("Error"),
            }
            .to_owned(),
            status: status.as_u16(),
            detail,
            retry_after: None,
        }
    }

    pub fn internal() -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
    }
}

/// `application/problem+json` body; sets `Retry-After` when the problem
/// says how long to wait.
#[derive(Debug, Clone)]
pub struct ProblemJson(pub Problem);

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = "application/problem+json";

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.0.retry_after;
        let body = serde_json::to_vec(&poem_openapi::types::ToJSON::to_json(&self.0))
            .unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::builder()
            .status(status)
            .content_type(Self::CONTENT_TYPE)
            .body(body);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

impl ApiResponse for ProblemJson {
    fn meta() -> poem_openapi::registry::MetaResponses {
        poem_openapi::registry::MetaResponses { responses: vec![] }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

/// Declares the error responses of one operation: each listed status with
/// a problem body, plus 500. An error whose status the operation does not
/// declare is logged and answered as 500, so the document never lies.
#[macro_export]
macro_rules! problems {
    ($(#[$meta:meta])* $vis:vis $name:ident { $($variant:ident = $status:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(poem_openapi::ApiResponse, Debug)]
        $vis enum $name {
            $(
                #[oai(status = $status)]
                $variant($crate::error::ProblemJson),
            )+
            /// Something failed on our side; nothing was changed.
            #[oai(status = 500)]
            Internal($crate::error::ProblemJson),
        }

        impl From<$crate::error::ApiError> for $name {
            fn from(error: $crate::error::ApiError) -> Self {
                let problem = error.into_problem();
                match problem.status {
                    $( $status => Self::$variant($crate::error::ProblemJson(problem)), )+
                    500 => Self::Internal($crate::error::ProblemJson(problem)),
                    status => {
                        tracing::error!(status, kind = %problem.kind, operation = stringify!($name),
                            "an operation produced a status it does not declare");
                        Self::Internal($crate::error::ProblemJson($crate::error::Problem::internal()))
                    }
                }
            }
        }

        impl From<sea_orm::DbErr> for $name {
            fn from(error: sea_orm::DbErr) -> Self {
                $crate::error::ApiError::from(error).into()
            }
        }
    };
}

/// Turns an error the framework raised itself (unknown route, wrong method,
/// unparseable body, missing length, body too large, wrong content type,
/// missing credentials) into a problem, keeping responses our operations
/// built as they are.
pub fn framework_error_to_problem(error: poem::Error) -> Response {
    if error.is_from_response() {
        return error.into_response();
    }
    let status = error.status();
    let kind = match status {
        StatusCode::BAD_REQUEST => "malformed-request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::CONFLICT => "conflict",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::LENGTH_REQUIRED => "length-required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation-failed",
        StatusCode::TOO_MANY_REQUESTS => "rate-limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    };
    let detail = if status.is_server_error() {
        tracing::error!(error = %error, "request failed inside the framework");
        None
    } else if status == StatusCode::UNAUTHORIZED {
        Some("sign in first: the access token is missing, expired or invalid".to_owned())
    } else if status == StatusCode::NOT_FOUND {
        Some("there is nothing at this address".to_owned())
    } else {
        Some(error.to_string())
    };
    ProblemJson(Problem::new(status, kind, detail)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_kind_is_in_the_published_table_with_its_status() {
        let samples = [
            ApiError::Validation(String::new()),
            ApiError::ConsentRequired(""),
            ApiError::NotEligible(String::new()),
            ApiError::MalformedBody(String::new()),
            ApiError::Unauthenticated,
            ApiError::InvalidCredentials,
            ApiError::InvalidRefreshToken,
            ApiError::Forbidden(""),
            ApiError::NotFound(""),
            ApiError::Conflict(String::new()),
            ApiError::ClaimedByAnother(String::new()),
            ApiError::IdempotencyInProgress,
            ApiError::IdempotencyKeyReused,
            ApiError::StaleEtag,
            ApiError::IfMatchRequired,
            ApiError::TooLarge { limit: 1 },
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::ChecksumMismatch,
            ApiError::BadRequest(String::new()),
            ApiError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            ApiError::Unavailable(""),
            ApiError::Internal(String::new()),
        ];
        for error in samples {
            let (kind, status) = (error.kind(), error.status().as_u16());
            assert!(
                PROBLEM_KINDS
                    .iter()
                    .any(|(k, s, _)| *k == kind && *s == status),
                "{kind} ({status}) is missing from PROBLEM_KINDS"
            );
        }
    }

    #[test]
    fn server_errors_reveal_nothing() {
        let problem = ApiError::Internal("SELECT secret FROM users".into()).into_problem();
        assert_eq!(problem.status, 500);
        assert!(problem.detail.is_none());
    }

    #[test]
    fn a_rate_limit_says_how_long_to_wait() {
        let problem = ApiError::RateLimited {
            retry_after: Duration::from_millis(200),
        }
        .into_problem();
        assert_eq!(problem.retry_after, Some(1));
    }
}
