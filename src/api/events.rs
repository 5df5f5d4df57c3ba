//! Events as the HTTP API shows them (`GET /v1/me/export`).

use poem_openapi::Object;
use time::OffsetDateTime;

use crate::store::events::Event;

/// One event: what happened, when, and from where. Never a secret.
#[derive(Debug, Object)]
pub struct EventBody {
    /// The event's id (a UUID v7: ids sort as times do); a webhook receiver de-duplicates
    /// by it.
    pub id: String,
    /// When it happened (RFC 3339).
    pub at: OffsetDateTime,
    /// What happened: `login`, `login_failed`, `bind`, `unbind`, `refresh`,
    /// `refresh_reuse`, `logout`, `logout_all`, `phone_verified`, `profile_updated`, `ban`,
    /// `unban`, `session_revoked`, `roles_set`, `claims_set`, `account_added`,
    /// `account_removed`, `password_changed`, `admin_token_created`,
    /// `admin_token_revoked`.
    pub kind: String,
    /// The user it happened to.
    #[oai(skip_serializing_if_is_none)]
    pub user_id: Option<String>,
    /// The app of the request.
    #[oai(skip_serializing_if_is_none)]
    pub appid: Option<String>,
    /// The client's address (after trusted proxies).
    #[oai(skip_serializing_if_is_none)]
    pub ip: Option<String>,
    /// The client's `User-Agent`.
    #[oai(skip_serializing_if_is_none)]
    pub user_agent: Option<String>,
    /// Who acted when not the person: `cli` (the `wxauth` commands) or
    /// `admin-token:NAME`.
    #[oai(skip_serializing_if_is_none)]
    pub actor: Option<String>,
    /// Kind-specific details (see the docs' event table).
    pub details: serde_json::Value,
}

impl From<Event> for EventBody {
    fn from(e: Event) -> Self {
        Self {
            id: e.id.to_string(),
            at: e.at,
            kind: e.kind.as_str().to_owned(),
            user_id: e.user.map(|u| u.to_string()),
            appid: e.appid,
            ip: e.ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent,
            actor: e.actor,
            details: serde_json::Value::Object(e.details),
        }
    }
}
