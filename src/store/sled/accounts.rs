//! Accounts on sled: `accounts`, username → [`AccountRecord`], each with a user of its
//! own; changed under the links lock, like bindings.
//!
//! An account's phone number lives apart from the record (whose layout older data
//! directories share): `account_phones` holds it sealed under the key of the account's
//! user, so an erasure leaves nothing readable, and `phone_accounts` finds the account by
//! the number's pseudonym. The index entry is written before the number and removed after
//! it, so a crash leaves at worst a stale entry, which lookups check away.

use ::sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};
use time::OffsetDateTime;

use super::{
    SledStore,
    record::{self, AccountRecord, UserRecord},
    vault,
};
use crate::{
    domain::{User, UserId},
    store::{
        Account, NewAccount, StoreError,
        backend::Accounts,
        codec::{open_account_phone, phone_pseudonym, seal_account_phone},
    },
};

impl Accounts for SledStore {
    async fn add_accounts(&self, accounts: &[NewAccount]) -> Result<Vec<User>, StoreError> {
        let now = OffsetDateTime::now_utc();
        // Keys and sealing first, outside the links lock (an import may seal many), and
        // outside the transaction, which may run more than once.
        let mut rows = Vec::with_capacity(accounts.len());
        let mut users = Vec::with_capacity(accounts.len());
        let prepared = (|| {
            for a in accounts {
                let id = UserId::new();
                let mut user = UserRecord::empty(now);
                user.account = Some(a.username.clone());
                let slot = self.vault.new_slot(id.as_bytes())?;
                users.push(user.user(id)?);
                let sealed_user = self.seal_user(id.as_bytes(), slot, &user)?;
                let account = AccountRecord {
                    user: *id.as_bytes(),
                    password_hash: a.password_hash.clone(),
                    created_at: now.unix_timestamp_nanos(),
                }
                .encode()?;
                let phone = match &a.phone {
                    Some(phone) => Some((
                        phone_pseudonym(&self.sealer, phone),
                        self.seal_phone(id.as_bytes(), slot, &a.username, phone)?,
                    )),
                    None => None,
                };
                rows.push((id, a.username.as_bytes(), sealed_user, account, phone));
            }
            Ok(())
        })();
        let written = prepared.and_then(|()| {
            let _links = self.lock();
            for a in accounts {
                if self.accounts.contains_key(&a.username)? {
                    return Err(StoreError::AccountExists);
                }
                if let Some(phone) = &a.phone
                    && self.phone_holder(phone)?.is_some()
                {
                    return Err(StoreError::PhoneTaken);
                }
            }
            let trees = (&self.records, &self.accounts, &self.account_phones, &self.phone_accounts);
            // One transaction: a crash leaves all of the accounts or none.
            let written = trees.transaction(|(records, names, phones, by_phone)| {
                for (id, username, sealed_user, account, phone) in &rows {
                    records.insert(&id.as_bytes()[..], &sealed_user[..])?;
                    if let Some((pseudonym, sealed)) = phone {
                        by_phone.insert(&pseudonym[..], *username)?;
                        phones.insert(*username, &sealed[..])?;
                    }
                    names.insert(*username, &account[..])?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            });
            match written {
                Ok(()) => Ok(()),
                Err(TransactionError::Abort(e)) => Err(e),
                Err(TransactionError::Storage(e)) => Err(e.into()),
            }
        });
        if let Err(e) = written {
            // The keys made for accounts that were not added seal nothing: destroy them.
            for user in &users {
                self.vault.shred(user.id.as_bytes(), None)?;
            }
            return Err(e);
        }
        self.commit.wait().await?;
        Ok(users)
    }

    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.accounts.get(username)?.map(|bytes| self.account_of(username.to_owned(), &bytes)).transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.accounts
            .iter()
            .map(|entry| {
                let (name, bytes) = entry?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| StoreError::Corrupt("username".into()))?;
                self.account_of(name, &bytes)
            })
            .collect()
    }

    async fn account_by_phone(&self, phone: &[u8; 16]) -> Result<Option<Account>, StoreError> {
        let Some(name) = self.phone_accounts.get(phone)? else { return Ok(None) };
        let name = String::from_utf8(name.to_vec()).map_err(|_| StoreError::Corrupt("username".into()))?;
        self.account(&name).await
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> Result<(), StoreError> {
        {
            let _links = self.lock();
            let bytes = self.accounts.get(username)?.ok_or(StoreError::NoSuchAccount)?;
            let mut account = AccountRecord::decode(&bytes)?;
            account.password_hash = password_hash.to_owned();
            self.accounts.insert(username, account.encode()?)?;
        }
        self.commit.wait().await
    }

    async fn set_account_phone(&self, username: &str, phone: Option<&str>) -> Result<(), StoreError> {
        {
            let _links = self.lock();
            let bytes = self.accounts.get(username)?.ok_or(StoreError::NoSuchAccount)?;
            let user = AccountRecord::decode(&bytes)?.user;
            let old = self.account_phone(&user, username)?;
            if old.as_deref() == phone {
                return Ok(());
            }
            if let Some(phone) = phone {
                if self.phone_holder(phone)?.is_some_and(|holder| holder != username) {
                    return Err(StoreError::PhoneTaken);
                }
                // The account's user has a key: accounts are kept (emptied) by an erasure.
                let slot = self.user_slot(&user)?.ok_or(StoreError::NoSuchAccount)?;
                let sealed = self.seal_phone(&user, slot, username, phone)?;
                self.phone_accounts.insert(phone_pseudonym(&self.sealer, phone), username)?;
                self.account_phones.insert(username, sealed)?;
            } else {
                self.account_phones.remove(username)?;
            }
            if let Some(old) = old {
                let _ = self.phone_accounts.compare_and_swap(
                    phone_pseudonym(&self.sealer, &old),
                    Some(username.as_bytes()),
                    None::<&[u8]>,
                )?;
            }
        }
        self.commit.wait().await
    }

    async fn remove_account(&self, username: &str) -> Result<User, StoreError> {
        let user = {
            let _links = self.lock();
            let bytes = self.accounts.get(username)?.ok_or(StoreError::NoSuchAccount)?;
            let id = UserId::from_bytes(AccountRecord::decode(&bytes)?.user);
            // Bindings, then the user, then the account: a crash in between leaves a state
            // that running the command again finishes (the user may already be gone).
            let user = self.stored_user(&id)?;
            self.unbind_locked(&id)?;
            self.remove_details(&id)?;
            self.drop_account_phone(id.as_bytes(), username)?;
            self.records.remove(id.as_bytes())?;
            // What of the user the log still holds can no longer be read.
            self.vault.shred(id.as_bytes(), None)?;
            self.accounts.remove(username)?;
            let gone = || {
                let mut record = UserRecord::empty(OffsetDateTime::now_utc());
                record.account = Some(username.to_owned());
                record.user(id)
            };
            match user {
                Some(user) => user,
                None => gone()?,
            }
        };
        self.commit.wait().await?;
        Ok(user)
    }
}

impl SledStore {
    fn account_of(&self, username: String, bytes: &[u8]) -> Result<Account, StoreError> {
        let record = AccountRecord::decode(bytes)?;
        Ok(Account {
            phone: self.account_phone(&record.user, &username)?,
            username,
            user: UserId::from_bytes(record.user),
            password_hash: record.password_hash,
            created_at: record::time(record.created_at)?,
        })
    }

    /// The stored form of account `username`'s number `phone`: sealed as PostgreSQL and
    /// exports seal it ([`seal_account_phone`]), then under the key of the account's user
    /// `user` in `slot` (which an erasure destroys). The inner form is what an export
    /// carries, so that sled and PostgreSQL export the same bytes.
    pub(super) fn seal_phone(
        &self,
        user: &[u8; 16],
        slot: u32,
        username: &str,
        phone: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let inner = seal_account_phone(&self.sealer, username, phone)?;
        self.vault.seal(vault::Purpose::AccountPhone, user, slot, inner.as_bytes())
    }

    /// The inner sealed form of account `username`'s number ([`SledStore::seal_phone`]);
    /// `None` when it has none or its user's key was destroyed.
    pub(super) fn sealed_account_phone(&self, user: &[u8; 16], username: &str) -> Result<Option<String>, StoreError> {
        let Some(sealed) = self.account_phones.get(username)? else { return Ok(None) };
        match self.vault.open_value(vault::Purpose::AccountPhone, user, &sealed)? {
            vault::Opened::Plain { bytes, .. } => {
                String::from_utf8(bytes).map(Some).map_err(|_| StoreError::Corrupt("an account's phone".into()))
            }
            vault::Opened::Shredded => Ok(None),
            vault::Opened::NotSealed => Err(StoreError::Corrupt("an account's phone number is not sealed".into())),
        }
    }

    /// The phone number of account `username` of user `user`; `None` when it has none or
    /// its user's key was destroyed.
    pub(super) fn account_phone(&self, user: &[u8; 16], username: &str) -> Result<Option<String>, StoreError> {
        Ok(self.sealed_account_phone(user, username)?.and_then(|s| open_account_phone(&self.sealer, username, &s)))
    }

    /// The account that holds `phone` (normalised) now; a stale index entry is none.
    fn phone_holder(&self, phone: &str) -> Result<Option<String>, StoreError> {
        let Some(name) = self.phone_accounts.get(phone_pseudonym(&self.sealer, phone))? else { return Ok(None) };
        let name = String::from_utf8(name.to_vec()).map_err(|_| StoreError::Corrupt("username".into()))?;
        let Some(bytes) = self.accounts.get(&name)? else { return Ok(None) };
        let user = AccountRecord::decode(&bytes)?.user;
        Ok((self.account_phone(&user, &name)?.as_deref() == Some(phone)).then_some(name))
    }

    /// Removes the phone number of account `username` (of user `user`) and its index
    /// entry; under the links lock.
    pub(super) fn drop_account_phone(&self, user: &[u8; 16], username: &str) -> Result<(), StoreError> {
        let old = self.account_phone(user, username)?;
        // The number before its index entry (the module comment).
        self.account_phones.remove(username)?;
        if let Some(old) = old {
            let pseudonym = phone_pseudonym(&self.sealer, &old);
            let _ = self.phone_accounts.compare_and_swap(pseudonym, Some(username.as_bytes()), None::<&[u8]>)?;
        }
        Ok(())
    }
}
