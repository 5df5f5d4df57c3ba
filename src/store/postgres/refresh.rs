//! Refresh tokens on PostgreSQL: the same families, single use and reuse detection as on
//! sled ([`crate::store`]), made atomic across replicas by the database. A rotation locks
//! the presented token's row (`FOR UPDATE`): of two replicas presenting one token, the
//! second waits for the first to commit, then sees it spent, which revokes the family.
//! Revocations name a family (or a user's cutoff), so a token rotated into a family while
//! it is being revoked is revoked with it.

use sqlx::{AssertSqlSafe, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, PgStore, Step, ns, user_id, uuid};
use crate::{
    domain::{Identity, UserId},
    store::{PurgeBatch, RefreshGrant, RefreshId, Refreshed, StoreError},
};

/// Where a purge pass stands.
#[derive(Default)]
pub(super) struct PurgeCursor {
    /// 0: tokens, 1: revoked families, 2: cutoffs.
    table: u8,
    /// The last key looked at in the current table.
    after: Option<Uuid>,
}

/// The tables a purge pass goes through, each with its key and what makes a row dead at `$2`.
const PURGED: [(&str, &str, &str); 3] = [
    (
        "refresh_tokens",
        "selector",
        "t.expires_at_ns <= $2 \
         OR EXISTS (SELECT 1 FROM refresh_revoked r WHERE r.family = t.family) \
         OR EXISTS (SELECT 1 FROM refresh_cutoffs c WHERE c.user_id = t.user_id AND c.cutoff_ns >= t.family_started_ns)",
    ),
    ("refresh_revoked", "family", "t.keep_until_ns <= $2"),
    ("refresh_cutoffs", "user_id", "t.keep_until_ns <= $2"),
];

struct Token {
    family: Uuid,
    family_started: i64,
    user: Uuid,
    appid: String,
    openid: String,
    expires_at: i64,
    spent: bool,
}

impl PgStore {
    /// The token `id`, locked until the transaction ends, if the verifier matches.
    async fn locked_token(&self, tx: &mut PgConnection, id: &RefreshId) -> Result<Option<Token>, Failure> {
        let Some(row) = sqlx::query(
            "SELECT verifier_hash, family, family_started_ns, user_id, appid, openid, expires_at_ns, spent \
             FROM refresh_tokens WHERE selector = $1 FOR UPDATE",
        )
        .bind(Uuid::from_bytes(id.selector))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let hash: Vec<u8> = row.try_get("verifier_hash")?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(&hash, &id.verifier_hash).is_err() {
            return Ok(None);
        }
        Ok(Some(Token {
            family: row.try_get("family")?,
            family_started: row.try_get("family_started_ns")?,
            user: row.try_get("user_id")?,
            appid: row.try_get("appid")?,
            openid: row.try_get("openid")?,
            expires_at: row.try_get("expires_at_ns")?,
            spent: row.try_get("spent")?,
        }))
    }

    async fn revoked(&self, tx: &mut PgConnection, token: &Token) -> Result<bool, Failure> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM refresh_revoked WHERE family = $1) \
             OR EXISTS (SELECT 1 FROM refresh_cutoffs WHERE user_id = $2 AND cutoff_ns >= $3)",
        )
        .bind(token.family)
        .bind(token.user)
        .bind(token.family_started)
        .fetch_one(&mut *tx)
        .await?)
    }

    /// Revokes `family` until `keep_until`, or longer if it was revoked for longer.
    async fn revoke_family(&self, tx: &mut PgConnection, family: Uuid, keep_until: i64) -> Result<(), Failure> {
        sqlx::query(
            "INSERT INTO refresh_revoked (family, keep_until_ns) VALUES ($1, $2) \
             ON CONFLICT (family) DO UPDATE SET keep_until_ns = GREATEST(refresh_revoked.keep_until_ns, $2)",
        )
        .bind(family)
        .bind(keep_until)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn start_refresh(
        &self,
        id: &RefreshId,
        grant: &crate::store::RefreshGrant,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (selector, verifier_hash, family, family_started_ns, user_id, appid, openid, \
             expires_at_ns) VALUES ($1, $2, $1, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::from_bytes(id.selector))
        .bind(&id.verifier_hash[..])
        .bind(ns(now)?)
        .bind(uuid(&grant.user))
        .bind(&grant.identity.appid)
        .bind(&grant.identity.openid)
        .bind(ns(expires_at)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn rotate_refresh(
        &self,
        old: &RefreshId,
        new: &RefreshId,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Refreshed, StoreError> {
        transact!(self, tx => self.rotate_in(&mut tx, old, new, now, expires_at))
    }

    async fn rotate_in(
        &self,
        tx: &mut PgConnection,
        old: &RefreshId,
        new: &RefreshId,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<Step<Refreshed>, Failure> {
        let Some(token) = self.locked_token(tx, old).await? else { return Ok(Step::Done(Refreshed::Unknown)) };
        if self.revoked(tx, &token).await? {
            return Ok(Step::Done(Refreshed::Revoked));
        }
        if token.spent {
            // Every token of the family expires by the newest one's expiry, which is at
            // most a lifetime after the newest rotation: `expires_at` (now + lifetime).
            self.revoke_family(tx, token.family, ns(expires_at)?).await?;
            return Ok(Step::Done(Refreshed::Reused));
        }
        if token.expires_at <= ns(now)? {
            return Ok(Step::Done(Refreshed::Expired));
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (selector, verifier_hash, family, family_started_ns, user_id, appid, openid, \
             expires_at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::from_bytes(new.selector))
        .bind(&new.verifier_hash[..])
        .bind(token.family)
        .bind(token.family_started)
        .bind(token.user)
        .bind(&token.appid)
        .bind(&token.openid)
        .bind(ns(expires_at)?)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE refresh_tokens SET spent = true WHERE selector = $1")
            .bind(Uuid::from_bytes(old.selector))
            .execute(&mut *tx)
            .await?;
        Ok(Step::Done(Refreshed::Rotated(RefreshGrant {
            user: user_id(token.user),
            identity: Identity { appid: token.appid, openid: token.openid },
        })))
    }

    pub(in crate::store) async fn revoke_refresh(
        &self,
        id: &RefreshId,
        keep_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        transact!(self, tx => self.revoke_in(&mut tx, id, keep_until))
    }

    async fn revoke_in(
        &self,
        tx: &mut PgConnection,
        id: &RefreshId,
        keep_until: OffsetDateTime,
    ) -> Result<Step<()>, Failure> {
        if let Some(token) = self.locked_token(tx, id).await? {
            self.revoke_family(tx, token.family, ns(keep_until)?).await?;
        }
        Ok(Step::Done(()))
    }

    pub(in crate::store) async fn revoke_user_refresh(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        keep_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_cutoffs (user_id, cutoff_ns, keep_until_ns) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET cutoff_ns = GREATEST(refresh_cutoffs.cutoff_ns, $2), \
             keep_until_ns = GREATEST(refresh_cutoffs.keep_until_ns, $3)",
        )
        .bind(uuid(user))
        .bind(ns(now)?)
        .bind(ns(keep_until)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Tokens first, then the revocations that no live token needs any more, each batch
    /// resuming after the last key looked at. Each replica keeps its own cursor: two
    /// replicas purging at once only repeat each other's work.
    pub(in crate::store) async fn purge_refresh(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<PurgeBatch, StoreError> {
        let now = ns(now)?;
        let (table, after) = {
            let cursor = self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner());
            (cursor.table, cursor.after)
        };
        let (mut table, mut after, mut removed, mut seen) = (table, after, 0usize, 0usize);
        while let Some((name, key, dead)) = PURGED.get(usize::from(table)) {
            let want = i64::try_from(limit.saturating_sub(seen)).unwrap_or(i64::MAX);
            // Only the constants of [`PURGED`] are formatted in.
            let row = sqlx::query(AssertSqlSafe(format!(
                "WITH batch AS (SELECT {key} AS k FROM {name} WHERE $1::uuid IS NULL OR {key} > $1 \
                 ORDER BY {key} LIMIT $3), \
                 gone AS (DELETE FROM {name} t USING batch b WHERE t.{key} = b.k AND ({dead}) RETURNING 1) \
                 SELECT (SELECT count(*) FROM batch) AS seen, \
                 (SELECT k FROM batch ORDER BY k DESC LIMIT 1) AS last, \
                 (SELECT count(*) FROM gone) AS removed"
            )))
            .bind(after)
            .bind(now)
            .bind(want)
            .fetch_one(&self.pool)
            .await?;
            let batch_seen = row.try_get::<i64, _>("seen")? as usize;
            removed += row.try_get::<i64, _>("removed")? as usize;
            seen += batch_seen;
            if seen >= limit {
                after = row.try_get("last")?;
                *self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner()) = PurgeCursor { table, after };
                return Ok(PurgeBatch { removed, done: false });
            }
            table += 1;
            after = None;
        }
        *self.purge_cursor.lock().unwrap_or_else(|e| e.into_inner()) = PurgeCursor::default();
        Ok(PurgeBatch { removed, done: true })
    }
}
