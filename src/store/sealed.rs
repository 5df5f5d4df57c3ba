//! Session keys at rest: sealed with AES-256-GCM (RustCrypto `aes-gcm`) under a key kept
//! beside the signing keys, so that a copied data directory alone does not reveal them.
//!
//! The key file is `session-keys.secret` in the keys directory: 32 random bytes in base64,
//! mode 0600, checked like the signing keys when loaded ([`crate::keyfile`]). It is created
//! on first start (or by `wxauth keys rotate`) and never replaced: a temporary file, fsync,
//! a hard link into place, fsync of the directory. Replicas started together on a keys
//! directory without it thus end up with one key, not one each. The key ring reads only
//! `*.pem`, so it is never taken for a signing key.
//!
//! The same key also yields, through HMAC-SHA256, the key of the pseudonyms that index
//! personal data without storing it ([`Sealer::pseudonym`]): a phone number is found by
//! its keyed hash, never by its plaintext.
//!
//! A sealed value is `s1.` + base64(nonce ‖ ciphertext ‖ tag). The associated data names
//! what the value belongs to (a user and an app, or a ticket), so a sealed key moved to
//! another record does not open. WeChat's session keys are base64 and never contain `.`, so
//! a plaintext value written by an earlier release is recognisable.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};

/// The key file's name in the keys directory.
pub const KEY_FILE: &str = "session-keys.secret";
const PREFIX: &str = "s1.";

/// Why the sealing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("{0}: expected 32 bytes in base64 (the session-key encryption key)")]
    Malformed(PathBuf),
    /// The key file may not be trusted (a symlink, another owner, readable by others), or
    /// could not be read.
    #[error(transparent)]
    KeyFile(#[from] crate::keyfile::KeyFileError),
    /// No randomness for a new key or nonce.
    #[error("no randomness available")]
    Random,
}

/// Seals and opens stored session keys. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<Aes256Gcm>,
    /// Derived from the sealing key, never used to seal ([`Sealer::pseudonym`]).
    index: Arc<aws_lc_rs::hmac::Key>,
    /// Names the key without revealing it ([`Sealer::key_id`]).
    id: Arc<str>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    /// Loads the key from `keys_dir`; `None` when there is no key file.
    pub fn load(keys_dir: &Path) -> Result<Option<Self>, SealError> {
        // Not `exists()`, which follows a symlink: a dangling one must be refused, not
        // taken for no key.
        match fs::symlink_metadata(keys_dir.join(KEY_FILE)) {
            Ok(_) => Self::load_or_create(keys_dir).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SealError::Io { path: keys_dir.join(KEY_FILE), source }),
        }
    }

    /// Loads the key from `keys_dir`, creating it (and the directory) on first start.
    ///
    /// Replicas sharing a keys directory may start together on one without the key: each
    /// makes one, and exactly one of them is put in place (never replaced); the others load
    /// the winner's, so that they all seal with one key.
    pub fn load_or_create(keys_dir: &Path) -> Result<Self, SealError> {
        let path = keys_dir.join(KEY_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SealError::Io { path, source }
        };
        match crate::keyfile::read(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.is_not_found() => {
                let mut key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut key).map_err(|_| SealError::Random)?;
                // Private like the signing keys beside it.
                std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                    .create(keys_dir)
                    .map_err(io(keys_dir))?;
                match create_exclusively(&path, format!("{}\n", STANDARD.encode(key)).as_bytes()) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "created the session-key encryption key");
                        Self::from_key(&key).ok_or(SealError::Malformed(path))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        tracing::info!(file = %path.display(), "another process created the session-key encryption key first; using it");
                        Self::parse(&crate::keyfile::read(&path)?, &path)
                    }
                    Err(e) => Err(io(&path)(e)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn parse(text: &[u8], path: &Path) -> Result<Self, SealError> {
        let key = STANDARD.decode(text.trim_ascii()).map_err(|_| SealError::Malformed(path.to_owned()))?;
        Self::from_key(&key).ok_or_else(|| SealError::Malformed(path.to_owned()))
    }

    /// A sealer with a random key that lives only in memory (tests).
    pub fn ephemeral() -> Result<Self, SealError> {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| SealError::Random)?;
        Self::from_key(&key).ok_or(SealError::Random)
    }

    fn from_key(key: &[u8]) -> Option<Self> {
        // A hash of 256 random bits reveals nothing of them; the prefix keeps it from
        // matching a hash of the key made for any other purpose.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[b"wxauth sealing key id:", key].concat());
        let id: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
        let index_key = aws_lc_rs::hmac::sign(&derive, b"wxauth pseudonym key v1");
        let index = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, index_key.as_ref());
        Aes256Gcm::new_from_slice(key).ok().map(|cipher| Self {
            cipher: Arc::new(cipher),
            index: Arc::new(index),
            id: id.into(),
        })
    }

    /// A stable keyed hash of `value` for an index of `purpose` (e.g. `phone`): equal values
    /// give equal pseudonyms under one key file, and without the key a pseudonym tells
    /// nothing, not even whether a given phone number is among them. 128 bits: collisions
    /// are out of reach, and lookups check the value behind a match anyway.
    pub fn pseudonym(&self, purpose: &str, value: &str) -> [u8; 16] {
        let mut context = aws_lc_rs::hmac::Context::with_key(&self.index);
        context.update(purpose.as_bytes());
        context.update(&[0]);
        context.update(value.as_bytes());
        let tag = context.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }

    /// Names the key (16 hex digits of a hash of it), so that `wxauth store import` can tell
    /// that an export was sealed with the same key file without seeing either key.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for the record `context` names.
    pub fn seal(&self, plain: &str, context: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: context })
            .map_err(|_| SealError::Random)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// Opens a sealed value. `None` when it does not open: another key (a lost or replaced
    /// key file), another record, or tampering. Callers treat that as "no session key",
    /// which the client recovers from by logging in again.
    pub fn open(&self, sealed: &str, context: &[u8]) -> Option<String> {
        let bytes = STANDARD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if bytes.len() < 12 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: context }).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Whether `value` was written sealed (as opposed to plaintext by an earlier release).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }
}

/// Creates `path` holding `bytes`, unless it exists ([`std::io::ErrorKind::AlreadyExists`]).
/// A crash leaves no file or the whole one, never a torn key: a temporary file (mode 0600,
/// a name of its own per process), fsync, then a hard link to `path`, which fails rather
/// than replace a file another process put there first (a rename would replace it), and
/// an fsync of the directory.
fn create_exclusively(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness available"))?;
    // Random as well as the pid: replicas on several hosts may share the directory.
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = dir.join(format!(".{KEY_FILE}.{}.{suffix}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::hard_link(&temporary, path)
    })();
    let _ = fs::remove_file(&temporary);
    written?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_file_is_created_once_private_and_not_a_pem() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let first = Sealer::load_or_create(&keys).unwrap();
        let sealed = first.seal("tiihtNczf5v6AKRyjwEUhQ==", b"u1:wx1").unwrap();

        let again = Sealer::load_or_create(&keys).unwrap();

        assert_eq!(again.open(&sealed, b"u1:wx1").as_deref(), Some("tiihtNczf5v6AKRyjwEUhQ=="));
        let meta = fs::metadata(keys.join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700, "keys directory");
        let listing =
            crate::token::list_keys(&keys, crate::domain::SigningAlg::ES256, std::time::Duration::from_secs(900))
                .unwrap();
        assert!(listing.keys.is_empty() && listing.bad.is_empty(), "the key ring took it for a signing key");
        assert_eq!(fs::read_dir(&keys).unwrap().count(), 1, "a temporary file was left behind");
    }

    #[test]
    fn creators_racing_on_an_empty_directory_all_get_the_one_key_put_in_place() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let keys = dir.path().join("keys");
            let racers: Vec<_> = (0..4)
                .map(|_| {
                    let keys = keys.clone();
                    std::thread::spawn(move || Sealer::load_or_create(&keys).unwrap().key_id().to_owned())
                })
                .collect();
            let ids: Vec<String> = racers.into_iter().map(|r| r.join().unwrap()).collect();

            let on_disk = Sealer::load_or_create(&keys).unwrap().key_id().to_owned();
            assert!(ids.iter().all(|id| *id == on_disk), "{ids:?} and {on_disk} on disk");
            assert_eq!(fs::read_dir(&keys).unwrap().count(), 1, "a temporary file was left behind");
        }
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_key_and_its_record() {
        let sealer = Sealer::ephemeral().unwrap();
        let sealed = sealer.seal("tiihtNczf5v6AKRyjwEUhQ==", b"u1:wx1").unwrap();

        assert!(Sealer::is_sealed(&sealed) && !Sealer::is_sealed("tiihtNczf5v6AKRyjwEUhQ=="));
        assert!(!sealed.contains("tiiht"), "{sealed}");
        assert_eq!(sealer.open(&sealed, b"u2:wx1"), None, "moved to another record");
        assert_eq!(Sealer::ephemeral().unwrap().open(&sealed, b"u1:wx1"), None, "another key");
        let mut tampered = sealed.clone();
        tampered.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert_eq!(sealer.open(&tampered, b"u1:wx1"), None);
        assert_eq!(sealer.open("tiihtNczf5v6AKRyjwEUhQ==", b"u1:wx1"), None);
        assert_ne!(sealer.seal("k", b"c").unwrap(), sealer.seal("k", b"c").unwrap(), "nonces repeat");
    }

    #[test]
    fn a_pseudonym_is_stable_under_one_key_and_differs_by_key_purpose_and_value() {
        let sealer = Sealer::ephemeral().unwrap();
        let phone = sealer.pseudonym("phone", "+8613800138000");

        assert_eq!(sealer.clone().pseudonym("phone", "+8613800138000"), phone);
        assert_ne!(sealer.pseudonym("phone", "+8613800138001"), phone);
        assert_ne!(sealer.pseudonym("openid", "+8613800138000"), phone);
        assert_ne!(Sealer::ephemeral().unwrap().pseudonym("phone", "+8613800138000"), phone);
    }

    #[test]
    fn a_malformed_key_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), "not a key\n").unwrap();
        fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();
        let err = Sealer::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains(KEY_FILE) && err.contains("32 bytes"), "{err}");
    }
}
