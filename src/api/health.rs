//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{ApiTags, error::ErrorBody};
use crate::auth::Auth;

/// Health status.
#[derive(Debug, Object)]
pub struct HealthBody {
    /// Always `ok`.
    pub status: String,
}

/// Health answer.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The store answers reads and its last flush reached the disk.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
    /// `temporarily_unavailable`: the store does not answer or cannot write to disk.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// What `/readyz` checked.
#[derive(Debug, Object)]
pub struct ReadyBody {
    /// Always `ready`.
    pub status: String,
    /// `ok`: a probe write reached the disk.
    pub store: String,
    /// `ok`: a signing key is loaded; the algorithms published.
    pub keys: String,
    /// `ok`: the circuit breaker in front of WeChat is closed.
    pub wechat: String,
}

/// Readiness answer.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready for traffic.
    #[oai(status = 200)]
    Ok(Json<ReadyBody>),
    /// `not_ready`: the description names each failed check: `store` (cannot write),
    /// `keys` (no signing key) or `wechat` (circuit breaker open).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// Operations for load balancers and orchestrators.
pub struct HealthApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the database answers reads and writes reach the disk. It does not look at
    /// WeChat: restarting wxauth does not help when WeChat is down.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        match self.auth.store().check().await {
            Ok(()) => HealthResponse::Ok(Json(HealthBody { status: "ok".into() })),
            Err(e) => {
                tracing::error!(error = %e, "health check failed");
                HealthResponse::Unavailable(super::error::body(
                    "temporarily_unavailable",
                    "the database is not answering or not writing; see the server log",
                ))
            }
        }
    }

    /// Readiness
    ///
    /// 200 when a probe write reaches the disk, a signing key is loaded and the circuit
    /// breaker in front of WeChat is closed; otherwise 503 naming what is wrong. Point a
    /// load balancer's or orchestrator's readiness check here, and the liveness check at
    /// `/healthz`.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadyResponse {
        let mut problems = Vec::new();
        let store = match self.auth.store().check_writable().await {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                tracing::error!(error = %e, "readiness: the store cannot write");
                problems.push("store: cannot write (see the server log)".to_owned());
                "failing".to_owned()
            }
        };
        let algorithms = self.auth.tokens().algorithms();
        let keys = if algorithms.is_empty() {
            problems.push("keys: no signing key is loaded".to_owned());
            "failing".to_owned()
        } else {
            format!("ok ({})", algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "))
        };
        let wechat = if self.auth.wechat_reachable() {
            "ok".to_owned()
        } else {
            problems.push("wechat: the circuit breaker is open after repeated failures".to_owned());
            "failing".to_owned()
        };
        if problems.is_empty() {
            ReadyResponse::Ok(Json(ReadyBody { status: "ready".into(), store, keys, wechat }))
        } else {
            ReadyResponse::Unavailable(super::error::body("not_ready", format!("not ready: {}", problems.join("; "))))
        }
    }
}
