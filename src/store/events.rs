//! The event log as the store keeps it: what happened, to whom, from where, and when. One
//! event per login, bind, refresh, ban and so on ([`EventKind`]), kept for
//! `WXAUTH_EVENT_RETENTION_DAYS` and purged in batches.
//!
//! An event's id is a UUID v7 made from its time on the service's clock, so ids sort as
//! times do: both backends list newest first by id, and a time range is an id range.
//! Details are small JSON objects that never hold a secret: no code, token, session key,
//! password, phone number or profile.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::UserId;

/// Longest details object kept, in bytes of compact JSON.
pub const MAX_DETAILS: usize = 1024;

/// Most events one listing returns.
pub const MAX_PAGE: usize = 500;

macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// What an event reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// Every kind, in the order the docs list them.
            pub const ALL: &[EventKind] = &[$(EventKind::$variant,)*];

            /// The kind's name, as events, filters and webhooks spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The kind named `name`.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

event_kinds! {
    /// A login that found or created the user (`details.created`).
    Login = "login",
    /// A login WeChat or wxauth refused (`details.error`: the error code).
    LoginFailed = "login_failed",
    /// A WeChat identity bound to an account (`details.username`).
    Bind = "bind",
    /// The user's WeChat identities unbound (`details.identities`: how many).
    Unbind = "unbind",
    /// A refresh token rotated.
    Refresh = "refresh",
    /// A spent refresh token presented again: its whole session revoked.
    RefreshReuse = "refresh_reuse",
    /// One session ended by its refresh token.
    Logout = "logout",
    /// Every session of the user ended.
    LogoutAll = "logout_all",
    /// A phone number verified (never the number).
    PhoneVerified = "phone_verified",
    /// A profile decrypted and kept (never its content).
    ProfileUpdated = "profile_updated",
    /// The user banned (`details.reason`, `details.until`).
    Ban = "ban",
    /// The ban lifted.
    Unban = "unban",
    /// One session ended by its user or an operator (`details.session`).
    SessionRevoked = "session_revoked",
    /// The person asked for their account to be deleted (`details.erase_at`), or an
    /// operator deleted it.
    DeletionRequested = "deletion_requested",
    /// The person cancelled their deletion during the grace period.
    DeletionCancelled = "deletion_cancelled",
    /// The account was erased (no details: they would be the person's).
    DeletionDone = "deletion_done",
    /// A signing key added to the ring, published at once (`details.kid`, `details.alg`,
    /// `details.activates_at`).
    KeyStaged = "key_staged",
    /// A signing key started to sign (`details.kid`, `details.alg`).
    KeyActivated = "key_activated",
    /// Retired keys removed from the ring (`details.kid`, `details.alg`).
    KeyPruned = "key_pruned",
    /// The user's roles replaced (`details.roles`).
    RolesSet = "roles_set",
    /// The user's custom claims replaced (never their values: `details.names`).
    ClaimsSet = "claims_set",
    /// An account added (`details.username`).
    AccountAdded = "account_added",
    /// An account removed with its user (`details.username`).
    AccountRemoved = "account_removed",
    /// An account's password changed (`details.username`).
    PasswordChanged = "password_changed",
    /// An account's phone number set or taken away (`details.username`; `details.phone`:
    /// whether it has one now, never the number).
    AccountPhoneSet = "account_phone_set",
    /// Another user merged into this one (`details.from`: the merged user's id, which is
    /// gone; `details.identities`: how many identities it brought).
    UsersMerged = "users_merged",
    /// An admin token created (`details.name`, `details.role`).
    AdminTokenCreated = "admin_token_created",
    /// An admin token revoked (`details.name`).
    AdminTokenRevoked = "admin_token_revoked",
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// A UUID v7 of [`Event::at`]: ids sort as times do.
    pub id: Uuid,
    /// When it happened, on the service's clock.
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: EventKind,
    /// The user it happened to, if one.
    pub user: Option<UserId>,
    /// The app of the request, if one.
    pub appid: Option<String>,
    /// The client's address (after trusted proxies), for requests from a client.
    pub ip: Option<IpAddr>,
    /// The client's `User-Agent`, cut as sessions keep it.
    pub user_agent: Option<String>,
    /// Who acted, when not the person: `cli` (the `wxauth` commands) or `admin-token:NAME`.
    pub actor: Option<String>,
    /// Kind-specific details, never a secret.
    pub details: Map<String, Value>,
}

impl Event {
    /// A new event of `kind` at `at`, with a fresh id and nothing else set.
    pub fn new(kind: EventKind, at: OffsetDateTime) -> Self {
        Self {
            id: id_at(at),
            at,
            kind,
            user: None,
            appid: None,
            ip: None,
            user_agent: None,
            actor: None,
            details: Map::new(),
        }
    }

    /// An event of `kind` at `at` whose id depends only on them and on `about` (a key id):
    /// replicas that each notice the same change record one event, not one each.
    pub fn once(kind: EventKind, at: OffsetDateTime, about: &str) -> Self {
        let millis = u64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000).max(0)).unwrap_or(0);
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("{}\n{about}", kind.as_str()).as_bytes());
        let mut bytes = [0u8; 10];
        bytes.copy_from_slice(&digest.as_ref()[..10]);
        Self { id: uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid(), ..Self::new(kind, at) }
    }

    /// A change to the key ring (`key_staged`, `key_activated`, `key_pruned`) of key `kid`
    /// at `at`, one event per key and kind ([`Event::once`]).
    pub fn key_change(
        kind: EventKind,
        at: OffsetDateTime,
        kid: &str,
        alg: &str,
        activates_at: Option<OffsetDateTime>,
    ) -> Self {
        let event = Self::once(kind, at, kid).detail("kid", kid).detail("alg", alg);
        match activates_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()) {
            Some(activates_at) => event.detail("activates_at", activates_at),
            None => event,
        }
    }

    /// The event with `user`.
    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    /// The event with `appid`.
    pub fn app(mut self, appid: &str) -> Self {
        self.appid = Some(appid.to_owned());
        self
    }

    /// The event with `actor`.
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }

    /// The event with the client's address and user agent of `origin`.
    pub fn origin(mut self, origin: &super::Origin) -> Self {
        self.ip = origin.ip.as_deref().and_then(|ip| ip.parse().ok());
        self.user_agent = origin.user_agent.clone();
        self
    }

    /// The event with one more detail.
    pub fn detail(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.details.insert(name.to_owned(), value.into());
        self
    }

    /// The details as compact JSON, refused over [`MAX_DETAILS`].
    pub fn details_json(&self) -> Result<String, super::StoreError> {
        let json = Value::Object(self.details.clone()).to_string();
        if json.len() > MAX_DETAILS {
            return Err(super::StoreError::Corrupt(format!(
                "event {}: details of {} bytes (at most {MAX_DETAILS})",
                self.id,
                json.len()
            )));
        }
        Ok(json)
    }

    /// Details from compact JSON, as [`Event::details_json`] wrote them.
    pub fn parse_details(json: &str) -> Result<Map<String, Value>, super::StoreError> {
        match serde_json::from_str(json) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(super::StoreError::Corrupt("event details are not a JSON object".into())),
        }
    }
}

/// Orders the ids of one process that fall in the same fraction of a millisecond.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A UUID v7 of `at` (RFC 9562): 48 bits of Unix milliseconds, 12 bits of the fraction of
/// the millisecond (its method 3), then a sequence number and random bits. Ids made in
/// one process sort as their times do, and in the order made within the same fraction;
/// ids of two replicas in the same 244 ns may sort either way.
pub fn id_at(at: OffsetDateTime) -> Uuid {
    let nanos = at.unix_timestamp_nanos().max(0);
    let millis = u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX >> 16);
    let fraction = u16::try_from((nanos % 1_000_000) * 4096 / 1_000_000).unwrap_or(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff;
    let mut random = [0u8; 4];
    // A failed random source leaves zeros: the sequence still tells ids apart.
    let _ = aws_lc_rs::rand::fill(&mut random);
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&fraction.to_be_bytes());
    bytes[2..6].copy_from_slice(&sequence.to_be_bytes());
    bytes[6..].copy_from_slice(&random);
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
}

/// The smallest id of any event at or after `at`: events before `at` have smaller ids.
pub fn first_id_at(at: OffsetDateTime) -> Uuid {
    let millis = u64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000).max(0)).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// Which events a listing wants. Newest first, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this user's.
    pub user: Option<UserId>,
    /// Only these kinds (none: every kind).
    pub kinds: Vec<EventKind>,
    /// Only at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only before this time.
    pub until: Option<OffsetDateTime>,
    /// Only events older than this one (the cursor of the previous page).
    pub before: Option<Uuid>,
    /// At most this many (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

impl EventFilter {
    /// The id range the filter allows, as exclusive upper and inclusive lower bounds.
    pub fn id_bounds(&self) -> (Option<Uuid>, Option<Uuid>) {
        let until = self.until.map(first_id_at);
        let upper = match (until, self.before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (upper, self.since.map(first_id_at))
    }

    /// Whether `event`, inside the id bounds, passes the rest of the filter.
    pub fn admits(&self, event: &Event) -> bool {
        self.user.is_none_or(|u| event.user == Some(u)) && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }

    /// The limit, within 1 to [`MAX_PAGE`].
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_as_times_and_a_time_bound_falls_between_the_ids_around_it() {
        let t = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let ms = time::Duration::milliseconds(1);
        let (before, at, after) = (id_at(t - ms), id_at(t), id_at(t + ms));
        assert!(before < at && at < after);
        assert!(before < first_id_at(t) && first_id_at(t) <= at);
        assert_eq!(at.get_version_num(), 7);
        let (one, two) = (id_at(t), id_at(t));
        assert!(one < two, "two events at one time get two ids, in the order made");
        let ns = time::Duration::nanoseconds(300);
        assert!(id_at(t + ns) > id_at(t), "a later fraction of the millisecond sorts later, whenever made")
    }

    #[test]
    fn kinds_are_named_once_and_parse_back() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
        }
        let names: std::collections::HashSet<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert_eq!(EventKind::parse("Login"), None);
    }

    #[test]
    fn details_over_the_limit_are_refused() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let fits = Event::new(EventKind::Login, at).detail("x", "a".repeat(MAX_DETAILS - 8));
        assert!(fits.details_json().is_ok());
        let over = Event::new(EventKind::Login, at).detail("x", "a".repeat(MAX_DETAILS));
        assert!(over.details_json().is_err());
    }
}
