//! The one place where failures become HTTP answers.
//!
//! Every error body is `{"error": "...", "error_description": "..."}` with RFC 6749-style
//! codes ([`ErrorCode`]), including the errors poem and poem-openapi raise before a handler
//! runs. Split by job:
//! - [`codes`]: the codes, each documented once;
//! - [`responses`]: each operation's response enum ([`LoginError`], [`BindError`], ...), so
//!   the OpenAPI document lists only the statuses it can return, with the shared answers
//!   (401, 429, 500, 503) declared once;
//! - `mapping`: each use case's failure type to its operation's answer, by `match`es
//!   without a catch-all, so a new kind of failure does not compile until it has an answer;
//! - `envelope`: errors raised outside handlers, and the rate limit's 429.

mod codes;
mod envelope;
mod mapping;
mod responses;

use poem_openapi::{Object, payload::Json};

pub use codes::ErrorCode;
pub(super) use envelope::rate_limited_body;
pub use envelope::{envelope, rate_limited};
pub(super) use mapping::internal_example;
pub use responses::{
    AdminAuthError, AdminListError, AdminReadError, AdminWriteError, AuthorizeError, BindError, BrowserError,
    CancelDeletionError, DeleteMeError, DevError, IntrospectError, LoginError, LogoutError, MeError, PhoneError,
    ProfileError, RefreshError, ScanConfirmError, ScanPollError, ScanStartError, SessionError, TokenError,
};

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
    /// Only with `user_banned`: when the ban ends (RFC 3339); absent for a ban until lifted.
    #[oai(skip_serializing_if_is_none)]
    pub until: Option<time::OffsetDateTime>,
    /// Only with `account_pending_deletion`: when the account is erased (RFC 3339).
    #[oai(skip_serializing_if_is_none)]
    pub erase_at: Option<time::OffsetDateTime>,
}

/// An error body with `error` and `error_description` only.
pub fn body(error: ErrorCode, description: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: error.as_str().into(),
        error_description: description.into(),
        bind_ticket: None,
        expires_in: None,
        until: None,
        erase_at: None,
    })
}
