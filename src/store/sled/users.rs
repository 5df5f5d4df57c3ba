//! Users on sled: logins (a lock-free returning login, everything else under the links
//! lock), and what a user shared.

use ::sled::IVec;
use time::OffsetDateTime;

use super::{
    MISSING, SledStore, commit, id_bytes,
    record::{ControlsRecord, DetailsRecord, IdentityRecord, UserRecord},
    user_id,
    vault::{Opened, Purpose},
};
use crate::{
    domain::{Controls, Details, User, UserId, WechatSession},
    store::{
        LoginRecord, StoreError, StoredSessionKey,
        backend::Users,
        codec::phone_index,
        users::{Changes, returning_changes},
    },
};

/// What the lock-free path of a login found.
// Returned once per returning login and unpacked at once: a Box would cost an allocation on
// the hottest path to save stack bytes no one keeps.
#[allow(clippy::large_enum_variant)]
enum Fast {
    /// Done: nothing else to write.
    Done(LoginRecord),
    /// The login changes a link (a first unionid) or raced with an unbind: take the lock.
    Slow,
}

impl Users for SledStore {
    async fn login(
        &self,
        appid: &str,
        session: &WechatSession,
        create: Option<&[String]>,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let binding = self.binding_key(appid, &session.openid);
        if let Some(id) = self.openids.get(&binding)?
            && let Fast::Done(record) = self.returning(&id, appid, session, now)?
        {
            // The login that created this user may still be waiting for its flush (a double
            // tap with two codes): a token must not name a user that a crash could take back.
            if !self.commit.healthy() || self.commit.is_unflushed(&id) {
                self.commit.wait().await?;
            }
            return Ok(Some(record));
        }
        let settled = {
            let _links = self.lock();
            self.settle(&binding, appid, session, create, now)?
        };
        let Some((record, unflushed)) = settled else { return Ok(None) };
        self.commit.wait().await?;
        drop(unflushed);
        Ok(Some(record))
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.stored_user(id)
    }

    async fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<User>, StoreError> {
        match self.openids.get(self.binding_key(appid, openid))? {
            Some(id) => self.stored_user(&user_id(&id)?),
            None => Ok(None),
        }
    }

    async fn user_by_unionid(&self, unionid: &str) -> Result<Option<User>, StoreError> {
        match self.unionids.get(self.unionid_key(unionid))? {
            Some(id) => self.stored_user(&user_id(&id)?),
            None => Ok(None),
        }
    }

    async fn users_by_phone(&self, phone: &[u8; 16]) -> Result<Vec<UserId>, StoreError> {
        self.phones.scan_prefix(phone).keys().take(100).map(|key| user_id(&key?[16..])).collect()
    }

    async fn users_after(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<User>, StoreError> {
        let entries = match after {
            Some(after) => self.records.range::<&[u8], _>((
                std::ops::Bound::Excluded(after.as_bytes().as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => self.records.iter(),
        };
        let mut users = Vec::new();
        for entry in entries {
            let (key, bytes) = entry?;
            if let Some((_, record)) = self.open_user(&key, &bytes)? {
                users.push(record.user(user_id(&key)?)?);
                if users.len() == limit {
                    break;
                }
            }
        }
        Ok(users)
    }

    async fn session_key(&self, id: &UserId, appid: &str) -> Result<Option<StoredSessionKey>, StoreError> {
        match self.read_user(id.as_bytes())? {
            Some((_, record)) => match record.identity(appid) {
                Some(identity) => self.keys(id.as_bytes()).open(appid, identity.session_key.as_ref()),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    async fn details(&self, id: &UserId) -> Result<Details, StoreError> {
        self.details_of(id)
    }

    /// Changes a user's details under the lock, so that the user cannot be removed between
    /// the check and the write (which would leave details without a user).
    async fn change_details(
        &self,
        id: &UserId,
        change: impl Fn(&mut Details) + Send + Sync,
    ) -> Result<Details, StoreError> {
        let details = {
            let _links = self.lock();
            if !self.records.contains_key(id.as_bytes())? {
                return Err(StoreError::NoSuchUser);
            }
            let mut details = self.details_of(id)?;
            let old = phone_index(&self.sealer, &details);
            change(&mut details);
            let new = phone_index(&self.sealer, &details);
            let sealed = self.seal_details(id, &DetailsRecord::seal(&details, &self.sealer, id.as_bytes())?)?;
            self.indexing_phone(id, old, new, || Ok(self.details.insert(id.as_bytes(), sealed).map(drop)?))?;
            details
        };
        self.commit.wait().await?;
        Ok(details)
    }

    /// Under the links lock, like [`Users::change_details`]: an account removal checks and
    /// removes the record under it, so a change never writes back a removed user.
    async fn change_controls(
        &self,
        id: &UserId,
        change: impl Fn(&mut Controls) + Send + Sync,
    ) -> Result<User, StoreError> {
        let user = {
            let _links = self.lock();
            let Some(before) = self.stored_user(id)? else { return Err(StoreError::NoSuchUser) };
            // Controls change only under this lock: what `change` makes of them now is what
            // the update below writes. The deletion index is ahead of the record.
            let old = before.controls.deletion;
            let mut next = before.controls;
            change(&mut next);
            self.index_deletion(id, old, next.deletion, true)?;
            let (user, ()) = self.update(id.as_bytes(), |record| {
                let mut controls = record.controls.controls()?;
                change(&mut controls);
                record.controls = ControlsRecord::new(&controls);
                Ok(())
            })?;
            self.index_deletion(id, old, user.controls.deletion, false)?;
            user
        };
        self.commit.wait().await?;
        Ok(user)
    }
}

impl SledStore {
    /// The user stored under `id`, if any.
    pub(super) fn stored_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.read_user(id.as_bytes())?.map(|(_, record)| record.user(*id)).transpose()
    }

    pub(super) fn details_of(&self, id: &UserId) -> Result<Details, StoreError> {
        match self.details.get(id.as_bytes())? {
            Some(bytes) => match self.open_details(id, &bytes)? {
                Some(sealed) => DetailsRecord::open(&sealed, &self.sealer, id.as_bytes()),
                None => Ok(Details::default()),
            },
            None => Ok(Details::default()),
        }
    }

    /// The details of user `id` in `bytes`, sealed with the key file only (the form
    /// exports carry); `None` when the user's key is gone.
    pub(super) fn open_details(&self, id: &UserId, bytes: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.vault.open_value(Purpose::Details, id.as_bytes(), bytes)? {
            Opened::Plain { bytes, .. } => Ok(Some(bytes)),
            Opened::Shredded => Ok(None),
            Opened::NotSealed => Err(StoreError::Corrupt("a user's details are not sealed".into())),
        }
    }

    /// Details sealed with the key file (`sealed`), as stored: sealed again under the
    /// user's key.
    pub(super) fn seal_details(&self, id: &UserId, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let slot = self.user_slot(id.as_bytes())?.ok_or_else(|| StoreError::Corrupt(super::MISSING.into()))?;
        self.vault.seal(Purpose::Details, id.as_bytes(), slot, sealed)
    }

    /// Removes what user `id` shared, its phone number's index entry first: a crash in
    /// between leaves details that running the removal again removes, never an entry whose
    /// details are gone.
    pub(super) fn remove_details(&self, id: &UserId) -> Result<(), StoreError> {
        if let Some(phone) = phone_index(&self.sealer, &self.details_of(id)?) {
            self.phones.remove(super::phone_key(&phone, id))?;
        }
        self.details.remove(id.as_bytes())?;
        Ok(())
    }

    /// A returning login without the lock: rewrites the record only when something
    /// changed, by compare-and-swap so that a concurrent login's change is never lost.
    fn returning(
        &self,
        id: &IVec,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<Fast, StoreError> {
        let user_id = user_id(id)?;
        loop {
            let Some(bytes) = self.records.get(id)? else { return Ok(Fast::Slow) };
            let Some((slot, mut record)) = self.open_user(id, &bytes)? else { return Ok(Fast::Slow) };
            let Some(changes) = self.apply_returning(id, &mut record, appid, session, now)? else {
                return Ok(Fast::Slow);
            };
            if changes.unionid.is_some() {
                return Ok(Fast::Slow);
            }
            if changes.is_empty() {
                return Ok(Fast::Done(LoginRecord { user: record.user(user_id)?, created: false }));
            }
            if self.records.compare_and_swap(id, Some(&bytes), Some(self.seal_user(id, slot, &record)?))?.is_ok() {
                return Ok(Fast::Done(LoginRecord { user: record.user(user_id)?, created: false }));
            }
        }
    }

    /// Applies to `record` what a returning login of `session` changes in it: a new session
    /// key (sealed), a `last_login_at` past the granularity. A new unionid is only reported,
    /// because linking it needs the lock. `None`: the record has no identity for this openid
    /// of `appid` (an unbind got there first).
    fn apply_returning(
        &self,
        id: &[u8],
        record: &mut UserRecord,
        appid: &str,
        session: &WechatSession,
        now: OffsetDateTime,
    ) -> Result<Option<Changes>, StoreError> {
        let (last_login_at, unionid) = (record.last_login_at()?, record.unionid.clone());
        let keys = self.keys(id);
        let Some(identity) = record.identity_mut(appid).filter(|i| i.openid == session.openid) else {
            return Ok(None);
        };
        let changes = returning_changes(
            last_login_at,
            unionid.as_deref(),
            keys.open(appid, identity.session_key.as_ref())?.as_ref(),
            session,
            now,
        );
        if let Some(key) = &changes.session_key {
            identity.session_key = Some(keys.seal(appid, key)?);
        }
        if let Some(at) = changes.last_login_at {
            record.last_login_at = at.unix_timestamp_nanos();
        }
        Ok(Some(changes))
    }

    /// A login under the lock: the identity is bound already (a racer got there first, or
    /// a first unionid arrives), joins the user its unionid belongs to, or (when `create`)
    /// gets a new user. `None`: not bound and not created. What it returns must be made
    /// durable before it is acknowledged.
    pub(super) fn settle(
        &self,
        binding: &[u8],
        appid: &str,
        session: &WechatSession,
        create: Option<&[String]>,
        now: OffsetDateTime,
    ) -> Result<Option<(LoginRecord, commit::Unflushed)>, StoreError> {
        let key = StoredSessionKey::of(session, now);
        if let Some(id) = self.openids.get(binding)? {
            let unflushed = self.commit.track(id_bytes(&id)?);
            // The unionid, if new, is linked below (it needs the index, hence this path).
            let updated =
                self.update(&id, |record| Ok(self.apply_returning(&id, record, appid, session, now)?.is_some()));
            match updated {
                Ok((user, true)) => {
                    let user = self.learn_unionid(user, session.unionid.as_deref())?;
                    return Ok(Some((LoginRecord { user, created: false }, unflushed)));
                }
                // A binding whose user no longer has the identity (or no longer exists): an
                // unbind or account removal stopped by a crash between its writes. The
                // binding is what is stale; drop it and treat the openid as unbound.
                Ok((_, false)) => self.drop_stale_binding(binding, &id)?,
                Err(StoreError::Corrupt(e)) if e == MISSING => self.drop_stale_binding(binding, &id)?,
                Err(e) => return Err(e),
            }
        }
        if let Some(owner) = self.unionid_owner(session.unionid.as_deref())? {
            let unflushed = self.commit.track(id_bytes(&owner)?);
            // `false`: another openid of the same app, so not the same person after all.
            let joined = self.attach(&owner, appid, &session.openid, key.as_ref(), now);
            match joined {
                Ok((user, true)) => {
                    self.openids.insert(binding, &owner)?;
                    tracing::info!(user_id = %user.id, appid, "a login joined the user of its unionid");
                    return Ok(Some((LoginRecord { user, created: false }, unflushed)));
                }
                Ok((user, false)) => tracing::warn!(
                    user_id = %user.id,
                    appid,
                    "a unionid names a user that has another openid of this app; not joining"
                ),
                Err(StoreError::Corrupt(e)) if e == MISSING => {}
                Err(e) => return Err(e),
            }
        }
        let Some(roles) = create else { return Ok(None) };
        let id = UserId::new();
        let unflushed = self.commit.track(*id.as_bytes());
        let mut record = UserRecord::empty(now);
        record.controls.roles = roles.to_vec();
        let sealed = key.as_ref().map(|key| self.keys(id.as_bytes()).seal(appid, key)).transpose()?;
        record.identities.push(IdentityRecord::new(appid, &session.openid, sealed));
        self.records.insert(id.as_bytes(), self.seal_new_user(id.as_bytes(), &record)?)?;
        self.openids.insert(binding, &id.as_bytes()[..])?;
        let user = self.learn_unionid(record.user(id)?, session.unionid.as_deref())?;
        Ok(Some((LoginRecord { user, created: true }, unflushed)))
    }

    /// Adds the identity `openid` of `appid`, with its session key, to the user stored
    /// under `id`, unless the user already has an identity of that app (`false`).
    pub(super) fn attach(
        &self,
        id: &[u8],
        appid: &str,
        openid: &str,
        key: Option<&StoredSessionKey>,
        now: OffsetDateTime,
    ) -> Result<(User, bool), StoreError> {
        self.update(id, |record| {
            if record.identity(appid).is_some() {
                return Ok(false);
            }
            let sealed = key.map(|key| self.keys(id).seal(appid, key)).transpose()?;
            record.identities.push(IdentityRecord::new(appid, openid, sealed));
            record.last_login_at = now.unix_timestamp_nanos();
            Ok(true)
        })
    }
}
