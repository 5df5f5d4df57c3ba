//! The contract a store backend implements, in one trait per job so that each backend
//! keeps one file per trait (`users.rs`, `links.rs`, ...), and the two trees mirror each
//! other. [`super::Store`] dispatches to the configured backend statically (an enum), so no
//! future is boxed on the login path.
//!
//! Every future is `Send`: the server runs them on a multi-threaded runtime. What both
//! backends decide alike (what a returning login writes, who may bind what, what a
//! presented refresh token does, what the purge keeps) is decided by pure functions in the
//! modules beside this one (`users`, `links`, `tickets`, `refresh`, `meta`); a backend only
//! makes those decisions atomic and durable.
//!
//! The conformance suite in `tests/store` checks the contract against every backend.

use std::future::Future;

use super::{
    Account, AdminToken, BindTicket, Erasure, LoginRecord, NewAccount, Origin, PurgeBatch, RefreshGrant, RefreshId,
    Refreshed, Session, StoreError, StoredSessionKey, TicketId,
    events::{Event, EventFilter},
    export::Record,
    grants::{Grant, GrantId, GrantKind},
    outbox::Delivery,
    sealed::Sealer,
};
use crate::domain::{Controls, Details, Identity, KeyMode, User, UserId, WechatSession};
use time::OffsetDateTime;

/// A store backend: everything [`super::Store`] asks of one.
///
/// - The first login of an openid creates exactly one user, however many race, and answers
///   only once the user and binding are durable; so does every change of a binding, a
///   unionid link or an account.
/// - A login whose unionid belongs to a user first seen in another app joins that user.
/// - A returning login is visible to the very next call at once (a new session key
///   included), writes only what changed, and does not wait for durability.
/// - A layout newer than this build is refused at open (each backend's `open`).
pub(super) trait Backend:
    Users
    + Links
    + Tickets
    + Grants
    + Merges
    + Accounts
    + AdminTokens
    + Events
    + Outbox
    + RefreshTokens
    + Deletions
    + Transfer
    + Send
    + Sync
{
    /// The liveness check: that the backend can go on serving (not that every dependency
    /// is up).
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records the mode a new store is created in; [`StoreError::WrongMode`] for a store
    /// created in the other one ([`super::meta::agree`]).
    fn claim_mode(&self, mode: KeyMode) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records which sealing key seals the values when processes share the store, and
    /// refuses another ([`StoreError::WrongSealingKey`]); nothing for a one-process store.
    fn claim_sealing_key(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes a probe and waits until it is durable.
    fn check_writable(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes everything written so far durable and logs the backend's statistics.
    fn close(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What seals session keys, tickets and details at rest.
    fn sealer(&self) -> &Sealer;
}

/// Users, their identities and what they shared (`users.rs` in each backend).
pub(super) trait Users {
    /// Records a login of `session` through `appid`: a returning one (what changed,
    /// [`super::users::returning_changes`]), one that joins the user of its unionid, or,
    /// when `create` (the new user's roles), a first one. `None`: not bound, and not
    /// created.
    fn login(
        &self,
        appid: &str,
        session: &WechatSession,
        create: Option<&[String]>,
    ) -> impl Future<Output = Result<Option<LoginRecord>, StoreError>> + Send;

    /// The user with `id`, if any.
    fn user(&self, id: &UserId) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// The user bound to `openid` of `appid`, if any.
    fn user_by_openid(
        &self,
        appid: &str,
        openid: &str,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// The user a unionid leads to (the first that had it), if any.
    fn user_by_unionid(&self, unionid: &str) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// The users whose phone number has the pseudonym `phone`
    /// ([`crate::store::sealed::Sealer::pseudonym`] of its normalised form), at most 100.
    /// An entry may outlive a change of number by a crash: callers check the number itself.
    fn users_by_phone(&self, phone: &[u8; 16]) -> impl Future<Output = Result<Vec<UserId>, StoreError>> + Send;

    /// Up to `limit` users in id order, after `after` (from the first when `None`): the
    /// pages of the admin API's user list.
    fn users_after(
        &self,
        after: Option<&UserId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<User>, StoreError>> + Send;

    /// The newest session key of the user's identity in `appid`.
    fn session_key(
        &self,
        id: &UserId,
        appid: &str,
    ) -> impl Future<Output = Result<Option<StoredSessionKey>, StoreError>> + Send;

    /// What the user shared; empty when nothing (or no such user).
    fn details(&self, id: &UserId) -> impl Future<Output = Result<Details, StoreError>> + Send;

    /// Applies `change` to the user's controls (roles, custom claims, ban) and keeps the
    /// result, durably; [`StoreError::NoSuchUser`] when the user is gone. `change` may run
    /// more than once (a retried transaction).
    fn change_controls(
        &self,
        id: &UserId,
        change: impl Fn(&mut Controls) + Send + Sync,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Applies `change` to the user's details and keeps the result, durably, so that the
    /// user cannot be removed in between; [`StoreError::NoSuchUser`] when it is gone.
    /// `change` may run more than once (a retried transaction).
    fn change_details(
        &self,
        id: &UserId,
        change: impl Fn(&mut Details) + Send + Sync,
    ) -> impl Future<Output = Result<Details, StoreError>> + Send;
}

/// Who is bound to whom, by hand (`links.rs`): binds and unbinds. Logins link in
/// [`Users::login`].
pub(super) trait Links {
    /// Binds the identity in `session` to the user of account `username`, spending
    /// `ticket` when given (expired by `now`, the service's clock); the refusals are
    /// [`super::links::bind_target`]'s and [`super::tickets::spend`]'s. Durable when it
    /// returns.
    fn bind(
        &self,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<LoginRecord, StoreError>> + Send;

    /// Removes every identity and the unionid link of a user (none for a missing user), and
    /// returns the identities. Durable when it returns. The refresh families are revoked by
    /// [`super::Store::unbind`] before.
    fn unbind(&self, id: &UserId) -> impl Future<Output = Result<Vec<Identity>, StoreError>> + Send;
}

/// Bind tickets (`tickets.rs`).
/// Merging two users who are one person ([`super::merge`]).
pub(super) trait Merges {
    /// Moves everything of `from` to `into` as [`super::merge`] decides, atomically, and
    /// removes `from`; its refresh tokens then name `into` ([`Merges::merged_into`]).
    /// [`StoreError::MergeRefused`] with the reason, or [`StoreError::NoSuchUser`].
    fn merge_users(
        &self,
        into: &UserId,
        from: &UserId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// The user that `from` was merged into, if it was.
    fn merged_into(&self, from: &UserId) -> impl Future<Output = Result<Option<UserId>, StoreError>> + Send;
}

/// One-time grants of the browser and scan-login flows ([`super::grants`]).
pub(super) trait Grants {
    /// Keeps `grant` under `id` until it expires or is taken (replacing one stored there),
    /// and now and then sweeps expired ones as of `now`.
    fn put_grant(
        &self,
        id: &GrantId,
        grant: &Grant,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The payload of the live grant of `kind` under `id`, if any.
    fn grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Removes the grant of `kind` under `id` and answers its payload if it was live:
    /// of racing takers, one gets it. A grant of another kind stays.
    fn take_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Replaces the live grant of `kind` under `id` by `new` (same expiry) if its payload
    /// is still `expected`; `false` when it changed, was taken or expired.
    fn replace_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        expected: &str,
        new: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

pub(super) trait Tickets {
    /// Keeps a ticket until it expires or is spent, and now and then sweeps expired ones
    /// ([`super::tickets::sweep_due`]) as of `now`, the service's clock.
    fn put_ticket(
        &self,
        id: &TicketId,
        ticket: &BindTicket,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A ticket that is neither spent nor expired at `now` ([`super::tickets::live`]).
    fn ticket(
        &self,
        id: &TicketId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<BindTicket>, StoreError>> + Send;
}

/// Accounts made by an operator (`accounts.rs`). Durable when they return.
pub(super) trait Accounts {
    /// Adds accounts, each with a new user of its own, all or none (checked for
    /// duplicates among themselves by the caller); [`StoreError::AccountExists`],
    /// [`StoreError::PhoneTaken`]. A phone number is sealed, and indexed by its pseudonym.
    fn add_accounts(&self, accounts: &[NewAccount]) -> impl Future<Output = Result<Vec<User>, StoreError>> + Send;

    /// The account indexed under the phone pseudonym `phone`, if any (its number is
    /// checked by the caller: an index entry may be stale).
    fn account_by_phone(&self, phone: &[u8; 16]) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// Replaces (or with `None` removes) an account's phone number (normalised);
    /// [`StoreError::NoSuchAccount`], [`StoreError::PhoneTaken`].
    fn set_account_phone(
        &self,
        username: &str,
        phone: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The account named `username`, if any.
    fn account(&self, username: &str) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// Every account, by username (bytewise).
    fn accounts(&self) -> impl Future<Output = Result<Vec<Account>, StoreError>> + Send;

    /// Replaces the password hash; [`StoreError::NoSuchAccount`].
    fn set_password(&self, username: &str, password_hash: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the account and its user with everything of the user's; returns the user.
    fn remove_account(&self, username: &str) -> impl Future<Output = Result<User, StoreError>> + Send;
}

/// Admin API tokens (`admin_tokens.rs`). Durable when they return.
pub(super) trait AdminTokens {
    /// Keeps a new token; [`StoreError::AdminTokenExists`] when its name is taken.
    fn add_admin_token(&self, token: &AdminToken) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The token with `id`, revoked or not.
    fn admin_token(&self, id: &[u8; 16]) -> impl Future<Output = Result<Option<AdminToken>, StoreError>> + Send;

    /// Every token, by name (bytewise).
    fn admin_tokens(&self) -> impl Future<Output = Result<Vec<AdminToken>, StoreError>> + Send;

    /// Marks the token named `name` revoked at `at` (a revoked one keeps its first time);
    /// [`StoreError::NoSuchAdminToken`].
    fn revoke_admin_token(
        &self,
        name: &str,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<AdminToken, StoreError>> + Send;
}

/// The event log (`events.rs`), in the form of [`super::events`].
pub(super) trait Events {
    /// Keeps `events` and the webhook `deliveries` they need, in one atomic write. Does not
    /// wait for durability on sled (the next group commit makes them durable, as it does a
    /// returning login); one statement on PostgreSQL.
    fn append_events(
        &self,
        events: &[Event],
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The event with id `id`, if it is kept.
    fn event(&self, id: &uuid::Uuid) -> impl Future<Output = Result<Option<Event>, StoreError>> + Send;

    /// The events `filter` admits, newest first, at most its page size.
    fn events(&self, filter: &EventFilter) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Removes up to `limit` events from before `before`, oldest first; `done` when fewer
    /// were left.
    fn purge_events(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<PurgeBatch, StoreError>> + Send;
}

/// Erasure of the users who asked for it (`deletions.rs`). A user's pending deletion is in
/// its controls ([`Users::change_controls`] sets and clears it).
pub(super) trait Deletions {
    /// Users whose deletion is due at `now`, soonest first, at most `limit`. May name users
    /// already erased or no longer pending (an interrupted run): [`Deletions::erase`] says so.
    fn due_deletions(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<UserId>, StoreError>> + Send;

    /// Erases user `id` if its deletion is due at `now`: its WeChat bindings and unionid
    /// link, bind tickets, phone number and profile, and the address, user agent and
    /// details of its events; then the user itself, or, for an account's user, everything
    /// but the account. Durable when it returns; a run interrupted anywhere is finished by
    /// the next. Refresh families are revoked by [`super::Store::erase`] before.
    fn erase(&self, id: &UserId, now: OffsetDateTime) -> impl Future<Output = Result<Erasure, StoreError>> + Send;
}

/// The webhook outbox (`outbox.rs`), in the form of [`super::outbox`].
pub(super) trait Outbox {
    /// Claims up to `limit` deliveries due at `now`, soonest first, by moving each to
    /// `lease_until` in one atomic step per delivery, so that no other sender claims it
    /// until then. Returns them as claimed (`due_at` is `lease_until`).
    fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Ends the claim of `claimed`: removes it (`retry_at` `None`: sent, or given up), or
    /// makes it due again at `retry_at` with one more attempt counted. Nothing when the claim
    /// was lost (its lease ended and another sender claimed it).
    fn finish_delivery(
        &self,
        claimed: &Delivery,
        retry_at: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Refresh families (`refresh.rs`): one record per login, judged by
/// [`super::refresh::rotation`] and kept by [`super::refresh::purgeable`].
pub(super) trait RefreshTokens {
    /// Starts a family with its token `id` and where the login came from, and keeps the
    /// user's families near [`super::refresh::cap`]. Not waited for.
    fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        origin: &Origin,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        keep: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Presents `old` and does what [`super::refresh::rotation`] says, atomically: one of
    /// two presentations of a token rotates, and records `now` as the family's last
    /// refresh. Durable when it returns.
    fn rotate_refresh(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> impl Future<Output = Result<Refreshed, StoreError>> + Send;

    /// Revokes the family of `id` when [`super::refresh::revokes`] says so, and says whether
    /// it did. Durable when it returns.
    fn revoke_refresh(&self, id: &RefreshId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Revokes every family of the user. Durable when it returns.
    fn revoke_user_refresh(&self, user: &UserId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The user's [`super::refresh::live`] families at `now`, newest first.
    fn sessions(
        &self,
        user: &UserId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Revokes the user's family `family` if it is [`super::refresh::live`] at `now`, and
    /// says whether it was. Durable when it returns.
    fn revoke_session(
        &self,
        user: &UserId,
        family: &[u8; 16],
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Looks at up to `limit` families after the last batch's, and removes the
    /// [`super::refresh::purgeable`] ones.
    fn purge_refresh(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<PurgeBatch, StoreError>> + Send;
}

/// Moving a store between backends (`export.rs`), in the order and form of
/// [`super::export`].
pub(super) trait Transfer {
    /// Passes every record to `out`, the header first, but not the last line (the caller
    /// counts and writes it); returns how many were left out (links, accounts and details
    /// of a user that is gone).
    fn export(
        &self,
        out: &mut (dyn FnMut(Record) -> Result<(), StoreError> + Send),
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Reads checked records (the header already read, the last line not passed) into the
    /// store, which must hold no data, all or nothing; returns how many lines were read,
    /// the header included.
    fn import(
        &self,
        records: &mut (dyn Iterator<Item = Result<Record, StoreError>> + Send),
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}
