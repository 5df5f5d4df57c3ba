//! The `error` codes wxauth answers, each documented once.
//!
//! A code is a public contract: clients branch on it, so its spelling never changes. Each
//! variant's text is the "When" column of the error table in the HTTP API documentation;
//! `tests/api/spec.rs` checks that table against [`ErrorCode::ALL`].

/// Declares [`ErrorCode`] from one list: per code, its meaning (the doc comment) and each
/// status it comes with and when (a row of the documentation's table).
macro_rules! error_codes {
    ($(
        $(#[doc = $meaning:literal])+
        $variant:ident = $code:literal {
            $($status:literal => $when:literal,)+
        }
    )+) => {
        /// The machine-readable `error` of an error body: clients program against it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                $(#[doc = $meaning])+
                #[doc = ""]
                $(#[doc = concat!("- HTTP ", stringify!($status), ": ", $when)])+
                $variant,
            )+
        }

        impl ErrorCode {
            /// Every code, in the order of the documentation's table.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The code as it is written in a body, e.g. `invalid_code`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)+
                }
            }

            /// What the code means, in one sentence.
            pub fn description(self) -> &'static str {
                match self {
                    $(Self::$variant => concat!($($meaning),+).trim_ascii(),)+
                }
            }

            /// Each status the code comes with and when: the rows of the documentation's
            /// error table.
            pub const fn cases(self) -> &'static [(u16, &'static str)] {
                match self {
                    $(Self::$variant => &[$(($status, $when)),+],)+
                }
            }
        }
    };
}

error_codes! {
    /// The request is malformed: it breaks a rule of the schema or of the operation.
    InvalidRequest = "invalid_request" {
        400 => r#"The body is not JSON or not an object, `Content-Type` is missing or not JSON (`application/json` or `application/*+json`), `code` is missing, not a string, empty, longer than 128 bytes, or has a character outside visible ASCII (spaces, control characters, non-ASCII). WeChat is not called."#,
        400 => r#"Several apps are served and the login (or the bind with a `code`) names none in `appid`."#,
        400 => r#"`POST /v1/bind`: neither or both of `bind_ticket` and `code`; neither or both of a password (`username` and `password`) and `phone_code`; a `username` that cannot exist (1 to 64 letters, digits, `.`, `_`, `@`, `-`); an empty or oversized (over 1024 bytes) `password`; a `phone_code` (here or on `POST /v1/login`) that breaks the rules of `code`. WeChat is not called."#,
        400 => r#"`POST /v1/me/phone`, `POST /v1/me/profile`: not exactly one of `code` and `encrypted_data` with `iv`; `encrypted_data` or `iv` not base64 (a space is read as `+`, line breaks around the value are ignored); an `iv` that does not decode to 16 bytes, or data that is not whole 16-byte blocks; `raw_data` without `signature` or the reverse; data that decrypts but holds no phone number (or no profile)."#,
        400 => r#"`DELETE /v1/me/sessions/{id}`: `id` is not a UUID."#,
        400 => r#"Admin API: a user or session id that is not a UUID, a `cursor` that no listing gave, a `limit` outside 1 to 500, an unknown event `kind`, a ban without `reason` or with an `until` in the past, roles or custom claims the rules refuse (the description says which)."#,
        413 => r#"The request body is larger than 16 KiB, or its `Content-Length` says it would be (answered before the body is read, and instead of `100 Continue`)."#,
    }
    /// The request names an AppID this server does not serve.
    UnknownApp = "unknown_app" {
        400 => r#"`appid` names an app this server does not serve. WeChat is not called."#,
    }
    /// The bind ticket cannot be used (expired, spent, or never issued).
    InvalidTicket = "invalid_ticket" {
        400 => r#"`POST /v1/bind`: the bind ticket expired, was spent, or was never issued. Log in again for a new one."#,
    }
    /// WeChat rejected a code as invalid.
    InvalidCode = "invalid_code" {
        400 => r#"WeChat errcode 40029: the code is wrong, expired or for another AppID. Call `wx.login` again (for a phone code: ask for the number again)."#,
    }
    /// Open data was encrypted for another mini-program.
    WatermarkMismatch = "watermark_mismatch" {
        400 => r#"Open data whose `watermark.appid` is not the app the token was issued through."#,
    }
    /// A profile's `raw_data` does not match its `signature`.
    InvalidSignature = "invalid_signature" {
        400 => r#"`POST /v1/me/profile`: `signature` is not `sha1(raw_data + session_key)`."#,
    }
    /// WeChat says the code was already used.
    CodeUsed = "code_used" {
        400 => r#"WeChat errcode 40163: the code was already used. Call `wx.login` again."#,
    }
    /// Wrong username or password.
    InvalidCredentials = "invalid_credentials" {
        401 => r#"`POST /v1/bind`: wrong username or password (one answer for both)."#,
    }
    /// The refresh token cannot be used any more.
    InvalidGrant = "invalid_grant" {
        401 => r#"`POST /v1/token/refresh`: the refresh token is unknown, expired, revoked (logout, logout-all, or the reuse of a spent token, which revokes its whole login), or its user's WeChat binding was removed. Log in again with `wx.login`."#,
        400 => r#"`POST /v1/token`: the authorization code is unknown, already used (a code is spent by its first try, right or wrong) or expired (60 s), or `redirect_uri` or `code_verifier` does not match it (RFC 6749 section 5.2). Start the browser login again."#,
    }
    /// `POST /v1/token` with a grant type other than `authorization_code`.
    UnsupportedGrantType = "unsupported_grant_type" {
        400 => r#"`POST /v1/token`: `grant_type` is not `authorization_code` (refresh tokens go to `POST /v1/token/refresh`)."#,
    }
    /// The introspection client is unknown or its secret wrong, or the admin token is not live.
    InvalidClient = "invalid_client" {
        401 => r#"`POST /v1/token/introspect`: no `Authorization` header, or its Basic `client_id` and secret match none of `[[introspection_clients]]`, or its Bearer token is no live admin token. Comes with `WWW-Authenticate: Basic realm="wxauth", Bearer realm="wxauth"` (both ways in)."#,
    }
    /// The bearer token is missing or refused (RFC 6750).
    InvalidToken = "invalid_token" {
        401 => r#"No `Authorization: Bearer` header; the header says `Bearer Bearer ...` (the description says so); the token is malformed, has no or an unknown `kid`, a bad signature, the wrong algorithm, issuer or audience, lacks `exp`/`iss`/`aud`/`sub`, is not yet valid (`nbf`), has expired (beyond 30 s of leeway), has a `crit` header parameter (wxauth supports no JOSE extensions), or its user no longer exists. Comes with `WWW-Authenticate: Bearer realm="wxauth", error="invalid_token", error_description="..."`, or just `Bearer realm="wxauth"` when no token was sent (RFC 6750 section 3.1)."#,
        401 => r#"Admin API: no `Authorization: Bearer` header, or its token is no live admin token (malformed, unknown or revoked: `wxauth admin-tokens list`)."#,
    }
    /// The WeChat identity is bound to no account (registration `bind`).
    NotBound = "not_bound" {
        403 => r#"Registration `bind`: the WeChat identity is bound to no account. The body adds `bind_ticket` and `expires_in`; see [Account binding](account-binding.md)."#,
    }
    /// The WeChat identity is bound to no account, and a phone number would bind it
    /// (registration `phone`).
    PhoneRequired = "phone_required" {
        403 => r#"Registration `phone`: the WeChat identity is bound to no account. The body adds `bind_ticket` and `expires_in`: send the ticket with a `phone_code` from the `getPhoneNumber` button to `POST /v1/bind` (or send `phone_code` with the login); see [Phone-first login](phone-login.md)."#,
    }
    /// WeChat's risk control blocked the user.
    UserBlocked = "user_blocked" {
        403 => r#"WeChat errcode 40226: WeChat's risk control blocked this user's login."#,
    }
    /// An official account's snapshot-page visitor, who authorised nothing.
    SnapshotUser = "snapshot_user" {
        403 => r#"Browser login of an official account: WeChat marked the visitor `is_snapshotuser` (they saw a 朋友圈 snapshot page and authorised nothing; the openid is not theirs). The login page should ask them to open it in WeChat and allow."#,
    }
    /// A scan session confirmed by a token of an unlinked app.
    AppMismatch = "app_mismatch" {
        403 => r#"`POST /v1/scan-sessions/{scene}/confirm`: the token is of another app than the code's mini-program, and its user has no identity there (no unionid links them). Nothing changed."#,
    }
    /// An operator banned the user.
    UserBanned = "user_banned" {
        403 => r#"`POST /v1/login`, `POST /v1/bind`, `POST /v1/token/refresh`: an operator banned the user (`wxauth users ban`); the description gives the reason, and `until` when the ban ends (absent: until lifted). Every refresh token of the user was revoked with the ban."#,
    }
    /// The admin token may not do this (RFC 6750's `insufficient_scope`).
    InsufficientScope = "insufficient_scope" {
        403 => r#"Admin API: the operation changes something and the admin token has role `read`; create one with `--role write`."#,
    }
    /// The account is being deleted.
    AccountPendingDeletion = "account_pending_deletion" {
        403 => r#"`POST /v1/login`, `POST /v1/bind`: the person asked for the account to be deleted (`DELETE /v1/me`) and the grace period (`WXAUTH_DELETION_GRACE_SECS`) has not ended; `erase_at` says when it does. `POST /v1/deletion/cancel` keeps the account."#,
    }
    /// The `wx.login` code is not of the token's WeChat identity.
    CodeMismatch = "code_mismatch" {
        403 => r#"`DELETE /v1/me`: the code WeChat accepted is of another WeChat identity than the bearer token's (another person, or another mini-program). Nothing changed."#,
    }
    /// No such path.
    NotFound = "not_found" {
        404 => r#"No such path."#,
    }
    /// No deletion is pending for the code's WeChat identity.
    DeletionNotFound = "deletion_not_found" {
        404 => r#"`POST /v1/deletion/cancel`: the code's WeChat identity has no account being deleted (none was asked for, it was cancelled, or it is already erased)."#,
    }
    /// The user id names no user.
    UserNotFound = "user_not_found" {
        404 => r#"Admin API: the path's user id names no user (never one, or removed)."#,
    }
    /// No live scan session of that scene or id.
    ScanSessionNotFound = "scan_session_not_found" {
        404 => r#"`/v1/scan-sessions`: no such scan session: a wrong scene or id, expired (5 minutes), already confirmed (confirm) or already collected (poll). Show a new code."#,
    }
    /// The session id names none of the user's live sessions.
    SessionNotFound = "session_not_found" {
        404 => r#"`DELETE /v1/me/sessions/{id}`: no live session of the bearer's user has this id: it ended (logout, logout-all, a reuse, an earlier delete), expired, belongs to another user, or never existed."#,
        404 => r#"Admin API, `DELETE /admin/v1/users/{id}/sessions/{session}`: the same, for the path's user."#,
    }
    /// The path exists, the method does not.
    MethodNotAllowed = "method_not_allowed" {
        405 => r#"The path exists, the method does not (for example `GET /v1/login`). The `Allow` header lists the methods it answers (RFC 9110), e.g. `Allow: POST`."#,
    }
    /// The request body arrived too slowly.
    RequestTimeout = "request_timeout" {
        408 => r#"The request body did not arrive within 10 s of the headers."#,
    }
    /// The WeChat identity is bound to another user.
    AlreadyBound = "already_bound" {
        409 => r#"`POST /v1/bind`: the openid is bound to another user (with `phone_code`: said before WeChat verifies the number). `POST /v1/login` with `phone_code`: a bind of the same identity won the race."#,
    }
    /// The account already has another identity in the same mini-program.
    AccountAlreadyBound = "account_already_bound" {
        409 => r#"`POST /v1/bind` (and `POST /v1/login` with `phone_code`): the account has another openid of the same mini-program."#,
    }
    /// No account has the phone number WeChat verified.
    NoAccountForPhone = "no_account_for_phone" {
        409 => r#"`POST /v1/bind` with `phone_code` (registration `bind` or `auto`), or `POST /v1/login` with `phone_code` (registration `bind`): no account has the number WeChat verified. Nothing was stored and a ticket stays unspent; the login's answer adds `bind_ticket` and `expires_in`, for a bind by password instead. The caller has just proven the number with WeChat, so this tells them nothing they could not know."#,
    }
    /// Open data does not decrypt with the stored session key.
    SessionKeyStale = "session_key_stale" {
        409 => r#"Open data that does not decrypt (bad padding or not JSON) with the session key of the person's latest login, or no session key is stored for the login. Call `wx.login`, `POST /v1/login`, fetch the data again and retry."#,
    }
    /// Too many requests: retry after `Retry-After`.
    RateLimited = "rate_limited" {
        429 => r#"WeChat errcode 45011: the per-user minute quota was reached (`Retry-After: 60`); or the client address sent more than `WXAUTH_RATE_LIMIT_PER_MINUTE` requests to `POST /v1/login` and `POST /v1/bind` (answered before the body is read); or, on `POST /v1/bind`, too many attempts for the username by this WeChat identity, from the client address, or too many wrong passwords of this identity in a row; or, with `phone_code` (`POST /v1/bind`, `POST /v1/login`), too many phone attempts from the client address (`WXAUTH_BIND_ATTEMPTS_PER_IP`) or for the number (`WXAUTH_BIND_ATTEMPTS_PER_USERNAME`); or, on `POST /v1/token/refresh`, too many refreshes of the login or from the client address. `Retry-After`: seconds until the next attempt is allowed."#,
    }
    /// An internal failure; details are only in the server log.
    ServerError = "server_error" {
        500 => r#"An internal failure (a corrupt record, signing). Details are only in the server log."#,
    }
    /// WeChat failed or gave an unusable answer.
    WechatError = "wechat_error" {
        502 => r#"WeChat could not be reached, answered with a status other than 200 (redirects are not followed: the request carries the AppSecret), sent a body that is not JSON or has an unreadable `errcode`, reported success without `openid` or `session_key`, or sent any other errcode (including 40013/40125/40243, a wrong AppID or AppSecret, which is also logged as an error). The description carries the errcode and WeChat's request id (`rid`) when there is one."#,
    }
    /// WeChat is busy or paused; retry after `Retry-After`.
    WechatUnavailable = "wechat_unavailable" {
        503 => r#"WeChat answered errcode -1 (busy) twice: wxauth retries once after 200 ms (because a retry re-sends the same single-use code), and only while a quarter of the login's deadline remains; `Retry-After: 2`. Or, without calling WeChat: `WXAUTH_WECHAT_MAX_INFLIGHT` requests to WeChat are already in flight (`Retry-After: 1`), or the circuit breaker is open (`Retry-After`: seconds until it lets a probe through). See [When WeChat fails](operations.md#when-wechat-fails)."#,
    }
    /// The database cannot read or write right now; retry after `Retry-After`.
    TemporarilyUnavailable = "temporarily_unavailable" {
        503 => r#"The database cannot read or write right now (a full disk, an I/O error): nothing was stored, retry after `Retry-After: 1`. wxauth opens the database again by itself and recovers once writes work. From `GET /healthz` too, while its last flush failed."#,
    }
    /// The server is not ready (`GET /readyz` only).
    NotReady = "not_ready" {
        503 => r#"Only from `GET /readyz`: the description names the failed checks."#,
    }
    /// WeChat did not answer in time.
    WechatTimeout = "wechat_timeout" {
        504 => r#"WeChat did not answer within `WXAUTH_WECHAT_TIMEOUT_MS`: one deadline per login, the retry after a -1 included."#,
    }
}

impl ErrorCode {
    /// The status the code usually comes with (`invalid_request` is also a 413).
    pub const fn status(self) -> u16 {
        self.cases()[0].0
    }

    /// The documentation's error table in Markdown: a header row, then one row per case,
    /// `` | `code` | status | when | ``.
    pub fn markdown_table() -> String {
        let mut table = String::from("| `error` | HTTP | When |\n|---|---|---|\n");
        for code in Self::ALL {
            for (status, when) in code.cases() {
                table.push_str(&format!("| `{}` | {status} | {when} |\n", code.as_str()));
            }
        }
        table
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_and_each_has_a_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is declared twice");
            assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{text} is not snake_case");
            assert!(!code.description().is_empty() && !code.cases().is_empty(), "{text} is undocumented");
        }
    }
}
