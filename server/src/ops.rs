//! Operator endpoints, outside the API document: liveness, readiness and
//! metrics.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{handler, IntoResponse, Response};
use sea_orm::DatabaseConnection;
use serde_json::json;

use crate::error::{Problem, ProblemJson};
use crate::media::MediaStore;
use crate::redis_link::RedisLink;
use crate::telemetry::metrics_handle;

/// What readiness asks after.
#[derive(Clone)]
pub struct Readiness {
    pub db: DatabaseConnection,
    pub redis: Arc<RedisLink>,
    pub media: Arc<dyn MediaStore>,
}

/// The process is up.
#[handler]
pub fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers, Redis answers, the media
/// store is writable. Each check is named in the answer.
#[handler]
pub async fn readyz(readiness: Data<&Readiness>) -> Response {
    let database = readiness.db.ping().await.is_ok();
    let redis = readiness.redis.ping().await.is_ok();
    let media = readiness.media.check().await.is_ok();
    let checks = json!({ "database": database, "redis": redis, "media": media });
    if database && redis && media {
        Json(json!({ "status": "ready", "checks": checks })).into_response()
    } else {
        let failing: Vec<&str> = [("database", database), ("redis", redis), ("media", media)]
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name)
            .collect();
        ProblemJson(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            Some(format!("not ready: {} unreachable", failing.join(", "))),
        ))
        .into_response()
    }
}

/// Prometheus text format.
#[handler]
pub fn metrics() -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(metrics_handle().render())
}
