//! Files that hold a secret key: the signing keys (`*.pem`) and the session-key encryption
//! key (`session-keys.secret`), both in `WXAUTH_KEYS_DIR`. One set of checks before either
//! is trusted, so that the two cannot drift apart.
//!
//! A key file must be a regular file (opened with `O_NOFOLLOW`, so a symbolic link is
//! refused: it could point anywhere, or be swapped), owned by the running user, and give
//! no permission to group or others. The checks run on the opened file, so that it cannot
//! be replaced between check and read.

use std::{
    fs,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

/// Why a key file could not be read, or may not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Opening or reading it failed (`NotFound` when there is none).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// It is not a private, regular file of this user.
    #[error("key file {path}: {reason}")]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl KeyFileError {
    /// Whether there is no file at the path.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads the key file at `path` after checking that it may be trusted with a secret.
pub fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.into(), source };
    let bad = |reason: String| KeyFileError::Untrusted { path: path.into(), reason };
    let mut file =
        fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path).map_err(
            |e| match e.raw_os_error() {
                Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                    bad("is a symbolic link; key files must be regular files".into())
                }
                _ => io(e),
            },
        )?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(bad(format!("is owned by uid {}, not by the user running wxauth (uid {me})", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "has mode {:04o}: other users may read it; run `chmod 600 {}`",
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(io)?;
    Ok(text)
}
