//! Refresh tokens on sled: one record per family, whatever the number of refreshes.
//!
//! - `refresh_families`: family id (UUID v7) → [`FamilyRecord`]: the current generation and
//!   its verifier's SHA-256, when the family started, user, identity, the current token's
//!   expiry, and whether the family was revoked;
//! - `refresh_by_user`: user id ‖ family id → nothing; a user's families oldest first, for
//!   the per-user cap, logout-all and revocations.
//!
//! What presenting a token does is decided by [`crate::store::refresh::judge`], shared with
//! PostgreSQL. Starts, rotations and revocations run under [`SledStore::refresh`], a lock of
//! their own (they never touch bindings), so that one presented token is spent exactly once.
//! The two trees are written family first: a crash in between leaves a family the index
//! does not list, which the purge removes when it expires, never an index entry that a
//! later family could be confused with.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::SledStore;
use crate::{
    domain::{Identity, UserId},
    store::{
        PurgeBatch, RefreshGrant, RefreshId, Refreshed, StoreError,
        refresh::{Family, Verdict, judge, next_generation},
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
}

impl FamilyRecord {
    fn family(&self) -> Family<'_> {
        Family {
            generation: self.generation,
            verifier_hash: &self.verifier_hash,
            revoked: self.revoked,
            expires_at: self.expires_at,
        }
    }

    /// The record as exported.
    pub(super) fn export(self, family: uuid::Uuid) -> Result<crate::store::export::Record, StoreError> {
        use crate::store::{codec::time, export::hex};
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
        })
    }

    /// The record of an exported family, with its id.
    pub(super) fn import(record: crate::store::export::Record) -> Result<([u8; 16], Self), StoreError> {
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
        };
        Ok((family.into_bytes(), record))
    }

    /// The family's user.
    pub(super) fn user(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.user)
    }

    /// Its key in `refresh_by_user`.
    fn index_key(&self, family: &[u8]) -> Vec<u8> {
        [&self.user[..], family].concat()
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl SledStore {
    fn refresh_turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.refresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn family_record(&self, family: &[u8]) -> Result<Option<FamilyRecord>, StoreError> {
        self.refresh_families.get(family)?.map(|bytes| decode(&bytes, "refresh family")).transpose()
    }

    /// Writes a family and its index entry (family first, see the module comment).
    pub(super) fn put_family(&self, family: &[u8], record: &FamilyRecord) -> Result<(), StoreError> {
        self.refresh_families.insert(family, encode(record, "refresh family")?)?;
        self.refresh_by_user.insert(record.index_key(family), &[])?;
        Ok(())
    }

    pub(in crate::store) fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        keep: usize,
    ) -> Result<(), StoreError> {
        let record = FamilyRecord {
            verifier_hash: id.verifier_hash,
            generation: id.generation,
            started: now.unix_timestamp_nanos(),
            user: *grant.user.as_bytes(),
            appid: grant.identity.appid.clone(),
            openid: grant.identity.openid.clone(),
            expires_at: expires_at.unix_timestamp_nanos(),
            revoked: false,
        };
        let _turn = self.refresh_turn();
        self.put_family(&id.family, &record)?;
        // Family ids are UUID v7, so the user's index lists the oldest first.
        let held = self.refresh_by_user.scan_prefix(grant.user.as_bytes()).keys().collect::<Result<Vec<_>, _>>()?;
        for key in held.iter().take(held.len().saturating_sub(keep.max(1))) {
            self.refresh_families.remove(&key[16..])?;
            self.refresh_by_user.remove(key)?;
        }
        Ok(())
    }

    pub(in crate::store) async fn rotate_refresh(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        let outcome = {
            let _turn = self.refresh_turn();
            let Some(mut record) = self.family_record(&old.family)? else { return Ok(Refreshed::Unknown) };
            match judge(&record.family(), old, now.unix_timestamp_nanos()) {
                Verdict::Unknown => return Ok(Refreshed::Unknown),
                Verdict::Revoked => return Ok(Refreshed::Revoked),
                Verdict::Expired => return Ok(Refreshed::Expired),
                Verdict::Reuse => {
                    record.revoked = true;
                    self.refresh_families.insert(old.family, encode(&record, "refresh family")?)?;
                    Refreshed::Reused
                }
                Verdict::Rotate => {
                    let Some(generation) = next_generation(record.generation) else { return Ok(Refreshed::Expired) };
                    record.generation = generation;
                    record.verifier_hash = *next_verifier_hash;
                    record.expires_at = expires_at.unix_timestamp_nanos();
                    self.refresh_families.insert(old.family, encode(&record, "refresh family")?)?;
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

    /// Marks a family revoked; `false` when it is gone.
    fn revoke_family(&self, family: &[u8]) -> Result<bool, StoreError> {
        let Some(mut record) = self.family_record(family)? else { return Ok(false) };
        if !record.revoked {
            record.revoked = true;
            self.refresh_families.insert(family, encode(&record, "refresh family")?)?;
        }
        Ok(true)
    }

    pub(in crate::store) async fn revoke_refresh(&self, id: &RefreshId) -> Result<(), StoreError> {
        {
            let _turn = self.refresh_turn();
            let Some(record) = self.family_record(&id.family)? else { return Ok(()) };
            // Any token of the family revokes it (a spent one too); a forged one does not.
            if judge(&record.family(), id, i128::MIN) == Verdict::Unknown {
                return Ok(());
            }
            self.revoke_family(&id.family)?;
        }
        self.commit.wait().await
    }

    pub(in crate::store) async fn revoke_user_refresh(&self, user: &UserId) -> Result<(), StoreError> {
        {
            let _turn = self.refresh_turn();
            for key in self.refresh_by_user.scan_prefix(user.as_bytes()).keys() {
                let key = key?;
                if !self.revoke_family(&key[16..])? {
                    self.refresh_by_user.remove(&key)?;
                }
            }
        }
        self.commit.wait().await
    }

    /// Families first, then index entries whose family is gone, each pass resuming after the
    /// last key looked at.
    pub(in crate::store) fn purge_refresh(&self, now: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        let now = now.unix_timestamp_nanos();
        let mut cursor = self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner());
        let (mut removed, mut seen) = (0, 0);
        loop {
            let tree = match cursor.tree {
                0 => &self.refresh_families,
                1 => &self.refresh_by_user,
                _ => {
                    cursor.tree = 0;
                    return Ok(PurgeBatch { removed, done: true });
                }
            };
            let start = cursor.after.take();
            for entry in tree.range(after(start.as_deref())) {
                let (key, bytes) = entry?;
                seen += 1;
                // Under the lock: a rotation must not resurrect what is being removed.
                let _turn = self.refresh_turn();
                if cursor.tree == 0 {
                    let record: FamilyRecord = decode(&bytes, "refresh family")?;
                    if record.expires_at <= now || !self.records.contains_key(record.user)? {
                        tree.remove(&key)?;
                        self.refresh_by_user.remove(record.index_key(&key))?;
                        removed += 1;
                    }
                } else if !self.refresh_families.contains_key(key.get(16..).unwrap_or_default())? {
                    tree.remove(&key)?;
                }
                if seen == limit {
                    cursor.after = Some(key.to_vec());
                    return Ok(PurgeBatch { removed, done: false });
                }
            }
            cursor.tree += 1;
        }
    }
}

/// Where a purge pass stands.
#[derive(Default)]
pub(super) struct PurgeCursor {
    /// 0: families, 1: the user index.
    tree: u8,
    /// The last key looked at in the current tree.
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
