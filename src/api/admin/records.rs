//! `/admin/v1/events`, `/admin/v1/keys` and `/admin/v1/stats`: what happened, the signing
//! keys, and logins per hour.

use std::{collections::BTreeMap, sync::Arc};

use poem_openapi::{ApiResponse, Object, OpenApi, param::Query, payload::Json};
use time::OffsetDateTime;

use super::{AdminTags, AdminToken, Cursor, NO_STORE, bad_limit, invalid};
use crate::{
    api::{
        error::{AdminAuthError, AdminListError},
        events::EventBody,
    },
    auth::{Auth, HourStats},
    domain::UserId,
    store::events::{EventFilter, EventKind, MAX_PAGE},
    token::KeyState,
};

/// Events per page when `limit` is not given.
const DEFAULT_PAGE: u32 = 100;

/// A page of events.
#[derive(Debug, Object)]
pub struct EventsPageBody {
    /// The events, newest first.
    pub events: Vec<EventBody>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

/// A signing key and where it stands.
#[derive(Debug, Object)]
pub struct KeyBody {
    /// Key id (RFC 7638 thumbprint), as tokens' `kid` names it.
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// `next` (published, signs from `activates_at`), `active` (signs), `retired` (replaced;
    /// published while tokens it signed may live) or `prunable` (every token it signed has
    /// expired; `wxauth keys prune` removes it).
    pub state: String,
    /// When the key file was written (RFC 3339).
    pub created_at: OffsetDateTime,
    /// When it signs from (RFC 3339).
    pub activates_at: OffsetDateTime,
    /// When a newer key took over (RFC 3339), for retired keys.
    #[oai(skip_serializing_if_is_none)]
    pub retired_at: Option<OffsetDateTime>,
}

/// The key ring.
#[derive(Debug, Object)]
pub struct KeysBody {
    /// Every key the server holds, oldest activation first.
    pub keys: Vec<KeyBody>,
}

/// Logins of one app in one hour.
#[derive(Debug, Object)]
pub struct HourBody {
    /// The hour's start (RFC 3339, UTC).
    pub hour: OffsetDateTime,
    /// The app; empty for refused logins that named no app this server serves.
    pub appid: String,
    /// Logins that found or created a user.
    pub logins: u64,
    /// Of them, those that created one.
    pub new_users: u64,
    /// Refused logins by error code (`invalid_code`, `user_banned`, ...).
    pub failures: BTreeMap<String, u64>,
}

impl From<HourStats> for HourBody {
    fn from(h: HourStats) -> Self {
        Self { hour: h.hour, appid: h.appid, logins: h.logins, new_users: h.new_users, failures: h.failures }
    }
}

/// Login statistics.
#[derive(Debug, Object)]
pub struct StatsBody {
    /// The first hour covered (7 days ago).
    pub since: OffsetDateTime,
    /// One entry per hour and app that had a login or a refused one, oldest first; hours
    /// without either are absent.
    pub hours: Vec<HourBody>,
    /// False when the period held more than a million login events and the oldest hours
    /// were not counted.
    pub complete: bool,
    /// Whether WeChat is reachable now: false while a circuit breaker is open (logins
    /// answer 503 `temporarily_unavailable` without calling WeChat).
    pub wechat_reachable: bool,
}

/// The admin token a request carries.
#[derive(Debug, Object)]
pub struct TokenBody {
    /// Its name (`wxauth admin-tokens create NAME`).
    pub name: String,
    /// `read` or `write`.
    pub role: String,
}

/// Answer of the token's own description.
#[derive(Debug, ApiResponse)]
pub enum TokenResponse {
    /// The token.
    #[oai(status = 200)]
    Ok(
        Json<TokenBody>,
        /// Personal to the token.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of the event list.
#[derive(Debug, ApiResponse)]
pub enum EventsResponse {
    /// The events.
    #[oai(status = 200)]
    Ok(
        Json<EventsPageBody>,
        /// Personal data (addresses, devices): no cache may keep it.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of the key ring.
#[derive(Debug, ApiResponse)]
pub enum KeysResponse {
    /// The keys.
    #[oai(status = 200)]
    Ok(
        Json<KeysBody>,
        /// The states change as keys activate and retire.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of the statistics.
#[derive(Debug, ApiResponse)]
pub enum StatsResponse {
    /// The statistics.
    #[oai(status = 200)]
    Ok(
        Json<StatsBody>,
        /// Counted at the request.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// The admin API's reading of events, keys and statistics.
pub struct RecordsApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi]
impl RecordsApi {
    /// List events
    ///
    /// Newest first, filtered by user, kinds and time, page by page (`limit`, then `cursor`
    /// from `next_cursor`). Events are kept `WXAUTH_EVENT_RETENTION_DAYS`.
    // poem-openapi takes each query parameter as an argument of its own.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/admin/v1/events", method = "get", operation_id = "listEvents", tag = "AdminTags::Events")]
    async fn events(
        &self,
        token: AdminToken,
        /// Only this user's (a user id).
        user: Query<Option<String>>,
        /// Only these kinds, comma-separated (`login,login_failed`).
        kind: Query<Option<String>>,
        /// Only at or after this time (RFC 3339).
        since: Query<Option<OffsetDateTime>>,
        /// Only before this time (RFC 3339).
        until: Query<Option<OffsetDateTime>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Events per page, 1 to 500 (100 when absent).
        limit: Query<Option<u32>>,
    ) -> Result<EventsResponse, AdminListError> {
        self.auth.operator(&token.0.token).await?;
        let limit = limit.0.unwrap_or(DEFAULT_PAGE) as usize;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(bad_limit(MAX_PAGE as u32).into());
        }
        let user = match user.0.as_deref() {
            Some(raw) => Some(UserId::parse(raw).ok_or_else(|| invalid("user must be a user id (a UUID)"))?),
            None => None,
        };
        let mut kinds = Vec::new();
        for name in kind.0.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()) {
            kinds.push(EventKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                invalid(&format!("unknown event kind {name:?}; the kinds are {}", known.join(", ")))
            })?);
        }
        let before = cursor.0.as_deref().map(Cursor::decode).transpose()?.map(uuid::Uuid::from_bytes);
        let filter = EventFilter { user, kinds, since: since.0, until: until.0, before, limit };
        let events = self.auth.list_events(&filter).await?;
        let next_cursor =
            (events.len() == limit).then(|| events.last().map(|e| Cursor::encode(e.id.as_bytes()))).flatten();
        let body = EventsPageBody { events: events.into_iter().map(EventBody::from).collect(), next_cursor };
        Ok(EventsResponse::Ok(Json(body), NO_STORE.into()))
    }

    /// The signing keys
    ///
    /// Every key of the ring the server holds, with its state now (what `wxauth keys list`
    /// shows; the server rereads the keys directory every minute).
    #[oai(path = "/admin/v1/keys", method = "get", operation_id = "listKeys", tag = "AdminTags::Keys")]
    async fn keys(&self, token: AdminToken) -> Result<KeysResponse, AdminAuthError> {
        self.auth.operator(&token.0.token).await?;
        let keys = self
            .auth
            .key_ring()
            .into_iter()
            .map(|(info, state)| KeyBody {
                kid: info.kid,
                alg: info.alg.to_string(),
                state: match state {
                    KeyState::Next => "next",
                    KeyState::Active => "active",
                    KeyState::Retired { prunable: false, .. } => "retired",
                    KeyState::Retired { prunable: true, .. } => "prunable",
                }
                .to_owned(),
                created_at: info.created,
                activates_at: info.activates,
                retired_at: match state {
                    KeyState::Retired { since, .. } => Some(since),
                    KeyState::Next | KeyState::Active => None,
                },
            })
            .collect();
        Ok(KeysResponse::Ok(Json(KeysBody { keys }), NO_STORE.into()))
    }

    /// Login statistics
    ///
    /// Logins, new users and refused logins by error code, per hour and app, for the last
    /// 7 days, counted from the event log.
    #[oai(path = "/admin/v1/stats", method = "get", operation_id = "loginStats", tag = "AdminTags::Stats")]
    async fn stats(&self, token: AdminToken) -> Result<StatsResponse, AdminAuthError> {
        self.auth.operator(&token.0.token).await?;
        let stats = self.auth.login_stats().await?;
        let hours = stats.hours.into_iter().map(HourBody::from).collect();
        let body = StatsBody {
            since: stats.since,
            hours,
            complete: stats.complete,
            wechat_reachable: self.auth.wechat_reachable(),
        };
        Ok(StatsResponse::Ok(Json(body), NO_STORE.into()))
    }

    /// The token in use
    ///
    /// The name and role of the admin token the request carries: what a client (the
    /// console) shows and which actions it offers.
    #[oai(path = "/admin/v1/token", method = "get", operation_id = "currentToken", tag = "AdminTags::Keys")]
    async fn token(&self, token: AdminToken) -> Result<TokenResponse, AdminAuthError> {
        let operator = self.auth.operator(&token.0.token).await?;
        let body = TokenBody { name: operator.name, role: operator.role.as_str().to_owned() };
        Ok(TokenResponse::Ok(Json(body), NO_STORE.into()))
    }
}
