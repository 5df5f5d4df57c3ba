//! What only the sled backend can show: which logins wait for the disk. The behaviour every
//! backend shares is in the conformance suite (`tests/store`).

use std::time::Duration as StdDuration;

use super::*;
use crate::domain::{SessionKey, User};

async fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    let store = SledStore::open(&settings).await.unwrap();
    (dir, store)
}

fn session(openid: &str, key: &str) -> WechatSession {
    WechatSession { openid: openid.into(), unionid: None, session_key: SessionKey::new(key.into()) }
}

const PATIENCE: StdDuration = StdDuration::from_millis(300);

#[tokio::test]
async fn a_returning_login_answers_while_flushes_are_stalled_and_a_first_login_does_not() {
    let (_dir, store) = open().await;
    let first = store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    let paused = store.pause_commits();

    let returning = tokio::time::timeout(PATIENCE, store.record_login("wx1", &session("o1", "k2")))
        .await
        .expect("a returning login waited for a flush")
        .unwrap();
    assert!(!returning.created);
    assert_eq!(returning.user.id, first.user.id);
    let key = store.session_key(&first.user.id).unwrap().unwrap();
    assert_eq!(key.session_key.expose(), "k2", "the new key is not visible at once");

    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.record_login("wx1", &session("o2", "k")).await }
    });
    tokio::time::sleep(PATIENCE).await;
    assert!(!pending.is_finished(), "a first login answered before its flush");
    drop(paused);
    assert!(pending.await.unwrap().unwrap().created);
}

#[tokio::test]
async fn a_login_right_after_a_creation_waits_until_that_creation_is_durable() {
    let (_dir, store) = open().await;
    let paused = store.pause_commits();
    let spawn_login = |key: &'static str| {
        let store = store.clone();
        tokio::spawn(async move { store.record_login("wx1", &session("o1", key)).await })
    };
    let creating = spawn_login("k1");
    tokio::time::sleep(PATIENCE).await;
    let returning = spawn_login("k2");
    tokio::time::sleep(PATIENCE).await;
    assert!(!returning.is_finished(), "answered with a user that is not yet on disk");
    drop(paused);
    let (created, returned) = (creating.await.unwrap().unwrap(), returning.await.unwrap().unwrap());
    assert!(created.created && !returned.created);
    assert_eq!(created.user.id, returned.user.id);
}

#[tokio::test]
async fn a_first_login_is_fdatasynced_and_a_returning_one_is_not() {
    let (_dir, store) = open().await;
    store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    let after_first = store.commit.stats();
    assert!(after_first.flushes >= 1 && after_first.fsyncs >= 1, "{after_first:?}");

    for key in ["k2", "k3", "k4"] {
        store.record_login("wx1", &session("o1", key)).await.unwrap();
    }
    let after_returning = store.commit.stats();
    assert_eq!(after_returning.fsyncs, after_first.fsyncs, "returning logins synced");
}

#[tokio::test]
async fn a_schema_1_store_is_migrated_with_its_users_bindings_and_session_keys() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    // The first release's layout, written as it wrote it.
    let t0 = OffsetDateTime::now_utc();
    let user = User {
        id: UserId::new(),
        appid: "wx1".into(),
        openid: "o1".into(),
        unionid: Some("u1".into()),
        created_at: t0,
        last_login_at: t0,
    };
    {
        let db = ::sled::open(&settings.data_dir).unwrap();
        db.open_tree("meta").unwrap().insert(SCHEMA_KEY, &1u32.to_be_bytes()[..]).unwrap();
        let id = &user.id.as_bytes()[..];
        db.open_tree("users").unwrap().insert(id, serde_json::to_vec(&user).unwrap()).unwrap();
        let key = StoredSessionKey { session_key: SessionKey::new("k1".into()), issued_at: t0 };
        db.open_tree("session_keys").unwrap().insert(id, serde_json::to_vec(&key).unwrap()).unwrap();
        db.open_tree("openids").unwrap().insert("wx1:o1", id).unwrap();
        db.flush().unwrap();
    }

    let store = SledStore::open(&settings).await.unwrap();

    assert_eq!(store.user(&user.id).unwrap(), Some(user.clone()));
    assert_eq!(store.session_key(&user.id).unwrap().unwrap().session_key.expose(), "k1");
    let again = store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    assert_eq!((again.user.id, again.created), (user.id, false));
    assert_eq!(decode_version(store.meta.get(SCHEMA_KEY).unwrap().as_deref()).unwrap(), SCHEMA_VERSION);
}
