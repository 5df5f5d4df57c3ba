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
    /// A stored hash is not a PHC string.
    #[error("a stored password hash is unreadable: {0}")]
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

/// Checks that `phc` is an argon2id PHC string this build can verify, before it is stored.
pub fn check_stored(phc: &str) -> Result<(), PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::Stored(e.to_string()))?;
    if parsed.algorithm != argon2::Algorithm::Argon2id.ident() || parsed.hash.is_none() {
        return Err(PasswordError::Stored("expected an argon2id hash".into()));
    }
    argon2::Params::try_from(&parsed).map_err(|e| PasswordError::Stored(e.to_string()))?;
    Ok(())
}

fn verify_blocking(password: &Password, phc: &str) -> Result<bool, PasswordError> {
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
        for bad in ["$argon2id$", "plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"] {
            assert!(check_stored(bad).is_err(), "{bad}");
        }
    }
}
