//! When a bind ticket counts, decided once for every backend: it works until it expires
//! (to the nanosecond), is spent once, and expired ones are swept now and then by whoever
//! stores a ticket.

use std::sync::atomic::{AtomicI64, Ordering};

use super::StoreError;

/// Expired tickets are swept at most this often (per process), by whoever stores a ticket:
/// there are at most as many as bind-mode logins of unbound people in a ticket's lifetime.
pub(super) const SWEEP_SECS: i64 = 60;

/// Whether a ticket that expires at `expires_at` still works at `now` (Unix nanoseconds).
pub(super) fn live(expires_at: i128, now: i128) -> bool {
    expires_at > now
}

/// The outcome of spending a ticket that was removed as it was read: `expires_at` is `None`
/// when there was none. An expired ticket is spent all the same, but refused.
pub(super) fn spend(expires_at: Option<i128>, now: i128) -> Result<(), StoreError> {
    match expires_at {
        Some(at) if live(at, now) => Ok(()),
        _ => Err(StoreError::TicketNotFound),
    }
}

/// Whether this caller sweeps at `now` (Unix seconds): the first one at least
/// [`SWEEP_SECS`] after the last sweep, which it records in `swept_at`; racers see the
/// record and leave it.
pub(super) fn sweep_due(swept_at: &AtomicI64, now: i64) -> bool {
    let last = swept_at.load(Ordering::Relaxed);
    now - last >= SWEEP_SECS && swept_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_spent_only_when_found_and_unexpired() {
        let now = 1_000;
        let cases = [
            ("one nanosecond left", Some(now + 1), true),
            ("expiring now", Some(now), false),
            ("expired", Some(now - 1), false),
            ("not there (never stored, or spent)", None, false),
        ];
        for (what, expires_at, ok) in cases {
            assert_eq!(spend(expires_at, now).is_ok(), ok, "{what}");
            assert_eq!(expires_at.is_some_and(|at| live(at, now)), ok, "{what}");
        }
    }

    #[test]
    fn a_sweep_is_due_once_a_minute_and_to_one_caller() {
        let swept_at = AtomicI64::new(0);
        let steps = [
            ("the first store sweeps", 100, true),
            ("a second within the minute does not", 159, false),
            ("one a minute later does", 160, true),
            ("and not again at once", 160, false),
        ];
        for (what, now, due) in steps {
            assert_eq!(sweep_due(&swept_at, now), due, "{what}");
        }
        assert_eq!(swept_at.load(Ordering::Relaxed), 160);
    }
}
