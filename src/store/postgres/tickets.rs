//! Bind tickets on PostgreSQL: `bind_tickets`, keyed by the SHA-256 of a ticket.

use sqlx::Row;
use time::OffsetDateTime;

use super::{PgStore, ns};
use crate::{
    domain::{SessionKey, WechatSession},
    store::{
        BindTicket, StoreError, TicketId,
        backend::Tickets,
        codec::time,
        tickets::{live, sweep_due},
    },
};

impl Tickets for PgStore {
    async fn put_ticket(&self, id: &TicketId, ticket: &BindTicket, now: OffsetDateTime) -> Result<(), StoreError> {
        let sealed = self
            .sealer
            .seal(ticket.session.session_key.as_ref().map_or("", SessionKey::expose), id)
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
        self.sweep_tickets(now).await
    }

    async fn ticket(&self, id: &TicketId, now: OffsetDateTime) -> Result<Option<BindTicket>, StoreError> {
        let Some(row) =
            sqlx::query("SELECT appid, openid, unionid, session_key, expires_at_ns FROM bind_tickets WHERE id = $1")
                .bind(&id[..])
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let expires_ns = i128::from(row.try_get::<i64, _>("expires_at_ns")?);
        let expires_at = time(expires_ns)?;
        let sealed: String = row.try_get("session_key")?;
        // A ticket whose key does not open (the key file was replaced) is as good as gone.
        let Some(session_key) = self.sealer.open(&sealed, id).filter(|_| live(expires_ns, now.unix_timestamp_nanos()))
        else {
            return Ok(None);
        };
        Ok(Some(BindTicket {
            appid: row.try_get("appid")?,
            session: WechatSession {
                openid: row.try_get("openid")?,
                unionid: row.try_get("unionid")?,
                session_key: SessionKey::stored(session_key),
            },
            expires_at,
        }))
    }
}

impl PgStore {
    /// Removes expired tickets when a sweep is due at this replica ([`sweep_due`]).
    async fn sweep_tickets(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        if !sweep_due(&self.swept_at, now.unix_timestamp()) {
            return Ok(());
        }
        sqlx::query("DELETE FROM bind_tickets WHERE expires_at_ns <= $1").bind(ns(now)?).execute(&self.pool).await?;
        Ok(())
    }
}
