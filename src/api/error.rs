//! The one place where failures become HTTP answers.
//!
//! Every error body is `{"error": "...", "error_description": "..."}` with RFC 6749-style
//! codes, including the errors poem and poem-openapi raise before a handler runs.

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

/// Errors of every operation.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// `invalid_request`: malformed body or a bad `code` (nothing was sent to WeChat).
    /// `invalid_code` / `code_used`: WeChat rejected the code; call `wx.login` again.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `invalid_token`: the bearer token is missing, malformed, expired or not ours.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// RFC 6750 challenge.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
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

fn body(error: &str, description: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody { error: error.into(), error_description: description.into() })
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::BadRequest(body("invalid_request", description))
    }

    /// A 401 `invalid_token` with its RFC 6750 challenge.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        let description = description.into();
        let challenge = format!("{REALM}, error=\"invalid_token\", error_description=\"{description}\"");
        Self::Unauthorized(body("invalid_token", description), challenge)
    }

    fn internal() -> Self {
        Self::Internal(body("server_error", "internal error; see the server log"))
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidInput(e) => Self::invalid_request(e.to_string()),
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

impl From<WechatError> for ApiError {
    fn from(err: WechatError) -> Self {
        let text = err.to_string();
        match err {
            WechatError::InvalidCode { .. } => {
                Self::BadRequest(body("invalid_code", format!("{text}; call wx.login again for a new code")))
            }
            WechatError::CodeUsed { .. } => {
                Self::BadRequest(body("code_used", format!("{text}; call wx.login again for a new code")))
            }
            WechatError::UserBlocked { .. } => Self::Forbidden(body("user_blocked", text)),
            WechatError::RateLimited { .. } => {
                Self::TooManyRequests(body("rate_limited", format!("{text}; retry next minute")), RATE_LIMIT_RETRY_SECS)
            }
            WechatError::Busy { .. } => Self::Unavailable(body("wechat_unavailable", text), BUSY_RETRY_SECS),
            WechatError::Timeout => Self::GatewayTimeout(body("wechat_timeout", text)),
            WechatError::Upstream(_) => Self::BadGateway(body("wechat_error", text)),
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
        return ApiError::invalid_token("the request has no Authorization: Bearer token").into_response();
    }
    let status = err.status();
    let (status, code, description) = match status {
        // poem-openapi answers 415 for a wrong Content-Type; clients get one rule: 400.
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (StatusCode::BAD_REQUEST, "invalid_request", err.to_string())
        }
        StatusCode::PAYLOAD_TOO_LARGE => (status, "invalid_request", "request body too large".to_owned()),
        StatusCode::NOT_FOUND => (status, "not_found", "no such endpoint; see /docs".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (status, "method_not_allowed", "method not allowed; see /docs".to_owned()),
        s if s.is_server_error() => {
            tracing::error!(error = %err, "request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error; see the server log".to_owned())
        }
        s => (s, "invalid_request", err.to_string()),
    };
    (status, Json(ErrorBody { error: code.into(), error_description: description }).into_response()).into_response()
}
