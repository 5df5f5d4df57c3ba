//! Accounts on PostgreSQL: `accounts`, each with a user of its own, which takes the
//! account's identities, links and details with it when removed (cascade). An account's
//! phone number is sealed (`phone_sealed`) and found by its pseudonym (`phone_index`,
//! unique).

use sqlx::{PgConnection, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, PgStore, Step, ns, user_id, users::reload, uuid};
use crate::{
    domain::{User, UserId},
    store::{
        Account, NewAccount, StoreError,
        backend::Accounts,
        codec::{open_account_phone, phone_pseudonym, seal_account_phone, time},
    },
};

impl Accounts for PgStore {
    async fn add_accounts(&self, accounts: &[NewAccount]) -> Result<Vec<User>, StoreError> {
        let now = OffsetDateTime::now_utc();
        transact!(self, tx => self.add_accounts_in(&mut tx, accounts, now))
    }

    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM accounts WHERE username = $1")))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|row| self.account(row)).transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM accounts ORDER BY username COLLATE \"C\"")))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|row| self.account(row)).collect()
    }

    async fn account_by_phone(&self, phone: &[u8; 16]) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM accounts WHERE phone_index = $1")))
            .bind(&phone[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|row| self.account(row)).transpose()
    }

    async fn set_account_phone(&self, username: &str, phone: Option<&str>) -> Result<(), StoreError> {
        let (sealed, index) = match phone {
            Some(phone) => (
                Some(seal_account_phone(&self.sealer, username, phone)?),
                Some(phone_pseudonym(&self.sealer, phone).to_vec()),
            ),
            None => (None, None),
        };
        let changed = sqlx::query("UPDATE accounts SET phone_sealed = $2, phone_index = $3 WHERE username = $1")
            .bind(username)
            .bind(sealed)
            .bind(index)
            .execute(&self.pool)
            .await
            .map_err(|e| if unique_violation(&e) { StoreError::PhoneTaken } else { e.into() })?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        Ok(())
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
    async fn add_accounts_in(
        &self,
        tx: &mut PgConnection,
        accounts: &[NewAccount],
        now: OffsetDateTime,
    ) -> Result<Step<Vec<User>>, Failure> {
        let mut users = Vec::with_capacity(accounts.len());
        for a in accounts {
            let id = UserId::new();
            sqlx::query("INSERT INTO users (id, created_at_ns, last_login_at_ns) VALUES ($1, $2, $2)")
                .bind(uuid(&id))
                .bind(ns(now)?)
                .execute(&mut *tx)
                .await?;
            let phone = match &a.phone {
                Some(phone) => Some((
                    seal_account_phone(&self.sealer, &a.username, phone)?,
                    phone_pseudonym(&self.sealer, phone).to_vec(),
                )),
                None => None,
            };
            let added = sqlx::query(
                "INSERT INTO accounts (username, user_id, password_hash, created_at_ns, phone_sealed, phone_index) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&a.username)
            .bind(uuid(&id))
            .bind(&a.password_hash)
            .bind(ns(now)?)
            .bind(phone.as_ref().map(|p| p.0.as_str()))
            .bind(phone.as_ref().map(|p| p.1.as_slice()))
            .execute(&mut *tx)
            .await?;
            if added.rows_affected() == 0 {
                let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE username = $1)")
                    .bind(&a.username)
                    .fetch_one(&mut *tx)
                    .await?;
                return Err(if taken { StoreError::AccountExists } else { StoreError::PhoneTaken }.into());
            }
            users.push(reload(tx, uuid(&id)).await?);
        }
        Ok(Step::Done(users))
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

/// The columns [`PgStore::account`] reads.
const COLUMNS: &str = "username, user_id, password_hash, created_at_ns, phone_sealed";

impl PgStore {
    fn account(&self, row: &PgRow) -> Result<Account, StoreError> {
        let username: String = row.try_get("username")?;
        let sealed: Option<String> = row.try_get("phone_sealed")?;
        Ok(Account {
            phone: sealed.and_then(|s| open_account_phone(&self.sealer, &username, &s)),
            username,
            user: user_id(row.try_get("user_id")?),
            password_hash: row.try_get("password_hash")?,
            created_at: time(row.try_get::<i64, _>("created_at_ns")?.into())?,
        })
    }
}

/// Whether `e` is a unique violation (another account has the phone number).
fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
