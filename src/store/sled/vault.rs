//! Erasure that holds on sled: personal data is sealed under a key of its user, and
//! erasing the user destroys the key.
//!
//! sled is log-structured: a removed or rewritten value stays in its segment of the data
//! file until sled happens to reuse the segment, so removing a person's values would leave
//! them readable in the files for a while. Instead every value that holds a person's data
//! (the user record, the details, the refresh families, the events' addresses, user agents
//! and details) is sealed with AES-256-GCM under a random key of that user. The keys live
//! outside sled, in `user-keys` in the data directory: fixed slots of user id ‖ key, written
//! in place and fsynced, so an erasure overwrites the key with zeros for good (on a file
//! system that writes in place; docs/account-deletion.md says what copy-on-write file
//! systems and SSDs change). The keys are not derived from `session-keys.secret`: losing
//! that file must keep costing only the session keys and details sealed under it (which
//! stay sealed under it inside the user's sealing), not the users.
//!
//! Indexes keep no plaintext either: openids and unionids are found by keyed hash
//! ([`Index`]), under a key kept in the store (`meta`), for the same reason.
//!
//! A sealed value: [`MAGIC`] ‖ slot (u32, big-endian) ‖ nonce ‖ ciphertext ‖ tag, with the
//! purpose and the user id as associated data, so a value moved to another user or tree
//! does not open.

use std::{
    fs::File,
    io::ErrorKind,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
    sync::{Arc, Mutex},
};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use aws_lc_rs::hmac;

use crate::store::StoreError;

/// The secrets' file, in the data directory.
pub(super) const FILE: &str = "user-keys";
/// Marks a sealed value; no postcard record of this store starts with it in practice, and
/// a value that does is only taken for sealed when its tag checks.
const MAGIC: [u8; 2] = [0xff, 0x5e];
const SLOT: usize = 16 + 32;
const HEADER: usize = MAGIC.len() + 4;
const NONCE: usize = 12;

/// What a value is sealed for: part of the associated data.
#[derive(Clone, Copy)]
pub(super) enum Purpose {
    User,
    Details,
    Family,
    Event,
    AccountPhone,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::User => b"user",
            Self::Details => b"details",
            Self::Family => b"family",
            Self::Event => b"event",
            Self::AccountPhone => b"account-phone",
        }
    }
}

/// A stored value, opened.
pub(super) enum Opened {
    /// Sealed under the key in `slot`, and this is what it held.
    Plain { slot: u32, bytes: Vec<u8> },
    /// Sealed under a key that was destroyed: the user was erased.
    Shredded,
    /// Not sealed (written by an earlier layout, or a value without a user).
    NotSealed,
}

/// The per-user secrets. Cheap to clone.
#[derive(Clone)]
pub(super) struct Vault {
    file: Arc<File>,
    /// Slots in the file; new ones are appended under this lock.
    slots: Arc<Mutex<u32>>,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Database(format!("{FILE}: {e}"))
}

impl Vault {
    /// Opens (or creates, mode 0600) the keys of the store in `data_dir`. A slot torn by a
    /// crash while it was appended was never acknowledged in use: the next one overwrites
    /// it.
    pub(super) fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(data_dir.join(FILE))
            .map_err(io)?;
        let slots = u32::try_from(file.metadata().map_err(io)?.len() / SLOT as u64)
            .map_err(|_| StoreError::Corrupt(format!("{FILE}: more slots than a u32 counts")))?;
        Ok(Self { file: Arc::new(file), slots: Arc::new(Mutex::new(slots)) })
    }

    /// Whether the file holds no key yet.
    pub(super) fn is_empty(&self) -> bool {
        *self.slots.lock().unwrap_or_else(|e| e.into_inner()) == 0
    }

    /// A new key for `user`. Durable with the next group commit ([`super::commit`]), which
    /// syncs this file before the database: a record sealed under it is acknowledged only
    /// then. (A crash before may leave a record whose key was lost; it was never
    /// acknowledged, and reads as an erased user's.)
    pub(super) fn new_slot(&self, user: &[u8; 16]) -> Result<u32, StoreError> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| StoreError::Database("no randomness available".into()))?;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = *slots;
        let mut bytes = [0u8; SLOT];
        bytes[..16].copy_from_slice(user);
        bytes[16..].copy_from_slice(&secret);
        self.file.write_all_at(&bytes, offset(slot)).map_err(io)?;
        *slots = slot.checked_add(1).ok_or_else(|| StoreError::Corrupt(format!("{FILE}: full")))?;
        Ok(slot)
    }

    /// The secret in `slot`, if it is `user`'s and not destroyed.
    fn secret(&self, slot: u32, user: &[u8; 16]) -> Result<Option<[u8; 32]>, StoreError> {
        let mut bytes = [0u8; SLOT];
        match self.file.read_exact_at(&mut bytes, offset(slot)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        if bytes[..16] != user[..] {
            return Ok(None);
        }
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes[16..]);
        Ok(Some(secret))
    }

    /// Makes every key written so far durable (migrations, which do not go through the
    /// group commit).
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io)
    }

    /// Destroys every secret of `user` but the one in `keep`: what was sealed under them
    /// can no longer be opened by anyone. Durable when it returns. Scans the whole file
    /// (48 bytes per user ever created), so that a secret whose value was never written
    /// (a crash, a lost compare-and-swap) goes too.
    pub(super) fn shred(&self, user: &[u8; 16], keep: Option<u32>) -> Result<usize, StoreError> {
        let slots = *self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut shredded = 0;
        let mut chunk = vec![0u8; SLOT * 4096];
        let mut first = 0u32;
        while first < slots {
            let count = (slots - first).min(4096);
            let bytes = &mut chunk[..SLOT * count as usize];
            self.file.read_exact_at(bytes, offset(first)).map_err(io)?;
            for (i, slot) in bytes.chunks_exact(SLOT).enumerate() {
                let index = first + i as u32;
                if slot[..16] == user[..] && Some(index) != keep {
                    self.file.write_all_at(&[0u8; SLOT], offset(index)).map_err(io)?;
                    shredded += 1;
                }
            }
            first += count;
        }
        if shredded > 0 {
            self.file.sync_data().map_err(io)?;
        }
        Ok(shredded)
    }

    /// `plain`, sealed for `user` under the secret in `slot`.
    pub(super) fn seal(
        &self,
        purpose: Purpose,
        user: &[u8; 16],
        slot: u32,
        plain: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let secret = self
            .secret(slot, user)?
            .ok_or_else(|| StoreError::Corrupt(format!("no key of user {} in slot {slot}", hex(user))))?;
        let mut nonce = [0u8; NONCE];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| StoreError::Database("no randomness available".into()))?;
        let aad = [purpose.label(), &user[..]].concat();
        let sealed = cipher(&secret)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
            .map_err(|_| StoreError::Database("sealing failed".into()))?;
        let mut out = Vec::with_capacity(HEADER + NONCE + sealed.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&slot.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value stored for `user`.
    pub(super) fn open_value(&self, purpose: Purpose, user: &[u8; 16], value: &[u8]) -> Result<Opened, StoreError> {
        let Some(slot) = slot_of(value) else { return Ok(Opened::NotSealed) };
        let Some(secret) = self.secret(slot, user)? else { return Ok(Opened::Shredded) };
        let (nonce, sealed) = value[HEADER..].split_at(NONCE);
        let aad = [purpose.label(), &user[..]].concat();
        match cipher(&secret).decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad }) {
            Ok(bytes) => Ok(Opened::Plain { slot, bytes }),
            // Not ours after all: a value of an earlier layout that starts like a sealed one.
            Err(_) => Ok(Opened::NotSealed),
        }
    }
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// Keyed hashes for the indexes of openids and unionids. Cheap to clone.
#[derive(Clone)]
pub(super) struct Index(Arc<hmac::Key>);

const INDEX_KEY: &[u8] = b"index_key";

impl Index {
    /// The store's key, made at its first open (a compare-and-swap: never replaced).
    pub(super) fn load_or_create(meta: &::sled::Tree) -> Result<Self, StoreError> {
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh).map_err(|_| StoreError::Database("no randomness available".into()))?;
        let key = match meta.compare_and_swap(INDEX_KEY, None::<&[u8]>, Some(&fresh[..]))? {
            Ok(()) => fresh.to_vec(),
            Err(current) => current.current.map(|k| k.to_vec()).unwrap_or_default(),
        };
        if key.len() != 32 {
            return Err(StoreError::Corrupt("the index key in meta".into()));
        }
        Ok(Self(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key))))
    }

    /// The keyed hash of `value` in the index of `purpose`.
    pub(super) fn pseudonym(&self, purpose: &str, value: &str) -> [u8; 16] {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(purpose.as_bytes());
        context.update(&[0]);
        context.update(value.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&context.sign().as_ref()[..16]);
        out
    }
}

/// The slot a sealed value names; `None` when it does not look sealed.
pub(super) fn slot_of(value: &[u8]) -> Option<u32> {
    if value.len() < HEADER + NONCE + 16 || value[..2] != MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(value[2..HEADER].try_into().ok()?))
}

fn offset(slot: u32) -> u64 {
    u64::from(slot) * SLOT as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_for_its_user_and_purpose_and_never_after_its_user_is_shredded() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let (amy, ben) = ([1u8; 16], [2u8; 16]);
        let (slot, kept) = (vault.new_slot(&amy).unwrap(), vault.new_slot(&amy).unwrap());
        let other = vault.new_slot(&ben).unwrap();
        let sealed = vault.seal(Purpose::User, &amy, slot, b"o6_bmjrPTlm6_2sgVt7hMZOPfL2M").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"o6_bmj"), "sealed in the clear");

        let plain = |opened: Opened| match opened {
            Opened::Plain { slot, bytes } => Some((slot, bytes)),
            _ => None,
        };
        assert_eq!(
            plain(vault.open_value(Purpose::User, &amy, &sealed).unwrap()),
            Some((slot, b"o6_bmjrPTlm6_2sgVt7hMZOPfL2M".to_vec()))
        );
        assert!(plain(vault.open_value(Purpose::Details, &amy, &sealed).unwrap()).is_none(), "another purpose");
        assert!(matches!(vault.open_value(Purpose::User, &ben, &sealed).unwrap(), Opened::Shredded), "another user");
        assert!(matches!(vault.open_value(Purpose::User, &amy, b"\x01postcard").unwrap(), Opened::NotSealed));

        assert_eq!(vault.shred(&amy, Some(kept)).unwrap(), 1);
        assert!(matches!(vault.open_value(Purpose::User, &amy, &sealed).unwrap(), Opened::Shredded));
        let reopened = Vault::open(dir.path()).unwrap();
        assert!(matches!(reopened.open_value(Purpose::User, &amy, &sealed).unwrap(), Opened::Shredded));
        let again = reopened.seal(Purpose::Event, &amy, kept, b"kept").unwrap();
        assert!(plain(reopened.open_value(Purpose::Event, &amy, &again).unwrap()).is_some(), "the kept slot");
        let theirs = reopened.seal(Purpose::Event, &ben, other, b"ben").unwrap();
        assert!(plain(reopened.open_value(Purpose::Event, &ben, &theirs).unwrap()).is_some(), "another user's slot");
        assert_eq!(reopened.new_slot(&ben).unwrap(), 3, "a reopened vault reuses a slot");
    }
}
