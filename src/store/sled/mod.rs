//! The embedded backend: one sled database in `WXAUTH_DATA_DIR`, one process.
//!
//! Trees (schema 5; earlier layouts are migrated once at open, [`migrate`]):
//! - `users`: user id (16 bytes) → the user, its WeChat identities and each one's
//!   newest session key, one compact record ([`record::UserRecord`], postcard)
//! - `openids`: `"{appid}:{openid}"` → user id; the binding a login looks up
//! - `unionids`: unionid → user id; how a login from another app finds the same person
//! - `accounts`: username → user id and argon2id password hash ([`record::AccountRecord`])
//! - `bind_tickets`: SHA-256 of a ticket → what it stands for ([`record::TicketRecord`])
//! - `refresh_families`: user id ‖ family id → a refresh family, one record per login
//!   ([`refresh`])
//! - `details`: user id → the phone number and profile the user shared, sealed
//!   ([`record::DetailsRecord`]); apart from the user record, which every login rewrites
//! - `phones`: pseudonym of a phone number ‖ user id → nothing; finds the users who verified
//!   a number without storing it ([`crate::store::Store::users_by_phone`]). Since schema 7.
//! - `account_phones`: username → the account's phone number, sealed under its user's key;
//!   `phone_accounts`: pseudonym of the number → username, unique ([`accounts`])
//! - `grants`: SHA-256 of a grant's secret → kind, expiry, sealed payload ([`grants`]);
//!   the minutes-lived state of browser and scan logins
//! - `merged`: user id → the user it was merged into (`wxauth users merge`); its refresh
//!   tokens name it ([`merge`])
//! - `meta`: `schema_version` → u32 big-endian
//!
//! Files: one per part of the store's contract ([`crate::store::backend`]): `users`,
//! `links`, `tickets`, `accounts`, `refresh`, `export`, `meta`, mirrored by the PostgreSQL
//! backend; and what only sled needs: `record` (the values), `commit` (group commit),
//! `reopen` (recovery after an I/O error), `migrate` and `legacy` (earlier layouts).
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

mod accounts;
mod admin_tokens;
mod commit;
mod deletions;
mod events;
mod export;
mod grants;
mod legacy;
mod links;
mod merge;
mod meta;
mod migrate;
mod outbox;
mod record;
mod refresh;
mod reopen;
mod tickets;
mod users;
mod vault;
pub(super) use reopen::Reopening;

use std::sync::{Arc, Mutex, MutexGuard, atomic::AtomicI64};

use super::{SCHEMA_VERSION, StoreError, sealed::Sealer};
use crate::{
    config::SledSettings,
    domain::{User, UserId},
};
use commit::GroupCommit;
use record::{Keys, UserRecord};

const SCHEMA_KEY: &[u8] = b"schema_version";
const RECORDS: &str = "users";
const UNIONIDS: &str = "unionids";
pub(super) const DETAILS: &str = "details";
const PHONES: &str = "phones";
/// Schema 2's records, migrated into [`RECORDS`].
const V2_RECORDS: &str = "user_records";

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
    /// Username → the account's phone number, sealed ([`accounts`]).
    account_phones: ::sled::Tree,
    /// Pseudonym of an account's phone number → username ([`accounts`]).
    phone_accounts: ::sled::Tree,
    admin_tokens: ::sled::Tree,
    events: ::sled::Tree,
    events_by_user: ::sled::Tree,
    tickets: ::sled::Tree,
    /// One-time grants of the browser and scan-login flows ([`grants`]).
    grants: ::sled::Tree,
    /// Merged user id → the user it was merged into ([`merge`]).
    merged: ::sled::Tree,
    details: ::sled::Tree,
    /// Phone numbers' pseudonyms ‖ user ids (the module comment).
    phones: ::sled::Tree,
    /// Pending deletions by when they are due ([`deletions`]).
    deletions: ::sled::Tree,
    /// Webhook deliveries by when they are due ([`outbox`]).
    outbox: ::sled::Tree,
    meta: ::sled::Tree,
    commit: GroupCommit,
    /// Held while bindings, unionid links or accounts change (see the module comment).
    links: Arc<Mutex<()>>,
    /// Unix seconds of the last sweep of expired tickets.
    swept_at: Arc<AtomicI64>,
    /// Unix seconds of the last sweep of expired grants.
    grants_swept_at: Arc<AtomicI64>,
    /// Seals the session keys at rest.
    pub(in crate::store) sealer: Sealer,
    /// Seals each user's data under a key of that user ([`vault`]).
    vault: vault::Vault,
    /// Keys the openid and unionid indexes ([`vault::Index`]).
    index: vault::Index,
    refresh_families: ::sled::Tree,
    /// Logins since a user's families were last trimmed, by a hash of the user ([`refresh`]).
    trim: crate::store::refresh::TrimSchedule,
    /// Held while a refresh family rotates, is revoked, trimmed or purged ([`refresh`]).
    refresh: Arc<Mutex<()>>,
    purge_cursor: Arc<Mutex<refresh::PurgeCursor>>,
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
        if meta.contains_key(meta::IMPORTING_KEY)? {
            return Err(StoreError::Corrupt(format!(
                "an import into {} did not finish, so it holds part of an export: remove the directory and \
                 run `wxauth store import` again",
                settings.data_dir.display()
            )));
        }
        migrate::from(version, &db, &meta, &sealer)?;
        let vault = vault::Vault::open(&settings.data_dir)?;
        if version >= 7 && vault.is_empty() && !db.open_tree(RECORDS)?.is_empty() {
            // A directory restored without its keys: opening would read every user as
            // erased, and their next logins would make new users.
            return Err(StoreError::Corrupt(format!(
                "{} holds users but {} is missing or empty: restore it from the same backup as the \
                 data directory (docs/storage.md)",
                settings.data_dir.display(),
                settings.data_dir.join(vault::FILE).display()
            )));
        }
        let index = vault::Index::load_or_create(&meta)?;
        // Left behind if a migration from schema 2 stopped right after its last step.
        db.drop_tree(V2_RECORDS)?;
        let refresh_families = db.open_tree("refresh_families")?;
        let handle = db.clone();
        let store = Self {
            records: db.open_tree(RECORDS)?,
            openids: db.open_tree("openids")?,
            unionids: db.open_tree(UNIONIDS)?,
            accounts: db.open_tree("accounts")?,
            account_phones: db.open_tree("account_phones")?,
            phone_accounts: db.open_tree("phone_accounts")?,
            admin_tokens: db.open_tree("admin_tokens")?,
            events: db.open_tree("events")?,
            events_by_user: db.open_tree("events_by_user")?,
            tickets: db.open_tree("bind_tickets")?,
            grants: db.open_tree("grants")?,
            merged: db.open_tree("merged")?,
            details: db.open_tree(DETAILS)?,
            phones: db.open_tree(PHONES)?,
            deletions: db.open_tree("deletions")?,
            outbox: db.open_tree("outbox")?,
            commit: GroupCommit::start(db, &settings.data_dir).await?,
            meta,
            links: Arc::default(),
            swept_at: Arc::default(),
            grants_swept_at: Arc::default(),
            sealer,
            vault,
            index,
            refresh_families,
            trim: crate::store::refresh::TrimSchedule::new(),
            refresh: Arc::default(),
            purge_cursor: Arc::default(),
        };
        if version <= 6 {
            store.migrate_from_v6(&handle)?;
        }
        Ok(store)
    }

    /// The session keys of the user stored under `id`.
    fn keys<'a>(&'a self, id: &'a [u8]) -> Keys<'a> {
        Keys { sealer: &self.sealer, user: id }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
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
            let (slot, mut record) = self.open_user(id, &bytes)?.ok_or_else(|| StoreError::Corrupt(MISSING.into()))?;
            let out = change(&mut record)?;
            if self.records.compare_and_swap(id, Some(&bytes), Some(self.seal_user(id, slot, &record)?))?.is_ok() {
                return Ok((record.user(user_id)?, out));
            }
        }
    }

    /// The record of user `id` in `bytes` and the slot of its key; `None` when its key was
    /// destroyed (an erasure).
    fn open_user(&self, id: &[u8], bytes: &[u8]) -> Result<Option<(u32, UserRecord)>, StoreError> {
        match self.vault.open_value(vault::Purpose::User, &id_bytes(id)?, bytes)? {
            vault::Opened::Plain { slot, bytes } => Ok(Some((slot, UserRecord::decode(&bytes)?))),
            vault::Opened::Shredded => Ok(None),
            vault::Opened::NotSealed => Err(StoreError::Corrupt("a user record is not sealed".into())),
        }
    }

    /// The record of user `id`, if it has one that opens.
    fn read_user(&self, id: &[u8]) -> Result<Option<(u32, UserRecord)>, StoreError> {
        match self.records.get(id)? {
            Some(bytes) => self.open_user(id, &bytes),
            None => Ok(None),
        }
    }

    /// `record`, sealed under the key in `slot` of user `id`.
    fn seal_user(&self, id: &[u8], slot: u32, record: &UserRecord) -> Result<Vec<u8>, StoreError> {
        self.vault.seal(vault::Purpose::User, &id_bytes(id)?, slot, &record.encode()?)
    }

    /// The slot of the key user `id`'s data is sealed under; `None` when the user has no
    /// record (removed or erased, racing with this write): nothing new is sealed for them,
    /// since a key made now would outlive the erasure that already ran.
    fn user_slot(&self, id: &[u8; 16]) -> Result<Option<u32>, StoreError> {
        Ok(self.records.get(id)?.as_deref().and_then(vault::slot_of))
    }

    /// A new user's record, sealed under a new key of its own.
    fn seal_new_user(&self, id: &[u8], record: &UserRecord) -> Result<Vec<u8>, StoreError> {
        let slot = self.vault.new_slot(&id_bytes(id)?)?;
        self.seal_user(id, slot, record)
    }

    /// The key a binding of `openid` in `appid` is stored under: the app and a keyed hash
    /// of the openid, never the openid itself ([`vault`]).
    pub(super) fn binding_key(&self, appid: &str, openid: &str) -> Vec<u8> {
        binding_key(&self.index, appid, openid)
    }

    /// The key the link of `unionid` is stored under: a keyed hash of it.
    pub(super) fn unionid_key(&self, unionid: &str) -> [u8; 16] {
        self.index.pseudonym("unionid", unionid)
    }
}

impl SledStore {
    /// Writes what `write` writes (the details) with user `id`'s entry in the phone index
    /// moved from `old` to `new`: the new entry before, the old one removed after, so that a
    /// crash leaves at worst a stale entry, which lookups check away, never a kept number
    /// that cannot be found.
    fn indexing_phone(
        &self,
        id: &UserId,
        old: Option<[u8; 16]>,
        new: Option<[u8; 16]>,
        write: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(new) = new.filter(|n| old != Some(*n)) {
            self.phones.insert(phone_key(&new, id), &[][..])?;
        }
        write()?;
        if let Some(old) = old.filter(|o| new != Some(*o)) {
            self.phones.remove(phone_key(&old, id))?;
        }
        Ok(())
    }
}

pub(super) fn phone_key(pseudonym: &[u8; 16], id: &UserId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(pseudonym);
    key[16..].copy_from_slice(id.as_bytes());
    key
}

/// Why [`SledStore::update`] fails for a user that is gone.
const MISSING: &str = "a binding or account points at a missing user";

pub(super) fn id_bytes(id: &[u8]) -> Result<[u8; 16], StoreError> {
    id.try_into().map_err(|_| StoreError::Corrupt("malformed user id".into()))
}

pub(super) fn user_id(id: &[u8]) -> Result<UserId, StoreError> {
    id_bytes(id).map(UserId::from_bytes)
}

fn binding_key(index: &vault::Index, appid: &str, openid: &str) -> Vec<u8> {
    let openid = index.pseudonym("openid", &format!("{appid}:{openid}"));
    let mut key = Vec::with_capacity(appid.len() + 1 + openid.len());
    key.extend_from_slice(appid.as_bytes());
    key.push(b':');
    key.extend_from_slice(&openid);
    key
}

pub(super) fn decode_version(raw: Option<&[u8]>) -> Result<u32, StoreError> {
    raw.and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("schema_version".into()))
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
