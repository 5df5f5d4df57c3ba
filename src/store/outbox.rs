//! The webhook outbox: one delivery per event and webhook that wants its kind, written with
//! the event in one atomic write, so that an event kept is an event delivered (at least
//! once: a delivery whose answer was lost is sent again, and receivers de-duplicate by the
//! event's id).
//!
//! A sender claims due deliveries by moving them a lease into the future, atomically, so
//! that two senders (two replicas on PostgreSQL) never send the same delivery at once; one
//! that dies mid-lease leaves them due again when the lease ends. When to try again and
//! when to give up is [`next_attempt`]'s decision, shared by both backends.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::events::{Event, EventKind};

/// A webhook as the outbox names it: the first 8 bytes of the SHA-256 of its URL. A
/// webhook whose URL changes is another webhook; the old one's pending deliveries are
/// dropped when they come due.
pub type HookId = [u8; 8];

/// The id of the webhook at `url`.
pub fn hook_id(url: &str) -> HookId {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    id
}

/// How long a delivery is retried after its event happened.
pub const GIVE_UP_AFTER: Duration = Duration::hours(24);

/// The first retry's wait; each next one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::seconds(1);

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::hours(1);

/// Which webhooks want which kinds.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions(Arc<Vec<(HookId, Vec<EventKind>)>>);

impl Subscriptions {
    /// Webhooks by id, each with its kinds (empty: every kind).
    pub fn new(hooks: Vec<(HookId, Vec<EventKind>)>) -> Self {
        Self(Arc::new(hooks))
    }

    /// The deliveries `events` need, each due at its event's time.
    pub fn deliveries(&self, events: &[Event]) -> Vec<Delivery> {
        let mut out = Vec::new();
        for event in events {
            for (hook, kinds) in self.0.iter() {
                if kinds.is_empty() || kinds.contains(&event.kind) {
                    out.push(Delivery { event: event.id, hook: *hook, attempts: 0, due_at: event.at });
                }
            }
        }
        out
    }

    /// The deliveries one event needs, as [`Subscriptions::deliveries`].
    pub fn deliveries_of(&self, event: &Event) -> Vec<Delivery> {
        self.deliveries(std::slice::from_ref(event))
    }
}

/// One event to send to one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The event.
    pub event: Uuid,
    /// The webhook.
    pub hook: HookId,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it is due; for a claimed one, when its lease ends.
    pub due_at: OffsetDateTime,
}

/// When to try a delivery of an event of `event_at` again after its `attempts`-th failed
/// attempt at `now`; `None`: give up (24 hours after the event).
pub fn next_attempt(event_at: OffsetDateTime, attempts: u32, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let wait = FIRST_BACKOFF.checked_mul(1i32 << attempts.saturating_sub(1).min(20)).unwrap_or(MAX_BACKOFF);
    let at = now + wait.min(MAX_BACKOFF);
    (at <= event_at + GIVE_UP_AFTER).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_a_second_up_to_an_hour_and_stop_a_day_after_the_event() {
        let t0 = time::macros::datetime!(2026-12-06 00:00 UTC);
        let waits: Vec<i64> = (1..=14).map(|n| (next_attempt(t0, n, t0).unwrap() - t0).whole_seconds()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]);
        assert_eq!(next_attempt(t0, 1000, t0), Some(t0 + MAX_BACKOFF), "a large count overflowed");
        let late = t0 + GIVE_UP_AFTER - Duration::seconds(1);
        assert_eq!(next_attempt(t0, 1, late), Some(t0 + GIVE_UP_AFTER), "the last retry at exactly a day");
        assert_eq!(next_attempt(t0, 2, late), None, "retried past a day");
    }

    #[test]
    fn each_event_goes_to_the_webhooks_that_want_its_kind() {
        let (all, logins) = ([1; 8], [2; 8]);
        let subs = Subscriptions::new(vec![(all, vec![]), (logins, vec![EventKind::Login])]);
        let t0 = time::macros::datetime!(2026-12-06 00:00 UTC);
        let (login, ban) = (Event::new(EventKind::Login, t0), Event::new(EventKind::Ban, t0));
        let got: Vec<(Uuid, HookId)> =
            subs.deliveries(&[login.clone(), ban.clone()]).iter().map(|d| (d.event, d.hook)).collect();
        assert_eq!(got, [(login.id, all), (login.id, logins), (ban.id, all)]);
        assert!(Subscriptions::default().deliveries(&[login]).is_empty());
        assert_ne!(hook_id("https://a.example/x"), hook_id("https://a.example/y"));
    }
}
