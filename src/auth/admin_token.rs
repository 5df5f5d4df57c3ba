//! Admin API tokens: what `wxauth admin-tokens create` prints once, and how a presented
//! one is checked.
//!
//! A token is `wxa_` followed by the unpadded base64url of its 16-byte id and a 32-byte
//! random secret. The store keeps the id, the name, the role and the SHA-256 of the
//! secret, never the secret: a copy of the data directory or database gives no working
//! token. The CLI mints the token and sends only the hash to the server, as it does with
//! passwords. The prefix lets secret scanners and people recognise one.

use aws_lc_rs::digest::{SHA256, digest};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::store::{AdminRole, AdminToken, Store, StoreError};

/// What every admin token starts with.
pub const PREFIX: &str = "wxa_";

/// Bytes of a token's secret part.
const SECRET_LEN: usize = 32;

/// Longest name of an admin token, in bytes.
pub const MAX_NAME: usize = 64;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The name is not one wxauth keeps.
    #[error("an admin token's name is 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    Name,
    /// The system's random source failed.
    #[error("the system's random number generator failed")]
    Randomness,
}

/// A new token: its text, shown once, and what the store keeps of it.
pub struct Minted {
    /// The token to hand to the operator.
    pub text: SecretString,
    /// What the store keeps (no secret).
    pub token: AdminToken,
}

/// Checks an admin token's name: it appears in events and logs, so it is plain.
pub fn check_name(name: &str) -> Result<(), MintError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(plain) {
        return Err(MintError::Name);
    }
    Ok(())
}

/// Makes a new token named `name` with `role`, created at `now`.
pub fn mint(name: &str, role: AdminRole, now: OffsetDateTime) -> Result<Minted, MintError> {
    check_name(name)?;
    let id = *uuid::Uuid::now_v7().as_bytes();
    let mut secret = [0u8; SECRET_LEN];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| MintError::Randomness)?;
    let mut raw = Vec::with_capacity(16 + SECRET_LEN);
    raw.extend_from_slice(&id);
    raw.extend_from_slice(&secret);
    let text = SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw)));
    let token =
        AdminToken { id, name: name.to_owned(), role, secret_hash: hash(&secret), created_at: now, revoked_at: None };
    Ok(Minted { text, token })
}

fn hash(secret: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, secret).as_ref());
    out
}

/// The id and secret of a token's text, if it has the shape of one.
fn parse(text: &str) -> Option<([u8; 16], [u8; SECRET_LEN])> {
    let raw = URL_SAFE_NO_PAD.decode(text.strip_prefix(PREFIX)?).ok()?;
    if raw.len() != 16 + SECRET_LEN {
        return None;
    }
    let (id, secret) = raw.split_at(16);
    Some((id.try_into().ok()?, secret.try_into().ok()?))
}

/// The live (not revoked) admin token whose text is `text`, if there is one.
pub async fn verify(store: &Store, text: &str) -> Result<Option<AdminToken>, StoreError> {
    let Some((id, secret)) = parse(text) else { return Ok(None) };
    let Some(token) = store.admin_token(&id).await? else { return Ok(None) };
    let same = aws_lc_rs::constant_time::verify_slices_are_equal(&hash(&secret), &token.secret_hash).is_ok();
    Ok((same && token.revoked_at.is_none()).then_some(token))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_minted_token_parses_back_to_its_id_and_a_secret_matching_the_kept_hash() {
        let minted = mint("support-1", AdminRole::Read, OffsetDateTime::UNIX_EPOCH).unwrap();
        let text = minted.text.expose_secret();
        assert!(text.starts_with(PREFIX), "{text}");
        let (id, secret) = parse(text).unwrap();
        assert_eq!(id, minted.token.id);
        assert_eq!(hash(&secret), minted.token.secret_hash);
        assert_ne!(minted.token.secret_hash, hash(&[0; SECRET_LEN]));
    }

    #[test]
    fn texts_that_are_not_tokens_do_not_parse() {
        let good = mint("a", AdminRole::Write, OffsetDateTime::UNIX_EPOCH).unwrap();
        let good = good.text.expose_secret();
        for bad in [
            "",
            PREFIX,
            &good[PREFIX.len()..],
            &good[..good.len() - 1],
            &format!("{good}A"),
            &good.replacen(PREFIX, "wxb_", 1),
            &format!("{good}="),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_plain_and_short() {
        for good in ["a", "support-1", "ops.team_2", &"x".repeat(MAX_NAME)] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", "has space", "名字", "a/b", "a\nb", &"x".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
