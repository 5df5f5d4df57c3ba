//! Account passwords: argon2id hashes (RustCrypto `argon2`), checked off the async workers.
//!
//! A check costs tens of milliseconds of CPU by design, so it runs on tokio's blocking pool
//! behind a semaphore of one permit per core: a burst of binds queues instead of starving
//! logins of threads. An unknown username is checked against a dummy hash of the same cost,
//! so that the answer's timing does not tell whether the account exists.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The argon2 implementation failed (never for valid input).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A hash to store, or a stored one, is not an argon2id PHC string within
    /// [`check_stored`]'s bounds.
    #[error("password hash refused: {0}")]
    Stored(String),
    /// The blocking task was lost (runtime shutting down).
    #[error("password check interrupted")]
    Interrupted,
}

/// Hashes a new password: argon2id v19 with the crate's defaults (19 MiB, 2 passes, 1 lane,
/// OWASP's minimum), as a PHC string. Takes tens of milliseconds.
pub fn hash(password: &Password) -> Result<String, PasswordError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PasswordError::Hash("no randomness for a salt".into()))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Memory cost bounds of a stored hash, in KiB: 8 MiB to 1 GiB. Below, a stolen hash is
/// cheap to crack; above, one login attempt would take a gigabyte or more (the checks run
/// one per core at once).
pub const MEMORY_KIB: std::ops::RangeInclusive<u32> = 8 * 1024..=1024 * 1024;
/// Bounds of the number of passes: more than 10 makes a check take seconds.
pub const PASSES: std::ops::RangeInclusive<u32> = 1..=10;
/// Bounds of the degree of parallelism (lanes, computed one after another here).
pub const LANES: std::ops::RangeInclusive<u32> = 1..=16;
/// Bounds of the salt's length in bytes (Argon2's minimum to its PHC maximum).
pub const SALT_BYTES: std::ops::RangeInclusive<usize> = 8..=48;
/// Bounds of the hash's length in bytes.
pub const HASH_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// Checks a password hash wherever one enters the store (the admin socket's commands,
/// `wxauth store import`) and before one is verified: an argon2id PHC string of version
/// 0x13 (`v=19`), with a salt and a hash, and costs within [`MEMORY_KIB`], [`PASSES`] and
/// [`LANES`]. A login verifies with the costs the hash names, so an unchecked hash could
/// make one attempt take gigabytes or minutes.
pub fn check_stored(phc: &str) -> Result<(), PasswordError> {
    let bad = |what: String| Err(PasswordError::Stored(what));
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::Stored(e.to_string()))?;
    if parsed.algorithm != argon2::Algorithm::Argon2id.ident() {
        return bad(format!("expected an argon2id hash, not {}", parsed.algorithm));
    }
    if parsed.version != Some(argon2::Version::V0x13.into()) {
        return bad("expected argon2 version 19 (v=19)".into());
    }
    let params = argon2::Params::try_from(&parsed).map_err(|e| PasswordError::Stored(e.to_string()))?;
    let costs = [
        ("m (memory in KiB)", params.m_cost(), &MEMORY_KIB),
        ("t (passes)", params.t_cost(), &PASSES),
        ("p (lanes)", params.p_cost(), &LANES),
    ];
    for (name, value, range) in costs {
        if !range.contains(&value) {
            return bad(format!("{name} = {value} is outside {}..={}", range.start(), range.end()));
        }
    }
    let mut buf = [0u8; 64];
    let salt = parsed.salt.map(|s| s.decode_b64(&mut buf).map(<[u8]>::len));
    match salt {
        Some(Ok(len)) if SALT_BYTES.contains(&len) => {}
        _ => return bad(format!("expected a salt of {} to {} bytes", SALT_BYTES.start(), SALT_BYTES.end())),
    }
    match parsed.hash.map(|h| h.len()) {
        Some(len) if HASH_BYTES.contains(&len) => Ok(()),
        _ => bad(format!("expected a hash of {} to {} bytes", HASH_BYTES.start(), HASH_BYTES.end())),
    }
}

fn verify_blocking(password: &Password, phc: &str) -> Result<bool, PasswordError> {
    check_stored(phc)?;
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::Stored(e.to_string()))?;
    match Argon2::default().verify_password(password.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Stored(e.to_string())),
    }
}

/// Checks presented passwords with bounded concurrency. Cheap to share.
pub struct Verifier {
    permits: Arc<Semaphore>,
    /// Checked when the username is unknown, so that it costs the same.
    dummy: Arc<str>,
}

impl Verifier {
    /// A verifier running at most one check per available core at once.
    pub fn new() -> Result<Self, PasswordError> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let dummy = hash(
            &Password::presented("no account has this password").map_err(|e| PasswordError::Hash(e.to_string()))?,
        )?;
        Ok(Self { permits: Arc::new(Semaphore::new(cores)), dummy: dummy.into() })
    }

    /// Whether `password` matches `phc`; with `None` (no such account) it does the same
    /// work and answers `false`.
    pub async fn verify(&self, password: Password, phc: Option<String>) -> Result<bool, PasswordError> {
        let _permit = self.permits.acquire().await.map_err(|_| PasswordError::Interrupted)?;
        let known = phc.is_some();
        let phc: Arc<str> = phc.map_or_else(|| self.dummy.clone(), Arc::from);
        let matched = tokio::task::spawn_blocking(move || verify_blocking(&password, &phc))
            .await
            .map_err(|_| PasswordError::Interrupted)??;
        Ok(known && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only_and_is_argon2id() {
        let password = Password::new_for_account("correct horse").unwrap();
        let phc = hash(&password).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let verifier = Verifier::new().unwrap();
        assert!(verifier.verify(password.clone(), Some(phc.clone())).await.unwrap());
        let wrong = Password::presented("correct horsE").unwrap();
        assert!(!verifier.verify(wrong, Some(phc)).await.unwrap());
        assert!(!verifier.verify(password, None).await.unwrap(), "no account, yet a match");
        assert!(check_stored(&hash(&Password::new_for_account("another one").unwrap()).unwrap()).is_ok());
    }

    #[test]
    fn a_stored_hash_must_be_argon2id_v19_with_costs_salt_and_hash_in_bounds() {
        // A valid hash of the crate's defaults, with one part replaced per case.
        let good = hash(&Password::new_for_account("correct horse").unwrap()).unwrap();
        let (salt, digest) = {
            let parts: Vec<&str> = good.split('$').collect();
            (parts[4].to_owned(), parts[5].to_owned())
        };
        let with = |head: &str| format!("{head}${salt}${digest}");
        assert!(check_stored(&good).is_ok());
        for edge in ["m=8192,t=1,p=1", "m=1048576,t=10,p=16"] {
            assert!(check_stored(&with(&format!("$argon2id$v=19${edge}"))).is_ok(), "{edge}");
        }
        let cases: Vec<(String, &str)> = vec![
            ("plain".into(), "not a PHC string"),
            ("$argon2id$".into(), "no salt or hash"),
            (with("$argon2i$v=19$m=19456,t=2,p=1"), "argon2i"),
            (with("$argon2d$v=19$m=19456,t=2,p=1"), "argon2d"),
            (with("$argon2id$v=16$m=19456,t=2,p=1"), "version 0x10"),
            (with("$argon2id$m=19456,t=2,p=1"), "no version"),
            (with("$argon2id$v=19$m=8191,t=2,p=1"), "under 8 MiB"),
            (with("$argon2id$v=19$m=1048577,t=1,p=1"), "over 1 GiB"),
            (with("$argon2id$v=19$m=19456,t=11,p=1"), "11 passes"),
            (with("$argon2id$v=19$m=19456,t=2,p=17"), "17 lanes"),
            (format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${digest}"), "a 4-byte salt"),
            (format!("$argon2id$v=19$m=19456,t=2,p=1${salt}$aGFzaGhhc2g"), "an 8-byte hash"),
            (format!("$argon2id$v=19$m=19456,t=2,p=1${salt}"), "no hash"),
            (format!("$scrypt$ln=16,r=8,p=1${salt}${digest}"), "scrypt"),
        ];
        for (phc, case) in cases {
            assert!(check_stored(&phc).is_err(), "{case} was accepted: {phc}");
        }
    }
}
