//! Merging two users who turn out to be one person (`wxauth users merge`), decided once for
//! every backend: whether the merge may happen, and what the kept user holds afterwards.
//! A backend only moves the rows and records, atomically.
//!
//! The kept user (`into`) gets the other's (`from`) identities, unionid (when it has none),
//! account (with its phone number), the details it lacks, roles and custom claims it lacks,
//! and sessions; `from` is then gone, and its refresh tokens keep working as `into`'s.

use time::OffsetDateTime;

use crate::domain::{Controls, CustomClaims, Details, User, UserId};

/// Why two users may not be merged, if they may not: each case would lose or mix up
/// something that belongs to one person only.
pub(super) fn refusal(into: &User, from: &User, now: OffsetDateTime) -> Option<String> {
    if into.id == from.id {
        return Some("a user cannot be merged into itself".into());
    }
    if let Some(both) = into.identities.iter().find(|i| from.openid_in(&i.appid).is_some()) {
        return Some(format!(
            "both users have an identity of app {}: WeChat says they are two people there",
            both.appid
        ));
    }
    if let (Some(a), Some(b)) = (&into.unionid, &from.unionid)
        && a != b
    {
        return Some("the users have different unionids: WeChat says they are two people".into());
    }
    if let (Some(a), Some(b)) = (&into.account, &from.account) {
        return Some(format!("both users have an account ({a} and {b}); remove one first"));
    }
    for (user, which) in [(into, "kept"), (from, "merged")] {
        if user.controls.deletion.is_some() {
            return Some(format!("the {which} user {} asked for its deletion", user.id));
        }
    }
    // The kept user's ban is the merged one's: it may not end sooner than the other's.
    if let Some(theirs) = from.controls.ban_at(now) {
        let outlasts = |until: Option<OffsetDateTime>| match (until, theirs.until) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine >= theirs,
        };
        if !into.controls.ban_at(now).is_some_and(|mine| outlasts(mine.until)) {
            return Some(format!(
                "user {} is banned for longer than user {}: lift the ban first, or merge the other way",
                from.id, into.id
            ));
        }
    }
    None
}

/// What the kept user holds after the merge (besides identities and sessions, which are
/// moved as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Merged {
    pub(super) unionid: Option<String>,
    pub(super) unionid_shared_with: Vec<UserId>,
    pub(super) account: Option<String>,
    pub(super) controls: Controls,
    pub(super) created_at: OffsetDateTime,
    pub(super) last_login_at: OffsetDateTime,
}

/// The kept user's fields after the merge; `Err` when the combined roles or claims break
/// their rules (too many, too large).
pub(super) fn merged(into: &User, from: &User) -> Result<Merged, String> {
    let mut roles = into.controls.roles.clone();
    roles.extend(from.controls.roles.iter().filter(|r| !into.controls.roles.contains(r)).cloned());
    let roles = crate::domain::roles(&roles).map_err(|e| format!("the merged roles: {e}"))?;
    let mut claims = into.controls.claims.as_map().clone();
    for (name, value) in from.controls.claims.as_map() {
        claims.entry(name.clone()).or_insert_with(|| value.clone());
    }
    let claims = CustomClaims::parse(&serde_json::Value::Object(claims).to_string())
        .map_err(|e| format!("the merged custom claims: {e}"))?;
    let mut shared: Vec<UserId> = into.unionid_shared_with.clone();
    shared.extend(from.unionid_shared_with.iter().filter(|u| !into.unionid_shared_with.contains(u)));
    shared.retain(|u| *u != into.id && *u != from.id);
    Ok(Merged {
        unionid: into.unionid.clone().or_else(|| from.unionid.clone()),
        unionid_shared_with: shared,
        account: into.account.clone().or_else(|| from.account.clone()),
        controls: Controls { roles, claims, ban: into.controls.ban.clone(), deletion: None },
        created_at: into.created_at.min(from.created_at),
        last_login_at: into.last_login_at.max(from.last_login_at),
    })
}

/// The kept user's details: its own, and what only the other had.
pub(super) fn merged_details(into: Details, from: Details) -> Details {
    Details { phone: into.phone.or(from.phone), profile: into.profile.or(from.profile) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Ban, Deletion, Identity};

    fn user(appids: &[&str]) -> User {
        let t = OffsetDateTime::UNIX_EPOCH;
        User {
            id: UserId::new(),
            identities: appids.iter().map(|a| Identity { appid: (*a).into(), openid: format!("o-{a}") }).collect(),
            unionid: None,
            account: None,
            unionid_shared_with: Vec::new(),
            created_at: t,
            last_login_at: t,
            controls: Controls::default(),
        }
    }

    #[test]
    fn a_merge_is_refused_when_it_would_mix_up_two_people_or_lose_something() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let a = user(&["wxmini"]);
        let same_app = user(&["wxmini"]);
        let other_union = User { unionid: Some("u2".into()), ..user(&["wxoa"]) };
        let account = |u: User, name: &str| User { account: Some(name.into()), ..u };
        let deleting = User {
            controls: Controls { deletion: Some(Deletion { requested_at: t, erase_at: t }), ..Controls::default() },
            ..user(&["wxoa"])
        };
        let banned = User {
            controls: Controls { ban: Some(Ban { reason: "spam".into(), until: None, at: t }), ..Controls::default() },
            ..user(&["wxoa"])
        };
        let with_union = User { unionid: Some("u1".into()), ..a.clone() };
        let cases: Vec<(&str, &User, &User, Option<&str>)> = vec![
            ("itself", &a, &a, Some("into itself")),
            ("an app both have", &a, &same_app, Some("identity of app wxmini")),
            ("different unionids", &with_union, &other_union, Some("different unionids")),
            ("fine", &a, &other_union, None),
        ];
        for (what, into, from, expected) in cases {
            let got = refusal(into, from, t);
            assert_eq!(got.is_some(), expected.is_some(), "{what}: {got:?}");
            if let (Some(got), Some(expected)) = (got, expected) {
                assert!(got.contains(expected), "{what}: {got}");
            }
        }
        let two_accounts = refusal(&account(a.clone(), "ann"), &account(user(&["wxoa"]), "bob"), t).unwrap();
        assert!(two_accounts.contains("ann") && two_accounts.contains("bob"), "{two_accounts}");
        assert!(refusal(&a, &deleting, t).unwrap().contains("deletion"));
        assert!(refusal(&deleting, &user(&["wxweb"]), t).unwrap().contains("deletion"));
        assert!(refusal(&a, &banned, t).unwrap().contains("banned"), "a merge would lift the ban");
        assert!(refusal(&banned, &user(&["wxweb"]), t).is_none(), "merging into the banned user keeps the ban");
        let ban_until = |until: Option<OffsetDateTime>, apps: &[&str]| User {
            controls: Controls { ban: Some(Ban { reason: "r".into(), until, at: t }), ..Controls::default() },
            ..user(apps)
        };
        let day = |n: i64| Some(t + time::Duration::days(n));
        let cases = [
            (
                "an ended ban does not outlast a holding one",
                ban_until(day(-1), &["wxa"]),
                ban_until(None, &["wxb"]),
                true,
            ),
            (
                "a shorter ban does not outlast a longer one",
                ban_until(day(1), &["wxa"]),
                ban_until(day(2), &["wxb"]),
                true,
            ),
            ("a ban until lifted outlasts any", ban_until(None, &["wxa"]), ban_until(day(9), &["wxb"]), false),
            ("an ended ban of the merged user is no ban", user(&["wxa"]), ban_until(day(-1), &["wxb"]), false),
        ];
        for (what, into, from, refused) in cases {
            assert_eq!(refusal(&into, &from, t).is_some(), refused, "{what}");
        }
    }

    #[test]
    fn the_kept_user_gains_what_it_lacked_and_keeps_what_it_had() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let later = t + time::Duration::days(3);
        let mut into = User { account: None, unionid: None, created_at: later, last_login_at: later, ..user(&["wxa"]) };
        into.controls.roles = vec!["staff".into()];
        into.controls.claims = CustomClaims::parse(r#"{"tier":"gold"}"#).unwrap();
        let mut from = User {
            unionid: Some("u1".into()),
            account: Some("ann".into()),
            created_at: t,
            last_login_at: t,
            ..user(&["wxb"])
        };
        from.controls.roles = vec!["staff".into(), "vip".into()];
        from.controls.claims = CustomClaims::parse(r#"{"tier":"silver","region":"sh"}"#).unwrap();
        from.unionid_shared_with = vec![into.id, UserId::from_bytes([9; 16])];

        let m = merged(&into, &from).unwrap();

        assert_eq!(m.unionid.as_deref(), Some("u1"));
        assert_eq!(m.account.as_deref(), Some("ann"));
        assert_eq!(m.controls.roles, ["staff", "vip"]);
        assert_eq!(m.controls.claims.to_json(), r#"{"region":"sh","tier":"gold"}"#);
        assert_eq!(m.unionid_shared_with, [UserId::from_bytes([9; 16])], "a user shares no unionid with itself");
        assert_eq!((m.created_at, m.last_login_at), (t, later));
    }
}
