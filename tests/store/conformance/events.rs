//! Conformance cases of the event log.

use time::{Duration, OffsetDateTime};
use wxauth::{
    domain::UserId,
    store::{
        PurgeBatch,
        events::{Event, EventFilter, EventKind},
    },
};

use crate::{Backend, open};

fn filter(limit: usize) -> EventFilter {
    EventFilter { limit, ..EventFilter::default() }
}

pub async fn events_are_listed_newest_first_by_user_kind_and_time_page_by_page_and_purged_oldest_first(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let t0 = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let minute = |i: i64| t0 + Duration::minutes(i);
    let (amy, ben) = (UserId::new(), UserId::new());
    let mut all = Vec::new();
    for i in 0..10 {
        all.push(Event::new(EventKind::Login, minute(i)).user(amy).app("wx1").detail("created", i == 0));
        all.push(Event::new(EventKind::Ban, minute(i) + Duration::seconds(30)).user(ben).actor("socket"));
    }
    let mut anonymous = Event::new(EventKind::LoginFailed, minute(5) + Duration::seconds(10)).app("wx2");
    anonymous.ip = Some("203.0.113.9".parse().unwrap());
    anonymous.user_agent = Some("Mozilla/5.0 MicroMessenger/8.0".into());
    anonymous = anonymous.detail("error", "invalid_code");
    all.push(anonymous.clone());
    store.append_events(&all[..3]).await.unwrap();
    store.append_events(&all[3..]).await.unwrap();
    drop(store);

    let store = open(&settings).await.unwrap();
    let listed = store.events(&filter(100)).await.unwrap();
    let mut expected = all.clone();
    expected.sort_by_key(|e| std::cmp::Reverse(e.at));
    assert_eq!(listed, expected, "everything, newest first, as appended");

    let of_amy = store.events(&EventFilter { user: Some(amy), ..filter(100) }).await.unwrap();
    assert_eq!(of_amy.len(), 10);
    assert!(of_amy.iter().all(|e| e.user == Some(amy) && e.kind == EventKind::Login), "{of_amy:?}");
    let bans = store.events(&EventFilter { kinds: vec![EventKind::Ban, EventKind::Unban], ..filter(100) }).await;
    assert_eq!(bans.unwrap().len(), 10);
    let failed = store.events(&EventFilter { kinds: vec![EventKind::LoginFailed], ..filter(100) }).await.unwrap();
    assert_eq!(failed, vec![anonymous]);
    let window = EventFilter { user: Some(amy), since: Some(minute(2)), until: Some(minute(4)), ..filter(100) };
    let times: Vec<_> = store.events(&window).await.unwrap().iter().map(|e| e.at).collect();
    assert_eq!(times, vec![minute(3), minute(2)], "since is inclusive, until exclusive");

    // Pages of 4, each after the last event of the one before.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store.events(&EventFilter { user: Some(amy), before, ..filter(4) }).await.unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| e.id);
        pages.push(page.iter().map(|e| (e.at - t0).whole_minutes()).collect::<Vec<_>>());
    }
    assert_eq!(pages, vec![vec![9, 8, 7, 6], vec![5, 4, 3, 2], vec![1, 0]]);
    let nobody = store.events(&EventFilter { user: Some(UserId::new()), ..filter(100) }).await.unwrap();
    assert!(nobody.is_empty());

    // Everything before minute 5: amy's 0-4 and ben's 0-4, in batches of 3.
    let mut batches = Vec::new();
    loop {
        let PurgeBatch { removed, done } = store.purge_events(minute(5), 3).await.unwrap();
        batches.push(removed);
        if done {
            break;
        }
    }
    assert_eq!(batches.iter().sum::<usize>(), 10, "{batches:?}");
    assert!(batches.iter().all(|&b| b <= 3), "{batches:?}");
    let left = store.events(&filter(100)).await.unwrap();
    assert_eq!(left.len(), 11);
    assert!(left.iter().all(|e| e.at >= minute(5)), "{left:?}");
    let of_amy = store.events(&EventFilter { user: Some(amy), ..filter(100) }).await.unwrap();
    assert_eq!(of_amy.len(), 5, "the user's listing still shows purged events");
}
