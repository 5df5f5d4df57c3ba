//! Refresh tokens on PostgreSQL: one row per family, under the same policy as on sled
//! ([`crate::store::refresh`]), made atomic across replicas by the database. A
//! rotation locks its family's row (`FOR UPDATE`): of two replicas presenting one token,
//! the second waits for the first to commit, then presents an older generation, which
//! revokes the family. Removing a user removes its families (a foreign key with cascade).

use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, PgConnection, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, PgStore, Step, events, ns, user_id, users, users::USER_COLUMNS, uuid};
use crate::{
    domain::{Identity, User, UserId},
    store::{
        Origin, PurgeBatch, RefreshGrant, RefreshId, Refreshed, Session, StoreError,
        backend::RefreshTokens,
        events::Event,
        outbox::Delivery,
        refresh::{Family, Rotation, cap, live, purgeable, rotation},
    },
};

/// A rotation when the token is the family's current one and the family is live (what the
/// shared policy calls [`Rotation::Advance`], stated in SQL): `$1` family, `$2` user, `$3`
/// presented generation, `$4` its verifier hash, `$5` the next one's, `$6` its expiry, `$7`
/// now, `$8` the last generation there is.
const ADVANCE: &str = "UPDATE refresh_families SET generation = generation + 1, verifier_hash = $5, \
     expires_at_ns = $6, last_refresh_ns = $7 WHERE family = $1 AND user_id = $2 AND generation = $3 \
     AND verifier_hash = $4 AND NOT revoked AND expires_at_ns > $7 AND generation < $8";

/// [`ADVANCE`], the family's user, and the `refresh` event in one statement: a row per
/// identity of the user ([`USER_COLUMNS`], `id` null if the user is gone), none when it
/// did not advance. The event is kept, from `$9` ([`events::bind_one`]), when the user
/// still holds the family's identity and may log in at `$7`, as a refresh requires
/// ([`crate::domain::User::admits_session`]).
static ADVANCE_READING_USER: LazyLock<String> = LazyLock::new(|| {
    let user_columns = USER_COLUMNS.replacen(
        " FROM users u",
        ", r.appid AS rotated_appid, r.openid AS rotated_openid FROM rotated r LEFT JOIN users u ON u.id = r.user_id",
        1,
    );
    format!(
        "WITH rotated AS ({ADVANCE} RETURNING user_id, appid, openid), \
         admitted AS (SELECT u.id, r.appid FROM rotated r JOIN users u ON u.id = r.user_id \
         WHERE EXISTS (SELECT 1 FROM identities b WHERE b.user_id = u.id AND b.appid = r.appid \
         AND b.openid = r.openid) AND {admits}), \
         {event} {user_columns} ORDER BY i.seq",
        admits = users::admits_login_at("$7"),
        event = events::keeping_one("admitted", "appid", 9),
    )
});

/// What the shared policy (`refresh::revokes`) revokes, in SQL: any token of the family
/// that is not newer than its current one, the current one by its verifier. `$1` family,
/// `$2` user, `$3` generation, `$4` verifier hash.
const REVOKE: &str = "UPDATE refresh_families SET revoked = true WHERE family = $1 AND user_id = $2 AND NOT revoked \
     AND (generation > $3 OR (generation = $3 AND verifier_hash = $4))";

/// [`REVOKE`] and, when it revoked, the `logout` event from `$5` ([`events::bind_one`]).
static REVOKE_RECORDING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH revoked AS ({REVOKE} RETURNING user_id AS id), {} SELECT EXISTS (SELECT 1 FROM revoked) AS revoked",
        events::keeping_one("revoked", "NULL", 5)
    )
});

/// Every live family of user `$1` revoked, and the `logout_all` event from `$2`
/// ([`events::bind_one`]) in the app `$10`, whether or not a family was live.
static REVOKE_USER_RECORDING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH revoked AS (UPDATE refresh_families SET revoked = true WHERE user_id = $1 AND NOT revoked), {} SELECT 1",
        events::keeping_one("(SELECT $1::uuid AS id) AS caller", "$10::text", 2)
    )
});

/// Where a purge pass stands: the last family looked at.
#[derive(Default)]
pub(super) struct PurgeCursor {
    after: Option<Uuid>,
}

struct StoredFamily {
    generation: u32,
    verifier_hash: Vec<u8>,
    user: Uuid,
    appid: String,
    openid: String,
    expires_at: i64,
    revoked: bool,
}

/// The columns [`StoredFamily::read`] reads.
const FAMILY_COLUMNS: &str = "generation, verifier_hash, user_id, appid, openid, expires_at_ns, revoked";

impl StoredFamily {
    fn read(row: &PgRow) -> Result<Self, StoreError> {
        let generation: i64 = row.try_get("generation")?;
        Ok(Self {
            generation: u32::try_from(generation)
                .map_err(|_| StoreError::Corrupt(format!("refresh generation {generation}")))?,
            verifier_hash: row.try_get("verifier_hash")?,
            user: row.try_get("user_id")?,
            appid: row.try_get("appid")?,
            openid: row.try_get("openid")?,
            expires_at: row.try_get("expires_at_ns")?,
            revoked: row.try_get("revoked")?,
        })
    }

    fn family(&self) -> Family<'_> {
        Family {
            generation: self.generation,
            verifier_hash: &self.verifier_hash,
            revoked: self.revoked,
            expires_at: i128::from(self.expires_at),
        }
    }
}

impl RefreshTokens for PgStore {
    /// One statement: the new family comes in and, when the [`TrimSchedule`] says this
    /// login trims, the user's oldest families beyond `keep - 1` go (a data-modifying `WITH`
    /// runs whether or not it is referenced). Racing logins of one user skip the rows
    /// another is removing (`SKIP LOCKED`) instead of deadlocking on them; the next trim
    /// removes what they left.
    ///
    /// [`TrimSchedule`]: crate::store::refresh::TrimSchedule
    async fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &RefreshGrant,
        origin: &Origin,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        keep: usize,
    ) -> Result<(), StoreError> {
        let started = sqlx::query(
            "WITH evicted AS (DELETE FROM refresh_families WHERE $12 AND family IN \
             (SELECT family FROM refresh_families WHERE user_id = $5 ORDER BY family DESC OFFSET $9 \
             FOR UPDATE SKIP LOCKED)) \
             INSERT INTO refresh_families (family, generation, verifier_hash, started_ns, user_id, appid, openid, \
             expires_at_ns, last_refresh_ns, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $4, $10, $11)",
        )
        .bind(Uuid::from_bytes(id.family))
        .bind(i64::from(id.generation))
        .bind(&id.verifier_hash[..])
        .bind(ns(now)?)
        .bind(uuid(&grant.user))
        .bind(&grant.identity.appid)
        .bind(&grant.identity.openid)
        .bind(ns(expires_at)?)
        .bind(i64::try_from(cap(keep) - 1).unwrap_or(i64::MAX))
        .bind(&origin.ip)
        .bind(&origin.user_agent)
        .bind(self.trim.due(grant.user.as_bytes(), keep))
        .execute(&self.pool)
        .await;
        match started {
            Ok(_) => Ok(()),
            // The user was removed since the login read it: its token would be refused at
            // its first use anyway, so there is nothing to keep.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23503") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// One statement when the token is the family's current one and the family is live
    /// (what the shared policy calls [`Rotation::Advance`], stated in SQL): the update's
    /// row lock orders racing replicas, and the second finds the generation moved on.
    /// Anything else (unknown, revoked, expired, a replay) is judged by the shared policy
    /// in a transaction. The verifier hashes are compared by the database, not in
    /// constant time: they are hashes of the secret, which a timing reveals nothing of.
    async fn rotate_refresh(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        let rotated = bind_advance(
            sqlx::query(AssertSqlSafe(format!("{ADVANCE} RETURNING appid, openid"))),
            old,
            next_verifier_hash,
            now,
            expires_at,
        )?
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = rotated {
            let identity = Identity { appid: row.try_get("appid")?, openid: row.try_get("openid")? };
            return Ok(Refreshed::Rotated(RefreshGrant { user: old.user, identity }));
        }
        self.rotate_judged(old, next_verifier_hash, now, expires_at).await
    }

    /// One statement: [`REVOKE`].
    async fn revoke_refresh(&self, id: &RefreshId) -> Result<bool, StoreError> {
        let revoked = bind_revoke(sqlx::query(REVOKE), id).execute(&self.pool).await?;
        Ok(revoked.rows_affected() == 1)
    }

    async fn revoke_user_refresh(&self, user: &UserId) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_families SET revoked = true WHERE user_id = $1 AND NOT revoked")
            .bind(uuid(user))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sessions(&self, user: &UserId, now: OffsetDateTime) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT family, {FAMILY_COLUMNS}, started_ns, last_refresh_ns, ip, user_agent FROM refresh_families \
             WHERE user_id = $1 AND NOT revoked ORDER BY family DESC"
        )))
        .bind(uuid(user))
        .fetch_all(&self.pool)
        .await?;
        let now = now.unix_timestamp_nanos();
        let mut sessions = Vec::new();
        for row in &rows {
            if !live(&StoredFamily::read(row)?.family(), now) {
                continue;
            }
            let at = |column| -> Result<OffsetDateTime, StoreError> {
                crate::store::codec::time(i128::from(row.try_get::<i64, _>(column)?))
            };
            sessions.push(Session {
                family: row.try_get::<Uuid, _>("family")?.into_bytes(),
                appid: row.try_get("appid")?,
                created_at: at("started_ns")?,
                last_refresh_at: at("last_refresh_ns")?,
                origin: Origin { ip: row.try_get("ip")?, user_agent: row.try_get("user_agent")? },
            });
        }
        Ok(sessions)
    }

    /// One statement: the family is revoked when the shared policy calls it [`live`].
    async fn revoke_session(&self, user: &UserId, family: &[u8; 16], now: OffsetDateTime) -> Result<bool, StoreError> {
        let revoked = sqlx::query(
            "UPDATE refresh_families SET revoked = true WHERE family = $1 AND user_id = $2 AND NOT revoked \
             AND expires_at_ns > $3",
        )
        .bind(Uuid::from_bytes(*family))
        .bind(uuid(user))
        .bind(ns(now)?)
        .execute(&self.pool)
        .await?;
        Ok(revoked.rows_affected() == 1)
    }

    /// Families the shared policy calls purgeable, in batches by family id, resuming after
    /// the last one looked at. The batch is locked while it is judged, so that no rotation
    /// changes a family between the judgement and the removal. Families of removed users
    /// are already gone (the foreign key). Each replica keeps its own cursor: two replicas
    /// purging at once only repeat each other's work.
    async fn purge_refresh(&self, now: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        let after = self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner()).after;
        let (seen, last, removed) = transact!(self, tx => self.purge_in(&mut tx, after, now, limit))?;
        let done = seen < limit;
        let after = if done { None } else { last };
        *self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner()) = PurgeCursor { after };
        Ok(PurgeBatch { removed, done })
    }
}

/// Binds [`ADVANCE`]'s parameters to `query`.
fn bind_advance<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    old: &RefreshId,
    next_verifier_hash: &[u8; 32],
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    Ok(query
        .bind(Uuid::from_bytes(old.family))
        .bind(uuid(&old.user))
        .bind(i64::from(old.generation))
        .bind(old.verifier_hash.to_vec())
        .bind(next_verifier_hash.to_vec())
        .bind(ns(expires_at)?)
        .bind(ns(now)?)
        .bind(i64::from(u32::MAX)))
}

/// Binds [`REVOKE`]'s parameters to `query`.
fn bind_revoke<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    id: &RefreshId,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(Uuid::from_bytes(id.family))
        .bind(uuid(&id.user))
        .bind(i64::from(id.generation))
        .bind(id.verifier_hash.to_vec())
}

impl PgStore {
    /// [`crate::store::Store::rotate_refresh_reading_user`] in one statement when the token
    /// advances its family ([`ADVANCE_READING_USER`]); `None` otherwise, for
    /// [`PgStore::rotate_judged`].
    pub(crate) async fn rotate_at_once(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        event: &Event,
        deliveries: &[Delivery],
    ) -> Result<Option<(Refreshed, Option<User>)>, StoreError> {
        let query = bind_advance(
            sqlx::query(AssertSqlSafe(ADVANCE_READING_USER.as_str())),
            old,
            next_verifier_hash,
            now,
            expires_at,
        )?;
        let rows = events::bind_one(query, event, deliveries)?.fetch_all(&self.pool).await?;
        let Some(first) = rows.first() else { return Ok(None) };
        let identity = Identity { appid: first.try_get("rotated_appid")?, openid: first.try_get("rotated_openid")? };
        let rotated = Refreshed::Rotated(RefreshGrant { user: old.user, identity });
        // A family outlives its user only if the foreign key's cascade did not run.
        if first.try_get::<Option<Uuid>, _>("id")?.is_none() {
            return Ok(Some((rotated, None)));
        }
        Ok(Some((rotated, super::users::loaded(&rows)?.map(|l| l.user))))
    }

    /// A rotation judged by the shared policy in a transaction: what
    /// [`RefreshTokens::rotate_refresh`] does when its one statement did not advance.
    pub(crate) async fn rotate_judged(
        &self,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        transact!(self, tx => self.rotate_in(&mut tx, old, next_verifier_hash, now, expires_at))
    }

    /// [`crate::store::Store::revoke_refresh_recording`] in one statement
    /// ([`REVOKE_RECORDING`]).
    pub(crate) async fn revoke_recording(
        &self,
        id: &RefreshId,
        event: &Event,
        deliveries: &[Delivery],
    ) -> Result<bool, StoreError> {
        let query = bind_revoke(sqlx::query(AssertSqlSafe(REVOKE_RECORDING.as_str())), id);
        let row = events::bind_one(query, event, deliveries)?.fetch_one(&self.pool).await?;
        Ok(row.try_get("revoked")?)
    }

    /// [`crate::store::Store::revoke_user_refresh_recording`] in one statement
    /// ([`REVOKE_USER_RECORDING`]).
    pub(crate) async fn revoke_user_recording(
        &self,
        user: &UserId,
        event: &Event,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        let query = sqlx::query(AssertSqlSafe(REVOKE_USER_RECORDING.as_str())).bind(uuid(user));
        events::bind_one(query, event, deliveries)?.bind(event.appid.as_deref()).execute(&self.pool).await?;
        Ok(())
    }

    /// The user's family `family`, locked until the transaction ends.
    async fn locked_family(
        &self,
        tx: &mut PgConnection,
        user: &UserId,
        family: &[u8; 16],
    ) -> Result<Option<StoredFamily>, Failure> {
        let Some(row) = sqlx::query(AssertSqlSafe(format!(
            "SELECT {FAMILY_COLUMNS} FROM refresh_families WHERE family = $1 AND user_id = $2 FOR UPDATE"
        )))
        .bind(Uuid::from_bytes(*family))
        .bind(uuid(user))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(StoredFamily::read(&row)?))
    }

    /// One batch of the purge: how many families it looked at, the last one, and how many
    /// it removed.
    async fn purge_in(
        &self,
        tx: &mut PgConnection,
        after: Option<Uuid>,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Step<(usize, Option<Uuid>, usize)>, Failure> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT family, {FAMILY_COLUMNS} FROM refresh_families WHERE $1::uuid IS NULL OR family > $1 \
             ORDER BY family LIMIT $2 FOR UPDATE"
        )))
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let now = now.unix_timestamp_nanos();
        let mut gone = Vec::new();
        for row in &rows {
            if purgeable(&StoredFamily::read(row)?.family(), now, true) {
                gone.push(row.try_get::<Uuid, _>("family")?);
            }
        }
        if !gone.is_empty() {
            sqlx::query("DELETE FROM refresh_families WHERE family = ANY($1)").bind(&gone).execute(&mut *tx).await?;
        }
        let last = rows.last().map(|row| row.try_get::<Uuid, _>("family")).transpose()?;
        Ok(Step::Done((rows.len(), last, gone.len())))
    }

    async fn rotate_in(
        &self,
        tx: &mut PgConnection,
        old: &RefreshId,
        next_verifier_hash: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Step<Refreshed>, Failure> {
        let Some(row) = self.locked_family(tx, &old.user, &old.family).await? else {
            return Ok(Step::Done(Refreshed::Unknown));
        };
        let family = Uuid::from_bytes(old.family);
        let outcome = match rotation(&row.family(), old, i128::from(ns(now)?)) {
            Rotation::Refuse(refusal) => refusal.into(),
            Rotation::Revoke => {
                sqlx::query("UPDATE refresh_families SET revoked = true WHERE family = $1")
                    .bind(family)
                    .execute(&mut *tx)
                    .await?;
                Refreshed::Reused
            }
            Rotation::Advance(generation) => {
                sqlx::query(
                    "UPDATE refresh_families SET generation = $2, verifier_hash = $3, expires_at_ns = $4, \
                     last_refresh_ns = $5 WHERE family = $1",
                )
                .bind(family)
                .bind(i64::from(generation))
                .bind(&next_verifier_hash[..])
                .bind(ns(expires_at)?)
                .bind(ns(now)?)
                .execute(&mut *tx)
                .await?;
                Refreshed::Rotated(RefreshGrant {
                    user: user_id(row.user),
                    identity: Identity { appid: row.appid, openid: row.openid },
                })
            }
        };
        Ok(Step::Done(outcome))
    }
}
