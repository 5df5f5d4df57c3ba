//! The key ring: one PKCS#8 PEM private key per file in the keys directory.
//!
//! A file is named `<kid>.pem`, where the kid is the RFC 7638 SHA-256 thumbprint of its
//! public JWK, so a kid can never point at two different keys. Text before `-----BEGIN`
//! (which PEM readers, OpenSSL included, skip) records `created: <RFC 3339>` and
//! `mode: dev|production`; the newest key of the configured algorithm signs, and every key
//! is published. Keys imported without a `created:` line fall back to the file's
//! modification time; without a `mode:` line they count as production keys.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::KeySize,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
        KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, RSAKeyParameters, RSAKeyType,
        ThumbprintHash,
    },
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    TokenError,
    signer::{KeyPair as ParsedPair, Signer},
};
use crate::domain::{KeyMode, SigningAlg};

const PEM_TAG: &str = "PRIVATE KEY";

/// One key of the ring, ready to sign and verify.
pub struct RingKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The only algorithm this key is used with.
    pub alg: SigningAlg,
    /// When the key file was written.
    pub created: OffsetDateTime,
    /// Made by dev mode or not: a dev-mode key must never sign production tokens, and vice
    /// versa.
    pub mode: KeyMode,
    /// Public JWK as published.
    pub jwk: Jwk,
    pub(super) signer: Signer,
    pub(super) decoding: DecodingKey,
}

/// Reads every `*.pem` key in `dir`, oldest first.
pub fn load_dir(dir: &Path) -> Result<Vec<RingKey>, TokenError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TokenError::io(dir, e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| TokenError::io(dir, e))?.path();
        if path.extension().is_some_and(|ext| ext == "pem") {
            keys.push(load_file(&path)?);
        }
    }
    keys.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.kid.cmp(&b.kid)));
    Ok(keys)
}

fn load_file(path: &Path) -> Result<RingKey, TokenError> {
    let text = fs::read(path).map_err(|e| TokenError::io(path, e))?;
    let bad = |reason: &str| TokenError::BadKeyFile { path: path.into(), reason: reason.into() };
    let pem = pem::parse(&text).map_err(|_| bad("not a PEM file"))?;
    if pem.tag() != PEM_TAG {
        return Err(bad("expected an unencrypted PKCS#8 key (-----BEGIN PRIVATE KEY-----)"));
    }
    let der = pem.contents();
    let (alg, params, pair) = parse_key(der).ok_or_else(|| bad("not a P-256, Ed25519 or RSA (2048+ bit) key"))?;
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(match alg {
                SigningAlg::ES256 => KeyAlgorithm::ES256,
                SigningAlg::EdDSA => KeyAlgorithm::EdDSA,
                SigningAlg::RS256 => KeyAlgorithm::RS256,
            }),
            ..Default::default()
        },
        algorithm: params,
    };
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|_| bad("cannot compute thumbprint"))?;
    jwk.common.key_id = Some(kid.clone());
    // Verification goes through the published JWK, exactly as a third party's would.
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| bad("cannot build verification key"))?;
    let preamble = Preamble::parse(&text).map_err(|reason| bad(&reason))?;
    let created = match preamble.created {
        Some(created) => created,
        None => {
            tracing::warn!(path = %path.display(), "key file has no created: line; its modification time decides its age");
            fs::metadata(path).and_then(|m| m.modified()).map_err(|e| TokenError::io(path, e))?.into()
        }
    };
    if path.file_stem().is_some_and(|stem| stem != kid.as_str()) {
        tracing::warn!(path = %path.display(), %kid, "key file name differs from its kid; the kid is the thumbprint");
    }
    let signer = Signer::new(pair, alg, &kid)?;
    Ok(RingKey { kid, alg, created, mode: preamble.mode, jwk, signer, decoding })
}

/// The `key: value` lines before the PEM block.
struct Preamble {
    /// File times are not trusted for age: copies, checkouts and secret mounts rewrite
    /// them, which could let a retired key sign again.
    created: Option<OffsetDateTime>,
    mode: KeyMode,
}

impl Preamble {
    fn parse(text: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_owned())?;
        let head = &text[..text.find("-----BEGIN").unwrap_or(0)];
        let mut preamble = Preamble { created: None, mode: KeyMode::Production };
        for line in head.lines() {
            if let Some(value) = line.trim().strip_prefix("created:") {
                let created = OffsetDateTime::parse(value.trim(), &Rfc3339)
                    .map_err(|_| format!("created: {:?} is not an RFC 3339 time with offset", value.trim()))?;
                // A date in the future would make this key sign for ever.
                if created > OffsetDateTime::now_utc() + time::Duration::minutes(5) {
                    return Err(format!("created: {} is in the future", value.trim()));
                }
                preamble.created = Some(created);
            } else if let Some(value) = line.trim().strip_prefix("mode:") {
                preamble.mode = KeyMode::parse(value.trim())
                    .ok_or_else(|| format!("mode: {:?} is neither dev nor production", value.trim()))?;
            }
        }
        Ok(preamble)
    }
}

/// Recognises the key type from its PKCS#8 DER; returns its public JWK parameters and the
/// parsed key pair.
fn parse_key(der: &[u8]) -> Option<(SigningAlg, AlgorithmParameters, ParsedPair)> {
    if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der) {
        // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        let (x, y) = point.get(1..)?.split_at(32);
        return Some((
            SigningAlg::ES256,
            AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: URL_SAFE_NO_PAD.encode(x),
                y: URL_SAFE_NO_PAD.encode(y),
            }),
            ParsedPair::Es256(pair),
        ));
    }
    if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        return Some((
            SigningAlg::EdDSA,
            AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
            ParsedPair::EdDsa(pair),
        ));
    }
    if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
        let public = pair.public_key();
        let (n, e) =
            (public.modulus().big_endian_without_leading_zero(), public.exponent().big_endian_without_leading_zero());
        let params = AlgorithmParameters::RSA(RSAKeyParameters {
            key_type: RSAKeyType::RSA,
            n: URL_SAFE_NO_PAD.encode(n),
            e: URL_SAFE_NO_PAD.encode(e),
        });
        return Some((SigningAlg::RS256, params, ParsedPair::Rs256(pair)));
    }
    None
}

/// Generates a new key of `alg` and `mode`, writes it to `dir` (file mode 0600) and returns
/// it loaded.
pub fn generate(dir: &Path, alg: SigningAlg, mode: KeyMode) -> Result<RingKey, TokenError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| TokenError::io(dir, e))?;
    let der = pkcs8_for(alg)?;
    let (_, params, _) = parse_key(&der).ok_or(TokenError::KeyGeneration)?;
    let kid = Jwk { common: CommonParameters::default(), algorithm: params }
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| TokenError::KeyGeneration)?;
    let path: PathBuf = dir.join(format!("{kid}.pem"));
    let created = OffsetDateTime::now_utc().format(&Rfc3339).map_err(|_| TokenError::KeyGeneration)?;
    let mode = mode.as_str();
    let text = format!(
        "wxauth signing key\nkid: {kid}\nalg: {alg}\ncreated: {created}\nmode: {mode}\n{}",
        pem::encode(&pem::Pem::new(PEM_TAG, der))
    );
    // create_new + 0600: never overwrite a key, never let another user read one.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| TokenError::io(&path, e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| TokenError::io(&path, e))?;
    load_file(&path)
}

fn pkcs8_for(alg: SigningAlg) -> Result<Vec<u8>, TokenError> {
    let failed = |_| TokenError::KeyGeneration;
    Ok(match alg {
        SigningAlg::ES256 => EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        // PKCS#8 v1 (RFC 8410) is what OpenSSL and other tools read.
        SigningAlg::EdDSA => Ed25519KeyPair::generate().and_then(|k| k.to_pkcs8v1()).map_err(failed)?.as_ref().to_vec(),
        SigningAlg::RS256 => {
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?.as_der().map_err(failed)?.as_ref().to_vec()
        }
    })
}

impl From<SigningAlg> for Algorithm {
    fn from(alg: SigningAlg) -> Self {
        match alg {
            SigningAlg::ES256 => Algorithm::ES256,
            SigningAlg::EdDSA => Algorithm::EdDSA,
            SigningAlg::RS256 => Algorithm::RS256,
        }
    }
}
