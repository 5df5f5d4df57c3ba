//! `POST /v1/bind`: bind a WeChat identity to an existing account.

use std::sync::Arc;

use poem::web::RemoteAddr;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};

use super::{
    ApiTags,
    error::{BindError, MeError},
    login::{CodeText, LoginBody},
    me::{BearerToken, IdentityBody, identity},
};
use crate::auth::{Auth, BindRequest};

/// Bind request: one of `bind_ticket` and `code`, with the account's username and password
/// or with a `phone_code`.
#[derive(Debug, Object)]
#[oai(example)]
pub struct BindBody {
    /// The `bind_ticket` from a 403 `not_bound` login answer (valid 5 minutes, spent by a
    /// successful bind; a wrong password does not spend it).
    #[oai(nullable)]
    pub bind_ticket: Option<String>,
    /// Or a fresh code from `wx.login`, when there is no ticket.
    #[oai(nullable)]
    pub code: Option<CodeText>,
    /// With `code`: the AppID the code comes from (required when the server serves several
    /// apps). Ignored with a ticket, which names its app.
    #[oai(nullable)]
    pub appid: Option<String>,
    /// The account's username (with `password`).
    #[oai(nullable)]
    pub username: Option<String>,
    /// The account's password.
    #[oai(nullable)]
    pub password: Option<String>,
    /// Or, instead of username and password, the code from the `getPhoneNumber` button:
    /// WeChat verifies the number, and the identity is bound to the account with it
    /// (registration `phone`: or to a new account, when none has it).
    #[oai(nullable)]
    pub phone_code: Option<CodeText>,
}

impl Example for BindBody {
    fn example() -> Self {
        Self {
            bind_ticket: Some("bt_q0v1yX3dM2Yj5C1n0Jx8WmJ2S3o7bq4K9yUeLr6fPzA".into()),
            code: None,
            appid: None,
            username: Some("alice".into()),
            password: Some("correct horse battery staple".into()),
            phone_code: None,
        }
    }
}

/// Bind answer.
#[derive(ApiResponse)]
pub enum BindResponse {
    /// Bound, and logged in as the account's user: the same body as a login.
    #[oai(status = 200)]
    Ok(
        Json<LoginBody>,
        /// Tokens must not be cached (RFC 6749 section 5.1).
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of `DELETE /v1/me/binding`.
#[derive(Debug, Object)]
pub struct UnbindBody {
    /// The identities that were unbound (empty when there were none).
    pub unbound: Vec<IdentityBody>,
}

/// Answer of `DELETE /v1/me/binding`.
#[derive(Debug, ApiResponse)]
pub enum UnbindResponse {
    /// Unbound. The next login with these openids behaves as unbound: 403 `not_bound` in
    /// registration `bind`, a new user in `auto`. Access tokens already issued stay valid
    /// until they expire.
    #[oai(status = 200)]
    Ok(Json<UnbindBody>),
}

/// Account binding operations.
pub struct BindApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Binding")]
impl BindApi {
    /// Bind WeChat to an account
    ///
    /// Checks the account's username and password (or has WeChat verify the phone number
    /// of `phone_code` and finds the account with it) and binds the WeChat identity named
    /// by the bind ticket (or a fresh code) to the account's user; from then on `wx.login`
    /// alone logs the person in. Answers exactly like a login. Attempts are limited per
    /// username (or number) and per client address.
    #[oai(path = "/v1/bind", method = "post", operation_id = "bind")]
    async fn bind(
        &self,
        body: Json<BindBody>,
        remote: &RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<BindResponse, BindError> {
        let b = &body.0;
        let request = BindRequest {
            ticket: b.bind_ticket.as_deref(),
            code: b.code.as_ref().map(|c| c.0.as_str()),
            appid: b.appid.as_deref(),
            username: b.username.as_deref(),
            password: b.password.as_deref(),
            phone_code: b.phone_code.as_ref().map(|c| c.0.as_str()),
        };
        let outcome = self.auth.bind(request, &super::peer(remote, headers)).await?;
        Ok(BindResponse::Ok(Json(outcome.into()), super::NO_STORE.into()))
    }

    /// Unbind WeChat from the account
    ///
    /// Removes the user's WeChat identities (every openid of the same person, in every app
    /// of this server) and its unionid link. The user and its account stay; the person
    /// binds again with `POST /v1/bind`.
    #[oai(path = "/v1/me/binding", method = "delete", operation_id = "unbind")]
    async fn unbind(
        &self,
        token: BearerToken,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<UnbindResponse, MeError> {
        let removed = self.auth.unbind(&token.0.token, &super::peer(remote, headers)).await?;
        let kinds = self.auth.app_kinds();
        Ok(UnbindResponse::Ok(Json(UnbindBody { unbound: removed.into_iter().map(|i| identity(i, &kinds)).collect() })))
    }
}
