//! Refresh tokens as the store sees them, and the policy shared by every backend: what
//! presenting a token to its family does, what revokes a family, which families a user
//! keeps and which the purge removes. The backends keep one record per family and only
//! make these decisions atomic; each is written once, here.
//!
//! A family is one login. Its record holds the current generation and the SHA-256 of the
//! current token's verifier; a token names its family and generation. Presenting a token of
//! an older generation is a reuse (RFC 9700 section 4.14.2): the family id is 128 bits that
//! only holders of the family's tokens have ever seen, so a token that names the family and
//! an older generation was issued to someone, and has been spent.

use std::{
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
};

use time::OffsetDateTime;

use crate::domain::{Identity, UserId};

/// A refresh token as the store sees it: the token is `user ‖ family ‖ generation ‖
/// verifier`. The family's one record is found by user and family (a UUID v7, so a user's
/// families sort by age), and holds the current generation and only the SHA-256 of its
/// verifier (256 random bits). The user id is no secret (it is the access token's `sub`);
/// it lets a backend keep a user's families together, so that the per-user cap and
/// revocations find them without an index to maintain on every login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshId {
    /// The user the family belongs to.
    pub user: UserId,
    /// The family.
    pub family: [u8; 16],
    /// Which token of the family: 0 for the login's, one more for each refresh.
    pub generation: u32,
    /// SHA-256 of the token's secret part.
    pub verifier_hash: [u8; 32],
}

/// What a refresh token stands for: the login it continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshGrant {
    /// The user.
    pub user: UserId,
    /// The identity the family's first login came through.
    pub identity: Identity,
}

/// Where a login came from, kept with its family so that the person (and support) can tell
/// their sessions apart: the client's address (after trusted proxies) and its `User-Agent`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's IP address, as text.
    pub ip: Option<String>,
    /// The `User-Agent`, cut to [`Origin::MAX_USER_AGENT`] bytes, control characters dropped.
    pub user_agent: Option<String>,
}

impl Origin {
    /// Longest `User-Agent` kept, in bytes: enough for any real browser or WeChat client,
    /// and a bound on what a client can make the store keep per login.
    pub const MAX_USER_AGENT: usize = 256;

    /// The origin of a request from `ip` with the raw `User-Agent` header `user_agent`.
    /// The header is the client's own text: invalid UTF-8 is replaced, control characters
    /// (which could forge lines in a log or a console) are dropped, and it is cut at a
    /// character boundary; an empty one is none.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&[u8]>) -> Self {
        let user_agent = user_agent.map(|raw| {
            let mut kept = String::new();
            for c in String::from_utf8_lossy(raw).chars().filter(|c| !c.is_control()) {
                if kept.len() + c.len_utf8() > Self::MAX_USER_AGENT {
                    break;
                }
                kept.push(c);
            }
            kept.trim().to_owned()
        });
        Self { ip: ip.map(|ip| ip.to_string()), user_agent: user_agent.filter(|ua| !ua.is_empty()) }
    }
}

/// A live refresh family as its user sees it: a session (one login, on one device, and
/// its refreshes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The family (secret: with it and the user id, an older token of the family can be
    /// forged, which revokes it; show [`session_id`] instead).
    pub family: [u8; 16],
    /// The app of the login.
    pub appid: String,
    /// When the login happened.
    pub created_at: OffsetDateTime,
    /// The last refresh (the login's time until the first).
    pub last_refresh_at: OffsetDateTime,
    /// Where the login came from.
    pub origin: Origin,
}

/// The public id of a session: the first 128 bits of the SHA-256 of its family id, as a
/// UUID. The family id itself stays with the tokens: a refresh token is `user ‖ family ‖
/// generation ‖ verifier`, and anyone who knew a user's family id could present a made-up
/// token of generation 0, which counts as a reuse and revokes the family. The hash cannot
/// be turned back into the family.
pub fn session_id(family: &[u8; 16]) -> uuid::Uuid {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, family);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Uuid::from_bytes(id)
}

/// Whether a family is a session to list (and to revoke) at `now` (Unix nanoseconds):
/// neither revoked nor expired.
pub(super) fn live(family: &Family<'_>, now: i128) -> bool {
    !family.revoked && family.expires_at > now
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The token was spent and its successor (the next generation) stored in its place.
    Rotated(RefreshGrant),
    /// No such token: never issued, or purged after it expired.
    Unknown,
    /// The token had been spent already (an older generation): someone replayed it, so its
    /// family (the newest token included) is now revoked.
    Reused,
    /// The family was revoked before (logout, logout-all, an earlier reuse, an unbind, a
    /// password change).
    Revoked,
    /// The token expired.
    Expired,
}

/// One batch of the purge of dead refresh families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeBatch {
    /// Records removed by this batch.
    pub removed: usize,
    /// Whether this batch finished a pass over every record; the next starts over.
    pub done: bool,
}

/// What presenting a refresh token to its family's record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The current token: the family moves to the next generation.
    Rotate,
    /// A spent token: the family is revoked.
    Reuse,
    /// Not a token of this family (a wrong verifier, or a generation never issued).
    Unknown,
    /// The family was revoked before.
    Revoked,
    /// The family's current token has expired.
    Expired,
}

/// What a backend knows of a family when a token is presented.
pub(super) struct Family<'a> {
    /// The current generation.
    pub generation: u32,
    /// SHA-256 of the current token's verifier.
    pub verifier_hash: &'a [u8],
    /// Whether the family was revoked (logout, logout-all, a reuse, an unbind).
    pub revoked: bool,
    /// When the current token expires, in Unix nanoseconds.
    pub expires_at: i128,
}

/// Judges `presented` against its family at `now` (Unix nanoseconds). A token that is not
/// the family's is unknown before anything else, so that a forged one learns nothing.
pub(super) fn judge(family: &Family<'_>, presented: &RefreshId, now: i128) -> Verdict {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let current = match presented.generation.cmp(&family.generation) {
        Greater => return Verdict::Unknown,
        Less => false,
        Equal => {
            let matches =
                aws_lc_rs::constant_time::verify_slices_are_equal(family.verifier_hash, &presented.verifier_hash);
            if matches.is_err() {
                return Verdict::Unknown;
            }
            true
        }
    };
    if family.revoked {
        Verdict::Revoked
    } else if !current {
        Verdict::Reuse
    } else if family.expires_at <= now {
        Verdict::Expired
    } else {
        Verdict::Rotate
    }
}

/// The generation after `generation`; `None` once a family has rotated 4 billion times,
/// which then ends like an expired one.
pub(super) fn next_generation(generation: u32) -> Option<u32> {
    generation.checked_add(1)
}

/// What a backend does when a token is presented to its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rotation {
    /// Write nothing; answer [`Refreshed::Unknown`], [`Refreshed::Revoked`] or
    /// [`Refreshed::Expired`].
    Refuse(Refusal),
    /// A spent token was replayed: mark the family revoked, answer [`Refreshed::Reused`].
    Revoke,
    /// Move the family to this generation, with the next verifier and expiry, and answer
    /// [`Refreshed::Rotated`].
    Advance(u32),
}

/// Why a presented token is refused without a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// [`Refreshed::Unknown`].
    Unknown,
    /// [`Refreshed::Revoked`].
    Revoked,
    /// [`Refreshed::Expired`].
    Expired,
}

impl From<Refusal> for Refreshed {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unknown => Self::Unknown,
            Refusal::Revoked => Self::Revoked,
            Refusal::Expired => Self::Expired,
        }
    }
}

/// What presenting `presented` to its family at `now` (Unix nanoseconds) does: [`judge`]'s
/// verdict, with a family that has run out of generations ending like an expired one.
pub(super) fn rotation(family: &Family<'_>, presented: &RefreshId, now: i128) -> Rotation {
    match judge(family, presented, now) {
        Verdict::Unknown => Rotation::Refuse(Refusal::Unknown),
        Verdict::Revoked => Rotation::Refuse(Refusal::Revoked),
        Verdict::Expired => Rotation::Refuse(Refusal::Expired),
        Verdict::Reuse => Rotation::Revoke,
        Verdict::Rotate => match next_generation(family.generation) {
            Some(generation) => Rotation::Advance(generation),
            None => Rotation::Refuse(Refusal::Expired),
        },
    }
}

/// Whether revoking by `presented` (a logout) changes its family: any token of the family
/// revokes it, a spent or expired one too; a forged one does not, and a revoked family has
/// nothing left to change.
pub(super) fn revokes(family: &Family<'_>, presented: &RefreshId) -> bool {
    !family.revoked && judge(family, presented, i128::MIN) != Verdict::Unknown
}

/// Whether the purge removes a family at `now` (Unix nanoseconds): once its current token
/// has expired, or its user is gone (`user_exists` false). A revoked family is kept until
/// it expires, whatever the token lifetime is meanwhile: its record is its revocation, so
/// its tokens answer "revoked" while they would otherwise work, and "unknown" once it is
/// gone, never "rotated".
pub(super) fn purgeable(family: &Family<'_>, now: i128, user_exists: bool) -> bool {
    family.expires_at <= now || !user_exists
}

/// How many families a user keeps: `keep`, and at least the newest one.
pub(super) fn cap(keep: usize) -> usize {
    keep.max(1)
}

/// How many of a user's oldest families go when it holds `held`, the newest included.
pub(super) fn excess(held: usize, keep: usize) -> usize {
    held.saturating_sub(cap(keep))
}

/// How many counters a [`TrimSchedule`] keeps.
const TRIM_COUNTERS: usize = 4096;

/// Which logins trim their user's oldest families, on every backend: finding them costs a
/// scan of the user's families (on PostgreSQL, of every version of them not yet vacuumed,
/// which made a user's repeated logins 0.5x as fast), so a login only counts itself, and
/// every `cap / 2`-th login of the same key trims. Keys are counted in a small table by
/// their hash: two keys sharing a counter only trim more often. A user therefore holds at
/// most about twice the cap (per replica, and per identity when a login counts by the
/// identity it arrives with); after a restart the counters start from zero.
#[derive(Clone)]
pub(crate) struct TrimSchedule(Arc<[AtomicU16]>);

impl TrimSchedule {
    /// Counters at zero.
    pub(crate) fn new() -> Self {
        Self((0..TRIM_COUNTERS).map(|_| AtomicU16::new(0)).collect())
    }

    /// Counts a login of `key` (a user id, or the identity a login names): true when this
    /// login trims. With a cap of 3 or less, every login does.
    pub(crate) fn due(&self, key: impl Hash, keep: usize) -> bool {
        let slack = u16::try_from((cap(keep) / 2).max(1)).unwrap_or(u16::MAX);
        // `DefaultHasher::new` has fixed keys: a key finds the same counter in every run, so
        // when a login trims does not depend on the process's random state.
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        let counter = &self.0[(hasher.finish() % TRIM_COUNTERS as u64) as usize];
        if counter.fetch_add(1, Ordering::Relaxed).saturating_add(1) >= slack {
            counter.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(generation: u32, hash: u8) -> RefreshId {
        RefreshId { user: UserId::from_bytes([1; 16]), family: [7; 16], generation, verifier_hash: [hash; 32] }
    }

    #[test]
    fn a_key_trims_at_every_half_cap_th_login_and_at_every_login_under_a_cap_of_four() {
        let schedule = TrimSchedule::new();
        let trims = |key: &str, keep, logins| (0..logins).filter(|_| schedule.due(key, keep)).count();
        assert_eq!(trims("alice", 20, 40), 4);
        assert_eq!(trims("bob", 3, 5), 5);
        assert_eq!(trims("carol", 1, 5), 5);
        // Counted apart: alice's logins above did not bring dave's trim nearer.
        assert_eq!((0..9).filter(|_| schedule.due("dave", 20)).count(), 0);
        assert!(schedule.due("dave", 20));
    }

    #[test]
    fn a_presented_token_is_judged_against_its_family() {
        let hash = [1u8; 32];
        let family = |revoked, expires_at| Family { generation: 3, verifier_hash: &hash, revoked, expires_at };
        let (now, later) = (100, 200);
        let cases = [
            ("the current token rotates", family(false, later), presented(3, 1), Verdict::Rotate),
            ("an older generation is a reuse", family(false, later), presented(2, 9), Verdict::Reuse),
            ("the first generation too", family(false, later), presented(0, 9), Verdict::Reuse),
            ("a reuse of an expired family is still a reuse", family(false, now), presented(1, 9), Verdict::Reuse),
            ("a wrong verifier is unknown", family(false, later), presented(3, 2), Verdict::Unknown),
            ("a future generation is unknown", family(false, later), presented(4, 1), Verdict::Unknown),
            ("a revoked family answers revoked", family(true, later), presented(3, 1), Verdict::Revoked),
            ("to an old token too", family(true, later), presented(1, 9), Verdict::Revoked),
            ("but not to a forged current one", family(true, later), presented(3, 2), Verdict::Unknown),
            ("expiry is exact", family(false, now), presented(3, 1), Verdict::Expired),
            ("one nanosecond before, it works", family(false, now + 1), presented(3, 1), Verdict::Rotate),
        ];
        for (what, family, token, verdict) in cases {
            assert_eq!(judge(&family, &token, now), verdict, "{what}");
        }
    }

    #[test]
    fn only_families_neither_revoked_nor_expired_are_sessions() {
        let hash = [1u8; 32];
        let family = |revoked, expires_at| Family { generation: 0, verifier_hash: &hash, revoked, expires_at };
        let cases = [
            ("live", family(false, 101), true),
            ("revoked", family(true, 101), false),
            ("expiring now", family(false, 100), false),
        ];
        for (what, family, listed) in cases {
            assert_eq!(live(&family, 100), listed, "{what}");
        }
    }

    #[test]
    fn a_session_s_public_id_is_not_its_family_id_and_is_stable() {
        let family = *uuid::Uuid::now_v7().as_bytes();
        assert_eq!(session_id(&family), session_id(&family));
        assert_ne!(session_id(&family).as_bytes(), &family);
        assert_ne!(session_id(&family), session_id(&[0; 16]));
        // The SHA-256 of 16 zero bytes starts 374708fff7719dd5979ec875d56cd228.
        assert_eq!(session_id(&[0; 16]).to_string(), "374708ff-f771-9dd5-979e-c875d56cd228");
    }

    #[test]
    fn a_user_agent_is_kept_printable_and_short() {
        let long = "a".repeat(300);
        let cut = format!("{}é", "a".repeat(255));
        type Case<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>);
        let cases: [Case; 7] = [
            ("absent", None, None),
            ("empty", Some(b""), None),
            ("blank", Some(b"  \t"), None),
            ("as sent", Some(b"Mozilla/5.0 MicroMessenger/8.0.50"), Some("Mozilla/5.0 MicroMessenger/8.0.50")),
            ("control characters dropped", Some(b"a\r\nb\x1b[31m"), Some("ab[31m")),
            ("invalid UTF-8 replaced", Some(b"a\xffb"), Some("a\u{fffd}b")),
            ("cut to 256 bytes", Some(long.as_bytes()), Some(&long[..256])),
        ];
        for (what, raw, kept) in cases {
            assert_eq!(Origin::new(None, raw).user_agent.as_deref(), kept, "{what}");
        }
        // Never inside a character: 255 bytes and a 2-byte one make 257.
        assert_eq!(Origin::new(None, Some(cut.as_bytes())).user_agent.unwrap().len(), 255);
        let ip = Origin::new(Some("2001:db8::1".parse().unwrap()), None).ip;
        assert_eq!(ip.as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn generations_end_instead_of_wrapping() {
        assert_eq!(next_generation(0), Some(1));
        assert_eq!(next_generation(u32::MAX), None);
    }

    #[test]
    fn a_presentation_rotates_revokes_or_is_refused_without_a_write() {
        let hash = [1u8; 32];
        let family = |generation, revoked, expires_at| Family { generation, verifier_hash: &hash, revoked, expires_at };
        let now = 100;
        let cases = [
            ("the current token advances", family(3, false, 200), presented(3, 1), Rotation::Advance(4)),
            ("a spent one revokes", family(3, false, 200), presented(1, 9), Rotation::Revoke),
            ("a forged one", family(3, false, 200), presented(3, 2), Rotation::Refuse(Refusal::Unknown)),
            ("a revoked family", family(3, true, 200), presented(3, 1), Rotation::Refuse(Refusal::Revoked)),
            ("an expired token", family(3, false, 100), presented(3, 1), Rotation::Refuse(Refusal::Expired)),
            (
                "the last generation",
                family(u32::MAX, false, 200),
                presented(u32::MAX, 1),
                Rotation::Refuse(Refusal::Expired),
            ),
        ];
        for (what, family, token, rotation_) in cases {
            assert_eq!(rotation(&family, &token, now), rotation_, "{what}");
        }
        assert_eq!(Refreshed::from(Refusal::Revoked), Refreshed::Revoked);
    }

    #[test]
    fn any_token_of_a_live_family_revokes_it_and_a_forged_one_does_not() {
        let hash = [1u8; 32];
        let family = |revoked, expires_at| Family { generation: 3, verifier_hash: &hash, revoked, expires_at };
        let cases = [
            ("the current token", family(false, 200), presented(3, 1), true),
            ("a spent token", family(false, 200), presented(0, 9), true),
            ("an expired family's token", family(false, 0), presented(3, 1), true),
            ("a forged current token", family(false, 200), presented(3, 2), false),
            ("a generation never issued", family(false, 200), presented(4, 1), false),
            ("a family revoked already", family(true, 200), presented(3, 1), false),
        ];
        for (what, family, token, revokes_) in cases {
            assert_eq!(revokes(&family, &token), revokes_, "{what}");
        }
    }

    #[test]
    fn the_purge_removes_expired_families_and_those_of_gone_users_and_keeps_revoked_live_ones() {
        let hash = [1u8; 32];
        let family = |revoked, expires_at| Family { generation: 0, verifier_hash: &hash, revoked, expires_at };
        let now = 100;
        let cases = [
            ("live", family(false, 101), true, false),
            ("revoked and unexpired: its revocation must stay", family(true, 101), true, false),
            ("expiring now", family(false, 100), true, true),
            ("revoked and expired", family(true, 99), true, true),
            ("live, of a user that is gone", family(false, 101), false, true),
        ];
        for (what, family, user_exists, purged) in cases {
            assert_eq!(purgeable(&family, now, user_exists), purged, "{what}");
        }
    }

    #[test]
    fn a_user_keeps_its_newest_families_up_to_the_cap_and_always_one() {
        let cases = [
            ("under the cap", 2, 3, 0),
            ("at the cap", 3, 3, 0),
            ("over it", 5, 3, 2),
            ("a cap of zero keeps the newest", 4, 0, 3),
            ("nothing held", 0, 3, 0),
        ];
        for (what, held, keep, gone) in cases {
            assert_eq!(excess(held, keep), gone, "{what}");
        }
        assert_eq!((cap(0), cap(1), cap(10)), (1, 1, 10));
    }
}
