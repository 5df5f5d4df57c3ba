//! The webhook outbox on PostgreSQL: `outbox` rows, claimed with `FOR UPDATE SKIP LOCKED`.

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PgStore, ns};
use crate::store::{
    StoreError,
    backend::Outbox,
    outbox::{Delivery, HookId},
};

impl Outbox for PgStore {
    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "UPDATE outbox SET due_at_ns = $2 WHERE (event_id, hook) IN (\
             SELECT event_id, hook FROM outbox WHERE due_at_ns <= $1 ORDER BY due_at_ns LIMIT $3 \
             FOR UPDATE SKIP LOCKED) RETURNING event_id, hook, attempts",
        )
        .bind(ns(now)?)
        .bind(ns(lease_until)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let hook: Vec<u8> = row.try_get("hook")?;
                let hook = HookId::try_from(hook).map_err(|_| StoreError::Corrupt("outbox: hook id".into()))?;
                let attempts: i32 = row.try_get("attempts")?;
                Ok(Delivery {
                    event: row.try_get::<Uuid, _>("event_id")?,
                    hook,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    due_at: lease_until,
                })
            })
            .collect()
    }

    async fn finish_delivery(&self, claimed: &Delivery, retry_at: Option<OffsetDateTime>) -> Result<(), StoreError> {
        // Only while the claim holds: a row claimed again by another sender is theirs.
        let query = match retry_at {
            None => sqlx::query("DELETE FROM outbox WHERE event_id = $1 AND hook = $2 AND due_at_ns = $3"),
            Some(_) => sqlx::query(
                "UPDATE outbox SET due_at_ns = $4, attempts = attempts + 1 \
                 WHERE event_id = $1 AND hook = $2 AND due_at_ns = $3",
            ),
        };
        let query = query.bind(claimed.event).bind(claimed.hook.to_vec()).bind(ns(claimed.due_at)?);
        let query = match retry_at {
            Some(at) => query.bind(ns(at)?),
            None => query,
        };
        query.execute(&self.pool).await?;
        Ok(())
    }
}
