//! `GET /healthz`.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::auth::Auth;

/// Health status.
#[derive(Debug, Object)]
pub struct HealthBody {
    /// `ok` or `unavailable`.
    pub status: String,
}

/// Health answer.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The store answers.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
    /// The store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<HealthBody>),
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
    /// 200 while the database answers reads.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        match self.auth.store().check() {
            Ok(()) => HealthResponse::Ok(Json(HealthBody { status: "ok".into() })),
            Err(e) => {
                tracing::error!(error = %e, "health check failed");
                HealthResponse::Unavailable(Json(HealthBody { status: "unavailable".into() }))
            }
        }
    }
}
