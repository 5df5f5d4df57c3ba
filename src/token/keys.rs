//! The key ring: one PKCS#8 PEM private key per file in the keys directory.
//!
//! A file is named `<kid>.pem`, where the kid is the RFC 7638 SHA-256 thumbprint of its
//! public JWK, so a kid can never point at two different keys. Text before `-----BEGIN`
//! (which PEM readers, OpenSSL included, skip) records `created: <RFC 3339>`,
//! `activates: <RFC 3339>` (when the key starts signing; see [`super::ring`]) and
//! `mode: dev|production`. Keys imported without a `created:` line fall back to the file's
//! modification time; without `activates:` they sign from their creation; without a
//! `mode:` line they count as production keys.
//!
//! A key file is a credential, so loading checks it ([`crate::keyfile`]: a regular file,
//! not a symlink, owned by the running user, with no group or other permission bits), and
//! no two files may hold one kid. Writing is atomic: a temporary
//! file, fsynced, renamed, and the directory fsynced, so a crash never leaves half a key.

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
    /// When the key starts signing.
    pub activates: OffsetDateTime,
    /// Made by dev mode or not: a dev-mode key must never sign production tokens, and vice
    /// versa.
    pub mode: KeyMode,
    /// Public JWK as published.
    pub jwk: Jwk,
    pub(super) signer: Signer,
    pub(super) decoding: DecodingKey,
}

/// What a keys directory holds: the usable keys, oldest activation first, and the files
/// that are not usable keys, each with why.
pub struct Loaded {
    /// The keys.
    pub keys: Vec<RingKey>,
    /// Files named `*.pem` that could not be used ([`TokenError::BadKeyFile`] or I/O).
    pub bad: Vec<TokenError>,
}

impl Loaded {
    /// The keys, or the first bad file as the error: what `serve` needs, since a key it
    /// skipped could be the one that signs.
    pub fn strict(self) -> Result<Vec<RingKey>, TokenError> {
        match self.bad.into_iter().next() {
            Some(bad) => Err(bad),
            None => Ok(self.keys),
        }
    }
}

/// Reads every `*.pem` key in `dir`. A file that is not a usable key is reported in
/// [`Loaded::bad`] and the others still load, so that the `keys` commands can recover a
/// ring with a stray file in it.
pub fn load_dir(dir: &Path) -> Result<Loaded, TokenError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded { keys: Vec::new(), bad: Vec::new() }),
        Err(e) => return Err(TokenError::io(dir, e)),
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| TokenError::io(dir, e))?.path();
        if path.extension().is_some_and(|ext| ext == "pem") {
            paths.push(path);
        }
    }
    paths.sort();
    let (mut keys, mut bad): (Vec<RingKey>, Vec<TokenError>) = (Vec::new(), Vec::new());
    for path in paths {
        match load_file(&path) {
            Ok(key) => match keys.iter().find(|k| k.kid == key.kid) {
                Some(_) => bad.push(TokenError::BadKeyFile {
                    path,
                    reason: format!("holds key {}, which another file holds too", key.kid),
                }),
                None => keys.push(key),
            },
            Err(e) => bad.push(e),
        }
    }
    keys.sort_by(|a, b| (a.activates, a.created, &a.kid).cmp(&(b.activates, b.created, &b.kid)));
    Ok(Loaded { keys, bad })
}

fn load_file(path: &Path) -> Result<RingKey, TokenError> {
    let text = crate::keyfile::read(path)?;
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
    let activates = preamble.activates.unwrap_or(created);
    Ok(RingKey { kid, alg, created, activates, mode: preamble.mode, jwk, signer, decoding })
}

/// The `key: value` lines before the PEM block.
struct Preamble {
    /// File times are not trusted for age: copies, checkouts and secret mounts rewrite
    /// them, which could let a retired key sign again.
    created: Option<OffsetDateTime>,
    /// May lie in the future: that is what staging a key means.
    activates: Option<OffsetDateTime>,
    mode: KeyMode,
}

impl Preamble {
    fn parse(text: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_owned())?;
        let head = &text[..text.find("-----BEGIN").unwrap_or(0)];
        let mut preamble = Preamble { created: None, activates: None, mode: KeyMode::Production };
        for line in head.lines() {
            if let Some(value) = line.trim().strip_prefix("created:") {
                let created = OffsetDateTime::parse(value.trim(), &Rfc3339)
                    .map_err(|_| format!("created: {:?} is not an RFC 3339 time with offset", value.trim()))?;
                // A date in the future would make this key sign for ever.
                if created > OffsetDateTime::now_utc() + time::Duration::minutes(5) {
                    return Err(format!("created: {} is in the future", value.trim()));
                }
                preamble.created = Some(created);
            } else if let Some(value) = line.trim().strip_prefix("activates:") {
                let activates = OffsetDateTime::parse(value.trim(), &Rfc3339)
                    .map_err(|_| format!("activates: {:?} is not an RFC 3339 time with offset", value.trim()))?;
                preamble.activates = Some(activates);
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

/// Generates a new key of `alg` and `mode` that signs from `activates`, writes it to `dir`
/// (file mode 0600, atomically) and returns it loaded.
pub fn generate(dir: &Path, alg: SigningAlg, mode: KeyMode, activates: OffsetDateTime) -> Result<RingKey, TokenError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| TokenError::io(dir, e))?;
    let der = pkcs8_for(alg)?;
    let (_, params, _) = parse_key(&der).ok_or(TokenError::KeyGeneration)?;
    let kid = Jwk { common: CommonParameters::default(), algorithm: params }
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| TokenError::KeyGeneration)?;
    let path: PathBuf = dir.join(format!("{kid}.pem"));
    let now = OffsetDateTime::now_utc();
    let format = |t: OffsetDateTime| t.format(&Rfc3339).ok();
    let (created, activates) =
        (format(now).ok_or(TokenError::KeyGeneration)?, format(activates.max(now)).ok_or(TokenError::KeyGeneration)?);
    let mode = mode.as_str();
    let text = format!(
        "wxauth signing key\nkid: {kid}\nalg: {alg}\ncreated: {created}\nactivates: {activates}\nmode: {mode}\n{}",
        pem::encode(&pem::Pem::new(PEM_TAG, der))
    );
    write_atomically(dir, &path, text.as_bytes())?;
    load_file(&path)
}

/// Writes `bytes` to `path` so that a crash leaves either nothing or the whole file: a
/// temporary file (mode 0600, never an existing one), fsync, rename, fsync of the directory.
/// An existing key file is never replaced.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), TokenError> {
    if path.exists() {
        return Err(TokenError::io(path, std::io::ErrorKind::AlreadyExists.into()));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Not `*.pem`: a leftover from a crash is ignored by the ring.
    let temporary = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| TokenError::io(&temporary, e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| TokenError::io(&temporary, e))?;
    fs::rename(&temporary, path).map_err(|e| TokenError::io(path, e))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| TokenError::io(dir, e))
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn key_in(dir: &Path) -> RingKey {
        generate(dir, SigningAlg::ES256, KeyMode::Production, OffsetDateTime::now_utc()).unwrap()
    }

    #[test]
    fn keys_are_written_atomically_into_a_private_directory() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("keys");
        let key = key_in(&dir);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [format!("{}.pem", key.kid)], "a temporary file was left behind");
        assert_eq!(fs::metadata(dir.join(&names[0])).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn untrustworthy_key_files_are_reported_and_the_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let good = key_in(dir.path());
        let good_path = dir.path().join(format!("{}.pem", good.kid));
        let other = tempfile::tempdir().unwrap();
        let outside = key_in(other.path());
        type Make<'a> = Box<dyn Fn(&Path) + 'a>;
        let cases: Vec<(&str, Make, &str)> = vec![
            (
                "readable.pem",
                Box::new(|p| {
                    fs::copy(other.path().join(format!("{}.pem", outside.kid)), p).unwrap();
                    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
                }),
                "mode 0644",
            ),
            (
                "link.pem",
                Box::new(|p| symlink(other.path().join(format!("{}.pem", outside.kid)), p).unwrap()),
                "symbolic link",
            ),
            (
                "~copy.pem",
                Box::new(|p| {
                    fs::copy(&good_path, p).unwrap();
                }),
                "another file holds too",
            ),
            (
                "junk.pem",
                Box::new(|p| {
                    fs::write(p, "not a key").unwrap();
                    fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
                }),
                "not a PEM file",
            ),
            ("dir.pem", Box::new(|p| fs::create_dir(p).unwrap()), "not a regular file"),
        ];
        for (name, make, expected) in cases {
            let path = dir.path().join(name);
            make(&path);
            let loaded = load_dir(dir.path()).unwrap();
            assert_eq!(loaded.keys.len(), 1, "{name}: the good key did not load");
            assert_eq!(loaded.bad.len(), 1, "{name}");
            let reason = loaded.bad[0].to_string();
            assert!(reason.contains(expected) && reason.contains(name), "{name}: {reason}");
            let strict = load_dir(dir.path()).unwrap().strict().err().unwrap().to_string();
            assert!(strict.contains(name), "{name}: serve would not name the file: {strict}");
            if path.is_dir() {
                fs::remove_dir(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
    }

    #[test]
    fn a_keys_directory_that_cannot_be_read_is_an_error_not_an_empty_ring() {
        let parent = tempfile::tempdir().unwrap();
        // A file where the directory should be: unreadable as a directory, whoever runs.
        let file = parent.path().join("keys");
        fs::write(&file, "not a directory").unwrap();
        let err = load_dir(&file).err().expect("a file was read as an empty key ring");
        assert!(err.to_string().contains(&file.display().to_string()), "{err}");

        if rustix::process::geteuid().is_root() {
            eprintln!("skipped the mode-000 keys directory: running as root, mode bits do not block reads");
        } else {
            let locked = parent.path().join("locked");
            key_in(&locked);
            fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
            let loaded = load_dir(&locked);
            fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
            assert!(loaded.is_err(), "a mode-000 keys directory was read as an empty key ring");
        }

        // Only a missing directory is an empty ring (dev mode creates its first key there).
        let missing = load_dir(&parent.path().join("missing")).unwrap();
        assert!(missing.keys.is_empty() && missing.bad.is_empty());
    }

    #[test]
    fn a_key_created_more_than_five_minutes_ahead_is_refused() {
        // A created time in the future would keep the key from ever counting as old.
        let dir = tempfile::tempdir().unwrap();
        let key = key_in(dir.path());
        let path = dir.path().join(format!("{}.pem", key.kid));
        let text = fs::read_to_string(&path).unwrap();
        let line = text.lines().find(|l| l.starts_with("created:")).unwrap().to_owned();
        let now = OffsetDateTime::now_utc();
        for (offset, accepted) in [
            (time::Duration::days(-1), true),
            (time::Duration::minutes(2), true),
            (time::Duration::minutes(10), false),
            (time::Duration::days(365), false),
        ] {
            let created = (now + offset).format(&Rfc3339).unwrap();
            // Rewriting the existing file keeps its mode 0600.
            fs::write(&path, text.replace(&line, &format!("created: {created}"))).unwrap();

            let loaded = load_dir(dir.path()).unwrap();

            let reasons: Vec<String> = loaded.bad.iter().map(ToString::to_string).collect();
            if accepted {
                assert_eq!((loaded.keys.len(), reasons.len()), (1, 0), "created {offset} was refused: {reasons:?}");
            } else {
                assert!(loaded.keys.is_empty(), "created {offset} ahead was accepted");
                assert!(reasons.len() == 1 && reasons[0].contains("in the future"), "{offset}: {reasons:?}");
            }
        }
    }
}
