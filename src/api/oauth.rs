//! Browser logins of official accounts and websites: `GET /v1/oauth/wechat/authorize`,
//! `GET /v1/oauth/wechat/callback` and `POST /v1/token` ([`crate::auth::Auth::authorize`]).

use std::sync::Arc;

use poem_openapi::{
    ApiRequest, ApiResponse, Object, OpenApi,
    param::Query,
    payload::{Form, Json},
};

use super::{
    ApiTags, NO_STORE,
    error::{AuthorizeError, BrowserError, TokenError},
    login::{LoginBody, LoginResponse},
};
use crate::auth::{Auth, AuthorizeRequest, TokenRequest};

/// Where the browser goes next.
#[derive(ApiResponse)]
pub enum RedirectResponse {
    /// To WeChat's authorize (official account) or QR (website) page, or back to the
    /// client's `redirect_uri`.
    #[oai(status = 302)]
    Found(
        #[oai(header = "Location")] String,
        /// The cookie that binds the login to this browser (set at authorize, removed at
        /// the callback).
        #[oai(header = "Set-Cookie")]
        String,
        /// Never cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// `POST /v1/token`'s fields (RFC 6749 section 4.1.3, RFC 7636 section 4.5).
#[derive(Object, serde::Deserialize)]
pub struct TokenFields {
    /// `authorization_code`.
    #[oai(nullable)]
    pub grant_type: Option<String>,
    /// The code the browser brought back to `redirect_uri` (`ac_...`).
    #[oai(nullable)]
    pub code: Option<String>,
    /// The same `redirect_uri` as at authorize.
    #[oai(nullable)]
    pub redirect_uri: Option<String>,
    /// The PKCE verifier whose S256 challenge went to authorize.
    #[oai(nullable)]
    pub code_verifier: Option<String>,
}

/// The token request, as a form (RFC 6749) or as JSON.
#[derive(ApiRequest)]
pub enum TokenBody {
    /// `application/x-www-form-urlencoded`.
    Form(Form<TokenFields>),
    /// `application/json`.
    Json(Json<TokenFields>),
}

/// Browser login operations.
pub struct OauthApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Login")]
impl OauthApi {
    /// Start a browser login (official account, website)
    ///
    /// Sends the browser to WeChat's authorize page (official accounts, inside WeChat) or QR
    /// page (websites). `redirect_uri` must be one of the app's `redirect_uris` exactly, and
    /// PKCE is required (`code_challenge_method=S256`). After the callback the browser comes
    /// back to `redirect_uri` with `code` (one-time, 60 s) and `state`, or with `error`.
    #[oai(path = "/v1/oauth/wechat/authorize", method = "get", operation_id = "authorize")]
    #[allow(clippy::too_many_arguments)]
    async fn authorize(
        &self,
        /// The official account's or website's AppID.
        appid: Query<String>,
        /// Where the browser returns: one of the app's `redirect_uris`, exactly.
        redirect_uri: Query<String>,
        /// The client's state, returned as it came (at most 512 visible ASCII characters).
        state: Query<Option<String>>,
        /// BASE64URL(SHA-256(code_verifier)), 43 characters.
        code_challenge: Query<String>,
        /// `S256`.
        code_challenge_method: Query<String>,
        /// `snsapi_base` (default) or `snsapi_userinfo` (official account: asks, and keeps
        /// the nickname and avatar); `snsapi_login` (website, the default).
        scope: Query<Option<String>>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<RedirectResponse, AuthorizeError> {
        let req = AuthorizeRequest {
            appid: Some(&appid.0),
            redirect_uri: Some(&redirect_uri.0),
            state: state.0.as_deref(),
            code_challenge: Some(&code_challenge.0),
            code_challenge_method: Some(&code_challenge_method.0),
            scope: scope.0.as_deref(),
        };
        let authorization = self.auth.authorize(req, &super::peer(remote, headers)).await?;
        Ok(RedirectResponse::Found(authorization.location, authorization.cookie, NO_STORE.into()))
    }

    /// WeChat's callback of a browser login
    ///
    /// Where WeChat sends the browser back. Checks the `state` and the browser's cookie,
    /// exchanges WeChat's code, and sends the browser to the client's `redirect_uri` with
    /// a one-time wxauth `code`, or with `error` (`access_denied`, `temporarily_unavailable`,
    /// `server_error`).
    #[oai(path = "/v1/oauth/wechat/callback", method = "get", operation_id = "oauth_callback")]
    async fn callback(
        &self,
        /// WeChat's code (absent when the person declined).
        code: Query<Option<String>>,
        /// The state wxauth sent to WeChat.
        state: Query<String>,
        headers: &poem::http::HeaderMap,
    ) -> Result<RedirectResponse, BrowserError> {
        // HTTP/2 clients may send each cookie in a header of its own (RFC 9113 section 8.2.3).
        let cookies: Vec<&str> =
            headers.get_all(poem::http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
        let cookies = cookies.join("; ");
        let outcome = self.auth.callback(code.0.as_deref(), Some(&state.0), Some(&cookies)).await?;
        Ok(RedirectResponse::Found(outcome.location, outcome.clear_cookie, NO_STORE.into()))
    }

    /// Trade a browser login's code for tokens
    ///
    /// The authorization-code grant with PKCE: `grant_type=authorization_code`, `code`,
    /// `redirect_uri` and `code_verifier`, as a form or JSON. Answers as `POST /v1/login`
    /// does (tokens, or `not_bound` with a bind ticket, ...). A code works once: a wrong
    /// verifier spends it.
    #[oai(path = "/v1/token", method = "post", operation_id = "token")]
    async fn token(
        &self,
        body: TokenBody,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<LoginResponse, TokenError> {
        let fields = match body {
            TokenBody::Form(Form(f)) | TokenBody::Json(Json(f)) => f,
        };
        let req = TokenRequest {
            grant_type: fields.grant_type.as_deref(),
            code: fields.code.as_deref(),
            redirect_uri: fields.redirect_uri.as_deref(),
            code_verifier: fields.code_verifier.as_deref(),
        };
        let outcome = self.auth.token(req, &super::peer(remote, headers)).await?;
        Ok(LoginResponse::Ok(Json(LoginBody::from(outcome)), NO_STORE.into()))
    }
}
