//! The shared backend: a PostgreSQL database that several wxauth replicas use at once.
//!
//! The tables are in `migrations/` (applied at open by `sqlx::migrate!`, under the
//! migrator's advisory lock, so replicas starting together do not race). They hold what
//! sled's trees hold, with the same sealed values, so `wxauth store export`/`import` moves
//! a store between the backends unchanged.
//!
//! Concurrency: there is no in-process lock, because the racers may be other replicas.
//! Everything that changes who is bound to whom runs in a transaction whose conflicts the
//! database settles: `identities (appid, openid)` and `(user_id, appid)`, `unionids` and
//! `accounts` are unique, inserts use `ON CONFLICT DO NOTHING`, and a transaction that
//! finds it lost a race (or hits a deadlock or serialization failure) rolls back and runs
//! again, then finding the winner's committed rows. A returning login takes no transaction:
//! one read, and one update only when something changed.
//!
//! Files: one per part of the store's contract ([`crate::store::backend`]): `users`,
//! `links`, `tickets`, `accounts`, `refresh`, `export`, `meta`, mirroring the sled
//! backend's; the tables are in `migrations/`.
//!
//! Durability: an answer comes after `COMMIT` returns, and PostgreSQL's default
//! `synchronous_commit = on` makes a commit durable (on the primary) before it returns.

use std::{
    str::FromStr,
    sync::{Arc, Mutex, atomic::AtomicI64},
};

use sqlx::{
    ConnectOptions, Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    StoreError,
    codec::{DetailsRecord, Keys},
    sealed::Sealer,
};
use crate::domain::Details;
use crate::{config::PostgresSettings, domain::UserId};

/// The migrations, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/postgres/migrations");

/// A transaction that lost a race runs again, at most this often.
pub(super) const ATTEMPTS: usize = 8;

/// The newest schema this build knows.
pub(super) fn latest_version() -> u32 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0) as u32
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub(super) struct PgStore {
    pool: PgPool,
    pub(super) sealer: Sealer,
    /// Unix seconds of this replica's last sweep of expired tickets.
    swept_at: Arc<AtomicI64>,
    /// Unix seconds of the last sweep of expired grants at this replica.
    grants_swept_at: Arc<AtomicI64>,
    purge_cursor: Arc<Mutex<refresh::PurgeCursor>>,
    /// Which logins trim their user's oldest families.
    trim: crate::store::refresh::TrimSchedule,
}

/// A failure inside a transaction: from the database (maybe worth another attempt) or a
/// refusal of the store's own.
pub(super) enum Failure {
    Sql(sqlx::Error),
    Store(StoreError),
    /// A user the transaction read was removed by a racer meanwhile: look again.
    Vanished,
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // sqlx's messages name no credentials: the URL is never part of them.
        Self::Database(e.to_string())
    }
}

/// What one attempt of a transaction came to.
enum Step<T> {
    /// Commit, and answer this.
    Done(T),
    /// A racer committed first: roll back and look again.
    Retry,
}

/// Serialization failures and deadlocks are settled by running the transaction again, and
/// so is a foreign-key violation: the user a login was joining (through its unionid) was
/// removed by a racer after the transaction read it, and the next attempt no longer finds it.
pub(super) fn retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01" | "23503")))
}

/// Runs `$attempt` (an expression using the transaction `$tx`) in a transaction until it
/// commits, refuses, or has lost [`ATTEMPTS`] races.
macro_rules! transact {
    ($self:ident, $tx:ident => $attempt:expr) => {{
        let mut outcome = Err(StoreError::Database("gave up after repeated conflicts with other writers".into()));
        for _ in 0..$crate::store::postgres::ATTEMPTS {
            let mut $tx = $self.pool.begin().await?;
            match $attempt.await {
                Ok(Step::Done(value)) => {
                    $tx.commit().await?;
                    outcome = Ok(value);
                    break;
                }
                Ok(Step::Retry) => $tx.rollback().await?,
                Err($crate::store::postgres::Failure::Sql(e)) if $crate::store::postgres::retryable(&e) => {
                    $tx.rollback().await?
                }
                Err(Failure::Vanished) => $tx.rollback().await?,
                Err(Failure::Sql(e)) => return Err(e.into()),
                Err(Failure::Store(e)) => return Err(e),
            }
        }
        outcome
    }};
}

mod accounts;
mod admin_tokens;
mod deletions;
mod events;
mod export;
mod grants;
mod links;
mod login;
mod merge;
mod meta;
mod outbox;
mod refresh;
mod tickets;
mod users;

/// Unix nanoseconds, as stored.
fn ns(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| StoreError::Corrupt(format!("time out of range: {t}")))
}

fn uuid(id: &UserId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

fn user_id(id: Uuid) -> UserId {
    UserId::from_bytes(id.into_bytes())
}

/// The `details.phone_index` of `details`: the pseudonym of its phone number, or empty
/// when it holds none (NULL is left to rows not indexed yet).
fn phone_index_column(sealer: &Sealer, details: &Details) -> Vec<u8> {
    crate::store::codec::phone_index(sealer, details).map_or_else(Vec::new, |p| p.to_vec())
}

impl PgStore {
    pub(super) async fn open(settings: &PostgresSettings, sealer: Sealer) -> Result<Self, StoreError> {
        let redacted = settings.url.redacted();
        let options = PgConnectOptions::from_str(settings.url.expose())
            .map_err(|e| StoreError::Database(format!("WXAUTH_DATABASE_URL ({redacted}): {e}")))?
            .application_name("wxauth");
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.statement_timeout)
            .connect_with(
                options.clone().options([("statement_timeout", settings.statement_timeout.as_millis().to_string())]),
            )
            .await
            .map_err(|e| StoreError::Database(format!("cannot connect to {redacted}: {e}")))?;
        // On a connection of its own, without the statement timeout: a replica waits on the
        // migrator's lock for as long as another replica takes to migrate.
        let mut conn =
            options.connect().await.map_err(|e| StoreError::Database(format!("cannot connect to {redacted}: {e}")))?;
        let migrated = MIGRATOR.run(&mut conn).await;
        conn.close().await?;
        migrated.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(found) => {
                StoreError::SchemaTooNew { found: found as u32, supported: latest_version() }
            }
            e => StoreError::Database(format!("migrating {redacted}: {e}")),
        })?;
        let store = Self {
            pool,
            sealer,
            swept_at: Arc::default(),
            grants_swept_at: Arc::default(),
            purge_cursor: Arc::default(),
            trim: crate::store::refresh::TrimSchedule::new(),
        };
        store.index_phones().await?;
        Ok(store)
    }

    /// Fills the phone index of details written before it existed (migration 0007): only
    /// the server holds the key of its pseudonyms. Replicas starting together may both fill
    /// a row, with the same value; a row changed since it was read keeps its own.
    async fn index_phones(&self) -> Result<(), StoreError> {
        let rows: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT user_id, sealed FROM details WHERE phone_index IS NULL")
                .fetch_all(&self.pool)
                .await?;
        for (user, sealed) in &rows {
            let details = DetailsRecord::open(sealed.as_bytes(), &self.sealer, user.as_bytes())?;
            sqlx::query("UPDATE details SET phone_index = $2 WHERE user_id = $1 AND phone_index IS NULL")
                .bind(user)
                .bind(phone_index_column(&self.sealer, &details))
                .execute(&self.pool)
                .await?;
        }
        if !rows.is_empty() {
            tracing::info!(target: "wxauth::store", details = rows.len(), "indexed the phone numbers kept so far");
        }
        Ok(())
    }

    fn keys<'a>(&'a self, id: &'a [u8]) -> Keys<'a> {
        Keys { sealer: &self.sealer, user: id }
    }
}
