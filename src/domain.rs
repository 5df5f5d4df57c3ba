//! Validated values that cross module boundaries.
//!
//! Anything built through `parse` has been checked once, at the edge, so the rest of the
//! code never re-validates.

use std::{fmt, str::FromStr};

mod controls;
pub use controls::{Ban, ControlError, Controls, CustomClaims, Deletion, MAX_ROLE, MAX_ROLES, RESERVED_CLAIMS, roles};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Why a value from a client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The `code` field is empty.
    #[error("code must not be empty")]
    EmptyCode,
    /// The `code` field is longer than [`JsCode::MAX_LEN`] bytes.
    #[error("code must be at most {max} bytes, got {len}", max = JsCode::MAX_LEN)]
    CodeTooLong {
        /// Length that was sent.
        len: usize,
    },
    /// The `code` field has a byte outside visible ASCII.
    #[error("code must contain only visible ASCII characters (0x21-0x7E)")]
    CodeNotAscii,
    /// A username that cannot exist.
    #[error("username must be 1 to 64 characters: letters, digits, '.', '_', '@' or '-'")]
    BadUsername,
    /// An empty or oversized password.
    #[error("password must be 1 to 1024 bytes")]
    BadPassword,
    /// A new password that is too short.
    #[error("a password must have at least 8 characters")]
    PasswordTooShort,
    /// A bind request names neither or both of `bind_ticket` and `code`.
    #[error("send exactly one of bind_ticket and code")]
    TicketOrCode,
    /// A bind request names neither or both of a password and a phone code.
    #[error("send either username and password, or phone_code (from the getPhoneNumber button), not both")]
    PasswordOrPhone,
}

/// The one-time code a mini-program gets from `wx.login`.
///
/// It is a credential for five minutes, so `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsCode(String);

impl JsCode {
    /// Longest code accepted. WeChat's codes are 32 characters; the margin allows for
    /// format changes without letting a client send megabytes through to WeChat.
    pub const MAX_LEN: usize = 128;

    /// Checks a code sent by a client.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError::EmptyCode);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(DomainError::CodeTooLong { len: raw.len() });
        }
        // Spaces and control characters never occur in real codes; rejecting them keeps
        // a pasted "  " or a stray newline from costing a WeChat call.
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::CodeNotAscii);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The code as sent to WeChat.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsCode(<redacted>)")
    }
}

/// WeChat's `session_key`: the key for decrypting a user's open data.
///
/// It must never leave the server, so it has no `Display` and a redacting `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionKey(String);

impl SessionKey {
    /// Wraps the base64 text WeChat sent.
    pub fn new(raw: String) -> Self {
        Self(raw)
    }

    /// A key read back from a bind ticket, where an empty text stands for "none" (an
    /// identity from a surface without session keys), so the ticket layout stays as it is.
    pub fn stored(raw: String) -> Option<Self> {
        (!raw.is_empty()).then_some(Self(raw))
    }

    /// The base64 text, for storage and (later) decryption only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// What `auth.code2Session` tells about the person behind a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatSession {
    /// The user's id within this mini-program.
    pub openid: String,
    /// The user's id across the Open Platform account, when the app is bound to one.
    pub unionid: Option<String>,
    /// Key for decrypting this user's open data; replaced by every login. Only a
    /// mini-program's `code2Session` gives one: the OAuth exchange of the other surfaces
    /// (official account, website, mobile app) does not.
    pub session_key: Option<SessionKey>,
}

/// A business user's id: opaque, stable, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

impl UserId {
    /// A new id. UUID v7 sorts by creation time, which keeps sled's B-tree appends cheap.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the text form used in tokens (`sub`).
    pub fn parse(raw: &str) -> Option<Self> {
        Uuid::try_parse(raw).ok().map(Self)
    }

    /// The id stored as `bytes` (by [`UserId::as_bytes`]).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }

    /// The 16 bytes used as a storage key.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// One WeChat identity: an openid within one mini-program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The mini-program's AppID.
    pub appid: String,
    /// WeChat's id of the person within `appid`.
    pub openid: String,
}

/// A business user: the WeChat identities bound to it and, when it was made by an operator,
/// the account (username and password) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id, the JWT's `sub`.
    pub id: UserId,
    /// The openids bound to this user, at most one per mini-program, in binding order.
    pub identities: Vec<Identity>,
    /// WeChat's cross-app id, once WeChat has sent one.
    pub unionid: Option<String>,
    /// The account's username, for users created by `wxauth accounts add`.
    pub account: Option<String>,
    /// Other users that WeChat gave the same unionid before it was known here. They are
    /// reported, never merged silently.
    pub unionid_shared_with: Vec<UserId>,
    /// Creation (first login, or `accounts add`).
    pub created_at: OffsetDateTime,
    /// Most recent login.
    pub last_login_at: OffsetDateTime,
    /// Roles, custom claims and a ban, as an operator set them.
    pub controls: Controls,
}

impl User {
    /// The user's openid in `appid`, if one is bound.
    pub fn openid_in(&self, appid: &str) -> Option<&str> {
        self.identities.iter().find(|i| i.appid == appid).map(|i| i.openid.as_str())
    }

    /// Whether a session of `identity` may go on at `now` (a refresh): the identity is
    /// still the user's, and the user may log in ([`Controls::admit_login`]). PostgreSQL's
    /// one-statement refresh states the same in SQL.
    pub fn admits_session(&self, identity: &Identity, now: OffsetDateTime) -> bool {
        self.openid_in(&identity.appid) == Some(identity.openid.as_str()) && self.controls.admit_login(now)
    }
}

/// A phone number WeChat vouched for, through either phone API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    /// With the country code, e.g. `+8613800138000` (WeChat's `phoneNumber`).
    pub phone_number: String,
    /// Without it, e.g. `13800138000` (`purePhoneNumber`).
    pub pure_phone_number: String,
    /// e.g. `86` (`countryCode`, a string or a number in practice).
    pub country_code: String,
}

impl PhoneNumber {
    /// The number as `+` country code and digits (`+8613800138000`): the form it is
    /// indexed and searched by, whatever spacing WeChat sent.
    pub fn normalised(&self) -> String {
        let code: String = self.country_code.chars().filter(char::is_ascii_digit).collect();
        let number: String = self.pure_phone_number.chars().filter(char::is_ascii_digit).collect();
        if code.is_empty() || number.is_empty() {
            // Older answers carry the full number only, and WeChat writes a mainland one
            // without `+86`: read it as an operator's query is read, so both meet.
            let digits: String = self.phone_number.chars().filter(char::is_ascii_digit).collect();
            return Self::parse_query(&self.phone_number).unwrap_or_else(|| format!("+{digits}"));
        }
        format!("+{code}{number}")
    }

    /// What an operator typed, as [`PhoneNumber::normalised`] writes it: `+` and a country
    /// code with 6 to 15 digits in all (E.164), or a mainland mobile number of 11 digits
    /// starting with 1 (`+86` is implied). Spaces, dashes and brackets are ignored.
    /// `None` when it is not a phone number.
    pub fn parse_query(text: &str) -> Option<String> {
        let text = text.trim();
        let (plus, rest) = match text.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if !rest.chars().all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')')) {
            return None;
        }
        let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        match (plus, digits.len()) {
            (true, 6..=15) => Some(format!("+{digits}")),
            (false, 11) if digits.starts_with('1') => Some(format!("+86{digits}")),
            _ => None,
        }
    }
}

/// A WeChat profile from decrypted `getUserInfo` data. Since 2022 WeChat often sends
/// placeholders (nickname `微信用户`, a grey avatar, gender 0, empty region): they are stored
/// as sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// `nickName`.
    pub nickname: String,
    /// `avatarUrl`.
    pub avatar_url: String,
    /// `gender`: 0 unknown, 1 male, 2 female.
    pub gender: u8,
    /// `country`.
    pub country: String,
    /// `province`.
    pub province: String,
    /// `city`.
    pub city: String,
    /// `language` of the region names, e.g. `zh_CN`.
    pub language: String,
}

/// A value with the time it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dated<T> {
    /// The value.
    pub value: T,
    /// When wxauth received it from WeChat.
    pub at: OffsetDateTime,
}

/// What a user shared through WeChat's open data: kept apart from the user record, which
/// every login rewrites, because it changes rarely and is personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    /// The phone number, with when it was verified.
    pub phone: Option<Dated<PhoneNumber>>,
    /// The profile, with when it was received.
    pub profile: Option<Dated<Profile>>,
}

/// A username of an account: 1 to 64 characters, letters, digits and `._@-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Longest username accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks a username from a client or the command line.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
        if ok { Ok(Self(raw.to_owned())) } else { Err(DomainError::BadUsername) }
    }

    /// The username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as typed by a person. `Debug` never prints it, and its memory is zeroed
/// when it is dropped.
#[derive(Clone, Debug)]
pub struct Password(secrecy::SecretString);

impl Password {
    /// Shortest password an operator may set.
    pub const MIN_CHARS: usize = 8;
    /// Longest password accepted (hashing cost grows with length).
    pub const MAX_BYTES: usize = 1024;

    /// A password presented at bind time: only the length is bounded, so that a short
    /// password fails like any wrong one.
    pub fn presented(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() || raw.len() > Self::MAX_BYTES {
            return Err(DomainError::BadPassword);
        }
        Ok(Self(raw.into()))
    }

    /// A new password for an account: at least [`Password::MIN_CHARS`] characters.
    pub fn new_for_account(raw: &str) -> Result<Self, DomainError> {
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(DomainError::PasswordTooShort);
        }
        Self::presented(raw)
    }

    /// The password, for hashing only.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn phone_numbers_are_searched_in_the_form_they_are_indexed() {
        let number = super::PhoneNumber {
            phone_number: "13800138000".into(),
            pure_phone_number: "13800138000".into(),
            country_code: "86".into(),
        };
        assert_eq!(number.normalised(), "+8613800138000");
        // Without the country code and the pure number: a mainland number is still +86.
        for (full, expected) in [("13800138000", "+8613800138000"), ("+1 415 555 0100", "+14155550100")] {
            let number = super::PhoneNumber {
                phone_number: full.into(),
                pure_phone_number: String::new(),
                country_code: String::new(),
            };
            assert_eq!(number.normalised(), expected, "{full:?}");
        }
        for (typed, expected) in [
            ("13800138000", Some("+8613800138000")),
            ("+86 138 0013 8000", Some("+8613800138000")),
            (" +86-138-0013-8000 ", Some("+8613800138000")),
            ("+1 (415) 555-0100", Some("+14155550100")),
            ("23800138000", None),
            ("1380013800", None),
            ("o6_bmjrPTlm6_2sgVt7hMZOPfL2M", None),
            ("+", None),
            ("+12345", None),
            ("8613800138000", None),
        ] {
            assert_eq!(super::PhoneNumber::parse_query(typed).as_deref(), expected, "{typed:?}");
        }
    }

    use super::*;

    #[test]
    fn code_is_checked_for_length_and_characters() {
        assert!(JsCode::parse("0a3Xxe000ZXe9S1Yqw100Bx1Ln3Xxe0r").is_ok());
        assert_eq!(JsCode::parse(""), Err(DomainError::EmptyCode));
        assert_eq!(JsCode::parse(" "), Err(DomainError::CodeNotAscii));
        assert_eq!(JsCode::parse("a\nb"), Err(DomainError::CodeNotAscii));
        assert_eq!(JsCode::parse("码"), Err(DomainError::CodeNotAscii));
        assert!(JsCode::parse(&"a".repeat(128)).is_ok());
        assert_eq!(JsCode::parse(&"a".repeat(129)), Err(DomainError::CodeTooLong { len: 129 }));
    }

    #[test]
    fn secrets_do_not_print_in_debug() {
        let code = JsCode::parse("secret-code").unwrap();
        let key = SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==".into());
        assert!(!format!("{code:?}{key:?}").contains("secret-code"));
        assert!(!format!("{key:?}").contains("tiiht"));
    }
}

/// Algorithms wxauth signs with. HMAC is deliberately absent: a shared secret would have
/// to be handed to every verifier, and HS* is the classic algorithm-confusion vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    /// ECDSA P-256 with SHA-256 (default: small keys, small signatures).
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and 2048-bit keys, for verifiers without EC support.
    RS256,
}

impl FromStr for SigningAlg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ES256" => Ok(Self::ES256),
            "EdDSA" => Ok(Self::EdDSA),
            "RS256" => Ok(Self::RS256),
            _ => Err(()),
        }
    }
}

impl SigningAlg {
    /// The JOSE name (`alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Whether a key (or a server) belongs to dev mode or to production. Dev mode signs tokens
/// for any code, so the two never share a key ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// `serve --dev`.
    Dev,
    /// Everything else.
    Production,
}

impl KeyMode {
    /// `Dev` when `dev`.
    pub fn of(dev: bool) -> Self {
        if dev { Self::Dev } else { Self::Production }
    }

    /// How a key file records it: `dev` or `production`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Production => "production",
        }
    }

    /// Reads [`KeyMode::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "dev" => Some(Self::Dev),
            "production" => Some(Self::Production),
            _ => None,
        }
    }
}

impl fmt::Display for KeyMode {
    /// `dev-mode` or `production`, as in "a dev-mode key".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dev => "dev-mode",
            Self::Production => "production",
        })
    }
}
