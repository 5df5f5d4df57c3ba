//! Migrations from earlier layouts ([`super::legacy`]), run once at open. Each writes the
//! new layout, flushes, and writes the version last, so that an interrupted one runs again
//! (or resumes) at the next start.

use super::{
    RECORDS, SCHEMA_KEY, SledStore, UNIONIDS, V2_RECORDS, id_bytes, legacy, phone_key,
    record::{self, Keys, TicketRecord, UserRecord},
    user_id,
    vault::{Opened, Purpose},
};
use crate::{
    domain::{SessionKey, UserId},
    store::{StoreError, StoredSessionKey, codec::phone_index, sealed::Sealer},
};

/// Brings a store of schema `version` to the current one.
pub(super) fn from(version: u32, db: &::sled::Db, meta: &::sled::Tree, sealer: &Sealer) -> Result<(), StoreError> {
    if version == 1 {
        migrate_from_v1(db, meta)?;
    }
    if version <= 2 {
        migrate_from_v2(db, meta)?;
    }
    if version <= 3 {
        migrate_from_v3(db, meta, sealer)?;
    }
    if version <= 4 {
        migrate_from_v4(db, meta)?;
    }
    if version <= 5 {
        migrate_from_v5(db, meta)?;
    }

    Ok(())
}

/// Schema 1 → 2: each JSON user and its JSON session key become one record. The new
/// records are flushed before the old trees are dropped, and the version is written last,
/// so an interrupted migration simply runs again at the next start.
fn migrate_from_v1(db: &::sled::Db, meta: &::sled::Tree) -> Result<(), StoreError> {
    let records = db.open_tree(V2_RECORDS)?;
    let json = |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("schema 1 {what}: {e}"));
    let (users, keys) = (db.open_tree("users")?, db.open_tree("session_keys")?);
    let mut migrated = 0u64;
    for entry in users.iter() {
        let (id, value) = entry?;
        let user: legacy::V1User = serde_json::from_slice(&value).map_err(|e| json("user", e))?;
        let key: Option<StoredSessionKey> =
            keys.get(&id)?.map(|k| serde_json::from_slice(&k).map_err(|e| json("session key", e))).transpose()?;
        let record = legacy::V2Record::from_v1(&user, key.as_ref());
        records.insert(id, postcard::to_stdvec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?)?;
        migrated += 1;
    }
    db.flush()?;
    db.drop_tree("users")?;
    db.drop_tree("session_keys")?;
    db.flush()?;
    meta.insert(SCHEMA_KEY, &2u32.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(target: "wxauth::store", users = migrated, "migrated the store from schema 1 to 2");
    Ok(())
}

/// Schema 2 → 3: each record gets a list of identities (its one openid), and unionids get
/// their index. The new records go to a new tree, which is flushed before the version is
/// written and the old tree dropped: an interrupted migration starts over from the
/// untouched schema 2 tree at the next start. Two schema 2 users with one unionid (an
/// openid each in two apps) are marked as sharing it, not merged.
fn migrate_from_v2(db: &::sled::Db, meta: &::sled::Tree) -> Result<(), StoreError> {
    let (old, records, unionids) = (db.open_tree(V2_RECORDS)?, db.open_tree(RECORDS)?, db.open_tree(UNIONIDS)?);
    records.clear()?;
    unionids.clear()?;
    let mut migrated = 0u64;
    for entry in old.iter() {
        let (id, value) = entry?;
        let mut record = legacy::V2Record::decode(&value)?.upgrade();
        if let Some(unionid) = &record.unionid
            && let Err(taken) = unionids.compare_and_swap(unionid, None::<&[u8]>, Some(&id))?
        {
            let other = id_bytes(&taken.current.unwrap_or_default())?;
            record.unionid_shared_with.push(other);
            tracing::warn!(
                target: "wxauth::store",
                user_id = %user_id(&id)?,
                other_user_id = %UserId::from_bytes(other),
                "two users share a unionid; they are not merged (see `wxauth users show`)"
            );
        }
        records.insert(&id, record.encode()?)?;
        migrated += 1;
    }
    // The first user of each shared unionid learns about the later ones too.
    for entry in records.iter() {
        let (id, value) = entry?;
        for other in UserRecord::decode(&value)?.unionid_shared_with {
            let Some(bytes) = records.get(other)? else { continue };
            let mut theirs = UserRecord::decode(&bytes)?;
            if !theirs.unionid_shared_with.iter().any(|o| o[..] == id[..]) {
                theirs.unionid_shared_with.push(id_bytes(&id)?);
                records.insert(other, theirs.encode()?)?;
            }
        }
    }
    db.flush()?;
    meta.insert(SCHEMA_KEY, &3u32.to_be_bytes()[..])?;
    db.flush()?;
    db.drop_tree(V2_RECORDS)?;
    tracing::info!(target: "wxauth::store", users = migrated, "migrated the store from schema 2 to 3");
    Ok(())
}

/// Schema 3 → 4: session keys, stored in plaintext until now, are sealed
/// ([`crate::store::sealed`]). Each record is rewritten on its own and a sealed key is recognisable,
/// so an interrupted migration resumes where it stopped; the version is written last.
/// Plaintext bind tickets live five minutes: they are dropped, not sealed.
fn migrate_from_v3(db: &::sled::Db, meta: &::sled::Tree, sealer: &Sealer) -> Result<(), StoreError> {
    let (records, tickets) = (db.open_tree(RECORDS)?, db.open_tree("bind_tickets")?);
    let mut sealed = 0u64;
    for entry in records.iter() {
        let (id, value) = entry?;
        let mut record = UserRecord::decode(&value)?;
        let keys = Keys { sealer, user: &id };
        let mut changed = false;
        for identity in &mut record.identities {
            if let Some((key, issued)) = identity.session_key.clone().filter(|(k, _)| !Sealer::is_sealed(k)) {
                let plain = StoredSessionKey { session_key: SessionKey::new(key), issued_at: record::time(issued)? };
                identity.session_key = Some(keys.seal(&identity.appid, &plain)?);
                changed = true;
                sealed += 1;
            }
        }
        if changed {
            records.insert(&id, record.encode()?)?;
        }
    }
    for entry in tickets.iter() {
        let (id, value) = entry?;
        if TicketRecord::decode(&value).map_or(true, |t| !Sealer::is_sealed(&t.session_key)) {
            tickets.remove(id)?;
        }
    }
    db.flush()?;
    meta.insert(SCHEMA_KEY, &4u32.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(target: "wxauth::store", session_keys = sealed, "migrated the store from schema 3 to 4 (session keys sealed)");
    Ok(())
}

/// Schema 5 keeps one record per refresh family instead of one per token, with a
/// revocation flag instead of separate revocation trees. The old records are dropped, not
/// converted: a refresh token stands for a login that `wx.login` repeats for free, so each
/// client logs in again once, and no revocation can be lost on the way.
fn migrate_from_v4(db: &::sled::Db, meta: &::sled::Tree) -> Result<(), StoreError> {
    let mut dropped = 0;
    for tree in ["refresh_tokens", "refresh_revoked", "refresh_cutoffs"] {
        dropped += db.open_tree(tree)?.len();
        db.drop_tree(tree)?;
    }
    db.flush()?;
    meta.insert(SCHEMA_KEY, &5u32.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(
        target: "wxauth::store",
        dropped,
        "migrated the store from schema 4 to 5 (one record per refresh family; clients log in again once)"
    );
    Ok(())
}

/// Schema 6 keeps, with each refresh family, its last refresh and where its login came
/// from (the person's list of sessions). Each record is rewritten in place with its start as
/// its last refresh and no origin. A record already rewritten reads as schema 6 (a schema
/// 5 one is too short to), so an interrupted migration resumes where it stopped.
fn migrate_from_v5(db: &::sled::Db, meta: &::sled::Tree) -> Result<(), StoreError> {
    let families = db.open_tree("refresh_families")?;
    let mut rewritten = 0u64;
    for entry in families.iter() {
        let (key, bytes) = entry?;
        if postcard::from_bytes::<super::refresh::FamilyRecord>(&bytes).is_ok() {
            continue;
        }
        let old: legacy::V5FamilyRecord =
            postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt(format!("schema 5 refresh family: {e}")))?;
        let new = super::refresh::FamilyRecord::from_v5(old);
        families.insert(key, postcard::to_stdvec(&new).map_err(|e| StoreError::Corrupt(e.to_string()))?)?;
        rewritten += 1;
    }
    db.flush()?;
    meta.insert(SCHEMA_KEY, &6u32.to_be_bytes()[..])?;
    db.flush()?;
    tracing::info!(target: "wxauth::store", families = rewritten, "migrated the store from schema 5 to 6 (sessions)");
    Ok(())
}

impl SledStore {
    /// Schema 6 → 7, on the opened store: what identifies a person is sealed under a key of
    /// that person ([`super::vault`]), so that an erasure can destroy it for good, and found
    /// by keyed hash. User records, details and refresh families are sealed; events get
    /// their address, user agent and details sealed; the openid and unionid indexes are
    /// keyed by hash; phone numbers get their index. Every step skips what it did already,
    /// so an interrupted migration resumes; the version is written last. What the earlier
    /// layout wrote stays in sled's files until sled reuses their segments: `wxauth store
    /// export` and `import` into an empty directory rewrite them (docs/storage.md).
    pub(super) fn migrate_from_v6(&self, db: &::sled::Db) -> Result<(), StoreError> {
        let mut users = 0u64;
        let mut bindings = Vec::new();
        // Records sealed under new keys, written only once those keys are on disk: sled
        // flushes in the background, and a record persisted before its key would be lost
        // to a crash (read as erased) instead of migrated again.
        let mut sealed = Vec::new();
        let write = |sealed: &mut Vec<(::sled::IVec, Vec<u8>)>| -> Result<(), StoreError> {
            self.vault.sync()?;
            for (id, bytes) in sealed.drain(..) {
                self.records.insert(id, bytes)?;
            }
            Ok(())
        };
        for entry in self.records.iter() {
            let (id, bytes) = entry?;
            let record = match self.vault.open_value(Purpose::User, &id_bytes(&id)?, &bytes)? {
                Opened::NotSealed => {
                    let record = UserRecord::decode(&bytes)?;
                    sealed.push((id.clone(), self.seal_new_user(&id, &record)?));
                    if sealed.len() == 1024 {
                        write(&mut sealed)?;
                    }
                    users += 1;
                    record
                }
                Opened::Plain { bytes, .. } => UserRecord::decode(&bytes)?,
                Opened::Shredded => continue,
            };
            for identity in &record.identities {
                bindings.push((self.binding_key(&identity.appid, &identity.openid), id.clone()));
            }
            if let Some(unionid) = &record.unionid
                && let Some(holder) = self.unionids.get(unionid.as_bytes())?
            {
                self.unionids.insert(self.unionid_key(unionid), holder)?;
                self.unionids.remove(unionid.as_bytes())?;
            }
        }
        write(&mut sealed)?;
        // The records say who holds which openid: the index is rebuilt from them.
        self.openids.clear()?;
        for (key, id) in bindings {
            self.openids.insert(key, id)?;
        }
        // Links of unionids no record holds any more, in the clear.
        for key in self.unionids.iter().keys() {
            let key = key?;
            if key.len() != 16 {
                self.unionids.remove(key)?;
            }
        }
        for entry in self.details.iter() {
            let (id, bytes) = entry?;
            let user = user_id(&id)?;
            if matches!(self.vault.open_value(Purpose::Details, &id_bytes(&id)?, &bytes)?, Opened::NotSealed) {
                if !self.records.contains_key(&id)? {
                    self.details.remove(&id)?;
                    continue;
                }
                self.details.insert(&id, self.seal_details(&user, &bytes)?)?;
            }
            if let Some(phone) = phone_index(&self.sealer, &self.details_of(&user)?) {
                self.phones.insert(phone_key(&phone, &user), &[][..])?;
            }
        }
        for entry in self.refresh_families.iter() {
            let (key, bytes) = entry?;
            let user = id_bytes(key.get(..16).unwrap_or_default())?;
            let plain = match self.vault.open_value(Purpose::Family, &user, &bytes)? {
                Opened::NotSealed => true,
                // A family's first bytes are random (its verifier's hash): one in 65,536
                // starts like a sealed value, naming a key that does not exist. Nothing is
                // erased during a migration, so it is a plain record if it reads as one.
                Opened::Shredded => postcard::from_bytes::<super::refresh::FamilyRecord>(&bytes)
                    .is_ok_and(|r| *r.user().as_bytes() == user),
                Opened::Plain { .. } => false,
            };
            if plain {
                let record: super::refresh::FamilyRecord = postcard::from_bytes(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("schema 6 refresh family: {e}")))?;
                let Some(slot) = self.user_slot(&user)? else {
                    self.refresh_families.remove(&key)?;
                    continue;
                };
                self.refresh_families.insert(&key, self.seal_family(&record, slot)?)?;
            }
        }
        let mut events = 0u64;
        for entry in self.events.iter() {
            let (id, bytes) = entry?;
            if bytes.first() == Some(&super::events::VERSION) {
                continue;
            }
            let event = super::events::EventRecord::decode(&bytes)?.event(&id, self)?;
            self.events.insert(&id, self.event_record(&event)?.encode()?)?;
            events += 1;
        }
        self.vault.sync()?;
        db.flush()?;
        self.meta.insert(SCHEMA_KEY, &7u32.to_be_bytes()[..])?;
        db.flush()?;
        tracing::info!(
            target: "wxauth::store",
            users,
            events,
            "migrated the store from schema 6 to 7 (personal data sealed per user, so that erasure destroys it)"
        );
        Ok(())
    }
}
