//! `GET /healthz`.

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

/// Operations for load balancers and orchestrators.
pub struct HealthApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness and readiness
    ///
    /// 200 while the database answers reads and writes reach the disk.
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
}
