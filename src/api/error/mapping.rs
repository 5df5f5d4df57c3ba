//! Each use case's failure to its operation's answer. Every `match` names every variant:
//! a new kind of failure does not compile until it has an answer.

use poem_openapi::payload::Json;

use super::{
    AdminAuthError, AdminListError, AdminReadError, AdminWriteError, AuthorizeError, BindError, BrowserError,
    CancelDeletionError, DeleteMeError, DevError, ErrorBody, ErrorCode, IntrospectError, LoginError, LogoutError,
    MeError, PhoneError, ProfileError, RefreshError, ScanConfirmError, ScanPollError, ScanStartError, SessionError,
    TokenError, body, envelope::challenge,
};
use crate::{
    api::NO_STORE,
    auth::{
        Banned, BearerFailure, BindFailure, BrowserFailure, CancelFailure, DeletionFailure, Internal,
        IntrospectFailure, LoginFailure, OpenDataFailure, OperatorFailure, PendingDeletion, RefreshFailure,
        ScanFailure, SessionFailure, WriteFailure,
    },
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
/// What a client is told of a failure whose details stay in the server log.
const INTERNAL_DESCRIPTION: &str = "internal error; see the server log";

/// Logs a server-side failure once and answers without its details.
fn internal(err: Internal) -> InternalAnswer {
    match &err {
        // Its own line: nothing the database or the client did, and no secret was issued.
        Internal::Randomness => tracing::error!(error = %err, "no random bytes for a secret; request failed"),
        Internal::Store(_) | Internal::Token(_) | Internal::Password(_) => {
            tracing::error!(error = %err, "request failed")
        }
    }
    internal_answer(err)
}

/// [`internal`] without the log line (for the document's examples).
fn internal_answer(err: Internal) -> InternalAnswer {
    let unavailable = || {
        InternalAnswer::Unavailable(
            body(
                ErrorCode::TemporarilyUnavailable,
                "the database cannot write right now (full disk or I/O error); retry shortly",
            ),
            STORE_RETRY_SECS,
        )
    };
    let failed = || InternalAnswer::Failed(body(ErrorCode::ServerError, INTERNAL_DESCRIPTION));
    match err {
        Internal::Store(StoreError::Database(_)) => unavailable(),
        // Records that should not exist or cannot be read, and answers no request should
        // reach (the bind-only, import-only and set-up errors): bugs, not the disk.
        Internal::Store(
            StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt(_)
            | StoreError::AlreadyBound
            | StoreError::AccountAlreadyBound
            | StoreError::NoSuchAccount
            | StoreError::AccountExists
            | StoreError::PhoneTaken
            | StoreError::AdminTokenExists
            | StoreError::NoSuchAdminToken
            | StoreError::TicketNotFound
            | StoreError::WrongMode { .. }
            | StoreError::WrongSealingKey { .. }
            | StoreError::NoSuchUser
            | StoreError::NotEmpty
            | StoreError::MergeRefused(_)
            | StoreError::NotCreated,
        )
        | Internal::Token(_)
        | Internal::Password(_)
        | Internal::Randomness => failed(),
    }
}

/// The status and body of an internal failure, as every operation answers it (for the
/// document's examples: nothing is logged).
pub(in crate::api) fn internal_example(err: Internal) -> (u16, Json<ErrorBody>) {
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
from_internal_answer!(
    AuthorizeError,
    BrowserError,
    ScanStartError,
    ScanConfirmError,
    ScanPollError,
    TokenError,
    CancelDeletionError,
    DeleteMeError,
    AdminAuthError,
    AdminListError,
    AdminReadError,
    AdminWriteError,
    LoginError,
    BindError,
    MeError,
    PhoneError,
    ProfileError,
    DevError,
    RefreshError,
    LogoutError,
    SessionError,
    IntrospectError
);

/// The body of a `user_banned` answer: the reason in the description, the end in `until`.
fn banned_body(banned: Banned) -> Json<ErrorBody> {
    let until = banned.until;
    Json(ErrorBody { until, ..body(ErrorCode::UserBanned, banned.to_string()).0 })
}

/// The body of an `account_pending_deletion` answer: the erasure time in `erase_at`.
fn pending_body(pending: PendingDeletion) -> Json<ErrorBody> {
    let erase_at = Some(pending.erase_at);
    Json(ErrorBody { erase_at, ..body(ErrorCode::AccountPendingDeletion, pending.to_string()).0 })
}

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
        WechatError::InvalidCode { .. } => WechatAnswer::BadRequest(body(ErrorCode::InvalidCode, text + again)),
        WechatError::CodeUsed { .. } => WechatAnswer::BadRequest(body(ErrorCode::CodeUsed, text + again)),
        WechatError::UserBlocked { .. } => WechatAnswer::Forbidden(body(ErrorCode::UserBlocked, text)),
        WechatError::SnapshotUser { .. } => WechatAnswer::Forbidden(body(ErrorCode::SnapshotUser, text)),
        WechatError::RateLimited { .. } => WechatAnswer::TooManyRequests(
            body(ErrorCode::RateLimited, text + "; retry next minute"),
            RATE_LIMIT_RETRY_SECS,
        ),
        WechatError::Busy { .. } => {
            WechatAnswer::Unavailable(body(ErrorCode::WechatUnavailable, text), BUSY_RETRY_SECS)
        }
        WechatError::Unavailable { retry_after, .. } => WechatAnswer::Unavailable(
            body(ErrorCode::WechatUnavailable, text + "; retry after the time in Retry-After"),
            retry_after.as_secs_f64().ceil().max(1.0) as u64,
        ),
        WechatError::Timeout => WechatAnswer::GatewayTimeout(body(ErrorCode::WechatTimeout, text)),
        WechatError::Upstream(_) | WechatError::Transport(_) | WechatError::AccessTokenRejected { .. } => {
            WechatAnswer::BadGateway(body(ErrorCode::WechatError, text))
        }
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

/// The operations that call WeChat answer its failures with the same statuses, as
/// [`WechatAnswer`] has them (`LoginError` adds `Cache-Control` to its 403 and has its own).
macro_rules! from_wechat_answer {
    ($($error:ident),*) => {$(
        impl From<WechatAnswer> for $error {
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
    )*};
}
from_wechat_answer!(BindError, DeleteMeError, CancelDeletionError);

impl From<LoginFailure> for LoginError {
    fn from(failure: LoginFailure) -> Self {
        let text = failure.to_string();
        match failure {
            LoginFailure::InvalidInput(_) | LoginFailure::AppRequired(_) => {
                Self::BadRequest(body(ErrorCode::InvalidRequest, text))
            }
            LoginFailure::UnknownApp(..) => Self::BadRequest(body(ErrorCode::UnknownApp, text)),
            LoginFailure::Wechat(e) => wechat_answer(e).into(),
            LoginFailure::NotBound { ticket, expires_in } => {
                Self::Forbidden(with_ticket(ErrorCode::NotBound, text, Some((ticket, expires_in))), NO_STORE.into())
            }
            LoginFailure::PhoneRequired { ticket, expires_in } => Self::Forbidden(
                with_ticket(ErrorCode::PhoneRequired, text, Some((ticket, expires_in))),
                NO_STORE.into(),
            ),
            LoginFailure::NoAccountForPhone { ticket } => {
                Self::Conflict(with_ticket(ErrorCode::NoAccountForPhone, text, ticket))
            }
            LoginFailure::AlreadyBound => Self::Conflict(body(ErrorCode::AlreadyBound, text)),
            LoginFailure::AccountAlreadyBound => Self::Conflict(body(ErrorCode::AccountAlreadyBound, text)),
            LoginFailure::TooManyAttempts { retry_after } => {
                Self::TooManyRequests(body(ErrorCode::RateLimited, text), retry_after)
            }
            LoginFailure::Banned(banned) => Self::Forbidden(banned_body(banned), NO_STORE.into()),
            LoginFailure::PendingDeletion(pending) => Self::Forbidden(pending_body(pending), NO_STORE.into()),
            LoginFailure::Internal(e) => internal(e).into(),
        }
    }
}

/// `POST /v1/token` answers as `/v1/login` does where it logs in, plus the code's own
/// refusals (RFC 6749 section 5.2).
impl From<BrowserFailure> for TokenError {
    fn from(failure: BrowserFailure) -> Self {
        let text = failure.to_string();
        match failure {
            BrowserFailure::InvalidRequest(_) => Self::BadRequest(body(ErrorCode::InvalidRequest, text)),
            BrowserFailure::UnknownApp(..) => Self::BadRequest(body(ErrorCode::UnknownApp, text)),
            BrowserFailure::InvalidGrant(_) => Self::BadRequest(body(ErrorCode::InvalidGrant, text)),
            BrowserFailure::UnsupportedGrantType => Self::BadRequest(body(ErrorCode::UnsupportedGrantType, text)),
            BrowserFailure::Login(failure) => match LoginError::from(failure) {
                LoginError::BadRequest(b) => Self::BadRequest(b),
                LoginError::Forbidden(b, cache) => Self::Forbidden(b, cache),
                LoginError::Internal(b) => Self::Internal(b),
                LoginError::Unavailable(b, secs) => Self::Unavailable(b, secs),
                // No phone code, no WeChat call and no attempt limit at this step.
                answer @ (LoginError::Conflict(_)
                | LoginError::TooManyRequests(..)
                | LoginError::BadGateway(_)
                | LoginError::GatewayTimeout(_)) => {
                    let unexpected = format!("POST /v1/token answered {}", answer.code());
                    internal(Internal::Store(StoreError::Corrupt(unexpected))).into()
                }
            },
            // Only starting a browser login counts against the address.
            BrowserFailure::TooManyRequests { .. } => {
                internal(Internal::Store(StoreError::Corrupt(format!("POST /v1/token answered {text}")))).into()
            }
            BrowserFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<ScanFailure> for ScanStartError {
    fn from(failure: ScanFailure) -> Self {
        let text = failure.to_string();
        match failure {
            ScanFailure::InvalidInput(_) | ScanFailure::AppRequired(_) => {
                Self::BadRequest(body(ErrorCode::InvalidRequest, text))
            }
            ScanFailure::UnknownApp(..) => Self::BadRequest(body(ErrorCode::UnknownApp, text)),
            ScanFailure::TooManyRequests { retry_after } => {
                Self::TooManyRequests(super::rate_limited_body(retry_after, "scan sessions"), retry_after)
            }
            ScanFailure::Wechat(e) => match wechat_answer(e) {
                WechatAnswer::TooManyRequests(b, secs) => Self::TooManyRequests(b, secs),
                WechatAnswer::Unavailable(b, secs) => Self::Unavailable(b, secs),
                WechatAnswer::GatewayTimeout(b) => Self::GatewayTimeout(b),
                // A code's image has no code of the person to refuse or block.
                WechatAnswer::BadRequest(b) | WechatAnswer::Forbidden(b) | WechatAnswer::BadGateway(b) => {
                    Self::BadGateway(Json(ErrorBody { error: ErrorCode::WechatError.as_str().into(), ..b.0 }))
                }
            },
            // Starting needs no token and no user.
            ScanFailure::NotFound
            | ScanFailure::AppMismatch(_)
            | ScanFailure::Rejected(_)
            | ScanFailure::Banned(_)
            | ScanFailure::PendingDeletion(_) => {
                internal(Internal::Store(StoreError::Corrupt(format!("starting a scan session answered {text}"))))
                    .into()
            }
            ScanFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<ScanFailure> for ScanConfirmError {
    fn from(failure: ScanFailure) -> Self {
        let text = failure.to_string();
        match failure {
            ScanFailure::NotFound => Self::NotFound(body(ErrorCode::ScanSessionNotFound, text)),
            ScanFailure::AppMismatch(_) => Self::Forbidden(body(ErrorCode::AppMismatch, text)),
            ScanFailure::Banned(banned) => Self::Forbidden(banned_body(banned)),
            ScanFailure::Rejected(r) => match rejected(r) {
                MeError::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
                MeError::Internal(b) => Self::Internal(b),
                MeError::Unavailable(b, secs) => Self::Unavailable(b, secs),
            },
            // Confirming calls no WeChat, has no attempt limit, and a pending deletion
            // does not stop a login that is confirmed (it is refused at collection).
            ScanFailure::InvalidInput(_)
            | ScanFailure::UnknownApp(..)
            | ScanFailure::AppRequired(_)
            | ScanFailure::TooManyRequests { .. }
            | ScanFailure::Wechat(_)
            | ScanFailure::PendingDeletion(_) => {
                internal(Internal::Store(StoreError::Corrupt(format!("confirming a scan answered {text}")))).into()
            }
            ScanFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<ScanFailure> for ScanPollError {
    fn from(failure: ScanFailure) -> Self {
        let text = failure.to_string();
        match failure {
            ScanFailure::NotFound => Self::NotFound(body(ErrorCode::ScanSessionNotFound, text)),
            ScanFailure::Banned(banned) => Self::Forbidden(banned_body(banned)),
            ScanFailure::PendingDeletion(pending) => Self::Forbidden(pending_body(pending)),
            ScanFailure::InvalidInput(_)
            | ScanFailure::UnknownApp(..)
            | ScanFailure::AppRequired(_)
            | ScanFailure::AppMismatch(_)
            | ScanFailure::Rejected(_)
            | ScanFailure::TooManyRequests { .. }
            | ScanFailure::Wechat(_) => {
                internal(Internal::Store(StoreError::Corrupt(format!("polling a scan answered {text}")))).into()
            }
            ScanFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<BrowserFailure> for AuthorizeError {
    fn from(failure: BrowserFailure) -> Self {
        if let BrowserFailure::TooManyRequests { retry_after } = failure {
            return Self::TooManyRequests(super::rate_limited_body(retry_after, "browser logins"), retry_after);
        }
        match BrowserError::from(failure) {
            BrowserError::BadRequest(b) => Self::BadRequest(b),
            BrowserError::Internal(b) => Self::Internal(b),
            BrowserError::Unavailable(b, secs) => Self::Unavailable(b, secs),
        }
    }
}

/// The steps of a browser login before the client is known to be the right one to send
/// the browser back to: plain JSON errors, never a redirect.
impl From<BrowserFailure> for BrowserError {
    fn from(failure: BrowserFailure) -> Self {
        let text = failure.to_string();
        match failure {
            BrowserFailure::InvalidRequest(_) => Self::BadRequest(body(ErrorCode::InvalidRequest, text)),
            BrowserFailure::UnknownApp(..) => Self::BadRequest(body(ErrorCode::UnknownApp, text)),
            // Only `POST /v1/token` spends codes and logs in.
            BrowserFailure::InvalidGrant(_) | BrowserFailure::UnsupportedGrantType | BrowserFailure::Login(_) => {
                internal(Internal::Store(StoreError::Corrupt(format!("a browser step answered {text}")))).into()
            }
            // Only authorize counts against the address ([`AuthorizeError`]).
            BrowserFailure::TooManyRequests { .. } => {
                internal(Internal::Store(StoreError::Corrupt(format!("the callback answered {text}")))).into()
            }
            BrowserFailure::Internal(e) => internal(e).into(),
        }
    }
}

/// An error body with the bind ticket (and its lifetime in seconds) a login answer adds.
fn with_ticket(code: ErrorCode, text: String, ticket: Option<(String, u64)>) -> Json<ErrorBody> {
    let (bind_ticket, expires_in) = ticket.map_or((None, None), |(t, secs)| (Some(t), Some(secs)));
    Json(ErrorBody { bind_ticket, expires_in, ..body(code, text).0 })
}

impl From<BindFailure> for BindError {
    fn from(failure: BindFailure) -> Self {
        let text = failure.to_string();
        match failure {
            BindFailure::InvalidInput(_) | BindFailure::AppRequired(_) => {
                Self::BadRequest(body(ErrorCode::InvalidRequest, text))
            }
            BindFailure::UnknownApp(..) => Self::BadRequest(body(ErrorCode::UnknownApp, text)),
            BindFailure::InvalidTicket => Self::BadRequest(body(ErrorCode::InvalidTicket, text)),
            BindFailure::Wechat(e) => wechat_answer(e).into(),
            BindFailure::InvalidCredentials => Self::Unauthorized(body(ErrorCode::InvalidCredentials, text)),
            BindFailure::AlreadyBound => Self::Conflict(body(ErrorCode::AlreadyBound, text)),
            BindFailure::AccountAlreadyBound => Self::Conflict(body(ErrorCode::AccountAlreadyBound, text)),
            BindFailure::NoAccountForPhone => Self::Conflict(body(ErrorCode::NoAccountForPhone, text)),
            BindFailure::TooManyAttempts { retry_after } => {
                Self::TooManyRequests(body(ErrorCode::RateLimited, text), retry_after)
            }
            BindFailure::Banned(banned) => Self::Forbidden(banned_body(banned)),
            BindFailure::PendingDeletion(pending) => Self::Forbidden(pending_body(pending)),
            BindFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<BearerFailure> for MeError {
    fn from(failure: BearerFailure) -> Self {
        match failure {
            BearerFailure::Rejected(r) => rejected(r),
            BearerFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<SessionFailure> for SessionError {
    fn from(failure: SessionFailure) -> Self {
        match failure {
            SessionFailure::Bearer(bearer) => match MeError::from(bearer) {
                MeError::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
                MeError::Internal(b) => Self::Internal(b),
                MeError::Unavailable(b, secs) => Self::Unavailable(b, secs),
            },
            SessionFailure::NotFound => Self::NotFound(body(ErrorCode::SessionNotFound, failure.to_string())),
        }
    }
}

impl From<IntrospectFailure> for IntrospectError {
    fn from(failure: IntrospectFailure) -> Self {
        let text = failure.to_string();
        match failure {
            IntrospectFailure::UnknownClient => Self::Unauthorized(
                body(ErrorCode::InvalidClient, text),
                "Basic realm=\"wxauth\", Bearer realm=\"wxauth\"".into(),
            ),
            IntrospectFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<DeletionFailure> for DeleteMeError {
    fn from(failure: DeletionFailure) -> Self {
        let text = failure.to_string();
        match failure {
            DeletionFailure::InvalidInput(_) => Self::BadRequest(body(ErrorCode::InvalidRequest, text)),
            DeletionFailure::Bearer(bearer) => match MeError::from(bearer) {
                MeError::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
                MeError::Internal(b) => Self::Internal(b),
                MeError::Unavailable(b, secs) => Self::Unavailable(b, secs),
            },
            DeletionFailure::Wechat(e) => wechat_answer(e).into(),
            DeletionFailure::CodeMismatch => Self::Forbidden(body(ErrorCode::CodeMismatch, text)),
        }
    }
}

impl From<CancelFailure> for CancelDeletionError {
    fn from(failure: CancelFailure) -> Self {
        let text = failure.to_string();
        match failure {
            CancelFailure::InvalidInput(_) | CancelFailure::AppRequired(_) => {
                Self::BadRequest(body(ErrorCode::InvalidRequest, text))
            }
            CancelFailure::UnknownApp(..) => Self::BadRequest(body(ErrorCode::UnknownApp, text)),
            CancelFailure::Wechat(e) => wechat_answer(e).into(),
            CancelFailure::NothingPending => Self::NotFound(body(ErrorCode::DeletionNotFound, text)),
            CancelFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<OperatorFailure> for AdminReadError {
    fn from(failure: OperatorFailure) -> Self {
        let text = failure.to_string();
        match failure {
            OperatorFailure::Unauthenticated => {
                Self::Unauthorized(body(ErrorCode::InvalidToken, text.clone()), challenge(&text))
            }
            OperatorFailure::NoSuchUser => Self::NotFound(body(ErrorCode::UserNotFound, text)),
            // Reads name no session; should one, it is as absent as a user.
            OperatorFailure::NoSuchSession => Self::NotFound(body(ErrorCode::SessionNotFound, text)),
            OperatorFailure::Invalid(_) => Self::BadRequest(body(ErrorCode::InvalidRequest, text)),
            OperatorFailure::Internal(e) => internal(e).into(),
        }
    }
}

/// An operator failure the operation cannot produce (a listing names no user or session; an
/// operation without parameters refuses none): a bug, answered as one.
fn impossible(failure: OperatorFailure) -> InternalAnswer {
    tracing::error!(error = %failure, "an admin operation failed in a way it cannot; a bug");
    InternalAnswer::Failed(body(ErrorCode::ServerError, INTERNAL_DESCRIPTION))
}

impl From<OperatorFailure> for AdminListError {
    fn from(failure: OperatorFailure) -> Self {
        match AdminReadError::from(failure) {
            AdminReadError::BadRequest(b) => Self::BadRequest(b),
            AdminReadError::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
            AdminReadError::NotFound(b) => impossible(OperatorFailure::Invalid(b.0.error_description)).into(),
            AdminReadError::Internal(b) => Self::Internal(b),
            AdminReadError::Unavailable(b, secs) => Self::Unavailable(b, secs),
        }
    }
}

impl From<OperatorFailure> for AdminAuthError {
    fn from(failure: OperatorFailure) -> Self {
        match AdminListError::from(failure) {
            AdminListError::BadRequest(b) => impossible(OperatorFailure::Invalid(b.0.error_description)).into(),
            AdminListError::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
            AdminListError::Internal(b) => Self::Internal(b),
            AdminListError::Unavailable(b, secs) => Self::Unavailable(b, secs),
        }
    }
}

impl From<WriteFailure> for AdminWriteError {
    fn from(failure: WriteFailure) -> Self {
        match failure {
            WriteFailure::ReadOnly => Self::Forbidden(body(ErrorCode::InsufficientScope, failure.to_string())),
            WriteFailure::Operator(failure) => match AdminReadError::from(failure) {
                AdminReadError::BadRequest(b) => Self::BadRequest(b),
                AdminReadError::Unauthorized(b, challenge) => Self::Unauthorized(b, challenge),
                AdminReadError::NotFound(b) => Self::NotFound(b),
                AdminReadError::Internal(b) => Self::Internal(b),
                AdminReadError::Unavailable(b, secs) => Self::Unavailable(b, secs),
            },
        }
    }
}

fn rejected(rejection: Rejection) -> MeError {
    let description = rejection.to_string();
    MeError::Unauthorized(body(ErrorCode::InvalidToken, description.clone()), challenge(&description))
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
    let bad_request = |code, text| OpenDataAnswer::BadRequest(body(code, text));
    match failure {
        OpenDataFailure::Rejected(r) => match rejected(r) {
            MeError::Unauthorized(b, challenge) => OpenDataAnswer::Unauthorized(b, challenge),
            MeError::Internal(b) => OpenDataAnswer::Internal(InternalAnswer::Failed(b)),
            MeError::Unavailable(b, secs) => OpenDataAnswer::Internal(InternalAnswer::Unavailable(b, secs)),
        },
        OpenDataFailure::InvalidRequest(_)
        | OpenDataFailure::InvalidCode(_)
        | OpenDataFailure::Data(OpenDataError::Malformed(_)) => bad_request(ErrorCode::InvalidRequest, text),
        OpenDataFailure::Data(OpenDataError::WatermarkMismatch { .. }) => {
            bad_request(ErrorCode::WatermarkMismatch, text)
        }
        OpenDataFailure::BadSignature => bad_request(ErrorCode::InvalidSignature, text),
        OpenDataFailure::UnknownApp(_) => bad_request(ErrorCode::UnknownApp, text),
        OpenDataFailure::Data(OpenDataError::Stale) | OpenDataFailure::NoSessionKey => {
            OpenDataAnswer::Conflict(body(ErrorCode::SessionKeyStale, text))
        }
        OpenDataFailure::Wechat(e @ (WechatError::InvalidCode { .. } | WechatError::CodeUsed { .. })) => bad_request(
            ErrorCode::InvalidCode,
            e.to_string() + "; a phone code works once and for 5 minutes: ask for the number again",
        ),
        // The phone API never blocks a user; an errcode it should not send is WeChat's fault.
        OpenDataFailure::Wechat(WechatError::UserBlocked { rid }) => OpenDataAnswer::Wechat(WechatAnswer::BadGateway(
            body(ErrorCode::WechatError, WechatError::UserBlocked { rid }.to_string()),
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
                    OpenDataAnswer::Wechat(_) => Self::Internal(body(ErrorCode::ServerError, INTERNAL_DESCRIPTION)),
                }
            }
        }
    )*};
}
from_open_data_without_wechat!(ProfileError, DevError);

impl From<RefreshFailure> for RefreshError {
    fn from(failure: RefreshFailure) -> Self {
        let text = failure.to_string();
        match failure {
            RefreshFailure::InvalidGrant(_) => Self::Unauthorized(body(ErrorCode::InvalidGrant, text)),
            RefreshFailure::TooManyAttempts { retry_after } => {
                Self::TooManyRequests(body(ErrorCode::RateLimited, text), retry_after)
            }
            RefreshFailure::Banned(banned) => Self::Forbidden(banned_body(banned)),
            RefreshFailure::Internal(e) => internal(e).into(),
        }
    }
}

impl From<Internal> for LogoutError {
    fn from(e: Internal) -> Self {
        internal(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_database_failure_asks_the_client_to_wait_for_the_disk() {
        let cases = [
            (Internal::Store(StoreError::Database("I/O error".into())), 503, ErrorCode::TemporarilyUnavailable),
            (Internal::Randomness, 500, ErrorCode::ServerError),
            (Internal::Store(StoreError::Corrupt("bad record".into())), 500, ErrorCode::ServerError),
        ];
        for (failure, status, code) in cases {
            let case = failure.to_string();

            let (answered, body) = internal_example(failure);

            assert_eq!((answered, body.0.error.as_str()), (status, code.as_str()), "{case}");
        }
    }
}
