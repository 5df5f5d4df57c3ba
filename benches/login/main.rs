//! `cargo bench`: the performance figures of docs/performance.md, measured in one run.
//!
//! The release binary runs as a child process, as an operator runs it; a fast fake WeChat
//! (hyper) and the load generator (hyper, keep-alive connections) run in this process, all
//! on loopback and sharing the machine's cores. Absolute numbers vary between runs on a
//! shared machine; the ratios within one run are the figures that count.
//!
//! Knobs: `WXAUTH_BENCH_SECS` (seconds per scenario, default 5), `WXAUTH_BENCH_USERS`
//! (users in the large store, default 1000000), `WXAUTH_BENCH_CONCURRENCY` (default 64),
//! `WXAUTH_BENCH_BIG_DIR` (keep the large store there and reuse it on later runs),
//! `WXAUTH_STORE_CACHE_MB` (passed to the server), `WXAUTH_BENCH_IMPORT` (accounts in the
//! import measurement, default 20000), `WXAUTH_BENCH_ONLY=import` (only that measurement).

mod fake_wechat;
mod load;
mod server;

use std::{
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use hyper::Method;
use load::{Run, Target, drive};
use server::{Server, disk_usage};
use time::OffsetDateTime;
use wxauth::{
    config::{SledSettings, StoreSettings, TokenSettings},
    domain::{Identity, SessionKey, User, UserId, WechatSession},
    domain::{KeyMode, SigningAlg},
    store::Store,
    token::Tokens,
};

/// Longer than wxauth's replay window (10 s), so that runs measure the steady state.
const WARM_UP: Duration = Duration::from_secs(11);

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(import());
    if std::env::var("WXAUTH_BENCH_ONLY").as_deref() == Ok("import") {
        return;
    }
    tokens();
    rt.block_on(http());
}

/// Logins of one returning user: every code maps to openid `o_bench`.
fn returning(addr: &str) -> Target {
    login(addr, |w, n| format!("bench#{w}-{n}"))
}

fn login(addr: &str, code: impl Fn(usize, usize) -> String + Send + Sync + 'static) -> Target {
    Target {
        addr: addr.to_owned(),
        method: Method::POST,
        path: "/v1/login",
        body: Some(Arc::new(move |w, n| format!(r#"{{"code":"{}"}}"#, code(w, n)))),
    }
}

fn get(addr: &str, path: &'static str) -> Target {
    Target { addr: addr.to_owned(), method: Method::GET, path, body: None }
}

/// A cheap, deterministic spread over `users` (not for anything but picking bench users).
fn pick(w: usize, n: usize, users: usize) -> usize {
    let mut x = (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n as u64).wrapping_add(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % users as u64) as usize
}

struct Row<'a> {
    figure: String,
    run: Option<&'a Run>,
    extra: String,
}

fn print_runs(rows: &[Row<'_>]) {
    println!("| scenario | req/s | p50 ms | p99 ms | failed | notes |");
    println!("|---|---:|---:|---:|---:|---|");
    for row in rows {
        match &row.run {
            Some(r) => println!(
                "| {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                row.figure,
                r.rate(),
                r.ms(0.50),
                r.ms(0.99),
                r.failed,
                row.extra
            ),
            None => println!("| {} | | | | | {} |", row.figure, row.extra),
        }
    }
}

async fn http() {
    let secs: f64 = knob("WXAUTH_BENCH_SECS", 5.0);
    let dur = Duration::from_secs_f64(secs);
    let users: usize = knob("WXAUTH_BENCH_USERS", 1_000_000);
    let c: usize = knob("WXAUTH_BENCH_CONCURRENCY", 64);
    let (wechat, knobs) = fake_wechat::start().await;
    println!("\n## HTTP ({c} connections, {secs} s per scenario, {} cores shared by all)", cores());

    // An empty store: the floor, returning users, JWKS.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &wechat);
    let addr = server.addr.clone();
    // Logins fill wxauth's 10 s replay window (and the allocator's pools) during their first
    // seconds; measure the steady state a running service is in.
    drive(&returning(&addr), c, WARM_UP).await;
    let healthz = drive(&get(&addr, "/healthz"), c, dur).await;
    let jwks = drive(&get(&addr, "/.well-known/jwks.json"), c, dur).await;
    let same = drive(&returning(&addr), c, dur).await;
    knobs.fresh_session_key.store(true, Ordering::Relaxed);
    let fresh = drive(&returning(&addr), c, dur).await;
    knobs.fresh_session_key.store(false, Ordering::Relaxed);
    let rss_empty = server.rss_mb();
    let returning_stats = server.stop();
    let returning_logins = same.ok + fresh.ok;

    // First-time users, each a durable creation, on a server of their own to count flushes.
    let dir_first = tempfile::tempdir().unwrap();
    let server = Server::start(dir_first.path(), &wechat);
    let warm = drive(&login(&server.addr, |w, n| format!("new{w}x{n}#1")), c, WARM_UP).await;
    let first = drive(&login(&server.addr, |w, n| format!("new{w}x{n}#1")), c, dur).await;
    let first_stats = server.stop();
    // Every login of this server created a user, the warm-up's included.
    let per_first = |v: u64| v as f64 / (warm.ok + first.ok).max(1) as f64;

    // Hidden latency: WeChat takes 100 ms, 1,000 logins at once.
    let server = Server::start(dir.path(), &wechat);
    knobs.delay_ms.store(100, Ordering::Relaxed);
    drive(&returning(&server.addr), 1000, WARM_UP).await;
    let hidden = drive(&returning(&server.addr), 1000, dur).await;
    knobs.delay_ms.store(0, Ordering::Relaxed);
    server.stop();

    // Overload: returning logins from ten times the connections of the runs above, each
    // sending again as soon as it is answered, while one more connection probes /healthz.
    let server = Server::start(dir.path(), &wechat);
    // The probe runs on a thread and runtime of its own: on the load generator's runtime it
    // would measure how long the generator's 640 tasks keep it from running.
    let health = get(&server.addr, "/healthz");
    let prober = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(drive(&health, 1, dur))
    });
    let flood = drive(&returning(&server.addr), 10 * c, dur).await;
    let probe = prober.join().unwrap();
    server.stop();

    // A large store, built through the store API.
    let big = tempfile::tempdir().unwrap();
    let big_dir = std::env::var_os("WXAUTH_BENCH_BIG_DIR").map_or_else(|| big.path().to_owned(), Into::into);
    let built = if big_dir.join("data").exists() {
        println!("(reusing the store in {})", big_dir.display());
        Duration::ZERO
    } else {
        build_users(&big_dir.join("data"), users).await
    };
    let server = Server::start(&big_dir, &wechat);
    let spread = move |w, n| format!("u{}#{w}-{n}", pick(w, n, users));
    drive(&login(&server.addr, spread), c, WARM_UP).await;
    let big_same = drive(&login(&server.addr, |w, n| format!("u42#{w}-{n}")), c, dur).await;
    let big_returning = drive(&login(&server.addr, spread), c, dur).await;
    let big_first = drive(&login(&server.addr, |w, n| format!("bignew{w}x{n}#1")), c, dur).await;
    let rss_big = server.rss_mb();
    server.stop();
    let disk_big = disk_usage(&big_dir.join("data")) as f64 / 1e6;

    print_runs(&[
        Row { figure: "1. `GET /healthz`".into(), run: Some(&healthz), extra: "the floor".into() },
        Row {
            figure: "2a. returning login, same session_key".into(),
            run: Some(&same),
            extra: format!("{:.3} × healthz", same.rate() / healthz.rate()),
        },
        Row {
            figure: "2b. returning login, new session_key each time".into(),
            run: Some(&fresh),
            extra: format!(
                "{:.3} × healthz; fsyncs per returning login {:.4}",
                fresh.rate() / healthz.rate(),
                returning_stats.fsyncs as f64 / returning_logins.max(1) as f64
            ),
        },
        Row {
            figure: "3. first-time login (durable)".into(),
            run: Some(&first),
            extra: format!(
                "{:.3} × returning; group commits per login {:.3}, fdatasyncs per login {:.3}",
                first.rate() / same.rate(),
                per_first(first_stats.group_commits),
                per_first(first_stats.fsyncs)
            ),
        },
        Row {
            figure: "4. `GET /.well-known/jwks.json`".into(),
            run: Some(&jwks),
            extra: format!("{:.3} × healthz", jwks.rate() / healthz.rate()),
        },
        Row {
            figure: format!("6a. returning login, {users} users, one user"),
            run: Some(&big_same),
            extra: format!("p50 {:.2} × empty store (index depth only)", big_same.ms(0.5) / same.ms(0.5)),
        },
        Row {
            figure: format!("6a. returning login, {users} users, random user"),
            run: Some(&big_returning),
            extra: format!("p50 {:.2} × empty store", big_returning.ms(0.5) / same.ms(0.5)),
        },
        Row {
            figure: format!("6b. first-time login, {users} users"),
            run: Some(&big_first),
            extra: format!("p50 {:.2} × empty store", big_first.ms(0.5) / first.ms(0.5)),
        },
        Row {
            figure: "7. hidden latency: WeChat 100 ms, 1000 connections".into(),
            run: Some(&hidden),
            extra: format!("{:.3} × the ideal 10000/s", hidden.rate() / 10_000.0),
        },
        Row {
            figure: format!("8a. overload: returning logins from {} connections", 10 * c),
            run: Some(&flood),
            extra: format!("{:.3} × the rate from {c}", flood.rate() / same.rate()),
        },
        Row {
            figure: "8b. `GET /healthz` during that overload, one connection".into(),
            run: Some(&probe),
            extra: "the liveness probe of an overloaded server".into(),
        },
    ]);
    println!(
        "\nStore with {users} users: built in {:.1} s through the store API ({:.0} first logins/s), \
         {disk_big:.0} MB on disk; server RSS {rss_big:.0} MB (empty store after its runs: {rss_empty:.0} MB).",
        built.as_secs_f64(),
        users as f64 / built.as_secs_f64()
    );

    println!("\n## Targets (same run)");
    println!("| figure | measured | target | met |");
    println!("|---|---:|---|---|");
    let targets = [
        ("returning login / healthz", same.rate() / healthz.rate(), "≥ 0.20", same.rate() / healthz.rate() >= 0.20),
        ("returning login p99 ms", same.ms(0.99), "< 20", same.ms(0.99) < 20.0),
        ("first-time / returning", first.rate() / same.rate(), "≥ 0.5", first.rate() / same.rate() >= 0.5),
        ("first-time p99 ms", first.ms(0.99), "< 50", first.ms(0.99) < 50.0),
        ("JWKS / healthz", jwks.rate() / healthz.rate(), "≥ 0.8", jwks.rate() / healthz.rate() >= 0.8),
        (
            "returning p50 at 1M / empty, one user",
            big_same.ms(0.5) / same.ms(0.5),
            "≤ 1.2",
            big_same.ms(0.5) / same.ms(0.5) <= 1.2,
        ),
        (
            "returning p50 at 1M / empty, random user",
            big_returning.ms(0.5) / same.ms(0.5),
            "≤ 1.2",
            big_returning.ms(0.5) / same.ms(0.5) <= 1.2,
        ),
        (
            "first-time p50 at 1M / empty",
            big_first.ms(0.5) / first.ms(0.5),
            "≤ 1.2",
            big_first.ms(0.5) / first.ms(0.5) <= 1.2,
        ),
        ("RSS MB at 1M users", rss_big, "< 200", rss_big < 200.0),
        ("hidden latency / ideal", hidden.rate() / 10_000.0, "≥ 0.8", hidden.rate() / 10_000.0 >= 0.8),
        ("healthz p99 ms under 10× login load", probe.ms(0.99), "< 50", probe.ms(0.99) < 50.0),
    ];
    for (figure, value, target, met) in targets {
        println!("| {figure} | {value:.3} | {target} | {} |", if met { "yes" } else { "NO" });
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Creates `users` users (openids `o_u0`, `o_u1`, ...) through [`Store::record_login`].
async fn build_users(data_dir: &Path, users: usize) -> Duration {
    let settings = StoreSettings::Sled(SledSettings { data_dir: data_dir.to_owned(), cache_bytes: 64 << 20 });
    // The server that later serves this store seals with the key in `keys/` beside it.
    let sealer = wxauth::store::sealed::Sealer::load_or_create(&data_dir.parent().unwrap().join("keys")).unwrap();
    let store = Arc::new(Store::open(&settings, sealer).await.unwrap());
    let started = Instant::now();
    let writers = 256;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..users).step_by(writers) {
                    let session = WechatSession {
                        openid: format!("o_u{i}"),
                        unionid: None,
                        session_key: Some(SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==".into())),
                    };
                    store.record_login("wxbench0000000000", &session).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await.unwrap();
    drop(store);
    // The store's lock goes with its flusher task, a moment after the last handle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    elapsed
}

fn tokens() {
    let n = knob("WXAUTH_BENCH_TOKENS", 2000usize);
    println!("\n## 5. Token issue + verify ({n} each, one thread)");
    println!("| alg | issue µs | verify µs |");
    println!("|---|---:|---:|");
    for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
        let dir = tempfile::tempdir().unwrap();
        let settings = TokenSettings {
            issuer: None,
            audience: "wxbench".into(),
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(3600),
            refresh_families_per_user: 20,
            signing_alg: alg,
            key_activation: Duration::from_secs(600),
            key_rotation: None,
        };
        let tokens = Tokens::open(
            &settings,
            "https://auth.example.com".into(),
            dir.path(),
            KeyMode::Dev,
            wxauth::clock::Clock::system(),
        )
        .unwrap();
        let now = OffsetDateTime::now_utc();
        let identity = Identity { appid: "wxbench".into(), openid: "o_bench".into() };
        let user = User {
            id: UserId::new(),
            identities: vec![identity.clone()],
            unionid: None,
            account: None,
            unionid_shared_with: Vec::new(),
            created_at: now,
            last_login_at: now,
            controls: Default::default(),
        };
        let started = Instant::now();
        let issued: Vec<_> = (0..n).map(|_| tokens.issue(&user, &identity, uuid::Uuid::nil()).unwrap()).collect();
        let issue = started.elapsed();
        let started = Instant::now();
        for t in &issued {
            tokens.verify(&t.token).unwrap();
        }
        let verify = started.elapsed();
        let micros = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        println!("| {alg} | {:.1} | {:.1} |", micros(issue), micros(verify));
    }
}

/// `wxauth accounts import` of a customer list, on sled: how long the store takes to add
/// that many accounts with phone numbers (all or none, one transaction), and what a lookup
/// by number costs afterwards.
async fn import() {
    let n: usize = knob("WXAUTH_BENCH_IMPORT", 20_000);
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings::Sled(SledSettings { data_dir: dir.path().join("data"), cache_bytes: 64 << 20 });
    let sealer = wxauth::store::sealed::Sealer::load_or_create(&dir.path().join("keys")).unwrap();
    let store = Store::open(&settings, sealer).await.unwrap();
    let accounts: Vec<wxauth::store::NewAccount> = (0..n)
        .map(|i| wxauth::store::NewAccount {
            username: format!("customer-{i}"),
            password_hash: String::new(),
            phone: Some(format!("+86139{i:08}")),
        })
        .collect();
    let started = Instant::now();
    store.add_accounts(&accounts).await.unwrap();
    let took = started.elapsed();
    let lookups = 10_000.min(n);
    let started = Instant::now();
    for i in 0..lookups {
        assert!(store.account_by_phone(&format!("+86139{i:08}")).await.unwrap().is_some());
    }
    let lookup = started.elapsed();
    println!("\n## Account import (sled, {n} accounts with phone numbers)");
    println!("| accounts | seconds | accounts/s | lookup by number µs |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.2} | {:.0} | {:.1} |",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        lookup.as_secs_f64() * 1e6 / lookups as f64
    );
}
