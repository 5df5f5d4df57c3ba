//! Refresh tokens: families of single-use tokens with reuse detection.
//!
//! A login writes one record, nothing else, because logins are the hot path:
//! - `refresh_tokens`: selector (UUID v7) → [`TokenRecord`]: the verifier's SHA-256, the
//!   family (the selector of its first token) and when it started, user, identity, expiry,
//!   and whether the token was spent.
//!
//! Revocations are rare and written apart, each kept until every token it covers expired:
//! - `refresh_revoked`: family → keep-until; a logout, or a spent token presented again;
//! - `refresh_cutoffs`: user id → (cutoff, keep-until); logout-all revokes every family
//!   the user started up to the cutoff, without having to find them.
//!
//! Rotations and revocations run under [`SledStore::refresh`], a lock of their own (they
//! never touch bindings), so that one presented token is spent exactly once.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::SledStore;
use crate::{
    domain::{Identity, UserId},
    store::{PurgeBatch, RefreshGrant, RefreshId, Refreshed, StoreError},
};

#[derive(Serialize, Deserialize)]
pub(super) struct TokenRecord {
    verifier_hash: [u8; 32],
    family: [u8; 16],
    family_started: i128,
    user: [u8; 16],
    appid: String,
    openid: String,
    expires_at: i128,
    spent: bool,
}

impl TokenRecord {
    /// The record as exported.
    pub(super) fn export(self, selector: uuid::Uuid) -> Result<crate::store::export::Record, StoreError> {
        use crate::store::{codec::time, export::hex};
        Ok(crate::store::export::Record::RefreshToken {
            selector,
            verifier_hash: hex(&self.verifier_hash),
            family: uuid::Uuid::from_bytes(self.family),
            family_started: time(self.family_started)?,
            user: uuid::Uuid::from_bytes(self.user),
            appid: self.appid,
            openid: self.openid,
            expires_at: time(self.expires_at)?,
            spent: self.spent,
        })
    }

    /// The record of an exported refresh token, with its selector.
    pub(super) fn import(record: crate::store::export::Record) -> Result<(uuid::Uuid, Self), StoreError> {
        use crate::store::export::{Record, unhex};
        let Record::RefreshToken {
            selector,
            verifier_hash,
            family,
            family_started,
            user,
            appid,
            openid,
            expires_at,
            spent,
        } = record
        else {
            return Err(StoreError::Corrupt("not a refresh token".into()));
        };
        let token = Self {
            verifier_hash: unhex::<32>(&verifier_hash, "a verifier hash")?,
            family: family.into_bytes(),
            family_started: family_started.unix_timestamp_nanos(),
            user: user.into_bytes(),
            appid,
            openid,
            expires_at: expires_at.unix_timestamp_nanos(),
            spent,
        };
        Ok((selector, token))
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl SledStore {
    /// The record of `id`, if the verifier matches.
    fn refresh_record(&self, id: &RefreshId) -> Result<Option<TokenRecord>, StoreError> {
        let Some(bytes) = self.refresh_tokens.get(id.selector)? else { return Ok(None) };
        let token: TokenRecord = decode(&bytes, "refresh token")?;
        let matches = aws_lc_rs::constant_time::verify_slices_are_equal(&token.verifier_hash, &id.verifier_hash);
        Ok(matches.is_ok().then_some(token))
    }

    /// Whether the family of `token` was revoked, alone or by a logout-all.
    fn refresh_revoked(&self, token: &TokenRecord) -> Result<bool, StoreError> {
        if self.refresh_revoked.contains_key(token.family)? {
            return Ok(true);
        }
        Ok(match self.refresh_cutoffs.get(token.user)? {
            Some(bytes) => decode::<(i128, i128)>(&bytes, "cutoff")?.0 >= token.family_started,
            None => false,
        })
    }

    pub(in crate::store) fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let token = TokenRecord {
            verifier_hash: id.verifier_hash,
            family: id.selector,
            family_started: now.unix_timestamp_nanos(),
            user: *grant.user.as_bytes(),
            appid: grant.identity.appid.clone(),
            openid: grant.identity.openid.clone(),
            expires_at: expires_at.unix_timestamp_nanos(),
            spent: false,
        };
        self.refresh_tokens.insert(id.selector, encode(&token, "refresh token")?)?;
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
            let Some(mut token) = self.refresh_record(old)? else { return Ok(Refreshed::Unknown) };
            if self.refresh_revoked(&token)? {
                return Ok(Refreshed::Revoked);
            }
            if token.spent {
                // Every token of the family expires by the newest one's expiry, which is at
                // most a lifetime after the newest rotation: `expires_at` (now + lifetime).
                self.refresh_revoked.insert(token.family, &expires_at.unix_timestamp_nanos().to_be_bytes())?;
                Refreshed::Reused
            } else if token.expires_at <= now.unix_timestamp_nanos() {
                return Ok(Refreshed::Expired);
            } else {
                let next = TokenRecord {
                    verifier_hash: new.verifier_hash,
                    expires_at: expires_at.unix_timestamp_nanos(),
                    appid: token.appid.clone(),
                    openid: token.openid.clone(),
                    ..token
                };
                self.refresh_tokens.insert(new.selector, encode(&next, "refresh token")?)?;
                token.spent = true;
                self.refresh_tokens.insert(old.selector, encode(&token, "refresh token")?)?;
                Refreshed::Rotated(RefreshGrant {
                    user: UserId::from_bytes(token.user),
                    identity: Identity { appid: token.appid, openid: token.openid },
                })
            }
        };
        self.commit.wait().await?;
        Ok(outcome)
    }

    pub(in crate::store) async fn revoke_refresh(
        &self,
        id: &RefreshId,
        keep_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        {
            let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
            let Some(token) = self.refresh_record(id)? else { return Ok(()) };
            self.refresh_revoked.insert(token.family, &keep_until.unix_timestamp_nanos().to_be_bytes())?;
        }
        self.commit.wait().await
    }

    pub(in crate::store) async fn revoke_user_refresh(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        keep_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        {
            let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
            let cutoff = (now.unix_timestamp_nanos(), keep_until.unix_timestamp_nanos());
            self.refresh_cutoffs.insert(user.as_bytes(), encode(&cutoff, "cutoff")?)?;
        }
        self.commit.wait().await
    }

    /// Tokens first, then the revocations that no live token needs any more, each pass
    /// resuming after the last key looked at.
    pub(in crate::store) fn purge_refresh(&self, now: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        let now = now.unix_timestamp_nanos();
        let mut cursor = self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner());
        let (mut removed, mut seen) = (0, 0);
        loop {
            let tree = match cursor.tree {
                0 => &self.refresh_tokens,
                1 => &self.refresh_revoked,
                2 => &self.refresh_cutoffs,
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
                let _turn = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
                let dead = match cursor.tree {
                    0 => {
                        let token: TokenRecord = decode(&bytes, "refresh token")?;
                        token.expires_at <= now || self.refresh_revoked(&token)?
                    }
                    1 => i128::from_be_bytes(bytes.as_ref().try_into().unwrap_or_default()) <= now,
                    _ => decode::<(i128, i128)>(&bytes, "cutoff")?.1 <= now,
                };
                if dead {
                    tree.remove(&key)?;
                    removed += 1;
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
    /// 0: tokens, 1: revoked families, 2: cutoffs.
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
