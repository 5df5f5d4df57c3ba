//! Each operation's error answers, as poem-openapi response enums: the OpenAPI document
//! lists exactly the statuses an operation can return.
//!
//! poem-openapi's `ApiResponse` cannot embed one response enum in another, so the answers
//! several operations share are declared once here, in [`operation_errors`], and named in
//! each enum that has them.

use poem_openapi::payload::Json;

use super::ErrorBody;

/// Declares an operation's response enum from its own variants and the shared answers it
/// names after `shared:`, in any order (the document sorts statuses):
/// - `unauthorized`: 401 `invalid_token` with its RFC 6750 challenge;
/// - `too_many_requests("...")`: 429 `rate_limited` with `Retry-After`, described by the
///   operation (what is counted differs);
/// - `internal`: 500 `server_error`;
/// - `unavailable`: 503 `temporarily_unavailable` (the database) with `Retry-After`;
/// - `unavailable_or_wechat`: the same 503, or `wechat_unavailable`, for operations that
///   call WeChat.
macro_rules! operation_errors {
    (
        $(#[doc = $doc:literal])*
        pub enum $name:ident { $($own:tt)* }
        shared: $($shared:tt)*
    ) => {
        operation_errors!(@collect [$(#[doc = $doc])*] $name [$($own)*] $($shared)*);
    };
    (@collect $docs:tt $name:ident [$($v:tt)*] unauthorized $(, $($rest:tt)*)?) => {
        operation_errors!(@collect $docs $name [$($v)*
            /// `invalid_token`: the bearer token is missing, malformed, expired or not ours, its
            /// user no longer exists, or the header said `Bearer Bearer ...`.
            #[oai(status = 401)]
            Unauthorized(
                Json<ErrorBody>,
                /// RFC 6750 challenge.
                #[oai(header = "WWW-Authenticate")]
                String,
            ),
        ] $($($rest)*)?);
    };
    (@collect $docs:tt $name:ident [$($v:tt)*] too_many_requests($($what:literal),+) $(, $($rest:tt)*)?) => {
        operation_errors!(@collect $docs $name [$($v)*
            $(#[doc = $what])+
            #[oai(status = 429)]
            TooManyRequests(
                Json<ErrorBody>,
                /// Seconds to wait before retrying.
                #[oai(header = "Retry-After")]
                u64,
            ),
        ] $($($rest)*)?);
    };
    (@collect $docs:tt $name:ident [$($v:tt)*] internal $(, $($rest:tt)*)?) => {
        operation_errors!(@collect $docs $name [$($v)*
            /// `server_error`: an internal failure (details are in the server log).
            #[oai(status = 500)]
            Internal(Json<ErrorBody>),
        ] $($($rest)*)?);
    };
    (@collect $docs:tt $name:ident [$($v:tt)*] unavailable $(, $($rest:tt)*)?) => {
        operation_errors!(@collect $docs $name [$($v)*
            /// `temporarily_unavailable`: the database cannot write right now (a full disk, an
            /// I/O error); the server opens it again by itself. Retry after `Retry-After`.
            #[oai(status = 503)]
            Unavailable(
                Json<ErrorBody>,
                /// Seconds to wait before retrying.
                #[oai(header = "Retry-After")]
                u64,
            ),
        ] $($($rest)*)?);
    };
    (@collect $docs:tt $name:ident [$($v:tt)*] unavailable_or_wechat $(, $($rest:tt)*)?) => {
        operation_errors!(@collect $docs $name [$($v)*
            /// `wechat_unavailable`: WeChat was busy (errcode -1; a login code is tried twice),
            /// too many requests to WeChat are in flight, or WeChat failed repeatedly and the
            /// circuit breaker is open. Nothing was sent to WeChat in the last two cases; retry
            /// after `Retry-After`.
            /// `temporarily_unavailable`: the database cannot write right now (a full disk, an
            /// I/O error); the server opens it again by itself.
            #[oai(status = 503)]
            Unavailable(
                Json<ErrorBody>,
                /// Seconds to wait before retrying.
                #[oai(header = "Retry-After")]
                u64,
            ),
        ] $($($rest)*)?);
    };
    (@collect [$(#[doc = $doc:literal])*] $name:ident [$($v:tt)*]) => {
        $(#[doc = $doc])*
        #[derive(Debug, poem_openapi::ApiResponse)]
        pub enum $name { $($v)* }
    };
}

operation_errors! {
    /// Errors of `POST /v1/login`.
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
        /// `phone_required` (registration `phone`): the same, with the ticket for a bind by
        /// phone number: send it with a `phone_code` to `POST /v1/bind`.
        /// `user_blocked`: WeChat's risk control blocked this user's login (errcode 40226).
        /// `user_banned`: an operator banned the user; `until` says when the ban ends.
        /// `account_pending_deletion`: the person asked for the account's deletion;
        /// `erase_at` says when it is erased (`POST /v1/deletion/cancel` keeps it).
        #[oai(status = 403)]
        Forbidden(
            Json<ErrorBody>,
            /// A bind ticket is a credential: never cached.
            #[oai(header = "Cache-Control")]
            String,
        ),
        /// With `phone_code` and an unbound identity: `no_account_for_phone` (registration
        /// `bind`): no account has the number WeChat verified; the body adds `bind_ticket` and
        /// `expires_in`, for a bind by password. `account_already_bound`: the account with the
        /// number has another openid of this mini-program. `already_bound`: a bind of the
        /// same identity won the race.
        #[oai(status = 409)]
        Conflict(Json<ErrorBody>),
        /// `wechat_error`: WeChat could not be reached or gave an unusable answer.
        #[oai(status = 502)]
        BadGateway(Json<ErrorBody>),
        /// `wechat_timeout`: WeChat did not answer within the configured timeout.
        #[oai(status = 504)]
        GatewayTimeout(Json<ErrorBody>),
    }
    shared: too_many_requests(
        " `rate_limited`: WeChat's per-user minute quota was reached (errcode 45011), or this",
        " client address sent more than `WXAUTH_RATE_LIMIT_PER_MINUTE` requests, or, with",
        " `phone_code`, too many phone attempts from it or for the number."
    ), internal, unavailable_or_wechat
}

impl LoginError {
    /// The `error` code answered (the `outcome` label of `wxauth_logins_total`).
    pub fn code(&self) -> &str {
        let (Self::BadRequest(b)
        | Self::Forbidden(b, _)
        | Self::Conflict(b)
        | Self::TooManyRequests(b, _)
        | Self::Internal(b)
        | Self::BadGateway(b)
        | Self::Unavailable(b, _)
        | Self::GatewayTimeout(b)) = self;
        &b.0.error
    }
}

operation_errors! {
    /// Errors of `GET /v1/oauth/wechat/authorize` and `GET /v1/oauth/wechat/callback`:
    /// JSON, never a redirect, because the browser cannot be trusted to the client yet.
    pub enum BrowserError {
        /// `invalid_request`: a parameter is missing or malformed, `redirect_uri` is not one
        /// of the app's `redirect_uris` exactly, PKCE is missing or not S256; at the callback,
        /// `state` is unknown, spent or expired, or the browser lacks the cookie of the one
        /// that started the login.
        /// `unknown_app`: `appid` names no official account or website of this server.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
    }
    shared: internal, unavailable
}

operation_errors! {
    /// Errors of `GET /v1/oauth/wechat/authorize`: [`BrowserError`]'s, and the limit on
    /// starting browser logins.
    pub enum AuthorizeError {
        /// See [`BrowserError::BadRequest`].
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
    }
    shared: too_many_requests(
        " `rate_limited`: more than `WXAUTH_RATE_LIMIT_PER_MINUTE` browser logins started from",
        " this address."
    ), internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/token` (RFC 6749 section 5.2).
    pub enum TokenError {
        /// `invalid_request`: a field is missing, or `code_verifier` is not 43 to 128 PKCE
        /// characters.
        /// `invalid_grant`: the code is unknown, spent (by its first try, right or wrong) or
        /// expired, or `redirect_uri` or `code_verifier` does not match it.
        /// `unsupported_grant_type`: `grant_type` is not `authorization_code`.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// As `POST /v1/login`: `not_bound` / `phone_required` with a bind ticket,
        /// `user_banned`, `account_pending_deletion`.
        #[oai(status = 403)]
        Forbidden(
            Json<ErrorBody>,
            /// A bind ticket is a credential: never cached.
            #[oai(header = "Cache-Control")]
            String,
        ),
    }
    shared: internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/scan-sessions`.
    pub enum ScanStartError {
        /// `invalid_request`: a malformed body or `page`, or no `appid` although several
        /// mini-programs are served.
        /// `unknown_app`: `appid` names no mini-program of this server.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `wechat_error`: WeChat could not make the code's image.
        #[oai(status = 502)]
        BadGateway(Json<ErrorBody>),
        /// `wechat_timeout`: WeChat did not answer in time.
        #[oai(status = 504)]
        GatewayTimeout(Json<ErrorBody>),
    }
    shared: too_many_requests(
        " `rate_limited`: more than `WXAUTH_RATE_LIMIT_PER_MINUTE` requests from this address, or",
        " WeChat's minute quota for codes."
    ), internal, unavailable_or_wechat
}

operation_errors! {
    /// Errors of `POST /v1/scan-sessions/{scene}/confirm`.
    pub enum ScanConfirmError {
        /// `app_mismatch`: the token is of another app than the code's mini-program, and no
        /// unionid links its user there. `user_banned`: an operator banned the user.
        #[oai(status = 403)]
        Forbidden(Json<ErrorBody>),
        /// `scan_session_not_found`: no such session, or it expired or was confirmed.
        #[oai(status = 404)]
        NotFound(Json<ErrorBody>),
    }
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of `GET /v1/scan-sessions/{id}`.
    pub enum ScanPollError {
        /// `invalid_request`: `wait` is not a whole number of seconds.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `user_banned` / `account_pending_deletion`: the confirming user may not log in.
        #[oai(status = 403)]
        Forbidden(Json<ErrorBody>),
        /// `scan_session_not_found`: no such session (a wrong id, expired, or collected).
        #[oai(status = 404)]
        NotFound(Json<ErrorBody>),
    }
    shared: internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/bind`.
    pub enum BindError {
        /// `invalid_request`: malformed body, neither or both of `bind_ticket` and `code`,
        /// neither or both of a password (`username` and `password`) and `phone_code`, a bad
        /// `code`, `phone_code`, `username` or `password`, or a `code` without `appid`
        /// although several apps are served.
        /// `invalid_ticket`: the ticket is expired, already used or was never issued.
        /// `unknown_app`: `appid` names an app this server does not serve.
        /// `invalid_code` / `code_used`: WeChat rejected the code; call `wx.login` again.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `invalid_credentials`: wrong username or password (the same answer for both).
        #[oai(status = 401)]
        Unauthorized(Json<ErrorBody>),
        /// `user_blocked`: WeChat's risk control blocked this user's login (errcode 40226).
        /// `user_banned`: an operator banned the account's user; `until` says when the ban ends.
        /// `account_pending_deletion`: the account's user asked for its deletion.
        #[oai(status = 403)]
        Forbidden(Json<ErrorBody>),
        /// `already_bound`: this WeChat identity is bound to another user.
        /// `account_already_bound`: the account has another openid of the same mini-program.
        /// `no_account_for_phone`: with `phone_code` (registration `bind` or `auto`), no
        /// account has the number WeChat verified; the ticket stays unspent.
        #[oai(status = 409)]
        Conflict(Json<ErrorBody>),
        /// `wechat_error`: WeChat could not be reached or gave an unusable answer.
        #[oai(status = 502)]
        BadGateway(Json<ErrorBody>),
        /// `wechat_timeout`: WeChat did not answer within the configured timeout.
        #[oai(status = 504)]
        GatewayTimeout(Json<ErrorBody>),
    }
    shared: too_many_requests(
        " `rate_limited`: too many attempts for this username (or phone number) or from this",
        " address, or WeChat's per-user minute quota (errcode 45011)."
    ), internal, unavailable_or_wechat
}

operation_errors! {
    /// Errors of operations that need a bearer token.
    pub enum MeError {}
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of `DELETE /v1/me/sessions/{id}`.
    pub enum SessionError {
        /// `invalid_request`: `id` is not a UUID.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `session_not_found`: no live session of the user has this id.
        #[oai(status = 404)]
        NotFound(Json<ErrorBody>),
    }
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/token/introspect`.
    pub enum IntrospectError {
        /// `invalid_request`: not a form, or no `token`.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `invalid_client`: no credentials, Basic ones of none of `[[introspection_clients]]`, or
        /// a Bearer token that is no live admin token.
        #[oai(status = 401)]
        Unauthorized(
            Json<ErrorBody>,
            /// `Basic realm="wxauth", Bearer realm="wxauth"`: a client secret (RFC 6749 section
            /// 5.2) or an admin token.
            #[oai(header = "WWW-Authenticate")]
            String,
        ),
    }
    shared: internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/me/phone`.
    pub enum PhoneError {
        /// `invalid_request`: a malformed body, neither or both of `code` and
        /// `encrypted_data`, bad base64 or lengths, or data that holds no phone number.
        /// `invalid_code`: WeChat rejected the phone code (errcode 40029); it is single use and
        /// valid 5 minutes, so ask for the number again.
        /// `watermark_mismatch`: the data was encrypted for another mini-program.
        /// `unknown_app`: the token names an app this server no longer serves.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `session_key_stale`: the data does not decrypt with the session key of the latest
        /// login, or none is stored. Call `wx.login`, `POST /v1/login`, fetch the data again
        /// and retry.
        #[oai(status = 409)]
        Conflict(Json<ErrorBody>),
        /// `wechat_error`: WeChat could not be reached, gave an unusable answer, or refused the
        /// server's access token even after a refresh.
        #[oai(status = 502)]
        BadGateway(Json<ErrorBody>),
        /// `wechat_timeout`: WeChat did not answer within the configured timeout.
        #[oai(status = 504)]
        GatewayTimeout(Json<ErrorBody>),
    }
    shared: unauthorized,
        too_many_requests(" `rate_limited`: WeChat's minute quota was reached (errcode 45011)."),
        internal, unavailable_or_wechat
}

operation_errors! {
    /// Errors of `POST /v1/me/profile`.
    pub enum ProfileError {
        /// `invalid_request`: a malformed body, bad base64 or lengths, `raw_data` without
        /// `signature` (or the reverse), or data that holds no profile.
        /// `watermark_mismatch`: the data was encrypted for another mini-program.
        /// `invalid_signature`: `signature` is not `sha1(raw_data + session_key)`.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `session_key_stale`: the data does not decrypt with the session key of the latest
        /// login, or none is stored. Call `wx.login`, `POST /v1/login`, fetch the data again
        /// and retry.
        #[oai(status = 409)]
        Conflict(Json<ErrorBody>),
    }
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/dev/open-data`.
    pub enum DevError {
        /// `invalid_request`: a malformed body or phone number.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `session_key_stale`: no session key is stored for the token's login; log in again.
        #[oai(status = 409)]
        Conflict(Json<ErrorBody>),
    }
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/token/refresh`.
    pub enum RefreshError {
        /// `invalid_request`: a malformed body, or an empty or oversized `refresh_token`.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `invalid_grant`: the refresh token is unknown, expired, revoked (logout, or a reuse
        /// of a spent token, which revokes its whole login), or its user's WeChat binding was
        /// removed. Log in again with `wx.login`.
        #[oai(status = 401)]
        Unauthorized(Json<ErrorBody>),
        /// `user_banned`: an operator banned the user (every refresh token of the user was
        /// revoked with the ban); `until` says when the ban ends.
        #[oai(status = 403)]
        Forbidden(Json<ErrorBody>),
    }
    shared: too_many_requests(
        " `rate_limited`: too many refreshes of this login",
        " (`WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY`) or from this address",
        " (`WXAUTH_REFRESH_ATTEMPTS_PER_IP`). Retry after `Retry-After`."
    ), internal, unavailable
}

operation_errors! {
    /// Errors of `POST /v1/logout`.
    pub enum LogoutError {
        /// `invalid_request`: a malformed body, or an empty or oversized `refresh_token`.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
    }
    shared: internal, unavailable
}

operation_errors! {
    /// Errors of the admin API's operations without parameters (keys, statistics).
    pub enum AdminAuthError {}
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of the admin API's listings (users, events).
    pub enum AdminListError {
        /// `invalid_request`: a malformed cursor, limit, user id, kind or time.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
    }
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of the admin API's reading of one user.
    pub enum AdminReadError {
        /// `invalid_request`: the user id is not a UUID.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `user_not_found`: the path's user id names no user.
        #[oai(status = 404)]
        NotFound(Json<ErrorBody>),
    }
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of the admin API's operations that change something.
    pub enum AdminWriteError {
        /// `invalid_request`: a malformed id or body, or one the rules refuse (the description
        /// says which).
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `insufficient_scope`: the admin token has role `read`.
        #[oai(status = 403)]
        Forbidden(Json<ErrorBody>),
        /// `user_not_found`: the path's user id names no user. `session_not_found`: the path's
        /// session id names no live session of the user.
        #[oai(status = 404)]
        NotFound(Json<ErrorBody>),
    }
    shared: unauthorized, internal, unavailable
}

operation_errors! {
    /// Errors of `DELETE /v1/me`.
    pub enum DeleteMeError {
        /// `invalid_request`: malformed body or `code`.
        /// `invalid_code` / `code_used`: WeChat rejected the code; call `wx.login` again.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `code_mismatch`: the code is of another WeChat identity than the token's.
        /// `user_blocked`: WeChat's risk control blocked this user (errcode 40226).
        #[oai(status = 403)]
        Forbidden(Json<ErrorBody>),
        /// `wechat_error`: WeChat could not be reached or gave an unusable answer.
        #[oai(status = 502)]
        BadGateway(Json<ErrorBody>),
        /// `wechat_timeout`: WeChat did not answer within the configured timeout.
        #[oai(status = 504)]
        GatewayTimeout(Json<ErrorBody>),
    }
    shared: unauthorized, too_many_requests(
        " `rate_limited`: WeChat's per-user minute quota was reached (errcode 45011)."
    ), internal, unavailable_or_wechat
}

operation_errors! {
    /// Errors of `POST /v1/deletion/cancel`.
    pub enum CancelDeletionError {
        /// `invalid_request`: malformed body or `code`, or no `appid` although several apps
        /// are served. `unknown_app`: `appid` names an app this server does not serve.
        /// `invalid_code` / `code_used`: WeChat rejected the code; call `wx.login` again.
        #[oai(status = 400)]
        BadRequest(Json<ErrorBody>),
        /// `user_blocked`: WeChat's risk control blocked this user (errcode 40226).
        #[oai(status = 403)]
        Forbidden(Json<ErrorBody>),
        /// `deletion_not_found`: no account of this WeChat identity is being deleted.
        #[oai(status = 404)]
        NotFound(Json<ErrorBody>),
        /// `wechat_error`: WeChat could not be reached or gave an unusable answer.
        #[oai(status = 502)]
        BadGateway(Json<ErrorBody>),
        /// `wechat_timeout`: WeChat did not answer within the configured timeout.
        #[oai(status = 504)]
        GatewayTimeout(Json<ErrorBody>),
    }
    shared: too_many_requests(
        " `rate_limited`: WeChat's per-user minute quota was reached (errcode 45011)."
    ), internal, unavailable_or_wechat
}
