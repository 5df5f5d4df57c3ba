//! `/admin/v1/users...`: find users, show one, and act on them.

use std::sync::Arc;

use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use time::OffsetDateTime;

use super::{AdminTags, AdminToken, Cursor, NO_STORE, bad_limit, invalid};
use crate::{
    api::{
        error::{AdminListError, AdminReadError, AdminWriteError},
        events::EventBody,
        me::{IdentityBody, ProfileBody, VerifiedPhone, identity, phone_body, profile_body},
        sessions::SessionBody,
    },
    auth::{Auth, Change, OperatorFailure, UserFile, WriteFailure},
    domain::{User, UserId},
};

/// Users per page when `limit` is not given.
const DEFAULT_PAGE: u32 = 50;
/// Most users per page.
const MAX_PAGE: u32 = 500;

/// A ban.
#[derive(Debug, Object)]
pub struct BanBody {
    /// Why (the person sees it in the 403 `user_banned`).
    pub reason: String,
    /// When it ends (RFC 3339); absent: until lifted.
    #[oai(skip_serializing_if_is_none)]
    pub until: Option<OffsetDateTime>,
    /// When it was imposed (RFC 3339).
    pub at: OffsetDateTime,
}

/// A user as operators see it.
#[derive(Debug, Object)]
pub struct AdminUserBody {
    /// The user id (a UUID).
    pub id: String,
    /// The account's username, for users of an account.
    #[oai(skip_serializing_if_is_none)]
    pub username: Option<String>,
    /// Bound WeChat identities, one per app.
    pub identities: Vec<IdentityBody>,
    /// The unionid, when known.
    #[oai(skip_serializing_if_is_none)]
    pub unionid: Option<String>,
    /// Other users WeChat gave the same unionid (reported, never merged).
    pub unionid_shared_with: Vec<String>,
    /// First login or creation (RFC 3339).
    pub created_at: OffsetDateTime,
    /// Most recent login (RFC 3339, to within 5 minutes).
    pub last_login_at: OffsetDateTime,
    /// Roles, which access tokens carry.
    pub roles: Vec<String>,
    /// Custom claims, which access tokens carry (`{}` when none).
    pub claims: serde_json::Value,
    /// The ban, while there is one (it may have ended at `until`).
    #[oai(skip_serializing_if_is_none)]
    pub ban: Option<BanBody>,
}

impl AdminUserBody {
    /// `u` as the admin API shows it; `kinds` says each identity's surface.
    pub fn of(u: User, kinds: &crate::auth::AppKinds) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.account,
            identities: u.identities.into_iter().map(|i| identity(i, kinds)).collect(),
            unionid: u.unionid,
            unionid_shared_with: u.unionid_shared_with.iter().map(ToString::to_string).collect(),
            created_at: u.created_at,
            last_login_at: u.last_login_at,
            roles: u.controls.roles,
            claims: serde_json::Value::Object(u.controls.claims.as_map().clone()),
            ban: u.controls.ban.map(|b| BanBody { reason: b.reason, until: b.until, at: b.at }),
        }
    }
}

/// One user with everything wxauth holds about them, secrets aside.
#[derive(Debug, Object)]
pub struct UserFileBody {
    /// The user.
    pub user: AdminUserBody,
    /// The phone number the person verified, if any.
    #[oai(skip_serializing_if_is_none)]
    pub phone: Option<VerifiedPhone>,
    /// The phone number of the user's account (`+8613800138000`), for phone-first login.
    #[oai(skip_serializing_if_is_none)]
    pub account_phone: Option<String>,
    /// The WeChat profile the person shared, if any.
    #[oai(skip_serializing_if_is_none)]
    pub profile: Option<ProfileBody>,
    /// Live sessions, newest first.
    pub sessions: Vec<SessionBody>,
    /// The 20 newest events of the user, newest first (all of them: `GET /admin/v1/events?user=`).
    pub events: Vec<EventBody>,
}

impl UserFileBody {
    /// `f` as the admin API shows it; `kinds` says each identity's surface.
    pub fn of(f: UserFile, kinds: &crate::auth::AppKinds) -> Self {
        Self {
            user: AdminUserBody::of(f.user, kinds),
            phone: f.details.phone.map(phone_body),
            account_phone: f.account_phone,
            profile: f.details.profile.map(profile_body),
            sessions: f.sessions.into_iter().map(SessionBody::from).collect(),
            events: f.events.into_iter().map(EventBody::from).collect(),
        }
    }
}

/// A page of users.
#[derive(Debug, Object)]
pub struct UsersPageBody {
    /// The users.
    pub users: Vec<AdminUserBody>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

/// A ban to impose.
#[derive(Debug, Object)]
pub struct BanRequest {
    /// Why, 1 to 200 characters; the person sees it.
    pub reason: String,
    /// When it ends (RFC 3339, in the future); absent: until lifted.
    pub until: Option<OffsetDateTime>,
}

/// Roles to set.
#[derive(Debug, Object)]
pub struct RolesRequest {
    /// The roles (replacing the user's; empty clears them): 1 to 64 letters, digits, `.`,
    /// `_`, `:` or `-` each, at most 32.
    pub roles: Vec<String>,
}

/// The user to merge into the path's user.
#[derive(Debug, Object)]
pub struct MergeRequest {
    /// The id of the user merged into the path's user and removed.
    pub from: String,
}

/// An account's phone number to set.
#[derive(Debug, Object)]
pub struct AccountPhoneRequest {
    /// `+` and a country code (`+8613800138000`), or 11 digits of a mainland number; spaces
    /// and dashes are ignored. `null` takes the account's number away (required: a body
    /// without it is refused, not read as `null`). Unique across accounts.
    pub phone: MaybeUndefined<String>,
}

/// Custom claims to set.
#[derive(Debug, Object)]
pub struct ClaimsRequest {
    /// A JSON object of at most 1024 bytes (replacing the user's; `{}` clears them), without
    /// reserved names (`sub`, `exp`, `roles`, `sid`, ...).
    pub claims: serde_json::Value,
}

/// Answer of the user list.
#[derive(Debug, ApiResponse)]
pub enum UsersResponse {
    /// The users.
    #[oai(status = 200)]
    Ok(
        Json<UsersPageBody>,
        /// Personal data: no cache may keep it.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of one user's file.
#[derive(Debug, ApiResponse)]
pub enum UserFileResponse {
    /// The user.
    #[oai(status = 200)]
    Ok(
        Json<UserFileBody>,
        /// Personal data: no cache may keep it.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of a change to a user.
#[derive(Debug, ApiResponse)]
pub enum UserResponse {
    /// The user after the change.
    #[oai(status = 200)]
    Ok(
        Json<AdminUserBody>,
        /// Personal data: no cache may keep it.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of a session revocation or a deletion.
#[derive(Debug, ApiResponse)]
pub enum RevokedResponse {
    /// Done: the refresh tokens no longer work (access tokens run out within their
    /// lifetime; introspection calls them inactive at once).
    #[oai(status = 204)]
    Done,
}

/// The user id of a path.
fn user_id(raw: &str) -> Result<UserId, OperatorFailure> {
    UserId::parse(raw).ok_or_else(|| invalid("the user id must be a UUID (the `id` of a user)"))
}

/// The admin API's user operations.
pub struct UsersApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "AdminTags::Users")]
impl UsersApi {
    /// Find users
    ///
    /// With `q`: the users it names as a user id, an openid of any served app, a unionid,
    /// an account's username or a phone number they verified (`13800138000`,
    /// `+8613800138000`, `+86 138 0013 8000`; 11 digits starting with 1 mean +86), in one
    /// page. Without: every user in id order, page by page (`limit`, then `cursor` from
    /// `next_cursor`).
    #[oai(path = "/admin/v1/users", method = "get", operation_id = "findUsers")]
    async fn find_users(
        &self,
        token: AdminToken,
        /// A user id, openid, unionid, username or phone number.
        q: Query<Option<String>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Users per page, 1 to 500 (50 when absent).
        limit: Query<Option<u32>>,
    ) -> Result<UsersResponse, AdminListError> {
        self.auth.operator(&token.0.token).await?;
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(bad_limit(MAX_PAGE).into());
        }
        let after = cursor.0.as_deref().map(Cursor::decode).transpose()?.map(UserId::from_bytes);
        let query = q.0.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let page = self.auth.find_users(query, after, limit as usize).await?;
        let kinds = self.auth.app_kinds();
        let body = UsersPageBody {
            users: page.users.into_iter().map(|u| AdminUserBody::of(u, &kinds)).collect(),
            next_cursor: page.next.map(|id| Cursor::encode(id.as_bytes())),
        };
        Ok(UsersResponse::Ok(Json(body), NO_STORE.into()))
    }

    /// One user
    ///
    /// The user with identities, account, phone number, profile, roles, claims, ban, live
    /// sessions and the 20 newest events.
    #[oai(path = "/admin/v1/users/:id", method = "get", operation_id = "getUser")]
    async fn user(&self, token: AdminToken, id: Path<String>) -> Result<UserFileResponse, AdminReadError> {
        self.auth.operator(&token.0.token).await?;
        let file = self.auth.user_file(&user_id(&id.0)?).await?;
        Ok(UserFileResponse::Ok(Json(UserFileBody::of(file, &self.auth.app_kinds())), NO_STORE.into()))
    }

    /// Delete a user
    ///
    /// Erases the user at once, as the person's own `DELETE /v1/me` does after its grace
    /// period: identities, unionid link, phone number, profile, session keys, sessions and
    /// bind tickets go, and the user's events keep only their id, time, kind and app. An
    /// account made by `wxauth accounts add` stays, unbound. Needs role `write`.
    #[oai(path = "/admin/v1/users/:id", method = "delete", operation_id = "deleteUser")]
    async fn delete(&self, token: AdminToken, id: Path<String>) -> Result<RevokedResponse, AdminWriteError> {
        let operator = self.auth.writer(&token.0.token).await?;
        self.auth.delete_user(&operator, &user_id(&id.0).map_err(WriteFailure::from)?).await?;
        Ok(RevokedResponse::Done)
    }

    /// Ban a user
    ///
    /// Login, bind and refresh answer 403 `user_banned` (with the reason, and `until` when
    /// set) until the ban ends or is lifted; every session is revoked at once. Replaces a
    /// ban already in place. Needs role `write`.
    #[oai(path = "/admin/v1/users/:id/ban", method = "put", operation_id = "banUser")]
    async fn ban(
        &self,
        token: AdminToken,
        id: Path<String>,
        body: Json<BanRequest>,
    ) -> Result<UserResponse, AdminWriteError> {
        let change = Change::Ban { reason: body.0.reason, until: body.0.until };
        self.change(token, &id.0, change).await
    }

    /// Lift a ban
    ///
    /// Sessions revoked by the ban stay revoked: the person logs in again. Needs role
    /// `write`.
    #[oai(path = "/admin/v1/users/:id/ban", method = "delete", operation_id = "unbanUser")]
    async fn unban(&self, token: AdminToken, id: Path<String>) -> Result<UserResponse, AdminWriteError> {
        self.change(token, &id.0, Change::Unban).await
    }

    /// Set roles
    ///
    /// Replaces the user's roles; tokens issued from then on carry them. Needs role `write`.
    #[oai(path = "/admin/v1/users/:id/roles", method = "put", operation_id = "setRoles")]
    async fn roles(
        &self,
        token: AdminToken,
        id: Path<String>,
        body: Json<RolesRequest>,
    ) -> Result<UserResponse, AdminWriteError> {
        self.change(token, &id.0, Change::Roles(body.0.roles)).await
    }

    /// Merge another user into this one
    ///
    /// For two users who turn out to be one person (they share a unionid): this user gets
    /// the other's identities, unionid, account and its phone number, the phone number and
    /// profile it lacks, the other's roles and the claims it lacks, and its sessions; the
    /// other is removed (`wxauth users merge`). Refused (400 `invalid_request`, with the
    /// reason) when both have an identity of one app, different unionids or an account
    /// each, a deletion is pending, or the other's ban holds longer than this one's. Needs
    /// role `write`.
    #[oai(path = "/admin/v1/users/:id/merge", method = "post", operation_id = "mergeUsers")]
    async fn merge(
        &self,
        token: AdminToken,
        id: Path<String>,
        body: Json<MergeRequest>,
    ) -> Result<UserResponse, AdminWriteError> {
        let from = user_id(&body.0.from).map_err(WriteFailure::from)?;
        self.change(token, &id.0, Change::MergeFrom(from)).await
    }

    /// Set custom claims
    ///
    /// Replaces the user's custom claims; tokens issued from then on carry them at the top
    /// level. Needs role `write`.
    #[oai(path = "/admin/v1/users/:id/claims", method = "put", operation_id = "setClaims")]
    async fn claims(
        &self,
        token: AdminToken,
        id: Path<String>,
        body: Json<ClaimsRequest>,
    ) -> Result<UserResponse, AdminWriteError> {
        self.change(token, &id.0, Change::Claims(body.0.claims.to_string())).await
    }

    /// Set the account's phone number
    ///
    /// Gives the user's account the phone number it binds by in phone-first login, or
    /// takes it away (`null`), as `wxauth accounts set-phone` does. Refused (400) for a user
    /// without an account, a malformed number, or one another account has. Needs role
    /// `write`.
    #[oai(path = "/admin/v1/users/:id/account-phone", method = "put", operation_id = "setAccountPhone")]
    async fn account_phone(
        &self,
        token: AdminToken,
        id: Path<String>,
        body: Json<AccountPhoneRequest>,
    ) -> Result<UserResponse, AdminWriteError> {
        let phone = match body.0.phone {
            MaybeUndefined::Value(phone) => Some(phone),
            MaybeUndefined::Null => None,
            MaybeUndefined::Undefined => {
                let missing = invalid("send phone: a number, or null to take the account's number away");
                return Err(WriteFailure::from(missing).into());
            }
        };
        self.change(token, &id.0, Change::AccountPhone(phone)).await
    }

    /// Revoke every session
    ///
    /// Every refresh token of the user stops working. Needs role `write`.
    #[oai(path = "/admin/v1/users/:id/sessions", method = "delete", operation_id = "revokeSessions")]
    async fn revoke_all(&self, token: AdminToken, id: Path<String>) -> Result<RevokedResponse, AdminWriteError> {
        let operator = self.auth.writer(&token.0.token).await?;
        self.auth.revoke_sessions(&operator, &user_id(&id.0).map_err(WriteFailure::from)?, None).await?;
        Ok(RevokedResponse::Done)
    }

    /// Revoke one session
    ///
    /// The session's refresh tokens stop working. `session` is a session `id` from the
    /// user's file. Needs role `write`.
    #[oai(path = "/admin/v1/users/:id/sessions/:session", method = "delete", operation_id = "revokeSession")]
    async fn revoke_one(
        &self,
        token: AdminToken,
        id: Path<String>,
        session: Path<String>,
    ) -> Result<RevokedResponse, AdminWriteError> {
        let operator = self.auth.writer(&token.0.token).await?;
        let user = user_id(&id.0).map_err(WriteFailure::from)?;
        let session = uuid::Uuid::parse_str(&session.0)
            .map_err(|_| WriteFailure::from(invalid("the session id must be a UUID (a session's `id`)")))?;
        self.auth.revoke_sessions(&operator, &user, Some(session)).await?;
        Ok(RevokedResponse::Done)
    }
}

impl UsersApi {
    async fn change(&self, token: AdminToken, id: &str, change: Change) -> Result<UserResponse, AdminWriteError> {
        let operator = self.auth.writer(&token.0.token).await?;
        let user = self.auth.change_user(&operator, &user_id(id).map_err(WriteFailure::from)?, change).await?;
        Ok(UserResponse::Ok(Json(AdminUserBody::of(user, &self.auth.app_kinds())), NO_STORE.into()))
    }
}
