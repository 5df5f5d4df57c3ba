//! The person's right of access (PIPL Art. 45): everything wxauth holds about them, in one
//! answer, without the secrets that only the server may hold.

use super::{Auth, BearerFailure, Me};
use crate::store::{
    Session,
    events::{Event, EventFilter, MAX_PAGE},
};

/// Everything wxauth holds about a person.
#[derive(Debug)]
pub struct Holdings {
    /// The user, the identity of the token, and what they shared.
    pub me: Me,
    /// The phone number of the user's account, if it has one.
    pub account_phone: Option<String>,
    /// The live sessions.
    pub sessions: Vec<Session>,
    /// When each identity's newest session key was received, by AppID (the key itself
    /// never leaves the server).
    pub session_keys: Vec<(String, time::OffsetDateTime)>,
    /// The events about the user, newest first.
    pub events: Vec<Event>,
}

impl Auth {
    /// What wxauth holds about the bearer's user.
    pub async fn holdings(&self, bearer: &str) -> Result<Holdings, BearerFailure> {
        let me = self.me(bearer).await?;
        let store = &self.parts.store;
        let sessions = store.sessions(&me.user.id, self.parts.clock.now()).await?;
        let account_phone = match &me.user.account {
            Some(name) => store.account(name).await?.and_then(|a| a.phone),
            None => None,
        };
        let mut session_keys = Vec::new();
        for identity in &me.user.identities {
            if let Some(key) = store.session_key(&me.user.id, &identity.appid).await? {
                session_keys.push((identity.appid.clone(), key.issued_at));
            }
        }
        // Every page: retention bounds them.
        let mut events: Vec<Event> = Vec::new();
        loop {
            let before = events.last().map(|e| e.id);
            let filter = EventFilter { user: Some(me.user.id), before, limit: MAX_PAGE, ..EventFilter::default() };
            let page = store.events(&filter).await?;
            let last = page.len() < MAX_PAGE;
            events.extend(page);
            if last {
                break;
            }
        }
        Ok(Holdings { me, account_phone, sessions, session_keys, events })
    }
}
