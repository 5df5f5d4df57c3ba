//! Refresh-token policy shared by every backend: what presenting a token to its family
//! does. The backends keep one record per family and only decide atomically; the decision
//! itself is written once, here.
//!
//! A family is one login. Its record holds the current generation and the SHA-256 of the
//! current token's verifier; a token names its family and generation. Presenting a token of
//! an older generation is a reuse (RFC 9700 section 4.14.2): the family id is 128 bits that
//! only holders of the family's tokens have ever seen, so a token that names the family and
//! an older generation was issued to someone, and has been spent.

use super::RefreshId;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(generation: u32, hash: u8) -> RefreshId {
        RefreshId {
            user: crate::domain::UserId::from_bytes([1; 16]),
            family: [7; 16],
            generation,
            verifier_hash: [hash; 32],
        }
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
    fn generations_end_instead_of_wrapping() {
        assert_eq!(next_generation(0), Some(1));
        assert_eq!(next_generation(u32::MAX), None);
    }
}
