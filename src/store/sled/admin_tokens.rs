//! Admin tokens on sled: `admin_tokens`, token id → [`AdminTokenRecord`]. There are a
//! handful, so the name's uniqueness is checked by a scan, under the links lock.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{SledStore, record::time};
use crate::store::{AdminRole, AdminToken, StoreError, backend::AdminTokens};

/// An admin token as stored. Times are Unix nanoseconds.
#[derive(Serialize, Deserialize)]
pub(super) struct AdminTokenRecord {
    name: String,
    /// `read` or `write`.
    role: String,
    secret_hash: [u8; 32],
    created_at: i128,
    revoked_at: Option<i128>,
}

impl AdminTokenRecord {
    pub(super) fn new(token: &AdminToken) -> Self {
        Self {
            name: token.name.clone(),
            role: token.role.as_str().to_owned(),
            secret_hash: token.secret_hash,
            created_at: token.created_at.unix_timestamp_nanos(),
            revoked_at: token.revoked_at.map(OffsetDateTime::unix_timestamp_nanos),
        }
    }

    pub(super) fn token(self, id: &[u8]) -> Result<AdminToken, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("admin token: {what}"));
        Ok(AdminToken {
            id: id.try_into().map_err(|_| corrupt("id"))?,
            role: AdminRole::parse(&self.role).ok_or_else(|| corrupt("role"))?,
            name: self.name,
            secret_hash: self.secret_hash,
            created_at: time(self.created_at)?,
            revoked_at: self.revoked_at.map(time).transpose()?,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("admin token: {e}")))
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self).map_err(|e| StoreError::Corrupt(format!("admin token: {e}")))
    }
}

impl SledStore {
    fn all_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        let mut tokens = Vec::new();
        for entry in self.admin_tokens.iter() {
            let (id, bytes) = entry?;
            tokens.push(AdminTokenRecord::decode(&bytes)?.token(&id)?);
        }
        tokens.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(tokens)
    }
}

impl AdminTokens for SledStore {
    async fn add_admin_token(&self, token: &AdminToken) -> Result<(), StoreError> {
        {
            let _links = self.lock();
            if self.all_admin_tokens()?.iter().any(|t| t.name == token.name) {
                return Err(StoreError::AdminTokenExists);
            }
            self.admin_tokens.insert(token.id, AdminTokenRecord::new(token).encode()?)?;
        }
        self.commit.wait().await
    }

    async fn admin_token(&self, id: &[u8; 16]) -> Result<Option<AdminToken>, StoreError> {
        self.admin_tokens.get(id)?.map(|bytes| AdminTokenRecord::decode(&bytes)?.token(id)).transpose()
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        self.all_admin_tokens()
    }

    async fn revoke_admin_token(&self, name: &str, at: OffsetDateTime) -> Result<AdminToken, StoreError> {
        let token = {
            let _links = self.lock();
            let mut token =
                self.all_admin_tokens()?.into_iter().find(|t| t.name == name).ok_or(StoreError::NoSuchAdminToken)?;
            token.revoked_at = token.revoked_at.or(Some(at));
            self.admin_tokens.insert(token.id, AdminTokenRecord::new(&token).encode()?)?;
            token
        };
        self.commit.wait().await?;
        Ok(token)
    }
}
