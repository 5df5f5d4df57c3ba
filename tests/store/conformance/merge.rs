//! Conformance cases of `wxauth users merge`: what moves, what stays, what is refused.

use time::OffsetDateTime;

use wxauth::{
    domain::{Identity, UserId},
    store::{
        Origin, RefreshGrant, RefreshId, Refreshed, StoreError,
        events::{Event, EventFilter, EventKind},
    },
};

use super::{person, phone, phone_account, session};
use crate::{Backend, open};

pub async fn a_merge_moves_identities_unionid_account_details_roles_and_sessions_and_removes_the_other(
    backend: &dyn Backend,
) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let later = now + time::Duration::hours(1);
    // Ann as first seen in the mini-program, with a role; and as an account with a phone
    // number, bound in the official account with her unionid, a verified number and a login.
    let kept = store.record_login("wxmini", &session("o_ann", "k-mini")).await.unwrap().user.id;
    store.change_controls(&kept, |c| c.roles = vec!["staff".into()]).await.unwrap();
    let gone = store.add_account(phone_account("ann", "13900000001")).await.unwrap().id;
    store.bind("wxoa", &person("o_ann_oa", "u_ann"), "ann", None, now).await.unwrap();
    store.change_controls(&gone, |c| c.roles = vec!["vip".into()]).await.unwrap();
    store.set_phone(&gone, phone("13800000001")).await.unwrap();
    let family = RefreshId { user: gone, family: [7; 16], generation: 0, verifier_hash: [1; 32] };
    let grant = RefreshGrant { user: gone, identity: Identity { appid: "wxoa".into(), openid: "o_ann_oa".into() } };
    store.start_refresh(&family, &grant, &Origin::default(), now, later, 20).await.unwrap();
    let origin = Origin { ip: Some("203.0.113.9".into()), user_agent: Some("ann-phone".into()) };
    let login = Event::new(EventKind::Login, now).user(gone).app("wxoa").origin(&origin).detail("created", false);
    store.record(login.clone()).await;

    let merged = store.merge_users(&kept, &gone, now).await.unwrap();

    assert_eq!(merged.id, kept);
    let apps: Vec<&str> = merged.identities.iter().map(|i| i.appid.as_str()).collect();
    assert_eq!(apps, ["wxmini", "wxoa"]);
    assert_eq!((merged.unionid.as_deref(), merged.account.as_deref()), (Some("u_ann"), Some("ann")));
    assert_eq!(merged.controls.roles, ["staff", "vip"]);
    assert_eq!(store.user(&gone).await.unwrap(), None, "the merged user is still there");
    assert_eq!(store.merged_into(&gone).await.unwrap(), Some(kept));
    assert_eq!(store.merged_into(&kept).await.unwrap(), None);
    for found in [
        store.user_by_openid("wxoa", "o_ann_oa").await.unwrap(),
        store.user_by_unionid("u_ann").await.unwrap(),
        store.user_by_openid("wxmini", "o_ann").await.unwrap(),
    ] {
        assert_eq!(found.map(|u| u.id), Some(kept));
    }
    let account = store.account("ann").await.unwrap().unwrap();
    assert_eq!((account.user, account.phone.as_deref()), (kept, Some("13900000001")));
    assert_eq!(store.details(&kept).await.unwrap().phone.unwrap().value.pure_phone_number, "13800000001");
    assert_eq!(store.session_key(&kept, "wxoa").await.unwrap().unwrap().session_key.expose(), "key-o_ann_oa");
    assert_eq!(store.session_key(&kept, "wxmini").await.unwrap().unwrap().session_key.expose(), "k-mini");
    // The merged user's events are the kept user's, readable (and erased with it).
    let filter = EventFilter { user: Some(kept), kinds: vec![EventKind::Login], limit: 10, ..EventFilter::default() };
    let events = store.events(&filter).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].id, events[0].user), (login.id, Some(kept)));
    assert_eq!(events[0].user_agent.as_deref(), Some("ann-phone"), "the event's private part no longer opens");
    let sessions = store.sessions(&kept, now).await.unwrap();
    assert!(sessions.iter().any(|s| s.family == [7; 16]), "the merged user's session did not move");
    // Its refresh token names the merged user; the family is found under the kept one.
    let moved = RefreshId { user: kept, ..family };
    let next = RefreshId { generation: 1, verifier_hash: [2; 32], ..moved };
    let rotated = store.rotate_refresh(&moved, &next.verifier_hash, now, later).await.unwrap();
    assert!(matches!(rotated, Refreshed::Rotated(g) if g.user == kept), "the moved family does not rotate");
    // A login of the merged identity is a returning login of the kept user.
    let again = store.record_login("wxoa", &person("o_ann_oa", "u_ann")).await.unwrap();
    assert_eq!((again.user.id, again.created), (kept, false));

    store.close().await.unwrap();
    drop(store);
    let store = open(&settings).await.unwrap();
    assert_eq!(store.user_by_openid("wxoa", "o_ann_oa").await.unwrap().map(|u| u.id), Some(kept));
    assert_eq!(store.merged_into(&gone).await.unwrap(), Some(kept));
    assert_eq!(store.user(&gone).await.unwrap(), None);
}

pub async fn a_merge_that_would_mix_up_two_people_is_refused_and_changes_nothing(backend: &dyn Backend) {
    let (settings, _guard) = backend.fresh();
    let store = open(&settings).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let a = store.record_login("wxmini", &session("o_a", "k")).await.unwrap().user;
    let b = store.record_login("wxmini", &session("o_b", "k")).await.unwrap().user;

    for (into, from) in [(a.id, a.id), (a.id, b.id)] {
        let refused = store.merge_users(&into, &from, now).await;
        assert!(matches!(refused, Err(StoreError::MergeRefused(_))), "{refused:?}");
    }
    let missing = store.merge_users(&a.id, &UserId::new(), now).await;
    assert!(matches!(missing, Err(StoreError::NoSuchUser)), "{missing:?}");
    assert_eq!(store.user(&b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(store.user(&a.id).await.unwrap(), Some(a));
    assert_eq!(store.merged_into(&b.id).await.unwrap(), None);
}
