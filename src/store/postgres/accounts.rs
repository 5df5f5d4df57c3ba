//! Accounts on PostgreSQL: `accounts`, each with a user of its own, which takes the
//! account's identities, links and details with it when removed (cascade).

use sqlx::{PgConnection, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, PgStore, Step, ns, user_id, users::reload, uuid};
use crate::{
    domain::{User, UserId},
    store::{Account, StoreError, backend::Accounts, codec::time},
};

impl Accounts for PgStore {
    async fn add_account(&self, username: &str, password_hash: &str) -> Result<User, StoreError> {
        let now = OffsetDateTime::now_utc();
        transact!(self, tx => self.add_account_in(&mut tx, username, password_hash, now))
    }

    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row =
            sqlx::query("SELECT username, user_id, password_hash, created_at_ns FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(account).transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(
            "SELECT username, user_id, password_hash, created_at_ns FROM accounts ORDER BY username COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account).collect()
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> Result<(), StoreError> {
        let changed = sqlx::query("UPDATE accounts SET password_hash = $2 WHERE username = $1")
            .bind(username)
            .bind(password_hash)
            .execute(&self.pool)
            .await?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        Ok(())
    }

    async fn remove_account(&self, username: &str) -> Result<User, StoreError> {
        transact!(self, tx => self.remove_account_in(&mut tx, username))
    }
}

impl PgStore {
    async fn add_account_in(
        &self,
        tx: &mut PgConnection,
        username: &str,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Step<User>, Failure> {
        let id = UserId::new();
        sqlx::query("INSERT INTO users (id, created_at_ns, last_login_at_ns) VALUES ($1, $2, $2)")
            .bind(uuid(&id))
            .bind(ns(now)?)
            .execute(&mut *tx)
            .await?;
        let added = sqlx::query(
            "INSERT INTO accounts (username, user_id, password_hash, created_at_ns) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(username)
        .bind(uuid(&id))
        .bind(password_hash)
        .bind(ns(now)?)
        .execute(&mut *tx)
        .await?;
        if added.rows_affected() == 0 {
            return Err(StoreError::AccountExists.into());
        }
        Ok(Step::Done(reload(tx, uuid(&id)).await?))
    }

    async fn remove_account_in(&self, tx: &mut PgConnection, username: &str) -> Result<Step<User>, Failure> {
        let owner: Uuid = sqlx::query_scalar("SELECT user_id FROM accounts WHERE username = $1 FOR UPDATE")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NoSuchAccount)?;
        let user = reload(tx, owner).await?;
        // The identities, unionid links, details and account go with the user (cascade).
        sqlx::query("DELETE FROM users WHERE id = $1").bind(owner).execute(&mut *tx).await?;
        Ok(Step::Done(user))
    }
}

fn account(row: &PgRow) -> Result<Account, StoreError> {
    Ok(Account {
        username: row.try_get("username")?,
        user: user_id(row.try_get("user_id")?),
        password_hash: row.try_get("password_hash")?,
        created_at: time(row.try_get::<i64, _>("created_at_ns")?.into())?,
    })
}
