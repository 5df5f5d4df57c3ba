//! The backend-neutral form of a store, for `wxauth store export` and `import`: one JSON
//! object per line, each a [`Record`] tagged by its `record` field.
//!
//! Both backends keep the same values (times in Unix nanoseconds, session keys, tickets'
//! keys and shared details sealed as in [`super::codec`], bound to user ids rather than to
//! a backend's keys), so a record moves between them unchanged, sealed values included:
//! nothing is decrypted on the way, and the receiving store needs the same
//! `session-keys.secret`, which the header's `sealing_key` names (a hash, not the key).
//!
//! Order is fixed, so that two exports of the same data are equal byte for byte: the
//! header, the mode, users (by id, each with its identities in binding order), then
//! unionids, accounts, details, bind tickets and refresh records, each by key (bytes, as
//! sled orders them), then admin tokens and events by id.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use crate::domain::{Ban, ControlError, Controls, CustomClaims, Deletion};

/// The version of the format this build writes. An import reads it and [`OLDEST_FORMAT`]
/// on, and refuses another one.
pub const FORMAT: u32 = 4;

/// The oldest format an import reads: format 2 lacks the sessions' last refresh and origin
/// (format 3), which then read as the family's start and unknown; formats before 4 have no
/// accounts' phone numbers nor accounts without a password, and read as such.
pub const OLDEST_FORMAT: u32 = 2;

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The first line.
    Header {
        /// [`FORMAT`].
        format: u32,
        /// Which `session-keys.secret` sealed the values ([`super::sealed::Sealer::key_id`]).
        sealing_key: String,
    },
    /// Whether the store serves dev mode or production (absent in a store never served).
    Mode {
        /// `dev` or `production`.
        mode: String,
    },
    /// A user with its WeChat identities.
    User {
        /// The user id.
        id: Uuid,
        /// The unionid WeChat gave the user, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unionid: Option<String>,
        /// Users that turned out to share the unionid (reported, never merged).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unionid_shared_with: Vec<Uuid>,
        /// When the user was created.
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
        /// The last login (to [`super::LAST_LOGIN_GRANULARITY`]).
        #[serde(with = "time::serde::rfc3339")]
        last_login_at: OffsetDateTime,
        /// The user's identities, in binding order.
        identities: Vec<IdentityLine>,
        /// Roles (format 3).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<String>,
        /// Custom claims (format 3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claims: Option<serde_json::Map<String, serde_json::Value>>,
        /// A ban (format 3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ban: Option<BanLine>,
        /// The deletion the person asked for, not yet done (format 3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deletion: Option<DeletionLine>,
    },
    /// Which user a unionid leads to.
    Unionid {
        /// The unionid.
        unionid: String,
        /// The user.
        user: Uuid,
    },
    /// An account.
    Account {
        /// The username.
        username: String,
        /// Its user.
        user: Uuid,
        /// The argon2id PHC string; empty for none.
        password_hash: String,
        /// When it was added.
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
        /// Its phone number, sealed ([`super::codec::seal_account_phone`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
    },
    /// The phone number and profile a user shared, sealed as a whole.
    Details {
        /// The user.
        user: Uuid,
        /// The sealed value.
        sealed: String,
    },
    /// A bind ticket.
    Ticket {
        /// SHA-256 of the ticket's text, in hex.
        id: String,
        /// The app of the login.
        appid: String,
        /// The openid of the login.
        openid: String,
        /// The unionid of the login.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unionid: Option<String>,
        /// The session key, sealed to the ticket's id.
        session_key: String,
        /// When the ticket stops working.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// A refresh family: one login and its current token (only its verifier's hash).
    RefreshFamily {
        /// The family id.
        family: Uuid,
        /// The current token's generation (0 until the first refresh).
        generation: u32,
        /// SHA-256 of the current token's secret part, in hex.
        verifier_hash: String,
        /// When the family started (the login).
        #[serde(with = "time::serde::rfc3339")]
        started: OffsetDateTime,
        /// The user.
        user: Uuid,
        /// The app of the login.
        appid: String,
        /// The openid of the login.
        openid: String,
        /// When the current token expires.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        /// Whether the family was revoked.
        revoked: bool,
        /// The last refresh (absent in format 2: the start).
        #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
        last_refresh: Option<OffsetDateTime>,
        /// The client's IP address at the login, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        /// The client's `User-Agent` at the login, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
    },
    /// An admin API token: its hash, never its secret (format 3).
    AdminToken {
        /// The token's id.
        id: Uuid,
        /// Its unique name.
        name: String,
        /// `read` or `write`.
        role: String,
        /// SHA-256 of its secret part, in hex.
        secret_hash: String,
        /// When it was created.
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
        /// When it was revoked, if it was.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
        revoked_at: Option<OffsetDateTime>,
    },
    /// An event of the log (format 3).
    Event {
        /// Its id (a UUID v7 of its time).
        id: Uuid,
        /// When it happened.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// Its kind.
        kind: String,
        /// The user it happened to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<Uuid>,
        /// The app of the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        appid: Option<String>,
        /// The client's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        /// The client's user agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
        /// Who acted, when not the person.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor: Option<String>,
        /// Kind-specific details.
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        details: serde_json::Map<String, serde_json::Value>,
    },
    /// The last line: how many records came before it (the header included). An export
    /// without it was cut short.
    End {
        /// Records before this one.
        records: usize,
    },
}

impl Record {
    /// The line of an admin token.
    pub(super) fn admin_token(token: super::AdminToken) -> Self {
        Self::AdminToken {
            id: Uuid::from_bytes(token.id),
            name: token.name,
            role: token.role.as_str().to_owned(),
            secret_hash: hex(&token.secret_hash),
            created_at: token.created_at,
            revoked_at: token.revoked_at,
        }
    }

    /// The admin token of an [`Record::AdminToken`] line, checked as `admin-tokens create`
    /// checks it.
    pub(super) fn into_admin_token(self) -> Result<super::AdminToken, StoreError> {
        let Self::AdminToken { id, name, role, secret_hash, created_at, revoked_at } = self else {
            return Err(StoreError::Corrupt("not an admin token line".into()));
        };
        let refused = |what: &str| StoreError::Corrupt(format!("admin token {name:?}: {what}"));
        crate::auth::admin_token::check_name(&name).map_err(|e| refused(&e.to_string()))?;
        Ok(super::AdminToken {
            id: *id.as_bytes(),
            role: super::AdminRole::parse(&role).ok_or_else(|| refused("the role is read or write"))?,
            secret_hash: unhex::<32>(&secret_hash, "a secret hash")?,
            name,
            created_at,
            revoked_at,
        })
    }
}

impl Record {
    /// The line of an event.
    pub(super) fn event(e: super::events::Event) -> Self {
        Self::Event {
            id: e.id,
            at: e.at,
            kind: e.kind.as_str().to_owned(),
            user: e.user.map(|u| Uuid::from_bytes(*u.as_bytes())),
            appid: e.appid,
            ip: e.ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent,
            actor: e.actor,
            details: e.details,
        }
    }

    /// The event of an [`Record::Event`] line, checked as wxauth would have made it.
    pub(super) fn into_event(self) -> Result<super::events::Event, StoreError> {
        let Self::Event { id, at, kind, user, appid, ip, user_agent, actor, details } = self else {
            return Err(StoreError::Corrupt("not an event line".into()));
        };
        let refused = |what: &str| StoreError::Corrupt(format!("event {id}: {what}"));
        let kept = super::Origin::new(None, user_agent.as_deref().map(str::as_bytes)).user_agent;
        if kept != user_agent {
            return Err(refused("the user agent is not one wxauth would keep"));
        }
        let event = super::events::Event {
            id,
            at,
            kind: super::events::EventKind::parse(&kind).ok_or_else(|| refused("unknown kind"))?,
            user: user.map(|u| crate::domain::UserId::from_bytes(u.into_bytes())),
            appid,
            ip: ip.map(|ip| ip.parse()).transpose().map_err(|_| refused("not an IP address"))?,
            user_agent,
            actor,
            details,
        };
        event.details_json()?;
        Ok(event)
    }
}

/// A ban of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanLine {
    /// Why.
    pub reason: String,
    /// When it ends; absent: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// When it was imposed.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A deletion the person asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionLine {
    /// When they asked.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// When the erasure is due.
    #[serde(with = "time::serde::rfc3339")]
    pub erase_at: OffsetDateTime,
}

/// A user's controls as the fields of a user line: roles, claims, ban, deletion.
pub(super) type ControlsLine =
    (Vec<String>, Option<serde_json::Map<String, serde_json::Value>>, Option<BanLine>, Option<DeletionLine>);

/// The fields of a user line that hold `controls`.
pub(super) fn controls_line(controls: Controls) -> ControlsLine {
    let claims = (!controls.claims.is_empty()).then(|| controls.claims.as_map().clone());
    let ban = controls.ban.map(|b| BanLine { reason: b.reason, until: b.until, at: b.at });
    let deletion = controls.deletion.map(|d| DeletionLine { requested_at: d.requested_at, erase_at: d.erase_at });
    (controls.roles, claims, ban, deletion)
}

/// The controls a user line holds, checked as an operator's would be.
pub(super) fn line_controls((roles, claims, ban, deletion): ControlsLine) -> Result<Controls, StoreError> {
    let refused = |e: ControlError| StoreError::Corrupt(e.to_string());
    let claims = match claims {
        Some(map) => CustomClaims::from_value(serde_json::Value::Object(map)).map_err(refused)?,
        None => CustomClaims::default(),
    };
    let ban = ban.map(|b| Ban::new(&b.reason, b.until, b.at)).transpose().map_err(refused)?;
    let deletion = deletion.map(|d| Deletion { requested_at: d.requested_at, erase_at: d.erase_at });
    Ok(Controls { roles: crate::domain::roles(&roles).map_err(refused)?, claims, ban, deletion })
}

/// One WeChat identity of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityLine {
    /// The app.
    pub appid: String,
    /// The openid in that app.
    pub openid: String,
    /// The newest session key, sealed to the user and app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// When wxauth first received that key.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub session_key_issued_at: Option<OffsetDateTime>,
}

impl IdentityLine {
    /// The stored form of the session key: sealed, with its issue time in nanoseconds.
    pub(super) fn stored_key(&self) -> Result<Option<(String, i128)>, StoreError> {
        match (&self.session_key, self.session_key_issued_at) {
            (Some(key), Some(at)) => Ok(Some((key.clone(), at.unix_timestamp_nanos()))),
            (None, None) => Ok(None),
            _ => Err(StoreError::Corrupt("a session key needs session_key_issued_at, and only it".into())),
        }
    }

    /// From the stored form.
    pub(super) fn new(appid: String, openid: String, key: Option<(String, i128)>) -> Result<Self, StoreError> {
        let (session_key, issued) = key.unzip();
        Ok(Self { appid, openid, session_key, session_key_issued_at: issued.map(super::codec::time).transpose()? })
    }
}

/// Checks the mode a `mode` line names (as [`crate::domain::KeyMode::as_str`] writes it).
pub(super) fn check_mode(mode: &str) -> Result<(), StoreError> {
    match crate::domain::KeyMode::parse(mode) {
        Some(_) => Ok(()),
        None => Err(StoreError::Corrupt(format!("mode {mode:?}: expected dev or production"))),
    }
}

/// The refusal of an export of `mode` into a store created in the other mode.
pub(super) fn other_mode(mode: &str) -> StoreError {
    StoreError::Corrupt(format!("the export is of a {mode}-mode store and this store was created in the other mode"))
}

/// `e`, said of line `line` of the import.
pub(super) fn at_line(line: usize, e: StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(what) => StoreError::Corrupt(format!("line {line}: {what}")),
        e => StoreError::Corrupt(format!("line {line}: {e}")),
    }
}

/// Bytes as lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from lowercase or uppercase hex.
pub(super) fn unhex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], StoreError> {
    let bad = || StoreError::Corrupt(format!("{what}: expected {} hex digits", 2 * N));
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Lines written, the first and last included.
    pub records: usize,
    /// Records left out because the user they belong to is gone.
    pub skipped: usize,
}

/// The records of an import after its header, up to its last line ([`Record::End`]),
/// which it checks and does not yield. An export that ends without one, or goes on after
/// it, yields an error instead, so that the import fails before it commits.
pub(super) struct UntilEnd<'a> {
    records: &'a mut (dyn Iterator<Item = Result<Record, StoreError>> + Send),
    /// Records read so far, the header included.
    read: usize,
    done: bool,
}

impl<'a> UntilEnd<'a> {
    pub(super) fn new(records: &'a mut (dyn Iterator<Item = Result<Record, StoreError>> + Send)) -> Self {
        Self { records, read: 1, done: false }
    }
}

impl Iterator for UntilEnd<'_> {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.records.next();
        let (done, item) = match next {
            Some(Ok(Record::End { records })) if records == self.read => match self.records.next() {
                None => (true, None),
                Some(_) => (true, Some(Err(StoreError::Corrupt("lines after the last line".into())))),
            },
            Some(Ok(Record::End { records })) => (
                true,
                Some(Err(StoreError::Corrupt(format!(
                    "the last line counts {records} records before it, and there were {}",
                    self.read
                )))),
            ),
            Some(item) => (false, Some(item)),
            None => (
                true,
                Some(Err(StoreError::Corrupt(
                    "the export ends without its last line (`end`): it was cut short".into(),
                ))),
            ),
        };
        self.read += 1;
        self.done = done;
        item
    }
}

/// Checks what a record brings in that the commands making it would have checked: an
/// account's username (as `accounts add` does) and password hash (as the admin socket
/// does). An export is a file anyone may have edited.
pub(super) fn check_record(record: Record) -> Result<Record, StoreError> {
    if let Record::Account { username, password_hash, .. } = &record {
        let refused = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("account {username:?}: {e}"));
        crate::domain::Username::parse(username).map_err(|e| refused(&e))?;
        if !password_hash.is_empty() {
            crate::password::check_stored(password_hash).map_err(|e| refused(&e))?;
        }
    }
    if let Record::RefreshFamily { family, ip, user_agent, .. } = &record {
        let kept = super::Origin::new(None, user_agent.as_deref().map(str::as_bytes)).user_agent;
        let ip_ok = ip.as_deref().is_none_or(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        if kept != *user_agent || !ip_ok {
            return Err(StoreError::Corrupt(format!(
                "refresh family {family}: the IP address or user agent is not one wxauth would keep"
            )));
        }
    }
    Ok(record)
}

/// Checks the header of an import against the receiving store's sealer.
pub(super) fn check_header(record: Option<&Record>, key_id: &str) -> Result<(), StoreError> {
    match record {
        Some(Record::Header { format, sealing_key }) => {
            if !(OLDEST_FORMAT..=FORMAT).contains(format) {
                return Err(StoreError::Corrupt(format!(
                    "the export has format {format}; this build reads formats {OLDEST_FORMAT} to {FORMAT}"
                )));
            }
            if sealing_key != key_id {
                return Err(StoreError::Corrupt(format!(
                    "the export was sealed with session-key encryption key {sealing_key}, and this store's \
                     (WXAUTH_KEYS_DIR) is {key_id}: its session keys and details would not open. Copy \
                     session-keys.secret from the exporting server's keys directory"
                )));
            }
            Ok(())
        }
        _ => Err(StoreError::Corrupt("an export starts with its header line".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_the_wrong_length_or_digits() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex::<4>("0001ABff", "x").unwrap(), bytes);
        for bad in ["0001abf", "0001abff00", "0001abfg", "00é1abf"] {
            assert!(unhex::<4>(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_is_one_tagged_json_object_with_exact_times() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let record = Record::Unionid { unionid: "u1".into(), user: Uuid::nil() };
        let line = serde_json::to_string(&record).unwrap();
        assert_eq!(line, r#"{"record":"unionid","unionid":"u1","user":"00000000-0000-0000-0000-000000000000"}"#);
        let record = Record::Ticket {
            id: "00".into(),
            appid: "wx1".into(),
            openid: "o1".into(),
            unionid: None,
            session_key: "s".into(),
            expires_at: at,
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.ends_with(r#""expires_at":"2023-11-14T22:13:20.123456789Z"}"#), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
    }

    #[test]
    fn an_identity_has_a_session_key_with_its_issue_time_or_neither() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_000_000_001).unwrap();
        let line = |key: Option<&str>, issued: Option<OffsetDateTime>| IdentityLine {
            appid: "wx1".into(),
            openid: "o1".into(),
            session_key: key.map(str::to_owned),
            session_key_issued_at: issued,
        };
        assert_eq!(line(None, None).stored_key().unwrap(), None);
        let stored = line(Some("s1.k"), Some(at)).stored_key().unwrap();
        assert_eq!(stored, Some(("s1.k".to_owned(), at.unix_timestamp_nanos())));
        assert_eq!(IdentityLine::new("wx1".into(), "o1".into(), stored).unwrap(), line(Some("s1.k"), Some(at)));
        assert!(line(Some("s1.k"), None).stored_key().is_err());
        assert!(line(None, Some(at)).stored_key().is_err());
    }

    #[test]
    fn an_imported_session_keeps_only_what_a_login_would_have_kept() {
        let family = |ip: Option<&str>, user_agent: Option<&str>| Record::RefreshFamily {
            family: Uuid::nil(),
            generation: 0,
            verifier_hash: hex(&[0; 32]),
            started: OffsetDateTime::UNIX_EPOCH,
            user: Uuid::nil(),
            appid: "wx1".into(),
            openid: "o1".into(),
            expires_at: OffsetDateTime::UNIX_EPOCH,
            revoked: false,
            last_refresh: None,
            ip: ip.map(str::to_owned),
            user_agent: user_agent.map(str::to_owned),
        };
        let long = "a".repeat(257);
        let cases = [
            ("nothing known (format 2)", family(None, None), true),
            ("as a login keeps them", family(Some("2001:db8::1"), Some("MicroMessenger/8.0")), true),
            ("not an address", family(Some("localhost"), None), false),
            ("a control character", family(None, Some("a\nb")), false),
            ("too long", family(None, Some(&long)), false),
            ("empty", family(None, Some("")), false),
        ];
        for (what, record, kept) in cases {
            assert_eq!(check_record(record).is_ok(), kept, "{what}");
        }
        // A family line of format 2 reads as one with nothing known.
        let v2 = r#"{"record":"refresh_family","family":"00000000-0000-0000-0000-000000000000","generation":0,"verifier_hash":"0000000000000000000000000000000000000000000000000000000000000000","started":"1970-01-01T00:00:00Z","user":"00000000-0000-0000-0000-000000000000","appid":"wx1","openid":"o1","expires_at":"1970-01-01T00:00:00Z","revoked":false}"#;
        assert_eq!(serde_json::from_str::<Record>(v2).unwrap(), family(None, None));
    }

    #[test]
    fn an_import_needs_a_header_of_this_format_and_this_sealing_key() {
        let header = |format, key: &str| Record::Header { format, sealing_key: key.into() };
        assert!(check_header(Some(&header(FORMAT, "k1")), "k1").is_ok());
        assert!(check_header(Some(&header(OLDEST_FORMAT, "k1")), "k1").is_ok());
        assert!(check_header(Some(&header(FORMAT + 1, "k1")), "k1").unwrap_err().to_string().contains("format"));
        assert!(check_header(Some(&header(OLDEST_FORMAT - 1, "k1")), "k1").is_err());
        assert!(check_header(Some(&header(FORMAT, "k2")), "k1").unwrap_err().to_string().contains("session-keys"));
        assert!(check_header(None, "k1").is_err());
        assert!(check_header(Some(&Record::Mode { mode: "dev".into() }), "k1").is_err());
    }
}
