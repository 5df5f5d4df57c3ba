//! Accounts on sled: `accounts`, username → [`AccountRecord`], each with a user of its
//! own; changed under the links lock, like bindings.

use time::OffsetDateTime;

use super::{
    SledStore,
    record::{self, AccountRecord, UserRecord},
};
use crate::{
    domain::{User, UserId},
    store::{Account, StoreError, backend::Accounts},
};

impl Accounts for SledStore {
    async fn add_account(&self, username: &str, password_hash: &str) -> Result<User, StoreError> {
        let now = OffsetDateTime::now_utc();
        let user = {
            let _links = self.lock();
            if self.accounts.contains_key(username)? {
                return Err(StoreError::AccountExists);
            }
            let id = UserId::new();
            let mut record = UserRecord::empty(now);
            record.account = Some(username.to_owned());
            self.records.insert(id.as_bytes(), self.seal_new_user(id.as_bytes(), &record)?)?;
            let account = AccountRecord {
                user: *id.as_bytes(),
                password_hash: password_hash.to_owned(),
                created_at: now.unix_timestamp_nanos(),
            };
            self.accounts.insert(username, account.encode()?)?;
            record.user(id)?
        };
        self.commit.wait().await?;
        Ok(user)
    }

    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.accounts.get(username)?.map(|bytes| account(username.to_owned(), &bytes)).transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.accounts
            .iter()
            .map(|entry| {
                let (name, bytes) = entry?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| StoreError::Corrupt("username".into()))?;
                account(name, &bytes)
            })
            .collect()
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

fn account(username: String, bytes: &[u8]) -> Result<Account, StoreError> {
    let record = AccountRecord::decode(bytes)?;
    Ok(Account {
        username,
        user: UserId::from_bytes(record.user),
        password_hash: record.password_hash,
        created_at: record::time(record.created_at)?,
    })
}
