//! Conformance cases of `Store::log_in`: a login and the session it starts (its refresh
//! family and its event) as one store step, which PostgreSQL takes in one statement for a
//! returning login and two for a first one.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use wxauth::{
    domain::{Ban, Deletion, UserId, WechatSession},
    store::{
        LoggedIn, Origin, SessionStart, Store,
        events::{Event, EventFilter, EventKind},
    },
};

use super::{person, session};
use crate::{Backend, open};

/// The start of a session in family `family` at `now`.
fn start(family: u8, now: OffsetDateTime) -> SessionStart {
    let origin = Origin { ip: Some("203.0.113.9".into()), user_agent: Some("MicroMessenger".into()) };
    SessionStart {
        family: uuid::Uuid::now_v7().into_bytes().map(|b| b ^ family),
        verifier_hash: [family; 32],
        origin,
        now,
        expires_at: now + Duration::days(30),
        keep: 1000,
        event: Event::new(EventKind::Login, now).app("wx1"),
    }
}

async fn log_in(store: &Store, session: &WechatSession, family: u8) -> LoggedIn {
    store.log_in("wx1", session, Some(&[]), &start(family, OffsetDateTime::now_utc())).await.unwrap().unwrap()
}

async fn logins(store: &Store, user: UserId) -> Vec<Event> {
    let filter = EventFilter { user: Some(user), kinds: vec![EventKind::Login], limit: 100, ..EventFilter::default() };
    store.events(&filter).await.unwrap()
}

pub async fn a_login_starts_its_session_and_keeps_its_event_for_a_new_and_a_returning_user(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();

    let first = log_in(&store, &session("o1", "k1"), 1).await;
    assert!(first.record.created && first.started);
    let id = first.record.user.id;
    assert_eq!(
        store.user(&id).await.unwrap(),
        Some(first.record.user.clone()),
        "the answered user is not the stored one"
    );
    let again = log_in(&store, &session("o1", "k1"), 2).await;
    assert!(!again.record.created && again.started);
    assert_eq!(again.record.user, first.record.user, "a returning login within the granularity changed the user");

    let sessions = store.sessions(&id, OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(sessions.len(), 2, "one session per login");
    assert!(sessions.iter().all(|s| s.origin.ip.as_deref() == Some("203.0.113.9") && s.appid == "wx1"));
    let events = logins(&store, id).await;
    let created: Vec<_> = events.iter().map(|e| e.details["created"].as_bool()).collect();
    assert_eq!(created, [Some(false), Some(true)], "newest first: the returning login, then the first");
    assert!(events.iter().all(|e| e.appid.as_deref() == Some("wx1") && e.user == Some(id)));
}

pub async fn a_banned_or_leaving_user_logs_in_without_a_session_until_the_ban_ends(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let id = log_in(&store, &session("o1", "k1"), 1).await.record.user.id;
    let now = OffsetDateTime::now_utc();
    let ban = |until| Ban { reason: "spam".into(), until, at: now };

    store.change_controls(&id, |c| c.ban = Some(ban(None))).await.unwrap();
    let banned = log_in(&store, &session("o1", "k1"), 2).await;
    assert!(!banned.started && banned.record.user.controls.ban.is_some(), "a banned user's login started a session");
    store.change_controls(&id, |c| c.ban = Some(ban(Some(now + Duration::hours(1))))).await.unwrap();
    assert!(!log_in(&store, &session("o1", "k1"), 3).await.started, "a ban until later did not hold");
    store.change_controls(&id, |c| c.ban = Some(ban(Some(now - Duration::seconds(1))))).await.unwrap();
    assert!(log_in(&store, &session("o1", "k1"), 4).await.started, "a ban that ended still held");
    let deletion = Deletion { requested_at: now, erase_at: now + Duration::days(7) };
    store.change_controls(&id, |c| c.deletion = Some(deletion)).await.unwrap();
    assert!(!log_in(&store, &session("o1", "k1"), 5).await.started, "a user being deleted started a session");

    assert_eq!(store.sessions(&id, OffsetDateTime::now_utc()).await.unwrap().len(), 2, "the first login and family 4");
    assert_eq!(logins(&store, id).await.len(), 2, "an event for a login that started nothing");
}

pub async fn a_login_keeps_a_new_session_key_and_learns_a_first_unionid(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let id = log_in(&store, &session("o1", "k1"), 1).await.record.user.id;

    assert!(log_in(&store, &session("o1", "k2"), 2).await.started);
    assert_eq!(store.session_key(&id, "wx1").await.unwrap().unwrap().session_key.expose(), "k2");
    let learned = log_in(&store, &person("o1", "u1"), 3).await;
    assert!(learned.started);
    assert_eq!(learned.record.user.unionid.as_deref(), Some("u1"));
    assert_eq!(store.user_by_unionid("u1").await.unwrap().map(|u| u.id), Some(id));
    // A first login with a unionid links it too.
    let other = log_in(&store, &person("o2", "u2"), 4).await;
    assert!(other.record.created && other.started);
    assert_eq!(store.user_by_unionid("u2").await.unwrap(), Some(other.record.user));
}

pub async fn a_login_that_may_not_create_starts_nothing(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(store.log_in("wx1", &session("o1", "k1"), None, &start(1, now)).await.unwrap().is_none());
    let all = EventFilter { limit: 100, ..EventFilter::default() };
    assert!(store.events(&all).await.unwrap().is_empty(), "an event for a login that found no one");
    assert!(store.user_by_openid("wx1", "o1").await.unwrap().is_none());
}

pub async fn racing_first_logins_create_one_user_and_each_starts_its_session(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = Arc::new(open(&settings).await.unwrap());
    let racers: Vec<_> = (0..16u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { log_in(&store, &person("o_race", "u_race"), i).await })
        })
        .collect();
    let mut logged = Vec::new();
    for racer in racers {
        logged.push(racer.await.unwrap());
    }
    assert_eq!(logged.iter().filter(|l| l.record.created).count(), 1, "not exactly one creation");
    let id = logged[0].record.user.id;
    assert!(logged.iter().all(|l| l.record.user.id == id && l.started));
    assert_eq!(store.sessions(&id, OffsetDateTime::now_utc()).await.unwrap().len(), 16);
    assert_eq!(logins(&store, id).await.len(), 16);
}
