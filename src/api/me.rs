//! `GET /v1/me`.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, auth::Bearer, payload::Json};
use time::OffsetDateTime;

use super::{ApiTags, error::MeError};
use crate::{auth::Auth, domain::User};

/// A wxauth access token from `POST /v1/login`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct BearerToken(Bearer);

/// The user record.
#[derive(Debug, Object)]
pub struct UserBody {
    /// Stable, opaque user id (UUID v7).
    pub id: String,
    /// WeChat openid within this mini-program.
    pub openid: String,
    /// WeChat unionid, when known.
    #[oai(skip_serializing_if_is_none)]
    pub unionid: Option<String>,
    /// First login (RFC 3339).
    pub created_at: OffsetDateTime,
    /// Most recent login (RFC 3339), to within 5 minutes: a returning login rewrites it only
    /// when the stored value is at least 5 minutes old.
    pub last_login_at: OffsetDateTime,
}

impl From<User> for UserBody {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            openid: u.openid,
            unionid: u.unionid,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

/// Answer of `GET /v1/me`.
#[derive(Debug, ApiResponse)]
pub enum MeResponse {
    /// The user the token was issued to.
    #[oai(status = 200)]
    Ok(Json<UserBody>),
}

/// Identity operations.
pub struct MeApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::User")]
impl MeApi {
    /// The current user
    ///
    /// Returns the user the bearer token was issued to.
    #[oai(path = "/v1/me", method = "get", operation_id = "me")]
    async fn me(&self, token: BearerToken) -> Result<MeResponse, MeError> {
        Ok(MeResponse::Ok(Json(self.auth.me(&token.0.token).await?.into())))
    }
}
