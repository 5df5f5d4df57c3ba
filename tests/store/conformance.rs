//! Cases of the store conformance suite. Each takes a [`Backend`] and uses only the public
//! `Store` interface.

use std::sync::Arc;

use wxauth::{
    domain::{SessionKey, UserId, WechatSession},
    store::{LAST_LOGIN_GRANULARITY, SCHEMA_VERSION, Store, StoreError},
};

use crate::{Backend, open};

fn session(openid: &str, key: &str) -> WechatSession {
    WechatSession { openid: openid.into(), unionid: None, session_key: SessionKey::new(key.into()) }
}

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
    assert_eq!(again.user.openid, "o1");
    assert_eq!(again.user.appid, "wx1");
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
    assert_eq!(store.session_key(&UserId::new()).await.unwrap(), None);
}

pub async fn a_new_session_key_replaces_the_old_one_at_once(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let id = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user.id;
    assert_eq!(store.session_key(&id).await.unwrap().unwrap().session_key.expose(), "k1");

    store.record_login("wx1", &session("o1", "k2")).await.unwrap();

    // The very next call: a mini-program decrypts right after logging in.
    assert_eq!(store.session_key(&id).await.unwrap().unwrap().session_key.expose(), "k2");
}

pub async fn the_same_session_key_keeps_its_issue_time(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let id = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user.id;
    let before = store.session_key(&id).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    store.record_login("wx1", &session("o1", "k1")).await.unwrap();

    assert_eq!(store.session_key(&id).await.unwrap().unwrap(), before);
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
    assert_eq!(store.session_key(&created.user.id).await.unwrap().unwrap().session_key.expose(), "k2");
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
    backend.set_schema_version(&settings, SCHEMA_VERSION + 1);

    let refused = open(&settings).await.err().expect("a newer schema was accepted");

    assert!(matches!(refused, StoreError::SchemaTooNew { found } if found == SCHEMA_VERSION + 1), "{refused}");
}

pub async fn the_health_check_passes_on_a_working_store(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    store.check().await.unwrap();
    store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    store.check().await.unwrap();
}
