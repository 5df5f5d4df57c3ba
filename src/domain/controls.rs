//! What an operator decides about a user: roles and custom claims that access tokens carry,
//! and a ban. Checked here once, when an operator sets them (or an export brings them in).

use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Why roles or custom claims were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A role that is empty, too long or has other characters.
    #[error("role {0:?}: a role is 1 to {max} letters, digits, '.', '_', ':' or '-'", max = MAX_ROLE)]
    BadRole(String),
    /// Too many roles.
    #[error("at most {max} roles, got {0}", max = MAX_ROLES)]
    TooManyRoles(usize),
    /// Custom claims that are not a JSON object.
    #[error("custom claims must be a JSON object: {0}")]
    NotAnObject(String),
    /// Custom claims larger than [`CustomClaims::MAX_BYTES`].
    #[error("custom claims must be at most {max} bytes of JSON, got {0}", max = CustomClaims::MAX_BYTES)]
    TooLarge(usize),
    /// A claim name wxauth or the JWT standards use.
    #[error("claim {0:?} is reserved (it is one of: {list})", list = RESERVED_CLAIMS.join(", "))]
    Reserved(String),
    /// A ban reason that is empty or too long.
    #[error("a ban reason is 1 to {max} characters without control characters", max = Ban::MAX_REASON)]
    BadReason,
    /// A ban that would end before it starts, or later than a store can keep.
    #[error("a ban must end after it starts and before the year 2262 (omit the end for a ban until lifted)")]
    BadEnd,
}

/// Longest role, in bytes.
pub const MAX_ROLE: usize = 64;
/// Most roles a user may have.
pub const MAX_ROLES: usize = 32;

/// Claim names custom claims may not use: those of wxauth's access tokens, of the JWT and
/// OAuth standards a verifier may act on (RFC 7519, 9068, 8693, 7800, OpenID Connect), so
/// that no custom claim changes what a token means to a verifier.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "appid",
    "openid",
    "unionid",
    "sid",
    "roles",
    "typ",
    "cty",
    "alg",
    "kid",
    "scope",
    "scp",
    "client_id",
    "azp",
    "auth_time",
    "acr",
    "amr",
    "nonce",
    "cnf",
    "act",
    "may_act",
    "groups",
    "entitlements",
    "at_hash",
    "c_hash",
    "token_use",
    "tid",
];

/// Checks a list of roles: each 1 to [`MAX_ROLE`] bytes of letters, digits, `.`, `_`, `:`
/// or `-`, at most [`MAX_ROLES`]; duplicates are dropped and the list sorted, so that a
/// token's `roles` does not depend on the order an operator typed them in.
pub fn roles(raw: &[String]) -> Result<Vec<String>, ControlError> {
    let valid = |r: &str| {
        !r.is_empty() && r.len() <= MAX_ROLE && r.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
    };
    if let Some(bad) = raw.iter().find(|r| !valid(r)) {
        return Err(ControlError::BadRole(bad.clone()));
    }
    let mut roles = raw.to_vec();
    roles.sort();
    roles.dedup();
    if roles.len() > MAX_ROLES {
        return Err(ControlError::TooManyRoles(roles.len()));
    }
    Ok(roles)
}

/// Claims an operator adds to a user's access tokens: a small JSON object whose names are
/// not [`RESERVED_CLAIMS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomClaims(Map<String, Value>);

impl CustomClaims {
    /// Largest object, as compact JSON: every access token carries it.
    pub const MAX_BYTES: usize = 1024;

    /// Checks claims given as JSON text.
    pub fn parse(text: &str) -> Result<Self, ControlError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ControlError::NotAnObject(e.to_string()))?;
        Self::from_value(value)
    }

    /// Checks claims given as a JSON value.
    pub fn from_value(value: Value) -> Result<Self, ControlError> {
        let Value::Object(map) = value else {
            return Err(ControlError::NotAnObject(format!("got {value}")));
        };
        if let Some(reserved) = map.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
            return Err(ControlError::Reserved(reserved.clone()));
        }
        let size = Value::Object(map.clone()).to_string().len();
        if size > Self::MAX_BYTES {
            return Err(ControlError::TooLarge(size));
        }
        Ok(Self(map))
    }

    /// The claims.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The claims as compact JSON (`{}` when none).
    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

/// A ban by an operator: the user cannot log in, bind or refresh while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// Why, for the operator and the person (it is in the 403's description).
    pub reason: String,
    /// When it ends by itself; `None`: until lifted.
    pub until: Option<OffsetDateTime>,
    /// When it was imposed.
    pub at: OffsetDateTime,
}

impl Ban {
    /// Longest reason, in characters.
    pub const MAX_REASON: usize = 200;

    /// A ban with a checked reason.
    pub fn new(reason: &str, until: Option<OffsetDateTime>, at: OffsetDateTime) -> Result<Self, ControlError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > Self::MAX_REASON || reason.chars().any(char::is_control) {
            return Err(ControlError::BadReason);
        }
        // Stores keep times as 64-bit nanoseconds (PostgreSQL's bigint): up to April 2262.
        if until.is_some_and(|u| u <= at || u.unix_timestamp_nanos() > i128::from(i64::MAX)) {
            return Err(ControlError::BadEnd);
        }
        Ok(Self { reason: reason.to_owned(), until, at })
    }

    /// Whether it holds at `now`.
    pub fn holds(&self, now: OffsetDateTime) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// The person asked for their account to be deleted: it is erased at `erase_at`, and until
/// then it can neither log in nor bind, only cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletion {
    /// When the person asked.
    pub requested_at: OffsetDateTime,
    /// When the erasure is due (`requested_at` plus `WXAUTH_DELETION_GRACE_SECS`).
    pub erase_at: OffsetDateTime,
}

/// Everything an operator decides about a user, and the deletion the person asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// Roles, sorted; access tokens carry them as `roles`.
    pub roles: Vec<String>,
    /// Custom claims access tokens carry.
    pub claims: CustomClaims,
    /// The ban, if any (one that has ended stays until lifted, for the record).
    pub ban: Option<Ban>,
    /// The deletion the person asked for, until it is cancelled or done.
    pub deletion: Option<Deletion>,
}

impl Controls {
    /// The ban that holds at `now`, if any.
    pub fn ban_at(&self, now: OffsetDateTime) -> Option<&Ban> {
        self.ban.as_ref().filter(|b| b.holds(now))
    }

    /// Whether a login at `now` may start a session: no ban holds and no deletion is
    /// pending. (PostgreSQL's one-statement login states the same in SQL.)
    pub fn admit_login(&self, now: OffsetDateTime) -> bool {
        self.ban_at(now).is_none() && self.deletion.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_sorted_and_deduplicated() {
        let list = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(roles(&list(&["staff", "admin", "staff"])).unwrap(), list(&["admin", "staff"]));
        assert_eq!(roles(&list(&["shop:42", "a.b-c_d"])).unwrap(), list(&["a.b-c_d", "shop:42"]));
        assert_eq!(roles(&[]).unwrap(), Vec::<String>::new());
        let long = "r".repeat(65);
        for bad in ["", "has space", "中文", &long, "a/b"] {
            assert_eq!(roles(&list(&[bad])), Err(ControlError::BadRole(bad.into())), "{bad:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("r{i}")).collect();
        assert_eq!(roles(&many), Err(ControlError::TooManyRoles(33)));
        assert!(roles(&many[..32]).is_ok());
    }

    #[test]
    fn custom_claims_are_a_small_object_without_reserved_names() {
        assert_eq!(CustomClaims::parse(r#"{"tier":"gold","shop":42}"#).unwrap().as_map().len(), 2);
        assert!(CustomClaims::parse("{}").unwrap().is_empty());
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(1017));
        assert_eq!(big.len(), 1025);
        let cases = [
            ("[1]", "object"),
            ("not json", "object"),
            (r#""text""#, "object"),
            (r#"{"sub":"someone else"}"#, "reserved"),
            (r#"{"roles":["admin"]}"#, "reserved"),
            (r#"{"exp":1}"#, "reserved"),
            (big.as_str(), "at most 1024"),
        ];
        for (text, why) in cases {
            let refused = CustomClaims::parse(text).unwrap_err().to_string();
            assert!(refused.contains(why), "{text}: {refused}");
        }
        assert!(CustomClaims::parse(&big[..1016].replace("aaaaaaaa", "")).is_err(), "not JSON after the cut");
    }

    #[test]
    fn a_ban_holds_until_its_end_and_needs_a_printable_reason() {
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let until = now + time::Duration::hours(1);
        let ban = Ban::new("  spam ", Some(until), now).unwrap();
        assert_eq!(ban.reason, "spam");
        assert!(ban.holds(now) && ban.holds(until - time::Duration::nanoseconds(1)));
        assert!(!ban.holds(until), "the end is exact");
        assert!(Ban::new("spam", None, now).unwrap().holds(until + time::Duration::days(9999)));
        for bad in ["", "  ", "a\nb", &"x".repeat(201)] {
            assert_eq!(Ban::new(bad, None, now), Err(ControlError::BadReason), "{bad:?}");
        }
        let far = time::macros::datetime!(2262-04-12 00:00 UTC);
        for end in [now, now - time::Duration::seconds(1), far] {
            assert_eq!(Ban::new("spam", Some(end), now), Err(ControlError::BadEnd), "{end}");
        }
        assert!(Ban::new("spam", Some(far - time::Duration::days(1)), now).is_ok());
        let controls = Controls { ban: Some(ban), ..Controls::default() };
        assert!(controls.ban_at(now).is_some() && controls.ban_at(until).is_none());
    }
}
