//! Example error bodies for the OpenAPI document, one list per operation and status.
//!
//! Each is produced by the same mapping real answers go through (`error.rs`), from the
//! failure that causes it, so Swagger UI shows what a client will really receive.

use poem_openapi::{payload::Json, types::ToJSON};
use serde_json::Value;

use super::error::{
    BindError, DevError, ErrorBody, ErrorCode, LoginError, MeError, PhoneError, ProfileError, RefreshError,
};
use crate::{
    auth::{BIND_TICKET_SECS, BearerFailure, BindFailure, Internal, LoginFailure, OpenDataFailure, RefreshFailure},
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
    pub(super) list: Vec<(&'static str, Value)>,
}

/// Examples for every error answer of the operations that have them.
pub(super) fn all() -> Vec<Examples> {
    let mut out = Vec::new();
    for (path, method, examples) in [
        ("/v1/login", "post", login()),
        ("/v1/bind", "post", bind()),
        ("/v1/me", "get", bearer()),
        ("/v1/me/binding", "delete", bearer()),
        ("/v1/token/refresh", "post", refresh()),
        ("/v1/logout", "post", logout()),
        ("/v1/me/logout-all", "post", bearer()),
        ("/v1/me/phone", "post", phone()),
        ("/v1/me/profile", "post", profile()),
        ("/v1/dev/open-data", "post", dev()),
        ("/readyz", "get", ready()),
    ] {
        let mut by_status: Vec<(u16, Vec<(&'static str, Value)>)> = Vec::new();
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

fn rid() -> Option<String> {
    Some(RID.into())
}

/// Failures every operation calling WeChat shares.
fn wechat_failures() -> Vec<(&'static str, WechatError)> {
    vec![
        ("invalid_code", WechatError::InvalidCode { rid: rid() }),
        ("code_used", WechatError::CodeUsed { rid: rid() }),
        ("user_blocked", WechatError::UserBlocked { rid: rid() }),
        ("rate_limited", WechatError::RateLimited { rid: rid() }),
        ("wechat_error", WechatError::Upstream(format!("WeChat errcode 40013, rid {RID}"))),
        ("wechat_unavailable", WechatError::Busy { rid: rid() }),
        (
            "wechat_unavailable (circuit breaker open)",
            WechatError::Unavailable {
                reason: "WeChat failed repeatedly; requests are paused (circuit breaker open)",
                retry_after: std::time::Duration::from_secs(4),
            },
        ),
        ("wechat_timeout", WechatError::Timeout),
    ]
}

/// The answers of failures that are not the client's fault, shared by every operation.
fn server_errors() -> Vec<(&'static str, u16, Value)> {
    let disk = Internal::Store(StoreError::Database("IO error: No space left on device (os error 28)".into()));
    let bug = Internal::Store(StoreError::Corrupt("malformed user id".into()));
    [("temporarily_unavailable", disk), ("server_error", bug)]
        .into_iter()
        .map(|(name, failure)| {
            let (status, body) = super::error::internal_example(failure);
            (name, status, json(body))
        })
        .collect()
}

fn json(body: Json<ErrorBody>) -> Value {
    body.0.to_json().unwrap_or_default()
}

fn login() -> Vec<(&'static str, u16, Value)> {
    let mut failures = vec![
        ("invalid_request", LoginFailure::InvalidInput(DomainError::EmptyCode)),
        ("unknown_app", LoginFailure::UnknownApp("wx0000000000000000".into(), APPID.into())),
        (
            "not_bound",
            LoginFailure::NotBound {
                ticket: "bt_q0v1yX3dM2Yj5C1n0Jx8WmJ2S3o7bq4K9yUeLr6fPzA".into(),
                expires_in: BIND_TICKET_SECS,
            },
        ),
    ];
    failures.extend(wechat_failures().into_iter().map(|(name, e)| (name, LoginFailure::Wechat(e))));
    let mut out: Vec<_> = failures.into_iter().map(|(name, f)| login_answer(name, f.into())).collect();
    out.push((
        "rate_limited (WXAUTH_RATE_LIMIT_PER_MINUTE)",
        429,
        json(super::error::rate_limited_body(12, "login attempts")),
    ));
    out.extend(server_errors());
    out
}

fn ready() -> Vec<(&'static str, u16, Value)> {
    vec![(
        "not_ready",
        503,
        json(super::error::body(
            ErrorCode::NotReady,
            "not ready: wechat: the circuit breaker is open after repeated failures",
        )),
    )]
}

fn login_answer(name: &'static str, answer: LoginError) -> (&'static str, u16, Value) {
    let (status, body) = match answer {
        LoginError::BadRequest(b) => (400, b),
        LoginError::Forbidden(b, _) => (403, b),
        LoginError::TooManyRequests(b, _) => (429, b),
        LoginError::Internal(b) => (500, b),
        LoginError::BadGateway(b) => (502, b),
        LoginError::Unavailable(b, _) => (503, b),
        LoginError::GatewayTimeout(b) => (504, b),
    };
    (name, status, json(body))
}

fn bind() -> Vec<(&'static str, u16, Value)> {
    let mut failures = vec![
        ("invalid_request", BindFailure::InvalidInput(DomainError::TicketOrCode)),
        ("invalid_ticket", BindFailure::InvalidTicket),
        ("unknown_app", BindFailure::UnknownApp("wx0000000000000000".into(), APPID.into())),
        ("invalid_credentials", BindFailure::InvalidCredentials),
        ("already_bound", BindFailure::AlreadyBound),
        ("account_already_bound", BindFailure::AccountAlreadyBound),
        ("rate_limited (attempts)", BindFailure::TooManyAttempts { retry_after: 12 }),
    ];
    failures.extend(wechat_failures().into_iter().map(|(name, e)| (name, BindFailure::Wechat(e))));
    let mut out: Vec<_> = failures.into_iter().map(|(name, f)| bind_answer(name, f.into())).collect();
    out.extend(server_errors());
    out
}

fn bind_answer(name: &'static str, answer: BindError) -> (&'static str, u16, Value) {
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
    (name, status, json(body))
}

fn bearer() -> Vec<(&'static str, u16, Value)> {
    let mut out: Vec<_> = [
        ("expired", Rejection::Expired),
        ("Bearer Bearer", Rejection::DoubledPrefix),
        ("not ours", Rejection::UnknownKey),
    ]
    .into_iter()
    .map(|(name, r)| match MeError::from(BearerFailure::Rejected(r)) {
        MeError::Unauthorized(b, _) => (name, 401, json(b)),
        MeError::Internal(b) => (name, 500, json(b)),
        MeError::Unavailable(b, _) => (name, 503, json(b)),
    })
    .collect();
    out.extend(server_errors());
    out
}

/// Failures every open-data operation shares.
fn open_data_failures() -> Vec<(&'static str, OpenDataFailure)> {
    vec![
        (
            "invalid_request",
            OpenDataFailure::Data(OpenDataError::Malformed("iv must decode to 16 bytes, got 3".into())),
        ),
        ("expired", OpenDataFailure::Rejected(Rejection::Expired)),
        ("session_key_stale", OpenDataFailure::Data(OpenDataError::Stale)),
        (
            "watermark_mismatch",
            OpenDataFailure::Data(OpenDataError::WatermarkMismatch {
                expected: APPID.into(),
                found: "wx0000000000000000".into(),
            }),
        ),
    ]
}

fn phone() -> Vec<(&'static str, u16, Value)> {
    let mut failures = open_data_failures();
    failures.extend([
        ("invalid_code", OpenDataFailure::Wechat(WechatError::InvalidCode { rid: rid() })),
        ("rate_limited", OpenDataFailure::Wechat(WechatError::RateLimited { rid: rid() })),
        ("wechat_error", OpenDataFailure::Wechat(WechatError::AccessTokenRejected { errcode: 40001, rid: rid() })),
        ("wechat_unavailable", OpenDataFailure::Wechat(WechatError::Busy { rid: rid() })),
        ("wechat_timeout", OpenDataFailure::Wechat(WechatError::Timeout)),
    ]);
    let mut out: Vec<_> = failures
        .into_iter()
        .map(|(name, f)| {
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
            (name, status, json(body))
        })
        .collect();
    out.extend(server_errors());
    out
}

fn profile() -> Vec<(&'static str, u16, Value)> {
    let mut failures = open_data_failures();
    failures.push(("invalid_signature", OpenDataFailure::BadSignature));
    let mut out: Vec<_> = failures
        .into_iter()
        .map(|(name, f)| {
            let (status, body) = match ProfileError::from(f) {
                ProfileError::BadRequest(b) => (400, b),
                ProfileError::Unauthorized(b, _) => (401, b),
                ProfileError::Conflict(b) => (409, b),
                ProfileError::Internal(b) => (500, b),
                ProfileError::Unavailable(b, _) => (503, b),
            };
            (name, status, json(body))
        })
        .collect();
    out.extend(server_errors());
    out
}

fn dev() -> Vec<(&'static str, u16, Value)> {
    let failures = [
        ("invalid_request", OpenDataFailure::InvalidRequest("pure_phone_number must be 5 to 20 digits".into())),
        ("expired", OpenDataFailure::Rejected(Rejection::Expired)),
        ("session_key_stale", OpenDataFailure::NoSessionKey),
    ];
    let mut out: Vec<_> = failures
        .into_iter()
        .map(|(name, f)| {
            let (status, body) = match DevError::from(f) {
                DevError::BadRequest(b) => (400, b),
                DevError::Unauthorized(b, _) => (401, b),
                DevError::Conflict(b) => (409, b),
                DevError::Internal(b) => (500, b),
                DevError::Unavailable(b, _) => (503, b),
            };
            (name, status, json(body))
        })
        .collect();
    out.extend(server_errors());
    out
}

fn malformed_refresh() -> (&'static str, u16, Value) {
    ("invalid_request", 400, json(super::refresh::malformed()))
}

fn refresh() -> Vec<(&'static str, u16, Value)> {
    let mut out = vec![malformed_refresh()];
    for (name, failure) in [
        (
            "reused",
            RefreshFailure::InvalidGrant("the refresh token was already used, so every token of this login is revoked"),
        ),
        ("expired", RefreshFailure::InvalidGrant("the refresh token has expired")),
        ("rate_limited (WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY)", RefreshFailure::TooManyAttempts { retry_after: 6 }),
    ] {
        match RefreshError::from(failure) {
            RefreshError::BadRequest(b) => out.push((name, 400, json(b))),
            RefreshError::Unauthorized(b) => out.push((name, 401, json(b))),
            RefreshError::TooManyRequests(b, _) => out.push((name, 429, json(b))),
            RefreshError::Internal(b) => out.push((name, 500, json(b))),
            RefreshError::Unavailable(b, _) => out.push((name, 503, json(b))),
        }
    }
    out.extend(server_errors());
    out
}

fn logout() -> Vec<(&'static str, u16, Value)> {
    let mut out = vec![malformed_refresh()];
    out.extend(server_errors());
    out
}
