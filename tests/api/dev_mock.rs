//! Dev mode's built-in WeChat: reserved codes and the ids it derives from codes.

use std::time::{Duration, Instant};

use crate::helpers::{TestApp, assert_error, spawn_dev_app};

async fn openid(app: &TestApp, code: &str) -> String {
    app.login_ok(code).await["user"]["openid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_dev_mock_derives_one_person_per_code_and_per_name_after_an_at() {
    let (app, restarted) = (spawn_dev_app().await, spawn_dev_app().await);

    let alice = openid(&app, "alice").await;

    assert_eq!(openid(&restarted, "alice").await, alice, "the same code is another person on another server");
    assert_eq!(openid(&app, "2@alice").await, alice, "a later wx.login of alice is someone else");
    assert_eq!(openid(&restarted, "3@alice").await, alice);
    let bob = openid(&app, "bob").await;
    assert_ne!(bob, alice, "two codes are one person");
    assert_ne!(openid(&app, "alice2").await, alice);
    for id in [&alice, &bob] {
        assert!(id.len() == 28 && id.starts_with('o'), "not shaped like a WeChat openid: {id}");
    }
    let union = app.login_ok("union-carol").await;
    let unionid = union["user"]["unionid"].as_str().unwrap().to_owned();
    assert!(unionid.len() == 28 && unionid.starts_with('u'), "{unionid}");
    assert_ne!(union["user"]["openid"].as_str().unwrap(), unionid);
    assert_eq!(restarted.login_ok("2@union-carol").await["user"]["unionid"], unionid.as_str());
}

#[tokio::test]
async fn the_reserved_code_slow_answers_after_the_timeout() {
    let app = spawn_dev_app().await;

    assert_error(app.login("slow").await, 504, "wechat_timeout").await;
}

#[tokio::test]
async fn the_reserved_code_busy_once_is_busy_then_succeeds_on_the_retry() {
    let app = spawn_dev_app().await;

    let started = Instant::now();
    let body = app.login_ok("busy-once").await;

    // The only way to take this long against a local mock: a -1, the retry delay, a retry.
    assert!(started.elapsed() >= Duration::from_millis(150), "no retry: {:?}", started.elapsed());
    assert!(body["user"]["openid"].as_str().is_some_and(|o| o.starts_with('o')), "{body}");
    assert_error(app.login("busy").await, 503, "wechat_unavailable").await;
}
