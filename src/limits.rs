//! Attempt limits (`governor`): requests to `POST /v1/login` and `POST /v1/bind` per
//! client IP, bind attempts per username and per client IP; and who the client is behind a
//! reverse proxy.
//!
//! A keyed limiter keeps one entry per key until told to forget idle ones, and keys here
//! come from clients: every [`SWEEP_EVERY`] checks, entries whose quota has fully
//! refilled are dropped, so memory follows the keys active within the last minute.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{Quota, RateLimiter, clock::Clock, clock::DefaultClock, state::keyed::DefaultKeyedStateStore};

use crate::config::AttemptLimits;

/// Checks between two sweeps of idle entries.
const SWEEP_EVERY: u64 = 1024;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// The limits of login and bind attempts.
pub struct Attempts {
    requests_per_ip: Option<Keyed<IpAddr>>,
    per_username: Option<Keyed<String>>,
    per_ip: Option<Keyed<IpAddr>>,
    trusted_proxies: Vec<ipnet::IpNet>,
    checks: AtomicU64,
}

impl Attempts {
    /// Limits from the settings; a limit of 0 is off.
    pub fn new(limits: AttemptLimits) -> Self {
        let quota = |n| NonZeroU32::new(n).map(Quota::per_minute);
        Self {
            requests_per_ip: quota(limits.requests_per_ip).map(RateLimiter::keyed),
            per_username: quota(limits.per_username).map(RateLimiter::keyed),
            per_ip: quota(limits.per_ip).map(RateLimiter::keyed),
            trusted_proxies: limits.trusted_proxies,
            checks: AtomicU64::new(0),
        }
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then the
    /// right-most address in `X-Forwarded-For` that is not a trusted proxy (addresses left
    /// of it were written by the client and prove nothing).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let hops = forwarded_for.unwrap_or_default().rsplit(',').map(|hop| hop.trim().parse::<IpAddr>());
        let mut client = peer;
        for hop in hops {
            match hop {
                Ok(ip) if trusted(&ip) => client = ip,
                Ok(ip) => return ip,
                // Unreadable: stop at the last address we can vouch for.
                Err(_) => return client,
            }
        }
        client
    }

    /// Counts one request to `POST /v1/login` or `POST /v1/bind` from `ip`
    /// (`WXAUTH_RATE_LIMIT_PER_MINUTE`). `Err` carries how long to wait. Counted before the
    /// body is read.
    pub fn check_request(&self, ip: IpAddr) -> Result<(), Duration> {
        self.maybe_sweep();
        match &self.requests_per_ip {
            Some(limiter) => check(limiter, &network(ip)),
            None => Ok(()),
        }
    }

    /// Counts one bind attempt from `ip`. `Err` carries how long to wait before the next one is
    /// allowed. Counted before anything else, so that garbage costs the sender too.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        self.maybe_sweep();
        match (&self.per_ip, ip) {
            (Some(limiter), Some(ip)) => check(limiter, &network(ip)),
            _ => Ok(()),
        }
    }

    /// Counts one attempt for `username`. Counted only once the request proved a WeChat
    /// login (a valid ticket or code), so that nobody can lock a username out with junk.
    pub fn check_username(&self, username: &str) -> Result<(), Duration> {
        match &self.per_username {
            Some(limiter) => check(limiter, &username.to_owned()),
            None => Ok(()),
        }
    }

    fn maybe_sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
    }

    fn sweep(&self) {
        if let Some(l) = &self.per_username {
            l.retain_recent();
        }
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.requests_per_ip {
            l.retain_recent();
        }
    }
}

fn check<K: Clone + std::hash::Hash + Eq>(limiter: &Keyed<K>, key: &K) -> Result<(), Duration> {
    limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// The key of an address: IPv4 as is, IPv6 by its /64, which one subscriber usually holds
/// whole (and could otherwise rotate through).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_over_its_limit_waits_and_others_do_not() {
        let attempts = Attempts::new(AttemptLimits {
            requests_per_ip: 0,
            per_username: 2,
            per_ip: 0,
            trusted_proxies: Vec::new(),
        });
        assert!(attempts.check_username("alice").is_ok() && attempts.check_username("alice").is_ok());
        let wait = attempts.check_username("alice").unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(attempts.check_username("bob").is_ok());
    }

    #[test]
    fn idle_addresses_are_forgotten_every_so_many_checks() {
        // A quota that refills in microseconds: an address is idle almost at once.
        let attempts = Attempts::new(AttemptLimits {
            requests_per_ip: 0,
            per_username: 0,
            per_ip: 1_000_000,
            trusted_proxies: Vec::new(),
        });
        let ip = |i: u32| Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        let tracked = || attempts.per_ip.as_ref().unwrap().len();
        for i in 0..SWEEP_EVERY as u32 - 1 {
            attempts.check_ip(ip(i)).unwrap();
        }
        assert_eq!(tracked(), SWEEP_EVERY as usize - 1, "forgotten before the sweep was due");
        std::thread::sleep(Duration::from_millis(5));

        attempts.check_ip(ip(SWEEP_EVERY as u32)).unwrap();

        assert!(tracked() <= 2, "{} addresses still tracked", tracked());
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let limits = |proxies: &str| AttemptLimits {
            requests_per_ip: 0,
            per_username: 0,
            per_ip: 0,
            trusted_proxies: proxies.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = Attempts::new(limits(""));
        assert_eq!(none.client_ip(ip("10.0.0.1"), Some("1.2.3.4")), ip("10.0.0.1"));
        let proxied = Attempts::new(limits("10.0.0.0/8"));
        for (peer, header, expected) in [
            ("10.0.0.1", Some("1.2.3.4"), "1.2.3.4"),
            ("10.0.0.1", Some("6.6.6.6, 1.2.3.4, 10.0.0.2"), "1.2.3.4"),
            ("10.0.0.1", None, "10.0.0.1"),
            ("10.0.0.1", Some("garbage"), "10.0.0.1"),
            ("8.8.8.8", Some("1.2.3.4"), "8.8.8.8"),
        ] {
            assert_eq!(proxied.client_ip(ip(peer), header), ip(expected), "{peer} {header:?}");
        }
    }

    #[test]
    fn an_ip_over_its_limit_waits_whatever_the_username() {
        let attempts = Attempts::new(AttemptLimits {
            requests_per_ip: 0,
            per_username: 0,
            per_ip: 1,
            trusted_proxies: Vec::new(),
        });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(attempts.check_ip(ip("10.0.0.1")).is_ok());
        assert!(attempts.check_ip(ip("10.0.0.1")).is_err());
        assert!(attempts.check_ip(ip("10.0.0.2")).is_ok());
        assert!(attempts.check_ip(ip("2001:db8:1:2::1")).is_ok());
        assert!(attempts.check_ip(ip("2001:db8:1:2:ffff::9")).is_err(), "one /64, two keys");
        assert!(attempts.check_ip(ip("2001:db8:1:3::1")).is_ok());
        assert!(attempts.check_ip(None).is_ok());
    }
}
