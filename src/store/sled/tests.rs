//! What only the sled backend can show: which logins wait for the disk. The behaviour every
//! backend shares is in the conformance suite (`tests/store`).

use std::time::Duration as StdDuration;

use std::sync::atomic::Ordering;

use time::OffsetDateTime;

use super::{
    meta::IMPORTING_KEY,
    record::{AccountRecord, DetailsRecord, IdentityRecord, TicketRecord},
    *,
};
use crate::{
    config::SledSettings,
    domain::{Identity, SessionKey, WechatSession},
    store::{
        BindTicket, LoginRecord, StoredSessionKey,
        backend::{Accounts, Backend, Deletions, Links, RefreshTokens, Tickets, Transfer, Users},
        export::Record,
        sealed::Sealer,
        tickets::SWEEP_SECS as TICKET_SWEEP_SECS,
    },
};

impl SledStore {
    async fn record_login(&self, appid: &str, session: &WechatSession) -> Result<LoginRecord, StoreError> {
        self.login(appid, session, Some(&[])).await.map(Option::unwrap)
    }
}

async fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    let store = SledStore::open(&settings, Sealer::ephemeral().unwrap()).await.unwrap();
    (dir, store)
}

fn session(openid: &str, key: &str) -> WechatSession {
    WechatSession { openid: openid.into(), unionid: None, session_key: Some(SessionKey::new(key.into())) }
}

const PATIENCE: StdDuration = StdDuration::from_millis(300);

/// Opens a store a test has just written with `::sled` directly: sled releases its file
/// lock from a background thread some time after the last handle is dropped.
async fn open_once_released(settings: &SledSettings) -> Result<SledStore, StoreError> {
    open_released_with(settings, Sealer::ephemeral().unwrap()).await
}

/// [`open_once_released`] with the sealing key the test wrote with.
async fn open_released_with(settings: &SledSettings, sealer: Sealer) -> Result<SledStore, StoreError> {
    for _ in 0..100 {
        match SledStore::open(settings, sealer.clone()).await {
            Err(StoreError::Database(e)) if e.contains("could not acquire lock") => {
                tokio::time::sleep(StdDuration::from_millis(20)).await;
            }
            other => return other,
        }
    }
    SledStore::open(settings, sealer).await
}

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
    let key = store.session_key(&first.user.id, "wx1").await.unwrap().unwrap();
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
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let id = UserId::new();
    {
        let db = ::sled::open(&settings.data_dir).unwrap();
        db.open_tree("meta").unwrap().insert(SCHEMA_KEY, &1u32.to_be_bytes()[..]).unwrap();
        let user = serde_json::json!({
            "id": id.to_string(), "appid": "wx1", "openid": "o1", "unionid": "u1",
            "created_at": t0.format(&time::format_description::well_known::Rfc3339).unwrap(),
            "last_login_at": t0.format(&time::format_description::well_known::Rfc3339).unwrap(),
        });
        db.open_tree("users").unwrap().insert(id.as_bytes(), serde_json::to_vec(&user).unwrap()).unwrap();
        let key = StoredSessionKey { session_key: SessionKey::new("k1".into()), issued_at: t0 };
        db.open_tree("session_keys").unwrap().insert(id.as_bytes(), serde_json::to_vec(&key).unwrap()).unwrap();
        db.open_tree("openids").unwrap().insert("wx1:o1", &id.as_bytes()[..]).unwrap();
        db.flush().unwrap();
    }

    let store = SledStore::open(&settings, Sealer::ephemeral().unwrap()).await.unwrap();

    let user = store.user(&id).await.unwrap().unwrap();
    assert_eq!(user.identities, [Identity { appid: "wx1".into(), openid: "o1".into() }]);
    assert_eq!((user.unionid.as_deref(), user.created_at), (Some("u1"), t0));
    assert_eq!(store.session_key(&id, "wx1").await.unwrap().unwrap().session_key.expose(), "k1");
    let again = store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    assert_eq!((again.user.id, again.created), (id, false));
    assert_eq!(decode_version(store.meta.get(SCHEMA_KEY).unwrap().as_deref()).unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_schema_2_store_is_migrated_and_users_sharing_a_unionid_are_reported_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    let t0 = OffsetDateTime::now_utc();
    let (alice, bob, carol, dave) = (UserId::new(), UserId::new(), UserId::new(), UserId::new());
    {
        // The previous release's layout: one record per openid, whatever the unionid.
        let db = ::sled::open(&settings.data_dir).unwrap();
        db.open_tree("meta").unwrap().insert(SCHEMA_KEY, &2u32.to_be_bytes()[..]).unwrap();
        let (records, openids) = (db.open_tree(V2_RECORDS).unwrap(), db.open_tree("openids").unwrap());
        for (id, appid, openid, unionid) in [
            (alice, "wxa", "oa", Some("u1")),
            (bob, "wxb", "ob", Some("u1")),
            (carol, "wxa", "oc", None),
            (dave, "wxc", "od", Some("u1")),
        ] {
            let record = legacy::V2Record {
                appid: appid.into(),
                openid: openid.into(),
                unionid: unionid.map(Into::into),
                created_at: t0.unix_timestamp_nanos(),
                last_login_at: t0.unix_timestamp_nanos(),
                session_key: Some((format!("key-{openid}"), t0.unix_timestamp_nanos())),
            };
            records.insert(id.as_bytes(), record.encode()).unwrap();
            openids.insert(format!("{appid}:{openid}"), &id.as_bytes()[..]).unwrap();
        }
        db.flush().unwrap();
    }

    let store = SledStore::open(&settings, Sealer::ephemeral().unwrap()).await.unwrap();

    let a = store.user(&alice).await.unwrap().unwrap();
    assert_eq!(a.identities, [Identity { appid: "wxa".into(), openid: "oa".into() }]);
    assert_eq!(store.session_key(&carol, "wxa").await.unwrap().unwrap().session_key.expose(), "key-oc");
    assert_eq!(a.unionid_shared_with, [bob, dave], "the first holder of u1 does not know the others");
    assert_eq!(store.user(&bob).await.unwrap().unwrap().unionid_shared_with, [alice]);
    assert_eq!(store.user(&dave).await.unwrap().unwrap().unionid_shared_with, [alice]);
    assert!(store.user(&carol).await.unwrap().unwrap().unionid_shared_with.is_empty());
    // Bindings keep working, and a third app's login with u1 joins the user that holds it.
    assert_eq!(store.record_login("wxb", &session("ob", "key-ob")).await.unwrap().user.id, bob);
    let mut third = session("oz", "kz");
    third.unionid = Some("u1".into());
    let joined = store.record_login("wxz", &third).await.unwrap();
    assert_eq!((joined.user.id, joined.created), (alice, false));
    assert_eq!(decode_version(store.meta.get(SCHEMA_KEY).unwrap().as_deref()).unwrap(), SCHEMA_VERSION);
    assert!(!store.records.is_empty() && store.meta.get(SCHEMA_KEY).unwrap().is_some());
}

#[tokio::test]
async fn a_binding_left_by_an_interrupted_unbind_is_dropped_instead_of_failing_every_login() {
    let (_dir, store) = open().await;
    let first = store.record_login("wx1", &session("o1", "k1")).await.unwrap();
    // The first write of an unbind (the record loses its identities), then a crash before
    // the binding was removed.
    store
        .update(first.user.id.as_bytes(), |r| {
            r.identities.clear();
            Ok(())
        })
        .unwrap();
    let orphan = store.record_login("wx1", &session("o2", "k1")).await.unwrap();
    store.records.remove(orphan.user.id.as_bytes()).unwrap();

    let not_bound = store.login("wx1", &session("o1", "k2"), None).await.unwrap();
    let recreated = store.record_login("wx1", &session("o2", "k2")).await.unwrap();

    assert!(not_bound.is_none());
    assert!(store.user_by_openid("wx1", "o1").await.unwrap().is_none(), "the stale binding still names a user");
    assert!(recreated.created && recreated.user.id != orphan.user.id);
}

#[tokio::test]
async fn a_unionid_link_to_a_vanished_user_is_ignored_and_an_unreadable_record_is_an_error() {
    let (_dir, store) = open().await;
    let person = |openid: &str| WechatSession { unionid: Some("u1".into()), ..session(openid, "k") };
    let gone = store.record_login("wx1", &person("o1")).await.unwrap().user.id;
    store.records.remove(gone.as_bytes()).unwrap();

    let fresh = store.record_login("wx2", &person("o2")).await.unwrap();

    assert!(fresh.created && fresh.user.id != gone);
    // Garbage is not mistaken for a missing user: nothing is dropped or created over it.
    store.records.insert(fresh.user.id.as_bytes(), &b"\xff\xff\xff"[..]).unwrap();
    for (appid, openid) in [("wx2", "o2"), ("wx3", "o3")] {
        let err = store.record_login(appid, &person(openid)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{appid}: {err:?}");
    }
}

#[tokio::test]
async fn expired_tickets_are_swept_at_most_once_a_minute() {
    let (_dir, store) = open().await;
    let now = OffsetDateTime::now_utc();
    let ticket = |expires_at| BindTicket { appid: "wx1".into(), session: session("o1", "k"), expires_at };
    let expired = |store: &SledStore, id: u8| {
        let record = TicketRecord {
            appid: "wx1".into(),
            openid: "o1".into(),
            unionid: None,
            session_key: "k".into(),
            expires_at: (now - time::Duration::seconds(1)).unix_timestamp_nanos(),
        };
        store.tickets.insert([id; 32], record.encode().unwrap()).unwrap();
    };
    let live = now + time::Duration::minutes(5);

    expired(&store, 1);
    store.put_ticket(&[2; 32], &ticket(live), now).await.unwrap();
    assert_eq!(store.tickets.len(), 1, "the first ticket of a run sweeps");

    expired(&store, 3);
    store.put_ticket(&[4; 32], &ticket(live), now).await.unwrap();
    assert_eq!(store.tickets.len(), 3, "swept again within the minute");

    store.swept_at.store(now.unix_timestamp() - TICKET_SWEEP_SECS, Ordering::Relaxed);
    store.put_ticket(&[5; 32], &ticket(live), now).await.unwrap();
    assert_eq!(store.tickets.len(), 3, "a minute later, the expired ticket is gone and the live ones stay");
    assert!(store.tickets.get([3; 32]).unwrap().is_none());
}

#[tokio::test]
async fn a_schema_3_store_gets_its_session_keys_sealed_and_a_lost_key_only_loses_them() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    let now = OffsetDateTime::now_utc();
    let id = UserId::new();
    {
        // The previous release's layout: schema 3, session keys in plaintext.
        let db = ::sled::open(&settings.data_dir).unwrap();
        db.open_tree("meta").unwrap().insert(SCHEMA_KEY, &3u32.to_be_bytes()[..]).unwrap();
        let mut record = UserRecord::empty(now);
        let plain = ("tiihtNczf5v6AKRyjwEUhQ==".to_owned(), now.unix_timestamp_nanos());
        record.identities.push(IdentityRecord::new("wx1", "o1", Some(plain)));
        db.open_tree(RECORDS).unwrap().insert(id.as_bytes(), record.encode().unwrap()).unwrap();
        db.open_tree("openids").unwrap().insert("wx1:o1", &id.as_bytes()[..]).unwrap();
        let ticket = TicketRecord {
            appid: "wx1".into(),
            openid: "o2".into(),
            unionid: None,
            session_key: "plaintextkey0000000000==".into(),
            expires_at: (now + time::Duration::minutes(5)).unix_timestamp_nanos(),
        };
        db.open_tree("bind_tickets").unwrap().insert([7; 32], ticket.encode().unwrap()).unwrap();
        db.flush().unwrap();
    }
    let sealer = Sealer::ephemeral().unwrap();

    let store = SledStore::open(&settings, sealer.clone()).await.unwrap();

    assert_eq!(store.session_key(&id, "wx1").await.unwrap().unwrap().session_key.expose(), "tiihtNczf5v6AKRyjwEUhQ==");
    let raw = store.records.get(id.as_bytes()).unwrap().unwrap();
    assert!(!raw.windows(8).any(|w| w == b"tiihtNcz"), "the key is still in plaintext");
    assert!(store.tickets.is_empty(), "a plaintext ticket survived");
    assert_eq!(decode_version(store.meta.get(SCHEMA_KEY).unwrap().as_deref()).unwrap(), SCHEMA_VERSION);
    store.close().await.unwrap();
    drop(store);

    // The key file was lost: the keys do not open, and logging in again stores a new one.
    let mut reopened = None;
    for _ in 0..100 {
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        if let Ok(store) = SledStore::open(&settings, Sealer::ephemeral().unwrap()).await {
            reopened = Some(store);
            break;
        }
    }
    let store = reopened.expect("the store did not reopen");
    assert_eq!(store.session_key(&id, "wx1").await.unwrap(), None);
    let again = store.record_login("wx1", &session("o1", "k2")).await.unwrap();
    assert_eq!(again.user.id, id);
    assert_eq!(store.session_key(&id, "wx1").await.unwrap().unwrap().session_key.expose(), "k2");
}

#[tokio::test]
async fn a_schema_5_store_keeps_its_refresh_families_as_sessions_even_when_the_migration_was_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    let now = OffsetDateTime::now_utc();
    let (id, old_family, new_family) = (UserId::new(), [1u8; 16], [2u8; 16]);
    let (started, expires) =
        (now.unix_timestamp_nanos() - 1_000_000_000, (now + time::Duration::days(1)).unix_timestamp_nanos());
    {
        let db = ::sled::open(&settings.data_dir).unwrap();
        db.open_tree("meta").unwrap().insert(SCHEMA_KEY, &5u32.to_be_bytes()[..]).unwrap();
        // A user of schema 5: no roles, claims or ban.
        let old_user = legacy::V3UserRecord {
            identities: Vec::new(),
            unionid: None,
            account: Some("ann".into()),
            unionid_shared_with: Vec::new(),
            created_at: started,
            last_login_at: started,
        };
        db.open_tree(RECORDS).unwrap().insert(id.as_bytes(), postcard::to_stdvec(&old_user).unwrap()).unwrap();
        let families = db.open_tree("refresh_families").unwrap();
        let old = || legacy::V5FamilyRecord {
            verifier_hash: [9; 32],
            generation: 3,
            started,
            user: *id.as_bytes(),
            appid: "wx1".into(),
            openid: "o1".into(),
            expires_at: expires,
            revoked: false,
        };
        families.insert([&id.as_bytes()[..], &old_family].concat(), postcard::to_stdvec(&old()).unwrap()).unwrap();
        // A family the interrupted migration had rewritten already.
        let rewritten = refresh::FamilyRecord::from_v5(old());
        families.insert([&id.as_bytes()[..], &new_family].concat(), postcard::to_stdvec(&rewritten).unwrap()).unwrap();
        db.flush().unwrap();
    }

    let store = open_once_released(&settings).await.unwrap();

    let sessions = store.sessions(&id, now).await.unwrap();
    assert_eq!(sessions.iter().map(|s| s.family).collect::<Vec<_>>(), [new_family, old_family], "newest first");
    for session in &sessions {
        assert_eq!((session.appid.as_str(), session.created_at.unix_timestamp_nanos()), ("wx1", started));
        assert_eq!(session.last_refresh_at, session.created_at, "no refresh known: the start stands for it");
        assert_eq!(session.origin, crate::store::Origin::default());
    }
    assert_eq!(decode_version(store.meta.get(SCHEMA_KEY).unwrap().as_deref()).unwrap(), SCHEMA_VERSION);
    let user = store.user(&id).await.unwrap().unwrap();
    assert_eq!((user.account.as_deref(), user.controls), (Some("ann"), crate::domain::Controls::default()));
    let changed = store.change_controls(&id, |c| c.roles = vec!["staff".into()]).await.unwrap();
    assert_eq!(store.user(&id).await.unwrap().unwrap(), changed, "rewritten in the new layout");
}

#[test]
fn a_schema_version_is_four_big_endian_bytes_and_anything_else_is_corrupt() {
    assert_eq!(decode_version(Some(&5u32.to_be_bytes())).unwrap(), 5);
    assert_eq!(decode_version(Some(&[0, 0, 1, 0])).unwrap(), 256);
    for raw in [None, Some(&b""[..]), Some(&[0, 0, 4][..]), Some(&[0, 0, 0, 4, 0][..]), Some(&b"4"[..])] {
        assert!(matches!(decode_version(raw), Err(StoreError::Corrupt(_))), "{raw:?}");
    }
}

#[tokio::test]
async fn a_data_directory_of_a_newer_or_unreadable_schema_is_refused_at_open() {
    // (case, the stored version, whether it reads as a newer schema rather than corrupt)
    let cases = [
        ("newer", (SCHEMA_VERSION + 1).to_be_bytes().to_vec(), true),
        ("three bytes", vec![0, 0, 4], false),
        ("text", b"4".to_vec(), false),
        ("empty", Vec::new(), false),
    ];
    for (case, version, newer) in cases {
        let dir = tempfile::tempdir().unwrap();
        let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
        {
            let db = ::sled::open(&settings.data_dir).unwrap();
            db.open_tree("meta").unwrap().insert(SCHEMA_KEY, version).unwrap();
            db.flush().unwrap();
        }

        let refused = open_once_released(&settings).await.err();

        let refused = refused.unwrap_or_else(|| panic!("{case}: the store opened"));
        let expected = match &refused {
            StoreError::SchemaTooNew { found, .. } => newer && *found == SCHEMA_VERSION + 1,
            StoreError::Corrupt(what) => !newer && what == "schema_version",
            _ => false,
        };
        assert!(expected, "{case}: {refused}");
    }
}

#[tokio::test]
async fn the_health_check_fails_while_flushes_fail_and_recovers_by_itself() {
    let (_dir, store) = open().await;
    store.check().await.unwrap();
    store.fail_commits(true);

    assert!(store.record_login("wx1", &session("o1", "k1")).await.is_err(), "answered without its flush");
    assert!(store.check().await.is_err(), "healthy while flushes fail");
    assert!(store.check().await.is_err(), "healthy at the second look");

    store.fail_commits(false);
    store.check().await.expect("the check did not flush again to see the disk recover");
    assert!(store.commit.healthy());
}

#[tokio::test]
async fn an_export_leaves_out_what_an_interrupted_removal_left_behind() {
    let (_dir, store) = open().await;
    let kept = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user;
    // What a crash between the steps of a removal leaves: links to a user that is gone.
    let gone = [7u8; 16];
    store.unionids.insert("u_gone", &gone).unwrap();
    let account = AccountRecord { user: gone, password_hash: "$argon2id$x".into(), created_at: 0 };
    store.accounts.insert("ghost", account.encode().unwrap()).unwrap();
    store.details.insert(gone, &b"s1.sealed"[..]).unwrap();

    let mut records = Vec::new();
    let skipped = store
        .export(&mut |r| {
            records.push(r);
            Ok(())
        })
        .await
        .unwrap();

    assert_eq!(skipped, 3);
    let users: Vec<_> = records.iter().filter(|r| matches!(r, Record::User { .. })).collect::<Vec<_>>();
    assert_eq!(users.len(), 1, "{records:?}");
    assert!(matches!(users[0], Record::User { id, .. } if id.as_bytes() == kept.id.as_bytes()));
    assert!(
        !records.iter().any(|r| matches!(r, Record::Unionid { .. } | Record::Account { .. } | Record::Details { .. })),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_store_whose_import_did_not_finish_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    {
        // As `import` leaves it when the process dies before its end.
        let db = ::sled::open(&settings.data_dir).unwrap();
        db.open_tree("meta").unwrap().insert(IMPORTING_KEY, &[1u8][..]).unwrap();
        db.flush().unwrap();
    }

    let refused = open_once_released(&settings).await.err().unwrap();
    assert!(
        refused.to_string().contains("did not finish") && refused.to_string().contains("store import"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_import_is_marked_under_way_until_it_ends() {
    let (_dir, store) = open().await;
    let watcher = store.clone();
    let mut records = (0..2).map(|i| {
        // Read between records, as a crash would find the store.
        assert!(watcher.meta.contains_key(IMPORTING_KEY).unwrap(), "record {i}: no marker");
        Ok(Record::Mode { mode: "production".into() })
    });

    assert_eq!(store.import(&mut records).await.unwrap(), 3);
    assert!(!store.meta.contains_key(IMPORTING_KEY).unwrap(), "the marker outlived the import");
}

#[tokio::test]
async fn a_schema_6_store_gets_its_phone_numbers_indexed_and_its_records_read_without_a_deletion() {
    let sealer = Sealer::ephemeral().unwrap();
    let number = crate::domain::PhoneNumber {
        phone_number: "+86 138 0013 8000".into(),
        pure_phone_number: "13800138000".into(),
        country_code: "86".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    let id = UserId::new();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let ban = ("spam".to_owned(), None, now.unix_timestamp_nanos());
    {
        let db = ::sled::open(&settings.data_dir).unwrap();
        db.open_tree("meta").unwrap().insert(SCHEMA_KEY, &6u32.to_be_bytes()[..]).unwrap();
        let old = legacy::V6UserRecord {
            identities: vec![IdentityRecord::new("wx1", "o_ann_openid", None)],
            unionid: Some("u_ann_unionid".into()),
            account: Some("ann".into()),
            unionid_shared_with: Vec::new(),
            created_at: now.unix_timestamp_nanos(),
            last_login_at: now.unix_timestamp_nanos(),
            controls: legacy::V6ControlsRecord { roles: vec!["staff".into()], claims: String::new(), ban: Some(ban) },
        };
        db.open_tree(RECORDS).unwrap().insert(id.as_bytes(), postcard::to_stdvec(&old).unwrap()).unwrap();
        db.open_tree("openids").unwrap().insert("wx1:o_ann_openid", &id.as_bytes()[..]).unwrap();
        db.open_tree(UNIONIDS).unwrap().insert("u_ann_unionid", &id.as_bytes()[..]).unwrap();
        let details = crate::domain::Details {
            phone: Some(crate::domain::Dated { value: number.clone(), at: now }),
            profile: None,
        };
        let sealed = DetailsRecord::seal(&details, &sealer, id.as_bytes()).unwrap();
        db.open_tree(DETAILS).unwrap().insert(id.as_bytes(), sealed).unwrap();
        // A family whose random verifier hash starts like a sealed value (1 in 65,536).
        let mut verifier_hash = [0xff; 32];
        verifier_hash[1] = 0x5e;
        let family = refresh::FamilyRecord::from_v5(legacy::V5FamilyRecord {
            verifier_hash,
            generation: 0,
            started: now.unix_timestamp_nanos(),
            user: *id.as_bytes(),
            appid: "wx1".into(),
            openid: "o_ann_openid".into(),
            expires_at: (now + time::Duration::days(30)).unix_timestamp_nanos(),
            revoked: false,
        });
        let key = [&id.as_bytes()[..], &[7; 16]].concat();
        db.open_tree("refresh_families").unwrap().insert(key, postcard::to_stdvec(&family).unwrap()).unwrap();
        db.flush().unwrap();
    }

    let store = open_released_with(&settings, sealer.clone()).await.unwrap();

    assert_eq!(store.sessions(&id, now).await.unwrap().len(), 1, "a family that looked sealed was lost");

    let pseudonym = crate::store::codec::phone_pseudonym(&sealer, "+8613800138000");
    assert_eq!(store.users_by_phone(&pseudonym).await.unwrap(), [id], "the number kept before schema 7 is not found");
    assert_eq!(decode_version(store.meta.get(SCHEMA_KEY).unwrap().as_deref()).unwrap(), SCHEMA_VERSION);
    assert_eq!(store.user_by_openid("wx1", "o_ann_openid").await.unwrap().map(|u| u.id), Some(id));
    assert_eq!(store.user_by_unionid("u_ann_unionid").await.unwrap().map(|u| u.id), Some(id));
    for tree in [&store.records, &store.openids, &store.unionids, &store.details] {
        for entry in tree.iter() {
            let (key, value) = entry.unwrap();
            for needle in [&b"o_ann_openid"[..], b"u_ann_unionid", b"13800138000"] {
                let found = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
                assert!(!found(&key) && !found(&value), "in the clear after the migration");
            }
        }
    }
    let user = store.user(&id).await.unwrap().unwrap();
    assert_eq!((user.controls.roles.as_slice(), user.controls.deletion), (&["staff".to_owned()][..], None));
    assert_eq!(user.controls.ban.as_ref().map(|b| b.reason.as_str()), Some("spam"));
    let deletion = crate::domain::Deletion { requested_at: now, erase_at: now };
    let changed = store.change_controls(&id, |c| c.deletion = Some(deletion)).await.unwrap();
    assert_eq!(store.user(&id).await.unwrap().unwrap(), changed, "rewritten in the new layout");
    assert_eq!(changed.controls.deletion, Some(deletion));
}

#[tokio::test]
async fn an_erasure_destroys_the_key_so_what_the_log_still_holds_of_the_person_never_opens_again() {
    let (_dir, store) = open().await;
    let now = OffsetDateTime::now_utc();
    let amy = store.record_login("wx1", &session("o_amy", "k1")).await.unwrap().user.id;
    let ann = crate::store::NewAccount { username: "ann".into(), password_hash: "$argon2id$x".into(), phone: None };
    let ann = store.add_accounts(&[ann]).await.unwrap()[0].id;
    store.bind("wx1", &session("o_ann", "k2"), "ann", None, now).await.unwrap();
    let old = |id: &UserId| store.records.get(id.as_bytes()).unwrap().unwrap();
    let (amy_before, ann_before) = (old(&amy), old(&ann));
    assert!(store.open_user(amy.as_bytes(), &amy_before).unwrap().is_some());

    for id in [amy, ann] {
        let due = crate::domain::Deletion { requested_at: now, erase_at: now };
        store.change_controls(&id, |c| c.deletion = Some(due)).await.unwrap();
        store.erase(&id, now).await.unwrap();
    }

    assert!(store.open_user(amy.as_bytes(), &amy_before).unwrap().is_none(), "the erased record still opens");
    assert!(store.open_user(ann.as_bytes(), &ann_before).unwrap().is_none(), "the account's old record still opens");
    let (_, kept) = store.read_user(ann.as_bytes()).unwrap().expect("the operator's account went");
    assert_eq!(kept.account.as_deref(), Some("ann"));
    assert!(kept.identities.is_empty());
}

#[tokio::test]
async fn a_data_directory_restored_without_its_user_keys_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
    let sealer = Sealer::ephemeral().unwrap();
    {
        let store = SledStore::open(&settings, sealer.clone()).await.unwrap();
        store.record_login("wx1", &session("o_amy", "k1")).await.unwrap();
    }
    std::fs::remove_file(settings.data_dir.join(super::vault::FILE)).unwrap();

    let refused = open_released_with(&settings, sealer).await.err().expect("the store opened without its keys");

    assert!(matches!(&refused, StoreError::Corrupt(what) if what.contains("user-keys")), "{refused}");
}

#[tokio::test]
async fn a_session_started_for_a_user_erased_meanwhile_is_not_kept_and_gets_no_key() {
    let (dir, store) = open().await;
    let now = OffsetDateTime::now_utc();
    let amy = store.record_login("wx1", &session("o_amy", "k1")).await.unwrap().user.id;
    let due = crate::domain::Deletion { requested_at: now, erase_at: now };
    store.change_controls(&amy, |c| c.deletion = Some(due)).await.unwrap();
    store.erase(&amy, now).await.unwrap();
    let keys = dir.path().join("data").join(super::vault::FILE);
    let slots_before = std::fs::metadata(&keys).unwrap().len();

    // The login found amy just before her erasure; its session is written just after.
    let grant = crate::store::RefreshGrant {
        user: amy,
        identity: crate::domain::Identity { appid: "wx1".into(), openid: "o_amy".into() },
    };
    let family = crate::store::RefreshId { user: amy, family: [7; 16], generation: 0, verifier_hash: [7; 32] };
    let origin = crate::store::Origin { ip: Some("203.0.113.9".into()), user_agent: None };
    store.start_refresh(&family, &grant, &origin, now, now + time::Duration::days(30), 20).await.unwrap();

    assert!(store.refresh_families.is_empty(), "a session of an erased user was kept");
    assert_eq!(std::fs::metadata(&keys).unwrap().len(), slots_before, "a key was made for an erased user");
}

#[tokio::test]
async fn a_unionid_held_by_a_record_whose_key_was_lost_goes_to_the_next_person_who_logs_in_with_it() {
    let (_dir, store) = open().await;
    let with_unionid = |openid: &str| WechatSession {
        openid: openid.into(),
        unionid: Some("u_amy".into()),
        session_key: Some(SessionKey::new("k".into())),
    };
    let lost = store.record_login("wx1", &with_unionid("o_amy")).await.unwrap().user.id;
    // A crash lost the key of a first login that was never acknowledged.
    store.vault.shred(lost.as_bytes(), None).unwrap();

    let amy = store.record_login("wx2", &with_unionid("o_amy_2")).await.unwrap().user;

    assert_ne!(amy.id, lost);
    assert!(amy.unionid_shared_with.is_empty(), "shares a unionid with an unreadable record");
    assert_eq!(store.user_by_unionid("u_amy").await.unwrap().map(|u| u.id), Some(amy.id));
}
