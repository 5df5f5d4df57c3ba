//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{
    ApiTags,
    error::{ErrorBody, ErrorCode},
};
use crate::auth::Auth;

/// Health status.
#[derive(Debug, Object)]
pub struct HealthBody {
    /// Always `ok`.
    pub status: String,
}

/// Health answer.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The store answers reads and its last flush reached the disk.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
    /// `temporarily_unavailable`: the store does not answer or cannot write to disk.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// What `/readyz` checked.
#[derive(Debug, Object)]
pub struct ReadyBody {
    /// Always `ready`.
    pub status: String,
    /// `ok`: a probe write reached the disk.
    pub store: String,
    /// `ok`: a signing key is loaded; the algorithms published.
    pub keys: String,
    /// `ok`: the circuit breaker in front of WeChat is closed.
    pub wechat: String,
}

/// Readiness answer.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready for traffic.
    #[oai(status = 200)]
    Ok(Json<ReadyBody>),
    /// `not_ready`: the description names each failed check: `store` (cannot write),
    /// `keys` (no signing key) or `wechat` (circuit breaker open).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// How often `/readyz` starts its durable write probe at most, however many ask.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The store probe of `/readyz`, shared: each probe is a write that waits for the disk, and
/// `/readyz` answers anyone, so a probe started less than an interval ago, or still running,
/// answers every asker. The probe runs in a task of its own, so that askers who hang up
/// cannot cancel it and make the next one start another.
pub struct SharedProbe {
    interval: Duration,
    last: Mutex<Option<(Instant, Shared<BoxFuture<'static, bool>>)>>,
}

impl SharedProbe {
    /// No probe yet; probes start at least `interval` apart.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::new(None) }
    }

    /// Whether the latest probe succeeded, starting `probe` first unless one started less
    /// than the interval ago or is still running.
    pub async fn check<F>(&self, probe: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = bool> + Send + 'static,
    {
        let shared = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            match &*last {
                Some((started, result)) if started.elapsed() < self.interval || result.peek().is_none() => {
                    result.clone()
                }
                _ => {
                    let task = tokio::spawn(probe());
                    // A probe that panicked proves nothing: not ready.
                    let result = async move { task.await.unwrap_or(false) }.boxed().shared();
                    *last = Some((Instant::now(), result.clone()));
                    result
                }
            }
        };
        shared.await
    }
}

/// Operations for load balancers and orchestrators.
pub struct HealthApi {
    /// The service.
    pub auth: Arc<Auth>,
    /// The store probe of `/readyz`, at most one per [`PROBE_INTERVAL`].
    probe: SharedProbe,
}

impl HealthApi {
    /// The operations, with no probe made yet.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth, probe: SharedProbe::new(PROBE_INTERVAL) }
    }

    /// Whether the store takes durable writes, by the latest shared probe.
    async fn store_writable(&self) -> bool {
        let auth = self.auth.clone();
        self.probe
            .check(|| async move {
                auth.metrics().readiness_probed();
                match auth.store().check_writable().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "readiness: the store cannot write");
                        false
                    }
                }
            })
            .await
    }
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the database answers reads and writes reach the disk. It does not look at
    /// WeChat: restarting wxauth does not help when WeChat is down.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        liveness(&self.auth).await
    }

    /// Readiness
    ///
    /// 200 when a probe write reaches the disk, a signing key is loaded and the circuit
    /// breaker in front of WeChat is closed; otherwise 503 naming what is wrong. Point a
    /// load balancer's or orchestrator's readiness check here, and the liveness check at
    /// `/healthz`. The probe write is made at most once a second; askers within that
    /// second share its result.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadyResponse {
        let mut problems = Vec::new();
        let store = if self.store_writable().await {
            "ok".to_owned()
        } else {
            problems.push("store: cannot write (see the server log)".to_owned());
            "failing".to_owned()
        };
        let algorithms = self.auth.tokens().algorithms();
        let keys = if algorithms.is_empty() {
            problems.push("keys: no signing key is loaded".to_owned());
            "failing".to_owned()
        } else {
            format!("ok ({})", algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "))
        };
        let wechat = if self.auth.wechat_reachable() {
            "ok".to_owned()
        } else {
            problems.push("wechat: the circuit breaker is open after repeated failures".to_owned());
            "failing".to_owned()
        };
        if problems.is_empty() {
            ReadyResponse::Ok(Json(ReadyBody { status: "ready".into(), store, keys, wechat }))
        } else {
            ReadyResponse::Unavailable(super::error::body(
                ErrorCode::NotReady,
                format!("not ready: {}", problems.join("; ")),
            ))
        }
    }
}

/// The answer of `GET /healthz`: 200 while the store answers reads and its last flush
/// reached the disk. Served by a route of its own ahead of the generated router (see
/// [`super::routes`]); the operation above documents it.
pub(super) async fn liveness(auth: &Auth) -> HealthResponse {
    match auth.store().check().await {
        Ok(()) => HealthResponse::Ok(Json(HealthBody { status: "ok".into() })),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            HealthResponse::Unavailable(super::error::body(
                ErrorCode::TemporarilyUnavailable,
                "the database is not answering or not writing; see the server log",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A probe that counts its runs, takes `takes` and answers `ok`.
    fn probe(runs: &Arc<AtomicUsize>, takes: Duration, ok: bool) -> impl Future<Output = bool> + Send + 'static {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(takes).await;
            ok
        }
    }

    #[tokio::test]
    async fn concurrent_and_repeated_askers_within_the_interval_share_one_probe() {
        let shared = Arc::new(SharedProbe::new(Duration::from_millis(300)));
        let runs = Arc::new(AtomicUsize::new(0));
        let askers: Vec<_> = (0..50)
            .map(|_| {
                let (shared, runs) = (shared.clone(), runs.clone());
                tokio::spawn(async move { shared.check(|| probe(&runs, Duration::from_millis(50), true)).await })
            })
            .collect();
        for asker in askers {
            assert!(asker.await.unwrap());
        }
        assert!(shared.check(|| probe(&runs, Duration::ZERO, false)).await, "a repeated asker probed again");
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!shared.check(|| probe(&runs, Duration::ZERO, false)).await, "no new probe after the interval");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_probe_outlasting_the_interval_is_waited_for_not_doubled_nor_cancelled_by_hang_ups() {
        let shared = SharedProbe::new(Duration::from_millis(20));
        let runs = Arc::new(AtomicUsize::new(0));
        // The first asker hangs up at once; the probe goes on without it.
        let hung_up = tokio::time::timeout(
            Duration::from_millis(5),
            shared.check(|| probe(&runs, Duration::from_millis(200), true)),
        );
        assert!(hung_up.await.is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;

        assert!(shared.check(|| probe(&runs, Duration::ZERO, false)).await, "did not share the running probe");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
