//! What the admin API does for an operator holding an admin token: find and show users, act
//! on them, and read the event log, the key ring and login statistics.
//!
//! Changes to users run through [`admin::execute_as`], the same code as the `wxauth users`
//! commands, so the API and the CLI cannot drift apart; their events name the token
//! (`admin-token:NAME`).

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use super::{Auth, Internal, admin_token};
use crate::{
    admin::{self, Command, CommandError},
    domain::{Details, User, UserId},
    store::{
        AdminRole, Session, StoreError,
        events::{Event, EventFilter, EventKind, MAX_PAGE},
        session_id,
    },
    token::{KeyInfo, KeyState},
};

/// Events of one user shown with the user.
pub const RECENT_EVENTS: usize = 20;

/// Days the login statistics cover.
pub const STATS_DAYS: i64 = 7;

/// Most events read for one statistics answer; past it the answer says it is incomplete.
pub const STATS_MAX_EVENTS: usize = 1_000_000;

/// Why an admin API request was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorFailure {
    /// No admin token, or one that is malformed, unknown or revoked.
    #[error(
        "send a live admin token (wxauth admin-tokens create) as Authorization: Bearer wxa_...; \
         this one is missing, malformed, unknown or revoked"
    )]
    Unauthenticated,
    /// The path names no user.
    #[error("no user has this id")]
    NoSuchUser,
    /// The path names no live session of the user.
    #[error("no live session of this user has that id")]
    NoSuchSession,
    /// A parameter or body was refused (the text says which and why).
    #[error("{0}")]
    Invalid(String),
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<StoreError> for OperatorFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchUser => Self::NoSuchUser,
            other => Self::Internal(other.into()),
        }
    }
}

impl From<CommandError> for OperatorFailure {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused(text) => Self::Invalid(text),
            CommandError::Store(e) => e.into(),
        }
    }
}

/// Why an admin API request that changes something was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    /// The token may only read.
    #[error(
        "this admin token has role read; changes need one with role write (wxauth admin-tokens create NAME --role write)"
    )]
    ReadOnly,
    /// Refused as a read would be.
    #[error(transparent)]
    Operator(#[from] OperatorFailure),
}

impl From<StoreError> for WriteFailure {
    fn from(e: StoreError) -> Self {
        Self::Operator(e.into())
    }
}

/// Who calls the admin API: the admin token's name and role.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
}

impl Operator {
    /// How events name the operator.
    pub fn actor(&self) -> String {
        format!("admin-token:{}", self.name)
    }
}

/// A change to one user.
#[derive(Debug, Clone)]
pub enum Change {
    /// Ban (revokes every session).
    Ban {
        /// Why.
        reason: String,
        /// Until when; `None`: until unbanned.
        until: Option<OffsetDateTime>,
    },
    /// Lift the ban.
    Unban,
    /// Replace the roles.
    Roles(Vec<String>),
    /// Replace the custom claims (a JSON object's text).
    Claims(String),
    /// Give the user's account a phone number (as an operator types it), or take it away.
    AccountPhone(Option<String>),
    /// Merge this other user into the user (`wxauth users merge`).
    MergeFrom(UserId),
}

/// Everything the admin API shows of one user.
#[derive(Debug)]
pub struct UserFile {
    /// The user.
    pub user: User,
    /// What the person shared (phone number, profile).
    pub details: Details,
    /// The phone number of the user's account, normalised.
    pub account_phone: Option<String>,
    /// Live sessions, newest first.
    pub sessions: Vec<Session>,
    /// The [`RECENT_EVENTS`] newest events of the user.
    pub events: Vec<Event>,
}

/// One page of users.
#[derive(Debug)]
pub struct UsersPage {
    /// The users.
    pub users: Vec<User>,
    /// Where the next page starts, when there may be one.
    pub next: Option<UserId>,
}

/// Logins of one app in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourStats {
    /// The hour's start (UTC).
    pub hour: OffsetDateTime,
    /// The app (empty for a refused login that named none this server serves).
    pub appid: String,
    /// Logins that found or created a user.
    pub logins: u64,
    /// Of them, those that created a user.
    pub new_users: u64,
    /// Refused logins, by error code.
    pub failures: BTreeMap<String, u64>,
}

/// Login statistics.
#[derive(Debug)]
pub struct Stats {
    /// The first hour covered.
    pub since: OffsetDateTime,
    /// One entry per hour and app that had a login or a failure, oldest first.
    pub hours: Vec<HourStats>,
    /// False when more than [`STATS_MAX_EVENTS`] events were in the period: the oldest
    /// hours are then missing.
    pub complete: bool,
}

impl Auth {
    /// The operator whose admin token `bearer` is (either role).
    pub async fn operator(&self, bearer: &str) -> Result<Operator, OperatorFailure> {
        match admin_token::verify(&self.parts.store, bearer).await? {
            Some(token) => Ok(Operator { name: token.name, role: token.role }),
            None => Err(OperatorFailure::Unauthenticated),
        }
    }

    /// The operator whose admin token `bearer` is, if it may change things (role `write`).
    pub async fn writer(&self, bearer: &str) -> Result<Operator, WriteFailure> {
        let operator = self.operator(bearer).await?;
        match operator.role {
            AdminRole::Write => Ok(operator),
            AdminRole::Read => Err(WriteFailure::ReadOnly),
        }
    }

    /// The users `query` names (a user id, an openid of any app, a unionid or a username;
    /// one page), or without a query every user in id order, `limit` a page, after `after`.
    pub async fn find_users(
        &self,
        query: Option<&str>,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<UsersPage, OperatorFailure> {
        let store = &self.parts.store;
        if let Some(query) = query {
            let appids: Vec<String> = self.appids().into_iter().map(str::to_owned).collect();
            let users = admin::find_users(store, &appids, query).await?;
            // A handful at most: one page, and nothing after it.
            let users = users.into_iter().filter(|u| after.is_none_or(|a| u.id.as_bytes() > a.as_bytes())).collect();
            return Ok(UsersPage { users, next: None });
        }
        let users = store.users_after(after.as_ref(), limit).await?;
        let next = (users.len() == limit).then(|| users.last().map(|u| u.id)).flatten();
        Ok(UsersPage { users, next })
    }

    /// Everything about user `id`.
    pub async fn user_file(&self, id: &UserId) -> Result<UserFile, OperatorFailure> {
        let store = &self.parts.store;
        let user = store.user(id).await?.ok_or(OperatorFailure::NoSuchUser)?;
        let details = store.details(id).await?;
        let sessions = store.sessions(id, self.parts.clock.now()).await?;
        let filter = EventFilter { user: Some(*id), limit: RECENT_EVENTS, ..EventFilter::default() };
        let events = store.events(&filter).await?;
        let account_phone = match &user.account {
            Some(name) => store.account(name).await?.and_then(|a| a.phone),
            None => None,
        };
        Ok(UserFile { user, details, account_phone, sessions, events })
    }

    /// Applies `change` to user `id` for `operator`.
    pub async fn change_user(&self, operator: &Operator, id: &UserId, change: Change) -> Result<User, WriteFailure> {
        let store = &self.parts.store;
        let user = store.user(id).await?.ok_or(OperatorFailure::NoSuchUser)?;
        let query = id.to_string();
        let command = match change {
            Change::Ban { reason, until } => Command::BanUser { query, reason, until },
            Change::Unban => Command::UnbanUser { query },
            Change::Roles(roles) => Command::SetRoles { query, roles },
            Change::Claims(claims) => Command::SetClaims { query, claims },
            Change::MergeFrom(from) => Command::MergeUsers { into: query, from: from.to_string() },
            Change::AccountPhone(phone) => {
                let username = user.account.ok_or_else(|| {
                    OperatorFailure::Invalid(
                        "this user has no account: only an account (wxauth accounts add) has a phone number to set"
                            .into(),
                    )
                })?;
                Command::SetAccountPhone { username, phone }
            }
        };
        let appids: Vec<String> = self.appids().into_iter().map(str::to_owned).collect();
        let now = self.parts.clock.now();
        admin::execute_as(store, &appids, &operator.actor(), now, command).await.map_err(OperatorFailure::from)?;
        Ok(store.user(id).await?.ok_or(OperatorFailure::NoSuchUser)?)
    }

    /// Ends session `session` of user `id` (its public id), or every session when `None`:
    /// their refresh tokens stop working at once.
    pub async fn revoke_sessions(
        &self,
        operator: &Operator,
        id: &UserId,
        session: Option<uuid::Uuid>,
    ) -> Result<(), WriteFailure> {
        let store = &self.parts.store;
        store.user(id).await?.ok_or(OperatorFailure::NoSuchUser)?;
        let now = self.parts.clock.now();
        let event = match session {
            None => {
                store.revoke_user_refresh(id).await?;
                tracing::info!(user_id = %id, actor = %operator.actor(), "every session ended by an operator");
                Event::new(EventKind::LogoutAll, now)
            }
            Some(session) => {
                let sessions = store.sessions(id, now).await?;
                let found = sessions.iter().find(|s| session_id(&s.family) == session);
                let family = found.ok_or(OperatorFailure::NoSuchSession)?.family;
                if !store.revoke_session(id, &family, now).await? {
                    return Err(OperatorFailure::NoSuchSession.into());
                }
                tracing::info!(user_id = %id, %session, actor = %operator.actor(), "session ended by an operator");
                Event::new(EventKind::SessionRevoked, now).detail("session", session.to_string())
            }
        };
        self.record(event.user(*id).actor(&operator.actor())).await;
        Ok(())
    }

    /// Deletes user `id` at once for `operator`: erased as a person's own deletion is, with
    /// no grace period (an account made by `wxauth accounts add` stays, unbound).
    pub async fn delete_user(&self, operator: &Operator, id: &UserId) -> Result<(), WriteFailure> {
        self.parts.store.user(id).await?.ok_or(OperatorFailure::NoSuchUser)?;
        Ok(self.delete_now(id, &operator.actor()).await?)
    }

    /// The events `filter` selects, newest first.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>, OperatorFailure> {
        Ok(self.parts.store.events(filter).await?)
    }

    /// Every key of the ring in memory with its state now, oldest activation first.
    pub fn key_ring(&self) -> Vec<(KeyInfo, KeyState)> {
        self.parts.tokens.listing()
    }

    /// Logins, new users and failures per hour and app over the last [`STATS_DAYS`] days,
    /// from the event log.
    pub async fn login_stats(&self) -> Result<Stats, OperatorFailure> {
        let now = self.parts.clock.now();
        let since = hour_of(now - Duration::days(STATS_DAYS));
        let mut filter = EventFilter {
            kinds: vec![EventKind::Login, EventKind::LoginFailed],
            since: Some(since),
            limit: MAX_PAGE,
            ..EventFilter::default()
        };
        let mut counted: BTreeMap<(OffsetDateTime, String), HourStats> = BTreeMap::new();
        let mut read = 0;
        let complete = loop {
            let page = self.parts.store.events(&filter).await?;
            read += page.len();
            for event in &page {
                count(&mut counted, event);
            }
            match page.last() {
                Some(last) if page.len() == filter.limit => filter.before = Some(last.id),
                _ => break true,
            }
            if read >= STATS_MAX_EVENTS {
                break false;
            }
        };
        Ok(Stats { since, hours: counted.into_values().collect(), complete })
    }
}

/// The start of the hour `at` falls in.
fn hour_of(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_minute(0).and_then(|t| t.replace_second(0)).and_then(|t| t.replace_nanosecond(0)).unwrap_or(at)
}

/// Adds `event` (a login or a refused login) to its hour and app.
fn count(counted: &mut BTreeMap<(OffsetDateTime, String), HourStats>, event: &Event) {
    let hour = hour_of(event.at);
    let appid = event.appid.clone().unwrap_or_default();
    let entry = counted.entry((hour, appid.clone())).or_insert_with(|| HourStats {
        hour,
        appid,
        logins: 0,
        new_users: 0,
        failures: BTreeMap::new(),
    });
    match event.kind {
        EventKind::Login => {
            entry.logins += 1;
            if event.details.get("created").and_then(serde_json::Value::as_bool) == Some(true) {
                entry.new_users += 1;
            }
        }
        EventKind::LoginFailed => {
            let code = event.details.get("error").and_then(serde_json::Value::as_str).unwrap_or("unknown");
            *entry.failures.entry(code.to_owned()).or_default() += 1;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn logins_are_counted_per_hour_and_app_with_new_users_and_failures_by_code() {
        let mut counted = BTreeMap::new();
        let login = |t, app: &str, created| {
            Event::new(EventKind::Login, at(t)).app(app).detail("created", serde_json::Value::Bool(created))
        };
        let failed = |t, code: &str| Event::new(EventKind::LoginFailed, at(t)).app("wx1").detail("error", code);
        for event in [
            login("2026-12-06T10:00:00Z", "wx1", true),
            login("2026-12-06T10:59:59.999Z", "wx1", false),
            login("2026-12-06T11:00:00Z", "wx1", false),
            login("2026-12-06T10:30:00Z", "wx2", false),
            failed("2026-12-06T10:10:00Z", "invalid_code"),
            failed("2026-12-06T10:20:00Z", "invalid_code"),
            failed("2026-12-06T10:20:00Z", "user_banned"),
            Event::new(EventKind::Refresh, at("2026-12-06T10:00:00Z")).app("wx1"),
        ] {
            count(&mut counted, &event);
        }
        let hours: Vec<HourStats> = counted.into_values().collect();
        let ten = at("2026-12-06T10:00:00Z");
        assert_eq!(hours.len(), 3, "{hours:?}");
        assert_eq!(
            hours[0],
            HourStats {
                hour: ten,
                appid: "wx1".into(),
                logins: 2,
                new_users: 1,
                failures: [("invalid_code".to_owned(), 2), ("user_banned".to_owned(), 1)].into(),
            }
        );
        assert_eq!((hours[1].appid.as_str(), hours[1].hour, hours[1].logins), ("wx2", ten, 1));
        assert_eq!((hours[2].hour, hours[2].logins, hours[2].new_users), (at("2026-12-06T11:00:00Z"), 1, 0));
    }
}
