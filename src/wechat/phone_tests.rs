//! The access token and the phone API against a scripted WeChat on loopback.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use poem::{
    EndpointExt, Route, Server, handler,
    listener::{Acceptor, Listener, TcpListener},
    post,
    web::{Data, Query},
};

use super::*;
use crate::{
    clock::TestClock,
    config::{WechatApp, WechatSettings},
};

#[derive(Default)]
struct Mock {
    tokens: AtomicUsize,
    phone_calls: AtomicUsize,
    /// The first `refuse` tokens are answered with 40001.
    refuse: AtomicUsize,
}

#[handler]
async fn stable_token(mock: Data<&Arc<Mock>>) -> String {
    let n = mock.tokens.fetch_add(1, Ordering::SeqCst) + 1;
    // Slow enough that concurrent callers pile up behind the refresh.
    tokio::time::sleep(Duration::from_millis(50)).await;
    serde_json::json!({"access_token": format!("T{n}"), "expires_in": 7200}).to_string()
}

#[handler]
async fn phone_api(Query(q): Query<HashMap<String, String>>, mock: Data<&Arc<Mock>>) -> String {
    mock.phone_calls.fetch_add(1, Ordering::SeqCst);
    let token: usize = q["access_token"].trim_start_matches('T').parse().unwrap();
    if token <= mock.refuse.load(Ordering::SeqCst) {
        return r#"{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest, rid: r40001"}"#.into();
    }
    r#"{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"+8613800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx1"}}}"#.into()
}

async fn client(mock: Arc<Mock>) -> WechatClient {
    client_on(mock, &TestClock::default()).await
}

async fn client_on(mock: Arc<Mock>, clock: &TestClock) -> WechatClient {
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    let app = Route::new()
        .at("/cgi-bin/stable_token", post(stable_token))
        .at("/wxa/business/getuserphonenumber", post(phone_api))
        .data(mock);
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    let settings = WechatSettings {
        apps: vec![WechatApp {
            appid: "wx1".into(),
            secret: secrecy::SecretString::from("s"),
            default_role: None,
            kind: Default::default(),
            redirect_uris: vec![],
        }],
        base_url: Url::parse(&format!("http://{addr}")).unwrap(),
        open_url: Url::parse(&format!("http://{addr}")).unwrap(),
        timeout: Duration::from_secs(5),
        limits: crate::wechat::Limits { max_inflight: 100, breaker_failures: 20, breaker_open: Duration::from_secs(5) },
    };
    WechatClient::new(&settings, &settings.apps[0], clock.clock()).unwrap()
}

fn code() -> JsCode {
    JsCode::parse("phone-code").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_phone_requests_with_an_expired_token_refresh_it_once() {
    let (mock, clock) = (Arc::new(Mock::default()), TestClock::default());
    let client = client_on(mock.clone(), &clock).await;
    client.phone_number(&code(), "o1").await.unwrap();
    // Reused until 60 s before the 7200 s WeChat gave it, then refetched.
    clock.advance(7200 - 60 - 5);
    // Each request is another person's: the same person's would share the first answer.
    client.phone_number(&code(), "o2").await.unwrap();
    assert_eq!(mock.tokens.load(Ordering::SeqCst), 1, "refetched a token that was still good");
    clock.advance(10);

    let calls: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.phone_number(&code(), &format!("o{}", i + 3)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().pure_phone_number, "13800138000");
    }

    assert_eq!(mock.tokens.load(Ordering::SeqCst), 2, "one fetch, then exactly one refresh");
    assert_eq!(client.access_token_fetches(), 2);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_and_the_call_retried_once() {
    let mock = Arc::new(Mock { refuse: AtomicUsize::new(1), ..Mock::default() });
    let client = client(mock.clone()).await;

    let phone = client.phone_number(&code(), "o1").await.unwrap();

    assert_eq!((phone.phone_number.as_str(), phone.country_code.as_str()), ("+8613800138000", "86"));
    assert_eq!((mock.tokens.load(Ordering::SeqCst), mock.phone_calls.load(Ordering::SeqCst)), (2, 2));
}

#[tokio::test]
async fn a_token_refused_twice_is_an_error_not_a_loop() {
    let mock = Arc::new(Mock { refuse: AtomicUsize::new(100), ..Mock::default() });
    let client = client(mock.clone()).await;

    let err = client.phone_number(&code(), "o1").await.unwrap_err();

    assert!(matches!(err, WechatError::AccessTokenRejected { errcode: 40001, .. }), "{err:?}");
    assert_eq!(mock.phone_calls.load(Ordering::SeqCst), 2);
}

#[test]
fn phone_answers_are_interpreted() {
    let ok = interpret_phone(br#"{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86"}}"#).unwrap();
    assert_eq!(ok.country_code, "86");
    assert_eq!(
        interpret_phone(br#"{"errcode":40029,"errmsg":"invalid code, rid: r1"}"#),
        Err(WechatError::InvalidCode { rid: Some("r1".into()) })
    );
    for code in [40001, 40014, 42001] {
        let body = format!(r#"{{"errcode":{code},"errmsg":"x"}}"#);
        assert!(matches!(interpret_phone(body.as_bytes()), Err(WechatError::AccessTokenRejected { .. })), "{code}");
    }
    assert!(matches!(interpret_phone(br#"{"errcode":0}"#), Err(WechatError::Upstream(_))));
}
