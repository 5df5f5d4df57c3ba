//! Refresh tokens on sled: one record per family, whatever the number of refreshes.
//!
//! - `refresh_families`: family id (UUID v7) → [`FamilyRecord`]: the current generation and
//!   its verifier's SHA-256, when the family started, user, identity, the current token's
//!   expiry, and whether the family was revoked;
//! - `refresh_by_user`: user id → the user's family ids, oldest first (postcard), for the
//!   per-user cap, logout-all and revocations. One value rather than a key per family: a
//!   login reads and writes it once instead of scanning a range of keys.
//!
//! What presenting a token does is decided by [`crate::store::refresh::judge`], shared with
//! PostgreSQL. Starts, rotations and revocations run under [`SledStore::refresh`], a lock of
//! their own (they never touch bindings), so that one presented token is spent exactly once.
//! The two trees are written family first: a crash in between leaves a family the index
//! does not list, which the purge removes when it expires; an index entry whose family is
//! gone is dropped by the next change of the list, or by the purge.

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

    /// The family ids of a user, oldest first.
    fn families_of(&self, user: &[u8]) -> Result<Vec<[u8; 16]>, StoreError> {
        Ok(match self.refresh_by_user.get(user)? {
            Some(bytes) => decode(&bytes, "a user's refresh families")?,
            None => Vec::new(),
        })
    }

    fn set_families_of(&self, user: &[u8], families: &[[u8; 16]]) -> Result<(), StoreError> {
        if families.is_empty() {
            self.refresh_by_user.remove(user)?;
        } else {
            self.refresh_by_user.insert(user, encode(&families, "a user's refresh families")?)?;
        }
        Ok(())
    }

    /// Writes a family (an import's, or a login's) and adds it to its user's list, family
    /// first (see the module comment); the user keeps the newest `keep`. Under the refresh
    /// lock.
    pub(super) fn put_family(&self, family: [u8; 16], record: &FamilyRecord, keep: usize) -> Result<(), StoreError> {
        self.refresh_families.insert(family, encode(record, "refresh family")?)?;
        let mut families = self.families_of(&record.user)?;
        // Family ids are UUID v7: the order of the list is their age, imports included.
        let at = families.partition_point(|f| *f < family);
        if families.get(at) != Some(&family) {
            families.insert(at, family);
        }
        let evicted = families.len().saturating_sub(keep.max(1));
        for old in families.drain(..evicted) {
            self.refresh_families.remove(old)?;
        }
        self.set_families_of(&record.user, &families)
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
        self.put_family(id.family, &record, keep)
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
            let mut families = self.families_of(user.as_bytes())?;
            let before = families.len();
            let mut kept = Vec::with_capacity(before);
            for family in families.drain(..) {
                if self.revoke_family(&family)? {
                    kept.push(family);
                }
            }
            if kept.len() != before {
                self.set_families_of(user.as_bytes(), &kept)?;
            }
        }
        self.commit.wait().await
    }

    /// Families first, then the users' lists (dropping ids whose family is gone), each pass
    /// resuming after the last key looked at.
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
                        let mut families = self.families_of(&record.user)?;
                        families.retain(|f| f[..] != key[..]);
                        self.set_families_of(&record.user, &families)?;
                        removed += 1;
                    }
                } else {
                    let mut families: Vec<[u8; 16]> = decode(&bytes, "a user's refresh families")?;
                    let before = families.len();
                    families.retain(|f| self.refresh_families.contains_key(f).unwrap_or(true));
                    if families.len() != before {
                        self.set_families_of(&key, &families)?;
                    }
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
    /// 0: families, 1: the users' lists.
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
