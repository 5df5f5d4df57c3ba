//! The event log on sled: `events`, event id → [`EventRecord`], and `events_by_user`,
//! user id ‖ event id → nothing, for one user's events newest first without a scan of
//! everyone's. Appends do not wait for the disk: they are durable with the next group
//! commit, like a returning login.

use ::sled::Tree;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    SledStore,
    record::time,
    vault::{Opened, Purpose},
};
use crate::{
    domain::UserId,
    store::{
        PurgeBatch, StoreError,
        backend::Events,
        events::{Event, EventFilter, EventKind, first_id_at},
        outbox::Delivery,
    },
};

/// An event as stored (since schema 7): [`VERSION`] ‖ postcard. What says who the person
/// is and where they were (address, user agent, details) is in `private`, sealed under
/// the user's key when the event has a user with a key ([`super::vault`]), so that it
/// cannot be read once the user is erased. Times are Unix nanoseconds.
#[derive(Serialize, Deserialize)]
pub(super) struct EventRecord {
    at: i128,
    kind: String,
    user: Option<[u8; 16]>,
    appid: Option<String>,
    actor: Option<String>,
    /// Whether `private` is sealed.
    sealed: bool,
    /// [`Private`], postcard, sealed or not.
    private: Vec<u8>,
}

/// The part of an event that identifies a person.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Private {
    ip: Option<String>,
    user_agent: Option<String>,
    /// Compact JSON.
    details: String,
}

/// The first byte of an event of this layout. Schema 6's start with the varint of their
/// time, whose first byte is at least 0x80 for any time after 1970-01-01T00:00:00.000000064.
pub(super) const VERSION: u8 = 7;

fn postcard_of<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
}

impl EventRecord {
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
            }
            _ => super::legacy::V6EventRecord::decode(bytes)?.upgrade(),
        }
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&postcard_of(self)?);
        Ok(out)
    }

    /// An event whose private part is not sealed (an earlier layout, or no user).
    pub(super) fn clear(
        (at, kind, user, appid, actor): (i128, String, Option<[u8; 16]>, Option<String>, Option<String>),
        ip: Option<String>,
        user_agent: Option<String>,
        details: String,
    ) -> Result<Self, StoreError> {
        let private = postcard_of(&Private { ip, user_agent, details })?;
        Ok(Self { at, kind, user, appid, actor, sealed: false, private })
    }

    /// Removes the address, user agent and details (an erased user's event keeps its id,
    /// time, kind, user id, app and actor); false when there was nothing to remove.
    pub(super) fn strip(&mut self, store: &SledStore) -> Result<bool, StoreError> {
        let private = self.private(store)?;
        let stripped = !self.sealed && private.ip.is_none() && private.user_agent.is_none() && private.details == "{}";
        self.sealed = false;
        self.private = postcard_of(&Private { ip: None, user_agent: None, details: "{}".into() })?;
        Ok(!stripped)
    }

    /// The private part; empty when it was sealed under a key since destroyed.
    fn private(&self, store: &SledStore) -> Result<Private, StoreError> {
        let bytes = match (self.sealed, self.user) {
            (false, _) => self.private.clone(),
            (true, Some(user)) => match store.vault.open_value(Purpose::Event, &user, &self.private)? {
                Opened::Plain { bytes, .. } => bytes,
                Opened::Shredded => return Ok(Private { details: "{}".into(), ..Private::default() }),
                Opened::NotSealed => return Err(StoreError::Corrupt("an event's sealed part".into())),
            },
            (true, None) => return Err(StoreError::Corrupt("a sealed event without a user".into())),
        };
        postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
    }

    pub(super) fn event(self, id: &[u8], store: &SledStore) -> Result<Event, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("event: {what}"));
        let private = self.private(store)?;
        Ok(Event {
            id: Uuid::from_slice(id).map_err(|_| corrupt("id"))?,
            at: time(self.at)?,
            kind: EventKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            user: self.user.map(UserId::from_bytes),
            appid: self.appid,
            ip: private.ip.map(|ip| ip.parse()).transpose().map_err(|_| corrupt("ip"))?,
            user_agent: private.user_agent,
            actor: self.actor,
            details: Event::parse_details(&private.details)?,
        })
    }

    /// The event moved to user `into` (a merge): its private part sealed again under
    /// `into`'s key in `slot`, so that it stays readable after the old user's key goes.
    pub(super) fn moved(mut self, into: &[u8; 16], slot: u32, store: &SledStore) -> Result<Self, StoreError> {
        let private = postcard_of(&self.private(store)?)?;
        self.private = store.vault.seal(Purpose::Event, into, slot, &private)?;
        self.sealed = true;
        self.user = Some(*into);
        Ok(self)
    }

    /// The user of the event, if any.
    pub(super) fn user(&self) -> Option<[u8; 16]> {
        self.user
    }
}

impl SledStore {
    /// `event` as stored: its private part sealed under its user's key, if it has a user
    /// with a record (an event after an erasure has nothing private).
    pub(super) fn event_record(&self, event: &Event) -> Result<EventRecord, StoreError> {
        let head = (
            event.at.unix_timestamp_nanos(),
            event.kind.as_str().to_owned(),
            event.user.map(|u| *u.as_bytes()),
            event.appid.clone(),
            event.actor.clone(),
        );
        let mut record = EventRecord::clear(
            head,
            event.ip.map(|ip| ip.to_string()),
            event.user_agent.clone(),
            event.details_json()?,
        )?;
        if let Some(user) = record.user
            && let Some(slot) = self.records.get(user)?.as_deref().and_then(super::vault::slot_of)
        {
            record.private = self.vault.seal(Purpose::Event, &user, slot, &record.private)?;
            record.sealed = true;
        }
        Ok(record)
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
        let record = self.event_record(event)?;
        // The index entry after the event: a crash between the two leaves an event its
        // user's listing misses, never an entry without its event.
        self.events.insert(event.id.as_bytes(), record.encode()?)?;
        if let Some(user) = event.user {
            self.events_by_user.insert(user_key(user.as_bytes(), &event.id), &[][..])?;
        }
        Ok(())
    }

    fn event_at(&self, id: &[u8]) -> Result<Option<Event>, StoreError> {
        self.events.get(id)?.map(|bytes| EventRecord::decode(&bytes)?.event(id, self)).transpose()
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
            if let Some(user) = record.user() {
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
