//! Cases of the store conformance suite. Each takes a [`Backend`] and uses only the public
//! `Store` interface.

use std::sync::Arc;

use time::OffsetDateTime;

use wxauth::{
    domain::{
        Ban, Controls, CustomClaims, Dated, Details, Identity, PhoneNumber, Profile, SessionKey, UserId, WechatSession,
    },
    store::{BindTicket, LAST_LOGIN_GRANULARITY, NewAccount, Store, StoreError},
};

use crate::{Backend, open};

mod deletions;
mod events;
mod login;
mod merge;
mod outbox;
mod refresh;
pub use deletions::*;
pub use events::*;
pub use login::*;
pub use merge::*;
pub use outbox::*;
pub use refresh::*;

pub(crate) fn session(openid: &str, key: &str) -> WechatSession {
    WechatSession { openid: openid.into(), unionid: None, session_key: Some(SessionKey::new(key.into())) }
}

pub(crate) fn person(openid: &str, unionid: &str) -> WechatSession {
    WechatSession { unionid: Some(unionid.into()), ..session(openid, &format!("key-{openid}")) }
}

pub(crate) const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

pub async fn racing_first_logins_create_exactly_one_user(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = Arc::new(open(&settings).await.unwrap());

    let logins: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.record_login("wx1", &session("o_race", &format!("k{i}"))).await })
        })
        .collect();
    let mut records = Vec::new();
    for login in logins {
        records.push(login.await.unwrap().unwrap());
    }

    assert_eq!(records.iter().filter(|r| r.created).count(), 1, "not exactly one creation");
    assert!(records.iter().all(|r| r.user.id == records[0].user.id), "racing logins got different users");
}

pub async fn a_returning_login_finds_the_same_user_and_is_not_created(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    let first = store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    let again = store.record_login("wx1", &session("o1", "k1")).await.unwrap();

    assert!(first.created && !again.created);
    assert_eq!(again.user.id, first.user.id);
    assert_eq!(again.user.identities, [Identity { appid: "wx1".into(), openid: "o1".into() }]);
}

pub async fn a_returning_login_within_the_granularity_keeps_last_login_at(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    let first = store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = store.record_login("wx1", &session("o1", "k1")).await.unwrap();

    assert!(LAST_LOGIN_GRANULARITY > time::Duration::seconds(1));
    assert_eq!(again.user.last_login_at, first.user.last_login_at);
    let stored = store.user(&first.user.id).await.unwrap().unwrap();
    assert_eq!(stored, first.user, "a login that changed nothing rewrote the user");
}

pub async fn a_user_is_found_by_id_and_an_unknown_id_is_none(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    let created = store.record_login("wx1", &session("o1", "k1")).await.unwrap();

    assert_eq!(store.user(&created.user.id).await.unwrap(), Some(created.user.clone()));
    assert_eq!(store.user(&UserId::new()).await.unwrap(), None);
    assert_eq!(store.session_key(&UserId::new(), "wx1").await.unwrap(), None);
}

pub async fn a_new_session_key_replaces_the_old_one_at_once(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let id = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user.id;
    assert_eq!(store.session_key(&id, "wx1").await.unwrap().unwrap().session_key.expose(), "k1");

    store.record_login("wx1", &session("o1", "k2")).await.unwrap();

    // The very next call: a mini-program decrypts right after logging in.
    assert_eq!(store.session_key(&id, "wx1").await.unwrap().unwrap().session_key.expose(), "k2");
}

pub async fn an_identity_from_a_surface_without_session_keys_has_none_in_its_record_and_its_ticket(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let keyless = WechatSession { session_key: None, ..session("o1", "unused") };
    let id = store.record_login("wxapp", &keyless).await.unwrap().user.id;
    assert!(store.session_key(&id, "wxapp").await.unwrap().is_none());
    // A returning login without a key neither invents one nor drops one that is there.
    store.record_login("wx1", &session("o2", "k1")).await.unwrap();
    let other = store.record_login("wx1", &WechatSession { session_key: None, ..session("o2", "") }).await.unwrap();
    assert_eq!(store.session_key(&other.user.id, "wx1").await.unwrap().unwrap().session_key.expose(), "k1");
    assert_eq!(store.record_login("wxapp", &keyless).await.unwrap().user.id, id);
    assert!(store.session_key(&id, "wxapp").await.unwrap().is_none());

    let t0 = now();
    let ticket = BindTicket { appid: "wxapp".into(), session: keyless, expires_at: t0 + time::Duration::minutes(5) };
    store.put_ticket(&[7; 32], &ticket, t0).await.unwrap();
    let found = store.ticket(&[7; 32], t0).await.unwrap().expect("the ticket was not found");
    assert_eq!(found.session, ticket.session);
}

pub async fn a_grant_is_found_as_its_kind_changed_only_from_what_was_read_and_taken_once(backend: &dyn Backend) {
    use wxauth::store::grants::{Grant, GrantKind};
    let (settings, _guard) = backend.fresh();
    let store = Arc::new(open(&settings).await.unwrap());
    // Years before the system's time: only the clock passed in can say these are live.
    let t0 = time::macros::datetime!(2020-01-01 00:00 UTC);
    let grant = Grant {
        kind: GrantKind::Scan,
        payload: r#"{"state":"pending"}"#.into(),
        expires_at: t0 + time::Duration::minutes(5),
    };
    store.put_grant(&[1; 32], &grant, t0).await.unwrap();

    assert_eq!(store.grant(&[1; 32], GrantKind::Scan, t0).await.unwrap().as_deref(), Some(grant.payload.as_str()));
    assert_eq!(store.grant(&[1; 32], GrantKind::Code, t0).await.unwrap(), None, "found as another kind");
    assert_eq!(store.take_grant(&[1; 32], GrantKind::Code, t0).await.unwrap(), None, "taken as another kind");
    assert_eq!(store.grant(&[2; 32], GrantKind::Scan, t0).await.unwrap(), None);

    let confirmed = r#"{"state":"confirmed"}"#;
    assert!(
        !store.replace_grant(&[1; 32], GrantKind::Scan, "{}", confirmed, t0).await.unwrap(),
        "replaced from a state it was not in"
    );
    assert!(store.replace_grant(&[1; 32], GrantKind::Scan, &grant.payload, confirmed, t0).await.unwrap());
    assert!(
        !store.replace_grant(&[1; 32], GrantKind::Scan, &grant.payload, "{}", t0).await.unwrap(),
        "replaced twice from one state"
    );
    assert_eq!(store.grant(&[1; 32], GrantKind::Scan, t0).await.unwrap().as_deref(), Some(confirmed));

    let takers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_grant(&[1; 32], GrantKind::Scan, t0).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for taker in takers {
        taken.extend(taker.await.unwrap());
    }
    assert_eq!(taken, vec![confirmed.to_owned()], "a grant was spent other than exactly once");
    assert_eq!(store.grant(&[1; 32], GrantKind::Scan, t0).await.unwrap(), None);

    let short = Grant { kind: GrantKind::Code, expires_at: t0 + time::Duration::seconds(1), ..grant };
    store.put_grant(&[3; 32], &short, t0).await.unwrap();
    let later = t0 + time::Duration::seconds(1);
    assert_eq!(store.grant(&[3; 32], GrantKind::Code, later).await.unwrap(), None, "an expired grant was found");
    assert!(!store.replace_grant(&[3; 32], GrantKind::Code, &short.payload, "{}", later).await.unwrap());
    assert_eq!(store.take_grant(&[3; 32], GrantKind::Code, later).await.unwrap(), None, "an expired grant was taken");
}

pub async fn the_same_session_key_keeps_its_issue_time(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let id = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user.id;
    let before = store.session_key(&id, "wx1").await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    store.record_login("wx1", &session("o1", "k1")).await.unwrap();

    assert_eq!(store.session_key(&id, "wx1").await.unwrap().unwrap(), before);
}

pub async fn a_unionid_is_learned_and_then_kept(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let id = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user.id;
    assert_eq!(store.user(&id).await.unwrap().unwrap().unionid, None);

    let with_union = WechatSession { unionid: Some("u1".into()), ..session("o1", "k1") };
    let learned = store.record_login("wx1", &with_union).await.unwrap();
    let without = store.record_login("wx1", &session("o1", "k1")).await.unwrap();

    assert_eq!(learned.user.unionid.as_deref(), Some("u1"));
    assert_eq!(without.user.unionid.as_deref(), Some("u1"), "a later answer without unionid erased it");
    assert_eq!(store.user(&id).await.unwrap().unwrap().unionid.as_deref(), Some("u1"));
}

pub async fn the_same_openid_in_two_apps_is_two_users(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    let a = store.record_login("wxA", &session("o1", "k1")).await.unwrap();
    let b = store.record_login("wxB", &session("o1", "k1")).await.unwrap();

    assert!(a.created && b.created);
    assert_ne!(a.user.id, b.user.id);
}

pub async fn acknowledged_logins_are_there_after_reopening(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let created = store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    store.record_login("wx1", &session("o1", "k2")).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = open(&settings).await.unwrap();

    assert_eq!(store.user(&created.user.id).await.unwrap(), Some(created.user.clone()));
    assert_eq!(store.session_key(&created.user.id, "wx1").await.unwrap().unwrap().session_key.expose(), "k2");
    let again = store.record_login("wx1", &session("o1", "k2")).await.unwrap();
    assert_eq!((again.user.id, again.created), (created.user.id, false));
}

pub async fn a_store_written_by_a_newer_schema_is_refused(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store: Store = open(&settings).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    // Let the backend release the data before changing it behind its back.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let newer = backend.set_newer_schema(&settings);

    let refused = open(&settings).await.err().expect("a newer schema was accepted");

    assert!(
        matches!(refused, StoreError::SchemaTooNew { found, supported } if found == newer && supported < newer),
        "{refused}"
    );
}

pub async fn the_health_check_passes_on_a_working_store(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    store.check().await.unwrap();
    store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    store.check().await.unwrap();
}

pub async fn a_login_whose_unionid_is_known_from_another_app_joins_that_user(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    let a = store.record_login("wxA", &person("oa", "u1")).await.unwrap();
    let b = store.record_login("wxB", &person("ob", "u1")).await.unwrap();

    assert!(a.created && !b.created);
    assert_eq!(b.user.id, a.user.id);
    let ids =
        |u: &wxauth::domain::User| u.identities.iter().map(|i| (i.appid.clone(), i.openid.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&b.user), [("wxA".into(), "oa".into()), ("wxB".into(), "ob".into())]);
    assert_eq!(store.session_key(&a.user.id, "wxB").await.unwrap().unwrap().session_key.expose(), "key-ob");
    assert_eq!(store.user_by_openid("wxB", "ob").await.unwrap().unwrap().id, a.user.id);
    let again = store.record_login("wxB", &person("ob", "u1")).await.unwrap();
    assert_eq!((again.user.id, again.created), (a.user.id, false));
}

pub async fn racing_first_logins_of_one_person_in_two_apps_create_one_user(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = Arc::new(open(&settings).await.unwrap());

    let logins: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let (appid, openid) = if i % 2 == 0 { ("wxA", "oa") } else { ("wxB", "ob") };
            tokio::spawn(async move { store.record_login(appid, &person(openid, "u_race")).await })
        })
        .collect();
    let mut records = Vec::new();
    for login in logins {
        records.push(login.await.unwrap().unwrap());
    }

    assert_eq!(records.iter().filter(|r| r.created).count(), 1, "not exactly one creation");
    assert!(records.iter().all(|r| r.user.id == records[0].user.id), "one person got two users");
    assert_eq!(store.user(&records[0].user.id).await.unwrap().unwrap().identities.len(), 2);
}

pub async fn two_existing_users_that_turn_out_to_share_a_unionid_are_reported_not_merged(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    // Before the apps were tied to one Open Platform account, WeChat sent no unionid.
    let a = store.record_login("wxA", &session("oa", "k")).await.unwrap().user;
    let b = store.record_login("wxB", &session("ob", "k")).await.unwrap().user;

    store.record_login("wxA", &person("oa", "u1")).await.unwrap();
    let later = store.record_login("wxB", &person("ob", "u1")).await.unwrap();

    assert_eq!(later.user.id, b.id, "merged silently");
    assert_eq!(store.user(&a.id).await.unwrap().unwrap().unionid_shared_with, [b.id]);
    assert_eq!(store.user(&b.id).await.unwrap().unwrap().unionid_shared_with, [a.id]);
    // A third app's login with that unionid joins the first holder.
    let c = store.record_login("wxC", &person("oc", "u1")).await.unwrap();
    assert_eq!(c.user.id, a.id);
}

pub async fn a_login_that_may_not_create_finds_nothing_and_stores_nothing(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    assert!(store.login_if_bound("wx1", &session("o1", "k")).await.unwrap().is_none());
    assert!(store.user_by_openid("wx1", "o1").await.unwrap().is_none());
    let created = store.record_login("wx1", &session("o1", "k")).await.unwrap();
    let found = store.login_if_bound("wx1", &session("o1", "k2")).await.unwrap().unwrap();
    assert_eq!((found.user.id, found.created), (created.user.id, false));
}

pub async fn accounts_are_added_listed_changed_and_removed(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    let user = store.add_account(account("alice", HASH)).await.unwrap();
    assert!(matches!(store.add_account(account("alice", HASH)).await, Err(StoreError::AccountExists)));
    store.add_account(account("bob", HASH)).await.unwrap();

    assert_eq!(user.account.as_deref(), Some("alice"));
    assert!(user.identities.is_empty());
    let names: Vec<_> = store.accounts().await.unwrap().into_iter().map(|a| a.username).collect();
    assert_eq!(names, ["alice", "bob"]);
    store.set_password("alice", "$argon2id$new").await.unwrap();
    assert_eq!(store.account("alice").await.unwrap().unwrap().password_hash, "$argon2id$new");
    assert!(matches!(store.set_password("carol", HASH).await, Err(StoreError::NoSuchAccount)));

    store.bind("wx1", &session("o1", "k"), "alice", None, now()).await.unwrap();
    let removed = store.remove_account("alice").await.unwrap();
    assert_eq!(removed.id, user.id);
    assert!(store.account("alice").await.unwrap().is_none());
    assert!(store.user(&user.id).await.unwrap().is_none());
    assert!(store.login_if_bound("wx1", &session("o1", "k")).await.unwrap().is_none(), "binding outlived its user");
    assert!(matches!(store.remove_account("alice").await, Err(StoreError::NoSuchAccount)));
}

/// An account to add, with a password and no phone number.
pub fn account(username: &str, password_hash: &str) -> NewAccount {
    NewAccount { username: username.into(), password_hash: password_hash.into(), phone: None }
}

pub(crate) fn phone_account(username: &str, phone: &str) -> NewAccount {
    NewAccount { phone: Some(phone.into()), ..account(username, "") }
}

pub async fn account_phone_numbers_are_unique_found_by_number_moved_and_added_all_or_none(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let (ann, bea) = ("+8613700000001", "+8613700000002");

    let alice = store.add_account(phone_account("alice", ann)).await.unwrap();
    assert!(matches!(store.add_account(phone_account("bob", ann)).await, Err(StoreError::PhoneTaken)));
    let found = store.account_by_phone(ann).await.unwrap().unwrap();
    assert_eq!((found.username.as_str(), found.user, found.phone.as_deref()), ("alice", alice.id, Some(ann)));
    assert_eq!(found.password_hash, "");
    assert!(store.account_by_phone(bea).await.unwrap().is_none());

    // All or none: a taken name or number, in the store or twice in the batch, adds nothing.
    for batch in [
        vec![phone_account("bob", bea), phone_account("alice", "+8613700000003")],
        vec![phone_account("bob", bea), phone_account("carol", ann)],
        vec![phone_account("bob", bea), phone_account("carol", bea)],
        vec![phone_account("bob", bea), phone_account("bob", "+8613700000003")],
    ] {
        assert!(store.add_accounts(&batch).await.is_err(), "{batch:?}");
        assert!(store.account("bob").await.unwrap().is_none(), "part of a refused batch landed: {batch:?}");
        assert!(store.account_by_phone(bea).await.unwrap().is_none());
    }
    let added = store.add_accounts(&[phone_account("bob", bea), account("carol", HASH)]).await.unwrap();
    assert_eq!(added.len(), 2);
    assert_eq!(store.account_by_phone(bea).await.unwrap().unwrap().user, added[0].id);
    assert_eq!(store.account("carol").await.unwrap().unwrap().phone, None);

    // A number moves only once its holder lets it go.
    assert!(matches!(store.set_account_phone("carol", Some(ann)).await, Err(StoreError::PhoneTaken)));
    store.set_account_phone("alice", None).await.unwrap();
    assert!(store.account_by_phone(ann).await.unwrap().is_none());
    store.set_account_phone("carol", Some(ann)).await.unwrap();
    assert_eq!(store.account_by_phone(ann).await.unwrap().unwrap().username, "carol");
    store.set_account_phone("carol", Some("+8613700000004")).await.unwrap();
    assert!(store.account_by_phone(ann).await.unwrap().is_none(), "the old number still finds carol");
    assert!(matches!(store.set_account_phone("dora", Some(ann)).await, Err(StoreError::NoSuchAccount)));

    // Gone with its account: the number is free again.
    store.remove_account("bob").await.unwrap();
    assert!(store.account_by_phone(bea).await.unwrap().is_none());
    store.add_account(phone_account("dora", bea)).await.unwrap();
    let listed: Vec<_> = store.accounts().await.unwrap().into_iter().map(|a| (a.username, a.phone)).collect();
    assert_eq!(
        listed,
        [
            ("alice".into(), None),
            ("carol".into(), Some("+8613700000004".into())),
            ("dora".into(), Some(bea.to_owned()))
        ]
    );
}

pub async fn a_bind_attaches_the_identity_to_the_account_and_refuses_conflicts(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let alice = store.add_account(account("alice", HASH)).await.unwrap();
    store.add_account(account("bob", HASH)).await.unwrap();

    let bound = store.bind("wx1", &person("o1", "u1"), "alice", None, now()).await.unwrap();
    assert_eq!((bound.user.id, bound.created), (alice.id, false));
    assert_eq!(bound.user.unionid.as_deref(), Some("u1"));
    let login = store.login_if_bound("wx1", &session("o1", "k2")).await.unwrap().unwrap();
    assert_eq!(login.user.id, alice.id);
    // Binding it again to the same account is fine; to another account it is not.
    assert_eq!(store.bind("wx1", &session("o1", "k3"), "alice", None, now()).await.unwrap().user.id, alice.id);
    assert!(matches!(store.bind("wx1", &session("o1", "k"), "bob", None, now()).await, Err(StoreError::AlreadyBound)));
    let other = store.bind("wx1", &session("o2", "k"), "alice", None, now()).await;
    assert!(matches!(other, Err(StoreError::AccountAlreadyBound)), "{other:?}");
    assert!(matches!(
        store.bind("wx1", &session("o3", "k"), "carol", None, now()).await,
        Err(StoreError::NoSuchAccount)
    ));
    // Another app's openid of the same account is welcome.
    let second = store.bind("wx2", &session("o9", "k"), "alice", None, now()).await.unwrap();
    assert_eq!(second.user.identities.len(), 2);
}

pub async fn racing_binds_of_one_account_bind_exactly_one_openid(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = Arc::new(open(&settings).await.unwrap());
    store.add_account(account("alice", HASH)).await.unwrap();

    let binds: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.bind("wx1", &session(&format!("o{i}"), "k"), "alice", None, now()).await })
        })
        .collect();
    let mut results = Vec::new();
    for bind in binds {
        results.push(bind.await.unwrap());
    }

    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, StoreError::AccountAlreadyBound)));
}

/// The service's clock, for operations that take one.
fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub async fn a_ticket_works_until_it_is_spent_or_expires_on_the_clock_it_is_given(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    store.add_account(account("alice", HASH)).await.unwrap();
    // Years before the system's time: only the clock passed in can say these are live.
    let t0 = time::macros::datetime!(2020-01-01 00:00 UTC);
    let ticket =
        BindTicket { appid: "wx1".into(), session: person("o1", "u1"), expires_at: t0 + time::Duration::minutes(5) };
    store.put_ticket(&[1; 32], &ticket, t0).await.unwrap();
    let short = BindTicket { expires_at: t0 + time::Duration::seconds(1), ..ticket.clone() };
    store.put_ticket(&[2; 32], &short, t0).await.unwrap();
    let later = t0 + time::Duration::seconds(2);

    let found = store.ticket(&[1; 32], later).await.unwrap().expect("a live ticket was not found");
    assert_eq!((found.appid.as_str(), found.session.openid.as_str()), ("wx1", "o1"));
    assert_eq!(found.session.session_key.as_ref().map(SessionKey::expose), Some("key-o1"));
    assert!(store.ticket(&[2; 32], t0).await.unwrap().is_some(), "a ticket was refused before it expired");
    assert!(store.ticket(&[2; 32], later).await.unwrap().is_none(), "an expired ticket was found");
    assert!(store.ticket(&[3; 32], later).await.unwrap().is_none());
    assert!(store.ticket(&[1; 32], t0 + time::Duration::minutes(5)).await.unwrap().is_none(), "live at its expiry");

    store.bind("wx1", &found.session, "alice", Some(&[1; 32]), later).await.unwrap();
    assert!(store.ticket(&[1; 32], later).await.unwrap().is_none(), "a spent ticket was found");
    let again = store.bind("wx1", &found.session, "alice", Some(&[1; 32]), later).await;
    assert!(matches!(again, Err(StoreError::TicketNotFound)), "{again:?}");
    let late = store.bind("wx1", &short.session, "alice", Some(&[2; 32]), later).await;
    assert!(matches!(late, Err(StoreError::TicketNotFound)), "{late:?}");
}

pub async fn unbinding_removes_the_identities_and_the_unionid_link_but_keeps_the_account(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let alice = store.add_account(account("alice", HASH)).await.unwrap();
    store.bind("wxA", &person("oa", "u1"), "alice", None, now()).await.unwrap();
    store.record_login("wxB", &person("ob", "u1")).await.unwrap();

    let removed = store.unbind(&alice.id).await.unwrap();

    assert_eq!(removed.len(), 2);
    let user = store.user(&alice.id).await.unwrap().unwrap();
    assert!(user.identities.is_empty() && user.unionid.is_none(), "{user:?}");
    assert!(store.account("alice").await.unwrap().is_some());
    assert!(store.login_if_bound("wxA", &person("oa", "u1")).await.unwrap().is_none());
    assert!(store.login_if_bound("wxB", &person("ob", "u1")).await.unwrap().is_none(), "the unionid still linked");
    assert!(store.unbind(&UserId::new()).await.unwrap().is_empty());
}

pub(crate) fn phone(number: &str) -> Dated<PhoneNumber> {
    Dated {
        value: PhoneNumber {
            phone_number: format!("+86{number}"),
            pure_phone_number: number.into(),
            country_code: "86".into(),
        },
        at: OffsetDateTime::now_utc(),
    }
}

pub async fn a_phone_number_and_a_profile_are_kept_apart_and_survive_logins_and_reopening(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let user = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user;
    assert_eq!(store.details(&user.id).await.unwrap(), Details::default());

    store.set_phone(&user.id, phone("13800138000")).await.unwrap();
    let profile = Dated {
        value: Profile { nickname: "Band".into(), gender: 1, ..Profile::default() },
        at: OffsetDateTime::now_utc(),
    };
    let both = store.set_profile(&user.id, profile.clone()).await.unwrap();
    store.record_login("wx1", &session("o1", "k2")).await.unwrap();
    let newer = store.set_phone(&user.id, phone("13900139000")).await.unwrap();
    drop(store);

    let store = open(&settings).await.unwrap();
    let details = store.details(&user.id).await.unwrap();
    assert_eq!(details, newer, "the acknowledged details are not what was reopened");
    assert_eq!(
        details.phone.unwrap().value.pure_phone_number,
        "13900139000",
        "the newer phone did not replace the older"
    );
    assert_eq!(details.profile, Some(profile), "setting the phone lost the profile");
    assert_eq!(both.phone.unwrap().value.pure_phone_number, "13800138000");
}

pub async fn users_are_found_by_the_phone_number_they_hold_now_and_no_other(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let ids = |users: Vec<wxauth::domain::User>| users.into_iter().map(|u| u.id).collect::<Vec<_>>();
    let amy = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user.id;
    let ben = store.record_login("wx1", &session("o2", "k2")).await.unwrap().user.id;
    let cat = store.add_account(account("cat", HASH)).await.unwrap().id;
    assert!(store.users_by_phone("+8613800138000").await.unwrap().is_empty(), "found before anyone verified it");

    store.set_phone(&amy, phone("13800138000")).await.unwrap();
    store.set_phone(&ben, phone("13900139000")).await.unwrap();
    store.set_phone(&cat, phone("13800138000")).await.unwrap();
    let mut both = vec![amy, cat];
    both.sort_by_key(|id| *id.as_bytes());
    let mut found = ids(store.users_by_phone("+8613800138000").await.unwrap());
    found.sort_by_key(|id| *id.as_bytes());
    assert_eq!(found, both, "two people who verified one number");

    // A new number replaces the old one in the index; removal takes it out.
    store.set_phone(&amy, phone("13700137000")).await.unwrap();
    assert_eq!(ids(store.users_by_phone("+8613800138000").await.unwrap()), [cat], "the old number still finds amy");
    assert_eq!(ids(store.users_by_phone("+8613700137000").await.unwrap()), [amy]);
    store.remove_account("cat").await.unwrap();
    assert!(store.users_by_phone("+8613800138000").await.unwrap().is_empty(), "a removed user is found");
    drop(store);

    let store = open(&settings).await.unwrap();
    assert_eq!(ids(store.users_by_phone("+8613900139000").await.unwrap()), [ben], "lost by reopening");
    assert!(store.users_by_phone("13900139000").await.unwrap().is_empty(), "found by a number not normalised");
}

pub async fn details_are_refused_for_a_missing_user_and_removed_with_its_account(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let nobody = UserId::new();
    assert!(matches!(store.set_phone(&nobody, phone("13800138000")).await, Err(StoreError::NoSuchUser)));
    assert_eq!(store.details(&nobody).await.unwrap(), Details::default());

    let user = store.add_account(account("alice", HASH)).await.unwrap();
    store.set_phone(&user.id, phone("13800138000")).await.unwrap();
    store.remove_account("alice").await.unwrap();
    assert_eq!(store.details(&user.id).await.unwrap(), Details::default(), "details outlived their user");
}

pub async fn controls_are_kept_changed_given_to_new_users_and_refused_for_a_missing_user(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let staff = vec!["staff".to_owned()];
    let user = store.record_login_with("wx1", &session("o1", "k1"), &staff).await.unwrap().user;
    assert_eq!(user.controls.roles, staff, "a new user gets the roles it is created with");
    let again = store.record_login_with("wx1", &session("o1", "k2"), &["other".to_owned()]).await.unwrap().user;
    assert_eq!(again.controls.roles, staff, "a returning login does not change roles");
    let at = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let ban = Ban::new("spam", Some(at + time::Duration::days(7)), at).unwrap();
    let claims = CustomClaims::parse(r#"{"tier":"gold","n":[1,2]}"#).unwrap();

    store.change_controls(&user.id, |c| c.ban = Some(ban.clone())).await.unwrap();
    let changed = store.change_controls(&user.id, |c| c.claims = claims.clone()).await.unwrap();
    drop(store);

    let store = open(&settings).await.unwrap();
    let expected = Controls { roles: staff.clone(), claims: claims.clone(), ban: Some(ban), deletion: None };
    assert_eq!(changed.controls, expected, "a change kept the other controls");
    assert_eq!(store.user(&user.id).await.unwrap().unwrap().controls, expected, "not what was reopened");
    let returning = store.record_login("wx1", &session("o1", "k3")).await.unwrap().user;
    assert_eq!(returning.controls, expected, "a login lost the controls");
    let lifted = store.change_controls(&user.id, |c| c.ban = None).await.unwrap();
    assert_eq!(lifted.controls.ban, None);
    let nobody = UserId::new();
    assert!(matches!(store.change_controls(&nobody, |c| c.roles.clear()).await, Err(StoreError::NoSuchUser)));
}

pub async fn users_are_listed_in_id_order_page_by_page_and_found_by_unionid(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    assert!(store.users_after(None, 10).await.unwrap().is_empty(), "an empty store listed users");

    let mut ids = Vec::new();
    for i in 0..7 {
        let login = store.record_login("wx1", &person(&format!("o{i}"), &format!("u{i}"))).await.unwrap();
        ids.push(login.user.id);
    }
    // A second identity must not list its user twice (PostgreSQL joins identities).
    store.record_login("wx2", &person("o0-in-wx2", "u0")).await.unwrap();
    ids.sort_by_key(|id| *id.as_bytes());

    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.users_after(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3, "a page longer than its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        listed.extend(page.iter().map(|u| u.id));
    }
    assert_eq!(listed, ids, "pages are not every user once, in id order");
    let first = store.users_after(None, 1).await.unwrap();
    assert_eq!(first[0].id, ids[0]);
    let both = store.user(&ids[0]).await.unwrap().unwrap();
    let paged = store.users_after(None, 10).await.unwrap().into_iter().find(|u| u.id == both.id).unwrap();
    assert_eq!(paged, both, "a listed user differs from the same user read alone");

    let found = store.user_by_unionid("u3").await.unwrap().expect("no user for a known unionid");
    assert_eq!(found.unionid.as_deref(), Some("u3"));
    let joined = store.user_by_unionid("u0").await.unwrap().unwrap();
    assert_eq!(joined.identities.len(), 2, "{joined:?}");
    assert!(store.user_by_unionid("nobody").await.unwrap().is_none());
}

pub async fn admin_tokens_are_kept_by_id_unique_by_name_and_stay_revoked(backend: &dyn Backend) {
    use wxauth::store::{AdminRole, AdminToken};
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let at = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let token = |id: u8, name: &str, role| AdminToken {
        id: [id; 16],
        name: name.into(),
        role,
        secret_hash: [id; 32],
        created_at: at,
        revoked_at: None,
    };
    let (support, ops) = (token(1, "support", AdminRole::Read), token(2, "ops", AdminRole::Write));
    store.add_admin_token(&support).await.unwrap();
    store.add_admin_token(&ops).await.unwrap();
    let same_name = token(3, "ops", AdminRole::Read);
    assert!(matches!(store.add_admin_token(&same_name).await, Err(StoreError::AdminTokenExists)));
    drop(store);

    let store = open(&settings).await.unwrap();
    assert_eq!(store.admin_token(&[1; 16]).await.unwrap(), Some(support.clone()), "not what was reopened");
    assert_eq!(store.admin_token(&[3; 16]).await.unwrap(), None, "the refused token was kept");
    assert_eq!(store.admin_tokens().await.unwrap(), vec![ops.clone(), support.clone()], "by name");
    let revoked = store.revoke_admin_token("support", at + time::Duration::hours(1)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at + time::Duration::hours(1)));
    let again = store.revoke_admin_token("support", at + time::Duration::hours(2)).await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at, "a second revoke moved the time");
    drop(store);

    let store = open(&settings).await.unwrap();
    assert_eq!(store.admin_token(&[1; 16]).await.unwrap().unwrap().revoked_at, revoked.revoked_at);
    assert_eq!(store.admin_token(&[2; 16]).await.unwrap(), Some(ops), "the other token was touched");
    assert!(matches!(store.revoke_admin_token("nobody", at).await, Err(StoreError::NoSuchAdminToken)));
}
