//! What a login changes in a stored user, decided once for every backend: a returning
//! login writes only what changed, and a unionid once received is kept.

use time::OffsetDateTime;

use super::{LAST_LOGIN_GRANULARITY, StoredSessionKey};
use crate::domain::WechatSession;

/// What a returning login changes in a stored identity and user. Shared by the backends
/// so that they agree on "only what changed".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Changes {
    /// `last_login_at`, when the stored value is at least [`LAST_LOGIN_GRANULARITY`] old.
    pub(super) last_login_at: Option<OffsetDateTime>,
    /// The session key, when WeChat sent a different one.
    pub(super) session_key: Option<StoredSessionKey>,
    /// The unionid, when WeChat sent one for a user that had none.
    pub(super) unionid: Option<String>,
}

impl Changes {
    /// Whether the login changes nothing.
    pub(super) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a returning login must write, given what is stored.
pub(super) fn returning_changes(
    last_login_at: OffsetDateTime,
    unionid: Option<&str>,
    key: Option<&StoredSessionKey>,
    session: &WechatSession,
    now: OffsetDateTime,
) -> Changes {
    Changes {
        last_login_at: (now - last_login_at >= LAST_LOGIN_GRANULARITY).then_some(now),
        // A surface without session keys (web, mobile app) leaves the stored one alone.
        session_key: match (key, &session.session_key) {
            (_, None) => None,
            (Some(k), Some(sent)) if k.session_key == *sent => None,
            (_, Some(_)) => StoredSessionKey::of(session, now),
        },
        unionid: new_unionid(unionid, session.unionid.as_deref()).map(str::to_owned),
    }
}

/// The unionid a user learns from a login that `sent` one: only a first one. A unionid,
/// once received, is kept: later answers without one, or naming another, change nothing.
pub(super) fn new_unionid<'a>(stored: Option<&str>, sent: Option<&'a str>) -> Option<&'a str> {
    sent.filter(|_| stored.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SessionKey;
    use time::Duration;

    fn session(unionid: Option<&str>, key: &str) -> WechatSession {
        WechatSession {
            openid: "o1".into(),
            unionid: unionid.map(str::to_owned),
            session_key: Some(SessionKey::new(key.into())),
        }
    }

    #[test]
    fn a_returning_login_changes_only_what_changed() {
        let t0 = OffsetDateTime::now_utc();
        let key = StoredSessionKey { session_key: SessionKey::new("k".into()), issued_at: t0 };
        let soon = t0 + Duration::seconds(10);
        assert!(returning_changes(t0, None, Some(&key), &session(None, "k"), soon).is_empty());
        let c = returning_changes(t0, None, Some(&key), &session(Some("u1"), "k"), soon);
        assert_eq!(c, Changes { unionid: Some("u1".into()), ..Changes::default() });
        let later = t0 + LAST_LOGIN_GRANULARITY;
        let c = returning_changes(t0, None, Some(&key), &session(None, "k"), later);
        assert_eq!(c, Changes { last_login_at: Some(later), ..Changes::default() });
        // A unionid once received is kept when a later answer lacks it, or names another.
        assert!(returning_changes(t0, Some("u1"), Some(&key), &session(None, "k"), soon).is_empty());
        assert!(returning_changes(t0, Some("u1"), Some(&key), &session(Some("u2"), "k"), soon).is_empty());
    }

    #[test]
    fn a_session_key_is_written_only_when_wechat_sent_a_different_one() {
        let t0 = OffsetDateTime::now_utc();
        let key = StoredSessionKey { session_key: SessionKey::new("k1".into()), issued_at: t0 };
        let later = t0 + Duration::seconds(1);
        assert_eq!(returning_changes(t0, None, Some(&key), &session(None, "k1"), later).session_key, None);
        let changed = returning_changes(t0, None, Some(&key), &session(None, "k2"), later).session_key.unwrap();
        assert_eq!((changed.session_key.expose(), changed.issued_at), ("k2", later));
        assert!(returning_changes(t0, None, None, &session(None, "k1"), later).session_key.is_some());
    }

    #[test]
    fn only_a_first_unionid_is_learned() {
        let cases = [
            ("a first one", None, Some("u1"), Some("u1")),
            ("none sent", None, None, None),
            ("one kept when none is sent", Some("u1"), None, None),
            ("the same one again", Some("u1"), Some("u1"), None),
            ("another one is not taken", Some("u1"), Some("u2"), None),
        ];
        for (what, stored, sent, learned) in cases {
            assert_eq!(new_unionid(stored, sent), learned, "{what}");
        }
    }
}
