//! `/v1/me` accepts only untampered, unexpired tokens from our own keys.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, crypto, spawn_app};

async fn assert_rejected(app: &TestApp, token: &str, case: &str) {
    let resp = app.me(token).await;
    assert_eq!(resp.status(), 401, "case: {case}");
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "case {case}: {challenge}");
    assert_error(resp, 401, "invalid_token").await;
}

/// Claims like the ones wxauth issues for the logged-in user, ready to be altered.
async fn real_claims(app: &TestApp) -> (Value, String) {
    let login = app.login_ok("code@mallory").await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let payload = token.split('.').nth(1).unwrap();
    (serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap(), token)
}

/// Signs `claims` as an access token with the app's own private key, as a buggy issuer
/// would.
fn sign_with_ring_key(app: &TestApp, claims: &Value) -> String {
    sign_typed(app, claims, Some("at+jwt"))
}

/// Signs `claims` with the app's own private key and this JOSE `typ`.
fn sign_typed(app: &TestApp, claims: &Value, typ: Option<&str>) -> String {
    crypto();
    let (kid, pem) = app.signing_key_pem();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid);
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

#[tokio::test]
async fn access_tokens_carry_typ_at_jwt_and_nothing_else_passes_as_one() {
    let app = spawn_app().await;
    let (claims, token) = real_claims(&app).await;
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().typ.as_deref(), Some("at+jwt"));
    for typ in [Some("JWT"), None, Some("bt+jwt")] {
        let resp = app.me(&sign_typed(&app, &claims, typ)).await;
        let body = assert_error(resp, 401, "invalid_token").await;
        assert!(body["error_description"].as_str().unwrap().contains("not an access token"), "{typ:?}: {body}");
    }
    // Neither a refresh token nor a bind ticket is a bearer token, and no access token is a
    // refresh token.
    let login = app.login_ok("code@mallory").await;
    assert_rejected(&app, login["refresh_token"].as_str().unwrap(), "refresh token as bearer").await;
    let refresh = json!({"refresh_token": login["access_token"]});
    let resp = app.client.post(format!("{}/v1/token/refresh", app.address)).json(&refresh).send().await.unwrap();
    assert_error(resp, 401, "invalid_grant").await;
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn valid_token_is_accepted_and_the_resigned_control_token_too() {
    let app = spawn_app().await;
    let (claims, token) = real_claims(&app).await;
    assert_eq!(app.me(&token).await.status(), 200);
    // Control for the forgery tests below: re-signing unchanged claims must still work,
    // so their 401s come from the alteration, not from the test's signing.
    assert_eq!(app.me(&sign_with_ring_key(&app, &claims)).await.status(), 200);
}

#[tokio::test]
async fn me_answers_no_store_because_it_holds_personal_data() {
    let app = spawn_app().await;
    let (_, token) = real_claims(&app).await;

    let resp = app.me(&token).await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
}

#[tokio::test]
async fn missing_or_garbage_authorization_is_rejected() {
    let app = spawn_app().await;
    let resp = app.get("/v1/me").await;
    // RFC 6750 section 3.1: no error code in the challenge when no credentials were sent.
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"wxauth\"");
    assert_error(resp, 401, "invalid_token").await;
    assert_rejected(&app, "not-a-jwt", "garbage").await;
    assert_rejected(&app, "", "empty").await;
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let app = spawn_app().await;
    let (mut claims, _) = real_claims(&app).await;
    claims["iat"] = json!(now() - 1000);
    claims["nbf"] = json!(now() - 1000);
    claims["exp"] = json!(now() - 120);
    let resp = app.me(&sign_with_ring_key(&app, &claims)).await;
    let body = assert_error(resp, 401, "invalid_token").await;
    assert!(body["error_description"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn token_expired_within_the_leeway_is_still_accepted() {
    let app = spawn_app().await;
    let (mut claims, _) = real_claims(&app).await;
    claims["exp"] = json!(now() - 5);
    assert_eq!(app.me(&sign_with_ring_key(&app, &claims)).await.status(), 200);
}

#[tokio::test]
async fn tampered_tokens_are_rejected() {
    let app = spawn_app().await;
    let (mut claims, token) = real_claims(&app).await;
    let parts: Vec<&str> = token.split('.').collect();

    // Another user's id in an otherwise intact token.
    claims["sub"] = json!("01900000-0000-7000-8000-000000000000");
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    assert_rejected(&app, &format!("{}.{}.{}", parts[0], forged_payload, parts[2]), "payload swapped").await;

    // One byte flipped in each part.
    for part in 0..3 {
        let mut pieces: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        let mut bytes = pieces[part].clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        pieces[part] = String::from_utf8(bytes).unwrap();
        assert_rejected(&app, &pieces.join("."), &format!("byte flipped in part {part}")).await;
    }
}

#[tokio::test]
async fn tokens_naming_critical_extensions_are_rejected_even_when_signed_by_our_key() {
    let app = spawn_app().await;
    let (claims, _) = real_claims(&app).await;
    let (kid, pem) = app.signing_key_pem();
    crypto();
    let sign = |crit: Option<Value>| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        header.typ = Some("at+jwt".into());
        if let Some(crit) = crit {
            header.extras.insert("crit", crit);
        }
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
    };
    assert_eq!(app.me(&sign(None)).await.status(), 200, "control: the same token without crit");
    for (crit, case) in [
        (json!(["exp"]), "a registered claim"),
        (json!(["b64"]), "RFC 7797's unencoded payload"),
        (json!(["https://example.com/ext"]), "a private extension"),
        (json!([]), "an empty list"),
        (Value::Null, "null"),
    ] {
        let resp = app.me(&sign(Some(crit))).await;
        assert_eq!(resp.status(), 401, "{case}");
        let body = assert_error(resp, 401, "invalid_token").await;
        assert!(body["error_description"].as_str().unwrap().contains("crit"), "{case}: {body}");
    }
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let app = spawn_app().await;
    let (claims, _) = real_claims(&app).await;
    let (kid, _) = app.signing_key_pem();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_rejected(&app, &format!("{header}.{payload}."), "alg none").await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected() {
    let app = spawn_app().await;
    crypto();
    let (claims, _) = real_claims(&app).await;
    let jwks_text = app.get("/.well-known/jwks.json").await.text().await.unwrap();
    let jwks: Value = serde_json::from_str(&jwks_text).unwrap();
    let jwk = &jwks["keys"][0];
    let kid = jwk["kid"].as_str().unwrap().to_owned();
    // Every public form an attacker might try as the HMAC secret.
    let point = [
        vec![4u8],
        URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
        URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap(),
    ]
    .concat();
    for secret in [point, jwks_text.into_bytes(), jwk.to_string().into_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert_rejected(&app, &token, "HS256 with public key").await;
    }
}

#[tokio::test]
async fn token_from_a_key_outside_the_ring_is_rejected() {
    let app = spawn_app().await;
    crypto();
    let (claims, _) = real_claims(&app).await;
    let (kid, _) = app.signing_key_pem();
    let stranger = tempfile::tempdir().unwrap();
    let (foreign, _) = wxauth::token::rotate(
        stranger.path(),
        wxauth::domain::SigningAlg::ES256,
        wxauth::domain::KeyMode::Production,
        wxauth::token::Activation::Now,
    )
    .unwrap();
    let pem = std::fs::read(stranger.path().join(format!("{}.pem", foreign.kid))).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    for (case, header_kid) in
        [("unknown kid", Some(foreign.kid.clone())), ("our kid, foreign key", Some(kid)), ("no kid", None)]
    {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = header_kid;
        assert_rejected(&app, &jsonwebtoken::encode(&header, &claims, &key).unwrap(), case).await;
    }
}

#[tokio::test]
async fn wrong_or_missing_registered_claims_are_rejected() {
    let app = spawn_app().await;
    let (claims, _) = real_claims(&app).await;
    let altered = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        c
    };
    let cases: Vec<(&str, Value)> = vec![
        ("wrong audience", altered(&|c| c["aud"] = json!("another-service"))),
        ("wrong issuer", altered(&|c| c["iss"] = json!("https://evil.example.com"))),
        ("missing aud", altered(&|c| _ = c.as_object_mut().unwrap().remove("aud"))),
        ("missing iss", altered(&|c| _ = c.as_object_mut().unwrap().remove("iss"))),
        ("missing sub", altered(&|c| _ = c.as_object_mut().unwrap().remove("sub"))),
        ("missing exp", altered(&|c| _ = c.as_object_mut().unwrap().remove("exp"))),
        ("not yet valid", altered(&|c| c["nbf"] = json!(now() + 3600))),
        ("user that does not exist", altered(&|c| c["sub"] = json!("01900000-0000-7000-8000-000000000000"))),
    ];
    for (case, claims) in cases {
        assert_rejected(&app, &sign_with_ring_key(&app, &claims), case).await;
    }
}

#[tokio::test]
async fn a_doubled_bearer_prefix_is_named_in_the_401() {
    let app = spawn_app().await;
    let token = app.login_ok("code1@alice").await["access_token"].as_str().unwrap().to_owned();

    // What Swagger UI sends when the token is pasted with its prefix.
    let resp = app.me(&format!("Bearer {token}")).await;

    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let body = assert_error(resp, 401, "invalid_token").await;
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("Bearer Bearer") && description.contains("paste the token alone"), "{body}");
    assert!(challenge.contains("Bearer Bearer"), "{challenge}");
}

#[tokio::test]
async fn me_lists_the_identities_and_the_identity_the_token_was_issued_for() {
    let app = spawn_app().await;
    let login = app.login_ok("code1@alice").await;

    let me = app.me_ok(login["access_token"].as_str().unwrap()).await;

    assert_eq!(me["appid"], crate::helpers::APPID);
    assert_eq!(me["openid"], login["user"]["openid"]);
    assert_eq!(
        me["identities"],
        serde_json::json!([{"appid": crate::helpers::APPID, "openid": login["user"]["openid"], "kind": "miniprogram"}])
    );
    assert!(me.get("username").is_none(), "{me}");
}
