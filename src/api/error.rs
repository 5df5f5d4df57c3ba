//! The one place where failures become HTTP answers.
//!
//! Every error body is `{"error": "...", "error_description": "..."}` with RFC 6749-style
//! codes, including the errors poem and poem-openapi raise before a handler runs.
//! [`Problem`] is the mapping; [`LoginError`] and [`MeError`] are the same answers typed
//! per operation, so the OpenAPI document lists only the statuses each one can return.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, error::AuthorizationError, payload::Json};

use crate::{auth::AuthError, token::TokenError, wechat::WechatError};

/// Seconds a client should wait after WeChat's minute quota was hit.
const RATE_LIMIT_RETRY_SECS: u64 = 60;
/// Seconds a client should wait after WeChat said it was busy.
const BUSY_RETRY_SECS: u64 = 2;
const REALM: &str = "Bearer realm=\"wxauth\"";

/// Error body.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Machine-readable error code, e.g. `invalid_code`.
    pub error: String,
    /// Human-readable explanation for the developer.
    pub error_description: String,
}

/// An error answer before it is typed for an operation.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
    /// RFC 6750 `WWW-Authenticate` value, for 401s.
    challenge: Option<String>,
}

impl Problem {
    fn new(status: StatusCode, error: &str, description: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody { error: error.into(), error_description: description.into() },
            retry_after: None,
            challenge: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error; see the server log")
    }

    fn invalid_token(description: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description);
        // RFC 6750 allows %x20-21 / %x23-5B / %x5D-7E inside the quotes.
        let description: String = problem
            .body
            .error_description
            .chars()
            .map(|c| if matches!(c, ' ' | '!' | '#'..='[' | ']'..='~') { c } else { ' ' })
            .collect();
        problem.challenge = Some(format!("{REALM}, error=\"invalid_token\", error_description=\"{description}\""));
        problem
    }

    /// No credentials at all: RFC 6750 section 3.1 wants the challenge without an error code.
    fn missing_token() -> Self {
        let mut problem =
            Self::new(StatusCode::UNAUTHORIZED, "invalid_token", "the request has no Authorization: Bearer token");
        problem.challenge = Some(REALM.into());
        problem
    }
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidInput(e) => Self::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
            AuthError::Wechat(e) => Self::from(e),
            AuthError::Token(TokenError::Rejected(r)) => Self::invalid_token(r.to_string()),
            AuthError::Token(e) => {
                tracing::error!(error = %e, "token service failed");
                Self::internal()
            }
            AuthError::Store(e) => {
                tracing::error!(error = %e, "store failed");
                Self::internal()
            }
        }
    }
}

impl From<WechatError> for Problem {
    fn from(err: WechatError) -> Self {
        let text = err.to_string();
        let again = "; call wx.login again for a new code";
        match err {
            WechatError::InvalidCode { .. } => Self::new(StatusCode::BAD_REQUEST, "invalid_code", text + again),
            WechatError::CodeUsed { .. } => Self::new(StatusCode::BAD_REQUEST, "code_used", text + again),
            WechatError::UserBlocked { .. } => Self::new(StatusCode::FORBIDDEN, "user_blocked", text),
            WechatError::RateLimited { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", text + "; retry next minute")
                    .retry_after(RATE_LIMIT_RETRY_SECS)
            }
            WechatError::Busy { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "wechat_unavailable", text).retry_after(BUSY_RETRY_SECS)
            }
            WechatError::Timeout => Self::new(StatusCode::GATEWAY_TIMEOUT, "wechat_timeout", text),
            WechatError::Upstream(_) => Self::new(StatusCode::BAD_GATEWAY, "wechat_error", text),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body.clone())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert("retry-after", secs.into());
        }
        if let Some(Ok(value)) = self.challenge.as_deref().map(str::parse) {
            resp.headers_mut().insert("www-authenticate", value);
        }
        resp
    }
}

/// Errors of `POST /v1/login`.
#[derive(Debug, ApiResponse)]
pub enum LoginError {
    /// `invalid_request`: malformed or oversized (16 KiB) body, or a bad `code` (nothing
    /// was sent to WeChat).
    /// `invalid_code` / `code_used`: WeChat rejected the code; call `wx.login` again.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `user_blocked`: WeChat's risk control blocked this user's login (errcode 40226).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `rate_limited`: WeChat's per-user minute quota was reached (errcode 45011).
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// `server_error`: an internal failure (details are in the server log).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `wechat_error`: WeChat could not be reached or gave an unusable answer.
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    /// `wechat_unavailable`: WeChat was busy twice in a row (errcode -1); retry shortly.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// `wechat_timeout`: WeChat did not answer within the configured timeout.
    #[oai(status = 504)]
    GatewayTimeout(Json<ErrorBody>),
}

impl From<AuthError> for LoginError {
    fn from(err: AuthError) -> Self {
        let p = Problem::from(err);
        let (body, retry) = (Json(p.body), p.retry_after.unwrap_or_default());
        match p.status {
            StatusCode::BAD_REQUEST => Self::BadRequest(body),
            StatusCode::FORBIDDEN => Self::Forbidden(body),
            StatusCode::TOO_MANY_REQUESTS => Self::TooManyRequests(body, retry),
            StatusCode::BAD_GATEWAY => Self::BadGateway(body),
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable(body, retry),
            StatusCode::GATEWAY_TIMEOUT => Self::GatewayTimeout(body),
            _ => Self::Internal(body),
        }
    }
}

/// Errors of operations that need a bearer token.
#[derive(Debug, ApiResponse)]
pub enum MeError {
    /// `invalid_token`: the bearer token is missing, malformed, expired or not ours.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// RFC 6750 challenge.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `server_error`: an internal failure (details are in the server log).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

impl From<AuthError> for MeError {
    fn from(err: AuthError) -> Self {
        let p = Problem::from(err);
        match p.status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized(Json(p.body), p.challenge.unwrap_or_else(|| REALM.into())),
            _ => Self::Internal(Json(p.body)),
        }
    }
}

/// Turns errors raised outside handlers (parse failures, missing auth, unknown routes,
/// oversized bodies) into the JSON envelope. Typed handler errors pass through untouched.
pub async fn envelope(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    if err.is::<AuthorizationError>() {
        return Problem::missing_token().into_response();
    }
    let status = err.status();
    let problem = match status {
        // poem-openapi answers 415 for a wrong Content-Type; clients get one rule: 400.
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid_request", err.to_string())
        }
        // One rule for clients: bad input is 400 `invalid_request`, however it is bad.
        StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid_request", "request body too large (max 16 KiB)")
        }
        StatusCode::NOT_FOUND => Problem::new(status, "not_found", "no such endpoint; see /docs"),
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(status, "method_not_allowed", "method not allowed; see /docs"),
        s if s.is_server_error() => {
            tracing::error!(error = %err, "request failed");
            Problem::internal()
        }
        s => Problem::new(s, "invalid_request", err.to_string()),
    };
    problem.into_response()
}
