//! Erasure on PostgreSQL: one transaction, so a crash leaves all of it or none. The users
//! pending deletion are found through a partial index on their erase time.

use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, PgStore, Step, ns, user_id, users::reload, uuid};
use crate::{
    domain::UserId,
    store::{Erasure, StoreError, backend::Deletions},
};

impl Deletions for PgStore {
    async fn due_deletions(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<UserId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM users WHERE deletion_erase_at_ns <= $1 ORDER BY deletion_erase_at_ns, id LIMIT $2",
        )
        .bind(ns(now)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(user_id(row.try_get("id")?))).collect()
    }

    async fn erase(&self, id: &UserId, now: OffsetDateTime) -> Result<Erasure, StoreError> {
        transact!(self, tx => self.erase_in(&mut tx, uuid(id), now))
    }
}

impl PgStore {
    async fn erase_in(&self, tx: &mut PgConnection, id: Uuid, now: OffsetDateTime) -> Result<Step<Erasure>, Failure> {
        let row = sqlx::query("SELECT deletion_erase_at_ns FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(Step::Done(Erasure::Gone)) };
        let due: Option<i64> = row.try_get("deletion_erase_at_ns")?;
        let now = ns(now)?;
        if due.is_none_or(|due| due > now) {
            return Ok(Step::Done(Erasure::NotDue));
        }
        let user = reload(tx, id).await?;
        let openids: Vec<String> = user.identities.iter().map(|i| format!("{}\n{}", i.appid, i.openid)).collect();
        sqlx::query("DELETE FROM bind_tickets WHERE appid || E'\\n' || openid = ANY($1) OR unionid = $2")
            .bind(&openids)
            .bind(&user.unionid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE events SET ip = NULL, user_agent = NULL, details = '{}' WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // An account without a password is reached by its phone number alone (phone
        // registration, an import), which goes with the person: it goes too (cascade).
        let reachable: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE user_id = $1 AND password_hash <> '')")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let kept = match user.account.filter(|_| reachable) {
            // An operator's account stays, unbound and emptied, as after an unbind.
            Some(username) => {
                for table in ["identities", "unionids", "details", "refresh_families"] {
                    // Only constants are formatted in: the id is bound.
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1")))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                // The number is the person's, not the operator's: it goes too.
                sqlx::query("UPDATE accounts SET phone_sealed = NULL, phone_index = NULL WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE users SET unionid = NULL, unionid_shared_with = '{}', deletion_requested_at_ns = NULL, \
                     deletion_erase_at_ns = NULL WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                Some(username)
            }
            None => {
                // Identities, unionid links, details and refresh families go with it (cascade).
                sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
                None
            }
        };
        Ok(Step::Done(Erasure::Erased { account_kept: kept }))
    }
}
