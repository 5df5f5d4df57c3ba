//! Bind tickets on sled: `bind_tickets`, SHA-256 of a ticket → [`TicketRecord`].

use time::OffsetDateTime;

use super::{
    SledStore,
    record::{TicketRecord, time},
};
use crate::{
    domain::{SessionKey, WechatSession},
    store::{
        BindTicket, StoreError, TicketId,
        backend::Tickets,
        tickets::{live, sweep_due},
    },
};

impl Tickets for SledStore {
    async fn put_ticket(&self, id: &TicketId, ticket: &BindTicket, now: OffsetDateTime) -> Result<(), StoreError> {
        let record = TicketRecord {
            appid: ticket.appid.clone(),
            openid: ticket.session.openid.clone(),
            unionid: ticket.session.unionid.clone(),
            session_key: self
                .sealer
                .seal(ticket.session.session_key.as_ref().map_or("", SessionKey::expose), id)
                .map_err(|e| StoreError::Database(e.to_string()))?,
            expires_at: ticket.expires_at.unix_timestamp_nanos(),
        };
        self.tickets.insert(id, record.encode()?)?;
        self.sweep_tickets(now)
    }

    async fn ticket(&self, id: &TicketId, now: OffsetDateTime) -> Result<Option<BindTicket>, StoreError> {
        let Some(bytes) = self.tickets.get(id)? else { return Ok(None) };
        let t = TicketRecord::decode(&bytes)?;
        let expires_at = time(t.expires_at)?;
        // A ticket whose key does not open (the key file was replaced) is as good as gone.
        let now = now.unix_timestamp_nanos();
        let Some(session_key) = self.sealer.open(&t.session_key, id).filter(|_| live(t.expires_at, now)) else {
            return Ok(None);
        };
        Ok(Some(BindTicket {
            appid: t.appid,
            session: WechatSession {
                openid: t.openid,
                unionid: t.unionid,
                session_key: SessionKey::stored(session_key),
            },
            expires_at,
        }))
    }
}

impl SledStore {
    /// Removes expired tickets when a sweep is due ([`sweep_due`]).
    fn sweep_tickets(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        if !sweep_due(&self.swept_at, now.unix_timestamp()) {
            return Ok(());
        }
        for entry in self.tickets.iter() {
            let (key, value) = entry?;
            if TicketRecord::decode(&value).map_or(true, |t| !live(t.expires_at, now.unix_timestamp_nanos())) {
                self.tickets.remove(key)?;
            }
        }
        Ok(())
    }
}
