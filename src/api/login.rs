//! `POST /v1/login`.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};

use super::{ApiTags, error::ApiError};
use crate::auth::{Auth, LoginOutcome};

/// Login request.
#[derive(Debug, Object)]
#[oai(example)]
pub struct LoginRequest {
    /// The one-time code from `wx.login` (valid 5 minutes, single use). 1 to 128 visible
    /// ASCII characters. In dev mode any text works; see the README for reserved codes.
    pub code: String,
}

impl Example for LoginRequest {
    fn example() -> Self {
        Self {
            code: "alice".into(),
        }
    }
}

/// The logged-in user, as part of a login answer.
#[derive(Debug, Object)]
pub struct LoginUser {
    /// Stable, opaque user id (UUID v7); the token's `sub`.
    pub id: String,
    /// WeChat openid of the user within this mini-program.
    pub openid: String,
    /// WeChat unionid, when the mini-program is bound to an Open Platform account.
    #[oai(skip_serializing_if_is_none)]
    pub unionid: Option<String>,
    /// `true` when this login created the user.
    pub created: bool,
}

/// A signed access token.
#[derive(Debug, Object)]
pub struct LoginBody {
    /// JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires; log in again with a new `wx.login` code before then.
    pub expires_in: u64,
    /// Who logged in.
    pub user: LoginUser,
}

impl From<LoginOutcome> for LoginBody {
    fn from(o: LoginOutcome) -> Self {
        Self {
            access_token: o.token.token,
            token_type: "Bearer".into(),
            expires_in: o.token.expires_in,
            user: LoginUser {
                id: o.user.id.to_string(),
                openid: o.user.openid,
                unionid: o.user.unionid,
                created: o.created,
            },
        }
    }
}

/// Login answer.
#[derive(Debug, ApiResponse)]
pub enum LoginResponse {
    /// Logged in; the user and binding are on disk.
    #[oai(status = 200)]
    Ok(
        Json<LoginBody>,
        /// Tokens must not be cached (RFC 6749 section 5.1).
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Login operations.
pub struct LoginApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Login")]
impl LoginApi {
    /// Log in with a `wx.login` code
    ///
    /// Exchanges the code with WeChat (`auth.code2Session`), creates the user on the first
    /// login of an openid, and returns a signed access token.
    #[oai(path = "/v1/login", method = "post", operation_id = "login")]
    async fn login(&self, body: Json<LoginRequest>) -> Result<LoginResponse, ApiError> {
        let outcome = self.auth.login(&body.0.code).await?;
        Ok(LoginResponse::Ok(Json(outcome.into()), "no-store".into()))
    }
}
