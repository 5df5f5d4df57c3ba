//! Merging users on PostgreSQL: one transaction with both users' rows locked, in id order
//! (two merges of the same pair in opposite directions cannot deadlock).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, PgStore, Step, ns, phone_index_column, user_id, users::load, users::reload, uuid};
use crate::{
    domain::{Details, User, UserId},
    store::{StoreError, backend::Merges, codec::DetailsRecord, merge},
};

impl Merges for PgStore {
    async fn merge_users(&self, into: &UserId, from: &UserId, now: OffsetDateTime) -> Result<User, StoreError> {
        transact!(self, tx => self.merge_in(&mut tx, into, from, now))
    }

    async fn merged_into(&self, from: &UserId) -> Result<Option<UserId>, StoreError> {
        let into: Option<Uuid> = sqlx::query_scalar("SELECT into_id FROM merged_users WHERE from_id = $1")
            .bind(uuid(from))
            .fetch_optional(&self.pool)
            .await?;
        Ok(into.map(user_id))
    }
}

impl PgStore {
    async fn merge_in(
        &self,
        tx: &mut PgConnection,
        into: &UserId,
        from: &UserId,
        now: OffsetDateTime,
    ) -> Result<Step<User>, Failure> {
        let ids = [uuid(into), uuid(from)];
        let locked: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids[..])
            .fetch_all(&mut *tx)
            .await?;
        let (Some(kept), Some(gone)) = (load(&mut *tx, ids[0]).await?, load(&mut *tx, ids[1]).await?) else {
            return Err(StoreError::NoSuchUser.into());
        };
        if locked.len() < 2 && into != from {
            return Err(StoreError::NoSuchUser.into());
        }
        if let Some(reason) = merge::refusal(&kept.user, &gone.user, now) {
            return Err(StoreError::MergeRefused(reason).into());
        }
        let merged = merge::merged(&kept.user, &gone.user).map_err(StoreError::MergeRefused)?;
        // Session keys are sealed for their user: sealed again for the kept one.
        for (identity, stored) in gone.user.identities.iter().zip(&gone.keys) {
            let key = self.keys(from.as_bytes()).open(&identity.appid, stored.as_ref())?;
            let sealed = key.map(|k| self.keys(into.as_bytes()).seal(&identity.appid, &k)).transpose()?;
            let (sealed, issued) = sealed.unzip();
            let issued = issued.map(|i| i64::try_from(i).map_err(|_| StoreError::Corrupt("time out of range".into())));
            sqlx::query(
                "UPDATE identities SET user_id = $3, session_key = $4, session_key_issued_at_ns = $5 \
                 WHERE appid = $1 AND openid = $2",
            )
            .bind(&identity.appid)
            .bind(&identity.openid)
            .bind(ids[0])
            .bind(sealed)
            .bind(issued.transpose()?)
            .execute(&mut *tx)
            .await?;
        }
        // The events too: an erasure of the kept user then strips them as its own.
        for table in ["unionids", "accounts", "refresh_families", "events"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET user_id = $1 WHERE user_id = $2")))
                .bind(ids[0])
                .bind(ids[1])
                .execute(&mut *tx)
                .await?;
        }
        self.merge_details(tx, into, from).await?;
        let controls = &merged.controls;
        sqlx::query(
            "UPDATE users SET unionid = $2, unionid_shared_with = $3, roles = $4, claims = $5, created_at_ns = $6, \
             last_login_at_ns = $7 WHERE id = $1",
        )
        .bind(ids[0])
        .bind(&merged.unionid)
        .bind(merged.unionid_shared_with.iter().map(uuid).collect::<Vec<_>>())
        .bind(&controls.roles)
        .bind(if controls.claims.is_empty() { String::new() } else { controls.claims.to_json() })
        .bind(ns(merged.created_at)?)
        .bind(ns(merged.last_login_at)?)
        .execute(&mut *tx)
        .await?;
        // Others that shared a unionid with the merged user share it with the kept one.
        sqlx::query(
            "UPDATE users SET unionid_shared_with = \
             array_append(array_remove(array_remove(unionid_shared_with, $2), $1), $1) \
             WHERE $2 = ANY(unionid_shared_with) AND id <> $1",
        )
        .bind(ids[0])
        .bind(ids[1])
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE merged_users SET into_id = $1 WHERE into_id = $2")
            .bind(ids[0])
            .bind(ids[1])
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1").bind(ids[1]).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO merged_users (from_id, into_id) VALUES ($1, $2)")
            .bind(ids[1])
            .bind(ids[0])
            .execute(&mut *tx)
            .await?;
        Ok(Step::Done(reload(tx, ids[0]).await?))
    }

    /// The kept user's details: its own, and what only the merged one had (sealed again
    /// for the kept user).
    async fn merge_details(&self, tx: &mut PgConnection, into: &UserId, from: &UserId) -> Result<(), Failure> {
        let read = async |tx: &mut PgConnection, id: &UserId| -> Result<Details, Failure> {
            let sealed: Option<String> = sqlx::query_scalar("SELECT sealed FROM details WHERE user_id = $1")
                .bind(uuid(id))
                .fetch_optional(&mut *tx)
                .await?;
            Ok(match sealed {
                Some(sealed) => DetailsRecord::open(sealed.as_bytes(), &self.sealer, id.as_bytes())?,
                None => Details::default(),
            })
        };
        let (kept, gone) = (read(tx, into).await?, read(tx, from).await?);
        if gone == Details::default() {
            return Ok(());
        }
        let details = merge::merged_details(kept, gone);
        let sealed = DetailsRecord::seal(&details, &self.sealer, into.as_bytes())?;
        let sealed = String::from_utf8(sealed).map_err(|_| StoreError::Corrupt("sealed details".into()))?;
        sqlx::query("DELETE FROM details WHERE user_id = $1").bind(uuid(from)).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO details (user_id, sealed, phone_index) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET sealed = $2, phone_index = $3",
        )
        .bind(uuid(into))
        .bind(sealed)
        .bind(phone_index_column(&self.sealer, &details))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
