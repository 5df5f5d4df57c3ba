//! `cargo bench --bench replicas`: login throughput on PostgreSQL with one and two
//! replicas, next to sled, in one run (docs/performance.md).
//!
//! Needs a PostgreSQL server: `export WXAUTH_TEST_DATABASE_URL=$(bash .ci/postgres
//! /tmp/wxauth-pg)` starts a throwaway one on loopback; each scenario gets a fresh database
//! in it. The release binary runs as child processes, as an operator runs it; the fake
//! WeChat and the load generator of `benches/login` run in this process. Everything shares
//! the machine's cores, PostgreSQL included: on one machine a second replica adds no
//! cores, so the two-replica figure shows what coordinating through the database costs,
//! not what a second machine would add.
//!
//! Knobs: `WXAUTH_BENCH_SECS` (seconds per scenario, default 5), `WXAUTH_BENCH_CONCURRENCY`
//! (connections in all, split between the replicas; default 64).

#[allow(dead_code)]
#[path = "../login/fake_wechat.rs"]
mod fake_wechat;
#[allow(dead_code)]
#[path = "../login/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "../../tests/support/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../login/server.rs"]
mod server;

use std::{sync::Arc, time::Duration};

use hyper::Method;
use load::{Run, Target, drive};
use server::Server;

/// Longer than wxauth's replay window (10 s), so that runs measure the steady state.
const WARM_UP: Duration = Duration::from_secs(11);

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn login(addr: &str, code: fn(usize, usize) -> String) -> Target {
    Target {
        addr: addr.to_owned(),
        method: Method::POST,
        path: "/v1/login",
        body: Some(Arc::new(move |w, n| format!(r#"{{"code":"{}"}}"#, code(w, n)))),
    }
}

/// Every code logs in openid `o_bench`.
fn returning(w: usize, n: usize) -> String {
    format!("bench#{w}-{n}")
}

/// Every code logs in a new openid.
fn first_time(w: usize, n: usize) -> String {
    format!("new{w}x{n}#1")
}

/// Drives every server at once, `connections` split evenly, and merges the runs.
async fn drive_all(servers: &[Server], code: fn(usize, usize) -> String, connections: usize, d: Duration) -> Run {
    let per = (connections / servers.len()).max(1);
    let runs = futures_util::future::join_all(servers.iter().map(|s| {
        let target = login(&s.addr, code);
        async move { drive(&target, per, d).await }
    }))
    .await;
    let mut merged = Run { ok: 0, failed: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for run in runs {
        merged.ok += run.ok;
        merged.failed += run.failed;
        merged.elapsed = merged.elapsed.max(run.elapsed);
        merged.latencies.extend(run.latencies);
    }
    merged.latencies.sort_unstable();
    merged
}

/// Starts `replicas` servers sharing `dir`'s keys, on `store` settings.
fn start(dir: &std::path::Path, wechat: &str, replicas: usize, store: &[(&str, &str)]) -> Vec<Server> {
    (0..replicas)
        .map(|i| {
            let socket = dir.join(format!("admin-{i}.sock")).display().to_string();
            let mut extra = store.to_vec();
            extra.push(("WXAUTH_ADMIN_SOCKET", &socket));
            Server::start_with(dir, wechat, &extra)
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let Some(_) = postgres::server_url() else { return };
    let secs: f64 = knob("WXAUTH_BENCH_SECS", 5.0);
    let d = Duration::from_secs_f64(secs);
    let c: usize = knob("WXAUTH_BENCH_CONCURRENCY", 64);
    let (wechat, _knobs) = fake_wechat::start().await;
    println!("\n## Logins by store and replicas ({c} connections in all, {secs} s per scenario)");
    println!("| store | replicas | returning req/s | p50 ms | p99 ms | first-time req/s | p50 ms | p99 ms | failed |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");

    let mut baseline = None;
    for (name, replicas) in [("sled", 1), ("postgres", 1), ("postgres", 2)] {
        let dir = tempfile::tempdir().unwrap();
        let url = if name == "postgres" { postgres::fresh_database() } else { None };
        let store: Vec<(&str, &str)> = match &url {
            Some(url) => vec![("WXAUTH_STORE", "postgres"), ("WXAUTH_DATABASE_URL", url)],
            None => vec![],
        };
        let servers = start(dir.path(), &wechat, replicas, &store);
        drive_all(&servers, returning, c, WARM_UP).await;
        let back = drive_all(&servers, returning, c, d).await;
        let first = drive_all(&servers, first_time, c, d).await;
        for server in servers {
            server.stop();
        }
        let (b, f) = *baseline.get_or_insert((back.rate(), first.rate()));
        println!(
            "| {name} | {replicas} | {:.0} ({:.2} × sled) | {:.2} | {:.2} | {:.0} ({:.2} × sled) | {:.2} | {:.2} | {} |",
            back.rate(),
            back.rate() / b,
            back.ms(0.5),
            back.ms(0.99),
            first.rate(),
            first.rate() / f,
            first.ms(0.5),
            first.ms(0.99),
            back.failed + first.failed
        );
    }
}
