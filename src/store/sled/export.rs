//! `wxauth store export` and `import` on sled: every tree, in key order, as
//! [`Record`]s. sled admits one process, so both run with the server stopped and nothing
//! else writes meanwhile.

use super::vault;
use crate::store::codec::{open_account_phone, phone_pseudonym};
use ::sled::Tree;
use uuid::Uuid;

use super::{
    SledStore,
    admin_tokens::AdminTokenRecord,
    events::EventRecord,
    id_bytes,
    meta::{IMPORTING_KEY, MODE_KEY},
    record::{AccountRecord, ControlsRecord, DetailsRecord, IdentityRecord, TicketRecord, UserRecord, time},
    refresh::FamilyRecord,
};
use crate::store::{
    StoreError,
    backend::Transfer,
    codec::phone_index,
    export::{FORMAT, IdentityLine, Record, at_line, check_mode, controls_line, hex, line_controls, other_mode, unhex},
};

fn uuid(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Ok(Uuid::from_bytes(id_bytes(bytes)?))
}

fn text(bytes: &[u8], what: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}

/// Inserts a new key; a key already there means the export holds it twice.
fn insert_new(tree: &Tree, key: &[u8], value: Vec<u8>, what: &str) -> Result<(), StoreError> {
    match tree.compare_and_swap(key, None::<&[u8]>, Some(value))? {
        Ok(()) => Ok(()),
        Err(_) => Err(StoreError::Corrupt(format!("{what} appears twice"))),
    }
}

impl Transfer for SledStore {
    /// Returns how many records it left out: links, accounts and details of a user that is
    /// gone, which a crash in the middle of a removal may leave behind (sled has no
    /// transactions across trees), which nothing reads, and which an import would refuse.
    async fn export(
        &self,
        out: &mut (dyn FnMut(Record) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let mut skipped = 0;
        let mut of_a_user = |user: &Uuid| -> Result<bool, StoreError> {
            let exists = self.records.contains_key(user.as_bytes())?;
            skipped += usize::from(!exists);
            Ok(exists)
        };
        out(Record::Header { format: FORMAT, sealing_key: self.sealer.key_id().to_owned() })?;
        if let Some(mode) = self.meta.get(MODE_KEY)? {
            out(Record::Mode { mode: text(&mode, "the mode")? })?;
        }
        for entry in self.records.iter() {
            let (id, bytes) = entry?;
            let Some((_, user)) = self.open_user(&id, &bytes)? else { continue };
            let (roles, claims, ban, deletion) = controls_line(user.controls.controls()?);
            out(Record::User {
                id: uuid(&id)?,
                unionid: user.unionid,
                unionid_shared_with: user.unionid_shared_with.into_iter().map(Uuid::from_bytes).collect(),
                created_at: time(user.created_at)?,
                last_login_at: time(user.last_login_at)?,
                identities: user
                    .identities
                    .into_iter()
                    .map(|i| IdentityLine::new(i.appid, i.openid, i.session_key))
                    .collect::<Result<_, _>>()?,
                roles,
                claims,
                ban,
                deletion,
            })?;
        }
        // The index holds keyed hashes: the unionid is the one its holder's record names.
        for entry in self.unionids.iter() {
            let (link, holder) = entry?;
            let user = uuid(&holder)?;
            if !of_a_user(&user)? {
                continue;
            }
            let unionid = match self.read_user(&holder)? {
                Some((_, record)) => record.unionid.filter(|u| self.unionid_key(u)[..] == link[..]),
                None => None,
            };
            // Left out: a link its holder no longer names (an interrupted unbind).
            if let Some(unionid) = unionid {
                out(Record::Unionid { unionid, user })?;
            }
        }
        for entry in self.accounts.iter() {
            let (username, bytes) = entry?;
            let account = AccountRecord::decode(&bytes)?;
            if !of_a_user(&Uuid::from_bytes(account.user))? {
                continue;
            }
            let username = text(&username, "a username")?;
            let phone = self.sealed_account_phone(&account.user, &username)?;
            out(Record::Account {
                phone,
                username,
                user: Uuid::from_bytes(account.user),
                password_hash: account.password_hash,
                created_at: time(account.created_at)?,
            })?;
        }
        for entry in self.details.iter() {
            let (user, bytes) = entry?;
            let user = uuid(&user)?;
            if !of_a_user(&user)? {
                continue;
            }
            if let Some(sealed) = self.open_details(&super::user_id(user.as_bytes())?, &bytes)? {
                out(Record::Details { user, sealed: text(&sealed, "details")? })?;
            }
        }
        for entry in self.tickets.iter() {
            let (id, bytes) = entry?;
            let ticket = TicketRecord::decode(&bytes)?;
            out(Record::Ticket {
                id: hex(&id),
                appid: ticket.appid,
                openid: ticket.openid,
                unionid: ticket.unionid,
                session_key: ticket.session_key,
                expires_at: time(ticket.expires_at)?,
            })?;
        }
        for entry in self.refresh_families.iter() {
            let (key, bytes) = entry?;
            let Some((_, record)) = self.open_family(&key, &bytes)? else { continue };
            // A removed user's families wait for the purge; nothing can use them.
            if of_a_user(&record.user())? {
                out(record.export(&key)?)?;
            }
        }
        for entry in self.admin_tokens.iter() {
            let (id, bytes) = entry?;
            out(Record::admin_token(AdminTokenRecord::decode(&bytes)?.token(&id)?))?;
        }
        for entry in self.events.iter() {
            let (id, bytes) = entry?;
            out(Record::event(EventRecord::decode(&bytes)?.event(&id, self)?))?;
        }
        Ok(skipped)
    }

    /// Imports `records` (the header already checked) into this store, which must hold no
    /// data (a mode aside), durably. On failure the store is emptied again, so a corrected
    /// export can be imported next. Until it ends, a marker in `meta` says an import is
    /// under way: a store whose import a crash interrupted is refused at open.
    async fn import(
        &self,
        records: &mut (dyn Iterator<Item = Result<Record, StoreError>> + Send),
    ) -> Result<usize, StoreError> {
        if !self.data_trees().iter().all(|t| t.is_empty()) {
            return Err(StoreError::NotEmpty);
        }
        self.meta.insert(IMPORTING_KEY, &[1u8][..])?;
        self.commit.wait().await?;
        let mode_before = self.meta.get(MODE_KEY)?;
        // The header was line 1.
        let mut count = 1;
        let mut outcome = Ok(());
        for record in records {
            count += 1;
            outcome = record.and_then(|r| self.import_one(r)).map_err(|e| at_line(count, e));
            if outcome.is_err() {
                break;
            }
        }
        if let Err(e) = outcome {
            for tree in self.data_trees() {
                tree.clear()?;
            }
            match mode_before {
                Some(mode) => self.meta.insert(MODE_KEY, mode)?,
                None => self.meta.remove(MODE_KEY)?,
            };
            self.meta.remove(IMPORTING_KEY)?;
            self.commit.wait().await?;
            return Err(e);
        }
        // Everything first, then the marker's removal: sled recovers a prefix of its log.
        self.commit.wait().await?;
        self.meta.remove(IMPORTING_KEY)?;
        self.commit.wait().await?;
        Ok(count)
    }
}

impl SledStore {
    fn data_trees(&self) -> [&Tree; 15] {
        [
            &self.records,
            &self.openids,
            &self.unionids,
            &self.accounts,
            &self.account_phones,
            &self.phone_accounts,
            &self.tickets,
            &self.details,
            &self.phones,
            &self.refresh_families,
            &self.admin_tokens,
            &self.events,
            &self.events_by_user,
            &self.deletions,
            &self.outbox,
        ]
    }

    fn user_exists(&self, user: &Uuid) -> Result<(), StoreError> {
        match self.records.contains_key(user.as_bytes())? {
            true => Ok(()),
            false => Err(StoreError::Corrupt(format!("user {user} is not in the export before this record"))),
        }
    }

    fn import_one(&self, record: Record) -> Result<(), StoreError> {
        match record {
            Record::Header { .. } | Record::End { .. } => {
                return Err(StoreError::Corrupt("a first or last line in the middle".into()));
            }
            Record::Mode { mode } => {
                check_mode(&mode)?;
                if let Err(found) = self.meta.compare_and_swap(MODE_KEY, None::<&[u8]>, Some(mode.as_bytes()))?
                    && found.current.as_deref() != Some(mode.as_bytes())
                {
                    return Err(other_mode(&mode));
                }
            }
            Record::User {
                id,
                unionid,
                unionid_shared_with,
                created_at,
                last_login_at,
                identities,
                roles,
                claims,
                ban,
                deletion,
            } => {
                if self.records.contains_key(id.as_bytes())? {
                    return Err(StoreError::Corrupt(format!("user {id} appears twice")));
                }
                let mut record = UserRecord::empty(created_at);
                let controls = line_controls((roles, claims, ban, deletion))?;
                if let Some(deletion) = controls.deletion {
                    let key = super::deletions::index_key(
                        deletion.erase_at,
                        &crate::domain::UserId::from_bytes(*id.as_bytes()),
                    );
                    self.deletions.insert(key, &[][..])?;
                }
                record.controls = ControlsRecord::new(&controls);
                record.last_login_at = last_login_at.unix_timestamp_nanos();
                record.unionid = unionid;
                record.unionid_shared_with = unionid_shared_with.into_iter().map(Uuid::into_bytes).collect();
                for line in identities {
                    if record.identity(&line.appid).is_some() {
                        return Err(StoreError::Corrupt(format!("user {id} has two identities in {}", line.appid)));
                    }
                    let key = line.stored_key()?;
                    insert_new(
                        &self.openids,
                        &self.binding_key(&line.appid, &line.openid),
                        id.as_bytes().to_vec(),
                        &format!("openid {} of {}", line.openid, line.appid),
                    )?;
                    record.identities.push(IdentityRecord::new(&line.appid, &line.openid, key));
                }
                insert_new(
                    &self.records,
                    id.as_bytes(),
                    self.seal_new_user(id.as_bytes(), &record)?,
                    &format!("user {id}"),
                )?;
            }
            Record::Unionid { unionid, user } => {
                self.user_exists(&user)?;
                insert_new(
                    &self.unionids,
                    &self.unionid_key(&unionid),
                    user.as_bytes().to_vec(),
                    &format!("unionid {unionid}"),
                )?;
            }
            Record::Account { username, user, password_hash, created_at, phone } => {
                self.user_exists(&user)?;
                if let Some(sealed) = phone {
                    let phone = open_account_phone(&self.sealer, &username, &sealed)
                        .ok_or_else(|| StoreError::Corrupt(format!("account {username}: its phone does not open")))?;
                    let slot = self.user_slot(user.as_bytes())?.ok_or(StoreError::NoSuchUser)?;
                    // As exported: sled and PostgreSQL then export the same bytes.
                    let sealed =
                        self.vault.seal(vault::Purpose::AccountPhone, user.as_bytes(), slot, sealed.as_bytes())?;
                    let pseudonym = phone_pseudonym(&self.sealer, &phone);
                    insert_new(&self.phone_accounts, &pseudonym, username.as_bytes().to_vec(), "an account's phone")?;
                    self.account_phones.insert(username.as_bytes(), sealed)?;
                }
                let account = AccountRecord {
                    user: user.into_bytes(),
                    password_hash,
                    created_at: created_at.unix_timestamp_nanos(),
                };
                insert_new(&self.accounts, username.as_bytes(), account.encode()?, &format!("account {username}"))?;
                let (slot, mut record) = self.read_user(user.as_bytes())?.ok_or(StoreError::NoSuchUser)?;
                if let Some(other) = record.account.replace(username) {
                    return Err(StoreError::Corrupt(format!("user {user} has two accounts ({other} and another)")));
                }
                self.records.insert(user.as_bytes(), self.seal_user(user.as_bytes(), slot, &record)?)?;
            }
            Record::Details { user, sealed } => {
                self.user_exists(&user)?;
                let details = DetailsRecord::open(sealed.as_bytes(), &self.sealer, user.as_bytes())?;
                if let Some(phone) = phone_index(&self.sealer, &details) {
                    self.phones.insert(super::phone_key(&phone, &super::user_id(user.as_bytes())?), &[][..])?;
                }
                let value = self.seal_details(&super::user_id(user.as_bytes())?, sealed.as_bytes())?;
                insert_new(&self.details, user.as_bytes(), value, &format!("details of {user}"))?;
            }
            Record::Ticket { id, appid, openid, unionid, session_key, expires_at } => {
                let key = unhex::<32>(&id, "a ticket id")?;
                let ticket =
                    TicketRecord { appid, openid, unionid, session_key, expires_at: expires_at.unix_timestamp_nanos() };
                insert_new(&self.tickets, &key, ticket.encode()?, "a bind ticket")?;
            }
            record @ Record::RefreshFamily { .. } => {
                let (key, record) = FamilyRecord::import(record)?;
                self.user_exists(&record.user())?;
                let slot = self
                    .user_slot(record.user().as_bytes())?
                    .ok_or_else(|| StoreError::Corrupt(super::MISSING.into()))?;
                insert_new(&self.refresh_families, &key, self.seal_family(&record, slot)?, "a refresh family")?;
            }
            record @ Record::Event { .. } => {
                let event = record.into_event()?;
                if self.events.contains_key(event.id.as_bytes())? {
                    return Err(StoreError::Corrupt(format!("event {} appears twice", event.id)));
                }
                self.insert_event(&event)?;
            }
            record @ Record::AdminToken { .. } => {
                let token = record.into_admin_token()?;
                if self.admin_tokens.iter().values().any(|v| {
                    v.ok().and_then(|v| AdminTokenRecord::decode(&v).ok()).is_some_and(|t| t.name() == token.name)
                }) {
                    return Err(StoreError::Corrupt(format!("admin token {:?} appears twice", token.name)));
                }
                insert_new(&self.admin_tokens, &token.id, AdminTokenRecord::new(&token).encode()?, "an admin token")?;
            }
        }
        Ok(())
    }
}
