//! The embedded backend: one sled database in `WXAUTH_DATA_DIR`, one process.
//!
//! Trees:
//! - `users`: user id (16 bytes) → [`User`] as JSON
//! - `openids`: `"{appid}:{openid}"` → user id; the binding a login looks up
//! - `session_keys`: user id → [`StoredSessionKey`] as JSON; only the newest is kept
//! - `meta`: `schema_version` → u32 big-endian
//!
//! No write needs a cross-tree transaction: a first login writes the user, then its session
//! key, then the binding by compare-and-swap (see [`SledStore::create`]); a returning login
//! rewrites single keys. sled recovers a prefix of its log, so the order of writes is the
//! order in which they can survive a crash.
//!
//! Durability: a first login waits for a group commit ([`commit`]): sled's flush plus an
//! `fdatasync` of the database file, because sled's own flush ends in `sync_file_range`,
//! which survives `kill -9` but not a power loss. A returning login does not wait: sled's
//! background flusher (every 500 ms, ending in `fsync`) makes it durable lazily.

mod commit;

use ::sled::IVec;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    LoginRecord, SCHEMA_VERSION, StoreError, StoredSessionKey, new_user, returning_update, session_key_update,
};
use crate::{
    config::SledSettings,
    domain::{User, UserId, WechatSession},
};
use commit::GroupCommit;

const SCHEMA_KEY: &[u8] = b"schema_version";

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        Self::Database(e.to_string())
    }
}

/// Handle to the sled database. Cheap to clone.
#[derive(Clone)]
pub(super) struct SledStore {
    users: ::sled::Tree,
    openids: ::sled::Tree,
    session_keys: ::sled::Tree,
    meta: ::sled::Tree,
    commit: GroupCommit,
}

impl SledStore {
    pub(super) async fn open(settings: &SledSettings) -> Result<Self, StoreError> {
        let db = ::sled::Config::new().path(&settings.data_dir).cache_capacity(settings.cache_bytes).open()?;
        let meta = db.open_tree("meta")?;
        let version = match meta.compare_and_swap(SCHEMA_KEY, None::<&[u8]>, Some(&SCHEMA_VERSION.to_be_bytes()[..]))? {
            Ok(()) => SCHEMA_VERSION,
            Err(current) => decode_version(current.current.as_deref())?,
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found: version });
        }
        Ok(Self {
            users: db.open_tree("users")?,
            openids: db.open_tree("openids")?,
            session_keys: db.open_tree("session_keys")?,
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
        self.users.insert(id, encode(&user)?)?;
        let key = StoredSessionKey { session_key: session.session_key.clone(), issued_at: now };
        self.session_keys.insert(id, encode(&key)?)?;
        let record = match self.openids.compare_and_swap(binding, None::<&[u8]>, Some(&id[..]))? {
            Ok(()) => LoginRecord { user, created: true },
            Err(lost) => {
                self.users.remove(id)?;
                self.session_keys.remove(id)?;
                let winner = lost.current.ok_or_else(|| StoreError::Corrupt("binding vanished".into()))?;
                self.returning(&winner, session, now)?
            }
        };
        self.commit.wait().await?;
        drop(unflushed);
        Ok(record)
    }

    /// A returning login: writes only what changed, one key at a time, no transaction.
    fn returning(&self, id: &IVec, session: &WechatSession, now: OffsetDateTime) -> Result<LoginRecord, StoreError> {
        let user = loop {
            let bytes = self.users.get(id)?.ok_or_else(|| StoreError::Corrupt("binding without user".into()))?;
            let stored: User = decode(&bytes)?;
            let Some(updated) = returning_update(&stored, session, now) else { break stored };
            // Compare-and-swap: a concurrent writer's change to the record is never lost.
            if self.users.compare_and_swap(id, Some(&bytes), Some(encode(&updated)?))?.is_ok() {
                break updated;
            }
        };
        let stored_key = self.session_keys.get(id)?.map(|bytes| decode(&bytes)).transpose()?;
        if let Some(record) = session_key_update(stored_key.as_ref(), &session.session_key, now) {
            self.session_keys.insert(id, encode(&record)?)?;
        }
        Ok(LoginRecord { user, created: false })
    }

    pub(super) fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.users.get(id.as_bytes())?.map(|bytes| decode(&bytes)).transpose()
    }

    pub(super) fn session_key(&self, id: &UserId) -> Result<Option<StoredSessionKey>, StoreError> {
        self.session_keys.get(id.as_bytes())?.map(|bytes| decode(&bytes)).transpose()
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

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl SledStore {
    fn pause_commits(&self) -> commit::Pause {
        self.commit.pause()
    }
}
