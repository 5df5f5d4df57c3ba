//! The time as the service sees it, for every expiry the service decides itself: bind
//! tickets, refresh tokens (and their purge), access tokens (`iat`, `exp`, and `exp`/`nbf`
//! when verifying), when staged signing keys activate and retired ones stop being
//! published, and how long WeChat's access token is reused. Injectable, so that tests move
//! time instead of sleeping through it.
//!
//! Not on it: timeouts, deadlines, rate limits and the circuit breaker, which measure
//! intervals on the monotonic clock (`Instant`); times the service records rather than
//! decides (a key file's `created`, a user's last login); and the `keys` commands, which
//! run in a process of their own on the system clock.

use std::sync::Arc;

use time::OffsetDateTime;

/// A source of the current time. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> OffsetDateTime + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(OffsetDateTime::now_utc))
    }

    /// A clock that reads `now` (tests).
    pub fn from_fn(now: impl Fn() -> OffsetDateTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> OffsetDateTime {
        (self.0)()
    }
}

/// A clock the test moves: the system clock run ahead by what [`TestClock::advance`] added.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct TestClock(Arc<std::sync::atomic::AtomicI64>);

#[cfg(test)]
impl TestClock {
    /// The clock to hand to the code under test.
    pub(crate) fn clock(&self) -> Clock {
        let ahead = self.0.clone();
        Clock::from_fn(move || {
            OffsetDateTime::now_utc() + time::Duration::seconds(ahead.load(std::sync::atomic::Ordering::SeqCst))
        })
    }

    /// Moves the clock `secs` forward.
    pub(crate) fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}
