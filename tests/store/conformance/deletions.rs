//! Deletions: pending until due, cancelled, then an erasure that leaves nothing of the
//! person but an account an operator made.

use time::{Duration, OffsetDateTime};
use wxauth::{
    domain::{Deletion, Identity, UserId},
    store::{
        BindTicket, Erasure, NewAccount, Origin, RefreshGrant, RefreshId,
        events::{Event, EventFilter, EventKind},
    },
};

use super::{HASH, person, phone};
use crate::{Backend, open};

fn deletion(at: OffsetDateTime, after: Duration) -> Deletion {
    Deletion { requested_at: at, erase_at: at + after }
}

pub async fn a_deletion_waits_until_due_can_be_cancelled_and_then_erases_the_person_but_not_an_account(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let amy = store.record_login("wx1", &person("o_amy", "u_amy")).await.unwrap().user.id;
    store.record_login("wx2", &person("o_amy_2", "u_amy")).await.unwrap();
    store.set_phone(&amy, phone("13800138000")).await.unwrap();
    let grant = RefreshGrant { user: amy, identity: Identity { appid: "wx1".into(), openid: "o_amy".into() } };
    let family = RefreshId { user: amy, family: [7; 16], generation: 0, verifier_hash: [7; 32] };
    let origin = Origin { ip: Some("203.0.113.9".into()), user_agent: Some("WeChat/8.0".into()) };
    store.start_refresh(&family, &grant, &origin, now, now + Duration::days(30), 20).await.unwrap();
    let ticket =
        BindTicket { appid: "wx1".into(), session: person("o_amy", "u_amy"), expires_at: now + Duration::minutes(5) };
    store.put_ticket(&[3; 32], &ticket, now).await.unwrap();
    let login = Event::new(EventKind::Login, now).user(amy).app("wx1").detail("created", true);
    let login = login.origin(&origin);
    store.append_events(&[login]).await.unwrap();
    let with_phone = NewAccount { phone: Some("+8613700000009".into()), ..crate::conformance::account("bob", HASH) };
    let bob = store.add_account(with_phone).await.unwrap().id;
    store.bind("wx1", &person("o_bob", "u_bob"), "bob", None, now).await.unwrap();

    // Pending: marked, its sessions ended, not erased before it is due.
    let later = deletion(now, Duration::hours(1));
    let marked = store.request_deletion(&amy, later).await.unwrap();
    assert_eq!(marked.controls.deletion, Some(later));
    assert!(store.sessions(&amy, now).await.unwrap().is_empty(), "a deletion request left a session");
    assert!(store.due_deletions(now, 10).await.unwrap().is_empty(), "due before its time");
    assert_eq!(store.due_deletions(now + Duration::hours(2), 10).await.unwrap(), [amy]);
    assert_eq!(store.erase(&amy, now).await.unwrap(), Erasure::NotDue);
    assert!(store.user(&amy).await.unwrap().is_some());

    // Cancelled: nothing pending any more; and it survives reopening.
    assert!(!store.cancel_deletion(&amy, now + Duration::hours(1)).await.unwrap(), "cancelled once due");
    assert!(store.cancel_deletion(&amy, now).await.unwrap());
    assert!(!store.cancel_deletion(&amy, now).await.unwrap(), "cancelled twice");
    assert!(store.due_deletions(now + Duration::hours(2), 10).await.unwrap().is_empty(), "a cancelled one is due");
    assert_eq!(store.erase(&amy, now + Duration::hours(2)).await.unwrap(), Erasure::NotDue);
    store.request_deletion(&amy, deletion(now, Duration::ZERO)).await.unwrap();
    store.request_deletion(&bob, deletion(now, Duration::ZERO)).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = open(&settings).await.unwrap();
    let mut due = store.due_deletions(now, 10).await.unwrap();
    due.sort_by_key(|id| *id.as_bytes());
    let mut expected = vec![amy, bob];
    expected.sort_by_key(|id| *id.as_bytes());
    assert_eq!(due, expected, "pending deletions were lost by reopening");

    // Erased: nothing of the person is left but their events' ids, times and kinds.
    assert_eq!(store.erase(&amy, now).await.unwrap(), Erasure::Erased { account_kept: None });
    assert!(store.user(&amy).await.unwrap().is_none());
    for (appid, openid) in [("wx1", "o_amy"), ("wx2", "o_amy_2")] {
        assert!(store.user_by_openid(appid, openid).await.unwrap().is_none(), "{openid} still leads somewhere");
    }
    assert!(store.user_by_unionid("u_amy").await.unwrap().is_none());
    assert_eq!(store.details(&amy).await.unwrap(), Default::default());
    assert!(store.users_by_phone("+8613800138000").await.unwrap().is_empty(), "the phone number still finds amy");
    assert!(store.ticket(&[3; 32], now).await.unwrap().is_none(), "the person's bind ticket survived");
    assert!(store.sessions(&amy, now).await.unwrap().is_empty());
    let events = store.events(&EventFilter { user: Some(amy), limit: 10, ..EventFilter::default() }).await.unwrap();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!((event.kind, event.user, event.appid.as_deref()), (EventKind::Login, Some(amy), Some("wx1")));
    assert!(event.ip.is_none() && event.user_agent.is_none() && event.details.is_empty(), "{event:?}");
    assert_eq!(store.erase(&amy, now).await.unwrap(), Erasure::Gone, "a second run did not find it gone");

    // An account's user: the account stays, unbound and emptied, and may bind again.
    assert_eq!(store.erase(&bob, now).await.unwrap(), Erasure::Erased { account_kept: Some("bob".into()) });
    let kept = store.user(&bob).await.unwrap().expect("the account's user went");
    assert!(kept.identities.is_empty() && kept.unionid.is_none() && kept.controls.deletion.is_none(), "{kept:?}");
    assert_eq!(store.account("bob").await.unwrap().unwrap().user, bob);
    // Its number was the person's: it went with the erasure.
    assert_eq!(store.account("bob").await.unwrap().unwrap().phone, None);
    assert!(store.account_by_phone("+8613700000009").await.unwrap().is_none());
    assert!(store.user_by_openid("wx1", "o_bob").await.unwrap().is_none());
    assert!(store.due_deletions(now + Duration::days(1), 10).await.unwrap().is_empty(), "erased ones stay due");
    let again = store.bind("wx1", &person("o_bob", "u_bob"), "bob", None, now).await.unwrap();
    assert_eq!(again.user.id, bob);

    // An account with no password is reached by its number alone, which the erasure takes:
    // the account goes too, and the name and number are free again.
    let phone_only = NewAccount { phone: Some("+8613700000019".into()), ..crate::conformance::account("cy", "") };
    let cy = store.add_account(phone_only.clone()).await.unwrap().id;
    store.request_deletion(&cy, deletion(now, Duration::ZERO)).await.unwrap();
    assert_eq!(store.erase(&cy, now).await.unwrap(), Erasure::Erased { account_kept: None });
    assert!(store.account("cy").await.unwrap().is_none());
    assert!(store.user(&cy).await.unwrap().is_none());
    store.add_account(phone_only).await.unwrap();
    assert_eq!(store.erase(&UserId::new(), now).await.unwrap(), Erasure::Gone);
}
