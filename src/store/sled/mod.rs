//! The embedded backend: one sled database in `WXAUTH_DATA_DIR`, one process.
//!
//! Trees (schema 5):
//! - `user_records`: user id (16 bytes) → the user, its WeChat identities and each one's
//!   newest session key, one compact record ([`record::UserRecord`], postcard)
//! - `openids`: `"{appid}:{openid}"` → user id; the binding a login looks up
//! - `unionids`: unionid → user id; how a login from another app finds the same person
//! - `accounts`: username → user id and argon2id password hash ([`record::AccountRecord`])
//! - `bind_tickets`: SHA-256 of a ticket → what it stands for ([`record::TicketRecord`])
//! - `refresh_families`: user id ‖ family id → a refresh family, one record per login
//!   ([`refresh`])
//! - `details`: user id → the phone number and profile the user shared, sealed
//!   ([`record::DetailsRecord`]); apart from the user record, which every login rewrites
//! - `meta`: `schema_version` → u32 big-endian
//!
//! Earlier layouts are migrated once at open ([`migrate_from_v1`], [`migrate_from_v2`],
//! [`migrate_from_v3`], [`migrate_from_v4`]).
//!
//! Concurrency: sled admits one process per directory, so everything that changes who is
//! bound to whom (first logins, unionid links, binds, unbinds, accounts) runs under one
//! in-process lock ([`SledStore::links`]): a few microseconds of sled calls, never held
//! across a flush. Racing first logins, two apps logging the same person in at once and 50
//! binds of one account are then plain sequential decisions. A returning login takes no
//! lock: it rewrites its one record by compare-and-swap, and only when something changed.
//! sled recovers a prefix of its log, so writes are ordered record before binding: whoever
//! finds a binding finds its user.
//!
//! Durability: every change under the lock waits for a group commit ([`commit`]): sled's
//! flush plus an `fdatasync` of the database file, because sled's own flush ends in
//! `sync_file_range`, which survives `kill -9` but not a power loss. A returning login does
//! not wait: sled's background flusher (every 500 ms, ending in `fsync`) makes it durable
//! lazily.

mod commit;
mod export;
mod legacy;
mod record;
mod refresh;
mod reopen;
pub(super) use reopen::Reopening;

use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicI64, Ordering},
};

use ::sled::IVec;
use time::OffsetDateTime;

use super::{
    Account, BindTicket, LoginRecord, SCHEMA_VERSION, StoreError, StoredSessionKey, TicketId, returning_changes,
    sealed::Sealer,
};
use crate::{
    config::SledSettings,
    domain::{Details, Identity, KeyMode, SessionKey, User, UserId, WechatSession},
};
use commit::GroupCommit;
use record::{AccountRecord, DetailsRecord, IdentityRecord, Keys, TicketRecord, UserRecord};

const SCHEMA_KEY: &[u8] = b"schema_version";
const RECORDS: &str = "users";
const UNIONIDS: &str = "unionids";
const DETAILS: &str = "details";
/// Schema 2's records, migrated into [`RECORDS`].
const V2_RECORDS: &str = "user_records";
/// Expired tickets are swept at most this often, by whoever stores a ticket.
const TICKET_SWEEP_SECS: i64 = 60;

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        Self::Database(e.to_string())
    }
}

/// Handle to the sled database. Cheap to clone.
#[derive(Clone)]
pub(super) struct SledStore {
    records: ::sled::Tree,
    openids: ::sled::Tree,
    unionids: ::sled::Tree,
    accounts: ::sled::Tree,
    tickets: ::sled::Tree,
    details: ::sled::Tree,
    meta: ::sled::Tree,
    commit: GroupCommit,
    /// Held while bindings, unionid links or accounts change (see the module comment).
    links: Arc<Mutex<()>>,
    /// Unix seconds of the last sweep of expired tickets.
    swept_at: Arc<AtomicI64>,
    /// Seals the session keys at rest.
    pub(in crate::store) sealer: Sealer,
    refresh_families: ::sled::Tree,
    /// Logins since a user's families were last trimmed, by a hash of the user ([`refresh`]).
    trim_due: Arc<[std::sync::atomic::AtomicU16]>,
    /// Held while a refresh family rotates, is revoked, trimmed or purged ([`refresh`]).
    refresh: Arc<Mutex<()>>,
    purge_cursor: Arc<Mutex<refresh::PurgeCursor>>,
}

/// What the lock-free path of a login found.
enum Fast {
    /// Done: nothing else to write.
    Done(LoginRecord),
    /// The login changes a link (a first unionid) or raced with an unbind: take the lock.
    Slow,
}

impl SledStore {
    pub(super) async fn open(settings: &SledSettings, sealer: Sealer) -> Result<Self, StoreError> {
        // Before sled creates it with the process umask: it holds session keys.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&settings.data_dir)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", settings.data_dir.display())))?;
        let db = ::sled::Config::new().path(&settings.data_dir).cache_capacity(settings.cache_bytes).open()?;
        let meta = db.open_tree("meta")?;
        let version = match meta.compare_and_swap(SCHEMA_KEY, None::<&[u8]>, Some(&SCHEMA_VERSION.to_be_bytes()[..]))? {
            Ok(()) => SCHEMA_VERSION,
            Err(current) => decode_version(current.current.as_deref())?,
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
        }
        if meta.contains_key(IMPORTING_KEY)? {
            return Err(StoreError::Corrupt(format!(
                "an import into {} did not finish, so it holds part of an export: remove the directory and \
                 run `wxauth store import` again",
                settings.data_dir.display()
            )));
        }
        if version == 1 {
            migrate_from_v1(&db, &meta)?;
        }
        if version <= 2 {
            migrate_from_v2(&db, &meta)?;
        }
        if version <= 3 {
            migrate_from_v3(&db, &meta, &sealer)?;
        }
        if version <= 4 {
            migrate_from_v4(&db, &meta)?;
        }
        // Left behind if a migration from schema 2 stopped right after its last step.
        db.drop_tree(V2_RECORDS)?;
        let refresh_families = db.open_tree("refresh_families")?;
        Ok(Self {
            records: db.open_tree(RECORDS)?,
            openids: db.open_tree("openids")?,
            unionids: db.open_tree(UNIONIDS)?,
            accounts: db.open_tree("accounts")?,
            tickets: db.open_tree("bind_tickets")?,
            details: db.open_tree(DETAILS)?,
            commit: GroupCommit::start(db, &settings.data_dir).await?,
            meta,
            links: Arc::default(),
            swept_at: Arc::default(),
            sealer,
            refresh_families,
            trim_due: refresh::trim_counters(),
            refresh: Arc::default(),
            purge_cursor: Arc::default(),
        })
    }

    /// The session keys of the user stored under `id`.
    fn keys<'a>(&'a self, id: &'a [u8]) -> Keys<'a> {
        Keys { sealer: &self.sealer, user: id }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) async fn login(
        &self,
        appid: &str,
        session: &WechatSession,
        create: bool,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let binding = binding_key(appid, &session.openid);
        if let Some(id) = self.openids.get(&binding)?
            && let Fast::Done(record) = self.returning(&id, appid, session, now)?
        {
            // The login that created this user may still be waiting for its flush (a double
            // tap with two codes): a token must not name a user that a crash could take back.
            if !self.commit.healthy() || self.commit.is_unflushed(&id) {
                self.commit.wait().await?;
            }
            return Ok(Some(record));
        }
        let settled = {
            let _links = self.lock();
            self.settle(&binding, appid, session, create, now)?
        };
        let Some((record, unflushed)) = settled else { return Ok(None) };
        self.commit.wait().await?;
        drop(unflushed);
        Ok(Some(record))
    }

    /// A returning login without the lock: rewrites the record only when something
    /// changed, by compare-and-swap so that a concurrent login's change is never lost.
    fn returning(
        &self,
        id: &IVec,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<Fast, StoreError> {
        let user_id = user_id(id)?;
        loop {
            let Some(bytes) = self.records.get(id)? else { return Ok(Fast::Slow) };
            let mut record = UserRecord::decode(&bytes)?;
            let Some(changes) = self.apply_returning(id, &mut record, appid, session, now)? else {
                return Ok(Fast::Slow);
            };
            if changes.unionid.is_some() {
                return Ok(Fast::Slow);
            }
            if changes.is_empty() {
                return Ok(Fast::Done(LoginRecord { user: record.user(user_id)?, created: false }));
            }
            if self.records.compare_and_swap(id, Some(&bytes), Some(record.encode()?))?.is_ok() {
                return Ok(Fast::Done(LoginRecord { user: record.user(user_id)?, created: false }));
            }
        }
    }

    /// Applies to `record` what a returning login of `session` changes in it: a new session
    /// key (sealed), a `last_login_at` past the granularity. A new unionid is only reported,
    /// because linking it needs the lock. `None`: the record has no identity for this openid
    /// of `appid` (an unbind got there first).
    fn apply_returning(
        &self,
        id: &[u8],
        record: &mut UserRecord,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<Option<super::Changes>, StoreError> {
        let (last_login_at, unionid) = (record.last_login_at()?, record.unionid.clone());
        let keys = self.keys(id);
        let Some(identity) = record.identity_mut(appid).filter(|i| i.openid == session.openid) else {
            return Ok(None);
        };
        let changes = returning_changes(
            last_login_at,
            unionid.as_deref(),
            keys.open(appid, identity.session_key.as_ref())?.as_ref(),
            session,
            now,
        );
        if let Some(key) = &changes.session_key {
            identity.session_key = Some(keys.seal(appid, key)?);
        }
        if let Some(at) = changes.last_login_at {
            record.last_login_at = at.unix_timestamp_nanos();
        }
        Ok(Some(changes))
    }

    /// A login under the lock: the identity is bound already (a racer got there first, or
    /// a first unionid arrives), joins the user its unionid belongs to, or (when `create`)
    /// gets a new user. `None`: not bound and not created. What it returns must be made
    /// durable before it is acknowledged.
    fn settle(
        &self,
        binding: &[u8],
        appid: &str,
        session: &WechatSession,
        create: bool,
        now: OffsetDateTime,
    ) -> Result<Option<(LoginRecord, commit::Unflushed)>, StoreError> {
        let key = StoredSessionKey { session_key: session.session_key.clone(), issued_at: now };
        if let Some(id) = self.openids.get(binding)? {
            let unflushed = self.commit.track(id_bytes(&id)?);
            // The unionid, if new, is linked below (it needs the index, hence this path).
            let updated =
                self.update(&id, |record| Ok(self.apply_returning(&id, record, appid, session, now)?.is_some()));
            match updated {
                Ok((user, true)) => {
                    let user = self.learn_unionid(user, session.unionid.as_deref())?;
                    return Ok(Some((LoginRecord { user, created: false }, unflushed)));
                }
                // A binding whose user no longer has the identity (or no longer exists): an
                // unbind or account removal stopped by a crash between its writes. The
                // binding is what is stale; drop it and treat the openid as unbound.
                Ok((_, false)) => self.drop_stale_binding(binding, &id)?,
                Err(StoreError::Corrupt(e)) if e == MISSING => self.drop_stale_binding(binding, &id)?,
                Err(e) => return Err(e),
            }
        }
        if let Some(owner) = self.unionid_owner(session.unionid.as_deref())? {
            let unflushed = self.commit.track(id_bytes(&owner)?);
            // `false`: another openid of the same app, so not the same person after all.
            let joined = self.attach(&owner, appid, &session.openid, &key, now);
            match joined {
                Ok((user, true)) => {
                    self.openids.insert(binding, &owner)?;
                    tracing::info!(user_id = %user.id, appid, "a login joined the user of its unionid");
                    return Ok(Some((LoginRecord { user, created: false }, unflushed)));
                }
                Ok((user, false)) => tracing::warn!(
                    user_id = %user.id,
                    appid,
                    "a unionid names a user that has another openid of this app; not joining"
                ),
                Err(StoreError::Corrupt(e)) if e == MISSING => {}
                Err(e) => return Err(e),
            }
        }
        if !create {
            return Ok(None);
        }
        let id = UserId::new();
        let unflushed = self.commit.track(*id.as_bytes());
        let mut record = UserRecord::empty(now);
        let sealed = self.keys(id.as_bytes()).seal(appid, &key)?;
        record.identities.push(IdentityRecord::new(appid, &session.openid, Some(sealed)));
        self.records.insert(id.as_bytes(), record.encode()?)?;
        self.openids.insert(binding, &id.as_bytes()[..])?;
        let user = self.learn_unionid(record.user(id)?, session.unionid.as_deref())?;
        Ok(Some((LoginRecord { user, created: true }, unflushed)))
    }

    /// Adds the identity `openid` of `appid`, with its session key, to the user stored
    /// under `id`, unless the user already has an identity of that app (`false`).
    fn attach(
        &self,
        id: &[u8],
        appid: &str,
        openid: &str,
        key: &StoredSessionKey,
        now: OffsetDateTime,
    ) -> Result<(User, bool), StoreError> {
        self.update(id, |record| {
            if record.identity(appid).is_some() {
                return Ok(false);
            }
            let sealed = self.keys(id).seal(appid, key)?;
            record.identities.push(IdentityRecord::new(appid, openid, Some(sealed)));
            record.last_login_at = now.unix_timestamp_nanos();
            Ok(true)
        })
    }

    /// Gives `user` its first unionid, and links the unionid to it unless another user
    /// holds it already: then both are marked as sharing it, and a warning is logged. Two
    /// existing users are never merged silently. Called under the lock.
    fn learn_unionid(&self, user: User, unionid: Option<&str>) -> Result<User, StoreError> {
        let Some(unionid) = unionid.filter(|_| user.unionid.is_none()) else { return Ok(user) };
        let id = &user.id.as_bytes()[..];
        // Under the lock: nobody else changes the link between the read and the write.
        let other = match self.unionids.get(unionid)? {
            None => None,
            // Already ours: a crash came between linking the unionid and recording it.
            Some(current) if current == id => None,
            // A user that no longer exists (a removal stopped by a crash): the link is stale.
            Some(current) if !self.records.contains_key(&current)? => None,
            Some(current) => Some(user_id(&current)?),
        };
        if other.is_none() {
            self.unionids.insert(unionid, id)?;
        }
        let (user, _) = self.update(id, |record| {
            record.unionid = Some(unionid.to_owned());
            if let Some(other) = other.filter(|o| !record.unionid_shared_with.contains(o.as_bytes())) {
                record.unionid_shared_with.push(*other.as_bytes());
            }
            Ok(())
        })?;
        if let Some(other) = other {
            self.update(other.as_bytes(), |record| {
                if !record.unionid_shared_with.contains(user.id.as_bytes()) {
                    record.unionid_shared_with.push(*user.id.as_bytes());
                }
                Ok(())
            })?;
            tracing::warn!(
                user_id = %user.id,
                other_user_id = %other,
                "two existing users turned out to share a unionid; they are not merged (see `wxauth users show`)"
            );
        }
        Ok(user)
    }

    fn drop_stale_binding(&self, binding: &[u8], id: &[u8]) -> Result<(), StoreError> {
        tracing::warn!(user_id = %user_id(id)?, "dropping a binding to a user that no longer holds it");
        let _ = self.openids.compare_and_swap(binding, Some(id), None::<&[u8]>)?;
        Ok(())
    }

    fn unionid_owner(&self, unionid: Option<&str>) -> Result<Option<IVec>, StoreError> {
        match unionid {
            Some(u) => Ok(self.unionids.get(u)?),
            None => Ok(None),
        }
    }

    /// Changes one record by compare-and-swap; `change` may run more than once.
    fn update<T>(
        &self,
        id: &[u8],
        mut change: impl FnMut(&mut UserRecord) -> Result<T, StoreError>,
    ) -> Result<(User, T), StoreError> {
        let user_id = user_id(id)?;
        loop {
            let bytes = self.records.get(id)?.ok_or_else(|| StoreError::Corrupt(MISSING.into()))?;
            let mut record = UserRecord::decode(&bytes)?;
            let out = change(&mut record)?;
            if self.records.compare_and_swap(id, Some(&bytes), Some(record.encode()?))?.is_ok() {
                return Ok((record.user(user_id)?, out));
            }
        }
    }

    pub(super) async fn bind(
        &self,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
    ) -> Result<LoginRecord, StoreError> {
        let now = OffsetDateTime::now_utc();
        let (record, unflushed) = {
            let _links = self.lock();
            let account = self.accounts.get(username)?.ok_or(StoreError::NoSuchAccount)?;
            let owner = AccountRecord::decode(&account)?.user;
            let binding = binding_key(appid, &session.openid);
            let key = StoredSessionKey { session_key: session.session_key.clone(), issued_at: now };
            match self.openids.get(&binding)? {
                Some(bound) if bound != owner[..] => return Err(StoreError::AlreadyBound),
                // Bound to this account already: a retry, answered like a login.
                Some(_) => {}
                None => match self.records.get(owner)? {
                    None => return Err(StoreError::NoSuchAccount), // removal interrupted
                    Some(bytes) if UserRecord::decode(&bytes)?.identity(appid).is_some() => {
                        return Err(StoreError::AccountAlreadyBound);
                    }
                    Some(_) => {}
                },
            }
            // Spent only now: a refused bind leaves the ticket usable (another account, or
            // a corrected password).
            if let Some(ticket) = ticket {
                let spent = self.tickets.remove(ticket)?.map(|b| TicketRecord::decode(&b)).transpose()?;
                if spent.is_none_or(|t| t.expires_at <= now.unix_timestamp_nanos()) {
                    return Err(StoreError::TicketNotFound);
                }
            }
            let unflushed = self.commit.track(owner);
            // `settle` answers `None` only for a binding it found stale and dropped.
            if self.openids.get(&binding)?.is_some()
                && let Some((record, _)) = self.settle(&binding, appid, session, false, now)?
            {
                (record, unflushed)
            } else {
                let (user, attached) = self.attach(&owner, appid, &session.openid, &key, now)?;
                if !attached {
                    return Err(StoreError::AccountAlreadyBound);
                }
                self.openids.insert(binding, &owner[..])?;
                let user = self.learn_unionid(user, session.unionid.as_deref())?;
                (LoginRecord { user, created: false }, unflushed)
            }
        };
        self.commit.wait().await?;
        drop(unflushed);
        Ok(record)
    }

    pub(super) async fn unbind(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        let removed = {
            let _links = self.lock();
            self.unbind_locked(id)?
        };
        self.commit.wait().await?;
        Ok(removed)
    }

    fn unbind_locked(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        let me = &id.as_bytes()[..];
        if self.records.get(me)?.is_none() {
            return Ok(Vec::new());
        }
        let (_, (identities, unionid)) = self.update(me, |record| {
            let identities = std::mem::take(&mut record.identities);
            Ok((identities, record.unionid.take()))
        })?;
        for identity in &identities {
            // Only bindings that still point here: never another user's.
            let _ = self.openids.compare_and_swap(
                binding_key(&identity.appid, &identity.openid),
                Some(me),
                None::<&[u8]>,
            )?;
        }
        if let Some(unionid) = unionid {
            let _ = self.unionids.compare_and_swap(unionid, Some(me), None::<&[u8]>)?;
        }
        Ok(identities.into_iter().map(|i| Identity { appid: i.appid, openid: i.openid }).collect())
    }

    pub(super) fn put_ticket(&self, id: &TicketId, ticket: &BindTicket) -> Result<(), StoreError> {
        let record = TicketRecord {
            appid: ticket.appid.clone(),
            openid: ticket.session.openid.clone(),
            unionid: ticket.session.unionid.clone(),
            session_key: self
                .sealer
                .seal(ticket.session.session_key.expose(), id)
                .map_err(|e| StoreError::Database(e.to_string()))?,
            expires_at: ticket.expires_at.unix_timestamp_nanos(),
        };
        self.tickets.insert(id, record.encode()?)?;
        self.sweep_tickets()
    }

    /// Removes expired tickets, at most once per [`TICKET_SWEEP_SECS`]: there are at most
    /// as many as bind-mode logins of unbound people in a ticket's lifetime.
    fn sweep_tickets(&self) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let last = self.swept_at.load(Ordering::Relaxed);
        if now.unix_timestamp() - last < TICKET_SWEEP_SECS
            || self.swept_at.compare_exchange(last, now.unix_timestamp(), Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        for entry in self.tickets.iter() {
            let (key, value) = entry?;
            if TicketRecord::decode(&value).map_or(true, |t| t.expires_at <= now.unix_timestamp_nanos()) {
                self.tickets.remove(key)?;
            }
        }
        Ok(())
    }

    pub(super) fn ticket(&self, id: &TicketId) -> Result<Option<BindTicket>, StoreError> {
        let Some(bytes) = self.tickets.get(id)? else { return Ok(None) };
        let t = TicketRecord::decode(&bytes)?;
        let expires_at = record::time(t.expires_at)?;
        // A ticket whose key does not open (the key file was replaced) is as good as gone.
        let Some(session_key) = self.sealer.open(&t.session_key, id).filter(|_| expires_at > OffsetDateTime::now_utc())
        else {
            return Ok(None);
        };
        Ok(Some(BindTicket {
            appid: t.appid,
            session: WechatSession { openid: t.openid, unionid: t.unionid, session_key: SessionKey::new(session_key) },
            expires_at,
        }))
    }

    pub(super) fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.records.get(id.as_bytes())?.map(|bytes| UserRecord::decode(&bytes)?.user(*id)).transpose()
    }

    pub(super) fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<User>, StoreError> {
        match self.openids.get(binding_key(appid, openid))? {
            Some(id) => self.user(&user_id(&id)?),
            None => Ok(None),
        }
    }

    pub(super) fn session_key(&self, id: &UserId, appid: &str) -> Result<Option<StoredSessionKey>, StoreError> {
        match self.records.get(id.as_bytes())? {
            Some(bytes) => match UserRecord::decode(&bytes)?.identity(appid) {
                Some(identity) => self.keys(id.as_bytes()).open(appid, identity.session_key.as_ref()),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    pub(super) fn details(&self, id: &UserId) -> Result<Details, StoreError> {
        match self.details.get(id.as_bytes())? {
            Some(bytes) => DetailsRecord::open(&bytes, &self.sealer, id.as_bytes()),
            None => Ok(Details::default()),
        }
    }

    /// Changes a user's details under the lock, so that the user cannot be removed between
    /// the check and the write (which would leave details without a user).
    pub(super) async fn change_details(
        &self,
        id: &UserId,
        change: impl FnOnce(&mut Details),
    ) -> Result<Details, StoreError> {
        let details = {
            let _links = self.lock();
            if !self.records.contains_key(id.as_bytes())? {
                return Err(StoreError::NoSuchUser);
            }
            let mut details = self.details(id)?;
            change(&mut details);
            self.details.insert(id.as_bytes(), DetailsRecord::seal(&details, &self.sealer, id.as_bytes())?)?;
            details
        };
        self.commit.wait().await?;
        Ok(details)
    }

    pub(super) async fn add_account(&self, username: &str, password_hash: &str) -> Result<User, StoreError> {
        let now = OffsetDateTime::now_utc();
        let user = {
            let _links = self.lock();
            if self.accounts.contains_key(username)? {
                return Err(StoreError::AccountExists);
            }
            let id = UserId::new();
            let mut record = UserRecord::empty(now);
            record.account = Some(username.to_owned());
            self.records.insert(id.as_bytes(), record.encode()?)?;
            let account = AccountRecord {
                user: *id.as_bytes(),
                password_hash: password_hash.to_owned(),
                created_at: now.unix_timestamp_nanos(),
            };
            self.accounts.insert(username, account.encode()?)?;
            record.user(id)?
        };
        self.commit.wait().await?;
        Ok(user)
    }

    pub(super) fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.accounts.get(username)?.map(|bytes| account(username.to_owned(), &bytes)).transpose()
    }

    pub(super) fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.accounts
            .iter()
            .map(|entry| {
                let (name, bytes) = entry?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| StoreError::Corrupt("username".into()))?;
                account(name, &bytes)
            })
            .collect()
    }

    pub(super) async fn set_password(&self, username: &str, password_hash: &str) -> Result<(), StoreError> {
        {
            let _links = self.lock();
            let bytes = self.accounts.get(username)?.ok_or(StoreError::NoSuchAccount)?;
            let mut account = AccountRecord::decode(&bytes)?;
            account.password_hash = password_hash.to_owned();
            self.accounts.insert(username, account.encode()?)?;
        }
        self.commit.wait().await
    }

    pub(super) async fn remove_account(&self, username: &str) -> Result<User, StoreError> {
        let user = {
            let _links = self.lock();
            let bytes = self.accounts.get(username)?.ok_or(StoreError::NoSuchAccount)?;
            let id = UserId::from_bytes(AccountRecord::decode(&bytes)?.user);
            // Bindings, then the user, then the account: a crash in between leaves a state
            // that running the command again finishes (the user may already be gone).
            let user = self.user(&id)?;
            self.unbind_locked(&id)?;
            self.details.remove(id.as_bytes())?;
            self.records.remove(id.as_bytes())?;
            self.accounts.remove(username)?;
            let gone = || {
                let mut record = UserRecord::empty(OffsetDateTime::now_utc());
                record.account = Some(username.to_owned());
                record.user(id)
            };
            match user {
                Some(user) => user,
                None => gone()?,
            }
        };
        self.commit.wait().await?;
        Ok(user)
    }

    /// Reads come from cache, so after a failed flush the check flushes again itself:
    /// otherwise an instance taken out of rotation would never see a login that proves it
    /// recovered.
    pub(super) async fn check(&self) -> Result<(), StoreError> {
        if !self.commit.healthy() {
            self.commit.wait().await?;
        }
        decode_version(self.meta.get(SCHEMA_KEY)?.as_deref()).map(|_| ())
    }

    pub(super) async fn claim_mode(&self, mode: KeyMode) -> Result<(), StoreError> {
        let name = |mode| if mode == KeyMode::Dev { "dev" } else { "production" };
        let running = name(mode);
        // Not waited for: lost in a crash right after start, it is claimed again at the next.
        match self.meta.compare_and_swap(MODE_KEY, None::<&[u8]>, Some(running.as_bytes()))? {
            Ok(()) => Ok(()),
            Err(found) if found.current.as_deref() == Some(running.as_bytes()) => Ok(()),
            Err(found) => {
                let recorded = if found.current.as_deref() == Some(b"dev") { "dev" } else { "production" };
                Err(StoreError::WrongMode { recorded, running, setting: "WXAUTH_DATA_DIR" })
            }
        }
    }

    /// Writes a probe record and waits until it is durable: proof that writes work now.
    pub(super) async fn check_writable(&self) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp().to_be_bytes();
        self.meta.insert(WRITE_PROBE_KEY, &now)?;
        self.commit.wait().await
    }

    pub(super) async fn close(&self) -> Result<(), StoreError> {
        self.commit.wait().await?;
        let stats = self.commit.stats();
        tracing::info!(
            target: "wxauth::store",
            group_commits = stats.flushes,
            fsyncs = stats.fsyncs,
            "store closed"
        );
        Ok(())
    }
}

/// The meta key of the mode the store was created in.
const MODE_KEY: &[u8] = b"mode";

/// The meta key present while `wxauth store import` fills the store.
const IMPORTING_KEY: &[u8] = b"importing";

/// The meta key `/readyz` writes to.
const WRITE_PROBE_KEY: &[u8] = b"write_probe";

const MISSING: &str = "a binding or account points at a missing user";

fn account(username: String, bytes: &[u8]) -> Result<Account, StoreError> {
    let record = AccountRecord::decode(bytes)?;
    Ok(Account {
        username,
        user: UserId::from_bytes(record.user),
        password_hash: record.password_hash,
        created_at: record::time(record.created_at)?,
    })
}

fn id_bytes(id: &[u8]) -> Result<[u8; 16], StoreError> {
    id.try_into().map_err(|_| StoreError::Corrupt("malformed user id".into()))
}

fn user_id(id: &[u8]) -> Result<UserId, StoreError> {
    id_bytes(id).map(UserId::from_bytes)
}

fn binding_key(appid: &str, openid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(appid.len() + 1 + openid.len());
    key.extend_from_slice(appid.as_bytes());
    key.push(b':');
    key.extend_from_slice(openid.as_bytes());
    key
}

fn decode_version(raw: Option<&[u8]>) -> Result<u32, StoreError> {
    raw.and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("schema_version".into()))
}

/// Schema 1 → 2: each JSON user and its JSON session key become one record. The new
/// records are flushed before the old trees are dropped, and the version is written last,
/// so an interrupted migration simply runs again at the next start.
fn migrate_from_v1(db: &::sled::Db, meta: &::sled::Tree) -> Result<(), StoreError> {
    let records = db.open_tree(V2_RECORDS)?;
    let json = |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("schema 1 {what}: {e}"));
    let (users, keys) = (db.open_tree("users")?, db.open_tree("session_keys")?);
    let mut migrated = 0u64;
    for entry in users.iter() {
        let (id, value) = entry?;
        let user: legacy::V1User = serde_json::from_slice(&value).map_err(|e| json("user", e))?;
        let key: Option<StoredSessionKey> =
            keys.get(&id)?.map(|k| serde_json::from_slice(&k).map_err(|e| json("session key", e))).transpose()?;
        let record = legacy::V2Record::from_v1(&user, key.as_ref());
        records.insert(id, postcard::to_stdvec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?)?;
        migrated += 1;
    }
    db.flush()?;
    db.drop_tree("users")?;
    db.drop_tree("session_keys")?;
    db.flush()?;
    meta.insert(SCHEMA_KEY, &2u32.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(target: "wxauth::store", users = migrated, "migrated the store from schema 1 to 2");
    Ok(())
}

/// Schema 2 → 3: each record gets a list of identities (its one openid), and unionids get
/// their index. The new records go to a new tree, which is flushed before the version is
/// written and the old tree dropped: an interrupted migration starts over from the
/// untouched schema 2 tree at the next start. Two schema 2 users with one unionid (an
/// openid each in two apps) are marked as sharing it, not merged.
fn migrate_from_v2(db: &::sled::Db, meta: &::sled::Tree) -> Result<(), StoreError> {
    let (old, records, unionids) = (db.open_tree(V2_RECORDS)?, db.open_tree(RECORDS)?, db.open_tree(UNIONIDS)?);
    records.clear()?;
    unionids.clear()?;
    let mut migrated = 0u64;
    for entry in old.iter() {
        let (id, value) = entry?;
        let mut record = legacy::V2Record::decode(&value)?.upgrade();
        if let Some(unionid) = &record.unionid
            && let Err(taken) = unionids.compare_and_swap(unionid, None::<&[u8]>, Some(&id))?
        {
            let other = id_bytes(&taken.current.unwrap_or_default())?;
            record.unionid_shared_with.push(other);
            tracing::warn!(
                target: "wxauth::store",
                user_id = %user_id(&id)?,
                other_user_id = %UserId::from_bytes(other),
                "two users share a unionid; they are not merged (see `wxauth users show`)"
            );
        }
        records.insert(&id, record.encode()?)?;
        migrated += 1;
    }
    // The first user of each shared unionid learns about the later ones too.
    for entry in records.iter() {
        let (id, value) = entry?;
        for other in UserRecord::decode(&value)?.unionid_shared_with {
            let Some(bytes) = records.get(other)? else { continue };
            let mut theirs = UserRecord::decode(&bytes)?;
            if !theirs.unionid_shared_with.iter().any(|o| o[..] == id[..]) {
                theirs.unionid_shared_with.push(id_bytes(&id)?);
                records.insert(other, theirs.encode()?)?;
            }
        }
    }
    db.flush()?;
    meta.insert(SCHEMA_KEY, &3u32.to_be_bytes()[..])?;
    db.flush()?;
    db.drop_tree(V2_RECORDS)?;
    tracing::info!(target: "wxauth::store", users = migrated, "migrated the store from schema 2 to 3");
    Ok(())
}

/// Schema 3 → 4: session keys, stored in plaintext until now, are sealed
/// ([`super::sealed`]). Each record is rewritten on its own and a sealed key is recognisable,
/// so an interrupted migration resumes where it stopped; the version is written last.
/// Plaintext bind tickets live five minutes: they are dropped, not sealed.
fn migrate_from_v3(db: &::sled::Db, meta: &::sled::Tree, sealer: &Sealer) -> Result<(), StoreError> {
    let (records, tickets) = (db.open_tree(RECORDS)?, db.open_tree("bind_tickets")?);
    let mut sealed = 0u64;
    for entry in records.iter() {
        let (id, value) = entry?;
        let mut record = UserRecord::decode(&value)?;
        let keys = Keys { sealer, user: &id };
        let mut changed = false;
        for identity in &mut record.identities {
            if let Some((key, issued)) = identity.session_key.clone().filter(|(k, _)| !Sealer::is_sealed(k)) {
                let plain = StoredSessionKey { session_key: SessionKey::new(key), issued_at: record::time(issued)? };
                identity.session_key = Some(keys.seal(&identity.appid, &plain)?);
                changed = true;
                sealed += 1;
            }
        }
        if changed {
            records.insert(&id, record.encode()?)?;
        }
    }
    for entry in tickets.iter() {
        let (id, value) = entry?;
        if TicketRecord::decode(&value).map_or(true, |t| !Sealer::is_sealed(&t.session_key)) {
            tickets.remove(id)?;
        }
    }
    db.flush()?;
    meta.insert(SCHEMA_KEY, &4u32.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(target: "wxauth::store", session_keys = sealed, "migrated the store from schema 3 to 4 (session keys sealed)");
    Ok(())
}

/// Schema 5 keeps one record per refresh family instead of one per token, with a
/// revocation flag instead of separate revocation trees. The old records are dropped, not
/// converted: a refresh token stands for a login that `wx.login` repeats for free, so each
/// client logs in again once, and no revocation can be lost on the way.
fn migrate_from_v4(db: &::sled::Db, meta: &::sled::Tree) -> Result<(), StoreError> {
    let mut dropped = 0;
    for tree in ["refresh_tokens", "refresh_revoked", "refresh_cutoffs"] {
        dropped += db.open_tree(tree)?.len();
        db.drop_tree(tree)?;
    }
    db.flush()?;
    meta.insert(SCHEMA_KEY, &5u32.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(
        target: "wxauth::store",
        dropped,
        "migrated the store from schema 4 to 5 (one record per refresh family; clients log in again once)"
    );
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl SledStore {
    fn pause_commits(&self) -> commit::Pause {
        self.commit.pause()
    }

    fn fail_commits(&self, fail: bool) {
        self.commit.fail_flushes(fail);
    }
}
