//! The use cases behind the HTTP API: log in, bind an account, unbind, who am I. Each
//! returns its own failure type listing exactly what can go wrong in it, which the API
//! layer maps to HTTP answers exhaustively (`api/error.rs`).

use std::net::IpAddr;

use aws_lc_rs::digest;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tracing::field::Empty;

use crate::store::events::{Event, EventKind};
use crate::{
    config::Registration,
    domain::{Details, DomainError, Identity, JsCode, Password, User, UserId, Username, WechatSession},
    limits::Attempts,
    password::{PasswordError, Verifier},
    store::{
        BindTicket, LoginRecord, Origin, RefreshGrant, RefreshId, SessionStart, Store, StoreError, TicketId, session_id,
    },
    token::{Claims, IssuedToken, Rejection, TokenError, Tokens},
    wechat::{WechatClient, WechatError},
};
use phone_login::PhoneLink;

/// How long a bind ticket works by default, in seconds.
pub const BIND_TICKET_SECS: u64 = 300;
/// The prefix of every bind ticket, so that people (and logs) can tell one from a JWT.
pub const BIND_TICKET_PREFIX: &str = "bt_";
/// The prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "rt_";

/// A failure that is never the client's fault: logged by the API layer, answered with 500.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Password hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The system's random number generator failed, so no secret could be made. Not a
    /// database failure: the client must not be told to wait for the disk.
    #[error("the system random number generator failed")]
    Randomness,
}

/// Why `POST /v1/login` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginFailure {
    /// The client sent an unusable value.
    #[error(transparent)]
    InvalidInput(#[from] DomainError),
    /// The request names an app this server does not serve.
    #[error("unknown appid {0:?}; this server serves: {1}")]
    UnknownApp(String, String),
    /// Several apps are configured and the request names none.
    #[error("appid is required: this server serves several mini-programs ({0})")]
    AppRequired(String),
    /// WeChat refused or failed.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// Registration is `bind` and the openid is bound to no user.
    #[error("该微信未绑定账号: this WeChat identity is not bound to an account; bind it with POST /v1/bind")]
    NotBound {
        /// The bind ticket for `POST /v1/bind`.
        ticket: String,
        /// Seconds the ticket works.
        expires_in: u64,
    },
    /// Registration is `phone` and the openid is bound to no user: the client proves a
    /// phone number with the ticket (or sends `phone_code` with the login).
    #[error(
        "请授权手机号: this WeChat identity is not bound to an account; send the bind ticket with a phone_code \
         from the getPhoneNumber button to POST /v1/bind"
    )]
    PhoneRequired {
        /// The bind ticket for `POST /v1/bind`.
        ticket: String,
        /// Seconds the ticket works.
        expires_in: u64,
    },
    /// A login with `phone_code` whose number no account has (registration `bind`): a bind
    /// ticket comes with it, for a bind by password instead.
    #[error("{}", NO_ACCOUNT_FOR_PHONE)]
    NoAccountForPhone {
        /// The bind ticket for `POST /v1/bind`, and the seconds it works.
        ticket: Option<(String, u64)>,
    },
    /// A login with `phone_code` raced with a bind of the same identity to another user.
    #[error("this WeChat identity is already bound to another user")]
    AlreadyBound,
    /// A login with `phone_code` whose number belongs to an account that has another
    /// openid of this app.
    #[error("the account with this phone number is already bound to another WeChat identity of this mini-program")]
    AccountAlreadyBound,
    /// Too many phone attempts from this address or for this number.
    #[error("too many attempts; retry in {retry_after} s")]
    TooManyAttempts {
        /// Seconds until the next attempt is allowed.
        retry_after: u64,
    },
    /// An operator banned the user.
    #[error(transparent)]
    Banned(#[from] Banned),
    /// The person asked for the account to be deleted, and it is not erased yet.
    #[error(transparent)]
    PendingDeletion(#[from] PendingDeletion),
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Why a phone number binds to nothing: the caller has just proven the number with
/// WeChat, so saying that no account has it tells them nothing they could not know.
const NO_ACCOUNT_FOR_PHONE: &str =
    "no account has this phone number; bind with the account's username and password, or ask the operator";

/// An operator's ban that refuses a login, bind or refresh.
#[derive(Debug, thiserror::Error)]
#[error("该用户已被封禁: this user is banned ({reason}){}", until.map(|u| format!(" until {u}")).unwrap_or_default())]
pub struct Banned {
    /// The operator's reason.
    pub reason: String,
    /// When the ban ends; `None`: until lifted.
    pub until: Option<time::OffsetDateTime>,
}

impl Banned {
    /// The ban of `user` that holds at `now`, if any.
    pub(crate) fn of(user: &User, now: time::OffsetDateTime) -> Option<Self> {
        user.controls.ban_at(now).map(|b| Self { reason: b.reason.clone(), until: b.until })
    }
}

/// Why `POST /v1/bind` failed.
#[derive(Debug, thiserror::Error)]
pub enum BindFailure {
    /// The client sent an unusable value.
    #[error(transparent)]
    InvalidInput(#[from] DomainError),
    /// The request names an app this server does not serve.
    #[error("unknown appid {0:?}; this server serves: {1}")]
    UnknownApp(String, String),
    /// Several apps are configured and a `code` came without `appid`.
    #[error("appid is required with a code: this server serves several mini-programs ({0})")]
    AppRequired(String),
    /// WeChat refused or failed (binds with a `code`).
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// The ticket is forged, spent or expired.
    #[error("the bind ticket is unknown, already used or expired; log in again for a new one")]
    InvalidTicket,
    /// Wrong username or password (one answer for both).
    #[error("wrong username or password")]
    InvalidCredentials,
    /// A bind by `phone_code` whose number no account has (registration `bind` or `auto`).
    #[error("{}", NO_ACCOUNT_FOR_PHONE)]
    NoAccountForPhone,
    /// The openid is bound to another user.
    #[error("this WeChat identity is already bound to another user")]
    AlreadyBound,
    /// The account has another openid of this app.
    #[error("this account is already bound to another WeChat identity of this mini-program")]
    AccountAlreadyBound,
    /// Too many attempts for this username or from this address.
    #[error("too many bind attempts; retry in {retry_after} s")]
    TooManyAttempts {
        /// Seconds until the next attempt is allowed.
        retry_after: u64,
    },
    /// An operator banned the account's user.
    #[error(transparent)]
    Banned(#[from] Banned),
    /// The account's user asked for its deletion, and it is not erased yet.
    #[error(transparent)]
    PendingDeletion(#[from] PendingDeletion),
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Why an operation with a bearer token failed.
#[derive(Debug, thiserror::Error)]
pub enum BearerFailure {
    /// The token is not acceptable, or its user no longer exists.
    #[error("{0}")]
    Rejected(Rejection),
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

macro_rules! internal_from {
    ($($failure:ty),*) => {$(
        impl From<StoreError> for $failure {
            fn from(e: StoreError) -> Self {
                Self::Internal(e.into())
            }
        }
        impl From<TokenError> for $failure {
            fn from(e: TokenError) -> Self {
                Self::Internal(e.into())
            }
        }
    )*};
}
internal_from!(LoginFailure, BearerFailure, OpenDataFailure);

/// A login with `phone_code` fails as the bind it does would have.
impl From<BindFailure> for LoginFailure {
    fn from(f: BindFailure) -> Self {
        match f {
            BindFailure::InvalidInput(e) => Self::InvalidInput(e),
            BindFailure::UnknownApp(a, known) => Self::UnknownApp(a, known),
            BindFailure::AppRequired(known) => Self::AppRequired(known),
            BindFailure::Wechat(e) => Self::Wechat(e),
            BindFailure::NoAccountForPhone => Self::NoAccountForPhone { ticket: None },
            BindFailure::AlreadyBound => Self::AlreadyBound,
            BindFailure::AccountAlreadyBound => Self::AccountAlreadyBound,
            BindFailure::TooManyAttempts { retry_after } => Self::TooManyAttempts { retry_after },
            BindFailure::Banned(b) => Self::Banned(b),
            BindFailure::PendingDeletion(p) => Self::PendingDeletion(p),
            BindFailure::Internal(e) => Self::Internal(e),
            // A login binds no ticket and checks no password.
            e @ (BindFailure::InvalidTicket | BindFailure::InvalidCredentials) => {
                Self::Internal(Internal::Store(StoreError::Corrupt(format!("a login's phone bind: {e}"))))
            }
        }
    }
}

impl From<PasswordError> for BindFailure {
    fn from(e: PasswordError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<TokenError> for BindFailure {
    fn from(e: TokenError) -> Self {
        Self::Internal(e.into())
    }
}

/// Store failures of a bind: the conflicts are the client's answer, the rest the server's.
impl From<StoreError> for BindFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyBound => Self::AlreadyBound,
            StoreError::AccountAlreadyBound => Self::AccountAlreadyBound,
            // Removed between the password check and the bind.
            StoreError::NoSuchAccount => Self::InvalidCredentials,
            StoreError::TicketNotFound => Self::InvalidTicket,
            e @ (StoreError::Database(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt(_)
            | StoreError::AccountExists
            | StoreError::PhoneTaken
            | StoreError::AdminTokenExists
            | StoreError::NoSuchAdminToken
            | StoreError::NoSuchUser
            | StoreError::WrongMode { .. }
            | StoreError::WrongSealingKey { .. }
            | StoreError::NotEmpty
            | StoreError::MergeRefused(_)
            | StoreError::NotCreated) => Self::Internal(e.into()),
        }
    }
}

/// A refresh token as handed to the client. `Debug` leaves the token out.
#[derive(Clone)]
pub struct IssuedRefresh {
    /// `rt_` + the user, the family, the generation and 256 random bits; only the hash of
    /// those bits is stored.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

impl std::fmt::Debug for IssuedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedRefresh").field("token", &"<redacted>").field("expires_in", &self.expires_in).finish()
    }
}

/// A successful login, bind or refresh.
#[derive(Debug)]
pub struct LoginOutcome {
    /// The signed access token.
    pub token: IssuedToken,
    /// The refresh token that continues this login.
    pub refresh: IssuedRefresh,
    /// The user it was issued for.
    pub user: User,
    /// The identity the person logged in with.
    pub identity: Identity,
    /// Whether this login created the user.
    pub created: bool,
}

/// The user behind a bearer token, and the identity the token was issued for.
#[derive(Debug)]
pub struct Me {
    /// The user as stored now.
    pub user: User,
    /// The app and openid named in the token.
    pub identity: Identity,
    /// What the user shared through open data.
    pub details: Details,
    /// Which surface each served app is, for the identities' `kind`.
    pub kinds: AppKinds,
}

/// Which surface each served app is, by AppID.
pub type AppKinds = std::collections::HashMap<String, crate::config::AppKind>;

/// Where a request came from, as the connection and its headers say; which address counts
/// as the client's is decided here, by the trusted proxies (`WXAUTH_TRUSTED_PROXIES`).
#[derive(Debug, Default)]
pub struct Peer<'a> {
    /// The TCP peer, when the connection is TCP.
    pub addr: Option<IpAddr>,
    /// The lines of `X-Forwarded-For`, in order.
    pub forwarded_for: Vec<&'a [u8]>,
    /// The raw `User-Agent`.
    pub user_agent: Option<&'a [u8]>,
}

/// The caller of a bearer-protected operation.
struct Caller {
    user: User,
    identity: Identity,
}

/// What `POST /v1/bind` received, unchecked.
#[derive(Debug)]
pub struct BindRequest<'a> {
    /// A ticket from a 403 `not_bound` or `phone_required`.
    pub ticket: Option<&'a str>,
    /// Or a fresh `wx.login` code.
    pub code: Option<&'a str>,
    /// The app of the code.
    pub appid: Option<&'a str>,
    /// The account's username (with `password`).
    pub username: Option<&'a str>,
    /// The account's password.
    pub password: Option<&'a str>,
    /// Or a code from the `getPhoneNumber` button: the account is the one with the number.
    pub phone_code: Option<&'a str>,
}

/// How a bind proves the account: its password, or a phone number WeChat verifies.
enum Credentials {
    Password(Username, Password),
    Phone(JsCode),
}

impl Credentials {
    fn parse(req: &BindRequest<'_>) -> Result<Self, DomainError> {
        match (req.username, req.password, req.phone_code) {
            (Some(username), Some(password), None) => {
                Ok(Self::Password(Username::parse(username)?, Password::presented(password)?))
            }
            (None, None, Some(code)) => Ok(Self::Phone(JsCode::parse(code)?)),
            _ => Err(DomainError::PasswordOrPhone),
        }
    }
}

/// The service's parts, assembled by `startup`.
pub struct Parts {
    /// One client per configured app; the first is the default.
    pub apps: Vec<WechatClient>,
    /// The store.
    pub store: Store,
    /// The token service.
    pub tokens: Tokens,
    /// What a login of an unbound openid does.
    pub registration: Registration,
    /// Attempt limits of logins and binds.
    pub attempts: Attempts,
    /// Password checks.
    pub passwords: Verifier,
    /// How long a bind ticket works.
    pub ticket_ttl: std::time::Duration,
    /// How long a refresh token works.
    pub refresh_ttl: std::time::Duration,
    /// Refresh families a user keeps at most.
    pub refresh_families_per_user: usize,
    /// The role a user first seen through an app gets, by AppID (apps without one are
    /// absent).
    pub default_roles: std::collections::HashMap<String, String>,
    /// The client URLs each browser app's logins may return to, by AppID.
    pub browser_redirects: std::collections::HashMap<String, Vec<String>>,
    /// Base of WeChat's authorize pages (`WXAUTH_WECHAT_OPEN_URL`).
    pub open_url: url::Url,
    /// Services that may introspect tokens.
    pub introspection_clients: Vec<crate::config::IntrospectionClient>,
    /// How long events are kept.
    pub event_retention: std::time::Duration,
    /// Time between a deletion request and the erasure.
    pub deletion_grace: std::time::Duration,
    /// The time, for bind-ticket and refresh-token expiry.
    pub clock: crate::clock::Clock,
    /// What `/metrics` shows.
    pub metrics: crate::metrics::Metrics,
}

mod access;
pub mod admin_token;
mod browser;
mod deletion;
mod introspect;
mod open_data;
mod operators;
mod phone_login;
mod refresh;
mod scan;
mod sessions;
pub use access::Holdings;
pub use browser::{Authorization, AuthorizeRequest, BrowserFailure, CallbackOutcome, TokenRequest};
pub use deletion::{CancelFailure, DeletionFailure, PendingDeletion};
pub use introspect::{IntrospectFailure, Introspection, Introspector};
pub use open_data::{OpenDataFailure, PhoneProof, ProfileRequest, SharedProfile};
pub use operators::{
    Change, HourStats, Operator, OperatorFailure, RECENT_EVENTS, STATS_DAYS, Stats, UserFile, UsersPage, WriteFailure,
};
pub use phone_login::PHONE_ACCOUNT_PREFIX;
pub use refresh::RefreshFailure;
pub use scan::{SCAN_PAGE, SCAN_SECS, ScanFailure, ScanPoll, ScanStart};
pub use sessions::SessionFailure;

/// The service behind the HTTP API.
pub struct Auth {
    parts: Parts,
}

impl Auth {
    /// Assembles the service from its parts.
    pub fn new(parts: Parts) -> Self {
        Self { parts }
    }

    /// Logs in with a `wx.login` code: code2Session, find (or, in `auto` mode, create) the
    /// user, sign a token. Nothing is stored unless WeChat accepted the code. A first login
    /// answers only after the user and binding are durable; a returning one does not wait
    /// for the disk. In `bind` and `phone` mode an unbound openid gets a bind ticket
    /// instead, unless the login carries a `phone_code`: then the identity is bound by the
    /// number at once ([`phone_login`]). A bound one never costs a phone verification.
    #[tracing::instrument(skip_all, fields(appid = Empty, openid = Empty, user_id = Empty, created = Empty))]
    pub async fn login(
        &self,
        raw_code: &str,
        appid: Option<&str>,
        phone_code: Option<&str>,
        peer: &Peer<'_>,
    ) -> Result<LoginOutcome, LoginFailure> {
        let code = JsCode::parse(raw_code)?;
        let phone_code = phone_code.map(JsCode::parse).transpose()?;
        let app = self.code_app(appid).map_err(|e| match e {
            AppChoice::Unknown(a, known) => LoginFailure::UnknownApp(a, known),
            AppChoice::Required(known) => LoginFailure::AppRequired(known),
        })?;
        let session = app.exchange(&code).await?;
        self.login_session(app, session, phone_code, peer).await
    }

    /// Logs the person of `session` (just vouched for by WeChat through `app`) in: find or
    /// create the user, or bind by `phone_code`, or answer a bind ticket (see [`Auth::login`]).
    async fn login_session(
        &self,
        app: &WechatClient,
        session: WechatSession,
        phone_code: Option<JsCode>,
        peer: &Peer<'_>,
    ) -> Result<LoginOutcome, LoginFailure> {
        let span = tracing::Span::current();
        span.record("appid", app.appid());
        span.record("openid", session.openid.as_str());
        let store = &self.parts.store;
        let roles: Vec<String> = self.parts.default_roles.get(app.appid()).cloned().into_iter().collect();
        let origin = self.origin(peer);
        // The session this login starts if the user may log in, in the same store step.
        let family = refresh::NewFamily::new()?;
        let now = self.parts.clock.now();
        let start = SessionStart {
            family: family.family,
            verifier_hash: family.verifier_hash(),
            origin: origin.clone(),
            now,
            expires_at: now + self.parts.refresh_ttl,
            keep: self.parts.refresh_families_per_user,
            event: self.event(EventKind::Login).app(app.appid()).origin(&origin),
        };
        let create = match (self.parts.registration, &phone_code) {
            (Registration::Auto, None) => Some(roles.as_slice()),
            _ => None,
        };
        let logged = store.log_in(app.appid(), &session, create, &start).await?;
        if create.is_some() && logged.is_none() {
            return Err(Internal::from(StoreError::NotCreated).into());
        }
        let mut started = false;
        let record = match (logged, phone_code) {
            (Some(logged), _) => {
                started = logged.started;
                logged.record
            }
            (None, Some(phone_code)) => {
                self.check_bind_ip(peer)?;
                let link = PhoneLink {
                    app,
                    session: &session,
                    ticket: None,
                    phone_code: &phone_code,
                    peer,
                    create: self.phone_creates(),
                };
                match self.link_by_phone(link).await {
                    Ok(outcome) => {
                        let event = self.event(EventKind::Login).user(outcome.user.id).app(app.appid());
                        self.record(event.origin(&self.origin(peer)).detail("created", outcome.created)).await;
                        return Ok(outcome);
                    }
                    // `auto`: a number no account has changes nothing; the login goes on.
                    Err(BindFailure::NoAccountForPhone) if self.parts.registration == Registration::Auto => {
                        store.record_login_with(app.appid(), &session, &roles).await?
                    }
                    // A request racing with this one (a double tap) bound the identity first:
                    // log in as whom it is bound to now. Depending on which of the twin's
                    // writes this one saw, the store says the identity is bound, or the
                    // account has an identity of this app (the twin's, which is this one).
                    Err(failure @ (BindFailure::AlreadyBound | BindFailure::AccountAlreadyBound)) => {
                        match store.login_if_bound(app.appid(), &session).await? {
                            Some(record) => record,
                            None => return Err(failure.into()),
                        }
                    }
                    // `bind`: a ticket, so that the person may bind by password instead.
                    Err(BindFailure::NoAccountForPhone) => {
                        let ticket = self.ticket(app.appid(), session).await?;
                        return Err(LoginFailure::NoAccountForPhone { ticket: Some(ticket) });
                    }
                    Err(failure) => return Err(failure.into()),
                }
            }
            (None, None) => {
                let (ticket, expires_in) = self.ticket(app.appid(), session).await?;
                tracing::info!("login of an unbound openid; bind ticket issued");
                return Err(match self.parts.registration {
                    Registration::Phone => LoginFailure::PhoneRequired { ticket, expires_in },
                    Registration::Auto | Registration::Bind => LoginFailure::NotBound { ticket, expires_in },
                });
            }
        };
        if let Some(banned) = Banned::of(&record.user, self.parts.clock.now()) {
            tracing::info!(user_id = %record.user.id, "login refused: the user is banned");
            return Err(banned.into());
        }
        if let Some(pending) = PendingDeletion::of(&record.user) {
            tracing::info!(user_id = %record.user.id, "login refused: the account is being deleted");
            return Err(pending.into());
        }
        if started {
            let (text, id) = family.first(record.user.id);
            let identity = Identity { appid: app.appid().to_owned(), openid: session.openid };
            return Ok(self.signed(record, identity, text, &id, "login succeeded")?);
        }
        let outcome = self.outcome(record, app.appid(), session.openid, &origin, "login succeeded").await?;
        let event = self.event(EventKind::Login).user(outcome.user.id).app(app.appid()).origin(&origin);
        self.record(event.detail("created", outcome.created)).await;
        Ok(outcome)
    }

    /// Records a refused `POST /v1/login` (answered with the error `code`): the failure
    /// statistics count them by code.
    pub async fn record_login_failure(&self, appid: Option<&str>, code: &str, peer: &Peer<'_>) {
        let mut event = self.event(EventKind::LoginFailed).origin(&self.origin(peer)).detail("error", code);
        // Only an app this server serves: the field is the client's to fill.
        event.appid = self.app(appid).ok().map(|app| app.appid().to_owned());
        self.record(event).await;
    }

    /// Binds the WeChat identity of a bind ticket (or of a fresh code) to an account,
    /// after checking its password (or, with a phone code, the account with the number
    /// WeChat verifies: [`phone_login`]), and logs in as the account's user. `peer` says
    /// where the request came from (its address is limited per minute).
    ///
    /// Guesses cost the guesser: the per-username budget is counted per WeChat identity, and
    /// each wrong password makes the identity's next attempt wait longer, while the owner,
    /// who comes with another identity, is not slowed down.
    #[tracing::instrument(skip_all, fields(appid = Empty, openid = Empty, user_id = Empty, created = Empty))]
    pub async fn bind(&self, req: BindRequest<'_>, peer: &Peer<'_>) -> Result<LoginOutcome, BindFailure> {
        let credentials = Credentials::parse(&req)?;
        let proof = match (req.ticket, req.code) {
            (Some(ticket), None) => Proof::Ticket(secret_id(ticket)),
            (None, Some(code)) => Proof::Code(JsCode::parse(code)?),
            _ => return Err(DomainError::TicketOrCode.into()),
        };
        let attempts = &self.parts.attempts;
        let (username, password) = match credentials {
            Credentials::Password(username, password) => (username, password),
            Credentials::Phone(phone_code) => {
                self.check_bind_ip(peer)?;
                let (app, session, ticket) = self.bind_identity(proof, req.appid).await?;
                let span = tracing::Span::current();
                span.record("appid", app.appid());
                span.record("openid", session.openid.as_str());
                let create = self.phone_creates();
                let link = PhoneLink {
                    app,
                    session: &session,
                    ticket: ticket.as_ref(),
                    phone_code: &phone_code,
                    peer,
                    create,
                };
                return self.link_by_phone(link).await;
            }
        };
        let origin = self.origin(peer);
        self.check_bind_ip(peer)?;
        let (app, session, ticket) = self.bind_identity(proof, req.appid).await?;
        let appid = app.appid().to_owned();
        let guesser = format!("{appid}:{}", session.openid);
        attempts.check_backoff(&guesser).map_err(too_many)?;
        attempts.check_username(username.as_str(), &guesser).map_err(too_many)?;
        let span = tracing::Span::current();
        span.record("appid", appid.as_str());
        span.record("openid", session.openid.as_str());
        let account = self.parts.store.account(username.as_str()).await?;
        let owner = account.as_ref().map(|a| a.user);
        // An account without a password (made by phone registration) opens with none.
        let hash = account.map(|a| a.password_hash).filter(|h| !h.is_empty());
        if !self.parts.passwords.verify(password, hash).await? {
            let wait = attempts.note_wrong_password(&guesser);
            tracing::info!(wait_secs = wait.as_secs(), "bind refused: wrong username or password");
            return Err(BindFailure::InvalidCredentials);
        }
        attempts.note_right_password(&guesser);
        // After the password: a ban is the account holder's business, not a guesser's.
        if let Some(owner) = owner
            && let Some(user) = self.parts.store.user(&owner).await?
        {
            if let Some(banned) = Banned::of(&user, self.parts.clock.now()) {
                tracing::info!(user_id = %owner, "bind refused: the account's user is banned");
                return Err(banned.into());
            }
            if let Some(pending) = PendingDeletion::of(&user) {
                tracing::info!(user_id = %owner, "bind refused: the account's user is being deleted");
                return Err(pending.into());
            }
        }
        let record =
            self.parts.store.bind(&appid, &session, username.as_str(), ticket.as_ref(), self.parts.clock.now()).await?;
        let outcome = self.outcome(record, &appid, session.openid, &origin, "bind succeeded").await?;
        let event = self.event(EventKind::Bind).user(outcome.user.id).app(&appid).origin(&origin);
        self.record(event.detail("username", username.as_str())).await;
        Ok(outcome)
    }

    /// Counts a bind attempt (by password or phone number) against the client's address
    /// (`WXAUTH_BIND_ATTEMPTS_PER_IP`), before anything is asked of WeChat.
    fn check_bind_ip(&self, peer: &Peer<'_>) -> Result<(), BindFailure> {
        let attempts = &self.parts.attempts;
        attempts.check_ip(peer.addr.map(|addr| attempts.client_ip(addr, &peer.forwarded_for))).map_err(too_many)
    }

    /// The WeChat identity a bind is for: the ticket's (not spent yet), or a fresh code's,
    /// with the app it belongs to.
    async fn bind_identity(
        &self,
        proof: Proof,
        appid: Option<&str>,
    ) -> Result<(&WechatClient, WechatSession, Option<TicketId>), BindFailure> {
        match proof {
            Proof::Ticket(id) => {
                let ticket = self.parts.store.ticket(&id, self.parts.clock.now()).await?;
                let ticket = ticket.ok_or(BindFailure::InvalidTicket)?;
                // A ticket of an app this server no longer serves works for nothing.
                let app = self.app(Some(&ticket.appid)).map_err(|_| BindFailure::InvalidTicket)?;
                Ok((app, ticket.session, Some(id)))
            }
            Proof::Code(code) => {
                let app = self.code_app(appid).map_err(|e| match e {
                    AppChoice::Unknown(a, known) => BindFailure::UnknownApp(a, known),
                    AppChoice::Required(known) => BindFailure::AppRequired(known),
                })?;
                Ok((app, app.exchange(&code).await?, None))
            }
        }
    }

    /// Removes the WeChat identities of the bearer's user: the account stays, and the next
    /// login with those openids behaves as unbound.
    pub async fn unbind(&self, bearer: &str, peer: &Peer<'_>) -> Result<Vec<Identity>, BearerFailure> {
        let me = self.caller(bearer).await?;
        let removed = self.parts.store.unbind(&me.user.id).await?;
        tracing::info!(user_id = %me.user.id, identities = removed.len(), "WeChat identities unbound");
        let event = self.caller_event(EventKind::Unbind, &me, peer).detail("identities", removed.len());
        self.record(event).await;
        Ok(removed)
    }

    /// Records a change of the key ring the server itself made or saw: a key it staged
    /// (`WXAUTH_KEY_ROTATION_DAYS`), or one that started to sign.
    pub async fn record_key_change(
        &self,
        kind: EventKind,
        at: time::OffsetDateTime,
        kid: &str,
        alg: &str,
        activates_at: Option<time::OffsetDateTime>,
    ) {
        self.record(Event::key_change(kind, at, kid, alg, activates_at).actor("server")).await;
    }

    /// A new event of `kind` now, on the service's clock.
    fn event(&self, kind: EventKind) -> Event {
        Event::new(kind, self.parts.clock.now())
    }

    /// An event of `kind` about the bearer `caller`, from `peer`.
    fn caller_event(&self, kind: EventKind, caller: &Caller, peer: &Peer<'_>) -> Event {
        self.event(kind).user(caller.user.id).app(&caller.identity.appid).origin(&self.origin(peer))
    }

    /// Keeps `event` ([`Store::record`]).
    async fn record(&self, event: Event) {
        self.parts.store.record(event).await;
    }

    /// The user a bearer token belongs to, with what it shared through open data.
    pub async fn me(&self, bearer: &str) -> Result<Me, BearerFailure> {
        let Caller { user, identity } = self.caller(bearer).await?;
        let details = self.parts.store.details(&user.id).await?;
        Ok(Me { user, identity, details, kinds: self.app_kinds() })
    }

    /// The user a bearer token belongs to, and the identity it names.
    async fn caller(&self, bearer: &str) -> Result<Caller, BearerFailure> {
        let claims: Claims = self.parts.tokens.verify(bearer).map_err(BearerFailure::Rejected)?;
        let gone = || BearerFailure::Rejected(Rejection::Invalid);
        let id = UserId::parse(&claims.sub).ok_or_else(gone)?;
        let user = self.parts.store.user(&id).await?.ok_or_else(gone)?;
        Ok(Caller { user, identity: Identity { appid: claims.appid, openid: claims.openid } })
    }

    /// [`Auth::caller`] for an operation that starts a new login from a bearer token (a
    /// scan confirmation): the token's session must still be live (not logged out, not
    /// revoked) and its identity still bound to the user, as introspection requires.
    async fn live_caller(&self, bearer: &str) -> Result<Caller, BearerFailure> {
        let claims: Claims = self.parts.tokens.verify(bearer).map_err(BearerFailure::Rejected)?;
        let revoked = || BearerFailure::Rejected(Rejection::Invalid);
        let id = UserId::parse(&claims.sub).ok_or_else(revoked)?;
        let user = self.parts.store.user(&id).await?.ok_or_else(revoked)?;
        if user.openid_in(&claims.appid) != Some(claims.openid.as_str()) {
            return Err(revoked());
        }
        let now = self.parts.clock.now();
        let sid = claims.sid.as_deref().ok_or_else(revoked)?;
        let live = self.parts.store.sessions(&id, now).await?;
        if !live.iter().any(|s| session_id(&s.family).to_string() == sid) {
            return Err(revoked());
        }
        Ok(Caller { user, identity: Identity { appid: claims.appid, openid: claims.openid } })
    }

    /// The token service (for JWKS and discovery).
    pub fn tokens(&self) -> &Tokens {
        &self.parts.tokens
    }

    /// Where a request came from, as kept with its session: the client's address (the
    /// peer's, or from `X-Forwarded-For` when the peer is a trusted proxy) and user agent.
    fn origin(&self, peer: &Peer<'_>) -> Origin {
        let attempts = &self.parts.attempts;
        Origin::new(peer.addr.map(|addr| attempts.client_ip(addr, &peer.forwarded_for)), peer.user_agent)
    }

    /// Counts a request to `POST /v1/login` or `POST /v1/bind` against its client's limit
    /// (`WXAUTH_RATE_LIMIT_PER_MINUTE`); `Err` is how long the client must wait. `peer` is
    /// the TCP peer, `forwarded_for` the lines of its `X-Forwarded-For` (trusted proxies
    /// only).
    pub fn check_request(&self, peer: IpAddr, forwarded_for: &[&[u8]]) -> Result<(), std::time::Duration> {
        let attempts = &self.parts.attempts;
        attempts.check_request(attempts.client_ip(peer, forwarded_for))
    }

    /// Counts a request to `POST /v1/token/refresh` against its client's limit
    /// (`WXAUTH_REFRESH_ATTEMPTS_PER_IP`), like [`Auth::check_request`].
    pub fn check_refresh_request(&self, peer: IpAddr, forwarded_for: &[&[u8]]) -> Result<(), std::time::Duration> {
        let attempts = &self.parts.attempts;
        attempts.check_refresh_ip(attempts.client_ip(peer, forwarded_for))
    }

    /// The metrics `/metrics` shows.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.parts.metrics
    }

    /// Whether WeChat is reachable: no app's circuit breaker is open (`/readyz`).
    pub fn wechat_reachable(&self) -> bool {
        self.parts.apps.iter().all(WechatClient::reachable)
    }

    /// The store (for health checks and the admin channel).
    pub fn store(&self) -> &Store {
        &self.parts.store
    }

    /// Which surface each served app is.
    pub fn app_kinds(&self) -> AppKinds {
        self.parts.apps.iter().map(|a| (a.appid().to_owned(), a.kind())).collect()
    }

    /// The AppIDs served, the default first.
    pub fn appids(&self) -> Vec<&str> {
        self.parts.apps.iter().map(WechatClient::appid).collect()
    }

    /// The app `appid` names, of any kind (for what a ticket or token names).
    fn app(&self, appid: Option<&str>) -> Result<&WechatClient, AppChoice> {
        let apps = &self.parts.apps;
        let known = || self.appids().join(", ");
        match appid {
            Some(appid) => {
                apps.iter().find(|a| a.appid() == appid).ok_or_else(|| AppChoice::Unknown(appid.into(), known()))
            }
            None if apps.len() == 1 => Ok(&apps[0]),
            None => Err(AppChoice::Required(known())),
        }
    }

    /// The app of a code a client posts (`/v1/login`, `/v1/bind`, a deletion's cancel): a
    /// mini-program or a mobile app; `None` names the only one of those. A browser app's
    /// codes come only through `/v1/oauth/wechat/callback`.
    fn code_app(&self, appid: Option<&str>) -> Result<&WechatClient, AppChoice> {
        let posting = || self.parts.apps.iter().filter(|a| !a.kind().is_browser());
        let known = || posting().map(WechatClient::appid).collect::<Vec<_>>().join(", ");
        match appid {
            Some(appid) => match self.parts.apps.iter().find(|a| a.appid() == appid) {
                Some(app) if !app.kind().is_browser() => Ok(app),
                Some(app) => Err(AppChoice::Unknown(
                    appid.into(),
                    format!(
                        "{} ({appid} is a {} app: its people log in at GET /v1/oauth/wechat/authorize)",
                        known(),
                        app.kind().as_str()
                    ),
                )),
                None => Err(AppChoice::Unknown(appid.into(), known())),
            },
            None => {
                let mut apps = posting();
                match (apps.next(), apps.next()) {
                    (Some(only), None) => Ok(only),
                    _ => Err(AppChoice::Required(known())),
                }
            }
        }
    }

    /// Issues a bind ticket: 256 random bits the client holds, stored under their hash with
    /// the session (and its key), for the configured lifetime.
    async fn ticket(&self, appid: &str, session: WechatSession) -> Result<(String, u64), LoginFailure> {
        let (text, id) = secret(BIND_TICKET_PREFIX)?;
        let ttl = self.parts.ticket_ttl;
        let now = self.parts.clock.now();
        let ticket = BindTicket { appid: appid.to_owned(), session, expires_at: now + ttl };
        self.parts.store.put_ticket(&id, &ticket, now).await?;
        Ok((text, ttl.as_secs()))
    }

    /// Signs the access token and starts a refresh family for a login or bind.
    async fn outcome(
        &self,
        record: LoginRecord,
        appid: &str,
        openid: String,
        origin: &Origin,
        what: &str,
    ) -> Result<LoginOutcome, Internal> {
        let identity = Identity { appid: appid.to_owned(), openid };
        let (text, id) = refresh::first_token(record.user.id)?;
        let grant = RefreshGrant { user: record.user.id, identity: identity.clone() };
        let now = self.parts.clock.now();
        let (expires_at, keep) = (now + self.parts.refresh_ttl, self.parts.refresh_families_per_user);
        self.parts.store.start_refresh(&id, &grant, origin, now, expires_at, keep).await?;
        self.signed(record, identity, text, &id, what)
    }

    /// Signs the access token of a login or bind whose refresh family `id` (first token
    /// `text`) has started.
    fn signed(
        &self,
        record: LoginRecord,
        identity: Identity,
        text: String,
        id: &RefreshId,
        what: &str,
    ) -> Result<LoginOutcome, Internal> {
        let span = tracing::Span::current();
        span.record("user_id", tracing::field::display(record.user.id));
        span.record("created", record.created);
        let token = self.parts.tokens.issue(&record.user, &identity, session_id(&id.family))?;
        self.parts.metrics.token_issued(token.alg.as_str());
        tracing::info!("{what}");
        let refresh = IssuedRefresh { token: text, expires_in: self.parts.refresh_ttl.as_secs() };
        Ok(LoginOutcome { token, refresh, user: record.user, identity, created: record.created })
    }
}

/// A limited bind attempt, with the seconds until the next is allowed (at least 1).
fn too_many(wait: std::time::Duration) -> BindFailure {
    BindFailure::TooManyAttempts { retry_after: (wait.as_secs_f64().ceil() as u64).max(1) }
}

enum AppChoice {
    Unknown(String, String),
    Required(String),
}

enum Proof {
    Ticket(TicketId),
    Code(JsCode),
}

/// Where a ticket or refresh token is stored: the SHA-256 of its text. Any text works as
/// input, so a forged or mistyped one (an access token included) is simply not found.
fn secret_id(text: &str) -> [u8; 32] {
    let mut id = [0u8; 32];
    id.copy_from_slice(digest::digest(&digest::SHA256, text.as_bytes()).as_ref());
    id
}

/// A new opaque secret for the client: `prefix` + 256 random bits, and where it is stored.
fn secret(prefix: &str) -> Result<(String, [u8; 32]), Internal> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Internal::Randomness)?;
    let text = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let id = secret_id(&text);
    Ok((text, id))
}
