//! Example error bodies for the OpenAPI document, one list per operation and status.
//!
//! Each is produced by the same mapping real answers go through (`error/mapping.rs`), from
//! the failure that causes it, so Swagger UI shows what a client will really receive. Each is
//! named after the [`ErrorCode`] it answers, with a note when one status shows several
//! examples of one code.

use poem_openapi::{payload::Json, types::ToJSON};
use serde_json::Value;

use super::error::{
    AdminListError, AdminReadError, AdminWriteError, AuthorizeError, BindError, BrowserError, CancelDeletionError,
    DeleteMeError, DevError, ErrorBody, ErrorCode, IntrospectError, LoginError, MeError, PhoneError, ProfileError,
    RefreshError, ScanConfirmError, ScanPollError, ScanStartError, SessionError, TokenError,
};
use crate::{
    auth::{
        BIND_TICKET_SECS, Banned, BearerFailure, BindFailure, BrowserFailure, CancelFailure, DeletionFailure, Internal,
        IntrospectFailure, LoginFailure, OpenDataFailure, OperatorFailure, PendingDeletion, RefreshFailure,
        ScanFailure, SessionFailure, WriteFailure,
    },
    domain::DomainError,
    opendata::OpenDataError,
    store::StoreError,
    token::Rejection,
    wechat::WechatError,
};

const RID: &str = "626d6eea-742b9141-407c26f8";
const APPID: &str = "wx4f4bc4dec97d474b";

/// The named example bodies of one operation's answers with one status.
pub(super) struct Examples {
    pub(super) path: &'static str,
    pub(super) method: &'static str,
    pub(super) status: u16,
    pub(super) list: Vec<(String, Value)>,
}

/// Examples for every error answer of the operations that have them.
pub(super) fn all() -> Vec<Examples> {
    grouped(vec![
        ("/v1/login", "post", login()),
        ("/v1/bind", "post", bind()),
        ("/v1/me", "get", bearer()),
        ("/v1/me/binding", "delete", bearer()),
        ("/v1/token/refresh", "post", refresh()),
        ("/v1/logout", "post", logout()),
        ("/v1/me/logout-all", "post", bearer()),
        ("/v1/me/sessions", "get", bearer()),
        ("/v1/me/export", "get", bearer()),
        ("/v1/me", "delete", delete_me()),
        ("/v1/deletion/cancel", "post", cancel_deletion()),
        ("/v1/token/introspect", "post", introspect()),
        ("/v1/me/sessions/{id}", "delete", end_session()),
        ("/v1/me/phone", "post", phone()),
        ("/v1/me/profile", "post", profile()),
        ("/v1/dev/open-data", "post", dev()),
        ("/readyz", "get", ready()),
        ("/v1/oauth/wechat/authorize", "get", authorize()),
        ("/v1/oauth/wechat/callback", "get", browser(true)),
        ("/v1/token", "post", token()),
        ("/v1/scan-sessions", "post", scan_start()),
        ("/v1/scan-sessions/{scene}/confirm", "post", scan_confirm()),
        ("/v1/scan-sessions/{id}", "get", scan_poll()),
    ])
}

/// Examples for every error answer of the admin API.
pub(super) fn admin() -> Vec<Examples> {
    let user = "/admin/v1/users/{id}";
    grouped(vec![
        ("/admin/v1/users", "get", admin_list(vec![bad_cursor()])),
        (user, "get", admin_read(vec![bad_user_id(), no_such_user()])),
        (user, "delete", admin_write(vec![bad_user_id(), no_such_user()])),
        ("/admin/v1/users/{id}/ban", "put", admin_write(vec![bad_user_id(), no_such_user()])),
        ("/admin/v1/users/{id}/ban", "delete", admin_write(vec![bad_user_id(), no_such_user()])),
        ("/admin/v1/users/{id}/roles", "put", admin_write(vec![bad_role(), no_such_user()])),
        ("/admin/v1/users/{id}/claims", "put", admin_write(vec![bad_claims(), no_such_user()])),
        ("/admin/v1/users/{id}/account-phone", "put", admin_write(vec![phone_taken(), no_such_user()])),
        ("/admin/v1/users/{id}/merge", "post", admin_write(vec![merge_refused(), no_such_user()])),
        ("/admin/v1/users/{id}/sessions", "delete", admin_write(vec![bad_user_id(), no_such_user()])),
        (
            "/admin/v1/users/{id}/sessions/{session}",
            "delete",
            admin_write(vec![bad_user_id(), no_such_user(), OperatorFailure::NoSuchSession]),
        ),
        ("/admin/v1/events", "get", admin_list(vec![bad_kind(), bad_cursor()])),
        ("/admin/v1/keys", "get", admin_list(vec![])),
        ("/admin/v1/stats", "get", admin_list(vec![])),
        ("/admin/v1/token", "get", admin_list(vec![])),
    ])
}

fn bad_cursor() -> OperatorFailure {
    OperatorFailure::Invalid("cursor must be a next_cursor of a previous page, unchanged".into())
}

fn bad_user_id() -> OperatorFailure {
    OperatorFailure::Invalid("the user id must be a UUID (the `id` of a user)".into())
}

fn no_such_user() -> OperatorFailure {
    OperatorFailure::NoSuchUser
}

fn bad_role() -> OperatorFailure {
    OperatorFailure::Invalid(
        crate::domain::roles(&["has space".to_owned()]).err().map(|e| e.to_string()).unwrap_or_default(),
    )
}

fn bad_claims() -> OperatorFailure {
    OperatorFailure::Invalid(
        crate::domain::CustomClaims::parse(r#"{"sub":"x"}"#).err().map(|e| e.to_string()).unwrap_or_default(),
    )
}

fn phone_taken() -> OperatorFailure {
    crate::admin::CommandError::from(crate::store::StoreError::PhoneTaken).into()
}

fn merge_refused() -> OperatorFailure {
    let reason = "both users have an identity of app wx4f4bc4dec97d474b: WeChat says they are two people there";
    crate::admin::CommandError::from(crate::store::StoreError::MergeRefused(reason.into())).into()
}

fn bad_kind() -> OperatorFailure {
    OperatorFailure::Invalid("unknown event kind \"logins\"; the kinds are login, login_failed, ...".into())
}

/// The answers of an admin API read: `failures` of its own, then an unknown token and the
/// server's failures.
fn admin_read(mut all: Vec<OperatorFailure>) -> Vec<Example> {
    all.push(OperatorFailure::Unauthenticated);
    let mut out: Vec<Example> = all
        .into_iter()
        .map(|failure| match AdminReadError::from(failure) {
            AdminReadError::BadRequest(b) => named(None, 400, b),
            AdminReadError::Unauthorized(b, _) => named(None, 401, b),
            AdminReadError::NotFound(b) => named(None, 404, b),
            AdminReadError::Internal(b) => named(None, 500, b),
            AdminReadError::Unavailable(b, _) => named(None, 503, b),
        })
        .collect();
    out.extend(server_errors());
    out
}

/// The answers of an admin API listing (and, without failures of its own, of an operation
/// without parameters): `failures` of its own, then an unknown token and the server's.
fn admin_list(mut all: Vec<OperatorFailure>) -> Vec<Example> {
    all.push(OperatorFailure::Unauthenticated);
    let mut out: Vec<Example> = all
        .into_iter()
        .map(|failure| match AdminListError::from(failure) {
            AdminListError::BadRequest(b) => named(None, 400, b),
            AdminListError::Unauthorized(b, _) => named(None, 401, b),
            AdminListError::Internal(b) => named(None, 500, b),
            AdminListError::Unavailable(b, _) => named(None, 503, b),
        })
        .collect();
    out.extend(server_errors());
    out
}

/// The answers of an admin API change: those of a read, and a `read` token's 403.
fn admin_write(failures: Vec<OperatorFailure>) -> Vec<Example> {
    let mut out = admin_read(failures);
    if let AdminWriteError::Forbidden(b) = AdminWriteError::from(WriteFailure::ReadOnly) {
        out.push(named(None, 403, b));
    }
    out
}

/// Each operation's examples, grouped by status.
fn grouped(operations: Vec<(&'static str, &'static str, Vec<Example>)>) -> Vec<Examples> {
    let mut out = Vec::new();
    for (path, method, examples) in operations {
        let mut by_status: Vec<(u16, Vec<(String, Value)>)> = Vec::new();
        for (name, status, body) in examples {
            match by_status.iter_mut().find(|(s, _)| *s == status) {
                Some((_, list)) => list.push((name, body)),
                None => by_status.push((status, vec![(name, body)])),
            }
        }
        out.extend(by_status.into_iter().map(|(status, list)| Examples { path, method, status, list }));
    }
    out
}

/// One example: its name, status and body.
type Example = (String, u16, Value);

/// What tells apart several examples of one code under one status; `None` for the only one.
type Note = Option<&'static str>;

/// An example named after the code it answers: `code`, or `code (note)`.
fn named(note: Note, status: u16, body: Json<ErrorBody>) -> Example {
    let name = match note {
        Some(note) => format!("{} ({note})", body.0.error),
        None => body.0.error.clone(),
    };
    (name, status, body.0.to_json().unwrap_or_default())
}

fn rid() -> Option<String> {
    Some(RID.into())
}

/// Failures every operation calling WeChat shares.
fn wechat_failures() -> Vec<(Note, WechatError)> {
    vec![
        (None, WechatError::InvalidCode { rid: rid() }),
        (None, WechatError::CodeUsed { rid: rid() }),
        (None, WechatError::UserBlocked { rid: rid() }),
        (None, WechatError::RateLimited { rid: rid() }),
        (None, WechatError::Upstream(format!("WeChat errcode 40013, rid {RID}"))),
        (None, WechatError::Busy { rid: rid() }),
        (
            Some("circuit breaker open"),
            WechatError::Unavailable {
                reason: "WeChat failed repeatedly; requests are paused (circuit breaker open)",
                retry_after: std::time::Duration::from_secs(4),
            },
        ),
        (None, WechatError::Timeout),
    ]
}

/// The answers of failures that are not the client's fault, shared by every operation.
fn server_errors() -> Vec<Example> {
    let disk = Internal::Store(StoreError::Database("IO error: No space left on device (os error 28)".into()));
    let bug = Internal::Store(StoreError::Corrupt("malformed user id".into()));
    [disk, bug]
        .into_iter()
        .map(|failure| {
            let (status, body) = super::error::internal_example(failure);
            named(None, status, body)
        })
        .collect()
}

fn login() -> Vec<Example> {
    let mut failures = vec![
        (None, LoginFailure::InvalidInput(DomainError::EmptyCode)),
        (None, LoginFailure::UnknownApp("wx0000000000000000".into(), APPID.into())),
        (
            None,
            LoginFailure::NotBound {
                ticket: "bt_q0v1yX3dM2Yj5C1n0Jx8WmJ2S3o7bq4K9yUeLr6fPzA".into(),
                expires_in: BIND_TICKET_SECS,
            },
        ),
        (
            None,
            LoginFailure::PhoneRequired {
                ticket: "bt_q0v1yX3dM2Yj5C1n0Jx8WmJ2S3o7bq4K9yUeLr6fPzA".into(),
                expires_in: BIND_TICKET_SECS,
            },
        ),
        (
            None,
            LoginFailure::NoAccountForPhone {
                ticket: Some(("bt_q0v1yX3dM2Yj5C1n0Jx8WmJ2S3o7bq4K9yUeLr6fPzA".into(), BIND_TICKET_SECS)),
            },
        ),
        (None, LoginFailure::Banned(banned())),
        (
            None,
            LoginFailure::PendingDeletion(PendingDeletion { erase_at: time::macros::datetime!(2027-01-08 09:30 UTC) }),
        ),
    ];
    failures.extend(wechat_failures().into_iter().map(|(note, e)| (note, LoginFailure::Wechat(e))));
    let mut out: Vec<_> = failures.into_iter().map(|(note, f)| login_answer(note, f.into())).collect();
    out.push(named(Some("WXAUTH_RATE_LIMIT_PER_MINUTE"), 429, super::error::rate_limited_body(12, "login attempts")));
    out.extend(server_errors());
    out
}

fn delete_me() -> Vec<Example> {
    let mut failures =
        vec![(None, DeletionFailure::InvalidInput(DomainError::EmptyCode)), (None, DeletionFailure::CodeMismatch)];
    failures.extend(wechat_failures().into_iter().map(|(note, e)| (note, DeletionFailure::Wechat(e))));
    let mut out: Vec<Example> = failures
        .into_iter()
        .map(|(note, f)| {
            let (status, body) = match DeleteMeError::from(f) {
                DeleteMeError::BadRequest(b) => (400, b),
                DeleteMeError::Unauthorized(b, _) => (401, b),
                DeleteMeError::Forbidden(b) => (403, b),
                DeleteMeError::TooManyRequests(b, _) => (429, b),
                DeleteMeError::Internal(b) => (500, b),
                DeleteMeError::BadGateway(b) => (502, b),
                DeleteMeError::Unavailable(b, _) => (503, b),
                DeleteMeError::GatewayTimeout(b) => (504, b),
            };
            named(note, status, body)
        })
        .collect();
    out.extend(bearer().into_iter().filter(|(_, status, _)| *status == 401));
    out.extend(server_errors());
    out
}

fn cancel_deletion() -> Vec<Example> {
    let mut failures = vec![
        (None, CancelFailure::InvalidInput(DomainError::EmptyCode)),
        (None, CancelFailure::UnknownApp("wx0000000000000000".into(), APPID.into())),
        (None, CancelFailure::NothingPending),
    ];
    failures.extend(wechat_failures().into_iter().map(|(note, e)| (note, CancelFailure::Wechat(e))));
    let mut out: Vec<Example> = failures
        .into_iter()
        .map(|(note, f)| {
            let (status, body) = match CancelDeletionError::from(f) {
                CancelDeletionError::BadRequest(b) => (400, b),
                CancelDeletionError::Forbidden(b) => (403, b),
                CancelDeletionError::NotFound(b) => (404, b),
                CancelDeletionError::TooManyRequests(b, _) => (429, b),
                CancelDeletionError::Internal(b) => (500, b),
                CancelDeletionError::BadGateway(b) => (502, b),
                CancelDeletionError::Unavailable(b, _) => (503, b),
                CancelDeletionError::GatewayTimeout(b) => (504, b),
            };
            named(note, status, body)
        })
        .collect();
    out.push(named(Some("WXAUTH_RATE_LIMIT_PER_MINUTE"), 429, super::error::rate_limited_body(12, "login attempts")));
    out.extend(server_errors());
    out
}

fn ready() -> Vec<Example> {
    let body = super::error::body(
        ErrorCode::NotReady,
        "not ready: wechat: the circuit breaker is open after repeated failures",
    );
    vec![named(None, 503, body)]
}

fn login_answer(note: Note, answer: LoginError) -> Example {
    let (status, body) = match answer {
        LoginError::BadRequest(b) => (400, b),
        LoginError::Forbidden(b, _) => (403, b),
        LoginError::Conflict(b) => (409, b),
        LoginError::TooManyRequests(b, _) => (429, b),
        LoginError::Internal(b) => (500, b),
        LoginError::BadGateway(b) => (502, b),
        LoginError::Unavailable(b, _) => (503, b),
        LoginError::GatewayTimeout(b) => (504, b),
    };
    named(note, status, body)
}

fn bind() -> Vec<Example> {
    let mut failures = vec![
        (None, BindFailure::InvalidInput(DomainError::TicketOrCode)),
        (None, BindFailure::InvalidTicket),
        (None, BindFailure::UnknownApp("wx0000000000000000".into(), APPID.into())),
        (None, BindFailure::InvalidCredentials),
        (None, BindFailure::AlreadyBound),
        (None, BindFailure::AccountAlreadyBound),
        (None, BindFailure::NoAccountForPhone),
        (Some("attempts"), BindFailure::TooManyAttempts { retry_after: 12 }),
        (None, BindFailure::Banned(banned())),
    ];
    failures.extend(wechat_failures().into_iter().map(|(note, e)| (note, BindFailure::Wechat(e))));
    let mut out: Vec<_> = failures.into_iter().map(|(note, f)| bind_answer(note, f.into())).collect();
    out.extend(server_errors());
    out
}

fn bind_answer(note: Note, answer: BindError) -> Example {
    let (status, body) = match answer {
        BindError::BadRequest(b) => (400, b),
        BindError::Unauthorized(b) => (401, b),
        BindError::Forbidden(b) => (403, b),
        BindError::Conflict(b) => (409, b),
        BindError::TooManyRequests(b, _) => (429, b),
        BindError::Internal(b) => (500, b),
        BindError::BadGateway(b) => (502, b),
        BindError::Unavailable(b, _) => (503, b),
        BindError::GatewayTimeout(b) => (504, b),
    };
    named(note, status, body)
}

fn bearer() -> Vec<Example> {
    let mut out: Vec<_> = [
        ("expired", Rejection::Expired),
        ("Bearer Bearer", Rejection::DoubledPrefix),
        ("not ours", Rejection::UnknownKey),
    ]
    .into_iter()
    .map(|(note, r)| match MeError::from(BearerFailure::Rejected(r)) {
        MeError::Unauthorized(b, _) => named(Some(note), 401, b),
        MeError::Internal(b) => named(Some(note), 500, b),
        MeError::Unavailable(b, _) => named(Some(note), 503, b),
    })
    .collect();
    out.extend(server_errors());
    out
}

/// Failures every open-data operation shares.
fn open_data_failures() -> Vec<(Note, OpenDataFailure)> {
    vec![
        (None, OpenDataFailure::Data(OpenDataError::Malformed("iv must decode to 16 bytes, got 3".into()))),
        (Some("expired"), OpenDataFailure::Rejected(Rejection::Expired)),
        (None, OpenDataFailure::Data(OpenDataError::Stale)),
        (
            None,
            OpenDataFailure::Data(OpenDataError::WatermarkMismatch {
                expected: APPID.into(),
                found: "wx0000000000000000".into(),
            }),
        ),
    ]
}

fn phone() -> Vec<Example> {
    let mut failures = open_data_failures();
    failures.extend([
        (None, OpenDataFailure::Wechat(WechatError::InvalidCode { rid: rid() })),
        (None, OpenDataFailure::Wechat(WechatError::RateLimited { rid: rid() })),
        (None, OpenDataFailure::Wechat(WechatError::AccessTokenRejected { errcode: 40001, rid: rid() })),
        (None, OpenDataFailure::Wechat(WechatError::Busy { rid: rid() })),
        (None, OpenDataFailure::Wechat(WechatError::Timeout)),
    ]);
    let mut out: Vec<_> = failures
        .into_iter()
        .map(|(note, f)| {
            let (status, body) = match PhoneError::from(f) {
                PhoneError::BadRequest(b) => (400, b),
                PhoneError::Unauthorized(b, _) => (401, b),
                PhoneError::Conflict(b) => (409, b),
                PhoneError::TooManyRequests(b, _) => (429, b),
                PhoneError::Internal(b) => (500, b),
                PhoneError::BadGateway(b) => (502, b),
                PhoneError::Unavailable(b, _) => (503, b),
                PhoneError::GatewayTimeout(b) => (504, b),
            };
            named(note, status, body)
        })
        .collect();
    out.extend(server_errors());
    out
}

fn profile() -> Vec<Example> {
    let mut failures = open_data_failures();
    failures.push((None, OpenDataFailure::BadSignature));
    let mut out: Vec<_> = failures
        .into_iter()
        .map(|(note, f)| {
            let (status, body) = match ProfileError::from(f) {
                ProfileError::BadRequest(b) => (400, b),
                ProfileError::Unauthorized(b, _) => (401, b),
                ProfileError::Conflict(b) => (409, b),
                ProfileError::Internal(b) => (500, b),
                ProfileError::Unavailable(b, _) => (503, b),
            };
            named(note, status, body)
        })
        .collect();
    out.extend(server_errors());
    out
}

fn dev() -> Vec<Example> {
    let failures = [
        (None, OpenDataFailure::InvalidRequest("pure_phone_number must be 5 to 20 digits".into())),
        (Some("expired"), OpenDataFailure::Rejected(Rejection::Expired)),
        (None, OpenDataFailure::NoSessionKey),
    ];
    let mut out: Vec<_> = failures
        .into_iter()
        .map(|(note, f)| {
            let (status, body) = match DevError::from(f) {
                DevError::BadRequest(b) => (400, b),
                DevError::Unauthorized(b, _) => (401, b),
                DevError::Conflict(b) => (409, b),
                DevError::Internal(b) => (500, b),
                DevError::Unavailable(b, _) => (503, b),
            };
            named(note, status, body)
        })
        .collect();
    out.extend(server_errors());
    out
}

/// A ban as the examples show it: for a week, from the document's fixed date.
fn banned() -> Banned {
    let until = time::macros::datetime!(2026-12-12 00:00 UTC);
    Banned { reason: "spam orders".into(), until: Some(until) }
}

fn authorize() -> Vec<Example> {
    let mut out: Vec<Example> =
        vec![(Some("WXAUTH_RATE_LIMIT_PER_MINUTE"), BrowserFailure::TooManyRequests { retry_after: 12 })]
            .into_iter()
            .map(|(note, failure)| match AuthorizeError::from(failure) {
                AuthorizeError::BadRequest(b) => named(note, 400, b),
                AuthorizeError::TooManyRequests(b, _) => named(note, 429, b),
                AuthorizeError::Internal(b) => named(note, 500, b),
                AuthorizeError::Unavailable(b, _) => named(note, 503, b),
            })
            .collect();
    out.extend(browser(false));
    out
}

fn browser(callback: bool) -> Vec<Example> {
    let failures = if callback {
        vec![
            (
                Some("state"),
                BrowserFailure::InvalidRequest(
                    "this browser login is unknown, already used or expired; start it again".into(),
                ),
            ),
            (
                Some("cookie"),
                BrowserFailure::InvalidRequest(
                    "this browser did not start this login (its cookie is missing or wrong); start it again".into(),
                ),
            ),
        ]
    } else {
        vec![
            (
                Some("redirect_uri"),
                BrowserFailure::InvalidRequest(
                    "redirect_uri is not one of this app's redirect_uris (compared exactly); the browser is not sent back"
                        .into(),
                ),
            ),
            (Some("PKCE"), BrowserFailure::InvalidRequest("code_challenge_method must be S256 (plain is not supported)".into())),
            (None, BrowserFailure::UnknownApp("wx0000000000000000".into(), "wxoa000000000000".into())),
        ]
    };
    let mut out: Vec<Example> = failures
        .into_iter()
        .map(|(note, failure)| match BrowserError::from(failure) {
            BrowserError::BadRequest(b) => named(note, 400, b),
            BrowserError::Internal(b) => named(note, 500, b),
            BrowserError::Unavailable(b, _) => named(note, 503, b),
        })
        .collect();
    out.extend(server_errors());
    out
}

fn token() -> Vec<Example> {
    let failures = vec![
        (None, BrowserFailure::InvalidRequest("code_verifier is required (PKCE)".into())),
        (Some("spent"), BrowserFailure::InvalidGrant("the code is unknown, already used or expired")),
        (Some("PKCE"), BrowserFailure::InvalidGrant("code_verifier does not match the code_challenge")),
        (None, BrowserFailure::UnsupportedGrantType),
        (
            None,
            BrowserFailure::Login(LoginFailure::NotBound {
                ticket: "bt_q0v1yX3dM2Yj5C1n0Jx8WmJ2S3o7bq4K9yUeLr6fPzA".into(),
                expires_in: BIND_TICKET_SECS,
            }),
        ),
        (None, BrowserFailure::Login(LoginFailure::Banned(banned()))),
    ];
    let mut out: Vec<Example> = failures
        .into_iter()
        .map(|(note, failure)| match TokenError::from(failure) {
            TokenError::BadRequest(b) => named(note, 400, b),
            TokenError::Forbidden(b, _) => named(note, 403, b),
            TokenError::Internal(b) => named(note, 500, b),
            TokenError::Unavailable(b, _) => named(note, 503, b),
        })
        .collect();
    out.extend(server_errors());
    out
}

fn scan_start() -> Vec<Example> {
    let mut failures = vec![
        (
            None,
            ScanFailure::InvalidInput(
                "page must be a mini-program page path such as pages/scan/confirm (no leading /)".into(),
            ),
        ),
        (None, ScanFailure::UnknownApp("wx0000000000000000".into(), APPID.into())),
        (Some("WXAUTH_RATE_LIMIT_PER_MINUTE"), ScanFailure::TooManyRequests { retry_after: 12 }),
    ];
    failures.extend(
        [
            WechatError::Upstream(format!("getwxacodeunlimit: WeChat errcode 41030, rid {RID}")),
            WechatError::Busy { rid: rid() },
            WechatError::Timeout,
        ]
        .into_iter()
        .map(|e| (None, ScanFailure::Wechat(e))),
    );
    let mut out: Vec<Example> = failures
        .into_iter()
        .map(|(note, failure)| match ScanStartError::from(failure) {
            ScanStartError::BadRequest(b) => named(note, 400, b),
            ScanStartError::TooManyRequests(b, _) => named(note, 429, b),
            ScanStartError::Internal(b) => named(note, 500, b),
            ScanStartError::BadGateway(b) => named(note, 502, b),
            ScanStartError::Unavailable(b, _) => named(note, 503, b),
            ScanStartError::GatewayTimeout(b) => named(note, 504, b),
        })
        .collect();
    out.extend(server_errors());
    out
}

fn scan_confirm() -> Vec<Example> {
    let failures = vec![
        ScanFailure::Rejected(Rejection::Expired),
        ScanFailure::AppMismatch(APPID.into()),
        ScanFailure::Banned(banned()),
        ScanFailure::NotFound,
    ];
    let mut out: Vec<Example> = failures
        .into_iter()
        .map(|failure| match ScanConfirmError::from(failure) {
            ScanConfirmError::Unauthorized(b, _) => named(None, 401, b),
            ScanConfirmError::Forbidden(b) => named(None, 403, b),
            ScanConfirmError::NotFound(b) => named(None, 404, b),
            ScanConfirmError::Internal(b) => named(None, 500, b),
            ScanConfirmError::Unavailable(b, _) => named(None, 503, b),
        })
        .collect();
    out.extend(server_errors());
    out
}

fn scan_poll() -> Vec<Example> {
    let malformed = super::error::body(
        ErrorCode::InvalidRequest,
        "failed to parse parameter `wait`: failed to parse \"integer(uint64)\": invalid digit found in string",
    );
    let mut out = vec![named(None, 400, malformed)];
    let failures = vec![
        ScanFailure::Banned(banned()),
        ScanFailure::PendingDeletion(PendingDeletion { erase_at: time::macros::datetime!(2027-01-08 09:30 UTC) }),
        ScanFailure::NotFound,
    ];
    out.extend(failures.into_iter().map(|failure| match ScanPollError::from(failure) {
        ScanPollError::BadRequest(b) => named(None, 400, b),
        ScanPollError::Forbidden(b) => named(None, 403, b),
        ScanPollError::NotFound(b) => named(None, 404, b),
        ScanPollError::Internal(b) => named(None, 500, b),
        ScanPollError::Unavailable(b, _) => named(None, 503, b),
    }));
    out.extend(server_errors());
    out
}

fn malformed_refresh() -> Example {
    named(None, 400, super::refresh::malformed())
}

fn refresh() -> Vec<Example> {
    let mut out = vec![malformed_refresh()];
    for (note, failure) in [
        (
            "reused",
            RefreshFailure::InvalidGrant("the refresh token was already used, so every token of this login is revoked"),
        ),
        ("expired", RefreshFailure::InvalidGrant("the refresh token has expired")),
        ("WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY", RefreshFailure::TooManyAttempts { retry_after: 6 }),
        ("banned", RefreshFailure::Banned(banned())),
    ] {
        let note = Some(note);
        out.push(match RefreshError::from(failure) {
            RefreshError::BadRequest(b) => named(note, 400, b),
            RefreshError::Unauthorized(b) => named(note, 401, b),
            RefreshError::Forbidden(b) => named(note, 403, b),
            RefreshError::TooManyRequests(b, _) => named(note, 429, b),
            RefreshError::Internal(b) => named(note, 500, b),
            RefreshError::Unavailable(b, _) => named(note, 503, b),
        });
    }
    out.extend(server_errors());
    out
}

fn end_session() -> Vec<Example> {
    let mut out = vec![named(None, 400, super::sessions::malformed_id())];
    out.push(match SessionError::from(SessionFailure::NotFound) {
        SessionError::BadRequest(b) => named(None, 400, b),
        SessionError::Unauthorized(b, _) => named(None, 401, b),
        SessionError::NotFound(b) => named(None, 404, b),
        SessionError::Internal(b) => named(None, 500, b),
        SessionError::Unavailable(b, _) => named(None, 503, b),
    });
    out.extend(bearer());
    out
}

fn introspect() -> Vec<Example> {
    // What poem-openapi says of a form without `token` (the envelope keeps its text).
    let missing = super::error::body(ErrorCode::InvalidRequest, "parse request payload error: missing field `token`");
    let mut out = vec![named(None, 400, missing)];
    out.push(match IntrospectError::from(IntrospectFailure::UnknownClient) {
        IntrospectError::BadRequest(b) => named(None, 400, b),
        IntrospectError::Unauthorized(b, _) => named(None, 401, b),
        IntrospectError::Internal(b) => named(None, 500, b),
        IntrospectError::Unavailable(b, _) => named(None, 503, b),
    });
    out.extend(server_errors());
    out
}

fn logout() -> Vec<Example> {
    let mut out = vec![malformed_refresh()];
    out.extend(server_errors());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_of_one_answer_have_distinct_names_and_are_named_after_their_code() {
        for Examples { path, method, status, list } in all() {
            let mut names = std::collections::HashSet::new();
            for (name, body) in list {
                assert!(names.insert(name.clone()), "{method} {path} {status}: two examples named {name}");
                let code = body["error"].as_str().unwrap_or_default();
                assert!(ErrorCode::ALL.iter().any(|c| c.as_str() == code), "{name}: {code} is no ErrorCode");
                assert!(name == code || name.starts_with(&format!("{code} (")), "{name} answers {code}");
            }
        }
    }
}
