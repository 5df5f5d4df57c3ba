//! Refresh tokens on sled: one record per family, whatever the number of refreshes.
//!
//! `refresh_families`: user id ‖ family id (UUID v7) → [`FamilyRecord`]: the current
//! generation and its verifier's SHA-256, when the family started and last refreshed,
//! identity, the current token's expiry, whether the family was revoked, and where the
//! login came from (schema 6). Keyed by user first, so that a
//! user's families sit together, oldest first: the per-user cap, logout-all and the
//! revocations of an unbind find them by a prefix scan, and a login writes one record and
//! nothing else (an index kept up to date by every login cost the returning login 9 %).
//!
//! The cap is kept in batches ([`crate::store::refresh::TrimSchedule`], shared with PostgreSQL): a login counts
//! itself by its user id, and only every half-cap-th login scans the user's prefix and
//! trims it back to the cap.
//!
//! What presenting a token does, what revokes a family, what a user keeps and what the
//! purge removes are decided in [`crate::store::refresh`], shared with PostgreSQL. Rotations, revocations, trims and the purge run under
//! [`SledStore::refresh`], a lock of their own (they never touch bindings), so that one
//! presented token is spent exactly once and a removed family is never written back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    SledStore,
    vault::{Opened, Purpose},
};
use crate::{
    domain::{Identity, UserId},
    store::{
        Origin, PurgeBatch, RefreshGrant, RefreshId, Refreshed, Session, StoreError,
        backend::RefreshTokens,
        codec::time,
        refresh::{Family, Rotation, excess, live, purgeable, revokes, rotation},
    },
};

#[derive(Serialize, Deserialize)]
pub(super) struct FamilyRecord {
    verifier_hash: [u8; 32],
    generation: u32,
    started: i128,
    user: [u8; 16],
    appid: String,
    openid: String,
    expires_at: i128,
    revoked: bool,
    last_refresh: i128,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl FamilyRecord {
    /// A record of schema 5, which knew neither the last refresh nor the origin.
    pub(super) fn from_v5(old: super::legacy::V5FamilyRecord) -> Self {
        Self {
            verifier_hash: old.verifier_hash,
            generation: old.generation,
            started: old.started,
            user: old.user,
            appid: old.appid,
            openid: old.openid,
            expires_at: old.expires_at,
            revoked: old.revoked,
            last_refresh: old.started,
            ip: None,
            user_agent: None,
        }
    }

    /// The record as a session, with its family id.
    fn session(&self, family: [u8; 16]) -> Result<Session, StoreError> {
        Ok(Session {
            family,
            appid: self.appid.clone(),
            created_at: time(self.started)?,
            last_refresh_at: time(self.last_refresh)?,
            origin: Origin { ip: self.ip.clone(), user_agent: self.user_agent.clone() },
        })
    }

    fn family(&self) -> Family<'_> {
        Family {
            generation: self.generation,
            verifier_hash: &self.verifier_hash,
            revoked: self.revoked,
            expires_at: self.expires_at,
        }
    }

    /// The record as exported; `key` is its key in `refresh_families`.
    pub(super) fn export(self, key: &[u8]) -> Result<crate::store::export::Record, StoreError> {
        use crate::store::export::hex;
        let family = uuid::Uuid::from_bytes(family_of(key)?);
        Ok(crate::store::export::Record::RefreshFamily {
            family,
            generation: self.generation,
            verifier_hash: hex(&self.verifier_hash),
            started: time(self.started)?,
            user: uuid::Uuid::from_bytes(self.user),
            appid: self.appid,
            openid: self.openid,
            expires_at: time(self.expires_at)?,
            revoked: self.revoked,
            last_refresh: Some(time(self.last_refresh)?),
            ip: self.ip,
            user_agent: self.user_agent,
        })
    }

    /// The record of an exported family, with its key.
    pub(super) fn import(record: crate::store::export::Record) -> Result<(Vec<u8>, Self), StoreError> {
        use crate::store::export::{Record, unhex};
        let Record::RefreshFamily {
            family,
            generation,
            verifier_hash,
            started,
            user,
            appid,
            openid,
            expires_at,
            revoked,
            last_refresh,
            ip,
            user_agent,
        } = record
        else {
            return Err(StoreError::Corrupt("not a refresh family".into()));
        };
        let record = Self {
            verifier_hash: unhex::<32>(&verifier_hash, "a verifier hash")?,
            generation,
            started: started.unix_timestamp_nanos(),
            user: user.into_bytes(),
            appid,
            openid,
            expires_at: expires_at.unix_timestamp_nanos(),
            revoked,
            last_refresh: last_refresh.unwrap_or(started).unix_timestamp_nanos(),
            ip,
            user_agent,
        };
        Ok((key(&record.user, family.as_bytes()), record))
    }

    /// Moves the family to user `user` (a merge).
    pub(super) fn set_user(&mut self, user: [u8; 16]) {
        self.user = user;
    }

    /// The family's user.
    pub(super) fn user(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.user)
    }
}

/// A family's key: user id ‖ family id.
fn key(user: &[u8; 16], family: &[u8; 16]) -> Vec<u8> {
    [&user[..], family].concat()
}

/// The user id in a family's key.
fn user_of(key: &[u8]) -> Result<[u8; 16], StoreError> {
    key.get(..16).and_then(|u| u.try_into().ok()).ok_or_else(|| StoreError::Corrupt("a refresh family's key".into()))
}

/// The family id in a family's key.
fn family_of(key: &[u8]) -> Result<[u8; 16], StoreError> {
    key.get(16..).and_then(|f| f.try_into().ok()).ok_or_else(|| StoreError::Corrupt("a refresh family's key".into()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl SledStore {
    pub(super) fn refresh_turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.refresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn family_record(&self, id: &RefreshId) -> Result<Option<(Vec<u8>, u32, FamilyRecord)>, StoreError> {
        let key = key(id.user.as_bytes(), &id.family);
        let Some(bytes) = self.refresh_families.get(&key)? else { return Ok(None) };
        Ok(self.open_family(&key, &bytes)?.map(|(slot, record)| (key, slot, record)))
    }

    /// The family stored under `key` in `bytes`, with the slot of its user's key; `None`
    /// when that key was destroyed (the user was erased).
    pub(super) fn open_family(&self, key: &[u8], bytes: &[u8]) -> Result<Option<(u32, FamilyRecord)>, StoreError> {
        match self.vault.open_value(Purpose::Family, &user_of(key)?, bytes)? {
            Opened::Plain { slot, bytes } => Ok(Some((slot, decode(&bytes, "refresh family")?))),
            Opened::Shredded => Ok(None),
            Opened::NotSealed => Err(StoreError::Corrupt("a refresh family is not sealed".into())),
        }
    }

    /// `record`, sealed under its user's key in `slot`.
    pub(super) fn seal_family(&self, record: &FamilyRecord, slot: u32) -> Result<Vec<u8>, StoreError> {
        self.vault.seal(Purpose::Family, &record.user, slot, &encode(record, "refresh family")?)
    }

    /// Removes the oldest families of `user` beyond `keep` (the newest new one never: it
    /// was written before).
    fn trim(&self, user: &[u8; 16], keep: usize) -> Result<(), StoreError> {
        let held = self.refresh_families.scan_prefix(user).keys().collect::<Result<Vec<_>, _>>()?;
        for old in held.iter().take(excess(held.len(), keep)) {
            self.refresh_families.remove(old)?;
        }
        Ok(())
    }
}

impl RefreshTokens for SledStore {
    async fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        origin: &Origin,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        keep: usize,
    ) -> Result<(), StoreError> {
        let user = *grant.user.as_bytes();
        let record = FamilyRecord {
            last_refresh: now.unix_timestamp_nanos(),
            ip: origin.ip.clone(),
            user_agent: origin.user_agent.clone(),
            verifier_hash: id.verifier_hash,
            generation: id.generation,
            started: now.unix_timestamp_nanos(),
            user,
            appid: grant.identity.appid.clone(),
            openid: grant.identity.openid.clone(),
            expires_at: expires_at.unix_timestamp_nanos(),
            revoked: false,
        };
        // A user erased since the login found them: the session is not kept (its refresh
        // token answers invalid_grant), and nothing of theirs is sealed under a new key.
        let Some(slot) = self.user_slot(&user)? else { return Ok(()) };
        self.refresh_families.insert(key(&user, &id.family), self.seal_family(&record, slot)?)?;
        if self.trim.due(user, keep) {
            let _turn = self.refresh_turn();
            self.trim(&user, keep)?;
        }
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        let outcome = {
            let _turn = self.refresh_turn();
            let Some((key, slot, mut record)) = self.family_record(old)? else { return Ok(Refreshed::Unknown) };
            match rotation(&record.family(), old, now.unix_timestamp_nanos()) {
                Rotation::Refuse(refusal) => return Ok(refusal.into()),
                Rotation::Revoke => {
                    record.revoked = true;
                    self.refresh_families.insert(key, self.seal_family(&record, slot)?)?;
                    Refreshed::Reused
                }
                Rotation::Advance(generation) => {
                    record.generation = generation;
                    record.verifier_hash = *next_verifier_hash;
                    record.expires_at = expires_at.unix_timestamp_nanos();
                    record.last_refresh = now.unix_timestamp_nanos();
                    self.refresh_families.insert(key, self.seal_family(&record, slot)?)?;
                    Refreshed::Rotated(RefreshGrant {
                        user: UserId::from_bytes(record.user),
                        identity: Identity { appid: record.appid, openid: record.openid },
                    })
                }
            }
        };
        self.commit.wait().await?;
        Ok(outcome)
    }

    async fn revoke_refresh(&self, id: &RefreshId) -> Result<bool, StoreError> {
        {
            let _turn = self.refresh_turn();
            let Some((key, slot, mut record)) = self.family_record(id)? else { return Ok(false) };
            if !revokes(&record.family(), id) {
                return Ok(false);
            }
            record.revoked = true;
            self.refresh_families.insert(key, self.seal_family(&record, slot)?)?;
        }
        self.commit.wait().await?;
        Ok(true)
    }

    async fn revoke_user_refresh(&self, user: &UserId) -> Result<(), StoreError> {
        {
            let _turn = self.refresh_turn();
            for entry in self.refresh_families.scan_prefix(user.as_bytes()) {
                let (key, bytes) = entry?;
                let Some((slot, mut record)) = self.open_family(&key, &bytes)? else { continue };
                if !record.revoked {
                    record.revoked = true;
                    self.refresh_families.insert(key, self.seal_family(&record, slot)?)?;
                }
            }
        }
        self.commit.wait().await
    }

    async fn sessions(&self, user: &UserId, now: OffsetDateTime) -> Result<Vec<Session>, StoreError> {
        let now = now.unix_timestamp_nanos();
        let mut sessions = Vec::new();
        for entry in self.refresh_families.scan_prefix(user.as_bytes()).rev() {
            let (key, bytes) = entry?;
            let Some((_, record)) = self.open_family(&key, &bytes)? else { continue };
            if live(&record.family(), now) {
                sessions.push(record.session(family_of(&key)?)?);
            }
        }
        Ok(sessions)
    }

    async fn revoke_session(&self, user: &UserId, family: &[u8; 16], now: OffsetDateTime) -> Result<bool, StoreError> {
        {
            let _turn = self.refresh_turn();
            let key = key(user.as_bytes(), family);
            let Some(bytes) = self.refresh_families.get(&key)? else { return Ok(false) };
            let Some((slot, mut record)) = self.open_family(&key, &bytes)? else { return Ok(false) };
            if !live(&record.family(), now.unix_timestamp_nanos()) {
                return Ok(false);
            }
            record.revoked = true;
            self.refresh_families.insert(key, self.seal_family(&record, slot)?)?;
        }
        self.commit.wait().await?;
        Ok(true)
    }

    /// Removes expired families and those of removed users, resuming after the last key
    /// looked at.
    async fn purge_refresh(&self, now: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        let now = now.unix_timestamp_nanos();
        let mut cursor = self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner());
        let (mut removed, mut seen) = (0, 0);
        for entry in self.refresh_families.range(after(cursor.after.take().as_deref())) {
            let (key, bytes) = entry?;
            seen += 1;
            // Under the lock: a rotation must not write back what is being removed.
            let _turn = self.refresh_turn();
            // A family whose user's key is gone belongs to an erased user.
            let opened = self.open_family(&key, &bytes)?;
            let gone = |record: &FamilyRecord| -> Result<bool, StoreError> {
                Ok(purgeable(&record.family(), now, self.records.contains_key(record.user)?))
            };
            if opened.as_ref().map_or(Ok(true), |(_, record)| gone(record))? {
                self.refresh_families.remove(&key)?;
                removed += 1;
            }
            if seen == limit {
                cursor.after = Some(key.to_vec());
                return Ok(PurgeBatch { removed, done: false });
            }
        }
        Ok(PurgeBatch { removed, done: true })
    }
}

/// Where a purge pass stands.
#[derive(Default)]
pub(super) struct PurgeCursor {
    /// The last key looked at.
    after: Option<Vec<u8>>,
}

/// Keys strictly after `key` (all keys when `None`).
fn after(key: Option<&[u8]>) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    match key {
        Some(key) => (Bound::Excluded(key.to_vec()), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}
