//! Conformance cases of refresh families: rotation, revocation, the per-user cap and the
//! purge.

use std::sync::Arc;

use time::OffsetDateTime;

use wxauth::{
    domain::{Ban, Identity, UserId},
    store::{
        Origin, RefreshGrant, RefreshId, Refreshed, Store,
        events::{Event, EventFilter, EventKind},
        outbox::Subscriptions,
        session_id,
    },
};

use super::{HASH, session};
use crate::{Backend, open};

fn grant(user: UserId) -> RefreshGrant {
    RefreshGrant { user, identity: Identity { appid: "wx1".into(), openid: "o1".into() } }
}

/// Token `generation` of `user`'s family `family`, with verifier hash `verifier` repeated.
fn rid_of(user: UserId, family: u8, generation: u32, verifier: u8) -> RefreshId {
    RefreshId { user, family: [family; 16], generation, verifier_hash: [verifier; 32] }
}

/// Families a user may keep in the tests that are not about the cap.
const KEEP: usize = 1000;

async fn user(store: &Store, name: &str) -> UserId {
    store.add_account(crate::conformance::account(name, HASH)).await.unwrap().id
}

pub async fn a_refresh_token_rotates_once_and_a_reuse_revokes_its_family(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let (now, later) = (OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + time::Duration::hours(1));
    let user = user(&store, "alice").await;
    let rid = |family, generation, verifier| rid_of(user, family, generation, verifier);
    store.start_refresh(&rid(1, 0, 1), &grant(user), &Origin::default(), now, later, KEEP).await.unwrap();
    store.start_refresh(&rid(9, 0, 9), &grant(user), &Origin::default(), now, later, KEEP).await.unwrap();

    let rotate = |old, next: u8, at| {
        let store = &store;
        async move { store.rotate_refresh(&old, &[next; 32], at, later).await.unwrap() }
    };
    assert_eq!(rotate(rid(1, 0, 7), 2, now).await, Refreshed::Unknown, "a wrong verifier");
    assert_eq!(rotate(rid(1, 1, 1), 2, now).await, Refreshed::Unknown, "a generation never issued");
    assert_eq!(rotate(rid(5, 0, 5), 2, now).await, Refreshed::Unknown, "a family never started");
    assert_eq!(rotate(rid(1, 0, 1), 2, now).await, Refreshed::Rotated(grant(user)));
    assert_eq!(rotate(rid(1, 1, 2), 3, now).await, Refreshed::Rotated(grant(user)));
    assert_eq!(rotate(rid(1, 0, 1), 4, now).await, Refreshed::Reused, "the spent first token");
    assert_eq!(rotate(rid(1, 2, 3), 5, now).await, Refreshed::Revoked, "the newest token after the reuse");
    assert_eq!(rotate(rid(9, 0, 9), 10, later).await, Refreshed::Expired);
    assert_eq!(rotate(rid(9, 0, 9), 10, now).await, Refreshed::Rotated(grant(user)));
}

pub async fn a_rotation_that_reads_the_user_judges_as_a_rotation_and_reads_the_user_only_when_rotated(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let (now, later) = (OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + time::Duration::hours(1));
    let user = user(&store, "alice").await;
    let rid = |family, generation, verifier| rid_of(user, family, generation, verifier);
    store.start_refresh(&rid(1, 0, 1), &grant(user), &Origin::default(), now, later, KEEP).await.unwrap();
    store.start_refresh(&rid(9, 0, 9), &grant(user), &Origin::default(), now, later, KEEP).await.unwrap();
    let cases = [
        (rid(1, 0, 7), now, Refreshed::Unknown, "a wrong verifier"),
        (rid(5, 0, 5), now, Refreshed::Unknown, "a family never started"),
        (rid(1, 0, 1), now, Refreshed::Rotated(grant(user)), "the current token"),
        (rid(1, 1, 2), now, Refreshed::Rotated(grant(user)), "its successor"),
        (rid(1, 0, 1), now, Refreshed::Reused, "the spent first token"),
        (rid(1, 2, 3), now, Refreshed::Revoked, "the newest token after the reuse"),
        (rid(9, 0, 9), later, Refreshed::Expired, "an expired family"),
    ];
    for (presented, at, judged, what) in cases {
        let next = [presented.generation as u8 + 2; 32];
        let refreshed = Event::new(EventKind::Refresh, at);
        let (rotated, read) = store.rotate_refresh_reading_user(&presented, &next, at, later, refreshed).await.unwrap();
        assert_eq!(rotated, judged, "{what}");
        match rotated {
            Refreshed::Rotated(_) => {
                let read = read.unwrap_or_else(|| panic!("{what}: the user was not read"));
                assert_eq!((read.id, read.account.as_deref()), (user, Some("alice")), "{what}");
            }
            _ => assert!(read.is_none(), "{what}: a user read without a rotation"),
        }
    }
}

pub async fn a_refresh_keeps_its_event_only_when_the_session_goes_on_and_a_logout_only_when_it_revoked(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let hook = [7u8; 8];
    let store = open(&settings).await.unwrap().with_webhooks(Subscriptions::new(vec![(hook, vec![])]));
    let (now, later) = (OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + time::Duration::hours(1));
    let amy = store.record_login("wx1", &session("o1", "k1")).await.unwrap().user.id;
    // Holds no WeChat identity, so not the one of the family's grant.
    let alice = user(&store, "alice").await;
    for (user, family) in [(amy, 1), (amy, 2), (alice, 3), (amy, 4)] {
        let first = rid_of(user, family, 0, family);
        store.start_refresh(&first, &grant(user), &Origin::default(), now, later, KEEP).await.unwrap();
    }
    let refresh = |old: RefreshId, next: u8, what: &'static str| {
        let store = &store;
        async move {
            // Apart in time, so that the log lists them in this order.
            let at = now + time::Duration::milliseconds(i64::from(next));
            let event = Event::new(EventKind::Refresh, at).detail("session", what);
            store.rotate_refresh_reading_user(&old, &[next; 32], now, later, event).await.unwrap().0
        }
    };
    assert_eq!(refresh(rid_of(amy, 1, 0, 9), 2, "a wrong verifier").await, Refreshed::Unknown);
    assert_eq!(refresh(rid_of(amy, 1, 0, 1), 2, "rotated").await, Refreshed::Rotated(grant(amy)));
    assert_eq!(refresh(rid_of(amy, 1, 0, 1), 3, "a reuse").await, Refreshed::Reused);
    assert!(matches!(refresh(rid_of(alice, 3, 0, 3), 4, "not the user's identity").await, Refreshed::Rotated(_)));
    store.change_controls(&amy, |c| c.ban = Some(Ban { reason: "spam".into(), until: None, at: now })).await.unwrap();
    assert!(matches!(refresh(rid_of(amy, 2, 0, 2), 5, "banned").await, Refreshed::Rotated(_)));
    store.change_controls(&amy, |c| c.ban = None).await.unwrap();
    assert!(matches!(refresh(rid_of(amy, 2, 1, 5), 6, "unbanned").await, Refreshed::Rotated(_)));

    let logout = |id: RefreshId, ms: i64, what: &'static str| {
        let store = &store;
        async move {
            let at = now + time::Duration::milliseconds(ms);
            let event = Event::new(EventKind::Logout, at).user(id.user).detail("session", what);
            store.revoke_refresh_recording(&id, event).await.unwrap()
        }
    };
    assert!(logout(rid_of(amy, 2, 2, 6), 10, "logged out").await);
    assert!(!logout(rid_of(amy, 2, 2, 6), 11, "twice").await, "a family revoked twice");
    assert!(!logout(rid_of(amy, 9, 0, 9), 12, "unknown").await);
    let everywhere = Event::new(EventKind::LogoutAll, now + time::Duration::milliseconds(20)).user(amy).app("wx1");
    store.revoke_user_refresh_recording(&amy, everywhere.detail("session", "all")).await.unwrap();
    assert_eq!(refresh(rid_of(amy, 4, 0, 4), 30, "after logout-all").await, Refreshed::Revoked);

    let kinds = vec![EventKind::Refresh, EventKind::Logout, EventKind::LogoutAll];
    let filter = EventFilter { kinds, limit: 100, ..EventFilter::default() };
    let kept = store.events(&filter).await.unwrap();
    let said: Vec<_> = kept.iter().rev().map(|e| (e.kind, e.details["session"].as_str().unwrap())).collect();
    assert_eq!(
        said,
        [
            (EventKind::Refresh, "rotated"),
            (EventKind::Refresh, "unbanned"),
            (EventKind::Logout, "logged out"),
            (EventKind::LogoutAll, "all")
        ]
    );
    assert!(kept.iter().all(|e| e.user == Some(amy)), "{kept:?}");
    let apps: Vec<_> = kept.iter().rev().map(|e| e.appid.as_deref()).collect();
    assert_eq!(apps, [Some("wx1"), Some("wx1"), None, Some("wx1")], "the refreshes' app is the family's");
    let delivered = store.claim_deliveries(later, later + time::Duration::minutes(1), 100).await.unwrap();
    let mut delivered: Vec<_> = delivered.iter().map(|d| (d.event, d.hook)).collect();
    let mut expected: Vec<_> = kept.iter().map(|e| (e.id, hook)).collect();
    delivered.sort();
    expected.sort();
    assert_eq!(delivered, expected, "a delivery per kept event, none for the others");
}

pub async fn refresh_families_are_revoked_by_token_by_user_and_by_account_changes(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let (now, later) = (OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + time::Duration::hours(1));
    let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
    let rid = |family, generation, verifier| {
        rid_of(if matches!(family, 4 | 6) { bob } else { alice }, family, generation, verifier)
    };
    for (family, user) in [(1, alice), (2, alice), (3, alice), (4, bob)] {
        store.start_refresh(&rid(family, 0, family), &grant(user), &Origin::default(), now, later, KEEP).await.unwrap();
    }
    let rotate = |old, next: u8| {
        let store = &store;
        async move { store.rotate_refresh(&old, &[next; 32], now, later).await.unwrap() }
    };
    store.revoke_refresh(&rid(1, 0, 1)).await.unwrap();
    store.revoke_refresh(&rid(1, 0, 1)).await.unwrap();
    store.revoke_refresh(&rid(99, 0, 99)).await.unwrap();
    store.revoke_refresh(&rid(2, 0, 77)).await.unwrap();
    assert_eq!(rotate(rid(1, 0, 1), 11).await, Refreshed::Revoked);
    assert!(matches!(rotate(rid(2, 0, 2), 12).await, Refreshed::Rotated(_)), "a forged token revoked a family");

    store.revoke_user_refresh(&alice).await.unwrap();
    // Every family of alice, refreshed or not; not bob's, not a later one.
    assert_eq!(rotate(rid(2, 1, 12), 22).await, Refreshed::Revoked);
    assert_eq!(rotate(rid(3, 0, 3), 23).await, Refreshed::Revoked);
    assert!(matches!(rotate(rid(4, 0, 4), 24).await, Refreshed::Rotated(_)));
    store.start_refresh(&rid(5, 0, 5), &grant(alice), &Origin::default(), now, later, KEEP).await.unwrap();
    assert!(matches!(rotate(rid(5, 0, 5), 25).await, Refreshed::Rotated(_)));

    // A password change and an unbind end every session of the user.
    store.set_password("alice", HASH).await.unwrap();
    assert_eq!(rotate(rid(5, 1, 25), 26).await, Refreshed::Revoked, "a password change kept a session");
    store.start_refresh(&rid(6, 0, 6), &grant(bob), &Origin::default(), now, later, KEEP).await.unwrap();
    store.unbind(&bob).await.unwrap();
    assert_eq!(rotate(rid(6, 0, 6), 26).await, Refreshed::Revoked, "an unbind kept a session");
    assert_eq!(rotate(rid(4, 1, 24), 27).await, Refreshed::Revoked, "an unbind kept a refreshed session");
}

pub async fn a_user_keeps_at_most_the_newest_families(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let (now, later) = (OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + time::Duration::hours(1));
    let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
    let rid =
        |family, generation, verifier| rid_of(if family == 1 { bob } else { alice }, family, generation, verifier);
    store.start_refresh(&rid(1, 0, 1), &grant(bob), &Origin::default(), now, later, 3).await.unwrap();
    // Family ids are UUID v7 in wxauth, so their order is their age.
    for family in 2..=6 {
        store.start_refresh(&rid(family, 0, family), &grant(alice), &Origin::default(), now, later, 3).await.unwrap();
    }
    for (family, kept) in [(2, false), (3, false), (4, true), (5, true), (6, true), (1, true)] {
        let rotated = store.rotate_refresh(&rid(family, 0, family), &[100; 32], now, later).await.unwrap();
        assert_eq!(matches!(rotated, Refreshed::Rotated(_)), kept, "family {family}: {rotated:?}");
    }
}

pub async fn a_user_logging_in_without_end_holds_at_most_twice_the_cap_and_always_the_newest(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let (now, later) = (OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + time::Duration::hours(1));
    let alice = user(&store, "alice").await;
    let mut most = 0;
    for family in 1..=60u8 {
        store
            .start_refresh(&rid_of(alice, family, 0, family), &grant(alice), &Origin::default(), now, later, 8)
            .await
            .unwrap();
        let held = store.sessions(&alice, now).await.unwrap().len();
        assert!(held <= 2 * 8, "{held} families after login {family}");
        most = most.max(held);
    }
    // In batches: a trim at every login would cost a scan of the user's families each time.
    assert!(most > 8, "every login trimmed");
    for family in 53..=60u8 {
        let rotated = store.rotate_refresh(&rid_of(alice, family, 0, family), &[100; 32], now, later).await.unwrap();
        assert!(matches!(rotated, Refreshed::Rotated(_)), "family {family}: {rotated:?}");
    }
}

pub async fn racing_logins_of_one_user_all_start_their_family_and_the_next_one_trims_to_the_cap(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = Arc::new(open(&settings).await.unwrap());
    let (now, later) = (OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + time::Duration::hours(1));
    let alice = user(&store, "alice").await;
    let rid = move |family, generation, verifier| rid_of(alice, family, generation, verifier);
    let starts: Vec<_> = (1..=32u8)
        .map(|family| {
            let store = store.clone();
            tokio::spawn(async move {
                store.start_refresh(&rid(family, 0, family), &grant(alice), &Origin::default(), now, later, 3).await
            })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("a racing login failed to start its family");
    }

    store.start_refresh(&rid(33, 0, 33), &grant(alice), &Origin::default(), now, later, 3).await.unwrap();

    let mut usable = Vec::new();
    for family in 1..=33u8 {
        if let Refreshed::Rotated(_) =
            store.rotate_refresh(&rid(family, 0, family), &[100; 32], now, later).await.unwrap()
        {
            usable.push(family);
        }
    }
    assert_eq!(usable.len(), 3, "{usable:?}");
    assert!(usable.contains(&33), "{usable:?}");
}

pub async fn the_purge_removes_expired_families_and_those_of_removed_users_in_batches(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let (soon, later) = (now + time::Duration::minutes(1), now + time::Duration::hours(1));
    let (user, gone) = (user(&store, "alice").await, user(&store, "bob").await);
    let rid = |family, generation, verifier| {
        rid_of(if (30..35).contains(&family) { gone } else { user }, family, generation, verifier)
    };
    // 10 live families, 10 revoked ones, 10 that expire soon, a refreshed one, and 5 of a
    // user about to be removed.
    for i in 0..30u8 {
        store
            .start_refresh(
                &rid(i, 0, i),
                &grant(user),
                &Origin::default(),
                now,
                if i < 20 { later } else { soon },
                KEEP,
            )
            .await
            .unwrap();
    }
    for i in 30..35u8 {
        store.start_refresh(&rid(i, 0, i), &grant(gone), &Origin::default(), now, later, KEEP).await.unwrap();
    }
    for i in 10..20u8 {
        store.revoke_refresh(&rid(i, 0, i)).await.unwrap();
    }
    assert!(matches!(
        store.rotate_refresh(&rid(0, 0, 0), &[100; 32], now, later).await.unwrap(),
        Refreshed::Rotated(_)
    ));
    store.remove_account("bob").await.unwrap();

    let purge = |at| {
        let store = &store;
        async move {
            let (mut removed, mut batches) = (0, 0);
            loop {
                let batch = store.purge_refresh(at, 7).await.unwrap();
                removed += batch.removed;
                batches += 1;
                if batch.done {
                    return (removed, batches);
                }
            }
        }
    };
    let (removed, batches) = purge(now + time::Duration::minutes(2)).await;
    assert!(batches > 3, "one batch did everything: {batches}");
    // The 10 expired families, and on sled the 5 of the removed user (PostgreSQL removed
    // those with the user).
    assert!(removed == 10 || removed == 15, "{removed} removed");
    for i in (20..35u8).chain([99]) {
        let rotated = store.rotate_refresh(&rid(i, 0, i), &[200; 32], now, later).await.unwrap();
        assert_eq!(rotated, Refreshed::Unknown, "{i}");
    }
    // Revoked ones say so until they expire; live ones still work, and the spent token of
    // the refreshed one still trips reuse detection.
    for i in 10..20u8 {
        assert_eq!(store.rotate_refresh(&rid(i, 0, i), &[200; 32], now, later).await.unwrap(), Refreshed::Revoked);
    }
    for i in 1..10u8 {
        let rotated = store.rotate_refresh(&rid(i, 0, i), &[100 + i; 32], now, later).await.unwrap();
        assert!(matches!(rotated, Refreshed::Rotated(_)), "{i}");
    }
    assert_eq!(store.rotate_refresh(&rid(0, 0, 0), &[210; 32], now, later).await.unwrap(), Refreshed::Reused);

    let (removed, _) = purge(later).await;
    assert_eq!(removed, 20, "every family expired");
}

/// Once, sled kept logout-all as a per-user cutoff whose keep-until each logout-all
/// overwrote (PostgreSQL kept the later one), so after `WXAUTH_REFRESH_TOKEN_TTL` was
/// lowered a purge could drop the cutoff while tokens it revoked were unexpired, and they
/// worked again. Revocation is now a flag on each family, removed only with the family once
/// it expires: this holds on every backend whatever the lifetime is meanwhile.
pub async fn refresh_tokens_revoked_by_logout_all_stay_refused_after_the_ttl_is_lowered_and_a_purge_runs(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let (long, short) = (time::Duration::days(30), time::Duration::hours(1));
    let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
    let rid =
        |family, generation, verifier| rid_of(if family == 9 { bob } else { alice }, family, generation, verifier);
    let rotate = |old, next: u8, at: OffsetDateTime, ttl| {
        let store = &store;
        async move { store.rotate_refresh(&old, &[next; 32], at, at + ttl).await.unwrap() }
    };
    // Families started under the long lifetime, one of them refreshed, and one of bob's.
    for family in [1, 2, 9] {
        store
            .start_refresh(
                &rid(family, 0, family),
                &grant(if family == 9 { bob } else { alice }),
                &Origin::default(),
                now,
                now + long,
                KEEP,
            )
            .await
            .unwrap();
    }
    assert!(matches!(rotate(rid(1, 0, 1), 11, now, long).await, Refreshed::Rotated(_)));

    // Logout-all twice (the second once the lifetime is lowered), then a login under the
    // short lifetime: a family started after logout-all works.
    store.revoke_user_refresh(&alice).await.unwrap();
    let later = now + time::Duration::minutes(1);
    store.revoke_user_refresh(&alice).await.unwrap();
    store.start_refresh(&rid(3, 0, 3), &grant(alice), &Origin::default(), later, later + short, KEEP).await.unwrap();
    assert!(matches!(rotate(rid(3, 0, 3), 13, later, short).await, Refreshed::Rotated(_)), "a login after logout-all");

    // Purges past anything the short lifetime would keep, then the old tokens again.
    for at in [now + short * 2, now + time::Duration::days(7)] {
        loop {
            if store.purge_refresh(at, 2).await.unwrap().done {
                break;
            }
        }
        assert_eq!(rotate(rid(1, 1, 11), 21, at, short).await, Refreshed::Revoked, "the refreshed family, at {at}");
        assert_eq!(rotate(rid(2, 0, 2), 22, at, short).await, Refreshed::Revoked, "the untouched family, at {at}");
        assert_eq!(rotate(rid(1, 0, 1), 23, at, short).await, Refreshed::Revoked, "a spent token, at {at}");
    }
    // The family started after logout-all expired under the short lifetime and went.
    assert_eq!(rotate(rid(3, 1, 13), 24, now + long, short).await, Refreshed::Unknown);
    assert!(
        matches!(rotate(rid(9, 0, 9), 29, now + time::Duration::days(7), short).await, Refreshed::Rotated(_)),
        "bob's"
    );

    // A login after the purges works too.
    let at = now + time::Duration::days(7);
    store.start_refresh(&rid(4, 0, 4), &grant(alice), &Origin::default(), at, at + short, KEEP).await.unwrap();
    assert!(matches!(rotate(rid(4, 0, 4), 14, at, short).await, Refreshed::Rotated(_)), "a login after the purge");
}

pub async fn sessions_are_the_live_families_with_their_origin_and_last_refresh_and_end_one_by_one(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    // Whole microseconds: PostgreSQL keeps nanoseconds, but the test compares exactly.
    let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let (later, ttl) = (now + time::Duration::minutes(5), time::Duration::hours(1));
    let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
    let phone = Origin::new(Some("203.0.113.7".parse().unwrap()), Some(b"MicroMessenger/8.0.50"));
    store.start_refresh(&rid_of(alice, 1, 0, 1), &grant(alice), &phone, now, now + ttl, KEEP).await.unwrap();
    store
        .start_refresh(&rid_of(alice, 2, 0, 2), &grant(alice), &Origin::default(), now, now + ttl, KEEP)
        .await
        .unwrap();
    store.start_refresh(&rid_of(alice, 3, 0, 3), &grant(alice), &phone, now, now + ttl, KEEP).await.unwrap();
    store.start_refresh(&rid_of(bob, 4, 0, 4), &grant(bob), &phone, now, now + ttl, KEEP).await.unwrap();
    store.revoke_refresh(&rid_of(alice, 3, 0, 3)).await.unwrap();
    let rotated = store.rotate_refresh(&rid_of(alice, 1, 0, 1), &[5; 32], later, later + ttl).await.unwrap();
    assert!(matches!(rotated, Refreshed::Rotated(_)));

    let sessions = store.sessions(&alice, later).await.unwrap();

    let seen: Vec<_> = sessions.iter().map(|s| (s.family[0], s.created_at, s.last_refresh_at, &s.origin)).collect();
    assert_eq!(
        seen,
        [(2, now, now, &Origin::default()), (1, now, later, &phone)],
        "newest first, without the revoked family, refreshed at its rotation"
    );
    assert_eq!(sessions[0].appid, "wx1");
    assert!(store.sessions(&alice, now + ttl).await.unwrap().iter().all(|s| s.family[0] == 1), "expired ones go");

    assert!(!store.revoke_session(&bob, &[1; 16], later).await.unwrap(), "another user's session");
    assert!(!store.revoke_session(&alice, &[3; 16], later).await.unwrap(), "a revoked one");
    assert!(!store.revoke_session(&alice, &[2; 16], now + ttl).await.unwrap(), "an expired one");
    assert!(store.revoke_session(&alice, &[1; 16], later).await.unwrap());
    assert!(!store.revoke_session(&alice, &[1; 16], later).await.unwrap(), "twice");
    let left: Vec<_> = store.sessions(&alice, later).await.unwrap().iter().map(|s| s.family[0]).collect();
    assert_eq!(left, [2]);
    let rotated = store.rotate_refresh(&rid_of(alice, 1, 1, 5), &[6; 32], later, later + ttl).await.unwrap();
    assert_eq!(rotated, Refreshed::Revoked, "an ended session's token");
    assert_eq!(store.sessions(&bob, later).await.unwrap().len(), 1, "bob's stays");
    assert_ne!(session_id(&[1; 16]), session_id(&[2; 16]));
}
