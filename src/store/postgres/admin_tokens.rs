//! Admin tokens on PostgreSQL: one row each in `admin_tokens`, the name unique.

use sqlx::{Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PgStore, ns};
use crate::store::{AdminRole, AdminToken, StoreError, backend::AdminTokens, codec::time};

/// The columns [`read`] reads.
pub(super) const COLUMNS: &str = "id, name, role, secret_hash, created_at_ns, revoked_at_ns";

/// The token in a row of [`COLUMNS`].
pub(super) fn read(row: &PgRow) -> Result<AdminToken, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("admin token: {what}"));
    let hash: Vec<u8> = row.try_get("secret_hash")?;
    Ok(AdminToken {
        id: row.try_get::<Uuid, _>("id")?.into_bytes(),
        name: row.try_get("name")?,
        role: AdminRole::parse(row.try_get("role")?).ok_or_else(|| corrupt("role"))?,
        secret_hash: hash.as_slice().try_into().map_err(|_| corrupt("secret hash"))?,
        created_at: time(row.try_get::<i64, _>("created_at_ns")?.into())?,
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at_ns")?.map(|t| time(t.into())).transpose()?,
    })
}

/// Inserts `token`; [`StoreError::AdminTokenExists`] when its name or id is taken.
pub(super) async fn insert(executor: impl sqlx::PgExecutor<'_>, token: &AdminToken) -> Result<(), StoreError> {
    let added = sqlx::query(
        "INSERT INTO admin_tokens (id, name, role, secret_hash, created_at_ns, revoked_at_ns) \
             VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::from_bytes(token.id))
    .bind(&token.name)
    .bind(token.role.as_str())
    .bind(&token.secret_hash[..])
    .bind(ns(token.created_at)?)
    .bind(token.revoked_at.map(ns).transpose()?)
    .execute(executor)
    .await;
    match added {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Err(StoreError::AdminTokenExists),
        Err(e) => Err(e.into()),
    }
}

impl AdminTokens for PgStore {
    async fn add_admin_token(&self, token: &AdminToken) -> Result<(), StoreError> {
        insert(&self.pool, token).await
    }

    async fn admin_token(&self, id: &[u8; 16]) -> Result<Option<AdminToken>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = $1")))
            .bind(Uuid::from_bytes(*id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(read).transpose()
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM admin_tokens ORDER BY name COLLATE \"C\"")))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(read).collect()
    }

    async fn revoke_admin_token(&self, name: &str, at: OffsetDateTime) -> Result<AdminToken, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE admin_tokens SET revoked_at_ns = COALESCE(revoked_at_ns, $2) WHERE name = $1 RETURNING {COLUMNS}"
        )))
        .bind(name)
        .bind(ns(at)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(read).transpose()?.ok_or(StoreError::NoSuchAdminToken)
    }
}
