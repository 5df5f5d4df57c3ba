//! The event log on sled: `events`, event id → [`EventRecord`], and `events_by_user`,
//! user id ‖ event id → nothing, for one user's events newest first without a scan of
//! everyone's. Appends do not wait for the disk: they are durable with the next group
//! commit, like a returning login.

use ::sled::Tree;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SledStore, record::time};
use crate::{
    domain::UserId,
    store::{
        PurgeBatch, StoreError,
        backend::Events,
        events::{Event, EventFilter, EventKind, first_id_at},
        outbox::Delivery,
    },
};

/// An event as stored. Times are Unix nanoseconds.
#[derive(Serialize, Deserialize)]
pub(super) struct EventRecord {
    at: i128,
    kind: String,
    user: Option<[u8; 16]>,
    appid: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    actor: Option<String>,
    /// Compact JSON.
    details: String,
}

impl EventRecord {
    pub(super) fn new(event: &Event) -> Result<Self, StoreError> {
        Ok(Self {
            at: event.at.unix_timestamp_nanos(),
            kind: event.kind.as_str().to_owned(),
            user: event.user.map(|u| *u.as_bytes()),
            appid: event.appid.clone(),
            ip: event.ip.map(|ip| ip.to_string()),
            user_agent: event.user_agent.clone(),
            actor: event.actor.clone(),
            details: event.details_json()?,
        })
    }

    pub(super) fn event(self, id: &[u8]) -> Result<Event, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("event: {what}"));
        Ok(Event {
            id: Uuid::from_slice(id).map_err(|_| corrupt("id"))?,
            at: time(self.at)?,
            kind: EventKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            user: self.user.map(UserId::from_bytes),
            appid: self.appid,
            ip: self.ip.map(|ip| ip.parse()).transpose().map_err(|_| corrupt("ip"))?,
            user_agent: self.user_agent,
            actor: self.actor,
            details: Event::parse_details(&self.details)?,
        })
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
    }

    /// Removes the address, user agent and details (an erased user's event keeps its id,
    /// time, kind, user id, app and actor); false when there was nothing to remove.
    pub(super) fn strip(&mut self) -> bool {
        let stripped = self.ip.is_none() && self.user_agent.is_none() && self.details == "{}";
        self.ip = None;
        self.user_agent = None;
        self.details = "{}".into();
        !stripped
    }
}

fn user_key(user: &[u8; 16], id: &Uuid) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(user);
    key[16..].copy_from_slice(id.as_bytes());
    key
}

impl SledStore {
    /// Keeps `event` in both trees.
    pub(super) fn insert_event(&self, event: &Event) -> Result<(), StoreError> {
        let record = EventRecord::new(event)?;
        // The index entry after the event: a crash between the two leaves an event its
        // user's listing misses, never an entry without its event.
        self.events.insert(event.id.as_bytes(), record.encode()?)?;
        if let Some(user) = event.user {
            self.events_by_user.insert(user_key(user.as_bytes(), &event.id), &[][..])?;
        }
        Ok(())
    }

    fn event_at(&self, id: &[u8]) -> Result<Option<Event>, StoreError> {
        self.events.get(id)?.map(|bytes| EventRecord::decode(&bytes)?.event(id)).transpose()
    }
}

/// Keys of `tree` from `lower` (inclusive) to `upper` (exclusive), under `prefix`, newest
/// first.
fn newest_first(
    tree: &Tree,
    prefix: &[u8],
    lower: Option<Uuid>,
    upper: Option<Uuid>,
) -> impl Iterator<Item = Result<::sled::IVec, StoreError>> {
    let bound = |id: Option<Uuid>, fill: u8| {
        let mut key = prefix.to_vec();
        match id {
            Some(id) => key.extend_from_slice(id.as_bytes()),
            None => key.extend_from_slice(&[fill; 16]),
        }
        key
    };
    let (from, to) = (bound(lower, 0), bound(upper, 0xff));
    let range = match upper {
        Some(_) => tree.range(from..to),
        None => tree.range(from..=to),
    };
    range.rev().map(|entry| entry.map(|(key, _)| key).map_err(StoreError::from))
}

impl Events for SledStore {
    async fn append_events(&self, events: &[Event], deliveries: &[Delivery]) -> Result<(), StoreError> {
        // The deliveries before their events: a crash in between leaves deliveries of no
        // event, dropped when they come due, never an event without its deliveries.
        for delivery in deliveries {
            self.outbox.insert(super::outbox::key(delivery), &delivery.attempts.to_be_bytes()[..])?;
        }
        for event in events {
            self.insert_event(event)?;
        }
        Ok(())
    }

    async fn event(&self, id: &Uuid) -> Result<Option<Event>, StoreError> {
        self.event_at(id.as_bytes())
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let (upper, lower) = filter.id_bounds();
        let limit = filter.page_size();
        let mut found = Vec::new();
        let prefix: Vec<u8> = filter.user.map(|u| u.as_bytes().to_vec()).unwrap_or_default();
        let tree = if filter.user.is_some() { &self.events_by_user } else { &self.events };
        for key in newest_first(tree, &prefix, lower, upper) {
            let key = key?;
            let Some(event) = self.event_at(&key[prefix.len()..])? else { continue };
            if filter.admits(&event) {
                found.push(event);
                if found.len() == limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn purge_events(&self, before: OffsetDateTime, limit: usize) -> Result<PurgeBatch, StoreError> {
        let mut removed = 0;
        for entry in self.events.range(..first_id_at(before).as_bytes().to_vec()) {
            let (id, bytes) = entry?;
            let record = EventRecord::decode(&bytes)?;
            if let Some(user) = record.user {
                self.events_by_user.remove(user_key(&user, &Uuid::from_slice(&id).unwrap_or_default()))?;
            }
            self.events.remove(&id)?;
            removed += 1;
            if removed == limit {
                return Ok(PurgeBatch { removed, done: false });
            }
        }
        Ok(PurgeBatch { removed, done: true })
    }
}
