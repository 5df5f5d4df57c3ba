//! The load generator: `concurrency` keep-alive HTTP/1.1 connections (hyper), each sending
//! its next request as soon as the previous answer arrived, for a fixed time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What one request looks like; `body(worker, n)` makes the n-th body of a worker.
#[derive(Clone)]
pub struct Target {
    /// `host:port` of the server.
    pub addr: String,
    /// `GET` or `POST`.
    pub method: Method,
    /// Request path.
    pub path: &'static str,
    /// Body maker for POSTs (JSON).
    pub body: Option<Arc<dyn Fn(usize, usize) -> String + Send + Sync>>,
}

/// The result of one run.
pub struct Run {
    /// Successful requests.
    pub ok: usize,
    /// Answers other than 200, and connection failures.
    pub failed: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Sorted latencies of the successful requests.
    pub latencies: Vec<Duration>,
}

impl Run {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency percentile in milliseconds (`p` in 0..=1).
    pub fn ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// Runs so far: worker numbers differ between runs, so no code is ever sent twice (wxauth
/// answers a repeated code from its 10 s replay window without calling WeChat).
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Drives `target` with `concurrency` connections for `duration`.
pub async fn drive(target: &Target, concurrency: usize, duration: Duration) -> Run {
    let first_worker = RUNS.fetch_add(1, Ordering::Relaxed) * 100_000;
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let target = target.clone();
            tokio::spawn(async move { worker(&target, first_worker + w, deadline).await })
        })
        .collect();
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for w in workers {
        let (o, f, l) = w.await.unwrap();
        ok += o;
        failed += f;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Run { ok, failed, elapsed, latencies }
}

async fn worker(target: &Target, w: usize, deadline: Instant) -> (usize, usize, Vec<Duration>) {
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::with_capacity(1 << 14));
    let mut n = 0;
    'connect: while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(&target.addr).await else {
            failed += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = http1::handshake(TokioIo::new(stream)).await else {
            failed += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let body = target.body.as_ref().map(|make| make(w, n)).unwrap_or_default();
            n += 1;
            let mut req =
                Request::builder().method(target.method.clone()).uri(target.path).header("host", &target.addr);
            if target.body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let req = req.body(Full::new(Bytes::from(body))).unwrap();
            let sent = Instant::now();
            let Ok(resp) = sender.send_request(req).await else {
                failed += 1;
                continue 'connect;
            };
            let status = resp.status();
            if resp.into_body().collect().await.is_err() {
                failed += 1;
                continue 'connect;
            }
            if status == 200 {
                ok += 1;
                latencies.push(sent.elapsed());
            } else {
                failed += 1;
            }
        }
    }
    (ok, failed, latencies)
}
