//! Verifying a presented access token.
//!
//! jsonwebtoken checks the signature, the algorithm, `iss`, `aud` and that the registered
//! claims are there; `exp` and `nbf` are checked here, against the service's clock, because
//! jsonwebtoken reads the system clock and a test could not move it. One visible
//! difference: jsonwebtoken checks times before `iss` and `aud`, so a token of this
//! issuer's keys that is both expired and for another issuer or audience (one from before
//! `WXAUTH_ISSUER` or `WXAUTH_AUDIENCE` changed) used to read "expired" and now reads
//! "failed verification"; both are 401 `invalid_token`.

use jsonwebtoken::Validation;

use super::{ACCESS_TOKEN_TYP, Claims, LEEWAY_SECS, Rejection, Tokens};
use crate::domain::SigningAlg;

impl Tokens {
    /// Verifies a token: the algorithm is pinned by the key its `kid` names (never by the
    /// header), and `iss`, `aud`, `sub` and `exp` must be present and right.
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        if token.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) {
            return Err(Rejection::DoubledPrefix);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let ring = self.ring();
        let key = header.kid.and_then(|kid| ring.keys().find(|k| k.kid == kid)).ok_or(Rejection::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation(key.alg))
            .map(|data| data.claims)
            .map_err(|_| Rejection::Invalid)?;
        self.check_times(&claims)?;
        // RFC 9068 section 4: `at+jwt`, or the same with the `application/` prefix. Checked
        // after the signature, so that the answer names the real problem of a forgery.
        let typ = header.typ.as_deref().map(|t| t.strip_prefix("application/").unwrap_or(t));
        if !typ.is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)) {
            return Err(Rejection::NotAccessToken);
        }
        if has_crit(token) {
            return Err(Rejection::CriticalExtension);
        }
        Ok(claims)
    }

    /// Checks for one key. `set_issuer`/`set_audience` alone would accept a token without
    /// `iss`/`aud`, hence the required claims. Times are left to [`Self::check_times`].
    fn validation(&self, alg: SigningAlg) -> Validation {
        let mut validation = Validation::new(alg.into());
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation
    }

    /// `exp` and `nbf` at the service's time, each with [`LEEWAY_SECS`] of skew, as
    /// jsonwebtoken's own checks would at the system's.
    fn check_times(&self, claims: &Claims) -> Result<(), Rejection> {
        let now = self.clock.now().unix_timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(i64::MAX);
        if claims.exp < now.saturating_sub(leeway) {
            return Err(Rejection::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) {
            return Err(Rejection::Invalid);
        }
        Ok(())
    }
}

/// Whether the header of `token` has a `crit` parameter, whatever its value: `Header` reads
/// `"crit": null` as no `crit` at all. A header that `decode_header` read but this cannot
/// counts as having one: refusing is the safe side.
fn has_crit(token: &str) -> bool {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = token.split('.').next().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
    let header = header.and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok());
    header.is_none_or(|h| h.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::{
        clock::{Clock, TestClock},
        domain::KeyMode,
        token::fixtures::{add, identity, settings, user},
    };

    #[test]
    fn a_token_expires_when_the_clock_passes_its_exp_and_the_leeway() {
        let (dir, clock) = (tempfile::tempdir().unwrap(), TestClock::default());
        let tokens = Tokens::open(
            &settings(SigningAlg::ES256),
            "https://auth.example.com".into(),
            dir.path(),
            KeyMode::Dev,
            clock.clock(),
        )
        .unwrap();
        let issued = tokens.issue(&user(), &identity(), uuid::Uuid::nil()).unwrap();

        // 900 s of life and 30 s of leeway, less a few seconds for the test's own run time.
        clock.advance(900 + 30 - 5);
        assert!(tokens.verify(&issued.token).is_ok(), "expired early");
        clock.advance(10);
        assert_eq!(tokens.verify(&issued.token), Err(Rejection::Expired));
    }

    #[test]
    fn nbf_and_iat_come_from_the_issuers_clock_and_are_judged_on_the_verifiers() {
        // Two servers on one keys directory, the issuer's clock two minutes ahead.
        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        let (ahead, behind) = (TestClock::default(), TestClock::default());
        ahead.advance(120);
        let open = |clock: &TestClock| {
            let issuer = "https://auth.example.com".into();
            Tokens::open(&settings(SigningAlg::ES256), issuer, dir.path(), KeyMode::Production, clock.clock()).unwrap()
        };
        let token = open(&ahead).issue(&user(), &identity(), uuid::Uuid::nil()).unwrap().token;
        let verifier = open(&behind);
        let claims = open(&ahead).verify(&token).unwrap();
        assert!((claims.iat - ahead.clock().now().unix_timestamp()).abs() <= 5, "iat is not the issuer's time");

        assert_eq!(verifier.verify(&token), Err(Rejection::Invalid), "accepted before its nbf");
        behind.advance(120 - 30);
        assert!(verifier.verify(&token).is_ok(), "refused within the leeway");
    }

    #[test]
    fn tokens_round_trip_with_every_algorithm() {
        for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
            let dir = tempfile::tempdir().unwrap();
            let tokens = Tokens::open(
                &settings(alg),
                "https://auth.example.com".into(),
                dir.path(),
                KeyMode::Dev,
                Clock::system(),
            )
            .unwrap();
            let user = user();
            let issued = tokens.issue(&user, &identity(), uuid::Uuid::nil()).unwrap();
            let claims = tokens.verify(&issued.token).unwrap();
            assert_eq!(claims.sub, user.id.to_string(), "{alg}");
            let header = jsonwebtoken::decode_header(&issued.token).unwrap();
            assert_eq!(header.alg, alg.into());
        }
    }

    #[test]
    fn only_tokens_typed_as_access_tokens_verify() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(
            &settings(SigningAlg::ES256),
            "https://auth.example.com".into(),
            dir.path(),
            KeyMode::Dev,
            Clock::system(),
        )
        .unwrap();
        let issued = tokens.issue(&user(), &identity(), uuid::Uuid::nil()).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let claims = tokens.verify(&issued.token).unwrap();

        // The same claims, signed by the same key, under other types.
        let kid = header.kid.unwrap();
        let pem = std::fs::read(dir.path().join(format!("{kid}.pem"))).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
        let sign = |typ: Option<&str>| {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.kid = Some(kid.clone());
            header.typ = typ.map(str::to_owned);
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        for typ in [Some("JWT"), None, Some("bt+jwt")] {
            assert_eq!(tokens.verify(&sign(typ)), Err(Rejection::NotAccessToken), "{typ:?}");
        }
        assert!(tokens.verify(&sign(Some("application/at+jwt"))).is_ok());
        assert!(tokens.verify(&sign(Some("AT+JWT"))).is_ok());
    }

    #[test]
    fn validation_requires_registered_claims_even_for_untyped_claims() {
        // Decoding into `Value` takes the `Claims` struct's own required fields out of the
        // picture, so only the validation stands between a token and acceptance.
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(
            &settings(SigningAlg::ES256),
            "https://auth.example.com".into(),
            dir.path(),
            KeyMode::Dev,
            Clock::system(),
        )
        .unwrap();
        let ring = tokens.ring();
        let key = ring.signer();
        let full = serde_json::json!({
            "iss": "https://auth.example.com", "aud": "wx123", "sub": "u1",
            "exp": OffsetDateTime::now_utc().unix_timestamp() + 600,
        });
        let sign = |claims: &serde_json::Value| key.signer.sign(claims).unwrap();
        let decode =
            |token: &str| jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &tokens.validation(key.alg));
        assert!(decode(&sign(&full)).is_ok(), "control");
        for claim in ["iss", "aud", "sub", "exp"] {
            let mut claims = full.clone();
            claims.as_object_mut().unwrap().remove(claim);
            assert!(decode(&sign(&claims)).is_err(), "accepted a token without {claim}");
        }
    }
}
