//! Merging users on sled: tree `merged` (user id → the user it was merged into), and one
//! transaction that moves everything of the merged user to the kept one. What is sealed
//! under the merged user's key (its record, session keys, details, account phone, refresh
//! families) is opened and sealed again under the kept user's key before the transaction;
//! the merged user's key is destroyed after it, once durable.

use ::sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};
use time::OffsetDateTime;

use super::{
    SledStore,
    events::EventRecord,
    phone_key,
    record::{AccountRecord, ControlsRecord, DetailsRecord, IdentityRecord},
    user_id, vault,
};
use crate::{
    domain::{Details, User, UserId},
    store::{StoreError, backend::Merges, codec::phone_index, merge},
};

/// Why a merge's transaction gave up: a returning login changed one of the records meanwhile.
const RACED: &str = "a record changed during the merge";

impl Merges for SledStore {
    async fn merge_users(&self, into: &UserId, from: &UserId, now: OffsetDateTime) -> Result<User, StoreError> {
        let user = {
            let _links = self.lock();
            let _turn = self.refresh_turn();
            // A returning login (which takes no lock) may change either record meanwhile:
            // the transaction notices, and the merge is prepared again.
            let mut attempt = 0;
            loop {
                match self.merge_locked(into, from, now) {
                    Err(StoreError::Corrupt(e)) if e == RACED && attempt < 16 => attempt += 1,
                    other => break other?,
                }
            }
        };
        self.commit.wait().await?;
        // Durable: nothing is sealed under the merged user's key any more.
        self.vault.sync()?;
        self.vault.shred(from.as_bytes(), None)?;
        Ok(user)
    }

    async fn merged_into(&self, from: &UserId) -> Result<Option<UserId>, StoreError> {
        self.merged.get(from.as_bytes())?.map(|id| user_id(&id)).transpose()
    }
}

impl SledStore {
    /// Prepares the merge and writes it in one transaction; under the links lock and the
    /// refresh turn.
    fn merge_locked(&self, into: &UserId, from: &UserId, now: OffsetDateTime) -> Result<User, StoreError> {
        let (me, them) = (into.as_bytes(), from.as_bytes());
        let (Some(kept_bytes), Some(gone_bytes)) = (self.records.get(me)?, self.records.get(them)?) else {
            return Err(StoreError::NoSuchUser);
        };
        let (Some((slot, mut record)), Some((_, gone))) =
            (self.open_user(me, &kept_bytes)?, self.open_user(them, &gone_bytes)?)
        else {
            return Err(StoreError::NoSuchUser);
        };
        let (kept_user, gone_user) = (record.user(*into)?, gone.user(*from)?);
        if let Some(reason) = merge::refusal(&kept_user, &gone_user, now) {
            return Err(StoreError::MergeRefused(reason));
        }
        let merged = merge::merged(&kept_user, &gone_user).map_err(StoreError::MergeRefused)?;
        for identity in &gone.identities {
            let key = self.keys(them).open(&identity.appid, identity.session_key.as_ref())?;
            let sealed = key.map(|k| self.keys(me).seal(&identity.appid, &k)).transpose()?;
            record.identities.push(IdentityRecord::new(&identity.appid, &identity.openid, sealed));
        }
        record.unionid = merged.unionid.clone();
        record.unionid_shared_with = merged.unionid_shared_with.iter().map(|u| *u.as_bytes()).collect();
        record.account = merged.account.clone();
        record.controls = ControlsRecord::new(&merged.controls);
        record.created_at = merged.created_at.unix_timestamp_nanos();
        record.last_login_at = merged.last_login_at.unix_timestamp_nanos();
        let sealed_record = self.seal_user(me, slot, &record)?;
        let bindings: Vec<Vec<u8>> = gone.identities.iter().map(|i| self.binding_key(&i.appid, &i.openid)).collect();
        let unionid = gone.unionid.as_deref().map(|u| self.unionid_key(u));
        // The account, its number sealed again under the kept user's key.
        let account = match &gone.account {
            Some(name) => {
                let bytes = self.accounts.get(name)?.ok_or(StoreError::NoSuchAccount)?;
                let mut account = AccountRecord::decode(&bytes)?;
                account.user = *me;
                let phone = match self.sealed_account_phone(them, name)? {
                    Some(inner) => Some(self.vault.seal(vault::Purpose::AccountPhone, me, slot, inner.as_bytes())?),
                    None => None,
                };
                Some((name.clone(), account.encode()?, phone))
            }
            None => None,
        };
        // The details, merged and sealed for the kept user, with the phone index moved.
        let (kept_details, gone_details) = (self.details_of(into)?, self.details_of(from)?);
        let details = (gone_details != Details::default()).then(|| {
            let old = [phone_index(&self.sealer, &kept_details), phone_index(&self.sealer, &gone_details)];
            let merged = merge::merged_details(kept_details, gone_details.clone());
            (old, phone_index(&self.sealer, &merged), merged)
        });
        let details = match details {
            Some((old, new, merged)) => {
                let inner = DetailsRecord::seal(&merged, &self.sealer, me)?;
                Some((old, new, self.vault.seal(vault::Purpose::Details, me, slot, &inner)?))
            }
            None => None,
        };
        // The sessions, sealed again under the kept user's key at their new keys.
        let mut families = Vec::new();
        for entry in self.refresh_families.scan_prefix(them) {
            let (key, bytes) = entry?;
            let Some((_, mut family)) = self.open_family(&key, &bytes)? else { continue };
            family.set_user(*me);
            let mut moved = me.to_vec();
            moved.extend_from_slice(&key[16..]);
            families.push((key.to_vec(), moved, self.seal_family(&family, slot)?));
        }
        // The events, their private parts sealed again under the kept user's key.
        let mut events = Vec::new();
        for key in self.events_by_user.scan_prefix(them).keys() {
            let key = key?;
            let Some(bytes) = self.events.get(&key[16..])? else { continue };
            let moved = EventRecord::decode(&bytes)?.moved(me, slot, self)?;
            let mut index = me.to_vec();
            index.extend_from_slice(&key[16..]);
            events.push((key.to_vec(), index, key[16..].to_vec(), moved.encode()?));
        }
        // Users that shared the merged user's unionid share it with the kept one: only
        // users with that unionid can, so none is read when it had none.
        let mut sharing = Vec::new();
        if gone.unionid.is_some() {
            for entry in self.records.iter() {
                let (key, bytes) = entry?;
                if key.as_ref() == me || key.as_ref() == them {
                    continue;
                }
                let Some((their_slot, mut other)) = self.open_user(&key, &bytes)? else { continue };
                if !other.unionid_shared_with.contains(them) {
                    continue;
                }
                other.unionid_shared_with.retain(|u| u != them && u != me);
                other.unionid_shared_with.push(*me);
                sharing.push((key.to_vec(), bytes.to_vec(), self.seal_user(&key, their_slot, &other)?));
            }
        }
        let aliases: Vec<Vec<u8>> = self
            .merged
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, to)| to.as_ref() == them)
            .map(|(key, _)| key.to_vec())
            .collect();
        let trees = (
            &self.records,
            &self.openids,
            &self.unionids,
            &self.accounts,
            &self.account_phones,
            &self.details,
            &self.phones,
            &self.refresh_families,
            &self.merged,
            &self.events,
            &self.events_by_user,
        );
        let written = trees.transaction(
            |(
                records,
                openids,
                unionids,
                accounts,
                account_phones,
                details_tree,
                phones,
                refresh,
                merged_tree,
                events_tree,
                by_user,
            )| {
                let abort = |e: StoreError| ConflictableTransactionError::Abort(e);
                if records.get(me)?.as_deref() != Some(&kept_bytes[..])
                    || records.get(them)?.as_deref() != Some(&gone_bytes[..])
                {
                    return Err(abort(StoreError::Corrupt(RACED.into())));
                }
                records.insert(&me[..], &sealed_record[..])?;
                records.remove(&them[..])?;
                for (key, before, after) in &sharing {
                    if records.get(key)?.as_deref() != Some(&before[..]) {
                        return Err(abort(StoreError::Corrupt(RACED.into())));
                    }
                    records.insert(&key[..], &after[..])?;
                }
                for (old, new, id, record) in &events {
                    events_tree.insert(&id[..], &record[..])?;
                    by_user.insert(&new[..], &[][..])?;
                    by_user.remove(&old[..])?;
                }
                for binding in &bindings {
                    openids.insert(&binding[..], &me[..])?;
                }
                if let Some(key) = unionid
                    && unionids.get(key)?.as_deref() == Some(&them[..])
                {
                    unionids.insert(&key[..], &me[..])?;
                }
                if let Some((name, account, phone)) = &account {
                    accounts.insert(name.as_bytes(), &account[..])?;
                    if let Some(phone) = phone {
                        account_phones.insert(name.as_bytes(), &phone[..])?;
                    }
                }
                if let Some(([kept_phone, gone_phone], new_phone, sealed)) = &details {
                    details_tree.insert(&me[..], &sealed[..])?;
                    details_tree.remove(&them[..])?;
                    for (old, id) in [(kept_phone, into), (gone_phone, from)] {
                        if let Some(old) = old {
                            phones.remove(&phone_key(old, id)[..])?;
                        }
                    }
                    if let Some(new) = new_phone {
                        phones.insert(&phone_key(new, into)[..], &[][..])?;
                    }
                }
                for (old, new, sealed) in &families {
                    refresh.insert(&new[..], &sealed[..])?;
                    refresh.remove(&old[..])?;
                }
                for alias in &aliases {
                    merged_tree.insert(&alias[..], &me[..])?;
                }
                merged_tree.insert(&them[..], &me[..])?;
                Ok(())
            },
        );
        match written {
            Ok(()) => record.user(*into),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}
