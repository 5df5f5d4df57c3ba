//! The two directories that hold secrets: `WXAUTH_DATA_DIR` (session keys, phone numbers)
//! and `WXAUTH_KEYS_DIR` (the signing keys and the session-key encryption key). One rule
//! for `serve` and every CLI command that opens them: other users get no access.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// A directory that other users can read or enter.
#[derive(Debug, thiserror::Error)]
#[error(
    "{setting}={path} is accessible to other users (mode {mode:04o}) and holds secrets: run `chmod 700 {path}`",
    path = .path.display()
)]
pub struct Exposed {
    /// The setting naming the directory.
    pub setting: &'static str,
    /// The directory.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

/// What [`check`] does with a directory other users can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Refuse it (production, and the CLI).
    Refuse,
    /// Dev mode: make it private if it is ours and holds only files wxauth makes or the
    /// repository ships (a fresh clone's `keys/` is 0755, because git keeps no directory
    /// modes); otherwise warn and go on.
    TightenOrWarn,
    /// `wxauth store init`: make it private if it is ours and holds only wxauth's files;
    /// otherwise refuse.
    TightenOrRefuse,
}

/// Names of files that wxauth writes into these directories, or that the repository's own
/// `keys/` holds: a directory of only these can be made private without taking anything
/// from anyone.
fn is_ours(name: &str) -> bool {
    matches!(name, "README.md" | ".gitignore" | "session-keys.secret" | "db" | "conf" | "blobs" | "snap.tmp")
        || name.ends_with(".pem")
        || name.starts_with("snap.")
        || name.ends_with(".sock")
}

/// Checks that `path` (named by `setting`) gives other users no access. A missing
/// directory passes: it is created 0700 where it is needed.
pub fn check(path: &Path, setting: &'static str, exposure: Exposure) -> Result<(), Exposed> {
    let Ok(meta) = fs::metadata(path) else { return Ok(()) };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let exposed = Exposed { setting, path: path.to_owned(), mode };
    let tighten = matches!(exposure, Exposure::TightenOrWarn | Exposure::TightenOrRefuse);
    if tighten && only_ours(path, &meta) && fs::set_permissions(path, fs::Permissions::from_mode(0o700)).is_ok() {
        tracing::info!(
            directory = %path.display(),
            setting,
            "made the directory private (0700): it holds only wxauth's files, and secrets go in it"
        );
        return Ok(());
    }
    if exposure == Exposure::TightenOrWarn {
        tracing::warn!("{exposed} (refused outside dev mode)");
        return Ok(());
    }
    Err(exposed)
}

fn only_ours(path: &Path, meta: &fs::Metadata) -> bool {
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return false;
    }
    let Ok(entries) = fs::read_dir(path) else { return false };
    entries.into_iter().all(|entry| entry.is_ok_and(|e| e.file_name().to_str().is_some_and(is_ours)))
}

/// Creates `path` (and missing parents) with mode 0700; an existing directory is left as
/// it is, for [`check`] to judge.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(mode: u32, files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            fs::write(dir.path().join(file), "x").unwrap();
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_private_or_missing_directory_passes_untouched() {
        let dir = dir_with(0o700, &["notes.txt"]);
        assert!(check(dir.path(), "WXAUTH_KEYS_DIR", Exposure::Refuse).is_ok());
        assert!(check(&dir.path().join("missing"), "WXAUTH_KEYS_DIR", Exposure::Refuse).is_ok());
    }

    #[test]
    fn a_fresh_clones_keys_directory_is_made_private_in_dev_mode_and_by_init() {
        for exposure in [Exposure::TightenOrWarn, Exposure::TightenOrRefuse] {
            let dir = dir_with(0o755, &["README.md", ".gitignore", "abc.pem", "session-keys.secret"]);
            assert!(check(dir.path(), "WXAUTH_KEYS_DIR", exposure).is_ok());
            assert_eq!(mode(dir.path()), 0o700, "{exposure:?}");
        }
    }

    #[test]
    fn a_directory_holding_other_files_is_never_changed() {
        let dir = dir_with(0o755, &["README.md", "my-photos.zip"]);
        assert!(check(dir.path(), "WXAUTH_KEYS_DIR", Exposure::TightenOrWarn).is_ok(), "dev mode warns only");
        let err = check(dir.path(), "WXAUTH_KEYS_DIR", Exposure::TightenOrRefuse).unwrap_err().to_string();
        assert!(err.contains("WXAUTH_KEYS_DIR") && err.contains("chmod 700"), "{err}");
        assert_eq!(mode(dir.path()), 0o755);
    }

    #[test]
    fn production_refuses_an_exposed_directory_even_of_its_own_files() {
        let dir = dir_with(0o750, &["README.md"]);
        let err = check(dir.path(), "WXAUTH_DATA_DIR", Exposure::Refuse).unwrap_err();
        assert_eq!((err.setting, err.mode), ("WXAUTH_DATA_DIR", 0o750));
        assert_eq!(mode(dir.path()), 0o750);
    }

    #[test]
    fn create_private_makes_a_0700_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("a/data");
        create_private(&store).unwrap();
        assert_eq!(mode(&store), 0o700);
    }
}
