//! Automatic rotation (`WXAUTH_KEY_ROTATION_DAYS`): the server stages the next key itself,
//! once across replicas that share the keys directory.

use super::{KeyInfo, TokenError, Tokens, keys};

/// The file in the keys directory that replicas lock while one of them stages a key. Not a
/// key file (`*.pem`), so the ring ignores it.
const ROTATION_LOCK: &str = "rotation.lock";

impl Tokens {
    /// Creates the next key ahead of time when `WXAUTH_KEY_ROTATION_DAYS` says the active
    /// one is due, staged like `keys rotate`. Returns the new key, if one was made.
    ///
    /// Replicas sharing the keys directory take turns under a lock file in it, each first
    /// reading what the others staged: one of them makes the key, and all sign with it. A
    /// replica that finds the lock taken does not wait (this runs on the server's runtime):
    /// it looks again at its next round, and finds the key the holder made.
    pub fn rotate_if_due(&self) -> Result<Option<KeyInfo>, TokenError> {
        let Some(every) = self.settings.key_rotation else { return Ok(None) };
        if !self.due(every) {
            return Ok(None);
        }
        use std::os::unix::fs::OpenOptionsExt;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.keys_dir.join(ROTATION_LOCK))
            .map_err(|e| TokenError::io(&self.keys_dir, e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(TokenError::io(&self.keys_dir, e.into())),
        }
        self.reload()?;
        if !self.due(every) {
            return Ok(None);
        }
        let now = self.clock.now();
        let due = self.ring().signer().activates + every;
        let key = keys::generate(
            &self.keys_dir,
            self.settings.signing_alg,
            self.mode,
            due.max(now + self.settings.key_activation),
        )?;
        self.reload()?;
        // Closing the file releases the lock.
        drop(lock);
        Ok(Some(KeyInfo::from(&key)))
    }

    /// Whether the ring as this replica knows it needs a next key now.
    fn due(&self, every: std::time::Duration) -> bool {
        let ring = self.ring();
        let now = self.clock.now();
        let alg = self.settings.signing_alg;
        if ring.all.iter().any(|k| k.alg == alg && k.activates > now) {
            return false;
        }
        now + self.settings.key_activation >= ring.signer().activates + every
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::OffsetDateTime;

    use super::*;
    use crate::{
        clock::{Clock, TestClock},
        domain::{KeyMode, SigningAlg},
        token::fixtures::{add, identity, settings, user},
    };

    #[test]
    fn the_server_stages_its_next_key_when_the_clock_says_rotation_is_due() {
        let (dir, clock) = (tempfile::tempdir().unwrap(), TestClock::default());
        add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        let mut settings = settings(SigningAlg::ES256);
        settings.key_rotation = Some(Duration::from_secs(86_400));
        let issuer = "https://auth.example.com".to_string();
        let tokens = Tokens::open(&settings, issuer, dir.path(), KeyMode::Production, clock.clock()).unwrap();

        // Due when a key staged now (600 s ahead) would sign a day after the active one.
        clock.advance(86_400 - 600 - 5);
        assert!(tokens.rotate_if_due().unwrap().is_none(), "rotated early");
        clock.advance(10);
        let next = tokens.rotate_if_due().unwrap().expect("no key staged although one was due");
        assert!(next.activates >= clock.clock().now() + Duration::from_secs(590), "not staged: {}", next.activates);
    }

    #[test]
    fn the_server_stages_the_next_key_when_rotation_is_due_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        // Activated a day minus 5 minutes ago.
        let path = dir.path().join(format!("{}.pem", key.kid));
        let when = (OffsetDateTime::now_utc() - time::Duration::seconds(86_400 - 300))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let text: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| if l.starts_with("activates:") { format!("activates: {when}") } else { l.to_owned() })
            .collect();
        std::fs::write(&path, text.join("\n") + "\n").unwrap();
        let mut settings = settings(SigningAlg::ES256);
        let issuer = || "https://auth.example.com".to_string();

        // Due in 11 minutes: more than the 10-minute activation delay away, so not yet.
        settings.key_rotation = Some(Duration::from_secs(86_400 + 360));
        let tokens = Tokens::open(&settings, issuer(), dir.path(), KeyMode::Production, Clock::system()).unwrap();
        assert!(tokens.rotate_if_due().unwrap().is_none(), "rotated a key early");

        // Due in 5 minutes: staged now, to activate after the full delay.
        settings.key_rotation = Some(Duration::from_secs(86_400));
        let tokens = Tokens::open(&settings, issuer(), dir.path(), KeyMode::Production, Clock::system()).unwrap();
        let replica = Tokens::open(&settings, issuer(), dir.path(), KeyMode::Production, Clock::system()).unwrap();
        let next = tokens.rotate_if_due().unwrap().expect("no key staged although one was due");
        assert!(next.activates >= OffsetDateTime::now_utc() + Duration::from_secs(590), "not staged");
        assert!(tokens.rotate_if_due().unwrap().is_none(), "a second next key");
        // Another replica on the same directory, whose ring predates the staged key: it
        // finds that key instead of making one of its own.
        assert!(replica.rotate_if_due().unwrap().is_none(), "a second replica staged a key of its own");
        let pems = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pem"));
        assert_eq!(pems.count(), 2);
        let issued = tokens.issue(&user(), &identity(), uuid::Uuid::nil()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&issued.token).unwrap().kid.unwrap(), key.kid);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&tokens.jwks()).unwrap()["keys"].as_array().unwrap().len(),
            2
        );
    }
}
