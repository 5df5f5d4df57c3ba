//! The operator's channel to accounts, users and admin tokens: `wxauth accounts ...`,
//! `wxauth users ...` and `wxauth admin-tokens ...`.
//!
//! sled admits one process per data directory, and operators add accounts while the
//! server runs. So the server listens on a Unix socket (`WXAUTH_ADMIN_SOCKET`, mode 0600:
//! only the user the server runs as, and root, can connect), and the CLI sends its command
//! there. When nothing listens (the server is stopped), the CLI opens the store itself.
//! Both paths run the same [`execute`], so they cannot drift apart.
//!
//! Both ends check the other. The server refuses a socket directory that other users can
//! write, where one of them could put a socket of their own in its place, and answers only
//! connections of its own user or root. The CLI sends nothing to a socket served by
//! anyone but its own user or root: an impostor would receive password hashes.
//!
//! The protocol is one JSON line each way per connection. Passwords never cross it: the CLI
//! hashes them (argon2id) and sends the hash.

use std::{
    io::ErrorKind,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{
    auth::admin_token,
    domain::{Ban, ControlError, CustomClaims, Identity, PhoneNumber, User, UserId, Username},
    store::{
        AdminRole, AdminToken, NewAccount, Store, StoreError,
        events::{Event, EventKind},
    },
};

/// Longest request line accepted on the socket.
/// Large enough for `wxauth accounts import` of some 100,000 accounts in one line.
const MAX_LINE: u64 = 32 * 1024 * 1024;
/// Time a client gets to send its request, and then to read the answer (the command itself
/// runs as long as the store takes: an import of many accounts may take a while).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// A command of the admin channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// `wxauth accounts add`.
    AddAccount {
        /// The new account's username.
        username: String,
        /// The argon2id PHC string of its password; empty for none (`--no-password`).
        password_hash: String,
        /// Its phone number, as an operator types it (`+8613800138000`, `13800138000`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
    },
    /// `wxauth accounts set-phone`.
    SetAccountPhone {
        /// The account.
        username: String,
        /// The number, as an operator types it; `None` takes the account's number away.
        phone: Option<String>,
    },
    /// `wxauth accounts import`: every row, or nothing.
    ImportAccounts {
        /// The rows of the CSV file.
        rows: Vec<ImportRow>,
    },
    /// `wxauth accounts list`.
    ListAccounts,
    /// `wxauth accounts remove`.
    RemoveAccount {
        /// The account to remove.
        username: String,
    },
    /// `wxauth accounts passwd`.
    SetPassword {
        /// The account.
        username: String,
        /// The argon2id PHC string of the new password.
        password_hash: String,
    },
    /// `wxauth users show`.
    ShowUser {
        /// A user id, an openid of any configured app, or an account's username.
        query: String,
    },
    /// `wxauth users merge`: moves everything of `from` to `into` and removes `from`.
    MergeUsers {
        /// The user that stays (a user id, openid, unionid, username or phone number).
        into: String,
        /// The user merged into it and removed.
        from: String,
    },
    /// `wxauth users ban`: refuses the user's logins, binds and refreshes, and revokes
    /// every refresh token of the user.
    BanUser {
        /// One user, as [`Command::ShowUser`] finds it.
        query: String,
        /// Why (shown to the person in the 403).
        reason: String,
        /// When the ban ends; `None`: until `unban`.
        #[serde(default, with = "time::serde::rfc3339::option")]
        until: Option<OffsetDateTime>,
    },
    /// `wxauth users unban`.
    UnbanUser {
        /// One user, as [`Command::ShowUser`] finds it.
        query: String,
    },
    /// `wxauth users set-roles`: replaces the user's roles (none clears them).
    SetRoles {
        /// One user, as [`Command::ShowUser`] finds it.
        query: String,
        /// The roles.
        roles: Vec<String>,
    },
    /// `wxauth users set-claims`: replaces the user's custom claims (`{}` clears them).
    SetClaims {
        /// One user, as [`Command::ShowUser`] finds it.
        query: String,
        /// A JSON object.
        claims: String,
    },
    /// `wxauth admin-tokens create`: keeps a token the CLI minted (its hash, not its secret).
    AddAdminToken {
        /// The token's id.
        id: uuid::Uuid,
        /// Its unique name.
        name: String,
        /// `read` or `write`.
        role: String,
        /// SHA-256 of its secret part, unpadded base64url.
        secret_hash: String,
    },
    /// `wxauth admin-tokens list`.
    ListAdminTokens,
    /// `wxauth keys rotate` or `keys prune` changed the key ring: records the event.
    KeyChanged {
        /// `key_staged` or `key_pruned`.
        kind: String,
        /// The key's id.
        kid: String,
        /// Its algorithm.
        alg: String,
        /// When the key signs from (staged keys).
        #[serde(default, with = "time::serde::rfc3339::option")]
        activates_at: Option<OffsetDateTime>,
    },
    /// `wxauth admin-tokens revoke`.
    RevokeAdminToken {
        /// The token's name.
        name: String,
    },
}

/// A row of `wxauth accounts import`, as read from the CSV file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRow {
    /// Its line in the file, for errors.
    pub line: u64,
    /// The username.
    pub username: String,
    /// The phone number, as written.
    pub phone: String,
    /// The argon2id PHC string, or empty for none.
    #[serde(default)]
    pub password_hash: String,
}

/// Errors an import reports at most: a file with a wrong column has one per line.
const IMPORT_ERRORS_SHOWN: usize = 20;

/// An admin token as the admin commands show it: never its secret or hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminTokenView {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// `read` or `write`.
    pub role: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<AdminToken> for AdminTokenView {
    fn from(t: AdminToken) -> Self {
        Self {
            id: uuid::Uuid::from_bytes(t.id),
            name: t.name,
            role: t.role.as_str().to_owned(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A user as the admin commands show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    /// User id.
    pub id: String,
    /// The account's username, for users of an account.
    pub username: Option<String>,
    /// Bound WeChat identities.
    pub identities: Vec<Identity>,
    /// The unionid, when known.
    pub unionid: Option<String>,
    /// Other users WeChat gave the same unionid (reported, never merged).
    pub unionid_shared_with: Vec<String>,
    /// Creation time (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Most recent login (RFC 3339, to within 5 minutes).
    #[serde(with = "time::serde::rfc3339")]
    pub last_login_at: OffsetDateTime,
    /// The verified phone number (`users show` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// The WeChat nickname from a decrypted profile (`users show` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// The phone number of the user's account (`users show` and `accounts list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_phone: Option<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Custom claims, as compact JSON (`{}` when none).
    #[serde(default)]
    pub claims: String,
    /// The ban's reason, when the user is banned (or was, and it ended without an unban).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_reason: Option<String>,
    /// When the ban ends.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub ban_until: Option<OffsetDateTime>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.account,
            identities: u.identities,
            unionid: u.unionid,
            unionid_shared_with: u.unionid_shared_with.iter().map(ToString::to_string).collect(),
            created_at: u.created_at,
            last_login_at: u.last_login_at,
            phone_number: None,
            nickname: None,
            account_phone: None,
            roles: u.controls.roles,
            claims: u.controls.claims.to_json(),
            ban_reason: u.controls.ban.as_ref().map(|b| b.reason.clone()),
            ban_until: u.controls.ban.and_then(|b| b.until),
        }
    }
}

/// The answer to a [`Command`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The account's user after the command (added, changed or removed).
    User {
        /// The user.
        user: Box<UserView>,
    },
    /// Every account's user.
    Users {
        /// The users, by username.
        users: Vec<UserView>,
    },
    /// Admin tokens (one after a create or revoke).
    AdminTokens {
        /// The tokens, by name.
        tokens: Vec<AdminTokenView>,
    },
    /// How many accounts an import added.
    Imported {
        /// The count.
        accounts: usize,
    },
    /// Done, nothing to show.
    Done,
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The operator's input was refused.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The socket failed.
    #[error("admin socket {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The other side sent something unreadable.
    #[error("admin channel: {0}")]
    Protocol(String),
    /// The socket is served by another user: nothing was sent to it.
    #[error(
        "admin socket {path} (WXAUTH_ADMIN_SOCKET) is served by uid {peer}, neither the user running this \
         command (uid {me}) nor root: nothing was sent to it, as another user's server would receive the \
         command. Run the command as the user the server runs as (e.g. sudo -u USER wxauth ...)"
    )]
    ForeignServer {
        /// The socket.
        path: PathBuf,
        /// The uid of the process that listens on it.
        peer: u32,
        /// The uid running the command.
        me: u32,
    },
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The operator's input was refused, or names no user.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<CommandError> for AdminError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused(text) => Self::Refused(text),
            CommandError::Store(e) => Self::Store(e),
        }
    }
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AccountExists => Self::Refused("an account with this username already exists".into()),
            StoreError::PhoneTaken => Self::Refused("another account has this phone number".into()),
            StoreError::NoSuchAccount => Self::Refused("no account has this username".into()),
            StoreError::NoSuchUser => Self::Refused("the user was removed meanwhile".into()),
            StoreError::MergeRefused(reason) => Self::Refused(format!("not merged: {reason}")),
            StoreError::AdminTokenExists => Self::Refused("an admin token with this name already exists".into()),
            StoreError::NoSuchAdminToken => Self::Refused("no admin token has this name".into()),
            other => Self::Store(other),
        }
    }
}

/// Runs one command of the admin channel (the `wxauth` commands) against the store.
/// `appids` are the apps an openid is looked up in.
pub async fn execute(store: &Store, appids: &[String], command: Command) -> Result<Reply, AdminError> {
    Ok(execute_as(store, appids, CLI, OffsetDateTime::now_utc(), command).await?)
}

/// Runs one command against the store for `actor` (the name its events carry) at `now`.
/// The admin channel and the admin API both run their changes through here.
pub async fn execute_as(
    store: &Store,
    appids: &[String],
    actor: &str,
    now: OffsetDateTime,
    command: Command,
) -> Result<Reply, CommandError> {
    let event = |kind| Event::new(kind, now).actor(actor);
    let username = |raw: &str| Username::parse(raw).map_err(|e| CommandError::Refused(e.to_string()));
    let hash = |raw: &str| crate::password::check_stored(raw).map_err(|e| CommandError::Refused(e.to_string()));
    match command {
        Command::AddAccount { username: name, password_hash, phone } => {
            let name = username(&name)?;
            if !password_hash.is_empty() {
                hash(&password_hash)?;
            }
            let phone = phone.as_deref().map(phone_number).transpose()?;
            if password_hash.is_empty() && phone.is_none() {
                return Err(CommandError::Refused(
                    "an account without a password needs a phone number (--phone): nothing could bind to it".into(),
                ));
            }
            let account = NewAccount { username: name.as_str().to_owned(), password_hash, phone };
            let user = store.add_account(account).await?;
            tracing::info!(username = %name, user_id = %user.id, "account added");
            store.record(event(EventKind::AccountAdded).user(user.id).detail("username", name.as_str())).await;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::SetAccountPhone { username: name, phone } => {
            let name = username(&name)?;
            let phone = phone.as_deref().map(phone_number).transpose()?;
            let account = store.account(name.as_str()).await?.ok_or(StoreError::NoSuchAccount)?;
            if phone.is_none() && account.password_hash.is_empty() {
                return Err(CommandError::Refused(format!(
                    "account {name} has no password: without its phone number nothing could bind to it \
                     (give it another number, or a password with wxauth accounts passwd)"
                )));
            }
            store.set_account_phone(name.as_str(), phone.as_deref()).await?;
            tracing::info!(username = %name, "account phone number changed");
            let account = store.account(name.as_str()).await?.ok_or(StoreError::NoSuchAccount)?;
            // Never the number: it is personal data.
            let changed = event(EventKind::AccountPhoneSet).user(account.user).detail("username", name.as_str());
            store.record(changed.detail("phone", phone.is_some())).await;
            let user = store.user(&account.user).await?.ok_or(StoreError::NoSuchAccount)?;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::ImportAccounts { rows } => {
            let accounts = check_import(store, &rows).await?;
            let users = store.add_accounts(&accounts).await?;
            tracing::info!(accounts = users.len(), "accounts imported");
            for (user, account) in users.iter().zip(&accounts) {
                let added = event(EventKind::AccountAdded).user(user.id).detail("username", account.username.as_str());
                store.record(added.detail("via", "import")).await;
            }
            Ok(Reply::Imported { accounts: users.len() })
        }
        Command::ListAccounts => {
            let mut users = Vec::new();
            for account in store.accounts().await? {
                if let Some(user) = store.user(&account.user).await? {
                    users.push(UserView { account_phone: account.phone, ..user.into() });
                }
            }
            Ok(Reply::Users { users })
        }
        Command::RemoveAccount { username: name } => {
            let user = store.remove_account(username(&name)?.as_str()).await?;
            tracing::info!(username = %name, user_id = %user.id, "account removed");
            store.record(event(EventKind::AccountRemoved).user(user.id).detail("username", name.as_str())).await;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::SetPassword { username: name, password_hash } => {
            hash(&password_hash)?;
            let name = username(&name)?;
            store.set_password(name.as_str(), &password_hash).await?;
            tracing::info!(username = %name, "account password changed");
            let user = store.account(name.as_str()).await?.map(|a| a.user);
            let mut changed = event(EventKind::PasswordChanged).detail("username", name.as_str());
            changed.user = user;
            store.record(changed).await;
            Ok(Reply::Done)
        }
        Command::ShowUser { query } => {
            let mut users: Vec<UserView> =
                find_users(store, appids, &query).await?.into_iter().map(Into::into).collect();
            for user in &mut users {
                if let Some(id) = UserId::parse(&user.id) {
                    let details = store.details(&id).await?;
                    user.phone_number = details.phone.map(|p| p.value.phone_number);
                    user.nickname = details.profile.map(|p| p.value.nickname);
                }
                if let Some(name) = &user.username {
                    user.account_phone = store.account(name).await?.and_then(|a| a.phone);
                }
            }
            if users.is_empty() {
                return Err(nobody(appids, &query));
            }
            Ok(Reply::Users { users })
        }
        Command::MergeUsers { into, from } => {
            let (kept, gone) = (one_user(store, appids, &into).await?, one_user(store, appids, &from).await?);
            let brought = store.user(&gone).await?.map_or(0, |u| u.identities.len());
            let user = store.merge_users(&kept, &gone, now).await?;
            tracing::info!(user_id = %kept, merged = %gone, "users merged");
            let merged = event(EventKind::UsersMerged).user(kept).detail("from", gone.to_string());
            store.record(merged.detail("identities", brought)).await;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::BanUser { query, reason, until } => {
            let id = one_user(store, appids, &query).await?;
            let ban = Ban::new(&reason, until, now).map_err(refused)?;
            let user = store.change_controls(&id, |c| c.ban = Some(ban.clone())).await?;
            // After the ban is durable: a refresh racing with it is refused by the ban.
            store.revoke_user_refresh(&id).await?;
            tracing::info!(user_id = %id, until = ?ban.until, "user banned; every refresh token revoked");
            let mut banned = event(EventKind::Ban).user(id).detail("reason", ban.reason.as_str());
            if let Some(until) = ban.until {
                banned = banned
                    .detail("until", until.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
            }
            store.record(banned).await;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::UnbanUser { query } => {
            let id = one_user(store, appids, &query).await?;
            let user = store.change_controls(&id, |c| c.ban = None).await?;
            tracing::info!(user_id = %id, "user unbanned");
            store.record(event(EventKind::Unban).user(id)).await;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::SetRoles { query, roles } => {
            let id = one_user(store, appids, &query).await?;
            let roles = crate::domain::roles(&roles).map_err(refused)?;
            let user = store.change_controls(&id, |c| c.roles = roles.clone()).await?;
            tracing::info!(user_id = %id, roles = ?user.controls.roles, "roles set");
            store.record(event(EventKind::RolesSet).user(id).detail("roles", user.controls.roles.clone())).await;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::SetClaims { query, claims } => {
            let id = one_user(store, appids, &query).await?;
            let claims = CustomClaims::parse(&claims).map_err(refused)?;
            let user = store.change_controls(&id, |c| c.claims = claims.clone()).await?;
            tracing::info!(user_id = %id, "custom claims set");
            // The names only: values may be personal.
            let names: Vec<String> = user.controls.claims.as_map().keys().cloned().collect();
            store.record(event(EventKind::ClaimsSet).user(id).detail("names", names)).await;
            Ok(Reply::User { user: Box::new(user.into()) })
        }
        Command::AddAdminToken { id, name, role, secret_hash } => {
            admin_token::check_name(&name).map_err(|e| CommandError::Refused(e.to_string()))?;
            let role = AdminRole::parse(&role).ok_or_else(|| {
                CommandError::Refused(format!("role {role:?}: an admin token's role is read or write"))
            })?;
            let secret_hash = URL_SAFE_NO_PAD
                .decode(&secret_hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| CommandError::Refused("secret_hash is not 32 bytes of base64url".into()))?;
            let token = AdminToken { id: *id.as_bytes(), name, role, secret_hash, created_at: now, revoked_at: None };
            store.add_admin_token(&token).await?;
            tracing::info!(name = %token.name, role = role.as_str(), "admin token created");
            let created = event(EventKind::AdminTokenCreated).detail("name", token.name.as_str());
            store.record(created.detail("role", role.as_str())).await;
            Ok(Reply::AdminTokens { tokens: vec![token.into()] })
        }
        Command::KeyChanged { kind, kid, alg, activates_at } => {
            let kind = match EventKind::parse(&kind) {
                Some(kind @ (EventKind::KeyStaged | EventKind::KeyPruned)) => kind,
                _ => return Err(CommandError::Refused(format!("{kind:?} is not a key change"))),
            };
            store.record(Event::key_change(kind, now, &kid, &alg, activates_at).actor(actor)).await;
            Ok(Reply::Done)
        }
        Command::ListAdminTokens => {
            Ok(Reply::AdminTokens { tokens: store.admin_tokens().await?.into_iter().map(Into::into).collect() })
        }
        Command::RevokeAdminToken { name } => {
            let token = store.revoke_admin_token(&name, now).await?;
            tracing::info!(name = %token.name, "admin token revoked");
            store.record(event(EventKind::AdminTokenRevoked).detail("name", token.name.as_str())).await;
            Ok(Reply::AdminTokens { tokens: vec![token.into()] })
        }
    }
}

/// A phone number as an operator typed it, normalised.
fn phone_number(raw: &str) -> Result<String, CommandError> {
    PhoneNumber::parse_query(raw).ok_or_else(|| {
        CommandError::Refused(format!(
            "{raw:?} is not a phone number: + and a country code (+8613800138000), or 11 digits of a mainland number"
        ))
    })
}

/// The accounts an import adds, or every reason it cannot (up to [`IMPORT_ERRORS_SHOWN`]),
/// each with its line: a username or number that is malformed, taken, or twice in the file,
/// or a password hash wxauth would not accept.
async fn check_import(store: &Store, rows: &[ImportRow]) -> Result<Vec<NewAccount>, CommandError> {
    let mut errors = Vec::new();
    let mut accounts = Vec::with_capacity(rows.len());
    let mut names = std::collections::HashMap::new();
    let mut phones = std::collections::HashMap::new();
    for row in rows {
        let line = row.line;
        let mut error = |e: String| errors.push(format!("line {line}: {e}"));
        let name = match Username::parse(&row.username) {
            Ok(name) => name,
            Err(e) => {
                error(format!("username {:?}: {e}", row.username));
                continue;
            }
        };
        let phone = match PhoneNumber::parse_query(&row.phone) {
            Some(phone) => phone,
            None => {
                error(format!("{:?} is not a phone number (+8613800138000, or 11 digits)", row.phone));
                continue;
            }
        };
        if !row.password_hash.is_empty()
            && let Err(e) = crate::password::check_stored(&row.password_hash)
        {
            error(format!("the password hash: {e}"));
        }
        if let Some(first) = names.insert(name.as_str().to_owned(), line) {
            error(format!("username {name} is on line {first} too"));
        } else if store.account(name.as_str()).await?.is_some() {
            error(format!("an account named {name} exists"));
        }
        if let Some(first) = phones.insert(phone.clone(), line) {
            error(format!("the phone number is on line {first} too"));
        } else if let Some(holder) = store.account_by_phone(&phone).await? {
            error(format!("account {} has this phone number", holder.username));
        }
        accounts.push(NewAccount {
            username: name.as_str().to_owned(),
            password_hash: row.password_hash.clone(),
            phone: Some(phone),
        });
    }
    if rows.is_empty() {
        errors.push("the file holds no accounts".into());
    }
    if errors.is_empty() {
        return Ok(accounts);
    }
    let more = errors.len().saturating_sub(IMPORT_ERRORS_SHOWN);
    errors.truncate(IMPORT_ERRORS_SHOWN);
    if more > 0 {
        errors.push(format!("and {more} more"));
    }
    Err(CommandError::Refused(format!("nothing was imported:\n{}", errors.join("\n"))))
}

/// Who acts through the admin channel (the `wxauth` commands), as events name it.
const CLI: &str = "cli";

fn refused(e: ControlError) -> CommandError {
    CommandError::Refused(e.to_string())
}

fn nobody(appids: &[String], query: &str) -> CommandError {
    CommandError::Refused(format!(
        "no user has the id, openid, unionid, username or phone number {query:?} (apps searched: {})",
        appids.join(", ")
    ))
}

/// The users `query` names: a user id alone (ids are unambiguous), else every user it
/// names as an openid of any of `appids`, a unionid, a username (operators think in
/// accounts) or a verified phone number ([`PhoneNumber::parse_query`]: support staff are
/// told a number), each once.
pub async fn find_users(store: &Store, appids: &[String], query: &str) -> Result<Vec<User>, StoreError> {
    if let Some(id) = UserId::parse(query)
        && let Some(user) = store.user(&id).await?
    {
        return Ok(vec![user]);
    }
    let mut found = Vec::new();
    for appid in appids {
        found.push(store.user_by_openid(appid, query).await?);
    }
    found.push(store.user_by_unionid(query).await?);
    if let Some(account) = store.account(query).await? {
        found.push(store.user(&account.user).await?);
    }
    if let Some(phone) = PhoneNumber::parse_query(query) {
        if let Some(account) = store.account_by_phone(&phone).await? {
            found.push(store.user(&account.user).await?);
        }
        found.extend(store.users_by_phone(&phone).await?.into_iter().map(Some));
    }
    let mut users: Vec<User> = Vec::new();
    for user in found.into_iter().flatten() {
        if !users.iter().any(|u| u.id == user.id) {
            users.push(user);
        }
    }
    Ok(users)
}

/// The one user `query` names; refused when none or several do (an openid that is also
/// another user's username), since a change must not reach the wrong person.
async fn one_user(store: &Store, appids: &[String], query: &str) -> Result<UserId, CommandError> {
    match find_users(store, appids, query).await?.as_slice() {
        [user] => Ok(user.id),
        [] => Err(nobody(appids, query)),
        several => Err(CommandError::Refused(format!(
            "{query:?} names {} users ({}); give the user id",
            several.len(),
            several.iter().map(|u| u.id.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The server's end: accepts commands on `path` until the task is dropped.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    /// The user the server runs as: the owner of the socket file it created.
    uid: u32,
}

impl Listener {
    /// Creates the socket with mode 0600. A socket file left by a server that is gone is
    /// replaced; one that answers belongs to a running server and is an error.
    pub async fn bind(path: &Path) -> std::io::Result<Self> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        check_directory(dir)?;
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(std::io::Error::new(ErrorKind::AddrInUse, "another wxauth server answers on it"));
            }
            std::fs::remove_file(path)?;
        }
        // Bound under a temporary name and renamed once private: no moment when the final
        // path accepts connections with the umask's permissions.
        let staging = path.with_extension(format!("{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staging, path)?;
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path)?);
        Ok(Self { listener, path: path.to_owned(), uid })
    }

    /// Serves commands one connection at a time each, concurrently across connections.
    pub async fn serve(self, store: Store, appids: Arc<[String]>) {
        loop {
            let stream = match self.listener.accept().await {
                // The file mode keeps other users out; the peer check also covers a client
                // that connected before the mode was set.
                Ok((stream, _)) if stream.peer_cred().is_ok_and(|c| c.uid() == self.uid || c.uid() == 0) => stream,
                Ok(_) => {
                    tracing::warn!("admin socket: refused a connection from another user");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (store, appids) = (store.clone(), appids.clone());
            tokio::spawn(async move {
                answer(stream, &store, &appids).await;
            });
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Refuses a socket directory that another user could write to: they could remove the
/// socket and listen in its place, and the CLI would send them its commands. Owned by the
/// server's user or root, and writable by no one else (sticky or not: the path could
/// still be taken before the server starts).
fn check_directory(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let refuse = |why: String| {
        Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "its directory {} {why}: another user could replace the socket and receive the commands sent \
                 to it. Use a directory only the user running wxauth (or root) can write",
                dir.display()
            ),
        ))
    };
    if meta.uid() != me && meta.uid() != 0 {
        return refuse(format!("belongs to uid {}, not to the user running wxauth (uid {me}) or root", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by other users (mode {:04o}; `chmod go-w {}`)",
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    Ok(())
}

async fn answer(stream: UnixStream, store: &Store, appids: &[String]) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    let result = match tokio::time::timeout(CONNECTION_DEADLINE, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Command>(&line) {
            Ok(command) => execute(store, appids, command).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("unreadable command: {e}")),
        },
        Ok(Err(e)) => Err(format!("cannot read the command: {e}")),
        Err(_) => {
            tracing::warn!("admin connection timed out");
            return;
        }
    };
    let body = match result {
        Ok(reply) => serde_json::json!({ "ok": reply }),
        Err(error) => serde_json::json!({ "error": error }),
    };
    let mut text = body.to_string();
    text.push('\n');
    if tokio::time::timeout(CONNECTION_DEADLINE, write.write_all(text.as_bytes())).await.is_err() {
        tracing::warn!("admin connection timed out");
    }
}

/// Sends `command` to the server listening on `path`. `Ok(None)`: no server listens there.
pub async fn send(path: &Path, command: &Command) -> Result<Option<Reply>, AdminError> {
    let socket = |source| AdminError::Socket { path: path.to_owned(), source };
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(socket(e)),
    };
    // Before anything is sent: the socket's file mode says nothing about who listens.
    let peer = stream.peer_cred().map_err(socket)?.uid();
    let me = rustix::process::geteuid().as_raw();
    if peer != me && peer != 0 {
        return Err(AdminError::ForeignServer { path: path.to_owned(), peer, me });
    }
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(command).map_err(|e| AdminError::Protocol(e.to_string()))?;
    line.push('\n');
    write.write_all(line.as_bytes()).await.map_err(socket)?;
    let mut answer = String::new();
    BufReader::new(read.take(MAX_LINE * 16)).read_line(&mut answer).await.map_err(socket)?;
    #[derive(Deserialize)]
    struct Answer {
        ok: Option<Reply>,
        error: Option<String>,
    }
    let answer: Answer = serde_json::from_str(&answer)
        .map_err(|e| AdminError::Protocol(format!("unreadable answer from the server ({e})")))?;
    match (answer.ok, answer.error) {
        (Some(reply), _) => Ok(Some(reply)),
        (None, Some(error)) => Err(AdminError::Refused(error)),
        (None, None) => Err(AdminError::Protocol("empty answer from the server".into())),
    }
}
