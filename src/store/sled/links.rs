//! Binds and unbinds on sled, and the unionid links that logins and binds learn, all under
//! the links lock ([`SledStore::links`]).

use ::sled::IVec;
use time::OffsetDateTime;

use super::{
    SledStore,
    record::{AccountRecord, TicketRecord},
    user_id,
};
use crate::{
    domain::{Identity, User, UserId, WechatSession},
    store::{
        LoginRecord, StoreError, StoredSessionKey, TicketId,
        backend::Links,
        links::{Bind, bind_target, shares_with},
        tickets::spend,
        users::new_unionid,
    },
};

impl Links for SledStore {
    async fn bind(
        &self,
        appid: &str,
        session: &WechatSession,
        username: &str,
        ticket: Option<&TicketId>,
        now: OffsetDateTime,
    ) -> Result<LoginRecord, StoreError> {
        let (record, unflushed) = {
            let _links = self.lock();
            let account = self.accounts.get(username)?.ok_or(StoreError::NoSuchAccount)?;
            let owner = AccountRecord::decode(&account)?.user;
            let binding = self.binding_key(appid, &session.openid);
            let key = StoredSessionKey::of(session, now);
            let bound = self.openids.get(&binding)?;
            let owner_has_app = match (&bound, self.read_user(&owner)?) {
                (Some(_), _) => false,
                (None, None) => return Err(StoreError::NoSuchAccount), // removal interrupted
                (None, Some((_, record))) => record.identity(appid).is_some(),
            };
            let target = bind_target(bound.as_deref(), &&owner[..], owner_has_app)?;
            // Spent only now: a refused bind leaves the ticket usable (another account, or
            // a corrected password).
            if let Some(ticket) = ticket {
                let spent = self.tickets.remove(ticket)?.map(|b| TicketRecord::decode(&b)).transpose()?;
                spend(spent.map(|t| t.expires_at), now.unix_timestamp_nanos())?;
            }
            let unflushed = self.commit.track(owner);
            // `settle` answers `None` only for a binding it found stale and dropped.
            let again = match target {
                Bind::Again => self.settle(&binding, appid, session, None, now)?,
                Bind::Attach => None,
            };
            if let Some((record, _)) = again {
                (record, unflushed)
            } else {
                let (user, attached) = self.attach(&owner, appid, &session.openid, key.as_ref(), now)?;
                if !attached {
                    return Err(StoreError::AccountAlreadyBound);
                }
                self.openids.insert(binding, &owner[..])?;
                let user = self.learn_unionid(user, session.unionid.as_deref())?;
                (LoginRecord { user, created: false }, unflushed)
            }
        };
        self.commit.wait().await?;
        drop(unflushed);
        Ok(record)
    }

    async fn unbind(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        let removed = {
            let _links = self.lock();
            self.unbind_locked(id)?
        };
        self.commit.wait().await?;
        Ok(removed)
    }
}

impl SledStore {
    /// Gives `user` its first unionid, and links the unionid to it unless another user
    /// holds it already: then both are marked as sharing it, and a warning is logged. Two
    /// existing users are never merged silently. Called under the lock.
    pub(super) fn learn_unionid(&self, user: User, unionid: Option<&str>) -> Result<User, StoreError> {
        let Some(unionid) = new_unionid(user.unionid.as_deref(), unionid) else { return Ok(user) };
        let id = &user.id.as_bytes()[..];
        // Under the lock: nobody else changes the link between the read and the write.
        let link = self.unionid_key(unionid);
        let holder = self.unionids.get(link)?;
        // A holder whose record no longer opens (its key was lost with an unacknowledged
        // first login) holds nothing: the link moves to this user.
        let holder_exists = match &holder {
            Some(h) if h != id => self.read_user(h)?.is_some(),
            _ => true,
        };
        let other = shares_with(holder.as_deref(), &id, holder_exists).map(user_id).transpose()?;
        if other.is_none() {
            self.unionids.insert(link, id)?;
        }
        let (user, _) = self.update(id, |record| {
            record.unionid = Some(unionid.to_owned());
            if let Some(other) = other.filter(|o| !record.unionid_shared_with.contains(o.as_bytes())) {
                record.unionid_shared_with.push(*other.as_bytes());
            }
            Ok(())
        })?;
        if let Some(other) = other {
            self.update(other.as_bytes(), |record| {
                if !record.unionid_shared_with.contains(user.id.as_bytes()) {
                    record.unionid_shared_with.push(*user.id.as_bytes());
                }
                Ok(())
            })?;
            tracing::warn!(
                user_id = %user.id,
                other_user_id = %other,
                "two existing users turned out to share a unionid; they are not merged (see `wxauth users show`)"
            );
        }
        Ok(user)
    }

    pub(super) fn drop_stale_binding(&self, binding: &[u8], id: &[u8]) -> Result<(), StoreError> {
        tracing::warn!(user_id = %user_id(id)?, "dropping a binding to a user that no longer holds it");
        let _ = self.openids.compare_and_swap(binding, Some(id), None::<&[u8]>)?;
        Ok(())
    }

    pub(super) fn unionid_owner(&self, unionid: Option<&str>) -> Result<Option<IVec>, StoreError> {
        match unionid {
            Some(u) => Ok(self.unionids.get(self.unionid_key(u))?),
            None => Ok(None),
        }
    }

    pub(super) fn unbind_locked(&self, id: &UserId) -> Result<Vec<Identity>, StoreError> {
        let me = &id.as_bytes()[..];
        if self.records.get(me)?.is_none() {
            return Ok(Vec::new());
        }
        let (_, (identities, unionid)) = self.update(me, |record| {
            let identities = std::mem::take(&mut record.identities);
            Ok((identities, record.unionid.take()))
        })?;
        for identity in &identities {
            // Only bindings that still point here: never another user's.
            let _ = self.openids.compare_and_swap(
                self.binding_key(&identity.appid, &identity.openid),
                Some(me),
                None::<&[u8]>,
            )?;
        }
        if let Some(unionid) = unionid {
            let _ = self.unionids.compare_and_swap(self.unionid_key(&unionid), Some(me), None::<&[u8]>)?;
        }
        Ok(identities.into_iter().map(|i| Identity { appid: i.appid, openid: i.openid }).collect())
    }
}
