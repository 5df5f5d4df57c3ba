//! What a store records about itself, decided once for every backend: the mode it was
//! created in, which no server of the other mode may use.

use super::StoreError;
use crate::domain::KeyMode;

/// Whether a store whose recorded mode is `recorded` may serve in `running` mode;
/// `setting` names the store in the refusal (`WXAUTH_DATA_DIR`, `WXAUTH_DATABASE_URL`).
/// Dev mode logs anyone in as anyone, so the two never share users.
pub(super) fn agree(recorded: &[u8], running: KeyMode, setting: &'static str) -> Result<(), StoreError> {
    if recorded == running.as_str().as_bytes() {
        return Ok(());
    }
    let recorded = if recorded == KeyMode::Dev.as_str().as_bytes() { KeyMode::Dev } else { KeyMode::Production };
    Err(StoreError::WrongMode { recorded: recorded.as_str(), running: running.as_str(), setting })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_serves_only_the_mode_it_was_created_in() {
        let cases: [(&[u8], KeyMode, Option<&str>); 5] = [
            (b"dev", KeyMode::Dev, None),
            (b"production", KeyMode::Production, None),
            (b"dev", KeyMode::Production, Some("dev")),
            (b"production", KeyMode::Dev, Some("production")),
            // Anything else was not written by wxauth's dev mode: treated as production.
            (b"staging", KeyMode::Dev, Some("production")),
        ];
        for (recorded, running, refused) in cases {
            let got = agree(recorded, running, "WXAUTH_DATA_DIR");
            match (got, refused) {
                (Ok(()), None) => {}
                (Err(StoreError::WrongMode { recorded: r, running: n, setting }), Some(expected)) => {
                    assert_eq!((r, n, setting), (expected, running.as_str(), "WXAUTH_DATA_DIR"));
                }
                (got, _) => panic!("{recorded:?} in {running:?}: {got:?}"),
            }
        }
    }
}
