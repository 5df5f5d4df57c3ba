//! The webhook outbox on sled: `outbox`, due time (Unix nanoseconds, big-endian, offset so
//! that order is time order) ‖ event id ‖ webhook id → attempts (u32, big-endian). Claims
//! and their ends move an entry from one key to another in a transaction of the one tree.

use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SledStore, deletions::ordered_time};
use crate::store::{
    StoreError,
    backend::Outbox,
    codec::time,
    outbox::{Delivery, HookId},
};

/// The outbox key of `delivery`.
pub(super) fn key(delivery: &Delivery) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..16].copy_from_slice(&ordered_time(delivery.due_at));
    key[16..32].copy_from_slice(delivery.event.as_bytes());
    key[32..].copy_from_slice(&delivery.hook);
    key
}

/// The delivery stored under `key` with `value`.
fn delivery(key: &[u8], value: &[u8]) -> Result<Delivery, StoreError> {
    let corrupt = || StoreError::Corrupt("outbox entry".into());
    if key.len() != 40 {
        return Err(corrupt());
    }
    let due = u128::from_be_bytes(key[..16].try_into().map_err(|_| corrupt())?) ^ (1 << 127);
    Ok(Delivery {
        event: Uuid::from_slice(&key[16..32]).map_err(|_| corrupt())?,
        hook: HookId::try_from(&key[32..]).map_err(|_| corrupt())?,
        attempts: u32::from_be_bytes(value.try_into().map_err(|_| corrupt())?),
        due_at: time(due as i128)?,
    })
}

impl SledStore {
    /// Moves the entry at `from` to `to` (with `attempts`), or removes it when `to` is
    /// `None`; `false` when `from` is gone.
    fn move_delivery(&self, from: &[u8; 40], to: Option<([u8; 40], u32)>) -> Result<bool, StoreError> {
        let moved = self.outbox.transaction(|t| {
            if t.remove(&from[..])?.is_none() {
                return Ok(false);
            }
            if let Some((to, attempts)) = &to {
                t.insert(&to[..], &attempts.to_be_bytes()[..])?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(true)
        });
        match moved {
            Ok(moved) => Ok(moved),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}

impl Outbox for SledStore {
    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut end = [0xff; 40];
        end[..16].copy_from_slice(&ordered_time(now));
        let mut claimed = Vec::new();
        for entry in self.outbox.range(..=&end[..]) {
            if claimed.len() == limit {
                break;
            }
            let (from, value) = entry?;
            let due = delivery(&from, &value)?;
            let lease = Delivery { due_at: lease_until, ..due };
            let from: [u8; 40] = from.as_ref().try_into().map_err(|_| StoreError::Corrupt("outbox entry".into()))?;
            if self.move_delivery(&from, Some((key(&lease), lease.attempts)))? {
                claimed.push(lease);
            }
        }
        Ok(claimed)
    }

    async fn finish_delivery(&self, claimed: &Delivery, retry_at: Option<OffsetDateTime>) -> Result<(), StoreError> {
        let to = retry_at.map(|at| {
            let next = Delivery { due_at: at, attempts: claimed.attempts + 1, ..*claimed };
            (key(&next), next.attempts)
        });
        self.move_delivery(&key(claimed), to)?;
        Ok(())
    }
}
