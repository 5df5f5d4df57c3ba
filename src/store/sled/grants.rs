//! One-time grants on sled: tree `grants`, SHA-256 of a grant's secret → kind (1 byte),
//! expiry (Unix nanoseconds, 16 bytes big-endian) and the sealed payload. Taking and
//! replacing are compare-and-swaps on the stored bytes, so of racing callers one wins.

use time::OffsetDateTime;

use super::SledStore;
use crate::store::{
    StoreError,
    backend::Grants,
    grants::{Grant, GrantId, GrantKind},
    tickets::{live, sweep_due},
};

/// A stored grant: kind, expiry, and the payload still sealed.
struct Stored<'a> {
    kind: Option<GrantKind>,
    expires_at: i128,
    sealed: &'a str,
}

fn decode(bytes: &[u8]) -> Result<Stored<'_>, StoreError> {
    let corrupt = || StoreError::Corrupt("a grant's record is malformed".into());
    let (&kind, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (expiry, sealed) = rest.split_at_checked(16).ok_or_else(corrupt)?;
    let expires_at = i128::from_be_bytes(expiry.try_into().map_err(|_| corrupt())?);
    let sealed = std::str::from_utf8(sealed).map_err(|_| corrupt())?;
    Ok(Stored { kind: GrantKind::from_byte(kind), expires_at, sealed })
}

fn encode(kind: GrantKind, expires_at: i128, sealed: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(17 + sealed.len());
    bytes.push(kind as u8);
    bytes.extend_from_slice(&expires_at.to_be_bytes());
    bytes.extend_from_slice(sealed.as_bytes());
    bytes
}

impl SledStore {
    /// The payload of the grant stored as `bytes` if it is live and of `kind`.
    fn open_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        bytes: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let stored = decode(bytes)?;
        if stored.kind != Some(kind) || !live(stored.expires_at, now.unix_timestamp_nanos()) {
            return Ok(None);
        }
        Ok(self.sealer.open(stored.sealed, &kind.context(id)))
    }

    fn sweep_grants(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        if !sweep_due(&self.grants_swept_at, now.unix_timestamp()) {
            return Ok(());
        }
        for entry in self.grants.iter() {
            let (key, value) = entry?;
            if decode(&value).map_or(true, |g| !live(g.expires_at, now.unix_timestamp_nanos())) {
                let _ = self.grants.compare_and_swap(&key, Some(value), None::<&[u8]>)?;
            }
        }
        Ok(())
    }
}

impl Grants for SledStore {
    async fn put_grant(&self, id: &GrantId, grant: &Grant, now: OffsetDateTime) -> Result<(), StoreError> {
        let sealed = self
            .sealer
            .seal(&grant.payload, &grant.kind.context(id))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        self.grants.insert(id, encode(grant.kind, grant.expires_at.unix_timestamp_nanos(), &sealed))?;
        self.sweep_grants(now)
    }

    async fn grant(&self, id: &GrantId, kind: GrantKind, now: OffsetDateTime) -> Result<Option<String>, StoreError> {
        match self.grants.get(id)? {
            Some(bytes) => self.open_grant(id, kind, &bytes, now),
            None => Ok(None),
        }
    }

    async fn take_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let Some(bytes) = self.grants.get(id)? else { return Ok(None) };
        if decode(&bytes)?.kind != Some(kind) {
            return Ok(None);
        }
        // Whoever removes these very bytes spent the grant; a racer finds it gone.
        if self.grants.compare_and_swap(id, Some(&bytes), None::<&[u8]>)?.is_err() {
            return Ok(None);
        }
        self.open_grant(id, kind, &bytes, now)
    }

    async fn replace_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        expected: &str,
        new: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let Some(bytes) = self.grants.get(id)? else { return Ok(false) };
        if self.open_grant(id, kind, &bytes, now)?.as_deref() != Some(expected) {
            return Ok(false);
        }
        let expires_at = decode(&bytes)?.expires_at;
        let sealed = self.sealer.seal(new, &kind.context(id)).map_err(|e| StoreError::Database(e.to_string()))?;
        let swapped = self.grants.compare_and_swap(id, Some(&bytes), Some(encode(kind, expires_at, &sealed)))?;
        Ok(swapped.is_ok())
    }
}
