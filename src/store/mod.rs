//! Where users, their WeChat identities, accounts, bind tickets and session keys live.
//!
//! The rest of wxauth talks to [`Store`] only. It is a struct over a private enum of
//! backends rather than a trait object: calls dispatch statically (no boxed futures on the
//! login path), and adding a backend is one enum variant whose missing match arms the
//! compiler lists. Its methods are `async` and mention no backend types, so a backend that
//! talks to a server (PostgreSQL) fits behind the same signatures. Backend-specific knobs
//! (directories, caches, flush policy) stay inside the backend's module and its settings.
//!
//! The contract every backend keeps, checked by the conformance suite in `tests/store`:
//! - the first login of an openid creates exactly one user, however many race, and answers
//!   only once the user and binding are durable; so does every change of a binding, a
//!   unionid link or an account;
//! - a login whose unionid belongs to a user first seen in another app joins that user;
//! - a returning login is visible to the very next call at once (a new session key
//!   included), writes only what changed, and does not wait for durability;
//! - a layout newer than this build is refused at open.

mod codec;
pub mod export;
mod postgres;
mod refresh;
pub mod sealed;
mod sled;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use self::export::Record;
use crate::{
    config::StoreSettings,
    domain::{Dated, Details, Identity, PhoneNumber, Profile, SessionKey, User, UserId, WechatSession},
};

/// Layout version written by this build. Bump it with a migration when the layout changes.
pub const SCHEMA_VERSION: u32 = 5;

/// `last_login_at` is rewritten only when the stored value is at least this old, so that a
/// burst of logins by one person costs no writes. It is therefore accurate to 5 minutes.
pub const LAST_LOGIN_GRANULARITY: Duration = Duration::minutes(5);

/// Errors of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, lock held by another process).
    #[error("database error: {0}")]
    Database(String),
    /// The data was written by a newer wxauth.
    #[error("the store has schema version {found}; this build understands up to {supported}")]
    SchemaTooNew {
        /// Version found.
        found: u32,
        /// The newest version this build understands (per backend).
        supported: u32,
    },
    /// A record could not be decoded, or a binding points at a missing user.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The openid is bound to another user.
    #[error("this WeChat identity is already bound to another user")]
    AlreadyBound,
    /// The account already has another openid of the same app.
    #[error("this account is already bound to another WeChat identity of this mini-program")]
    AccountAlreadyBound,
    /// No account has this username.
    #[error("no account has this username")]
    NoSuchAccount,
    /// An account with this username exists.
    #[error("an account with this username already exists")]
    AccountExists,
    /// The bind ticket is unknown, spent or expired.
    #[error("the bind ticket is unknown, already used or expired")]
    TicketNotFound,
    /// The store was created by a server in the other mode (dev or production).
    #[error(
        "this store was created in {recorded} mode and this server runs in {running} mode; dev mode logs \
         anyone in as anyone, so the two never share users: use another {setting}"
    )]
    WrongMode {
        /// The mode the store was created in.
        recorded: &'static str,
        /// The mode of this server.
        running: &'static str,
        /// The setting that names the store (`WXAUTH_DATA_DIR`, `WXAUTH_DATABASE_URL`).
        setting: &'static str,
    },
    /// The database holds values sealed with another `session-keys.secret` than this
    /// process's: replicas would not read each other's, and this one none of the others'.
    #[error(
        "this database was sealed with session-key encryption key {recorded}, and the session-keys.secret \
         in WXAUTH_KEYS_DIR is key {found}: its session keys, phone numbers and profiles would not open here. \
         Every replica needs the same file: copy session-keys.secret from the keys directory of the replica \
         that first served this database into this one's WXAUTH_KEYS_DIR"
    )]
    WrongSealingKey {
        /// The id of the key the database records ([`sealed::Sealer::key_id`]).
        recorded: String,
        /// The id of this process's key.
        found: String,
    },
    /// No user has this id (it was removed meanwhile).
    #[error("no such user")]
    NoSuchUser,
    /// `wxauth store import` was given a store that holds data.
    #[error("the store already holds data: import only into an empty store (a new WXAUTH_DATA_DIR or database)")]
    NotEmpty,
    /// A login that may create users did not create one (a backend bug).
    #[error("the store did not create a user for a first login")]
    NotCreated,
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
    /// The argon2id PHC string of the password.
    pub password_hash: String,
    /// When the account was added.
    pub created_at: OffsetDateTime,
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
/// verifier`. The family's one record is found by user and family (a UUID v7, so a user's
/// families sort by age), and holds the current generation and only the SHA-256 of its
/// verifier (256 random bits). The user id is no secret (it is the access token's `sub`);
/// it lets a backend keep a user's families together, so that the per-user cap and
/// revocations find them without an index to maintain on every login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshId {
    /// The user the family belongs to.
    pub user: UserId,
    /// The family.
    pub family: [u8; 16],
    /// Which token of the family: 0 for the login's, one more for each refresh.
    pub generation: u32,
    /// SHA-256 of the token's secret part.
    pub verifier_hash: [u8; 32],
}

/// What a refresh token stands for: the login it continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshGrant {
    /// The user.
    pub user: UserId,
    /// The identity the family's first login came through.
    pub identity: Identity,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The token was spent and its successor (the next generation) stored in its place.
    Rotated(RefreshGrant),
    /// No such token: never issued, or purged after it expired.
    Unknown,
    /// The token had been spent already (an older generation): someone replayed it, so its
    /// family (the newest token included) is now revoked.
    Reused,
    /// The family was revoked before (logout, logout-all, an earlier reuse, an unbind, a
    /// password change).
    Revoked,
    /// The token expired.
    Expired,
}

/// One batch of the purge of dead refresh families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeBatch {
    /// Records removed by this batch.
    pub removed: usize,
    /// Whether this batch finished a pass over every record; the next starts over.
    pub done: bool,
}

/// Handle to the configured backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sled(std::sync::Arc<sled::Reopening>),
    Postgres(postgres::PgStore),
}

impl Store {
    /// Opens (or creates) the store the settings name, sealing session keys with `sealer`.
    /// Must run inside a tokio runtime.
    pub async fn open(settings: &StoreSettings, sealer: sealed::Sealer) -> Result<Self, StoreError> {
        let backend = match settings {
            StoreSettings::Sled(s) => Backend::Sled(sled::Reopening::open(s, sealer).await?),
            StoreSettings::Postgres(s) => Backend::Postgres(postgres::PgStore::open(s, sealer).await?),
        };
        Ok(Self { backend })
    }

    /// Records a successful login of `session` for `appid`, creating the user when the
    /// openid is new (registration `auto`).
    ///
    /// The first login of an openid creates the user and answers once it is durable. Later
    /// logins update only what changed (a new session key, a unionid, a `last_login_at`
    /// older than [`LAST_LOGIN_GRANULARITY`]) and do not wait for the disk.
    pub async fn record_login(&self, appid: &str, session: &WechatSession) -> Result<LoginRecord, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.login(appid, session, true).await)?.ok_or(StoreError::NotCreated),
            Backend::Postgres(p) => p.login(appid, session, true).await?.ok_or(StoreError::NotCreated),
        }
    }

    /// Like [`Store::record_login`], but never creates a user (registration `bind`): `None`
    /// when the openid is not bound and its unionid (if any) belongs to no user.
    pub async fn login_if_bound(
        &self,
        appid: &str,
        session: &WechatSession,
    ) -> Result<Option<LoginRecord>, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.login(appid, session, false).await),
            Backend::Postgres(p) => p.login(appid, session, false).await,
        }
    }

    /// Binds the identity in `session` (of `appid`) to the user of account `username`, and
    /// spends `ticket` when the identity came from one. Binding an identity to the account
    /// it is already bound to succeeds again.
    pub async fn bind(
        &self,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
    ) -> Result<LoginRecord, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.bind(appid, session, username, ticket).await),
            Backend::Postgres(p) => p.bind(appid, session, username, ticket).await,
        }
    }

    /// Removes every WeChat identity (and the unionid link) of a user, and revokes the
    /// user's refresh families first: binding the same identity again later must not bring
    /// an old session back. The user and its account stay. Returns the identities that
    /// were removed.
    pub async fn unbind(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        self.revoke_user_refresh(id).await?;
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.unbind(id).await),
            Backend::Postgres(p) => p.unbind(id).await,
        }
    }

    /// Keeps a bind ticket until it expires or is spent.
    pub async fn put_ticket(&self, id: &TicketId, ticket: &BindTicket) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.put_ticket(id, ticket)),
            Backend::Postgres(p) => p.put_ticket(id, ticket).await,
        }
    }

    /// A bind ticket that is neither spent nor expired.
    pub async fn ticket(&self, id: &TicketId) -> Result<Option<BindTicket>, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.ticket(id)),
            Backend::Postgres(p) => p.ticket(id).await,
        }
    }

    /// The user with `id`, if any.
    pub async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.user(id)),
            Backend::Postgres(p) => p.user(id).await,
        }
    }

    /// The user bound to `openid` of `appid`, if any.
    pub async fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.user_by_openid(appid, openid)),
            Backend::Postgres(p) => p.user_by_openid(appid, openid).await,
        }
    }

    /// The newest session key of a user in `appid`. Never sent to clients; for decrypting
    /// open data.
    pub async fn session_key(&self, id: &UserId, appid: &str) -> Result<Option<StoredSessionKey>, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.session_key(id, appid)),
            Backend::Postgres(p) => p.session_key(id, appid).await,
        }
    }

    /// What the user shared through open data; empty when nothing (or no such user).
    pub async fn details(&self, id: &UserId) -> Result<Details, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.details(id)),
            Backend::Postgres(p) => p.details(id).await,
        }
    }

    /// Keeps a verified phone number on a user, replacing any earlier one. Durable when it
    /// returns; [`StoreError::NoSuchUser`] when the user is gone.
    pub async fn set_phone(&self, id: &UserId, phone: Dated<PhoneNumber>) -> Result<Details, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.change_details(id, |d| d.phone = Some(phone)).await),
            Backend::Postgres(p) => p.change_details(id, |d| d.phone = Some(phone.clone())).await,
        }
    }

    /// Keeps a user's WeChat profile, replacing any earlier one. Durable when it returns;
    /// [`StoreError::NoSuchUser`] when the user is gone.
    pub async fn set_profile(&self, id: &UserId, profile: Dated<Profile>) -> Result<Details, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.change_details(id, |d| d.profile = Some(profile)).await),
            Backend::Postgres(p) => p.change_details(id, |d| d.profile = Some(profile.clone())).await,
        }
    }

    /// Starts a refresh-token family (a login) with its first token, `id` (generation 0),
    /// valid until `expires_at`. One record, not waited for: a token lost in a crash costs
    /// the client a `wx.login`, and logins stay free of flushes. The user keeps about `keep`
    /// families: the oldest beyond are removed, at once on PostgreSQL, in batches on sled
    /// (never more than twice `keep`), so that logins repeated without end cannot grow the
    /// store.
    pub async fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        keep: usize,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.start_refresh(id, grant, now, expires_at, keep)),
            Backend::Postgres(p) => p.start_refresh(id, grant, now, expires_at, keep).await,
        }
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
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.rotate_refresh(old, next_verifier_hash, now, expires_at).await),
            Backend::Postgres(p) => p.rotate_refresh(old, next_verifier_hash, now, expires_at).await,
        }
    }

    /// Revokes the family of refresh token `id`; nothing happens for a token that is not
    /// one of its family's. Durable when it returns.
    pub async fn revoke_refresh(&self, id: &RefreshId) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.revoke_refresh(id).await),
            Backend::Postgres(p) => p.revoke_refresh(id).await,
        }
    }

    /// Revokes every refresh family of a user. Durable when it returns.
    pub async fn revoke_user_refresh(&self, user: &UserId) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.revoke_user_refresh(user).await),
            Backend::Postgres(p) => p.revoke_user_refresh(user).await,
        }
    }

    /// Looks at up to `limit` refresh families, continuing where the previous batch
    /// stopped, and removes those that can no longer be used at `now`: expired (revoked
    /// ones included, which answer "revoked" until then), or of a user that is gone.
    /// Bounded, so that a purge never holds the store for long.
    pub async fn purge_refresh(&self, now: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.purge_refresh(now, limit)),
            Backend::Postgres(p) => p.purge_refresh(now, limit).await,
        }
    }

    /// Adds an account with a new user of its own. Durable when it returns.
    pub async fn add_account(&self, username: &str, password_hash: &str) -> Result<User, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.add_account(username, password_hash).await),
            Backend::Postgres(p) => p.add_account(username, password_hash).await,
        }
    }

    /// The account named `username`, if any.
    pub async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.account(username)),
            Backend::Postgres(p) => p.account(username).await,
        }
    }

    /// Every account, by username.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.accounts()),
            Backend::Postgres(p) => p.accounts().await,
        }
    }

    /// Replaces an account's password hash, after revoking the refresh families of its
    /// user (a password is changed because someone else may know it). Durable when it
    /// returns.
    pub async fn set_password(&self, username: &str, password_hash: &str) -> Result<(), StoreError> {
        let account = self.account(username).await?.ok_or(StoreError::NoSuchAccount)?;
        self.revoke_user_refresh(&account.user).await?;
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.set_password(username, password_hash).await),
            Backend::Postgres(p) => p.set_password(username, password_hash).await,
        }
    }

    /// Removes an account and its user, with the user's WeChat bindings and refresh
    /// families (revoked first, removed by the purge). Tokens already issued to the user
    /// stop working at `/v1/me`. Returns the removed user.
    pub async fn remove_account(&self, username: &str) -> Result<User, StoreError> {
        if let Some(account) = self.account(username).await? {
            self.revoke_user_refresh(&account.user).await?;
        }
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.remove_account(username).await),
            Backend::Postgres(p) => p.remove_account(username).await,
        }
    }

    /// The liveness check (`/healthz`): on sled, that the store answers and its writes reach
    /// the disk (a failed disk is the process's to recover from); on PostgreSQL, that the
    /// replica's pool is open (a database outage is not cured by restarting replicas).
    pub async fn check(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.check().await),
            Backend::Postgres(p) => p.check().await,
        }
    }

    /// Records the mode (dev or production) a new store is created in, and refuses one
    /// created in the other mode.
    pub async fn claim_mode(&self, mode: crate::domain::KeyMode) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.claim_mode(mode).await),
            Backend::Postgres(p) => p.claim_mode(mode).await,
        }
    }

    /// Records which `session-keys.secret` seals a PostgreSQL database's values, and
    /// refuses another key ([`StoreError::WrongSealingKey`]): every process that serves or
    /// changes the database must seal with one key. sled records none: one process at a
    /// time uses a data directory, and a lost key costs the stored session keys only (the
    /// clients log in again).
    pub async fn claim_sealing_key(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(_) => Ok(()),
            Backend::Postgres(p) => p.claim_sealing_key().await,
        }
    }

    /// Writes a probe and waits until it is durable (`/readyz`).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.note(r.get()?.check_writable().await),
            Backend::Postgres(p) => p.check_writable().await,
        }
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
        let skipped = match &self.backend {
            Backend::Sled(r) => r.get()?.export(&mut counted)?,
            Backend::Postgres(p) => {
                p.export(&mut counted).await?;
                0
            }
        };
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
        let key_id = match &self.backend {
            Backend::Sled(r) => r.get()?.sealer.key_id().to_owned(),
            Backend::Postgres(p) => p.sealer.key_id().to_owned(),
        };
        export::check_header(header.as_ref(), &key_id).map_err(|e| export::at_line(1, e))?;
        let mut body = export::UntilEnd::new(records).map(|r| r.and_then(export::check_record));
        let imported = match &self.backend {
            Backend::Sled(r) => r.get()?.import(&mut body).await?,
            Backend::Postgres(p) => p.import(&mut body).await?,
        };
        Ok(imported + 1)
    }

    /// Makes everything written so far durable and logs the store's statistics (shutdown).
    pub async fn close(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(r) => r.get()?.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }
}

/// What a returning login changes in a stored identity and user. Shared by the backends
/// so that they agree on "only what changed".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Changes {
    /// `last_login_at`, when the stored value is at least [`LAST_LOGIN_GRANULARITY`] old.
    last_login_at: Option<OffsetDateTime>,
    /// The session key, when WeChat sent a different one.
    session_key: Option<StoredSessionKey>,
    /// The unionid, when WeChat sent one for a user that had none.
    unionid: Option<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a returning login must write, given what is stored.
fn returning_changes(
    last_login_at: OffsetDateTime,
    unionid: Option<&str>,
    key: Option<&StoredSessionKey>,
    session: &WechatSession,
    now: OffsetDateTime,
) -> Changes {
    Changes {
        last_login_at: (now - last_login_at >= LAST_LOGIN_GRANULARITY).then_some(now),
        session_key: match key {
            Some(k) if k.session_key == session.session_key => None,
            _ => Some(StoredSessionKey { session_key: session.session_key.clone(), issued_at: now }),
        },
        // A unionid, once received, is kept: later answers without one change nothing.
        unionid: if unionid.is_none() { session.unionid.clone() } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(unionid: Option<&str>, key: &str) -> WechatSession {
        WechatSession {
            openid: "o1".into(),
            unionid: unionid.map(str::to_owned),
            session_key: SessionKey::new(key.into()),
        }
    }

    #[test]
    fn a_returning_login_changes_only_what_changed() {
        let t0 = OffsetDateTime::now_utc();
        let key = StoredSessionKey { session_key: SessionKey::new("k".into()), issued_at: t0 };
        let soon = t0 + Duration::seconds(10);
        assert!(returning_changes(t0, None, Some(&key), &session(None, "k"), soon).is_empty());
        let c = returning_changes(t0, None, Some(&key), &session(Some("u1"), "k"), soon);
        assert_eq!(c, Changes { unionid: Some("u1".into()), ..Changes::default() });
        let later = t0 + LAST_LOGIN_GRANULARITY;
        let c = returning_changes(t0, None, Some(&key), &session(None, "k"), later);
        assert_eq!(c, Changes { last_login_at: Some(later), ..Changes::default() });
        // A unionid once received is kept when a later answer lacks it, or names another.
        assert!(returning_changes(t0, Some("u1"), Some(&key), &session(None, "k"), soon).is_empty());
        assert!(returning_changes(t0, Some("u1"), Some(&key), &session(Some("u2"), "k"), soon).is_empty());
    }

    #[test]
    fn a_session_key_is_written_only_when_wechat_sent_a_different_one() {
        let t0 = OffsetDateTime::now_utc();
        let key = StoredSessionKey { session_key: SessionKey::new("k1".into()), issued_at: t0 };
        let later = t0 + Duration::seconds(1);
        assert_eq!(returning_changes(t0, None, Some(&key), &session(None, "k1"), later).session_key, None);
        let changed = returning_changes(t0, None, Some(&key), &session(None, "k2"), later).session_key.unwrap();
        assert_eq!((changed.session_key.expose(), changed.issued_at), ("k2", later));
        assert!(returning_changes(t0, None, None, &session(None, "k1"), later).session_key.is_some());
    }
}
