//! The webhook outbox: deliveries written with their events, claimed under a lease by one
//! sender at a time, retried or removed.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use wxauth::store::{
    Store,
    events::{Event, EventKind},
    outbox::{Delivery, Subscriptions},
};

use crate::{Backend, open};

fn keys(deliveries: &[Delivery]) -> Vec<(uuid::Uuid, [u8; 8])> {
    let mut keys: Vec<_> = deliveries.iter().map(|d| (d.event, d.hook)).collect();
    keys.sort();
    keys
}

pub async fn deliveries_are_kept_with_their_events_claimed_under_a_lease_and_retried_or_removed(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let (every, logins) = ([1u8; 8], [2u8; 8]);
    let subscriptions = Subscriptions::new(vec![(every, vec![]), (logins, vec![EventKind::Login])]);
    let store = open(&settings).await.unwrap().with_webhooks(subscriptions.clone());
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let (login, ban) = (Event::new(EventKind::Login, t0), Event::new(EventKind::Ban, t0 + Duration::seconds(1)));
    store.append_events(&[login.clone(), ban.clone()]).await.unwrap();
    assert_eq!(store.event(&login.id).await.unwrap().as_ref(), Some(&login));
    assert!(store.event(&uuid::Uuid::now_v7()).await.unwrap().is_none());

    // Due from their events' times; claimed once until the lease ends.
    assert!(store.claim_deliveries(t0 - Duration::seconds(1), t0, 10).await.unwrap().is_empty(), "due early");
    let lease = t0 + Duration::seconds(15);
    let claimed = store.claim_deliveries(t0 + Duration::seconds(1), lease, 10).await.unwrap();
    let expected = {
        let mut e = vec![(login.id, every), (login.id, logins), (ban.id, every)];
        e.sort();
        e
    };
    assert_eq!(keys(&claimed), expected);
    assert!(claimed.iter().all(|d| d.attempts == 0 && d.due_at == lease), "{claimed:?}");
    assert!(store.claim_deliveries(lease - Duration::seconds(1), lease, 10).await.unwrap().is_empty(), "claimed twice");

    // A lost claim's end changes nothing; the live claim's does.
    let again = store.claim_deliveries(lease, lease + Duration::seconds(15), 10).await.unwrap();
    assert_eq!(keys(&again), expected, "the lease did not end");
    store.finish_delivery(&claimed[0], None).await.unwrap();
    let (sent, failed, rest) = (again[0], again[1], again[2]);
    store.finish_delivery(&sent, None).await.unwrap();
    let retry_at = lease + Duration::seconds(20);
    store.finish_delivery(&failed, Some(retry_at)).await.unwrap();
    store.finish_delivery(&rest, Some(retry_at + Duration::seconds(5))).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = open(&settings).await.unwrap();
    let due = store.claim_deliveries(retry_at, retry_at + Duration::seconds(15), 10).await.unwrap();
    assert_eq!(keys(&due), keys(&[failed]), "a retry was not kept, or a sent one came back");
    assert_eq!(due[0].attempts, 1);
    store.finish_delivery(&due[0], None).await.unwrap();
    let last = store.claim_deliveries(retry_at + Duration::days(1), retry_at + Duration::days(2), 10).await.unwrap();
    assert_eq!(keys(&last), keys(&[rest]));
}

pub async fn racing_senders_never_claim_the_same_delivery(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let hooks: Vec<([u8; 8], Vec<EventKind>)> = (0..4).map(|i| ([i; 8], vec![])).collect();
    let store: Arc<Store> = Arc::new(open(&settings).await.unwrap().with_webhooks(Subscriptions::new(hooks)));
    let t0 = OffsetDateTime::now_utc();
    let events: Vec<Event> = (0..50).map(|_| Event::new(EventKind::Refresh, t0)).collect();
    store.append_events(&events).await.unwrap();

    let senders: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_deliveries(t0, t0 + Duration::minutes(1), 7).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for sender in senders {
        all.extend(sender.await.unwrap());
    }
    let claimed = keys(&all);
    let mut unique = claimed.clone();
    unique.dedup();
    assert_eq!(claimed.len(), 200, "not every delivery was claimed");
    assert_eq!(unique.len(), claimed.len(), "a delivery was claimed twice");
}

pub async fn an_event_recorded_twice_under_one_id_is_kept_and_delivered_once(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap().with_webhooks(Subscriptions::new(vec![([9; 8], vec![])]));
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    // What two replicas record when each sees one key start to sign.
    let seen = || Event::key_change(EventKind::KeyActivated, t0, "kid-1", "ES256", None);
    store.append_events(&[seen()]).await.unwrap();
    store.append_events(&[seen()]).await.unwrap();

    let filter = wxauth::store::events::EventFilter { limit: 10, ..Default::default() };
    let kept = store.events(&filter).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].details["kid"], "kid-1");
    let claimed = store.claim_deliveries(t0, t0 + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let other = Event::key_change(EventKind::KeyActivated, t0, "kid-2", "ES256", None);
    assert_ne!(other.id, seen().id, "two keys share an event id");
}
