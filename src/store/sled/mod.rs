//! The embedded backend: one sled database in `WXAUTH_DATA_DIR`, one process.
//!
//! Trees (schema 2):
//! - `user_records`: user id (16 bytes) → the user and its newest session key, one compact
//!   record ([`record::UserRecord`], postcard)
//! - `openids`: `"{appid}:{openid}"` → user id; the binding a login looks up
//! - `meta`: `schema_version` → u32 big-endian
//!
//! Schema 1 (the first release) kept JSON users and session keys in two trees; opening
//! such a store migrates it once ([`migrate_from_v1`]).
//!
//! No write needs a cross-tree transaction: a first login writes the record, then the
//! binding by compare-and-swap (see [`SledStore::create`]); a returning login rewrites its
//! one record by compare-and-swap, and only when something changed. sled recovers a prefix
//! of its log, so the order of writes is the order in which they can survive a crash.
//!
//! Durability: a first login waits for a group commit ([`commit`]): sled's flush plus an
//! `fdatasync` of the database file, because sled's own flush ends in `sync_file_range`,
//! which survives `kill -9` but not a power loss. A returning login does not wait: sled's
//! background flusher (every 500 ms, ending in `fsync`) makes it durable lazily.

mod commit;
mod record;

use ::sled::IVec;
use time::OffsetDateTime;

use super::{
    LoginRecord, SCHEMA_VERSION, StoreError, StoredSessionKey, new_user, returning_update, session_key_update,
};
use crate::{
    config::SledSettings,
    domain::{User, UserId, WechatSession},
};
use commit::GroupCommit;
use record::UserRecord;

const SCHEMA_KEY: &[u8] = b"schema_version";

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
    meta: ::sled::Tree,
    commit: GroupCommit,
}

impl SledStore {
    pub(super) async fn open(settings: &SledSettings) -> Result<Self, StoreError> {
        let db = ::sled::Config::new().path(&settings.data_dir).cache_capacity(settings.cache_bytes).open()?;
        let meta = db.open_tree("meta")?;
        let records = db.open_tree("user_records")?;
        let version = match meta.compare_and_swap(SCHEMA_KEY, None::<&[u8]>, Some(&SCHEMA_VERSION.to_be_bytes()[..]))? {
            Ok(()) => SCHEMA_VERSION,
            Err(current) => decode_version(current.current.as_deref())?,
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found: version });
        }
        if version == 1 {
            migrate_from_v1(&db, &meta, &records)?;
        }
        Ok(Self {
            records,
            openids: db.open_tree("openids")?,
            commit: GroupCommit::start(db, &settings.data_dir).await?,
            meta,
        })
    }

    pub(super) async fn record_login(&self, appid: &str, session: &WechatSession) -> Result<LoginRecord, StoreError> {
        let now = OffsetDateTime::now_utc();
        let binding = binding_key(appid, &session.openid);
        let Some(id) = self.openids.get(&binding)? else {
            return self.create(&binding, appid, session, now).await;
        };
        let record = self.returning(&id, session, now)?;
        // The login that created this user may still be waiting for its flush (a double tap
        // with two codes): a token must not name a user that a crash could take back.
        if !self.commit.healthy() || self.commit.is_unflushed(&id) {
            self.commit.wait().await?;
        }
        Ok(record)
    }

    /// First login. The user and its session key are written first and the binding last,
    /// with a compare-and-swap that decides racing first logins: whoever finds a binding
    /// finds its user, and a crash in between leaves at most a user record that no binding
    /// points to, never a binding without its user. This costs three plain writes where a
    /// cross-tree transaction cost a lock, read tracking and a conflict check. A login that
    /// loses the race removes its records and continues as a returning login, but still
    /// waits for the group commit: the winner's user may not be durable yet.
    async fn create(
        &self,
        binding: &[u8],
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<LoginRecord, StoreError> {
        let user = new_user(UserId::new(), appid, session, now);
        let id = *user.id.as_bytes();
        let unflushed = self.commit.track(id);
        let key = StoredSessionKey { session_key: session.session_key.clone(), issued_at: now };
        self.records.insert(id, UserRecord::new(&user, Some(&key)).encode()?)?;
        let record = match self.openids.compare_and_swap(binding, None::<&[u8]>, Some(&id[..]))? {
            Ok(()) => LoginRecord { user, created: true },
            Err(lost) => {
                self.records.remove(id)?;
                let winner = lost.current.ok_or_else(|| StoreError::Corrupt("binding vanished".into()))?;
                self.returning(&winner, session, now)?
            }
        };
        self.commit.wait().await?;
        drop(unflushed);
        Ok(record)
    }

    /// A returning login: rewrites the record only when something changed, by
    /// compare-and-swap so that a concurrent login's change is never lost.
    fn returning(&self, id: &IVec, session: &WechatSession, now: OffsetDateTime) -> Result<LoginRecord, StoreError> {
        let user_id = UserId::from_bytes(
            id.as_ref().try_into().map_err(|_| StoreError::Corrupt("binding to a malformed user id".into()))?,
        );
        loop {
            let bytes = self.records.get(id)?.ok_or_else(|| StoreError::Corrupt("binding without user".into()))?;
            let stored = UserRecord::decode(&bytes)?;
            let (user, key) = (stored.user(user_id)?, stored.session_key()?);
            let new_user = returning_update(&user, session, now);
            let new_key = session_key_update(key.as_ref(), &session.session_key, now);
            if new_user.is_none() && new_key.is_none() {
                return Ok(LoginRecord { user, created: false });
            }
            let user = new_user.unwrap_or(user);
            let record = UserRecord::new(&user, new_key.as_ref().or(key.as_ref()));
            if self.records.compare_and_swap(id, Some(&bytes), Some(record.encode()?))?.is_ok() {
                return Ok(LoginRecord { user, created: false });
            }
        }
    }

    pub(super) fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.records.get(id.as_bytes())?.map(|bytes| UserRecord::decode(&bytes)?.user(*id)).transpose()
    }

    pub(super) fn session_key(&self, id: &UserId) -> Result<Option<StoredSessionKey>, StoreError> {
        match self.records.get(id.as_bytes())? {
            Some(bytes) => UserRecord::decode(&bytes)?.session_key(),
            None => Ok(None),
        }
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
fn migrate_from_v1(db: &::sled::Db, meta: &::sled::Tree, records: &::sled::Tree) -> Result<(), StoreError> {
    let json = |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("schema 1 {what}: {e}"));
    let (users, keys) = (db.open_tree("users")?, db.open_tree("session_keys")?);
    let mut migrated = 0u64;
    for entry in users.iter() {
        let (id, value) = entry?;
        let user: User = serde_json::from_slice(&value).map_err(|e| json("user", e))?;
        let key: Option<StoredSessionKey> =
            keys.get(&id)?.map(|k| serde_json::from_slice(&k).map_err(|e| json("session key", e))).transpose()?;
        records.insert(id, UserRecord::new(&user, key.as_ref()).encode()?)?;
        migrated += 1;
    }
    db.flush()?;
    db.drop_tree("users")?;
    db.drop_tree("session_keys")?;
    db.flush()?;
    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(target: "wxauth::store", users = migrated, "migrated the store from schema 1 to {SCHEMA_VERSION}");
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl SledStore {
    fn pause_commits(&self) -> commit::Pause {
        self.commit.pause()
    }
}
