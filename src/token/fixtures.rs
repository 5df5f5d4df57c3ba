//! What the token module's tests share.

use std::{path::Path, time::Duration};

use time::OffsetDateTime;

use super::{Activation, KeyInfo, rotate};
use crate::{
    config::TokenSettings,
    domain::{Identity, KeyMode, SigningAlg, User, UserId},
};

/// Adds a key that signs at once.
pub(super) fn add(dir: &Path, alg: SigningAlg, mode: KeyMode) -> KeyInfo {
    rotate(dir, alg, mode, Activation::Now).unwrap().0
}

pub(super) fn settings(alg: SigningAlg) -> TokenSettings {
    TokenSettings {
        issuer: None,
        audience: "wx123".into(),
        access_token_ttl: Duration::from_secs(900),
        refresh_token_ttl: Duration::from_secs(3600),
        refresh_families_per_user: 20,
        signing_alg: alg,
        key_activation: Duration::from_secs(600),
        key_rotation: None,
    }
}

pub(super) fn user() -> User {
    let now = OffsetDateTime::now_utc();
    User {
        id: UserId::new(),
        identities: vec![identity()],
        unionid: None,
        account: None,
        unionid_shared_with: Vec::new(),
        created_at: now,
        last_login_at: now,
        controls: crate::domain::Controls::default(),
    }
}

pub(super) fn identity() -> Identity {
    Identity { appid: "wx123".into(), openid: "o1".into() }
}
