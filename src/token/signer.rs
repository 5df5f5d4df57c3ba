//! Compact JWS signing with key pairs parsed once, when the ring is loaded.
//!
//! `jsonwebtoken::encode` parses the PKCS#8 key on every call, and parsing a key checks it
//! with a full public-key computation: for ES256 that doubled the cost of a signature, for
//! RS256 it cost 30 times the signature. Here aws-lc's key pair is kept, the header segment
//! is encoded once per key, and each token costs its claims' JSON and one signature.
//! Verification stays with jsonwebtoken, so every token is checked by the same library
//! (and the same published JWK) as a third party's verifier would use.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Header;
use serde::Serialize;

use super::TokenError;
use crate::domain::SigningAlg;

/// A private key, parsed.
pub(super) enum KeyPair {
    /// P-256.
    Es256(EcdsaKeyPair),
    /// Ed25519.
    EdDsa(Ed25519KeyPair),
    /// RSA, signing with PKCS#1 v1.5 and SHA-256.
    Rs256(RsaKeyPair),
}

/// Signs tokens with one key.
pub(super) struct Signer {
    pair: KeyPair,
    /// `base64url(header) + "."`, the same for every token of this key.
    header: String,
    rng: SystemRandom,
}

impl Signer {
    /// A signer whose tokens name `kid` in their header.
    pub(super) fn new(pair: KeyPair, alg: SigningAlg, kid: &str) -> Result<Self, TokenError> {
        let mut header = Header::new(alg.into());
        header.kid = Some(kid.to_owned());
        header.typ = Some(super::ACCESS_TOKEN_TYP.to_owned());
        let json = serde_json::to_vec(&header).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut header = URL_SAFE_NO_PAD.encode(json);
        header.push('.');
        Ok(Self { pair, header, rng: SystemRandom::new() })
    }

    /// The compact JWS of `claims`: `header.payload.signature`.
    pub(super) fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let json = serde_json::to_vec(claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(self.header.len() + json.len() * 4 / 3 + 360);
        token.push_str(&self.header);
        URL_SAFE_NO_PAD.encode_string(json, &mut token);
        let failed = |_| TokenError::Sign("the crypto library refused to sign".into());
        let signature = match &self.pair {
            KeyPair::Es256(pair) => pair.sign(&self.rng, token.as_bytes()).map_err(failed)?.as_ref().to_vec(),
            KeyPair::EdDsa(pair) => pair.sign(token.as_bytes()).as_ref().to_vec(),
            KeyPair::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &self.rng, token.as_bytes(), &mut signature).map_err(failed)?;
                signature
            }
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}
