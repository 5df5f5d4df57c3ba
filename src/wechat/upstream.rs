//! The one road to WeChat. Every request passes a bound on requests in flight and a
//! circuit breaker, runs against its caller's deadline, and has its answer capped in size
//! and recorded in the metrics. Shared by every app's client: they all reach one WeChat.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use super::{WechatError, clean};
use crate::metrics::{BreakerState, Metrics};

/// Largest answer read from WeChat. Its answers are a few hundred bytes; anything near this
/// is not WeChat, and reading it whole would let one answer take the memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long a client refused for too many requests in flight is told to wait.
const OVERLOADED_RETRY: Duration = Duration::from_secs(1);

/// Limits of the road to WeChat, as configured.
pub use crate::config::WechatLimits as Limits;

/// Requests to WeChat, with their bound, breaker and metrics.
pub struct Upstream {
    http: reqwest::Client,
    permits: Arc<Semaphore>,
    breaker: Breaker,
    metrics: Metrics,
}

impl Upstream {
    /// The road over `http`.
    pub fn new(http: reqwest::Client, limits: Limits, metrics: Metrics) -> Self {
        Self {
            http,
            permits: Arc::new(Semaphore::new(limits.max_inflight)),
            breaker: Breaker::new(limits.breaker_failures, limits.breaker_open, metrics.clone()),
            metrics,
        }
    }

    /// The HTTP client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The metrics it counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the breaker lets requests through (`/readyz`).
    pub fn is_closed(&self) -> bool {
        self.breaker.state() == BreakerState::Closed
    }

    /// Sends `request` to WeChat's `api` and hands a 200's body to `read`, all before
    /// `deadline`. Refused at once, without a request, when too many are in flight or the
    /// breaker is open.
    pub async fn call<T>(
        &self,
        api: &'static str,
        request: reqwest::RequestBuilder,
        deadline: Instant,
        read: impl FnOnce(&[u8]) -> Result<T, WechatError>,
    ) -> Result<T, WechatError> {
        self.call_limited(api, request, deadline, MAX_ANSWER_BYTES, read).await
    }

    /// [`Upstream::call`] for an answer of up to `limit` bytes (an image).
    pub async fn call_limited<T>(
        &self,
        api: &'static str,
        request: reqwest::RequestBuilder,
        deadline: Instant,
        limit: usize,
        read: impl FnOnce(&[u8]) -> Result<T, WechatError>,
    ) -> Result<T, WechatError> {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err(WechatError::Unavailable {
                reason: "too many requests to WeChat are in flight",
                retry_after: OVERLOADED_RETRY,
            });
        };
        let admission = self.breaker.admit()?;
        let started = Instant::now();
        let result = match tokio::time::timeout_at(deadline.into(), exchange(request, limit)).await {
            Ok(Ok(body)) => read(&body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WechatError::Timeout),
        };
        self.metrics.wechat_request(api, started.elapsed(), result.as_ref().err().map(WechatError::errcode_label));
        admission.settle(!matches!(result, Err(WechatError::Timeout | WechatError::Transport(_))));
        result
    }
}

/// One exchange: the body of a 200, at most `limit` bytes of it.
async fn exchange(request: reqwest::RequestBuilder, limit: usize) -> Result<Vec<u8>, WechatError> {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_server_error() {
        return Err(WechatError::Transport(format!("WeChat answered HTTP {}", status.as_u16())));
    }
    if status != reqwest::StatusCode::OK {
        return Err(WechatError::Upstream(format!("WeChat answered HTTP {}", status.as_u16())));
    }
    let too_large = || WechatError::Transport(format!("WeChat's answer is larger than {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failed exchange; `without_url` because the URL may hold the AppSecret.
fn transport_error(err: reqwest::Error) -> WechatError {
    if err.is_timeout() {
        WechatError::Timeout
    } else {
        WechatError::Transport(format!("cannot reach WeChat: {}", clean(&err.without_url().to_string())))
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const PROBING: u8 = 2;

/// Opens after `threshold` consecutive transport failures; refuses requests while open;
/// after `open_for`, lets one probe through, whose success closes it and whose failure
/// opens it again. Lock-free: the closed path, taken by every login, is one atomic load.
struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: AtomicU32,
    state: AtomicU8,
    /// When an open breaker lets a probe through, in milliseconds since `epoch`.
    reopens_at: AtomicU64,
    epoch: Instant,
    metrics: Metrics,
}

impl Breaker {
    fn new(threshold: u32, open_for: Duration, metrics: Metrics) -> Self {
        metrics.breaker(BreakerState::Closed);
        Self {
            threshold,
            open_for,
            failures: AtomicU32::new(0),
            state: AtomicU8::new(CLOSED),
            reopens_at: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    fn admit(&self) -> Result<Admission<'_>, WechatError> {
        let refused = |retry_after| WechatError::Unavailable {
            reason: "WeChat failed repeatedly; requests are paused (circuit breaker open)",
            retry_after,
        };
        match self.state.load(Ordering::Acquire) {
            CLOSED => Ok(Admission { breaker: self, probe: false, settled: false }),
            OPEN => {
                let (now, at) = (self.now_ms(), self.reopens_at.load(Ordering::Acquire));
                if now < at {
                    return Err(refused(Duration::from_millis(at - now)));
                }
                if self.state.compare_exchange(OPEN, PROBING, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    return Err(refused(self.open_for));
                }
                self.metrics.breaker(BreakerState::HalfOpen);
                tracing::info!("WeChat circuit breaker half-open: sending one probe");
                Ok(Admission { breaker: self, probe: true, settled: false })
            }
            _ => Err(refused(self.open_for)),
        }
    }

    fn open(&self) {
        self.reopens_at.store(self.now_ms() + self.open_for.as_millis() as u64, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.metrics.breaker(BreakerState::Open);
    }
}

/// Leave to send one request; [`Admission::settle`] reports how it went. A probe dropped
/// unsettled (its caller went away) counts as failed, so that the breaker never stays
/// half-open with nobody probing.
struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Admission<'_> {
    fn settle(mut self, reached: bool) {
        self.settled = true;
        let b = self.breaker;
        if reached {
            b.failures.store(0, Ordering::Relaxed);
            if b.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
                b.metrics.breaker(BreakerState::Closed);
                tracing::info!("WeChat circuit breaker closed: WeChat answers again");
            }
            return;
        }
        let failures = b.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let trips = if self.probe {
            true
        } else {
            failures >= b.threshold
                && b.state.compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
        };
        if trips {
            b.open();
            tracing::error!(
                consecutive_failures = failures,
                open_secs = b.open_for.as_secs_f64(),
                "WeChat circuit breaker open: logins answer 503 without calling WeChat"
            );
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            // Probe again at once: the next caller finds the breaker open and due.
            self.breaker.reopens_at.store(0, Ordering::Release);
            self.breaker.state.store(OPEN, Ordering::Release);
            self.breaker.metrics.breaker(BreakerState::Open);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(threshold, Duration::from_millis(50), Metrics::new())
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_of_consecutive_failures_only() {
        let b = breaker(3);
        for _ in 0..2 {
            b.admit().unwrap().settle(false);
        }
        b.admit().unwrap().settle(true);
        for _ in 0..2 {
            b.admit().unwrap().settle(false);
        }
        assert_eq!(b.state(), BreakerState::Closed, "a success in between restarts the count");
        b.admit().unwrap().settle(false);
        assert_eq!(b.state(), BreakerState::Open);
        match b.admit() {
            Err(WechatError::Unavailable { retry_after, .. }) => assert!(retry_after <= Duration::from_millis(50)),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn one_probe_at_a_time_and_its_outcome_decides() {
        let b = breaker(1);
        b.admit().unwrap().settle(false);
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_err(), "a second caller got through while the probe was out");
        probe.settle(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_err(), "a failed probe did not reopen for the whole period");
        std::thread::sleep(Duration::from_millis(60));
        b.admit().unwrap().settle(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn an_open_breaker_tells_callers_how_long_until_its_probe() {
        let b = Breaker::new(1, Duration::from_secs(10), Metrics::new());
        // Some time on the breaker's clock, so that the arithmetic cannot hide behind a zero.
        std::thread::sleep(Duration::from_millis(30));
        b.admit().unwrap().settle(false);
        std::thread::sleep(Duration::from_millis(30));
        match b.admit() {
            Err(WechatError::Unavailable { retry_after, .. }) => assert!(
                (Duration::from_secs(9)..Duration::from_secs(10)).contains(&retry_after),
                "Retry-After {retry_after:?} for a breaker open 10 s"
            ),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_breaker_open_for_no_time_lets_the_very_next_caller_probe() {
        let b = Breaker::new(1, Duration::ZERO, Metrics::new());
        b.admit().unwrap().settle(false);
        assert_eq!(b.state(), BreakerState::Open);
        let probe = b.admit();
        assert!(probe.as_ref().is_ok_and(|p| p.probe), "refused at the moment the probe is due");
    }

    #[test]
    fn the_breaker_state_metric_follows_open_and_close() {
        let metrics = Metrics::new();
        let b = Breaker::new(1, Duration::ZERO, metrics.clone());
        let state =
            || metrics.render().lines().find_map(|l| l.strip_prefix("wxauth_wechat_breaker_state ").map(str::to_owned));
        assert_eq!(state().as_deref(), Some("0"));
        b.admit().unwrap().settle(false);
        assert_eq!(state().as_deref(), Some("1"));
        let probe = b.admit().unwrap();
        assert_eq!(state().as_deref(), Some("2"));
        probe.settle(true);
        assert_eq!(state().as_deref(), Some("0"), "closed, but the metric says otherwise");
    }

    #[test]
    fn a_probe_whose_caller_went_away_lets_the_next_caller_probe() {
        let b = breaker(1);
        b.admit().unwrap().settle(false);
        std::thread::sleep(Duration::from_millis(60));
        drop(b.admit().unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_ok(), "nobody may probe any more");
    }

    /// Answers one request on loopback with `len` bytes, announced by `Content-Length` or
    /// sent chunked in 1 KiB pieces, and returns what [`exchange`] made of it.
    async fn exchange_answer(len: usize, chunked: bool) -> Result<Vec<u8>, WechatError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = vec![b'x'; len];
            let mut answer = Vec::new();
            if chunked {
                answer.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
                for piece in body.chunks(1024) {
                    answer.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    answer.extend_from_slice(piece);
                    answer.extend_from_slice(b"\r\n");
                }
                answer.extend_from_slice(b"0\r\n\r\n");
            } else {
                answer.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n").as_bytes(),
                );
                answer.extend_from_slice(&body);
            }
            // The client may hang up early on an answer it refuses.
            let _ = socket.write_all(&answer).await;
        });
        let result = exchange(reqwest::Client::new().get(url), MAX_ANSWER_BYTES).await;
        server.abort();
        result
    }

    #[tokio::test]
    async fn an_answer_of_exactly_64_kib_is_read_whole_with_or_without_a_length() {
        for chunked in [false, true] {
            let body = exchange_answer(MAX_ANSWER_BYTES, chunked).await;
            assert_eq!(body.map(|b| b.len()).map_err(|e| e.to_string()), Ok(64 * 1024), "chunked: {chunked}");
        }
    }

    #[tokio::test]
    async fn an_answer_one_byte_over_64_kib_is_refused_with_or_without_a_length() {
        for (len, chunked) in [(MAX_ANSWER_BYTES + 1, false), (MAX_ANSWER_BYTES + 1, true), (1 << 20, true)] {
            match exchange_answer(len, chunked).await {
                Err(WechatError::Transport(text)) => assert!(text.contains("larger than"), "{text}"),
                other => panic!("{len} bytes, chunked: {chunked}: {:?}", other.map(|b| b.len())),
            }
        }
    }
}
