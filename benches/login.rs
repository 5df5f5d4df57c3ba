//! Speed targets, measured rather than asserted in tests.
//!
//! `cargo bench` prints three tables:
//! 1. token issue + verify per algorithm (µs per operation);
//! 2. the store's group commit: logins recorded per second and fsyncs per login at several
//!    concurrency levels (one flush per login would cap this at the disk's fsync rate);
//! 3. end-to-end `POST /v1/login` over HTTP in dev mode (mock WeChat over real HTTP too):
//!    requests per second and latency percentiles.
//!
//! Sizes can be reduced for a quick look: `WXAUTH_BENCH_SCALE=0.1 cargo bench`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use wxauth::{
    config::{Mode, Settings, TokenSettings},
    domain::{SessionKey, User, UserId, WechatSession},
    startup::Application,
    store::Store,
    token::{SigningAlg, Tokens},
};

fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("WXAUTH_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    ((n as f64 * scale) as usize).max(10)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    tokens();
    rt.block_on(group_commit());
    rt.block_on(http_logins());
}

fn tokens() {
    println!("\n## Token issue + verify ({} each)", scaled(2000));
    println!("| alg | issue µs | verify µs |");
    println!("|---|---|---|");
    for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
        let dir = tempfile::tempdir().unwrap();
        let settings = TokenSettings {
            issuer: None,
            audience: "wxbench".into(),
            access_token_ttl: Duration::from_secs(900),
            signing_alg: alg,
        };
        let tokens = Tokens::open(&settings, "https://auth.example.com".into(), dir.path(), true).unwrap();
        let now = OffsetDateTime::now_utc();
        let user = User {
            id: UserId::new(),
            appid: "wxbench".into(),
            openid: "o_bench".into(),
            unionid: None,
            created_at: now,
            last_login_at: now,
        };
        let n = scaled(2000);
        let started = Instant::now();
        let issued: Vec<_> = (0..n).map(|_| tokens.issue(&user).unwrap()).collect();
        let issue = started.elapsed();
        let started = Instant::now();
        for t in &issued {
            tokens.verify(&t.token).unwrap();
        }
        let verify = started.elapsed();
        println!("| {alg} | {:.1} | {:.1} |", micros(issue, n), micros(verify, n));
    }
}

async fn group_commit() {
    let n = scaled(4000);
    println!("\n## Store: record_login with group commit ({n} first logins each)");
    println!("| concurrency | logins/s | flushes | flushes per login |");
    println!("|---|---|---|---|");
    for concurrency in [1usize, 8, 64, 256] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 64 << 20).unwrap());
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in (w..n).step_by(concurrency) {
                        let session = WechatSession {
                            openid: format!("o_{i}"),
                            unionid: None,
                            session_key: SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==".into()),
                        };
                        store.record_login("wxbench", &session).await.unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let elapsed = started.elapsed();
        let flushes = store.flush_count();
        println!(
            "| {concurrency} | {:.0} | {flushes} | {:.3} |",
            n as f64 / elapsed.as_secs_f64(),
            flushes as f64 / n as f64
        );
    }
}

async fn http_logins() {
    let n = scaled(3000);
    println!("\n## HTTP: POST /v1/login, dev mode, distinct users ({n} requests each)");
    println!("| concurrency | req/s | p50 ms | p99 ms | max ms | flushes per login |");
    println!("|---|---|---|---|---|---|");
    for concurrency in [1usize, 16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
            ("WXAUTH_DATA_DIR", dir.path().join("data").display().to_string()),
            ("WXAUTH_KEYS_DIR", dir.path().join("keys").display().to_string()),
        ];
        let settings =
            Settings::load_from(None, Mode::Dev, |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
                .unwrap();
        let app = Application::build(settings).await.unwrap();
        let url = format!("http://{}/v1/login", app.addr());
        let auth = app.auth();
        let server = tokio::spawn(app.run_until(std::future::pending()));
        let client = reqwest::Client::new();
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|w| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    for i in (w..n).step_by(concurrency) {
                        let t = Instant::now();
                        let resp = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(format!(r#"{{"code":"bench-{i}"}}"#))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(resp.status(), 200);
                        resp.bytes().await.unwrap();
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for w in workers {
            latencies.extend(w.await.unwrap());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "| {concurrency} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} |",
            n as f64 / elapsed.as_secs_f64(),
            millis(pct(0.50)),
            millis(pct(0.99)),
            millis(*latencies.last().unwrap()),
            auth.store().flush_count() as f64 / n as f64
        );
        server.abort();
    }
}

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
