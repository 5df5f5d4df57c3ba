//! Binds and unbinds on PostgreSQL, and the unionid links that logins and binds learn, each
//! in a transaction whose constraints settle races with other replicas.

use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Failure, PgStore, Step, ns, user_id,
    users::{load, reload},
    uuid,
};
use crate::{
    domain::{Identity, User, UserId, WechatSession},
    store::{
        LoginRecord, StoreError, StoredSessionKey, TicketId,
        backend::Links,
        links::{Bind, bind_target, shares_with},
        tickets::spend,
        users::new_unionid,
    },
};

/// What [`PgStore::learn_unionid`] does when another user holds the unionid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Race {
    /// Both users are existing people: mark them as sharing it.
    Share,
    /// The user is being created: the holder is the same person, so join it instead.
    Retry,
}

impl Links for PgStore {
    async fn bind(
        &self,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
        now: OffsetDateTime,
    ) -> Result<LoginRecord, StoreError> {
        transact!(self, tx => self.bind_in(&mut tx, appid, session, username, ticket, now))
    }

    async fn unbind(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        transact!(self, tx => self.unbind_in(&mut tx, uuid(id)))
    }
}

impl PgStore {
    async fn unionid_owner(&self, tx: &mut PgConnection, unionid: &str) -> Result<Option<Uuid>, Failure> {
        Ok(sqlx::query_scalar("SELECT user_id FROM unionids WHERE unionid = $1")
            .bind(unionid)
            .fetch_optional(&mut *tx)
            .await?)
    }

    /// Gives `user` its first unionid, and links the unionid to it unless another user
    /// holds it already: then (per `race`) both are marked as sharing it, with a warning,
    /// or the transaction runs again. Two existing users are never merged silently.
    pub(super) async fn learn_unionid(
        &self,
        tx: &mut PgConnection,
        user: User,
        unionid: Option<&str>,
        race: Race,
    ) -> Result<Step<User>, Failure> {
        let Some(unionid) = new_unionid(user.unionid.as_deref(), unionid) else { return Ok(Step::Done(user)) };
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
                Some(owner) if owner != me && race == Race::Retry => return Ok(Step::Retry),
                // A link's user exists: links go with their users (a foreign key).
                holder => shares_with(holder, &me, true),
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
        let owner_has_app = match bound {
            Some(_) => false,
            None => sqlx::query_scalar::<_, i32>("SELECT 1 FROM identities WHERE user_id = $1 AND appid = $2")
                .bind(owner)
                .bind(appid)
                .fetch_optional(&mut *tx)
                .await?
                .is_some(),
        };
        let target = bind_target(bound, &owner, owner_has_app)?;
        // Spent only now: a refused bind leaves the ticket usable (another account, or a
        // corrected password). Spent at most once: the row is deleted.
        if let Some(ticket) = ticket {
            let expires: Option<i64> =
                sqlx::query_scalar("DELETE FROM bind_tickets WHERE id = $1 RETURNING expires_at_ns")
                    .bind(&ticket[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            spend(expires.map(i128::from), now.unix_timestamp_nanos())?;
        }
        let user = if target == Bind::Again {
            // Bound to this account already: a retry, answered like a login.
            let loaded = load(&mut *tx, owner).await?.ok_or(StoreError::NoSuchAccount)?;
            self.touch(tx, &loaded, appid, session, now).await?
        } else {
            let key = StoredSessionKey::of(session, now);
            if !self.insert_identity(tx, owner, appid, &session.openid, key.as_ref()).await? {
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
}
