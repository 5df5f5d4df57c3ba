//! Who may be bound to whom, decided once for every backend; a backend only reads what the
//! rules need and makes the outcome atomic (sled under its lock, PostgreSQL in a
//! transaction whose constraints settle races).

use super::StoreError;

/// What a bind does with an identity that passed [`bind_target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bind {
    /// It is bound to the account already: a retry, answered like a login.
    Again,
    /// It is bound to nobody: attach it to the account's user.
    Attach,
}

/// Whether the identity, bound now to `bound_to` (a user id, as the backend keeps it), may
/// be bound to `owner`, the account's user, which `owner_has_app` when it has another
/// identity of the same app already. An identity has one user, and a user one identity per
/// app: the conflicts are refused, never resolved by moving a binding.
pub(super) fn bind_target<T: PartialEq>(
    bound_to: Option<T>,
    owner: &T,
    owner_has_app: bool,
) -> Result<Bind, StoreError> {
    match bound_to {
        Some(other) if other != *owner => Err(StoreError::AlreadyBound),
        Some(_) => Ok(Bind::Again),
        None if owner_has_app => Err(StoreError::AccountAlreadyBound),
        None => Ok(Bind::Attach),
    }
}

/// Whom a user learning its first unionid (`me`) is marked as sharing it with: nobody
/// when the unionid is free, already its own (a crash came between linking and recording
/// it), or `holder_exists` is false (a link a crashed removal left behind, which the user
/// takes over); otherwise its holder. Two existing users are never merged silently: both
/// are marked, and an operator decides.
pub(super) fn shares_with<T: PartialEq>(holder: Option<T>, me: &T, holder_exists: bool) -> Option<T> {
    holder.filter(|h| h != me && holder_exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_attaches_a_free_identity_repeats_its_own_and_refuses_conflicts() {
        let (alice, bob) = (1, 2);
        let cases = [
            ("free, and alice has no identity of the app", None, false, Ok(Bind::Attach)),
            ("bound to alice already", Some(alice), false, Ok(Bind::Again)),
            ("bound to alice, who has it as her identity of the app", Some(alice), true, Ok(Bind::Again)),
            ("bound to bob", Some(bob), false, Err("AlreadyBound")),
            ("bound to bob, and alice has another", Some(bob), true, Err("AlreadyBound")),
            ("free, but alice has another openid of the app", None, true, Err("AccountAlreadyBound")),
        ];
        for (what, bound_to, owner_has_app, expected) in cases {
            let got = bind_target(bound_to, &alice, owner_has_app).map_err(|e| match e {
                StoreError::AlreadyBound => "AlreadyBound",
                StoreError::AccountAlreadyBound => "AccountAlreadyBound",
                _ => "other",
            });
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn a_unionid_held_by_another_existing_user_is_shared_and_otherwise_taken() {
        let (me, other) = (1, 2);
        let cases = [
            ("free", None, true, None),
            ("already mine", Some(me), true, None),
            ("held by a user that is gone", Some(other), false, None),
            ("held by another user", Some(other), true, Some(other)),
        ];
        for (what, holder, exists, shared) in cases {
            assert_eq!(shares_with(holder, &me, exists), shared, "{what}");
        }
    }
}
