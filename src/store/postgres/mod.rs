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
//! Durability: an answer comes after `COMMIT` returns, and PostgreSQL's default
//! `synchronous_commit = on` makes a commit durable (on the primary) before it returns.

use std::{
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use sqlx::{
    AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres, Row,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Account, BindTicket, LoginRecord, StoreError, StoredSessionKey, TicketId,
    codec::{DetailsRecord, Keys},
    returning_changes,
    sealed::Sealer,
};
use crate::{
    config::PostgresSettings,
    domain::{Details, Identity, KeyMode, SessionKey, User, UserId, WechatSession},
};

/// The migrations, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/postgres/migrations");

/// A transaction that lost a race runs again, at most this often.
pub(super) const ATTEMPTS: usize = 8;

/// Expired tickets are swept at most this often per replica, by whoever stores a ticket.
const TICKET_SWEEP_SECS: i64 = 60;

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
    purge_cursor: Arc<Mutex<refresh::PurgeCursor>>,
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

/// What [`PgStore::learn_unionid`] does when another user holds the unionid.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Race {
    /// Both users are existing people: mark them as sharing it.
    Share,
    /// The user is being created: the holder is the same person, so join it instead.
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

mod export;
mod refresh;

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

/// A user as loaded, with each identity's stored (sealed) session key.
struct Loaded {
    user: User,
    keys: Vec<Option<(String, i128)>>,
}

impl Loaded {
    /// The stored key of the identity of `appid`.
    fn key(&self, appid: &str) -> Option<&(String, i128)> {
        let i = self.user.identities.iter().position(|i| i.appid == appid)?;
        self.keys[i].as_ref()
    }
}

const USER_COLUMNS: &str = "SELECT u.id, u.unionid, u.unionid_shared_with, u.created_at_ns, u.last_login_at_ns, \
     a.username, i.appid, i.openid, i.session_key, i.session_key_issued_at_ns \
     FROM users u LEFT JOIN accounts a ON a.user_id = u.id LEFT JOIN identities i ON i.user_id = u.id";

/// The user from the rows of a [`USER_COLUMNS`] query (one per identity), if any.
fn loaded(rows: &[PgRow]) -> Result<Option<Loaded>, StoreError> {
    let Some(first) = rows.first() else { return Ok(None) };
    let time = |nanos: i64| super::codec::time(nanos.into());
    let mut user = User {
        id: user_id(first.try_get("id")?),
        identities: Vec::new(),
        unionid: first.try_get("unionid")?,
        account: first.try_get("username")?,
        unionid_shared_with: first.try_get::<Vec<Uuid>, _>("unionid_shared_with")?.into_iter().map(user_id).collect(),
        created_at: time(first.try_get("created_at_ns")?)?,
        last_login_at: time(first.try_get("last_login_at_ns")?)?,
    };
    let mut keys = Vec::new();
    for row in rows {
        let Some(appid) = row.try_get::<Option<String>, _>("appid")? else { continue };
        user.identities.push(Identity { appid, openid: row.try_get("openid")? });
        let key: Option<String> = row.try_get("session_key")?;
        let issued: Option<i64> = row.try_get("session_key_issued_at_ns")?;
        keys.push(key.zip(issued).map(|(k, at)| (k, at.into())));
    }
    Ok(Some(Loaded { user, keys }))
}

async fn load<'e>(conn: impl Executor<'e, Database = Postgres>, id: Uuid) -> Result<Option<Loaded>, StoreError> {
    // Only constants are formatted in: values are bound.
    let rows = sqlx::query(AssertSqlSafe(format!("{USER_COLUMNS} WHERE u.id = $1 ORDER BY i.seq")))
        .bind(id)
        .fetch_all(conn)
        .await?;
    loaded(&rows)
}

async fn load_by_binding<'e>(
    conn: impl Executor<'e, Database = Postgres>,
    appid: &str,
    openid: &str,
) -> Result<Option<Loaded>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "{USER_COLUMNS} WHERE u.id = (SELECT user_id FROM identities WHERE appid = $1 AND openid = $2) ORDER BY i.seq"
    )))
    .bind(appid)
    .bind(openid)
    .fetch_all(conn)
    .await?;
    loaded(&rows)
}

/// The user `id`, which the transaction just changed; a racer may have removed it since.
async fn reload(conn: &mut PgConnection, id: Uuid) -> Result<User, Failure> {
    Ok(load(conn, id).await?.ok_or(Failure::Vanished)?.user)
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
        Ok(Self { pool, sealer, swept_at: Arc::default(), purge_cursor: Arc::default() })
    }

    fn keys<'a>(&'a self, id: &'a [u8]) -> Keys<'a> {
        Keys { sealer: &self.sealer, user: id }
    }

    pub(super) async fn login(
        &self,
        appid: &str,
        session: &WechatSession,
        create: bool,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let now = OffsetDateTime::now_utc();
        if let Some(record) = self.returning(appid, session, now).await? {
            return Ok(Some(record));
        }
        transact!(self, tx => self.settle(&mut tx, appid, session, create, now))
    }

    /// A returning login outside a transaction: one read, and a write only when something
    /// other than a first unionid changed. `None`: not bound, or a unionid to link (which
    /// takes [`PgStore::settle`]).
    async fn returning(
        &self,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let Some(Loaded { mut user, keys }) = load_by_binding(&self.pool, appid, &session.openid).await? else {
            return Ok(None);
        };
        let stored = user.identities.iter().position(|i| i.appid == appid).and_then(|i| keys[i].as_ref());
        let key = self.keys(user.id.as_bytes()).open(appid, stored)?;
        let changes = returning_changes(user.last_login_at, user.unionid.as_deref(), key.as_ref(), session, now);
        if changes.unionid.is_some() {
            return Ok(None);
        }
        if let Some(key) = &changes.session_key {
            let (sealed, _) = self.keys(user.id.as_bytes()).seal(appid, key)?;
            let updated = sqlx::query(
                "UPDATE identities SET session_key = $3, session_key_issued_at_ns = $4 \
                 WHERE appid = $1 AND openid = $2 AND user_id = $5",
            )
            .bind(appid)
            .bind(&session.openid)
            .bind(sealed)
            .bind(ns(key.issued_at)?)
            .bind(uuid(&user.id))
            .execute(&self.pool)
            .await?;
            if updated.rows_affected() == 0 {
                // Unbound meanwhile: settle it as a login of an unbound openid.
                return Ok(None);
            }
        }
        if let Some(at) = changes.last_login_at {
            sqlx::query("UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $2) WHERE id = $1")
                .bind(uuid(&user.id))
                .bind(ns(at)?)
                .execute(&self.pool)
                .await?;
            user.last_login_at = at;
        }
        Ok(Some(LoginRecord { user, created: false }))
    }

    /// A login in a transaction: the identity is bound already (a racer got there first,
    /// or a first unionid arrives), joins the user its unionid belongs to, or (when
    /// `create`) gets a new user. `Done(None)`: not bound and not created.
    async fn settle(
        &self,
        tx: &mut PgConnection,
        appid: &str,
        session: &WechatSession,
        create: bool,
        now: OffsetDateTime,
    ) -> Result<Step<Option<LoginRecord>>, Failure> {
        let key = StoredSessionKey { session_key: session.session_key.clone(), issued_at: now };
        if let Some(loaded) = load_by_binding(&mut *tx, appid, &session.openid).await? {
            let user = self.touch(tx, &loaded, appid, session, now).await?;
            return match self.learn_unionid(tx, user, session.unionid.as_deref(), Race::Share).await? {
                Step::Done(user) => Ok(Step::Done(Some(LoginRecord { user, created: false }))),
                Step::Retry => Ok(Step::Retry),
            };
        }
        let mut owner_seen = false;
        if let Some(unionid) = &session.unionid {
            let owner: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM unionids WHERE unionid = $1")
                .bind(unionid)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(owner) = owner {
                owner_seen = true;
                if self.insert_identity(tx, owner, appid, &session.openid, &key).await? {
                    sqlx::query("UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $2) WHERE id = $1")
                        .bind(owner)
                        .bind(ns(now)?)
                        .execute(&mut *tx)
                        .await?;
                    let user = reload(tx, owner).await?;
                    tracing::info!(user_id = %user.id, appid, "a login joined the user of its unionid");
                    return Ok(Step::Done(Some(LoginRecord { user, created: false })));
                }
                if self.bound(tx, appid, &session.openid).await? {
                    return Ok(Step::Retry);
                }
                tracing::warn!(
                    user_id = %user_id(owner),
                    appid,
                    "a unionid names a user that has another openid of this app; not joining"
                );
            }
        }
        if !create {
            return Ok(Step::Done(None));
        }
        let id = UserId::new();
        sqlx::query("INSERT INTO users (id, created_at_ns, last_login_at_ns) VALUES ($1, $2, $2)")
            .bind(uuid(&id))
            .bind(ns(now)?)
            .execute(&mut *tx)
            .await?;
        if !self.insert_identity(tx, uuid(&id), appid, &session.openid, &key).await? {
            return Ok(Step::Retry);
        }
        let user = reload(tx, uuid(&id)).await?;
        // Unless the unionid's owner refused this openid above, a unionid linked meanwhile
        // is another first login of this person (in another app): run again to join it.
        let race = if owner_seen { Race::Share } else { Race::Retry };
        Ok(match self.learn_unionid(tx, user, session.unionid.as_deref(), race).await? {
            Step::Done(user) => Step::Done(Some(LoginRecord { user, created: true })),
            Step::Retry => Step::Retry,
        })
    }

    /// Writes what a returning login changes (a new session key, `last_login_at`) in the
    /// transaction, and answers the user as changed. The unionid is left to the caller.
    async fn touch(
        &self,
        tx: &mut PgConnection,
        loaded: &Loaded,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<User, Failure> {
        let keys = self.keys(loaded.user.id.as_bytes());
        let stored = keys.open(appid, loaded.key(appid))?;
        let changes =
            returning_changes(loaded.user.last_login_at, loaded.user.unionid.as_deref(), stored.as_ref(), session, now);
        let mut user = loaded.user.clone();
        if let Some(key) = &changes.session_key {
            let (sealed, _) = keys.seal(appid, key)?;
            sqlx::query(
                "UPDATE identities SET session_key = $3, session_key_issued_at_ns = $4 WHERE appid = $1 AND openid = $2",
            )
            .bind(appid)
            .bind(&session.openid)
            .bind(sealed)
            .bind(ns(key.issued_at)?)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(at) = changes.last_login_at {
            sqlx::query("UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $2) WHERE id = $1")
                .bind(uuid(&user.id))
                .bind(ns(at)?)
                .execute(&mut *tx)
                .await?;
            user.last_login_at = at;
        }
        Ok(user)
    }

    /// Binds `openid` of `appid` to user `owner` with its session key. `false`: the openid
    /// is bound already, or `owner` has another openid of this app (the constraints).
    async fn insert_identity(
        &self,
        tx: &mut PgConnection,
        owner: Uuid,
        appid: &str,
        openid: &str,
        key: &StoredSessionKey,
    ) -> Result<bool, Failure> {
        let (sealed, issued) = self.keys(owner.as_bytes()).seal(appid, key)?;
        let inserted = sqlx::query(
            "INSERT INTO identities (appid, openid, user_id, session_key, session_key_issued_at_ns) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(appid)
        .bind(openid)
        .bind(owner)
        .bind(sealed)
        .bind(i64::try_from(issued).map_err(|_| StoreError::Corrupt("time out of range".into()))?)
        .execute(&mut *tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn bound(&self, tx: &mut PgConnection, appid: &str, openid: &str) -> Result<bool, Failure> {
        Ok(sqlx::query_scalar::<_, i32>("SELECT 1 FROM identities WHERE appid = $1 AND openid = $2")
            .bind(appid)
            .bind(openid)
            .fetch_optional(&mut *tx)
            .await?
            .is_some())
    }

    async fn unionid_owner(&self, tx: &mut PgConnection, unionid: &str) -> Result<Option<Uuid>, Failure> {
        Ok(sqlx::query_scalar("SELECT user_id FROM unionids WHERE unionid = $1")
            .bind(unionid)
            .fetch_optional(&mut *tx)
            .await?)
    }

    /// Gives `user` its first unionid, and links the unionid to it unless another user
    /// holds it already: then (per `race`) both are marked as sharing it, with a warning,
    /// or the transaction runs again. Two existing users are never merged silently.
    async fn learn_unionid(
        &self,
        tx: &mut PgConnection,
        user: User,
        unionid: Option<&str>,
        race: Race,
    ) -> Result<Step<User>, Failure> {
        let Some(unionid) = unionid.filter(|_| user.unionid.is_none()) else { return Ok(Step::Done(user)) };
        let me = uuid(&user.id);
        let linked = sqlx::query("INSERT INTO unionids (unionid, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(unionid)
            .bind(me)
            .execute(&mut *tx)
            .await?;
        let other = if linked.rows_affected() == 1 {
            None
        } else {
            match self.unionid_owner(tx, unionid).await? {
                // Removed meanwhile (the link went with its user): look again.
                None => return Ok(Step::Retry),
                Some(owner) if owner == me => None,
                Some(_) if race == Race::Retry => return Ok(Step::Retry),
                Some(owner) => Some(owner),
            }
        };
        sqlx::query(
            "UPDATE users SET unionid = $2, unionid_shared_with = CASE \
             WHEN $3::uuid IS NULL OR $3 = ANY(unionid_shared_with) THEN unionid_shared_with \
             ELSE array_append(unionid_shared_with, $3) END WHERE id = $1",
        )
        .bind(me)
        .bind(unionid)
        .bind(other)
        .execute(&mut *tx)
        .await?;
        if let Some(other) = other {
            sqlx::query(
                "UPDATE users SET unionid_shared_with = array_append(unionid_shared_with, $2) \
                 WHERE id = $1 AND NOT ($2 = ANY(unionid_shared_with))",
            )
            .bind(other)
            .bind(me)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(
                user_id = %user.id,
                other_user_id = %user_id(other),
                "two existing users turned out to share a unionid; they are not merged (see `wxauth users show`)"
            );
        }
        Ok(Step::Done(reload(tx, me).await?))
    }

    pub(super) async fn bind(
        &self,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
    ) -> Result<LoginRecord, StoreError> {
        let now = OffsetDateTime::now_utc();
        transact!(self, tx => self.bind_in(&mut tx, appid, session, username, ticket, now))
    }

    async fn bind_in(
        &self,
        tx: &mut PgConnection,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
        now: OffsetDateTime,
    ) -> Result<Step<LoginRecord>, Failure> {
        // Locked, so that the account cannot be removed before this commits.
        let owner: Uuid = sqlx::query_scalar("SELECT user_id FROM accounts WHERE username = $1 FOR SHARE")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NoSuchAccount)?;
        let bound: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM identities WHERE appid = $1 AND openid = $2")
            .bind(appid)
            .bind(&session.openid)
            .fetch_optional(&mut *tx)
            .await?;
        match bound {
            Some(other) if other != owner => return Err(StoreError::AlreadyBound.into()),
            Some(_) => {}
            None => {
                let has_app: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM identities WHERE user_id = $1 AND appid = $2")
                        .bind(owner)
                        .bind(appid)
                        .fetch_optional(&mut *tx)
                        .await?;
                if has_app.is_some() {
                    return Err(StoreError::AccountAlreadyBound.into());
                }
            }
        }
        // Spent only now: a refused bind leaves the ticket usable (another account, or a
        // corrected password). Spent at most once: the row is deleted.
        if let Some(ticket) = ticket {
            let expires: Option<i64> =
                sqlx::query_scalar("DELETE FROM bind_tickets WHERE id = $1 RETURNING expires_at_ns")
                    .bind(&ticket[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            let now = ns(now)?;
            if expires.is_none_or(|at| at <= now) {
                return Err(StoreError::TicketNotFound.into());
            }
        }
        let user = if bound.is_some() {
            // Bound to this account already: a retry, answered like a login.
            let loaded = load(&mut *tx, owner).await?.ok_or(StoreError::NoSuchAccount)?;
            self.touch(tx, &loaded, appid, session, now).await?
        } else {
            let key = StoredSessionKey { session_key: session.session_key.clone(), issued_at: now };
            if !self.insert_identity(tx, owner, appid, &session.openid, &key).await? {
                // Another bind of this openid or of this account committed first.
                return Ok(Step::Retry);
            }
            sqlx::query("UPDATE users SET last_login_at_ns = GREATEST(last_login_at_ns, $2) WHERE id = $1")
                .bind(owner)
                .bind(ns(now)?)
                .execute(&mut *tx)
                .await?;
            reload(tx, owner).await?
        };
        Ok(match self.learn_unionid(tx, user, session.unionid.as_deref(), Race::Share).await? {
            Step::Done(user) => Step::Done(LoginRecord { user, created: false }),
            Step::Retry => Step::Retry,
        })
    }

    pub(super) async fn unbind(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        transact!(self, tx => self.unbind_in(&mut tx, uuid(id)))
    }

    async fn unbind_in(&self, tx: &mut PgConnection, me: Uuid) -> Result<Step<Vec<Identity>>, Failure> {
        let rows = sqlx::query("SELECT appid, openid FROM identities WHERE user_id = $1 ORDER BY seq FOR UPDATE")
            .bind(me)
            .fetch_all(&mut *tx)
            .await?;
        let identities = rows
            .iter()
            .map(|r| Ok(Identity { appid: r.try_get("appid")?, openid: r.try_get("openid")? }))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        sqlx::query("DELETE FROM identities WHERE user_id = $1").bind(me).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM unionids WHERE user_id = $1").bind(me).execute(&mut *tx).await?;
        sqlx::query("UPDATE users SET unionid = NULL WHERE id = $1").bind(me).execute(&mut *tx).await?;
        Ok(Step::Done(identities))
    }

    pub(super) async fn put_ticket(&self, id: &TicketId, ticket: &BindTicket) -> Result<(), StoreError> {
        let sealed = self
            .sealer
            .seal(ticket.session.session_key.expose(), id)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        sqlx::query(
            "INSERT INTO bind_tickets (id, appid, openid, unionid, session_key, expires_at_ns) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET appid = $2, openid = $3, \
             unionid = $4, session_key = $5, expires_at_ns = $6",
        )
        .bind(&id[..])
        .bind(&ticket.appid)
        .bind(&ticket.session.openid)
        .bind(&ticket.session.unionid)
        .bind(sealed)
        .bind(ns(ticket.expires_at)?)
        .execute(&self.pool)
        .await?;
        self.sweep_tickets().await
    }

    /// Removes expired tickets, at most once per [`TICKET_SWEEP_SECS`] per replica.
    async fn sweep_tickets(&self) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let last = self.swept_at.load(Ordering::Relaxed);
        if now.unix_timestamp() - last < TICKET_SWEEP_SECS
            || self.swept_at.compare_exchange(last, now.unix_timestamp(), Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        sqlx::query("DELETE FROM bind_tickets WHERE expires_at_ns <= $1").bind(ns(now)?).execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn ticket(&self, id: &TicketId) -> Result<Option<BindTicket>, StoreError> {
        let Some(row) =
            sqlx::query("SELECT appid, openid, unionid, session_key, expires_at_ns FROM bind_tickets WHERE id = $1")
                .bind(&id[..])
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let expires_at = super::codec::time(row.try_get::<i64, _>("expires_at_ns")?.into())?;
        let sealed: String = row.try_get("session_key")?;
        // A ticket whose key does not open (the key file was replaced) is as good as gone.
        let Some(session_key) = self.sealer.open(&sealed, id).filter(|_| expires_at > OffsetDateTime::now_utc()) else {
            return Ok(None);
        };
        Ok(Some(BindTicket {
            appid: row.try_get("appid")?,
            session: WechatSession {
                openid: row.try_get("openid")?,
                unionid: row.try_get("unionid")?,
                session_key: SessionKey::new(session_key),
            },
            expires_at,
        }))
    }

    pub(super) async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(load(&self.pool, uuid(id)).await?.map(|l| l.user))
    }

    pub(super) async fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<User>, StoreError> {
        Ok(load_by_binding(&self.pool, appid, openid).await?.map(|l| l.user))
    }

    pub(super) async fn session_key(&self, id: &UserId, appid: &str) -> Result<Option<StoredSessionKey>, StoreError> {
        let row = sqlx::query(
            "SELECT session_key, session_key_issued_at_ns FROM identities WHERE user_id = $1 AND appid = $2",
        )
        .bind(uuid(id))
        .bind(appid)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key: Option<String> = row.try_get("session_key")?;
        let issued: Option<i64> = row.try_get("session_key_issued_at_ns")?;
        let stored = key.zip(issued).map(|(k, at)| (k, i128::from(at)));
        self.keys(id.as_bytes()).open(appid, stored.as_ref())
    }

    pub(super) async fn details(&self, id: &UserId) -> Result<Details, StoreError> {
        let sealed: Option<String> = sqlx::query_scalar("SELECT sealed FROM details WHERE user_id = $1")
            .bind(uuid(id))
            .fetch_optional(&self.pool)
            .await?;
        match sealed {
            Some(sealed) => DetailsRecord::open(sealed.as_bytes(), &self.sealer, id.as_bytes()),
            None => Ok(Details::default()),
        }
    }

    /// Changes a user's details with the user's row locked, so that the user cannot be
    /// removed, nor its details changed by another replica, between the read and the write.
    pub(super) async fn change_details(
        &self,
        id: &UserId,
        change: impl Fn(&mut Details),
    ) -> Result<Details, StoreError> {
        transact!(self, tx => self.change_details_in(&mut tx, id, &change))
    }

    async fn change_details_in(
        &self,
        tx: &mut PgConnection,
        id: &UserId,
        change: &impl Fn(&mut Details),
    ) -> Result<Step<Details>, Failure> {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(uuid(id))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NoSuchUser.into());
        }
        let sealed: Option<String> = sqlx::query_scalar("SELECT sealed FROM details WHERE user_id = $1")
            .bind(uuid(id))
            .fetch_optional(&mut *tx)
            .await?;
        let mut details = match sealed {
            Some(sealed) => DetailsRecord::open(sealed.as_bytes(), &self.sealer, id.as_bytes())?,
            None => Details::default(),
        };
        change(&mut details);
        let sealed = DetailsRecord::seal(&details, &self.sealer, id.as_bytes())?;
        let sealed = String::from_utf8(sealed).map_err(|_| StoreError::Corrupt("sealed details".into()))?;
        sqlx::query(
            "INSERT INTO details (user_id, sealed) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET sealed = $2",
        )
        .bind(uuid(id))
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        Ok(Step::Done(details))
    }

    pub(super) async fn add_account(&self, username: &str, password_hash: &str) -> Result<User, StoreError> {
        let now = OffsetDateTime::now_utc();
        transact!(self, tx => self.add_account_in(&mut tx, username, password_hash, now))
    }

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

    pub(super) async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row =
            sqlx::query("SELECT username, user_id, password_hash, created_at_ns FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(account).transpose()
    }

    pub(super) async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(
            "SELECT username, user_id, password_hash, created_at_ns FROM accounts ORDER BY username COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account).collect()
    }

    pub(super) async fn set_password(&self, username: &str, password_hash: &str) -> Result<(), StoreError> {
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

    pub(super) async fn remove_account(&self, username: &str) -> Result<User, StoreError> {
        transact!(self, tx => self.remove_account_in(&mut tx, username))
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

    /// Liveness: the replica's pool is open. Whether the database answers is for `/readyz`
    /// to say: when the database is down, restarting every replica does not help.
    pub(super) async fn check(&self) -> Result<(), StoreError> {
        match self.pool.is_closed() {
            true => Err(StoreError::Database("the connection pool is closed".into())),
            false => Ok(()),
        }
    }

    pub(super) async fn claim_mode(&self, mode: KeyMode) -> Result<(), StoreError> {
        let running = if mode == KeyMode::Dev { "dev" } else { "production" };
        sqlx::query("INSERT INTO meta (key, value) VALUES ('mode', $1) ON CONFLICT DO NOTHING")
            .bind(running)
            .execute(&self.pool)
            .await?;
        let recorded: String =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'mode'").fetch_one(&self.pool).await?;
        if recorded == running {
            return Ok(());
        }
        let recorded = if recorded == "dev" { "dev" } else { "production" };
        Err(StoreError::WrongMode { recorded, running, setting: "WXAUTH_DATABASE_URL" })
    }

    /// Records the id of this process's sealing key when none is recorded, and refuses
    /// another key. Replicas with different keys would each read only what they sealed
    /// themselves; racing ones find one winner in the primary key.
    pub(super) async fn claim_sealing_key(&self) -> Result<(), StoreError> {
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
    pub(super) async fn check_writable(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('write_probe', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
        )
        .bind(OffsetDateTime::now_utc().unix_timestamp().to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every acknowledged write is committed already: closing only ends the connections.
    pub(super) async fn close(&self) -> Result<(), StoreError> {
        self.pool.close().await;
        tracing::info!(target: "wxauth::store", "store closed");
        Ok(())
    }
}

fn account(row: &PgRow) -> Result<Account, StoreError> {
    Ok(Account {
        username: row.try_get("username")?,
        user: user_id(row.try_get("user_id")?),
        password_hash: row.try_get("password_hash")?,
        created_at: super::codec::time(row.try_get::<i64, _>("created_at_ns")?.into())?,
    })
}
