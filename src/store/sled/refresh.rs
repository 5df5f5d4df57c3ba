//! Refresh tokens: families of single-use tokens with reuse detection.
//!
//! Trees:
//! - `refresh_tokens`: SHA-256 of a token → [`TokenRecord`]: its family, user, identity,
//!   expiry, and whether it was spent
//! - `refresh_families`: family id → [`FamilyRecord`]: user, revoked, newest expiry
//! - `user_refresh`: user id ‖ family id → nothing; the index logout-all walks
//!
//! Writes are ordered so that a crash leaves no token without its family: family, index,
//! then token. Rotations and revocations run under [`SledStore::refresh`], a lock of their
//! own (they never touch bindings), so that one presented token is spent exactly once.

use ::sled::IVec;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{SledStore, id_bytes};
use crate::{
    domain::{Identity, UserId},
    store::{PurgeBatch, RefreshGrant, RefreshId, Refreshed, StoreError},
};

#[derive(Serialize, Deserialize)]
pub(super) struct TokenRecord {
    family: [u8; 16],
    user: [u8; 16],
    appid: String,
    openid: String,
    expires_at: i128,
    spent: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct FamilyRecord {
    user: [u8; 16],
    revoked: bool,
    /// The newest token's expiry: after it, the family is dead.
    expires_at: i128,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn index_key(user: &[u8; 16], family: &[u8; 16]) -> Vec<u8> {
    [user.as_slice(), family.as_slice()].concat()
}

impl SledStore {
    pub(in crate::store) fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let family = *uuid::Uuid::new_v4().as_bytes();
        let user = *grant.user.as_bytes();
        let expires_at = expires_at.unix_timestamp_nanos();
        self.refresh_families.insert(family, encode(&FamilyRecord { user, revoked: false, expires_at }, "family")?)?;
        self.user_refresh.insert(index_key(&user, &family), IVec::default())?;
        let token = TokenRecord {
            family,
            user,
            appid: grant.identity.appid.clone(),
            openid: grant.identity.openid.clone(),
            expires_at,
            spent: false,
        };
        self.refresh_tokens.insert(id, encode(&token, "refresh token")?)?;
        Ok(())
    }

    pub(in crate::store) async fn rotate_refresh(
        &self,
        old: &RefreshId,
        new: &RefreshId,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        let outcome = {
            let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
            let Some(bytes) = self.refresh_tokens.get(old)? else { return Ok(Refreshed::Unknown) };
            let mut token: TokenRecord = decode(&bytes, "refresh token")?;
            let Some(bytes) = self.refresh_families.get(token.family)? else { return Ok(Refreshed::Unknown) };
            let mut family: FamilyRecord = decode(&bytes, "family")?;
            if family.revoked {
                return Ok(Refreshed::Revoked);
            }
            if token.spent {
                family.revoked = true;
                self.refresh_families.insert(token.family, encode(&family, "family")?)?;
                Refreshed::Reused
            } else if token.expires_at <= now.unix_timestamp_nanos() {
                return Ok(Refreshed::Expired);
            } else {
                let expires_at = expires_at.unix_timestamp_nanos();
                let next = TokenRecord {
                    expires_at,
                    spent: false,
                    appid: token.appid.clone(),
                    openid: token.openid.clone(),
                    ..token
                };
                self.refresh_tokens.insert(new, encode(&next, "refresh token")?)?;
                family.expires_at = family.expires_at.max(expires_at);
                self.refresh_families.insert(token.family, encode(&family, "family")?)?;
                token.spent = true;
                self.refresh_tokens.insert(old, encode(&token, "refresh token")?)?;
                Refreshed::Rotated(RefreshGrant {
                    user: UserId::from_bytes(token.user),
                    identity: Identity { appid: token.appid, openid: token.openid },
                })
            }
        };
        self.commit.wait().await?;
        Ok(outcome)
    }

    pub(in crate::store) async fn revoke_refresh(&self, id: &RefreshId) -> Result<(), StoreError> {
        {
            let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
            let Some(bytes) = self.refresh_tokens.get(id)? else { return Ok(()) };
            let token: TokenRecord = decode(&bytes, "refresh token")?;
            self.revoke_family(&token.family)?;
        }
        self.commit.wait().await
    }

    pub(in crate::store) async fn revoke_user_refresh(&self, user: &UserId) -> Result<usize, StoreError> {
        let revoked = {
            let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
            let mut revoked = 0;
            for entry in self.user_refresh.scan_prefix(user.as_bytes()) {
                let (key, _) = entry?;
                let family = id_bytes(&key[16..])?;
                if self.revoke_family(&family)? {
                    revoked += 1;
                }
            }
            revoked
        };
        self.commit.wait().await?;
        Ok(revoked)
    }

    /// Marks a family revoked; whether it was live.
    fn revoke_family(&self, family: &[u8; 16]) -> Result<bool, StoreError> {
        let Some(bytes) = self.refresh_families.get(family)? else { return Ok(false) };
        let mut record: FamilyRecord = decode(&bytes, "family")?;
        if record.revoked {
            return Ok(false);
        }
        record.revoked = true;
        self.refresh_families.insert(family, encode(&record, "family")?)?;
        Ok(true)
    }

    /// Tokens first, then families (a family outlives its tokens, never the reverse), each
    /// pass resuming after the last key looked at.
    pub(in crate::store) fn purge_refresh(&self, now: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        let now = now.unix_timestamp_nanos();
        let mut cursor = self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner());
        let (mut removed, mut seen) = (0, 0);
        if !cursor.families {
            let start = cursor.after.take();
            for entry in self.refresh_tokens.range(after(start.as_deref())) {
                let (key, bytes) = entry?;
                seen += 1;
                let token: TokenRecord = decode(&bytes, "refresh token")?;
                let family = self.refresh_families.get(token.family)?.map(|f| decode::<FamilyRecord>(&f, "family"));
                let live = matches!(family, Some(Ok(ref f)) if !f.revoked) && token.expires_at > now;
                if !live {
                    // Under the lock: a rotation must not resurrect what is being removed.
                    let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
                    self.refresh_tokens.remove(&key)?;
                    removed += 1;
                }
                if seen == limit {
                    cursor.after = Some(key.to_vec());
                    return Ok(PurgeBatch { removed, done: false });
                }
            }
            cursor.families = true;
        }
        let start = cursor.after.take();
        for entry in self.refresh_families.range(after(start.as_deref())) {
            let (key, bytes) = entry?;
            seen += 1;
            let family: FamilyRecord = decode(&bytes, "family")?;
            if family.revoked || family.expires_at <= now {
                let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
                self.user_refresh.remove(index_key(&family.user, &id_bytes(&key)?))?;
                self.refresh_families.remove(&key)?;
                removed += 1;
            }
            if seen == limit {
                cursor.after = Some(key.to_vec());
                return Ok(PurgeBatch { removed, done: false });
            }
        }
        cursor.families = false;
        Ok(PurgeBatch { removed, done: true })
    }
}

/// Where a purge pass stands.
#[derive(Default)]
pub(super) struct PurgeCursor {
    /// Past the tokens, walking the families.
    families: bool,
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
