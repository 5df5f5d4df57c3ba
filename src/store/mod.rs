//! Where users, their WeChat identities, accounts, bind tickets and session keys live.
//!
//! The rest of wxauth talks to [`Store`] only. It is a struct over a private enum of
//! backends rather than a trait object: calls dispatch statically (no boxed futures on the
//! login path), through one macro that names every backend once. Its methods are `async`
//! and mention no backend types, so a backend that talks to a server (PostgreSQL) fits
//! behind the same signatures. Backend-specific knobs (directories, caches, flush policy)
//! stay inside the backend's module and its settings.
//!
//! What a backend must do is the [`backend::Backend`] trait (one trait per job, and one
//! file per trait in each backend: `users`, `links`, `tickets`, `accounts`, `refresh`,
//! `export`, `meta`); what the backends decide alike is written once, as pure functions,
//! in the modules of the same names here. The conformance suite in `tests/store` runs
//! against every backend.
//!
//! Adding a backend: a module implementing [`backend::Backend`], a variant of
//! `Configured`, its arm in `Store::open` and in `dispatch!`, and its entry in the
//! conformance suite.

mod admin_tokens;
mod backend;
mod codec;
mod error;
pub mod events;
pub mod export;
pub mod grants;
mod links;
mod login;
mod merge;
mod meta;
pub mod outbox;
mod postgres;
mod refresh;
pub mod sealed;
mod sled;
mod tickets;
mod users;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub use self::{
    admin_tokens::{AdminRole, AdminToken},
    error::StoreError,
    login::{LoggedIn, SessionStart},
    refresh::{Origin, PurgeBatch, RefreshGrant, RefreshId, Refreshed, Session, session_id},
};
use self::{
    backend::{
        Accounts, AdminTokens, Backend, Deletions, Events, Grants, Links, Merges, Outbox, RefreshTokens, Tickets,
        Transfer, Users,
    },
    export::Record,
};
use crate::{
    config::StoreSettings,
    domain::{
        Controls, Dated, Deletion, Details, Identity, PhoneNumber, Profile, SessionKey, User, UserId, WechatSession,
    },
};

/// Layout version written by this build. Bump it with a migration when the layout changes.
pub const SCHEMA_VERSION: u32 = 7;

/// `last_login_at` is rewritten only when the stored value is at least this old, so that a
/// burst of logins by one person costs no writes. It is therefore accurate to 5 minutes.
pub const LAST_LOGIN_GRANULARITY: Duration = Duration::minutes(5);

/// What [`Store::erase`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    /// Erased. For an account's user, the account stays (unbound, emptied): its username.
    Erased {
        /// The account kept, for an account's user.
        account_kept: Option<String>,
    },
    /// Not erased: no deletion is pending, or it is not due yet.
    NotDue,
    /// No such user (already erased, or never one).
    Gone,
}

/// The session key kept for a user: only the newest one is valid at WeChat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSessionKey {
    /// WeChat's key.
    pub session_key: SessionKey,
    /// When wxauth first received this key.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

impl StoredSessionKey {
    /// The key `session` brought, received `now`; `None` from a surface without one.
    pub(crate) fn of(session: &WechatSession, now: OffsetDateTime) -> Option<Self> {
        session.session_key.clone().map(|session_key| Self { session_key, issued_at: now })
    }
}

/// The outcome of recording a login.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// The user, as stored after this login.
    pub user: User,
    /// Whether this login created the user.
    pub created: bool,
}

/// An account made by an operator (`wxauth accounts add`).
#[derive(Debug, Clone)]
pub struct Account {
    /// The username.
    pub username: String,
    /// The user the account's logins resolve to.
    pub user: UserId,
    /// The argon2id PHC string of the password; empty for an account without one (made
    /// by phone registration, or imported without a hash), which no password opens.
    pub password_hash: String,
    /// The account's phone number, normalised ([`PhoneNumber::normalised`]), if it has one.
    pub phone: Option<String>,
    /// When the account was added.
    pub created_at: OffsetDateTime,
}

/// An account to add ([`Store::add_accounts`]).
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The username, already checked ([`crate::domain::Username`]).
    pub username: String,
    /// The argon2id PHC string, already checked; empty for no password.
    pub password_hash: String,
    /// The phone number, normalised ([`PhoneNumber::parse_query`]).
    pub phone: Option<String>,
}

/// What a bind ticket stands for: a WeChat login that found no bound user. It holds the
/// session key, so the key stays on the server while the client holds only the ticket.
#[derive(Debug, Clone)]
pub struct BindTicket {
    /// The app the login came through.
    pub appid: String,
    /// What WeChat said about the person.
    pub session: WechatSession,
    /// When the ticket stops working.
    pub expires_at: OffsetDateTime,
}

/// The key a ticket is stored under: the SHA-256 of the text the client holds, so that a
/// copy of the store alone yields no usable ticket.
pub type TicketId = [u8; 32];

/// A refresh token as the store sees it: the token is `user ‖ family ‖ generation ‖
/// Handle to the configured backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Configured,
    /// Which webhooks want which events: each event kept gets its deliveries.
    subscriptions: outbox::Subscriptions,
}

#[derive(Clone)]
enum Configured {
    Sled(std::sync::Arc<sled::Reopening>),
    Postgres(postgres::PgStore),
}

/// Evaluates `$call` with `$backend` bound to the configured backend: the one place that
/// names every backend. On sled, a database error also starts opening the database again
/// ([`sled::Reopening`]), except for the `unnoted` calls of the CLI and of shutdown.
macro_rules! dispatch {
    ($self:ident, $backend:ident => $call:expr) => {
        match &$self.backend {
            Configured::Sled(reopening) => {
                let $backend = reopening.get()?;
                reopening.note($call)
            }
            Configured::Postgres($backend) => $call,
        }
    };
    (unnoted $self:ident, $backend:ident => $call:expr) => {
        match &$self.backend {
            Configured::Sled(reopening) => {
                let $backend = reopening.get()?;
                $call
            }
            Configured::Postgres($backend) => $call,
        }
    };
}

impl Store {
    /// Opens (or creates) the store the settings name, sealing session keys with `sealer`.
    /// Must run inside a tokio runtime.
    pub async fn open(settings: &StoreSettings, sealer: sealed::Sealer) -> Result<Self, StoreError> {
        let backend = match settings {
            StoreSettings::Sled(s) => Configured::Sled(sled::Reopening::open(s, sealer).await?),
            StoreSettings::Postgres(s) => Configured::Postgres(postgres::PgStore::open(s, sealer).await?),
        };
        Ok(Self { backend, subscriptions: outbox::Subscriptions::default() })
    }

    /// Records a successful login of `session` for `appid`, creating the user when the
    /// openid is new (registration `auto`).
    ///
    /// The first login of an openid creates the user and answers once it is durable. Later
    /// logins update only what changed (a new session key, a unionid, a `last_login_at`
    /// older than [`LAST_LOGIN_GRANULARITY`]) and do not wait for the disk.
    pub async fn record_login(&self, appid: &str, session: &WechatSession) -> Result<LoginRecord, StoreError> {
        self.record_login_with(appid, session, &[]).await
    }

    /// Like [`Store::record_login`], giving a user this login creates `roles` (checked by
    /// [`crate::domain::roles`]).
    pub async fn record_login_with(
        &self,
        appid: &str,
        session: &WechatSession,
        roles: &[String],
    ) -> Result<LoginRecord, StoreError> {
        dispatch!(self, b => b.login(appid, session, Some(roles)).await)?.ok_or(StoreError::NotCreated)
    }

    /// Applies `change` to the user's roles, custom claims and ban, durably, and returns
    /// the user as changed; [`StoreError::NoSuchUser`] when the user is gone.
    pub async fn change_controls(
        &self,
        id: &UserId,
        change: impl Fn(&mut Controls) + Send + Sync,
    ) -> Result<User, StoreError> {
        dispatch!(self, b => b.change_controls(id, change).await)
    }

    /// Marks user `id` for deletion as `deletion` says, and revokes every refresh family
    /// of the user: the person asked to leave, so their sessions end. Durable when it
    /// returns; [`StoreError::NoSuchUser`] when the user is gone.
    pub async fn request_deletion(&self, id: &UserId, deletion: Deletion) -> Result<User, StoreError> {
        let user = self.change_controls(id, |c| c.deletion = Some(deletion)).await?;
        // After the mark: a refresh racing with it is refused by the mark.
        self.revoke_user_refresh(id).await?;
        Ok(user)
    }

    /// Cancels the pending deletion of user `id` if its erasure is not due at `now`; `false`
    /// when none was pending, it is due (erasing), or the user is gone.
    pub async fn cancel_deletion(&self, id: &UserId, now: OffsetDateTime) -> Result<bool, StoreError> {
        let Some(pending) = self.user(id).await?.and_then(|u| u.controls.deletion).filter(|d| d.erase_at > now) else {
            return Ok(false);
        };
        // Cleared only if it is still the same pending deletion when the change runs (an
        // erasure in between clears it too, and must not read as a cancel).
        let cleared = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cleared.clone();
        let change = move |c: &mut Controls| {
            let still = c.deletion == Some(pending);
            if still {
                c.deletion = None;
            }
            flag.store(still, std::sync::atomic::Ordering::SeqCst);
        };
        match self.change_controls(id, change).await {
            Ok(_) => Ok(cleared.load(std::sync::atomic::Ordering::SeqCst)),
            Err(StoreError::NoSuchUser) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Users whose deletion is due at `now`, soonest first, at most `limit` (possibly some
    /// already erased: [`Store::erase`] says so).
    pub async fn due_deletions(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<UserId>, StoreError> {
        dispatch!(self, b => b.due_deletions(now, limit).await)
    }

    /// Erases user `id` if its deletion is due at `now` (see `Deletions::erase` for what
    /// goes), after revoking its refresh families again (the purge then removes them).
    /// Running it again after a crash finishes the erasure.
    pub async fn erase(&self, id: &UserId, now: OffsetDateTime) -> Result<Erasure, StoreError> {
        if self.user(id).await?.is_some_and(|u| u.controls.deletion.is_some_and(|d| d.erase_at <= now)) {
            self.revoke_user_refresh(id).await?;
        }
        dispatch!(self, b => b.erase(id, now).await)
    }

    /// Like [`Store::record_login`], but never creates a user (registration `bind`): `None`
    /// when the openid is not bound and its unionid (if any) belongs to no user.
    pub async fn login_if_bound(
        &self,
        appid: &str,
        session: &WechatSession,
    ) -> Result<Option<LoginRecord>, StoreError> {
        dispatch!(self, b => b.login(appid, session, None).await)
    }

    /// Binds the identity in `session` (of `appid`) to the user of account `username`, and
    /// spends `ticket` when the identity came from one. Binding an identity to the account
    /// it is already bound to succeeds again. `now` is the service's clock: it expires the
    /// ticket and dates the binding.
    pub async fn bind(
        &self,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
        now: OffsetDateTime,
    ) -> Result<LoginRecord, StoreError> {
        dispatch!(self, b => b.bind(appid, session, username, ticket, now).await)
    }

    /// Removes every WeChat identity (and the unionid link) of a user, and revokes the
    /// user's refresh families first: binding the same identity again later must not bring
    /// an old session back. The user and its account stay. Returns the identities that
    /// were removed.
    pub async fn unbind(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        self.revoke_user_refresh(id).await?;
        dispatch!(self, b => b.unbind(id).await)
    }

    /// Keeps a bind ticket until it expires or is spent; expired ones are swept as of `now`
    /// (the service's clock).
    pub async fn put_ticket(&self, id: &TicketId, ticket: &BindTicket, now: OffsetDateTime) -> Result<(), StoreError> {
        dispatch!(self, b => b.put_ticket(id, ticket, now).await)
    }

    /// A bind ticket that is neither spent nor expired at `now` (the service's clock).
    pub async fn ticket(&self, id: &TicketId, now: OffsetDateTime) -> Result<Option<BindTicket>, StoreError> {
        dispatch!(self, b => b.ticket(id, now).await)
    }

    /// Keeps a one-time grant of a browser or scan-login flow until it expires or is
    /// taken ([`grants`]); expired ones are swept as of `now` (the service's clock).
    pub async fn put_grant(
        &self,
        id: &grants::GrantId,
        grant: &grants::Grant,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.put_grant(id, grant, now).await)
    }

    /// The payload of the live grant of `kind` under `id`.
    pub async fn grant(
        &self,
        id: &grants::GrantId,
        kind: grants::GrantKind,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, b => b.grant(id, kind, now).await)
    }

    /// Spends the grant of `kind` under `id`: its payload if it was live, to one caller only.
    pub async fn take_grant(
        &self,
        id: &grants::GrantId,
        kind: grants::GrantKind,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, b => b.take_grant(id, kind, now).await)
    }

    /// Moves the live grant of `kind` under `id` from `expected` to `new`; `false` when
    /// it is no longer `expected` (changed, taken or expired).
    pub async fn replace_grant(
        &self,
        id: &grants::GrantId,
        kind: grants::GrantKind,
        expected: &str,
        new: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self, b => b.replace_grant(id, kind, expected, new, now).await)
    }

    /// Merges user `from` into user `into` (`wxauth users merge`): identities, unionid,
    /// account and its phone number, details, roles, claims and sessions move to `into`,
    /// and `from` is removed. Refused ([`StoreError::MergeRefused`]) when it would mix up
    /// two people or lose something ([`merge::refusal`]). Durable when it returns.
    pub async fn merge_users(&self, into: &UserId, from: &UserId, now: OffsetDateTime) -> Result<User, StoreError> {
        dispatch!(self, b => b.merge_users(into, from, now).await)
    }

    /// The user `from` was merged into, if it was: its refresh tokens belong to that user.
    pub async fn merged_into(&self, from: &UserId) -> Result<Option<UserId>, StoreError> {
        dispatch!(self, b => b.merged_into(from).await)
    }

    /// The user with `id`, if any.
    pub async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        dispatch!(self, b => b.user(id).await)
    }

    /// The user bound to `openid` of `appid`, if any.
    pub async fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self, b => b.user_by_openid(appid, openid).await)
    }

    /// The user a unionid leads to (the first that had it), if any.
    pub async fn user_by_unionid(&self, unionid: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self, b => b.user_by_unionid(unionid).await)
    }

    /// The users who verified the phone number `normalised` (`+8613800138000`, see
    /// [`PhoneNumber::normalised`]), found through its pseudonym and checked against the
    /// number each one holds now.
    pub async fn users_by_phone(&self, normalised: &str) -> Result<Vec<User>, StoreError> {
        let ids = dispatch!(self, b => {
            let pseudonym = codec::phone_pseudonym(b.sealer(), normalised);
            b.users_by_phone(&pseudonym).await
        })?;
        let mut users = Vec::new();
        for id in ids {
            let holds = self.details(&id).await?.phone.is_some_and(|p| p.value.normalised() == normalised);
            if holds && let Some(user) = self.user(&id).await? {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// Up to `limit` users in id order, after `after` (from the first when `None`).
    pub async fn users_after(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<User>, StoreError> {
        dispatch!(self, b => b.users_after(after, limit).await)
    }

    /// The newest session key of a user in `appid`. Never sent to clients; for decrypting
    /// open data.
    pub async fn session_key(&self, id: &UserId, appid: &str) -> Result<Option<StoredSessionKey>, StoreError> {
        dispatch!(self, b => b.session_key(id, appid).await)
    }

    /// What the user shared through open data; empty when nothing (or no such user).
    pub async fn details(&self, id: &UserId) -> Result<Details, StoreError> {
        dispatch!(self, b => b.details(id).await)
    }

    /// Keeps a verified phone number on a user, replacing any earlier one. Durable when it
    /// returns; [`StoreError::NoSuchUser`] when the user is gone.
    pub async fn set_phone(&self, id: &UserId, phone: Dated<PhoneNumber>) -> Result<Details, StoreError> {
        dispatch!(self, b => b.change_details(id, |d| d.phone = Some(phone.clone())).await)
    }

    /// Keeps a user's WeChat profile, replacing any earlier one. Durable when it returns;
    /// [`StoreError::NoSuchUser`] when the user is gone.
    pub async fn set_profile(&self, id: &UserId, profile: Dated<Profile>) -> Result<Details, StoreError> {
        dispatch!(self, b => b.change_details(id, |d| d.profile = Some(profile.clone())).await)
    }

    /// Starts a refresh-token family (a login) with its first token, `id` (generation 0),
    /// valid until `expires_at`. One record, not waited for: a token lost in a crash costs
    /// the client a `wx.login`, and logins stay free of flushes. The user keeps about `keep`
    /// families: the oldest beyond are removed in batches ([`refresh::TrimSchedule`]: about
    /// twice `keep` at most, per replica), so that logins repeated without end cannot grow the
    /// store. `origin` is kept with the family, for [`Store::sessions`].
    pub async fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        origin: &Origin,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        keep: usize,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.start_refresh(id, grant, origin, now, expires_at, keep).await)
    }

    /// The user's sessions at `now`: refresh families neither revoked nor expired, newest
    /// first.
    pub async fn sessions(&self, user: &UserId, now: OffsetDateTime) -> Result<Vec<Session>, StoreError> {
        dispatch!(self, b => b.sessions(user, now).await)
    }

    /// Revokes one session (refresh family) of the user; `false` when it is not one of the
    /// user's live sessions at `now`. Durable when it returns.
    pub async fn revoke_session(
        &self,
        user: &UserId,
        family: &[u8; 16],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self, b => b.revoke_session(user, family, now).await)
    }

    /// Spends refresh token `old` and makes `next_verifier_hash` its family's next
    /// generation, valid until `expires_at`, atomically: of two requests presenting one
    /// token, one rotates and the other presents an older generation, which revokes the
    /// family. Durable when it returns.
    pub async fn rotate_refresh(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        dispatch!(self, b => b.rotate_refresh(old, next_verifier_hash, now, expires_at).await)
    }

    /// A refresh's store work: [`Store::rotate_refresh`] and, when the token rotated, the
    /// family's user as stored now (`None` when gone). When that user still holds the
    /// family's identity and may log in ([`User::admits_session`]), `refreshed` is kept
    /// too, as the user's event in the family's app. One statement on PostgreSQL when the
    /// token is its family's current one.
    pub async fn rotate_refresh_reading_user(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        refreshed: events::Event,
    ) -> Result<(Refreshed, Option<User>), StoreError> {
        let rotated = match &self.backend {
            Configured::Postgres(pg) => {
                let deliveries = self.subscriptions.deliveries_of(&refreshed);
                let at_once = pg.rotate_at_once(old, next_verifier_hash, now, expires_at, &refreshed, &deliveries);
                if let Some(done) = at_once.await? {
                    return Ok(done);
                }
                pg.rotate_judged(old, next_verifier_hash, now, expires_at).await?
            }
            _ => self.rotate_refresh(old, next_verifier_hash, now, expires_at).await?,
        };
        let Refreshed::Rotated(grant) = &rotated else { return Ok((rotated, None)) };
        let user = self.user(&grant.user).await?;
        if let Some(user) = &user
            && user.admits_session(&grant.identity, now)
        {
            self.record(refreshed.user(user.id).app(&grant.identity.appid)).await;
        }
        Ok((rotated, user))
    }

    /// Revokes the family of refresh token `id`; nothing happens for a token that is not
    /// one of its family's. Durable when it returns.
    pub async fn revoke_refresh(&self, id: &RefreshId) -> Result<bool, StoreError> {
        dispatch!(self, b => b.revoke_refresh(id).await)
    }

    /// [`Store::revoke_refresh`], keeping `logout` when it revoked: one statement on
    /// PostgreSQL.
    pub async fn revoke_refresh_recording(&self, id: &RefreshId, logout: events::Event) -> Result<bool, StoreError> {
        if let Configured::Postgres(pg) = &self.backend {
            let deliveries = self.subscriptions.deliveries_of(&logout);
            return pg.revoke_recording(id, &logout, &deliveries).await;
        }
        let revoked = self.revoke_refresh(id).await?;
        if revoked {
            self.record(logout).await;
        }
        Ok(revoked)
    }

    /// Revokes every refresh family of a user. Durable when it returns.
    pub async fn revoke_user_refresh(&self, user: &UserId) -> Result<(), StoreError> {
        dispatch!(self, b => b.revoke_user_refresh(user).await)
    }

    /// [`Store::revoke_user_refresh`], keeping `logout_all` (the user's event) with it: one
    /// statement on PostgreSQL.
    pub async fn revoke_user_refresh_recording(
        &self,
        user: &UserId,
        logout_all: events::Event,
    ) -> Result<(), StoreError> {
        if let Configured::Postgres(pg) = &self.backend {
            let deliveries = self.subscriptions.deliveries_of(&logout_all);
            return pg.revoke_user_recording(user, &logout_all, &deliveries).await;
        }
        self.revoke_user_refresh(user).await?;
        self.record(logout_all).await;
        Ok(())
    }

    /// Looks at up to `limit` refresh families, continuing where the previous batch
    /// stopped, and removes those that can no longer be used at `now`: expired (revoked
    /// ones included, which answer "revoked" until then), or of a user that is gone.
    /// Bounded, so that a purge never holds the store for long.
    pub async fn purge_refresh(&self, now: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        dispatch!(self, b => b.purge_refresh(now, limit).await)
    }

    /// Keeps `events`. Does not wait for durability on sled: they become durable with the
    /// next group commit, as a returning login does.
    pub async fn append_events(&self, events: &[events::Event]) -> Result<(), StoreError> {
        let deliveries = self.subscriptions.deliveries(events);
        dispatch!(self, b => b.append_events(events, &deliveries).await)
    }

    /// The same store, giving each event it keeps from now on a delivery to each webhook of
    /// `subscriptions` that wants it.
    pub fn with_webhooks(mut self, subscriptions: outbox::Subscriptions) -> Self {
        self.subscriptions = subscriptions;
        self
    }

    /// The event with id `id`, if it is kept.
    pub async fn event(&self, id: &uuid::Uuid) -> Result<Option<events::Event>, StoreError> {
        dispatch!(self, b => b.event(id).await)
    }

    /// Claims up to `limit` webhook deliveries due at `now` until `lease_until`
    /// (`Outbox::claim_deliveries`).
    pub async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<outbox::Delivery>, StoreError> {
        dispatch!(self, b => b.claim_deliveries(now, lease_until, limit).await)
    }

    /// Ends the claim of a delivery: removed when `retry_at` is `None`, else due again then.
    pub async fn finish_delivery(
        &self,
        claimed: &outbox::Delivery,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.finish_delivery(claimed, retry_at).await)
    }

    /// Keeps `event`, the report of a change already made and answered: a failure is
    /// logged, not returned, so that it never undoes or fails the change.
    pub async fn record(&self, event: events::Event) {
        if let Err(e) = self.append_events(std::slice::from_ref(&event)).await {
            tracing::warn!(error = %e, kind = event.kind.as_str(), "an event could not be recorded");
        }
    }

    /// The events `filter` admits, newest first.
    pub async fn events(&self, filter: &events::EventFilter) -> Result<Vec<events::Event>, StoreError> {
        dispatch!(self, b => b.events(filter).await)
    }

    /// Removes up to `limit` events from before `before`, oldest first.
    pub async fn purge_events(&self, before: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        dispatch!(self, b => b.purge_events(before, limit).await)
    }

    /// Keeps a new admin token; [`StoreError::AdminTokenExists`] when its name is taken.
    /// Durable when it returns.
    pub async fn add_admin_token(&self, token: &AdminToken) -> Result<(), StoreError> {
        dispatch!(self, b => b.add_admin_token(token).await)
    }

    /// The admin token with `id`, revoked or not.
    pub async fn admin_token(&self, id: &[u8; 16]) -> Result<Option<AdminToken>, StoreError> {
        dispatch!(self, b => b.admin_token(id).await)
    }

    /// Every admin token, by name.
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        dispatch!(self, b => b.admin_tokens().await)
    }

    /// Revokes the admin token named `name` at `at`; [`StoreError::NoSuchAdminToken`].
    /// Durable when it returns.
    pub async fn revoke_admin_token(&self, name: &str, at: OffsetDateTime) -> Result<AdminToken, StoreError> {
        dispatch!(self, b => b.revoke_admin_token(name, at).await)
    }

    /// Adds an account with a new user of its own. Durable when it returns.
    pub async fn add_account(&self, account: NewAccount) -> Result<User, StoreError> {
        let mut users = self.add_accounts(std::slice::from_ref(&account)).await?;
        users.pop().ok_or_else(|| StoreError::Corrupt("an added account made no user".into()))
    }

    /// Adds accounts, each with a new user of its own, all or none: nothing is added when
    /// a username or phone number is taken ([`StoreError::AccountExists`],
    /// [`StoreError::PhoneTaken`]), in the store or twice in `accounts`. Durable when it
    /// returns.
    pub async fn add_accounts(&self, accounts: &[NewAccount]) -> Result<Vec<User>, StoreError> {
        let mut names = std::collections::HashSet::new();
        let mut phones = std::collections::HashSet::new();
        for a in accounts {
            if !names.insert(a.username.as_str()) {
                return Err(StoreError::AccountExists);
            }
            if let Some(phone) = &a.phone
                && !phones.insert(phone.as_str())
            {
                return Err(StoreError::PhoneTaken);
            }
        }
        dispatch!(self, b => b.add_accounts(accounts).await)
    }

    /// The account whose phone number is `normalised` (`+8613800138000`), found through
    /// its pseudonym and checked against the number the account holds now.
    pub async fn account_by_phone(&self, normalised: &str) -> Result<Option<Account>, StoreError> {
        let account = dispatch!(self, b => {
            let pseudonym = codec::phone_pseudonym(b.sealer(), normalised);
            b.account_by_phone(&pseudonym).await
        })?;
        Ok(account.filter(|a| a.phone.as_deref() == Some(normalised)))
    }

    /// Gives account `username` the phone number `phone` (normalised), or takes its number
    /// away (`None`); [`StoreError::NoSuchAccount`], [`StoreError::PhoneTaken`]. Durable
    /// when it returns.
    pub async fn set_account_phone(&self, username: &str, phone: Option<&str>) -> Result<(), StoreError> {
        dispatch!(self, b => b.set_account_phone(username, phone).await)
    }

    /// The account named `username`, if any.
    pub async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        dispatch!(self, b => b.account(username).await)
    }

    /// Every account, by username.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        dispatch!(self, b => b.accounts().await)
    }

    /// Replaces an account's password hash, after revoking the refresh families of its
    /// user (a password is changed because someone else may know it). Durable when it
    /// returns.
    pub async fn set_password(&self, username: &str, password_hash: &str) -> Result<(), StoreError> {
        let account = self.account(username).await?.ok_or(StoreError::NoSuchAccount)?;
        self.revoke_user_refresh(&account.user).await?;
        dispatch!(self, b => b.set_password(username, password_hash).await)
    }

    /// Removes an account and its user, with the user's WeChat bindings and refresh
    /// families (revoked first, removed by the purge). Tokens already issued to the user
    /// stop working at `/v1/me`. Returns the removed user.
    pub async fn remove_account(&self, username: &str) -> Result<User, StoreError> {
        if let Some(account) = self.account(username).await? {
            self.revoke_user_refresh(&account.user).await?;
        }
        dispatch!(self, b => b.remove_account(username).await)
    }

    /// The liveness check (`/healthz`): on sled, that the store answers and its writes reach
    /// the disk (a failed disk is the process's to recover from); on PostgreSQL, that the
    /// replica's pool is open (a database outage is not cured by restarting replicas).
    pub async fn check(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.check().await)
    }

    /// Records the mode (dev or production) a new store is created in, and refuses one
    /// created in the other mode.
    pub async fn claim_mode(&self, mode: crate::domain::KeyMode) -> Result<(), StoreError> {
        dispatch!(self, b => b.claim_mode(mode).await)
    }

    /// Records which `session-keys.secret` seals a PostgreSQL database's values, and
    /// refuses another key ([`StoreError::WrongSealingKey`]): every process that serves or
    /// changes the database must seal with one key. sled records none: one process at a
    /// time uses a data directory, and a lost key costs the stored session keys only (the
    /// clients log in again).
    pub async fn claim_sealing_key(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.claim_sealing_key().await)
    }

    /// Writes a probe and waits until it is durable (`/readyz`).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.check_writable().await)
    }

    /// Writes every record of the store to `out`, in the fixed order of [`export`]: the
    /// same data gives the same records on every backend. On PostgreSQL it reads one
    /// snapshot, so replicas may go on serving; sled admits no server meanwhile.
    ///
    /// The last record says how many came before it, so that an import can tell a whole
    /// export from one cut short. Returns the records written and those left out: on sled,
    /// unionid links, accounts and details of a user that is gone (left behind by a crash
    /// in the middle of a removal, and never used).
    pub async fn export(
        &self,
        out: &mut (dyn FnMut(Record) -> Result<(), StoreError> + Send),
    ) -> Result<export::Exported, StoreError> {
        let mut records = 0;
        let mut counted = |record: Record| {
            records += 1;
            out(record)
        };
        let skipped = dispatch!(unnoted self, b => b.export(&mut counted).await)?;
        out(Record::End { records })?;
        Ok(export::Exported { records: records + 1, skipped })
    }

    /// Reads an export into this store, which must hold no data ([`StoreError::NotEmpty`]);
    /// returns how many records it read, the first and last lines included. All or nothing:
    /// a bad record, or an export cut short (no last line), leaves the store empty, and the
    /// error names the line (records are numbered as lines, the header line 1). Durable
    /// when it returns.
    pub async fn import(
        &self,
        records: &mut (dyn Iterator<Item = Result<Record, StoreError>> + Send),
    ) -> Result<usize, StoreError> {
        let header = records.next().transpose().map_err(|e| export::at_line(1, e))?;
        let key_id = dispatch!(unnoted self, b => b.sealer().key_id().to_owned());
        export::check_header(header.as_ref(), &key_id).map_err(|e| export::at_line(1, e))?;
        let mut body = export::UntilEnd::new(records).map(|r| r.and_then(export::check_record));
        let imported = dispatch!(unnoted self, b => b.import(&mut body).await)?;
        Ok(imported + 1)
    }

    /// Makes everything written so far durable and logs the store's statistics (shutdown).
    pub async fn close(&self) -> Result<(), StoreError> {
        dispatch!(unnoted self, b => b.close().await)
    }
}
