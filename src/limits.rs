//! Attempt limits (`governor`): requests to `POST /v1/login` and `POST /v1/bind` per
//! client IP, bind attempts per username (for each WeChat identity) and per client IP, a
//! growing wait after each wrong password of an identity, refreshes per family and per
//! client IP; and who the client is behind a reverse proxy.
//!
//! A keyed limiter keeps one entry per key until told to forget idle ones, and keys here
//! come from clients: every [`SWEEP_EVERY`] checks, entries whose quota has fully
//! refilled are dropped, so memory follows the keys active within the last minute (and the
//! wrong-password backoff of identities seen within the last hour).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{Quota, RateLimiter, clock::Clock, clock::DefaultClock, state::keyed::DefaultKeyedStateStore};

use crate::config::AttemptLimits;

/// Checks between two sweeps of idle entries.
const SWEEP_EVERY: u64 = 1024;

/// Wrong passwords in a row an identity may make before it has to wait: typos.
pub const BACKOFF_FREE: u32 = 3;

/// The longest wait after wrong passwords of one WeChat identity.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How long an identity's wrong passwords are remembered after its last wait ended.
const BACKOFF_MEMORY: Duration = Duration::from_secs(3600);

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// The limits of login and bind attempts.
pub struct Attempts {
    requests_per_ip: Option<Keyed<IpAddr>>,
    /// Keyed by username and WeChat identity: a guesser spends only their own budget.
    per_username: Option<Keyed<(String, String)>>,
    per_ip: Option<Keyed<IpAddr>>,
    refresh_per_family: Option<Keyed<[u8; 16]>>,
    refresh_per_ip: Option<Keyed<IpAddr>>,
    /// WeChat identity → its wrong passwords in a row and when it may try again.
    backoff: Mutex<HashMap<String, Backoff>>,
    trusted_proxies: Vec<ipnet::IpNet>,
    checks: AtomicU64,
}

/// Wrong passwords of one WeChat identity in a row.
struct Backoff {
    failures: u32,
    until: Instant,
}

/// The wait after `failures` wrong passwords in a row: none for the first
/// [`BACKOFF_FREE`], then 1 s, doubling, up to [`BACKOFF_CAP`].
pub fn backoff_wait(failures: u32) -> Duration {
    match failures.checked_sub(BACKOFF_FREE + 1) {
        None => Duration::ZERO,
        Some(doublings) => Duration::from_secs(1u64.checked_shl(doublings).unwrap_or(u64::MAX)).min(BACKOFF_CAP),
    }
}

impl Attempts {
    /// Limits from the settings; a limit of 0 is off.
    pub fn new(limits: AttemptLimits) -> Self {
        let quota = |n| NonZeroU32::new(n).map(Quota::per_minute);
        Self {
            requests_per_ip: quota(limits.requests_per_ip).map(RateLimiter::keyed),
            per_username: quota(limits.per_username).map(RateLimiter::keyed),
            per_ip: quota(limits.per_ip).map(RateLimiter::keyed),
            refresh_per_family: quota(limits.refresh_per_family).map(RateLimiter::keyed),
            refresh_per_ip: quota(limits.refresh_per_ip).map(RateLimiter::keyed),
            backoff: Mutex::default(),
            trusted_proxies: limits.trusted_proxies,
            checks: AtomicU64::new(0),
        }
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then the
    /// right-most address in `X-Forwarded-For` that is not a trusted proxy (addresses left
    /// of it were written by the client and prove nothing). `forwarded_for` holds the
    /// header's lines in order, as bytes: each entry is read on its own, so that a stray
    /// byte in an entry the client wrote cannot hide the entries the proxies wrote.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&[u8]]) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let hops = forwarded_for.iter().rev().flat_map(|line| line.rsplit(|b| *b == b',')).map(hop_address);
        let mut client = peer;
        for hop in hops {
            match hop {
                Some(ip) if trusted(&ip) => client = ip,
                Some(ip) => return ip,
                // Unreadable: stop at the last address we can vouch for.
                None => return client,
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

    /// Counts one attempt for `username` by the WeChat identity `identity`. Counted only
    /// once the request proved a WeChat login (a valid ticket or code), and per identity,
    /// so that nobody can spend the budget of the username's owner, who logs in with
    /// another identity.
    pub fn check_username(&self, username: &str, identity: &str) -> Result<(), Duration> {
        match &self.per_username {
            Some(limiter) => check(limiter, &(username.to_owned(), identity.to_owned())),
            None => Ok(()),
        }
    }

    /// Whether `identity` must still wait after its wrong passwords; `Err` is how long.
    pub fn check_backoff(&self, identity: &str) -> Result<(), Duration> {
        let backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        match backoff.get(identity) {
            Some(b) => match b.until.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// A wrong password from `identity`: its next attempt waits [`backoff_wait`] of its
    /// failures in a row. Returns that wait.
    pub fn note_wrong_password(&self, identity: &str) -> Duration {
        let now = Instant::now();
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let entry = backoff.entry(identity.to_owned()).or_insert(Backoff { failures: 0, until: now });
        if entry.until + BACKOFF_MEMORY <= now {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        let wait = backoff_wait(entry.failures);
        entry.until = now + wait;
        wait
    }

    /// A right password from `identity`: its wrong ones are forgotten.
    pub fn note_right_password(&self, identity: &str) {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner()).remove(identity);
    }

    /// Counts one `POST /v1/token/refresh` from `ip` (`WXAUTH_REFRESH_ATTEMPTS_PER_IP`),
    /// before the body is read.
    pub fn check_refresh_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        self.maybe_sweep();
        match &self.refresh_per_ip {
            Some(limiter) => check(limiter, &network(ip)),
            None => Ok(()),
        }
    }

    /// Counts one refresh of `family` (`WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY`).
    pub fn check_refresh_family(&self, family: [u8; 16]) -> Result<(), Duration> {
        match &self.refresh_per_family {
            Some(limiter) => check(limiter, &family),
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
        if let Some(l) = &self.refresh_per_family {
            l.retain_recent();
        }
        if let Some(l) = &self.refresh_per_ip {
            l.retain_recent();
        }
        let now = Instant::now();
        self.backoff.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, b| b.until + BACKOFF_MEMORY > now);
    }
}

/// The address of one `X-Forwarded-For` entry: an IP, `ip:port` or `[v6]:port` (some
/// proxies add the port), with spaces around; `None` when it is none of these.
fn hop_address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
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
            refresh_per_family: 0,
            refresh_per_ip: 0,
            trusted_proxies: Vec::new(),
        });
        assert!(attempts.check_username("alice", "wx1:guesser").is_ok());
        assert!(attempts.check_username("alice", "wx1:guesser").is_ok());
        let wait = attempts.check_username("alice", "wx1:guesser").unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(attempts.check_username("bob", "wx1:guesser").is_ok());
        assert!(attempts.check_username("alice", "wx1:owner").is_ok(), "the guesser spent the owner's budget");
    }

    #[test]
    fn idle_addresses_are_forgotten_every_so_many_checks() {
        // A quota that refills in microseconds: an address is idle almost at once.
        let attempts = Attempts::new(AttemptLimits {
            requests_per_ip: 0,
            per_username: 0,
            per_ip: 1_000_000,
            refresh_per_family: 0,
            refresh_per_ip: 0,
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
            refresh_per_family: 0,
            refresh_per_ip: 0,
            trusted_proxies: proxies.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = Attempts::new(limits(""));
        assert_eq!(none.client_ip(ip("10.0.0.1"), &[b"1.2.3.4"]), ip("10.0.0.1"));
        let proxied = Attempts::new(limits("10.0.0.0/8"));
        let cases: [(&str, &[&[u8]], &str); 12] = [
            ("10.0.0.1", &[b"1.2.3.4"], "1.2.3.4"),
            ("10.0.0.1", &[b"6.6.6.6, 1.2.3.4, 10.0.0.2"], "1.2.3.4"),
            ("10.0.0.1", &[], "10.0.0.1"),
            ("10.0.0.1", &[b"garbage"], "10.0.0.1"),
            ("8.8.8.8", &[b"1.2.3.4"], "8.8.8.8"),
            // An entry with a port, as some proxies write it.
            ("10.0.0.1", &[b"1.2.3.4:5678"], "1.2.3.4"),
            ("10.0.0.1", &[b"[2001:db8::7]:443, 10.0.0.2:80"], "2001:db8::7"),
            ("10.0.0.1", &[b"[2001:db8::7]"], "2001:db8::7"),
            // A stray byte in an entry the client wrote, left of the client's address.
            ("10.0.0.1", &[b"\xff\xfe, 1.2.3.4"], "1.2.3.4"),
            ("10.0.0.1", &[b"caf\xc3\xa9", b"1.2.3.4"], "1.2.3.4"),
            // Lines in order: the proxy's own line is the right-most.
            ("10.0.0.1", &[b"6.6.6.6", b"1.2.3.4, 10.0.0.3"], "1.2.3.4"),
            ("10.0.0.1", &[b"1.2.3.4", b"10.0.0.3:1234"], "1.2.3.4"),
        ];
        for (peer, header, expected) in cases {
            assert_eq!(proxied.client_ip(ip(peer), header), ip(expected), "{peer} {header:?}");
        }
    }

    #[test]
    fn an_ip_over_its_limit_waits_whatever_the_username() {
        let attempts = Attempts::new(AttemptLimits {
            requests_per_ip: 0,
            per_username: 0,
            per_ip: 1,
            refresh_per_family: 0,
            refresh_per_ip: 0,
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

    #[test]
    fn each_wrong_password_of_an_identity_doubles_its_wait_up_to_the_cap() {
        let waits: Vec<u64> = (1..=15).map(|n| backoff_wait(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_wait(u32::MAX), BACKOFF_CAP);
        let attempts = Attempts::new(AttemptLimits {
            requests_per_ip: 0,
            per_username: 0,
            per_ip: 0,
            refresh_per_family: 0,
            refresh_per_ip: 0,
            trusted_proxies: Vec::new(),
        });
        for _ in 0..BACKOFF_FREE {
            assert_eq!(attempts.note_wrong_password("wx1:guesser"), Duration::ZERO);
            assert!(attempts.check_backoff("wx1:guesser").is_ok());
        }
        assert_eq!(attempts.note_wrong_password("wx1:guesser"), Duration::from_secs(1));
        assert_eq!(attempts.note_wrong_password("wx1:guesser"), Duration::from_secs(2));
        let wait = attempts.check_backoff("wx1:guesser").unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(2), "{wait:?}");
        assert!(attempts.check_backoff("wx1:owner").is_ok(), "another identity waited");
        attempts.note_right_password("wx1:guesser");
        assert!(attempts.check_backoff("wx1:guesser").is_ok());
    }
}
