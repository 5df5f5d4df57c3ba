//! One-time grants on PostgreSQL: `grants`, keyed by the SHA-256 of a grant's secret.
//! Taking is one `DELETE ... RETURNING`; replacing is an `UPDATE` conditional on the sealed
//! payload read, so of racing callers one wins.

use sqlx::Row;
use time::OffsetDateTime;

use super::{PgStore, ns};
use crate::store::{
    StoreError,
    backend::Grants,
    grants::{Grant, GrantId, GrantKind},
    tickets::{live, sweep_due},
};

impl PgStore {
    fn open_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        sealed: &str,
        expires_ns: i64,
        now: OffsetDateTime,
    ) -> Option<String> {
        live(i128::from(expires_ns), now.unix_timestamp_nanos())
            .then(|| self.sealer.open(sealed, &kind.context(id)))
            .flatten()
    }
}

impl PgStore {
    /// The sealed payload and expiry of the grant of `kind` under `id`, live or not.
    async fn stored_grant(&self, id: &GrantId, kind: GrantKind) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT payload, expires_at_ns FROM grants WHERE id = $1 AND kind = $2")
            .bind(&id[..])
            .bind(i16::from(kind as u8))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get("payload")?, row.try_get("expires_at_ns")?))).transpose()
    }
}

impl Grants for PgStore {
    async fn put_grant(&self, id: &GrantId, grant: &Grant, now: OffsetDateTime) -> Result<(), StoreError> {
        let sealed = self
            .sealer
            .seal(&grant.payload, &grant.kind.context(id))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        sqlx::query(
            "INSERT INTO grants (id, kind, payload, expires_at_ns) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET kind = $2, payload = $3, expires_at_ns = $4",
        )
        .bind(&id[..])
        .bind(i16::from(grant.kind as u8))
        .bind(sealed)
        .bind(ns(grant.expires_at)?)
        .execute(&self.pool)
        .await?;
        if sweep_due(&self.grants_swept_at, now.unix_timestamp()) {
            sqlx::query("DELETE FROM grants WHERE expires_at_ns <= $1").bind(ns(now)?).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn grant(&self, id: &GrantId, kind: GrantKind, now: OffsetDateTime) -> Result<Option<String>, StoreError> {
        let Some((sealed, expires_ns)) = self.stored_grant(id, kind).await? else { return Ok(None) };
        Ok(self.open_grant(id, kind, &sealed, expires_ns, now))
    }

    async fn take_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("DELETE FROM grants WHERE id = $1 AND kind = $2 RETURNING payload, expires_at_ns")
            .bind(&id[..])
            .bind(i16::from(kind as u8))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(self.open_grant(id, kind, row.try_get("payload")?, row.try_get("expires_at_ns")?, now))
    }

    async fn replace_grant(
        &self,
        id: &GrantId,
        kind: GrantKind,
        expected: &str,
        new: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let Some((sealed, expires_ns)) = self.stored_grant(id, kind).await? else { return Ok(false) };
        if self.open_grant(id, kind, &sealed, expires_ns, now).as_deref() != Some(expected) {
            return Ok(false);
        }
        let new = self.sealer.seal(new, &kind.context(id)).map_err(|e| StoreError::Database(e.to_string()))?;
        let updated = sqlx::query("UPDATE grants SET payload = $3 WHERE id = $1 AND payload = $2")
            .bind(&id[..])
            .bind(&sealed)
            .bind(new)
            .execute(&self.pool)
            .await?;
        Ok(updated.rows_affected() == 1)
    }
}
