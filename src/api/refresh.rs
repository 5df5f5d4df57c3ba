//! `POST /v1/token/refresh`, `POST /v1/logout` and `POST /v1/me/logout-all`.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{
    ApiTags, NO_STORE,
    error::{ErrorCode, LogoutError, MeError, RefreshError, body},
    login::{LoginBody, TokenText},
    me::BearerToken,
};
use crate::auth::Auth;

/// Longest refresh token accepted: wxauth's are 94 characters; anything up to a JWT is
/// answered `invalid_grant`, beyond it `invalid_request`.
const MAX_REFRESH_TOKEN: usize = 2048;

/// A refresh token.
#[derive(Debug, Object)]
pub struct RefreshRequest {
    /// The `refresh_token` of a login, bind or refresh answer.
    pub refresh_token: TokenText,
}

impl RefreshRequest {
    /// The token, when it can be one at all.
    fn token(&self) -> Option<&str> {
        let token = self.refresh_token.0.as_str();
        (!token.is_empty() && token.len() <= MAX_REFRESH_TOKEN).then_some(token)
    }
}

/// The answer to a `refresh_token` that cannot be one.
pub(super) fn malformed() -> poem_openapi::payload::Json<super::error::ErrorBody> {
    body(ErrorCode::InvalidRequest, format!("refresh_token must be 1 to {MAX_REFRESH_TOKEN} characters"))
}

/// Refresh answer.
#[derive(ApiResponse)]
pub enum RefreshResponse {
    /// A new access token and the next refresh token; the one presented is spent. The body
    /// is a login's (`user.created` is `false`).
    #[oai(status = 200)]
    Ok(
        Json<LoginBody>,
        /// Tokens must not be cached (RFC 6749 section 5.1).
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Logout answers.
#[derive(Debug, ApiResponse)]
pub enum LogoutResponse {
    /// Revoked (or already unusable): the same answer either way.
    #[oai(status = 204)]
    Done,
}

/// Refresh and logout operations.
pub struct RefreshApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Login")]
impl RefreshApi {
    /// Refresh the access token
    ///
    /// Spends the refresh token and answers a new access token with the next refresh
    /// token. Presenting a spent refresh token again revokes every token of its login
    /// (reuse detection): the client must then log in again with `wx.login`.
    #[oai(path = "/v1/token/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(
        &self,
        body: Json<RefreshRequest>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<RefreshResponse, RefreshError> {
        let token = body.0.token().ok_or_else(|| RefreshError::BadRequest(malformed()))?;
        let outcome = self.auth.refresh(token, &super::peer(remote, headers)).await?;
        Ok(RefreshResponse::Ok(Json(outcome.into()), NO_STORE.into()))
    }

    /// Log out
    ///
    /// Revokes the refresh token's login: it and every token refreshed from it stop
    /// working. Idempotent: an unknown, expired or already revoked token answers 204 too.
    /// Access tokens already issued stay valid until they expire.
    #[oai(path = "/v1/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        body: Json<RefreshRequest>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<LogoutResponse, LogoutError> {
        let token = body.0.token().ok_or_else(|| LogoutError::BadRequest(malformed()))?;
        self.auth.logout(token, &super::peer(remote, headers)).await?;
        Ok(LogoutResponse::Done)
    }

    /// Log out everywhere
    ///
    /// Revokes every refresh token of the bearer's user, on every device (a lost phone).
    /// Access tokens already issued stay valid until they expire.
    #[oai(path = "/v1/me/logout-all", method = "post", operation_id = "logoutAll")]
    async fn logout_all(
        &self,
        token: BearerToken,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<LogoutResponse, MeError> {
        self.auth.logout_all(&token.0.token, &super::peer(remote, headers)).await?;
        Ok(LogoutResponse::Done)
    }
}
