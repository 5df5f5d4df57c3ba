//! WeChat failing: one deadline per login, a bound on requests in flight, the circuit
//! breaker, oversized and hostile answers; and the per-client rate limit.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Reply, TestApp, assert_error, spawn_app_with};

async fn app_with(vars: &[(&str, &str)]) -> TestApp {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    spawn_app_with(move |c| {
        for (k, v) in vars {
            c.set(&k, v);
        }
    })
    .await
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_login_answers_within_its_one_deadline_even_when_the_retry_after_busy_hangs() {
    let app = app_with(&[("WXAUTH_WECHAT_TIMEOUT_MS", "1000")]).await;
    app.wechat.script(
        "busy-then-hang",
        [Reply::errcode(-1), Reply::Delay(Duration::from_secs(5), Box::new(Reply::errcode(0)))],
    );

    let started = Instant::now();
    let resp = app.login("busy-then-hang").await;
    let took = started.elapsed();

    assert_error(resp, 504, "wechat_timeout").await;
    assert_eq!(app.wechat.calls_for("busy-then-hang"), 2, "the retry was not sent");
    // Two deadlines would be 1000 + 200 + 1000 ms.
    assert!(took < Duration::from_millis(1400), "answered after {took:?}");
}

#[tokio::test]
async fn busy_is_not_retried_when_too_little_of_the_deadline_remains() {
    let app = app_with(&[("WXAUTH_WECHAT_TIMEOUT_MS", "1000")]).await;
    app.wechat.script("late-busy", [Reply::Delay(Duration::from_millis(700), Box::new(Reply::errcode(-1)))]);

    let resp = app.login("late-busy").await;

    assert_error(resp, 503, "wechat_unavailable").await;
    assert_eq!(app.wechat.calls_for("late-busy"), 1, "retried with too little time left");
}

/// Starts `n` logins of distinct codes that WeChat answers after `delay`, and waits until
/// all of them reached the mock.
async fn hold_wechat(app: &TestApp, n: usize, delay: Duration) -> Vec<tokio::task::JoinHandle<u16>> {
    let mut held = Vec::new();
    for i in 0..n {
        let code = format!("held-{i}");
        app.wechat.script(&code, [Reply::Delay(delay, Box::new(Reply::success(&format!("o_held_{i}"), "k")))]);
        let (client, url) = (app.client.clone(), format!("{}/v1/login", app.address));
        held.push(tokio::spawn(async move {
            client.post(url).json(&json!({ "code": code })).send().await.map_or(0, |r| r.status().as_u16())
        }));
    }
    let started = Instant::now();
    while app.wechat.calls().len() < n {
        assert!(started.elapsed() < Duration::from_secs(5), "the held logins never reached WeChat");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held
}

#[tokio::test]
async fn past_the_bound_on_requests_in_flight_logins_are_refused_at_once_even_when_their_clients_hung_up() {
    let app = app_with(&[("WXAUTH_WECHAT_MAX_INFLIGHT", "3")]).await;
    let held = hold_wechat(&app, 3, Duration::from_millis(1500)).await;
    // The clients hang up; their requests to WeChat still run and still count.
    for h in &held {
        h.abort();
    }

    let started = Instant::now();
    let resp = app.login("one-too-many").await;
    assert!(started.elapsed() < Duration::from_millis(500), "queued instead of refused");
    assert!(retry_after(&resp) >= 1);
    let body = assert_error(resp, 503, "wechat_unavailable").await;
    assert!(body["error_description"].as_str().unwrap().contains("in flight"), "{body}");
    assert_eq!(app.wechat.calls_for("one-too-many"), 0, "WeChat was called past the bound");

    // Once they finish, logins go through again.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(app.login("after@bob").await.status(), 200);
}

#[tokio::test]
async fn client_errors_of_wechat_never_open_the_breaker() {
    let app = app_with(&[("WXAUTH_WECHAT_BREAKER_FAILURES", "2")]).await;
    for i in 0..4 {
        let code = format!("bad-{i}");
        app.wechat.script(&code, [Reply::errcode(40029)]);
        assert_error(app.login(&code).await, 400, "invalid_code").await;
    }
    assert_eq!(app.login("fine@bob").await.status(), 200);
}

#[tokio::test]
async fn the_breaker_opens_on_consecutive_transport_failures_stays_open_probes_and_closes() {
    let app = app_with(&[("WXAUTH_WECHAT_BREAKER_FAILURES", "3"), ("WXAUTH_WECHAT_BREAKER_OPEN_SECS", "1")]).await;
    let failures = [
        Reply::Status(502, "<html>bad gateway</html>".into()),
        Reply::Body("<html>not json</html>".into()),
        Reply::Status(503, String::new()),
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        let code = format!("down-{i}");
        app.wechat.script(&code, [failure]);
        assert_error(app.login(&code).await, 502, "wechat_error").await;
    }
    assert_eq!(app.get("/readyz").await.status(), 503);

    // Open: refused within milliseconds, WeChat untouched, nothing stored.
    let started = Instant::now();
    let resp = app.login("while-open@alice").await;
    assert!(started.elapsed() < Duration::from_millis(100), "took {:?}", started.elapsed());
    assert!((1..=1).contains(&retry_after(&resp)), "Retry-After {}", retry_after(&resp));
    let body = assert_error(resp, 503, "wechat_unavailable").await;
    assert!(body["error_description"].as_str().unwrap().contains("circuit breaker"), "{body}");
    assert_eq!(app.wechat.calls_for("while-open@alice"), 0);
    let readiness: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(readiness["error"], "not_ready");
    assert!(readiness["error_description"].as_str().unwrap().contains("wechat"), "{readiness}");
    assert_eq!(app.get("/healthz").await.status(), 200, "liveness must not follow WeChat");

    // After the open period one probe goes through; its failure keeps the breaker open.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.wechat.script("probe-fails", [Reply::Status(500, String::new())]);
    assert_error(app.login("probe-fails").await, 502, "wechat_error").await;
    assert_error(app.login("still-open").await, 503, "wechat_unavailable").await;
    assert_eq!(app.wechat.calls_for("still-open"), 0);

    // The next probe succeeds and closes it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.login("probe@carol").await.status(), 200);
    assert_eq!(app.login("after@dave").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(app.wechat.calls_for("while-open@alice"), 0);
    // The refused login left nothing behind: alice's first real login creates her.
    let alice = app.login_ok("later@alice").await;
    assert_eq!(alice["user"]["created"], true, "{alice}");
}

#[tokio::test]
async fn while_wechat_hangs_health_keys_and_me_keep_answering() {
    let app = app_with(&[("WXAUTH_WECHAT_TIMEOUT_MS", "3000")]).await;
    let token = app.login_ok("before@erin").await["access_token"].as_str().unwrap().to_owned();
    let held = hold_wechat(&app, 20, Duration::from_secs(3)).await;

    for path in ["/healthz", "/readyz", "/.well-known/jwks.json"] {
        let started = Instant::now();
        assert_eq!(app.get(path).await.status(), 200, "{path}");
        assert!(started.elapsed() < Duration::from_millis(200), "{path} took {:?}", started.elapsed());
    }
    let started = Instant::now();
    assert_eq!(app.me(&token).await.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(200), "/v1/me took {:?}", started.elapsed());
    for h in held {
        assert_eq!(h.await.unwrap(), 504);
    }
}

#[tokio::test]
async fn oversized_and_hostile_answers_from_wechat_are_refused_and_quoted_safely() {
    let app = app_with(&[]).await;
    app.wechat.script(
        "huge",
        [Reply::Body(format!(r#"{{"openid":"o","session_key":"k","pad":"{}"}}"#, "x".repeat(1 << 20)))],
    );
    let body = assert_error(app.login("huge").await, 502, "wechat_error").await;
    assert!(body["error_description"].as_str().unwrap().contains("larger than"), "{body}");

    let injected = format!("4\r\nX-Injected: yes{}", "0".repeat(500));
    app.wechat.script("injected", [Reply::Body(json!({"errcode": injected, "errmsg": "x\r\ny"}).to_string())]);
    let body = assert_error(app.login("injected").await, 502, "wechat_error").await;
    let description = body["error_description"].as_str().unwrap();
    assert!(!description.contains('\r') && !description.contains('\n'), "{description:?}");
    assert!(description.contains("\\r\\n"), "{description:?}");
    assert!(description.len() < 400, "not truncated: {} bytes", description.len());
}

#[tokio::test]
async fn the_rate_limit_counts_login_attempts_per_client_address() {
    let app = app_with(&[("WXAUTH_RATE_LIMIT_PER_MINUTE", "2")]).await;
    assert_eq!(app.login("one@amy").await.status(), 200);
    // Malformed requests count too.
    assert_eq!(app.post("/v1/login", &json!({ "nope": 1 })).await.status(), 400);

    let resp = app.login("three@amy").await;
    assert!((1..=60).contains(&retry_after(&resp)), "Retry-After {}", retry_after(&resp));
    assert_error(resp, 429, "rate_limited").await;
    assert_eq!(app.wechat.calls_for("three@amy"), 0);
    // X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = app
        .client
        .post(format!("{}/v1/login", app.address))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({ "code": "spoofed@amy" }))
        .send()
        .await
        .unwrap();
    assert_error(spoofed, 429, "rate_limited").await;
    // Other operations are not limited, POSTs included.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_ne!(app.post("/v1/refresh", &json!({})).await.status(), 429);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rate_limit_counts_each_forwarded_client() {
    let app = app_with(&[("WXAUTH_RATE_LIMIT_PER_MINUTE", "1"), ("WXAUTH_TRUSTED_PROXIES", "127.0.0.0/8")]).await;
    let login = |client_ip: &'static str, code: &'static str| {
        app.client
            .post(format!("{}/v1/login", app.address))
            .header("x-forwarded-for", client_ip)
            .json(&json!({ "code": code }))
            .send()
    };
    assert_eq!(login("203.0.113.1", "a@one").await.unwrap().status(), 200);
    assert_eq!(login("203.0.113.2", "a@two").await.unwrap().status(), 200);
    assert_error(login("203.0.113.1", "b@one").await.unwrap(), 429, "rate_limited").await;
    let bind = app
        .client
        .post(format!("{}/v1/bind", app.address))
        .header("x-forwarded-for", "203.0.113.2")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(bind, 429, "rate_limited").await;
}

/// The value of one sample line of `/metrics`, e.g. `wxauth_logins_total{outcome="success"}`.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_logins_wechat_requests_and_tokens_after_a_known_sequence() {
    let app = app_with(&[]).await;
    app.login_ok("one@ann").await;
    app.login_ok("two@ann").await;
    app.wechat.script("wrong", [Reply::errcode(40029)]);
    assert_eq!(app.login("wrong").await.status(), 400);

    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    for (name, value) in [
        (r#"wxauth_logins_total{outcome="success"}"#, 2.0),
        (r#"wxauth_logins_total{outcome="invalid_code"}"#, 1.0),
        (r#"wxauth_tokens_issued_total{alg="ES256"}"#, 2.0),
        (r#"wxauth_wechat_errors_total{api="code2session",errcode="40029"}"#, 1.0),
        (r#"wxauth_wechat_request_duration_seconds_count{api="code2session"}"#, 3.0),
        ("wxauth_wechat_breaker_state", 0.0),
        // This request itself.
        ("wxauth_http_requests_in_flight", 1.0),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = app_with(&[("WXAUTH_METRICS", "off")]).await;
    assert_error(app.get("/metrics").await, 404, "not_found").await;
}

#[tokio::test]
async fn readyz_writes_its_probe_at_most_once_a_second_however_many_ask() {
    let app = app_with(&[]).await;
    let probes = || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        sample(&text, "wxauth_readiness_probes_total").unwrap_or_else(|| panic!("no probe count in\n{text}"))
    };
    assert_eq!(probes().await, 0.0);

    let started = Instant::now();
    let answers = futures_util::future::join_all((0..50).map(|_| app.get("/readyz"))).await;
    let took = started.elapsed();

    assert!(answers.iter().all(|a| a.status() == 200));
    // One probe, or one more per whole second the burst took on a slow machine.
    let made = probes().await;
    assert!((1.0..=1.0 + took.as_secs_f64().floor()).contains(&made), "{made} probes for 50 askers in {took:?}");
    // A second later, the next asker gets a fresh probe.
    tokio::time::sleep(wxauth::api::health::PROBE_INTERVAL).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(probes().await, made + 1.0);
}
