//! Erasure on sled. `deletions` indexes the users whose deletion is pending, by when it is
//! due: erase time (Unix nanoseconds, big-endian, offset so that order is time order) ‖
//! user id → nothing. An entry is written before the user's record says "pending" and
//! removed after, so a crash leaves at most a stale entry, which the sweep drops.
//!
//! The erasure itself runs under the links lock, in an order that a crash can interrupt
//! anywhere and a second run finishes: the bindings, tickets and details go first while
//! the record still names them, then the refresh families (they name the openid), the
//! events are stripped, the record goes, and last the user's keys are destroyed
//! ([`super::vault`]): whatever of the person sled's log still holds can no longer be
//! read. An operator's account stays, its record sealed under a new key.

use time::OffsetDateTime;

use super::{SledStore, events::EventRecord, record::AccountRecord, record::TicketRecord, user_id};
use crate::{
    domain::{Deletion, UserId},
    store::{Erasure, StoreError, backend::Deletions},
};

/// `at` as 16 bytes that sort as times do: Unix nanoseconds offset by 2^127, big-endian.
pub(super) fn ordered_time(at: OffsetDateTime) -> [u8; 16] {
    ((at.unix_timestamp_nanos() as u128) ^ (1 << 127)).to_be_bytes()
}

/// The `deletions` key of user `id` due at `erase_at`.
pub(super) fn index_key(erase_at: OffsetDateTime, id: &UserId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&ordered_time(erase_at));
    key[16..].copy_from_slice(id.as_bytes());
    key
}

impl SledStore {
    /// Keeps `deletions` in step with a change of user `id`'s pending deletion from `old`
    /// to `new`: called with `before` true ahead of the record's write (adds the new
    /// entry), and false after it (drops the old one).
    pub(super) fn index_deletion(
        &self,
        id: &UserId,
        old: Option<Deletion>,
        new: Option<Deletion>,
        before: bool,
    ) -> Result<(), StoreError> {
        if old == new {
            return Ok(());
        }
        match (before, new, old) {
            (true, Some(new), _) => {
                self.deletions.insert(index_key(new.erase_at, id), &[][..])?;
            }
            (false, _, Some(old)) => {
                self.deletions.remove(index_key(old.erase_at, id))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Strips the events of user `id` of their address, user agent and details.
    fn strip_events(&self, id: &UserId) -> Result<(), StoreError> {
        for key in self.events_by_user.scan_prefix(id.as_bytes()).keys() {
            let key = key?;
            let event_id = &key[16..];
            let Some(bytes) = self.events.get(event_id)? else { continue };
            let mut record = EventRecord::decode(&bytes)?;
            if record.strip(self)? {
                self.events.insert(event_id, record.encode()?)?;
            }
        }
        Ok(())
    }

    /// Removes the bind tickets of any of `openids` (appid, openid) or of `unionid`.
    fn drop_tickets(&self, openids: &[(String, String)], unionid: Option<&str>) -> Result<(), StoreError> {
        for entry in self.tickets.iter() {
            let (key, bytes) = entry?;
            let ticket = TicketRecord::decode(&bytes)?;
            let theirs = openids.iter().any(|(appid, openid)| *appid == ticket.appid && *openid == ticket.openid)
                || unionid.is_some_and(|u| ticket.unionid.as_deref() == Some(u));
            if theirs {
                self.tickets.remove(key)?;
            }
        }
        Ok(())
    }

    fn erase_locked(&self, id: &UserId, now: OffsetDateTime) -> Result<Erasure, StoreError> {
        let me = &id.as_bytes()[..];
        let Some((_, record)) = self.read_user(me)? else {
            // Gone: a run that stopped after removing the record; finish its index entries
            // and destroy its keys (a removed user's record cannot name a kept one).
            self.strip_events(id)?;
            self.drop_index_entries(id)?;
            if !self.records.contains_key(me)? {
                self.vault.shred(id.as_bytes(), None)?;
            }
            return Ok(Erasure::Gone);
        };
        let pending = record.controls.controls()?.deletion;
        let Some(deletion) = pending.filter(|d| d.erase_at <= now) else {
            // Entries an interrupted change left behind: only the pending one's stays.
            self.drop_index_entries(id)?;
            if let Some(pending) = pending {
                self.deletions.insert(index_key(pending.erase_at, id), &[][..])?;
            }
            return Ok(Erasure::NotDue);
        };
        let openids: Vec<(String, String)> =
            record.identities.iter().map(|i| (i.appid.clone(), i.openid.clone())).collect();
        for (appid, openid) in &openids {
            // Only bindings that still point here: never another user's.
            let _ = self.openids.compare_and_swap(self.binding_key(appid, openid), Some(me), None::<&[u8]>)?;
        }
        if let Some(unionid) = &record.unionid {
            let _ = self.unionids.compare_and_swap(self.unionid_key(unionid), Some(me), None::<&[u8]>)?;
        }
        self.drop_tickets(&openids, record.unionid.as_deref())?;
        self.remove_details(id)?;
        {
            let _turn = self.refresh_turn();
            for key in self.refresh_families.scan_prefix(me).keys() {
                self.refresh_families.remove(key?)?;
            }
        }
        self.strip_events(id)?;
        // An account without a password is reached by its phone number alone (phone
        // registration, an import), which goes with the person: nothing could reach it again.
        let reachable = match &record.account {
            Some(username) => self
                .accounts
                .get(username)?
                .map(|bytes| AccountRecord::decode(&bytes))
                .transpose()?
                .is_some_and(|a| !a.password_hash.is_empty()),
            None => false,
        };
        if let Some(username) = &record.account {
            // The number is the person's, not the operator's: it goes in any case.
            self.drop_account_phone(id.as_bytes(), username)?;
            if !reachable {
                self.accounts.remove(username)?;
            }
        }
        let kept = match record.account.as_ref().filter(|_| reachable) {
            // An operator's account stays, unbound and emptied, as after an unbind, and
            // sealed under a new key, so the old one can go.
            Some(username) => {
                let mut emptied = record.clone();
                emptied.identities.clear();
                emptied.unionid = None;
                emptied.unionid_shared_with.clear();
                emptied.controls.deletion = None;
                let slot = self.vault.new_slot(id.as_bytes())?;
                self.records.insert(me, self.seal_user(me, slot, &emptied)?)?;
                // The record under its new key reaches the disk before the old key goes:
                // a crash between would leave the account sealed under a destroyed key,
                // unreadable for good. (Rare enough to flush here, under the links lock.)
                self.vault.sync()?;
                self.records.flush()?;
                self.vault.shred(id.as_bytes(), Some(slot))?;
                Some(username.clone())
            }
            None => {
                self.records.remove(me)?;
                self.vault.shred(id.as_bytes(), None)?;
                None
            }
        };
        // Users merged into this one: a crash after their merge may have left their keys,
        // under which nothing is sealed any more; and their links lead nowhere now.
        for entry in self.merged.iter() {
            let (from, into) = entry?;
            if into.as_ref() == me {
                self.vault.shred(&super::id_bytes(&from)?, None)?;
                self.merged.remove(from)?;
            }
        }
        self.deletions.remove(index_key(deletion.erase_at, id))?;
        self.drop_index_entries(id)?;
        Ok(Erasure::Erased { account_kept: kept })
    }

    /// Drops every `deletions` entry of user `id` (stale ones included).
    fn drop_index_entries(&self, id: &UserId) -> Result<(), StoreError> {
        for key in self.deletions.iter().keys() {
            let key = key?;
            if &key[16..] == id.as_bytes() {
                self.deletions.remove(key)?;
            }
        }
        Ok(())
    }
}

impl Deletions for SledStore {
    async fn due_deletions(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<UserId>, StoreError> {
        let end = index_key(now, &UserId::from_bytes([0xff; 16]));
        let mut due = Vec::new();
        for key in self.deletions.range(..=&end[..]).keys().take(limit) {
            due.push(user_id(&key?[16..])?);
        }
        Ok(due)
    }

    async fn erase(&self, id: &UserId, now: OffsetDateTime) -> Result<Erasure, StoreError> {
        let erasure = {
            let _links = self.lock();
            self.erase_locked(id, now)?
        };
        self.commit.wait().await?;
        Ok(erasure)
    }
}
