//! Third-party verification: JWKS, discovery, every algorithm.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{JwkSet, ThumbprintHash},
};
use serde_json::Value;

use crate::helpers::{APPID, TestApp, crypto, spawn_app, spawn_app_with, spawn_dev_app, spawn_dev_app_with};

/// Verifies `token` the way a third-party service would: with the JWKS document alone.
pub fn verify_with_jwks(jwks: &JwkSet, token: &str, issuer: &str) -> Value {
    crypto();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("kid not in JWKS");
    let alg: Algorithm = jwk.common.key_algorithm.unwrap().to_string().parse().unwrap();
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[APPID]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims
}

async fn jwks(app: &TestApp) -> JwkSet {
    app.get("/.well-known/jwks.json").await.json().await.unwrap()
}

#[tokio::test]
async fn jwks_is_cacheable_and_lists_public_signing_keys_only() {
    let app = spawn_app().await;

    let resp = app.get("/.well-known/jwks.json").await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    assert!(resp.headers()["content-type"].to_str().unwrap().contains("json"));
    let body: Value = resp.json().await.unwrap();
    let key = &body["keys"][0];
    assert_eq!(body["keys"].as_array().unwrap().len(), 1);
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert!(key["x"].is_string() && key["y"].is_string());
    assert!(key.get("d").is_none() && key.get("k").is_none(), "private material published: {key}");
}

#[tokio::test]
async fn kid_is_the_rfc7638_thumbprint() {
    let app = spawn_app().await;
    let set = jwks(&app).await;
    let jwk = &set.keys[0];
    assert_eq!(jwk.common.key_id.as_deref().unwrap(), jwk.thumbprint(ThumbprintHash::SHA256).unwrap());
}

#[tokio::test]
async fn a_third_party_verifies_tokens_with_the_jwks_alone() {
    let app = spawn_app().await;
    let login = app.login_ok("code@grace").await;
    let token = login["access_token"].as_str().unwrap();

    let claims = verify_with_jwks(&jwks(&app).await, token, &app.address);

    assert_eq!(claims["sub"], login["user"]["id"]);
    assert_eq!(claims["iss"], app.address);
    assert_eq!(claims["aud"], APPID);
    assert_eq!(claims["appid"], APPID);
    assert_eq!(claims["openid"], "o_grace");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    for claim in ["jti", "nbf"] {
        assert!(claims.get(claim).is_some(), "{claim} missing");
    }
    assert!(claims.get("session_key").is_none());
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
}

#[tokio::test]
async fn discovery_document_leads_to_the_keys() {
    let app = spawn_app().await;
    let login = app.login_ok("code@heidi").await;

    let discovery = app.get_json("/.well-known/openid-configuration").await;

    assert_eq!(discovery["issuer"], app.address);
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    assert_eq!(jwks_uri, format!("{}/.well-known/jwks.json", app.address));
    assert_eq!(discovery["id_token_signing_alg_values_supported"][0], "ES256");
    let set: JwkSet = app.client.get(jwks_uri).send().await.unwrap().json().await.unwrap();
    verify_with_jwks(&set, login["access_token"].as_str().unwrap(), discovery["issuer"].as_str().unwrap());
}

#[tokio::test]
async fn every_signing_algorithm_issues_verifiable_tokens() {
    for (alg, kty) in [("ES256", "EC"), ("EdDSA", "OKP"), ("RS256", "RSA")] {
        let app = spawn_app_with(|c| {
            c.set("WXAUTH_SIGNING_ALG", alg);
        })
        .await;
        let login = app.login_ok("code@ivan").await;
        let token = login["access_token"].as_str().unwrap();

        let set = jwks(&app).await;
        let raw: Value = app.get_json("/.well-known/jwks.json").await;
        assert_eq!(raw["keys"][0]["kty"], kty, "{alg}");
        assert_eq!(raw["keys"][0]["alg"], alg);
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg);
        verify_with_jwks(&set, token, &app.address);
        assert_eq!(app.me(token).await.status(), 200, "{alg}");
    }
}

#[tokio::test]
async fn configured_issuer_audience_and_lifetime_are_used() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_ISSUER", "https://auth.example.com/")
            .set("WXAUTH_AUDIENCE", "shop-api")
            .set("WXAUTH_ACCESS_TOKEN_TTL", "300");
    })
    .await;
    let login = app.login_ok("code@judy").await;
    assert_eq!(login["expires_in"], 300);
    let payload = login["access_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(claims["aud"], "shop-api");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
    assert_eq!(app.me(login["access_token"].as_str().unwrap()).await.status(), 200);
    let discovery = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(discovery["jwks_uri"], "https://auth.example.com/.well-known/jwks.json");
}

#[tokio::test]
async fn discovery_lists_every_algorithm_of_the_published_keys_signing_one_first() {
    // An RS256 key from before the switch to ES256 stays published while its tokens live.
    let app = spawn_app_with(|c| {
        let keys = std::path::PathBuf::from(&c.vars["WXAUTH_KEYS_DIR"]);
        let (rs256, _) = wxauth::token::rotate(
            &keys,
            wxauth::domain::SigningAlg::RS256,
            wxauth::domain::KeyMode::Production,
            wxauth::token::Activation::Now,
        )
        .unwrap();
        assert_eq!(rs256.alg, wxauth::domain::SigningAlg::RS256);
        c.set("WXAUTH_SIGNING_ALG", "ES256");
    })
    .await;

    let discovery = app.get_json("/.well-known/openid-configuration").await;

    assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["ES256", "RS256"]));
    assert_eq!(jwks(&app).await.keys.len(), 2);
}

#[tokio::test]
async fn a_restarted_dev_server_signs_with_the_key_it_generated_before() {
    // Otherwise every restart would invalidate the tokens a developer holds.
    let first = spawn_dev_app().await;
    let keys_dir = crate::helpers::keys_dir(&first.dir);
    let first_kid = kid_of(&first.login_ok("dev-reuse").await);

    // A second server on the same keys directory, as after a restart.
    let restarted = spawn_dev_app_with(&[("WXAUTH_KEYS_DIR", keys_dir.to_str().unwrap())]).await;
    let restarted_kid = kid_of(&restarted.login_ok("dev-reuse").await);

    assert_eq!(restarted_kid, first_kid, "the restarted dev server made a new key");
    let pem_files = std::fs::read_dir(&keys_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("pem".as_ref()));
    assert_eq!(pem_files.count(), 1);
}

fn kid_of(login: &Value) -> String {
    jsonwebtoken::decode_header(login["access_token"].as_str().unwrap()).unwrap().kid.unwrap()
}

#[tokio::test]
async fn a_staged_key_that_starts_to_sign_is_one_key_activated_event_and_key_commands_are_events() {
    use wxauth::{admin::Command, store::AdminRole};
    let app = crate::helpers::spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await;
    let token = app.admin_token("ops", AdminRole::Read).await;
    let staged = wxauth::token::rotate(
        &crate::helpers::keys_dir(&app.dir),
        wxauth::domain::SigningAlg::ES256,
        wxauth::domain::KeyMode::Production,
        wxauth::token::Activation::After(std::time::Duration::from_secs(600)),
    )
    .unwrap()
    .0;
    app.auth.tokens().reload().unwrap();
    app.login_ok("c1@amy").await;
    let events = |kind: &'static str| {
        let req = app.admin(reqwest::Method::GET, &format!("/admin/v1/events?kind={kind}"), &token);
        async move { req.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["events"].clone() }
    };
    assert_eq!(events("key_activated").await, serde_json::json!([]), "activated before its time");

    app.advance(601);
    app.login_ok("c2@amy").await;
    app.login_ok("c3@amy").await;
    let mut activated = serde_json::json!([]);
    for _ in 0..100 {
        activated = events("key_activated").await;
        if activated.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let activated = activated.as_array().unwrap().clone();
    assert_eq!(activated.len(), 1, "{activated:?}");
    assert_eq!(
        (activated[0]["details"]["kid"].as_str(), activated[0]["actor"].as_str()),
        (Some(staged.kid.as_str()), Some("server"))
    );

    for (kind, accepted) in [("key_pruned", true), ("key_staged", true), ("ban", false)] {
        let command =
            Command::KeyChanged { kind: kind.into(), kid: "k1".into(), alg: "ES256".into(), activates_at: None };
        let sent = wxauth::admin::send(&app.admin_socket(), &command).await;
        assert_eq!(sent.is_ok(), accepted, "{kind}: {sent:?}");
    }
    let pruned = events("key_pruned").await;
    assert_eq!((pruned[0]["details"]["kid"].as_str(), pruned[0]["actor"].as_str()), (Some("k1"), Some("cli")));
}
