//! The one place where failures become HTTP answers.
//!
//! Every error body is `{"error": "...", "error_description": "..."}` with RFC 6749-style
//! codes, including the errors poem and poem-openapi raise before a handler runs. Each
//! operation has its own response enum ([`LoginError`], [`BindError`], [`MeError`], ...), so the
//! OpenAPI document lists only the statuses it can return, and each is built from its use
//! case's failure type by a `match` without a catch-all: a new kind of failure does not
//! compile until it has an answer.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, error::AuthorizationError, payload::Json};

use super::NO_STORE;

use crate::{
    auth::{BearerFailure, BindFailure, Internal, LoginFailure, OpenDataFailure, RefreshFailure},
    opendata::OpenDataError,
    store::StoreError,
    token::Rejection,
    wechat::WechatError,
};

/// Seconds a client should wait after WeChat's minute quota was hit.
const RATE_LIMIT_RETRY_SECS: u64 = 60;
/// Seconds a client should wait after WeChat said it was busy.
const BUSY_RETRY_SECS: u64 = 2;
/// Retry-After of `temporarily_unavailable`: reopening the database takes a moment.
const STORE_RETRY_SECS: u64 = 1;
const REALM: &str = "Bearer realm=\"wxauth\"";

/// Error body.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Machine-readable error code, e.g. `invalid_code`.
    pub error: String,
    /// Human-readable explanation for the developer.
    pub error_description: String,
    /// Only with `not_bound`: the ticket to send to `POST /v1/bind` (single use).
    #[oai(skip_serializing_if_is_none)]
    pub bind_ticket: Option<String>,
    /// Only with `not_bound`: seconds the ticket works.
    #[oai(skip_serializing_if_is_none)]
    pub expires_in: Option<u64>,
}

/// An error body with `error` and `error_description` only.
pub fn body(error: &str, description: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody { error: error.into(), error_description: description.into(), bind_ticket: None, expires_in: None })
}

/// Logs a server-side failure once and answers without its details.
fn internal(err: Internal) -> InternalAnswer {
    tracing::error!(error = %err, "request failed");
    internal_answer(err)
}

/// [`internal`] without the log line (for the document's examples).
fn internal_answer(err: Internal) -> InternalAnswer {
    match err {
        Internal::Store(StoreError::Database(_)) => InternalAnswer::Unavailable(
            body(
                "temporarily_unavailable",
                "the database cannot write right now (full disk or I/O error); retry shortly",
            ),
            STORE_RETRY_SECS,
        ),
        _ => InternalAnswer::Failed(body("server_error", "internal error; see the server log")),
    }
}

/// The status and body of an internal failure, as every operation answers it (for the
/// document's examples: nothing is logged).
pub(super) fn internal_example(err: Internal) -> (u16, Json<ErrorBody>) {
    match internal_answer(err) {
        InternalAnswer::Failed(b) => (500, b),
        InternalAnswer::Unavailable(b, _) => (503, b),
    }
}

/// How a failure that is not the client's fault is answered.
enum InternalAnswer {
    /// 500: a bug or a corrupt record.
    Failed(Json<ErrorBody>),
    /// 503: the database failed to read or write; it is opened again by itself.
    Unavailable(Json<ErrorBody>, u64),
}

/// Every operation answers an internal failure the same way.
macro_rules! from_internal_answer {
    ($($error:ident),*) => {$(
        impl From<InternalAnswer> for $error {
            fn from(answer: InternalAnswer) -> Self {
                match answer {
                    InternalAnswer::Failed(b) => Self::Internal(b),
                    InternalAnswer::Unavailable(b, secs) => Self::Unavailable(b, secs),
                }
            }
        }
    )*};
}
from_internal_answer!(LoginError, BindError, MeError, PhoneError, ProfileError, DevError, RefreshError, LogoutError);

/// How a WeChat failure is answered, by every operation that calls WeChat.
enum WechatAnswer {
    BadRequest(Json<ErrorBody>),
    Forbidden(Json<ErrorBody>),
    TooManyRequests(Json<ErrorBody>, u64),
    BadGateway(Json<ErrorBody>),
    Unavailable(Json<ErrorBody>, u64),
    GatewayTimeout(Json<ErrorBody>),
}

fn wechat_answer(err: WechatError) -> WechatAnswer {
    let text = err.to_string();
    let again = "; call wx.login again for a new code";
    match err {
        WechatError::InvalidCode { .. } => WechatAnswer::BadRequest(body("invalid_code", text + again)),
        WechatError::CodeUsed { .. } => WechatAnswer::BadRequest(body("code_used", text + again)),
        WechatError::UserBlocked { .. } => WechatAnswer::Forbidden(body("user_blocked", text)),
        WechatError::RateLimited { .. } => {
            WechatAnswer::TooManyRequests(body("rate_limited", text + "; retry next minute"), RATE_LIMIT_RETRY_SECS)
        }
        WechatError::Busy { .. } => WechatAnswer::Unavailable(body("wechat_unavailable", text), BUSY_RETRY_SECS),
        WechatError::Unavailable { retry_after, .. } => WechatAnswer::Unavailable(
            body("wechat_unavailable", text + "; retry after the time in Retry-After"),
            retry_after.as_secs_f64().ceil().max(1.0) as u64,
        ),
        WechatError::Timeout => WechatAnswer::GatewayTimeout(body("wechat_timeout", text)),
        WechatError::Upstream(_) | WechatError::Transport(_) | WechatError::AccessTokenRejected { .. } => {
            WechatAnswer::BadGateway(body("wechat_error", text))
        }
    }
}

/// The RFC 6750 challenge of a refused token.
fn challenge(description: &str) -> String {
    // RFC 6750 allows %x20-21 / %x23-5B / %x5D-7E inside the quotes.
    let description: String =
        description.chars().map(|c| if matches!(c, ' ' | '!' | '#'..='[' | ']'..='~') { c } else { ' ' }).collect();
    format!("{REALM}, error=\"invalid_token\", error_description=\"{description}\"")
}

/// Errors of `POST /v1/login`.
#[derive(Debug, ApiResponse)]
pub enum LoginError {
    /// `invalid_request`: malformed or oversized (16 KiB) body, a bad `code`, or no `appid`
    /// although several apps are served (nothing was sent to WeChat).
    /// `unknown_app`: `appid` names an app this server does not serve.
    /// `invalid_code` / `code_used`: WeChat rejected the code; call `wx.login` again.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `not_bound` (registration `bind`): the WeChat identity is bound to no account. The
    /// body carries `bind_ticket` and `expires_in`; send the ticket with the account's
    /// username and password to `POST /v1/bind`.
    /// `user_blocked`: WeChat's risk control blocked this user's login (errcode 40226).
    #[oai(status = 403)]
    Forbidden(
        Json<ErrorBody>,
        /// A bind ticket is a credential: never cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `rate_limited`: WeChat's per-user minute quota was reached (errcode 45011), or this
    /// client address sent more than `WXAUTH_RATE_LIMIT_PER_MINUTE` requests.
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
    /// `wechat_unavailable`: WeChat was busy twice in a row (errcode -1), too many requests
    /// to WeChat are in flight, or WeChat failed repeatedly and the circuit breaker is
    /// open. Nothing was sent to WeChat in the last two cases; retry after `Retry-After`.
    /// `temporarily_unavailable`: the database cannot write right now (a full disk, an I/O
    /// error); the server opens it again by itself.
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

impl LoginError {
    /// The `error` code answered (the `outcome` label of `wxauth_logins_total`).
    pub fn code(&self) -> &str {
        let (Self::BadRequest(b)
        | Self::Forbidden(b, _)
        | Self::TooManyRequests(b, _)
        | Self::Internal(b)
        | Self::BadGateway(b)
        | Self::Unavailable(b, _)
        | Self::GatewayTimeout(b)) = self;
        &b.0.error
    }
}

impl From<WechatAnswer> for LoginError {
    fn from(answer: WechatAnswer) -> Self {
        match answer {
            WechatAnswer::BadRequest(b) => Self::BadRequest(b),
            WechatAnswer::Forbidden(b) => Self::Forbidden(b, NO_STORE.into()),
            WechatAnswer::TooManyRequests(b, secs) => Self::TooManyRequests(b, secs),
            WechatAnswer::BadGateway(b) => Self::BadGateway(b),
            WechatAnswer::Unavailable(b, secs) => Self::Unavailable(b, secs),
            WechatAnswer::GatewayTimeout(b) => Self::GatewayTimeout(b),
        }
    }
}

impl From<LoginFailure> for LoginError {
    fn from(failure: LoginFailure) -> Self {
        let text = failure.to_string();
        match failure {
            LoginFailure::InvalidInput(_) | LoginFailure::AppRequired(_) => {
                Self::BadRequest(body("invalid_request", text))
            }
            LoginFailure::UnknownApp(..) => Self::BadRequest(body("unknown_app", text)),
            LoginFailure::Wechat(e) => wechat_answer(e).into(),
            LoginFailure::NotBound { ticket, expires_in } => Self::Forbidden(
                Json(ErrorBody {
                    bind_ticket: Some(ticket),
                    expires_in: Some(expires_in),
                    ..body("not_bound", text).0
                }),
                NO_STORE.into(),
            ),
            LoginFailure::Internal(e) => internal(e).into(),
        }
    }
}

/// Errors of `POST /v1/bind`.
#[derive(Debug, ApiResponse)]
pub enum BindError {
    /// `invalid_request`: malformed body, neither or both of `bind_ticket` and `code`, a
    /// bad `code`, `username` or `password`, or a `code` without `appid` although several
    /// apps are served.
    /// `invalid_ticket`: the ticket is expired, already used or was never issued.
    /// `unknown_app`: `appid` names an app this server does not serve.
    /// `invalid_code` / `code_used`: WeChat rejected the code; call `wx.login` again.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `invalid_credentials`: wrong username or password (the same answer for both).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// `user_blocked`: WeChat's risk control blocked this user's login (errcode 40226).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `already_bound`: this WeChat identity is bound to another user.
    /// `account_already_bound`: the account has another openid of the same mini-program.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `rate_limited`: too many attempts for this username or from this address, or
    /// WeChat's per-user minute quota (errcode 45011).
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

impl From<WechatAnswer> for BindError {
    fn from(answer: WechatAnswer) -> Self {
        match answer {
            WechatAnswer::BadRequest(b) => Self::BadRequest(b),
            WechatAnswer::Forbidden(b) => Self::Forbidden(b),
            WechatAnswer::TooManyRequests(b, secs) => Self::TooManyRequests(b, secs),
            WechatAnswer::BadGateway(b) => Self::BadGateway(b),
            WechatAnswer::Unavailable(b, secs) => Self::Unavailable(b, secs),
            WechatAnswer::GatewayTimeout(b) => Self::GatewayTimeout(b),
        }
    }
}

impl From<BindFailure> for BindError {
    fn from(failure: BindFailure) -> Self {
        let text = failure.to_string();
        match failure {
            BindFailure::InvalidInput(_) | BindFailure::AppRequired(_) => {
                Self::BadRequest(body("invalid_request", text))
            }
            BindFailure::UnknownApp(..) => Self::BadRequest(body("unknown_app", text)),
            BindFailure::InvalidTicket => Self::BadRequest(body("invalid_ticket", text)),
            BindFailure::Wechat(e) => wechat_answer(e).into(),
            BindFailure::InvalidCredentials => Self::Unauthorized(body("invalid_credentials", text)),
            BindFailure::AlreadyBound => Self::Conflict(body("already_bound", text)),
            BindFailure::AccountAlreadyBound => Self::Conflict(body("account_already_bound", text)),
            BindFailure::TooManyAttempts { retry_after } => {
                Self::TooManyRequests(body("rate_limited", text), retry_after)
            }
            BindFailure::Internal(e) => internal(e).into(),
        }
    }
}

/// Errors of operations that need a bearer token.
#[derive(Debug, ApiResponse)]
pub enum MeError {
    /// `invalid_token`: the bearer token is missing, malformed, expired or not ours, its
    /// user no longer exists, or the header said `Bearer Bearer ...`.
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
    /// `temporarily_unavailable`: the database cannot write right now (a full disk, an
    /// I/O error); the server opens it again by itself. Retry after `Retry-After`.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

impl From<BearerFailure> for MeError {
    fn from(failure: BearerFailure) -> Self {
        match failure {
            BearerFailure::Rejected(r) => rejected(r),
            BearerFailure::Internal(e) => internal(e).into(),
        }
    }
}

fn rejected(rejection: Rejection) -> MeError {
    let description = rejection.to_string();
    MeError::Unauthorized(body("invalid_token", description.clone()), challenge(&description))
}

/// 429 `rate_limited` for a client over `WXAUTH_RATE_LIMIT_PER_MINUTE` (or
/// `WXAUTH_REFRESH_ATTEMPTS_PER_IP`), answered before the request is read. `what` names
/// what was counted: `login attempts`, `refreshes`.
pub fn rate_limited(wait: std::time::Duration, what: &str) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, rate_limited_body(secs, what)).into_response();
    resp.headers_mut().insert(poem::http::header::RETRY_AFTER, secs.into());
    resp
}

/// The body of [`rate_limited`].
pub(super) fn rate_limited_body(secs: u64, what: &str) -> Json<ErrorBody> {
    body("rate_limited", format!("too many {what} from this address; retry in {secs} s"))
}

/// Turns errors raised outside handlers (parse failures, missing auth, unknown routes,
/// oversized bodies) into the JSON envelope. Typed handler errors pass through untouched.
pub async fn envelope(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    if err.is::<AuthorizationError>() {
        // No credentials at all: RFC 6750 section 3.1 wants the challenge without an error code.
        let mut resp =
            (StatusCode::UNAUTHORIZED, body("invalid_token", "the request has no Authorization: Bearer token"))
                .into_response();
        resp.headers_mut().insert("www-authenticate", poem::http::HeaderValue::from_static(REALM));
        return resp;
    }
    let status = err.status();
    let (status, answer) = match status {
        // poem-openapi answers 415 for a wrong Content-Type; clients get one rule: 400.
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (StatusCode::BAD_REQUEST, body("invalid_request", err.to_string()))
        }
        // 413, not 400: RFC 9110's status for content over the limit (section 15.5.14),
        // the one a proxy's own body limit gives, and what a client that sent `Expect:
        // 100-continue` gets instead of `100 Continue`. The code stays `invalid_request`.
        StatusCode::PAYLOAD_TOO_LARGE => (status, body("invalid_request", "request body too large (max 16 KiB)")),
        StatusCode::REQUEST_TIMEOUT => (
            status,
            body(
                "request_timeout",
                format!("the request body did not arrive within {} s", super::BODY_DEADLINE.as_secs()),
            ),
        ),
        // Not /docs: production serves Swagger UI only when WXAUTH_DOCS says so.
        StatusCode::NOT_FOUND => (status, body("not_found", "no such endpoint; see /openapi.json")),
        StatusCode::METHOD_NOT_ALLOWED => (status, body("method_not_allowed", "method not allowed; see /openapi.json")),
        s if s.is_server_error() => {
            tracing::error!(error = %err, "request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, body("server_error", "internal error; see the server log"))
        }
        s => (s, body("invalid_request", err.to_string())),
    };
    (status, answer).into_response()
}

/// Errors of `POST /v1/me/phone`.
#[derive(Debug, ApiResponse)]
pub enum PhoneError {
    /// `invalid_request`: a malformed body, neither or both of `code` and
    /// `encrypted_data`, bad base64 or lengths, or data that holds no phone number.
    /// `invalid_code`: WeChat rejected the phone code (errcode 40029); it is single use and
    /// valid 5 minutes, so ask for the number again.
    /// `watermark_mismatch`: the data was encrypted for another mini-program.
    /// `unknown_app`: the token names an app this server no longer serves.
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
    /// `session_key_stale`: the data does not decrypt with the session key of the latest
    /// login, or none is stored. Call `wx.login`, `POST /v1/login`, fetch the data again
    /// and retry.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `rate_limited`: WeChat's minute quota was reached (errcode 45011).
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
    /// `wechat_error`: WeChat could not be reached, gave an unusable answer, or refused the
    /// server's access token even after a refresh.
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    /// `wechat_unavailable`: WeChat was busy (errcode -1); retry shortly.
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

/// Errors of `POST /v1/me/profile`.
#[derive(Debug, ApiResponse)]
pub enum ProfileError {
    /// `invalid_request`: a malformed body, bad base64 or lengths, `raw_data` without
    /// `signature` (or the reverse), or data that holds no profile.
    /// `watermark_mismatch`: the data was encrypted for another mini-program.
    /// `invalid_signature`: `signature` is not `sha1(raw_data + session_key)`.
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
    /// `session_key_stale`: the data does not decrypt with the session key of the latest
    /// login, or none is stored. Call `wx.login`, `POST /v1/login`, fetch the data again
    /// and retry.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `server_error`: an internal failure (details are in the server log).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `temporarily_unavailable`: the database cannot write right now (a full disk, an
    /// I/O error); the server opens it again by itself. Retry after `Retry-After`.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

/// How an open-data failure is answered, before it is fitted to one operation's statuses.
enum OpenDataAnswer {
    BadRequest(Json<ErrorBody>),
    Unauthorized(Json<ErrorBody>, String),
    Conflict(Json<ErrorBody>),
    Internal(InternalAnswer),
    Wechat(WechatAnswer),
}

fn open_data_answer(failure: OpenDataFailure) -> OpenDataAnswer {
    let text = failure.to_string();
    match failure {
        OpenDataFailure::Rejected(r) => match rejected(r) {
            MeError::Unauthorized(b, challenge) => OpenDataAnswer::Unauthorized(b, challenge),
            MeError::Internal(b) => OpenDataAnswer::Internal(InternalAnswer::Failed(b)),
            MeError::Unavailable(b, secs) => OpenDataAnswer::Internal(InternalAnswer::Unavailable(b, secs)),
        },
        OpenDataFailure::InvalidRequest(_)
        | OpenDataFailure::InvalidCode(_)
        | OpenDataFailure::Data(OpenDataError::Malformed(_)) => {
            OpenDataAnswer::BadRequest(body("invalid_request", text))
        }
        OpenDataFailure::Data(OpenDataError::WatermarkMismatch { .. }) => {
            OpenDataAnswer::BadRequest(body("watermark_mismatch", text))
        }
        OpenDataFailure::BadSignature => OpenDataAnswer::BadRequest(body("invalid_signature", text)),
        OpenDataFailure::UnknownApp(_) => OpenDataAnswer::BadRequest(body("unknown_app", text)),
        OpenDataFailure::Data(OpenDataError::Stale) | OpenDataFailure::NoSessionKey => {
            OpenDataAnswer::Conflict(body("session_key_stale", text))
        }
        OpenDataFailure::Wechat(e @ (WechatError::InvalidCode { .. } | WechatError::CodeUsed { .. })) => {
            OpenDataAnswer::BadRequest(body(
                "invalid_code",
                e.to_string() + "; a phone code works once and for 5 minutes: ask for the number again",
            ))
        }
        // The phone API never blocks a user; an errcode it should not send is WeChat's fault.
        OpenDataFailure::Wechat(WechatError::UserBlocked { rid }) => OpenDataAnswer::Wechat(WechatAnswer::BadGateway(
            body("wechat_error", WechatError::UserBlocked { rid }.to_string()),
        )),
        OpenDataFailure::Wechat(e) => OpenDataAnswer::Wechat(wechat_answer(e)),
        OpenDataFailure::Internal(e) => OpenDataAnswer::Internal(internal(e)),
    }
}

impl From<OpenDataFailure> for PhoneError {
    fn from(failure: OpenDataFailure) -> Self {
        match open_data_answer(failure) {
            OpenDataAnswer::BadRequest(b) => Self::BadRequest(b),
            OpenDataAnswer::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
            OpenDataAnswer::Conflict(b) => Self::Conflict(b),
            OpenDataAnswer::Internal(answer) => answer.into(),
            OpenDataAnswer::Wechat(WechatAnswer::BadRequest(b)) => Self::BadRequest(b),
            OpenDataAnswer::Wechat(WechatAnswer::Forbidden(b) | WechatAnswer::BadGateway(b)) => Self::BadGateway(b),
            OpenDataAnswer::Wechat(WechatAnswer::TooManyRequests(b, secs)) => Self::TooManyRequests(b, secs),
            OpenDataAnswer::Wechat(WechatAnswer::Unavailable(b, secs)) => Self::Unavailable(b, secs),
            OpenDataAnswer::Wechat(WechatAnswer::GatewayTimeout(b)) => Self::GatewayTimeout(b),
        }
    }
}

/// The answers of an open-data operation that never calls WeChat: a WeChat failure there
/// would be a bug, answered as one.
macro_rules! from_open_data_without_wechat {
    ($($error:ident),*) => {$(
        impl From<OpenDataFailure> for $error {
            fn from(failure: OpenDataFailure) -> Self {
                match open_data_answer(failure) {
                    OpenDataAnswer::BadRequest(b) => Self::BadRequest(b),
                    OpenDataAnswer::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
                    OpenDataAnswer::Conflict(b) => Self::Conflict(b),
                    OpenDataAnswer::Internal(answer) => answer.into(),
                    OpenDataAnswer::Wechat(_) => {
                        Self::Internal(body("server_error", "internal error; see the server log"))
                    }
                }
            }
        }
    )*};
}
from_open_data_without_wechat!(ProfileError, DevError);

/// Errors of `POST /v1/dev/open-data`.
#[derive(Debug, ApiResponse)]
pub enum DevError {
    /// `invalid_request`: a malformed body or phone number.
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
    /// `session_key_stale`: no session key is stored for the token's login; log in again.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `server_error`: an internal failure (details are in the server log).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `temporarily_unavailable`: the database cannot write right now (a full disk, an
    /// I/O error); the server opens it again by itself. Retry after `Retry-After`.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

/// Errors of `POST /v1/token/refresh`.
#[derive(Debug, ApiResponse)]
pub enum RefreshError {
    /// `invalid_request`: a malformed body, or an empty or oversized `refresh_token`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `invalid_grant`: the refresh token is unknown, expired, revoked (logout, or a reuse
    /// of a spent token, which revokes its whole login), or its user's WeChat binding was
    /// removed. Log in again with `wx.login`.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// `rate_limited`: too many refreshes of this login
    /// (`WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY`) or from this address
    /// (`WXAUTH_REFRESH_ATTEMPTS_PER_IP`). Retry after `Retry-After`.
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
    /// `temporarily_unavailable`: the database cannot write right now (a full disk, an
    /// I/O error); the server opens it again by itself. Retry after `Retry-After`.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

impl From<RefreshFailure> for RefreshError {
    fn from(failure: RefreshFailure) -> Self {
        let text = failure.to_string();
        match failure {
            RefreshFailure::InvalidGrant(_) => Self::Unauthorized(body("invalid_grant", text)),
            RefreshFailure::TooManyAttempts { retry_after } => {
                Self::TooManyRequests(body("rate_limited", text), retry_after)
            }
            RefreshFailure::Internal(e) => internal(e).into(),
        }
    }
}

/// Errors of `POST /v1/logout`.
#[derive(Debug, ApiResponse)]
pub enum LogoutError {
    /// `invalid_request`: a malformed body, or an empty or oversized `refresh_token`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `server_error`: an internal failure (details are in the server log).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `temporarily_unavailable`: the database cannot write right now (a full disk, an
    /// I/O error); the server opens it again by itself. Retry after `Retry-After`.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

impl From<Internal> for LogoutError {
    fn from(e: Internal) -> Self {
        internal(e).into()
    }
}

#[cfg(test)]
mod envelope_tests {
    use super::*;

    async fn answer(err: poem::Error) -> (u16, serde_json::Value) {
        let resp = envelope(err).await;
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "{status}: {content_type:?}");
        (status, resp.into_body().into_json().await.unwrap())
    }

    #[tokio::test]
    async fn errors_raised_outside_handlers_get_the_json_envelope_whatever_their_status() {
        let from = |status: u16| poem::Error::from_status(StatusCode::from_u16(status).unwrap());
        let cases = [
            (from(400), 400, "invalid_request"),
            (from(404), 404, "not_found"),
            (from(405), 405, "method_not_allowed"),
            (from(413), 413, "invalid_request"),
            (from(415), 400, "invalid_request"),
            (from(408), 408, "request_timeout"),
            (from(418), 418, "invalid_request"),
            (from(500), 500, "server_error"),
            (from(502), 500, "server_error"),
            (
                poem::Error::from_string("sled: /srv/wxauth/data/db: I/O error", StatusCode::SERVICE_UNAVAILABLE),
                500,
                "server_error",
            ),
        ];
        for (err, status, error) in cases {
            let raised = err.status();

            let (got, body) = answer(err).await;

            assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{raised}: {body}");
            let description = body["error_description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{raised}: {body}");
            assert!(!description.contains("/srv/wxauth"), "a server error's details reached the client: {body}");
        }
        let (_, too_large) = answer(from(413)).await;
        assert!(too_large["error_description"].as_str().unwrap().contains("too large"), "{too_large}");
    }
}
