//! The `meta` table on PostgreSQL: the mode the database was created in, the sealing key
//! every replica must share and `/readyz`'s probe; and the health of a replica.

use time::OffsetDateTime;

use super::PgStore;
use crate::{
    domain::KeyMode,
    store::{StoreError, backend::Backend, meta::agree, sealed::Sealer},
};

impl Backend for PgStore {
    /// Liveness: the replica's pool is open. Whether the database answers is for `/readyz`
    /// to say: when the database is down, restarting every replica does not help.
    async fn check(&self) -> Result<(), StoreError> {
        match self.pool.is_closed() {
            true => Err(StoreError::Database("the connection pool is closed".into())),
            false => Ok(()),
        }
    }

    async fn claim_mode(&self, mode: KeyMode) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ('mode', $1) ON CONFLICT DO NOTHING")
            .bind(mode.as_str())
            .execute(&self.pool)
            .await?;
        let recorded: String =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'mode'").fetch_one(&self.pool).await?;
        agree(recorded.as_bytes(), mode, "WXAUTH_DATABASE_URL")
    }

    /// Records the id of this process's sealing key when none is recorded, and refuses
    /// another key. Replicas with different keys would each read only what they sealed
    /// themselves; racing ones find one winner in the primary key.
    async fn claim_sealing_key(&self) -> Result<(), StoreError> {
        let key_id = self.sealer.key_id();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('sealing_key', $1) ON CONFLICT DO NOTHING")
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        let recorded: String =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'sealing_key'").fetch_one(&self.pool).await?;
        match recorded == key_id {
            true => Ok(()),
            false => Err(StoreError::WrongSealingKey { recorded, found: key_id.to_owned() }),
        }
    }

    /// A committed write is a durable write: this proves the database takes writes now.
    async fn check_writable(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('write_probe', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
        )
        .bind(OffsetDateTime::now_utc().unix_timestamp().to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every acknowledged write is committed already: closing only ends the connections.
    async fn close(&self) -> Result<(), StoreError> {
        self.pool.close().await;
        tracing::info!(target: "wxauth::store", "store closed");
        Ok(())
    }

    fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}
