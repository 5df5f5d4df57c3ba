//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! One registry per running server (not a process-wide one), so that servers started side
//! by side (the tests start dozens in one process) count only their own traffic. The
//! counters a login touches are resolved once up front where their labels are known.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Api {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Errcode {
    api: &'static str,
    errcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct App {
    appid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Alg {
    alg: &'static str,
}

/// The breaker's state as the gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed = 0,
    /// Calls are refused without reaching WeChat.
    Open = 1,
    /// One probe is on its way.
    HalfOpen = 2,
}

struct Inner {
    registry: Registry,
    logins: Family<Outcome, Counter>,
    login_success: Counter,
    wechat_duration: Family<Api, Histogram>,
    wechat_errors: Family<Errcode, Counter>,
    breaker_state: Gauge,
    in_flight: Gauge<i64, AtomicI64>,
    tokens_issued: Family<Alg, Counter<u64, AtomicU64>>,
    readiness_probes: Counter,
    webhook_deliveries: Family<Outcome, Counter>,
    phone_verifications: Family<App, Counter>,
    log_lines_dropped: Counter,
}

/// The server's metrics. Cheap to clone; clones count into one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding every wxauth metric, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wxauth");
        let logins = Family::<Outcome, Counter>::default();
        registry.register(
            "logins",
            "Logins (POST /v1/login) by outcome: success, or the error code answered",
            logins.clone(),
        );
        let wechat_duration = Family::<Api, Histogram>::new_with_constructor(|| {
            // 5 ms .. ~10 s: WeChat usually answers in 50-300 ms; the timeout is seconds.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "wechat_request_duration_seconds",
            "Duration of requests to WeChat by API, failures included",
            wechat_duration.clone(),
        );
        let wechat_errors = Family::<Errcode, Counter>::default();
        registry.register(
            "wechat_errors",
            "Failed requests to WeChat by API and errcode (timeout and transport for failures without one)",
            wechat_errors.clone(),
        );
        let breaker_state = Gauge::default();
        registry.register(
            "wechat_breaker_state",
            "The WeChat circuit breaker: 0 closed, 1 open, 2 half-open (one probe on its way)",
            breaker_state.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register("http_requests_in_flight", "HTTP requests being answered", in_flight.clone());
        let tokens_issued = Family::<Alg, Counter>::default();
        registry.register("tokens_issued", "Access tokens signed, by algorithm", tokens_issued.clone());
        let readiness_probes = Counter::default();
        registry.register(
            "readiness_probes",
            "Durable write probes made for /readyz (at most one a second, however many ask)",
            readiness_probes.clone(),
        );
        let webhook_deliveries = Family::<Outcome, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome: sent, failed (retried), given_up (24 hours after the event), dropped (event or webhook gone)",
            webhook_deliveries.clone(),
        );
        let phone_verifications = Family::<App, Counter>::default();
        registry.register(
            "wechat_phone_verifications",
            "Phone numbers WeChat verified through getuserphonenumber, by app: the calls WeChat bills",
            phone_verifications.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines (access log included) dropped because stderr did not keep up with the server",
            log_lines_dropped.clone(),
        );
        let login_success = logins.get_or_create(&Outcome { outcome: "success".into() }).clone();
        Self {
            inner: Arc::new(Inner {
                registry,
                logins,
                login_success,
                wechat_duration,
                wechat_errors,
                breaker_state,
                in_flight,
                tokens_issued,
                readiness_probes,
                webhook_deliveries,
                phone_verifications,
                log_lines_dropped,
            }),
        }
    }

    /// Counts a webhook delivery attempt by its `outcome`.
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.inner.webhook_deliveries.get_or_create(&Outcome { outcome: outcome.to_owned() }).inc();
    }

    /// Counts a phone number WeChat verified for `appid` (a billed call).
    pub fn phone_verified(&self, appid: &str) {
        self.inner.phone_verifications.get_or_create(&App { appid: appid.to_owned() }).inc();
    }

    /// Counts a successful login.
    pub fn login_succeeded(&self) {
        self.inner.login_success.inc();
    }

    /// Counts a failed login by the error code it was answered with.
    pub fn login_failed(&self, error: &str) {
        self.inner.logins.get_or_create(&Outcome { outcome: error.to_owned() }).inc();
    }

    /// Records one request to WeChat's `api`, and its errcode (or `timeout`, `transport`)
    /// when it failed.
    pub fn wechat_request(&self, api: &'static str, took: Duration, errcode: Option<String>) {
        self.inner.wechat_duration.get_or_create(&Api { api }).observe(took.as_secs_f64());
        if let Some(errcode) = errcode {
            self.inner.wechat_errors.get_or_create(&Errcode { api, errcode }).inc();
        }
    }

    /// Sets the breaker gauge.
    pub fn breaker(&self, state: BreakerState) {
        self.inner.breaker_state.set(state as i64);
    }

    /// Counts an access token signed with `alg`.
    pub fn token_issued(&self, alg: &'static str) {
        self.inner.tokens_issued.get_or_create(&Alg { alg }).inc();
    }

    /// Counts a durable write probe of `/readyz`.
    pub fn readiness_probed(&self) {
        self.inner.readiness_probes.inc();
    }

    /// Marks a request as being answered until the guard is dropped.
    pub fn request_started(&self) -> InFlight {
        self.inner.in_flight.inc();
        InFlight(self.inner.in_flight.clone())
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        // The log's writer counts its drops; the counter shows the count when it is read.
        self.inner.log_lines_dropped.inner().fetch_max(crate::telemetry::dropped_lines(), Ordering::Relaxed);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// A request in flight; dropping it (also when the client goes away) ends it.
pub struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
