//! Open data: `POST /v1/me/phone` (both APIs), `POST /v1/me/profile`, the access token
//! behind the phone API, and the dev-mode helpers.

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

use crate::helpers::{APPID, PHONE, Reply, TestApp, assert_error, default_session_key, spawn_app};

pub const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";

/// Encrypts like WeChat, independently of the code under test.
pub fn encrypt(session_key: &str, plaintext: &Value) -> String {
    encrypt_with_iv(session_key, IV, plaintext)
}

/// [`encrypt`] with another iv (base64).
pub fn encrypt_with_iv(session_key: &str, iv: &str, plaintext: &Value) -> String {
    let key = STANDARD.decode(session_key).unwrap();
    let iv = STANDARD.decode(iv).unwrap();
    let data = cbc::Encryptor::<aes::Aes128>::new_from_slices(&key, &iv)
        .unwrap()
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext.to_string().as_bytes());
    STANDARD.encode(data)
}

pub fn phone_plaintext(appid: &str) -> Value {
    json!({
        "phoneNumber": "+8613912345678", "purePhoneNumber": "13912345678", "countryCode": "86",
        "watermark": {"timestamp": 1637744274, "appid": appid}
    })
}

const RAW_PROFILE: &str = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/0"}"#;

fn profile_plaintext() -> Value {
    let mut profile: Value = serde_json::from_str(RAW_PROFILE).unwrap();
    profile["openId"] = "o_band".into();
    profile["watermark"] = json!({"timestamp": 1477314187, "appid": APPID});
    profile
}

fn sha1_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn token_of(app: &TestApp, code: &str) -> String {
    app.login_ok(code).await["access_token"].as_str().unwrap().to_owned()
}

async fn phone(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post_with("/v1/me/phone", token, &body).await
}

async fn assert_no_phone(app: &TestApp, token: &str) {
    let me = app.me_ok(token).await;
    assert!(me.get("phone").is_none(), "a failed request stored a phone number: {me}");
}

#[tokio::test]
async fn phone_by_code_asks_wechat_with_an_access_token_and_keeps_the_number() {
    let app = spawn_app().await;
    let token = token_of(&app, "alice").await;
    assert_eq!(app.wechat.token_fetches(), 0, "the login path fetched an access token");

    let resp = phone(&app, &token, json!({"code": "phone-code-1"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"phone_number": format!("+86{PHONE}"), "pure_phone_number": PHONE, "country_code": "86"}));
    let calls = app.wechat.phone_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "T1");
    assert_eq!(calls[0].1, json!({"code": "phone-code-1", "openid": "o_alice"}));

    let me = app.me_ok(&token).await;
    assert_eq!(me["phone"]["pure_phone_number"], PHONE, "{me}");
    assert_eq!(me["phone"]["phone_number"], format!("+86{PHONE}"));
    assert!(me["phone"]["verified_at"].is_string());

    // A second request reuses the cached token.
    assert_eq!(phone(&app, &token, json!({"code": "phone-code-2"})).await.status(), 200);
    assert_eq!(app.wechat.token_fetches(), 1);

    // Each verified number is a call WeChat bills; a refused code is not.
    app.wechat.script_phone("phone-code-bad", [Reply::errcode(40029)]);
    assert_eq!(phone(&app, &token, json!({"code": "phone-code-bad"})).await.status(), 400);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let paid = format!("wxauth_wechat_phone_verifications_total{{appid=\"{APPID}\"}} 2");
    assert!(metrics.lines().any(|line| line == paid), "no {paid:?} in\n{metrics}");
}

#[tokio::test]
async fn a_phone_code_sent_again_by_its_person_is_verified_once_and_anothers_copy_is_asked_of_wechat() {
    let app = spawn_app().await;
    let (alice, bob) = (token_of(&app, "alice").await, token_of(&app, "bob").await);
    let code = json!({"code": "phone-code-1"});

    // A double tap, then a retry after a lost answer: one call WeChat bills.
    let (first, second) = tokio::join!(phone(&app, &alice, code.clone()), phone(&app, &alice, code.clone()));
    let third = phone(&app, &alice, code.clone()).await;
    for resp in [first, second, third] {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["pure_phone_number"], PHONE);
    }
    assert_eq!(app.wechat.phone_calls().len(), 1);

    // Bob holding a copy of alice's code gets no answer from her call.
    phone(&app, &bob, code).await;
    let calls = app.wechat.phone_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].1["openid"], "o_bob");
}

#[tokio::test]
async fn phone_by_encrypted_data_decrypts_with_the_session_key_of_the_login() {
    let app = spawn_app().await;
    let token = token_of(&app, "bob").await;
    let data = encrypt(&default_session_key("bob"), &phone_plaintext(APPID));

    let resp = phone(&app, &token, json!({"encrypted_data": data, "iv": IV})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["phone_number"], "+8613912345678");
    assert_eq!(body["pure_phone_number"], "13912345678");
    assert_eq!(body["country_code"], "86");
    assert_eq!(app.me_ok(&token).await["phone"]["pure_phone_number"], "13912345678");
    assert_eq!(app.wechat.token_fetches(), 0, "decrypting needs no access token");
}

#[tokio::test]
async fn a_plus_turned_into_a_space_still_decrypts() {
    let app = spawn_app().await;
    let token = token_of(&app, "carol").await;
    let key = default_session_key("carol");
    // Find a payload whose base64 has a '+', as a form or query string would mangle it.
    let data = (0..100)
        .map(|i| {
            let mut plain = phone_plaintext(APPID);
            plain["watermark"]["timestamp"] = json!(1637744274 + i);
            encrypt(&key, &plain)
        })
        .find(|d| d.contains('+'))
        .unwrap();
    let resp = phone(&app, &token, json!({"encrypted_data": data.replace('+', " "), "iv": IV})).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_leading_or_trailing_plus_turned_into_a_space_still_decrypts() {
    let app = spawn_app().await;
    let token = token_of(&app, "cleo").await;
    let key = default_session_key("cleo");
    // Random ivs start with '+' once in 64 tries. Data of a multiple of 48 bytes encodes
    // without padding, so its base64 may end with one: vary the length and the content.
    let iv = "+7BXXKkLb8qrSNn05n0qiA==";
    let data = (0..10_000)
        .map(|i| {
            let mut plain = phone_plaintext(APPID);
            plain["watermark"]["timestamp"] = json!(1637744274 + i / 48);
            plain["filler"] = json!("x".repeat(i % 48));
            encrypt_with_iv(&key, iv, &plain)
        })
        .find(|d| d.ends_with('+'))
        .unwrap();
    for (sent_iv, sent_data, case) in [
        (iv.replace('+', " "), data.clone(), "iv starting with a space"),
        (iv.to_owned(), data.replace('+', " "), "data ending with a space"),
        (format!("{}\r\n", iv.replace('+', " ")), format!("{}\n", data.replace('+', " ")), "spaces and line breaks"),
    ] {
        let resp = phone(&app, &token, json!({"encrypted_data": sent_data, "iv": sent_iv})).await;
        let status = resp.status();
        assert_eq!(status, 200, "{case}: {}", resp.text().await.unwrap());
    }
}

#[tokio::test]
async fn a_newer_login_makes_data_encrypted_with_the_old_session_key_stale() {
    let app = spawn_app().await;
    let old_key = "tiihtNczf5v6AKRyjwEUhQ==";
    app.wechat.script("first@dave", [Reply::success("o_dave", old_key)]);
    app.wechat.script("second@dave", [Reply::success("o_dave", "AAAAAAAAAAAAAAAAAAAAAA==")]);
    let token = token_of(&app, "first@dave").await;
    let data = encrypt(old_key, &phone_plaintext(APPID));
    token_of(&app, "second@dave").await;

    let body =
        assert_error(phone(&app, &token, json!({"encrypted_data": data, "iv": IV})).await, 409, "session_key_stale")
            .await;
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("wx.login") && description.contains("/v1/login"), "{description}");
    assert_no_phone(&app, &token).await;
}

#[tokio::test]
async fn data_encrypted_for_another_app_is_a_watermark_mismatch() {
    let app = spawn_app().await;
    let token = token_of(&app, "erin").await;
    let data = encrypt(&default_session_key("erin"), &phone_plaintext("wx0000000000000000"));
    assert_error(phone(&app, &token, json!({"encrypted_data": data, "iv": IV})).await, 400, "watermark_mismatch").await;
    assert_no_phone(&app, &token).await;
}

#[tokio::test]
async fn malformed_phone_requests_are_invalid_and_store_nothing() {
    let app = spawn_app().await;
    let token = token_of(&app, "frank").await;
    let key = default_session_key("frank");
    let good = encrypt(&key, &phone_plaintext(APPID));
    let profile = encrypt(&key, &profile_plaintext());
    for (body, why) in [
        (json!({}), "neither code nor data"),
        (json!({"code": "c", "encrypted_data": good, "iv": IV}), "both"),
        (json!({"encrypted_data": good}), "data without iv"),
        (json!({"iv": IV}), "iv without data"),
        (json!({"code": ""}), "empty code"),
        (json!({"code": 12345}), "code not a string"),
        (json!({"encrypted_data": "not base64!", "iv": IV}), "data not base64"),
        (json!({"encrypted_data": good, "iv": "AAAA"}), "short iv"),
        (json!({"encrypted_data": "AAAA", "iv": IV}), "data not whole blocks"),
        (json!({"encrypted_data": profile, "iv": IV}), "a profile, not a phone number"),
    ] {
        let resp = phone(&app, &token, body).await;
        assert_eq!(resp.status(), 400, "{why}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{why}: {body}");
    }
    assert_eq!(app.wechat.phone_calls().len(), 0, "a malformed request reached WeChat");
    assert_no_phone(&app, &token).await;
}

#[tokio::test]
async fn open_data_needs_a_valid_bearer_token() {
    let app = spawn_app().await;
    let profile = json!({"encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": IV});
    for (path, body) in [("/v1/me/phone", json!({"code": "c"})), ("/v1/me/profile", profile)] {
        let resp = app.client.post(format!("{}{path}", app.address)).json(&body).send().await.unwrap();
        assert_error(resp, 401, "invalid_token").await;
        assert_error(app.post_with(path, "not-a-jwt", &body).await, 401, "invalid_token").await;
    }
    assert_eq!(app.wechat.phone_calls().len(), 0);
}

#[tokio::test]
async fn an_identity_unbound_since_the_token_was_issued_has_no_session_key() {
    let app = spawn_app().await;
    let token = token_of(&app, "gina").await;
    let data = encrypt(&default_session_key("gina"), &phone_plaintext(APPID));
    assert_eq!(app.unbind(&token).await.status(), 200);
    assert_error(phone(&app, &token, json!({"encrypted_data": data, "iv": IV})).await, 409, "session_key_stale").await;
}

#[tokio::test]
async fn concurrent_phone_requests_with_an_expired_access_token_fetch_one_new_token() {
    let app = spawn_app().await;
    let token = token_of(&app, "hank").await;
    // The first token is within the refresh margin the moment it arrives.
    app.wechat.set_token_lifetime(60);
    assert_eq!(phone(&app, &token, json!({"code": "warm-up"})).await.status(), 200);
    app.wechat.set_token_lifetime(7200);
    assert_eq!(app.wechat.token_fetches(), 1);

    let requests = (0..100).map(|i| {
        let (app, token) = (&app, &token);
        async move { phone(app, token, json!({"code": format!("code-{i}")})).await.status() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.wechat.token_fetches(), 2, "100 waiting requests did not share one refresh");
    let calls = app.wechat.phone_calls();
    assert!(calls[1..].iter().all(|(t, _)| t == "T2"), "a request went out with the expired token");
}

#[tokio::test]
async fn a_refused_access_token_is_refreshed_and_the_call_retried_once() {
    let app = spawn_app().await;
    let token = token_of(&app, "ivy").await;
    assert_eq!(phone(&app, &token, json!({"code": "first"})).await.status(), 200);
    // WeChat now refuses T1 (40001): one refresh, one retry.
    app.wechat.revoke_tokens();
    assert_eq!(phone(&app, &token, json!({"code": "second"})).await.status(), 200);
    assert_eq!(app.wechat.token_fetches(), 2);
    let tokens: Vec<_> = app.wechat.phone_calls().into_iter().map(|(t, _)| t).collect();
    assert_eq!(tokens, ["T1", "T1", "T2"]);

    // Refused again after the refresh: an error, not a loop. The refused token is
    // forgotten, so the next request starts with a fetch of its own.
    for (errcode, fetched) in [(40001, 1), (40014, 2), (42001, 2)] {
        let code = format!("refused-{errcode}");
        app.wechat.script_phone(&code, [Reply::errcode(errcode), Reply::errcode(errcode)]);
        let (calls, fetches) = (app.wechat.phone_calls().len(), app.wechat.token_fetches());
        assert_error(phone(&app, &token, json!({"code": code})).await, 502, "wechat_error").await;
        assert_eq!(app.wechat.phone_calls().len() - calls, 2, "{errcode}: not exactly one retry");
        assert_eq!(app.wechat.token_fetches() - fetches, fetched, "{errcode}: not exactly one refresh");
    }
    assert_no_phone_since(&app, &token, "13800138000").await;
}

async fn assert_no_phone_since(app: &TestApp, token: &str, expected: &str) {
    assert_eq!(app.me_ok(token).await["phone"]["pure_phone_number"], expected);
}

#[tokio::test]
async fn wechat_errors_of_the_phone_api_are_mapped_and_store_nothing() {
    let app = spawn_app().await;
    let token = token_of(&app, "jack").await;
    let slow = Reply::Delay(std::time::Duration::from_secs(3), Box::new(Reply::errcode(0)));
    for (code, reply, status, error) in [
        ("rejected", Reply::errcode(40029), 400, "invalid_code"),
        ("quota", Reply::errcode(45011), 429, "rate_limited"),
        ("busy", Reply::errcode(-1), 503, "wechat_unavailable"),
        ("unknown", Reply::errcode(99999), 502, "wechat_error"),
        ("garbled", Reply::Body("<html>".into()), 502, "wechat_error"),
        ("http-500", Reply::Status(500, "oops".into()), 502, "wechat_error"),
        ("no-info", Reply::Body(r#"{"errcode":0,"errmsg":"ok"}"#.into()), 502, "wechat_error"),
        ("slow", slow, 504, "wechat_timeout"),
    ] {
        app.wechat.script_phone(code, [reply]);
        let resp = phone(&app, &token, json!({"code": code})).await;
        let retry_after = resp.headers().get("retry-after").cloned();
        assert_error(resp, status, error).await;
        if matches!(status, 429 | 503) {
            assert!(retry_after.is_some(), "{code}: no Retry-After");
        }
    }
    assert_no_phone(&app, &token).await;
}

#[tokio::test]
async fn a_failing_access_token_fetch_is_mapped_like_wechat_errors() {
    let app = spawn_app().await;
    let token = token_of(&app, "kim").await;
    for (reply, status, error) in [
        (Reply::errcode(45011), 429, "rate_limited"),
        (Reply::errcode(-1), 503, "wechat_unavailable"),
        (Reply::errcode(40013), 502, "wechat_error"),
        (Reply::Body("{}".into()), 502, "wechat_error"),
    ] {
        app.wechat.script_token([reply]);
        assert_error(phone(&app, &token, json!({"code": "c"})).await, status, error).await;
    }
    assert_eq!(app.wechat.phone_calls().len(), 0);
    assert_no_phone(&app, &token).await;
}

#[tokio::test]
async fn a_profile_is_decrypted_checked_against_its_signature_and_kept() {
    let app = spawn_app().await;
    let token = token_of(&app, "band").await;
    let key = default_session_key("band");
    let data = encrypt(&key, &profile_plaintext());
    let signature = sha1_hex(&format!("{RAW_PROFILE}{key}"));

    let body = json!({"encrypted_data": data, "iv": IV, "raw_data": RAW_PROFILE, "signature": signature});
    let resp = app.post_with("/v1/me/profile", &token, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["nickName"], "Band");
    assert_eq!(answer["gender"], 1);
    assert_eq!(answer["openId"], "o_band");
    assert!(answer.get("watermark").is_none(), "{answer}");

    let me = app.me_ok(&token).await;
    let profile = &me["profile"];
    assert_eq!(
        (&profile["nickname"], &profile["gender"], &profile["city"], &profile["province"], &profile["country"]),
        (&json!("Band"), &json!(1), &json!("Guangzhou"), &json!("Guangdong"), &json!("CN"))
    );
    assert_eq!(profile["avatar_url"], "http://wx.qlogo.cn/mmopen/vi_32/0");

    // Without rawData the signature is not needed.
    let plain = json!({"encrypted_data": encrypt(&key, &profile_plaintext()), "iv": IV});
    assert_eq!(app.post_with("/v1/me/profile", &token, &plain).await.status(), 200);
}

#[tokio::test]
async fn bad_profile_requests_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let token = token_of(&app, "lee").await;
    let key = default_session_key("lee");
    let data = encrypt(&key, &profile_plaintext());
    let signature = sha1_hex(&format!("{RAW_PROFILE}{key}"));
    let tampered = RAW_PROFILE.replace("Band", "Bond");
    for (body, status, error) in [
        (
            json!({"encrypted_data": data, "iv": IV, "raw_data": tampered, "signature": signature}),
            400,
            "invalid_signature",
        ),
        (json!({"encrypted_data": data, "iv": IV, "raw_data": RAW_PROFILE}), 400, "invalid_request"),
        (json!({"encrypted_data": data, "iv": IV, "signature": signature}), 400, "invalid_request"),
        (json!({"encrypted_data": data}), 400, "invalid_request"),
        (json!({"encrypted_data": encrypt(&key, &phone_plaintext(APPID)), "iv": IV}), 400, "invalid_request"),
        (
            json!({"encrypted_data": encrypt("AAAAAAAAAAAAAAAAAAAAAA==", &profile_plaintext()), "iv": IV}),
            409,
            "session_key_stale",
        ),
    ] {
        assert_error(app.post_with("/v1/me/profile", &token, &body).await, status, error).await;
    }
    let me = app.me_ok(&token).await;
    assert!(me.get("profile").is_none() && me.get("phone").is_none(), "{me}");
}

#[tokio::test]
async fn phone_numbers_and_profiles_are_not_in_the_data_directory_in_plaintext() {
    let app = spawn_app().await;
    let token = token_of(&app, "mia").await;
    assert_eq!(phone(&app, &token, json!({"code": "c"})).await.status(), 200);
    let profile = json!({"encrypted_data": encrypt(&default_session_key("mia"), &profile_plaintext()), "iv": IV});
    assert_eq!(app.post_with("/v1/me/profile", &token, &profile).await.status(), 200);
    for needle in [PHONE, "Guangzhou"] {
        assert_eq!(app.stored_places_holding(needle.as_bytes()).await, Vec::<String>::new(), "{needle}");
    }
}

#[tokio::test]
async fn the_dev_helper_is_absent_in_production() {
    let app = spawn_app().await;
    let token = token_of(&app, "nia").await;
    let resp = app.post_with("/v1/dev/open-data", &token, &json!({"kind": "phone"})).await;
    assert_error(resp, 404, "not_found").await;
    let resp = app.client.post(format!("{}/v1/dev/open-data", app.address)).send().await.unwrap();
    assert_error(resp, 404, "not_found").await;
    let spec = app.get_json("/openapi.json").await;
    assert!(spec["paths"].get("/v1/dev/open-data").is_none());
    assert!(!spec.to_string().contains("DevOpenData"), "dev schemas in the production document");
}

#[tokio::test]
async fn in_dev_mode_the_whole_open_data_flow_runs_against_the_mock() {
    let app = crate::helpers::spawn_dev_app().await;
    let token = token_of(&app, "dev-alice").await;
    let fake = |body: Value| {
        let (app, token) = (&app, &token);
        async move {
            let resp = app.post_with("/v1/dev/open-data", token, &body).await;
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };

    // Without a number, the person's own fake one: the one the code API gives too.
    let own = fake(json!({"kind": "phone"})).await;
    let own: Value = phone(&app, &token, own).await.json().await.unwrap();
    let by_code: Value = phone(&app, &token, json!({"code": "any"})).await.json().await.unwrap();
    assert_eq!(own["pure_phone_number"], by_code["pure_phone_number"], "{own}");
    for bad in ["1234", "1391234567a", "139123456789012345678"] {
        let resp =
            app.post_with("/v1/dev/open-data", &token, &json!({"kind": "phone", "pure_phone_number": bad})).await;
        assert_error(resp, 400, "invalid_request").await;
    }
    // Legacy phone data, encrypted with the key the mock gave at this login.
    let data = fake(json!({"kind": "phone", "pure_phone_number": "13912345678"})).await;
    let resp = phone(&app, &token, data.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["pure_phone_number"], "13912345678");

    // The code API through the mock's stable_token and getuserphonenumber.
    let by_code: Value = phone(&app, &token, json!({"code": "any"})).await.json().await.unwrap();
    let number = by_code["pure_phone_number"].as_str().unwrap();
    assert!(number.len() == 11 && number.bytes().all(|b| b.is_ascii_digit()), "{by_code}");
    assert_eq!(by_code["phone_number"], format!("+86{number}"));
    assert_eq!(phone(&app, &token, json!({"code": "token-expired"})).await.status(), 200, "no refresh and retry");
    for (code, status, error) in [
        ("invalid", 400, "invalid_code"),
        ("limited", 429, "rate_limited"),
        ("busy", 503, "wechat_unavailable"),
        ("garbled", 502, "wechat_error"),
        ("slow", 504, "wechat_timeout"),
    ] {
        assert_error(phone(&app, &token, json!({"code": code})).await, status, error).await;
    }

    // A profile with its rawData signature.
    let profile = fake(json!({"kind": "profile"})).await;
    assert!(profile["signature"].is_string() && profile["raw_data"].is_string(), "{profile}");
    assert_eq!(app.post_with("/v1/me/profile", &token, &profile).await.status(), 200);
    let me = app.me_ok(&token).await;
    assert!(me["profile"]["nickname"].is_string() && me["phone"].is_object(), "{me}");

    // Another login gets a new session key from the mock: the old data is stale.
    token_of(&app, "again@dev-alice").await;
    assert_error(phone(&app, &token, data).await, 409, "session_key_stale").await;

    let spec = app.get_json("/openapi.json").await;
    assert!(spec["paths"].get("/v1/dev/open-data").is_some(), "the dev helper is not in the dev document");
    assert!(spec["info"]["description"].as_str().unwrap().contains("`token-expired`"));
    let stale =
        &spec["paths"]["/v1/dev/open-data"]["post"]["responses"]["409"]["content"]["application/json; charset=utf-8"];
    assert!(stale["examples"].to_string().contains("session_key_stale"), "{stale}");
}

/// The status of decrypting phone data that WeChat encrypted with `key` for `appid`: 200
/// only if `key` is the session key stored for the token's identity.
async fn status_with_key(app: &TestApp, token: &str, key: &str, appid: &str) -> u16 {
    let data = encrypt(key, &phone_plaintext(appid));
    phone(app, token, json!({"encrypted_data": data, "iv": IV})).await.status().as_u16()
}

#[tokio::test]
async fn every_kind_of_login_stores_the_session_key_wechat_sent() {
    let app = crate::helpers::spawn_app_with(|c| c.toml = Some(crate::helpers::TWO_APPS.into())).await;
    let (first_key, newer_key, other_app_key) =
        ("EREREREREREREREREREREQ==", "IiIiIiIiIiIiIiIiIiIiIg==", "MzMzMzMzMzMzMzMzMzMzMw==");
    let answer = |openid: &str, key: &str| {
        Reply::Body(json!({"openid": openid, "session_key": key, "unionid": "u_kim"}).to_string())
    };
    app.wechat.script("first@kim", [answer("o_kim", first_key)]);
    app.wechat.script("second@kim", [answer("o_kim", newer_key)]);
    app.wechat.script("third@kim", [answer("o_kim_2", other_app_key)]);
    let login = |code: &'static str, appid: &'static str| {
        let app = &app;
        async move {
            let resp = app.post_login(&json!({"code": code, "appid": appid})).await;
            assert_eq!(resp.status(), 200, "{code}");
            resp.json::<Value>().await.unwrap()
        }
    };

    let first = login("first@kim", APPID).await;
    let token = first["access_token"].as_str().unwrap();
    assert_eq!(status_with_key(&app, token, first_key, APPID).await, 200, "a first login's key");

    login("second@kim", APPID).await;
    assert_eq!(status_with_key(&app, token, newer_key, APPID).await, 200, "a returning login's new key");

    let joined = login("third@kim", crate::helpers::APPID2).await;
    assert_eq!(joined["user"]["id"], first["user"]["id"], "the unionid did not join the user");
    let other_token = joined["access_token"].as_str().unwrap();
    assert_eq!(
        status_with_key(&app, other_token, other_app_key, crate::helpers::APPID2).await,
        200,
        "the key of a login that joined its unionid's user"
    );
    assert_eq!(status_with_key(&app, token, newer_key, APPID).await, 200, "the other app's key replaced this one");
}

#[tokio::test]
async fn a_bind_stores_the_session_key_of_the_login_it_completes() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("lena", "correct horse battery").await;
    let ticket = app.ticket("code@lena").await;

    let resp = app.bind(&json!({"bind_ticket": ticket, "username": "lena", "password": "correct horse battery"})).await;
    assert_eq!(resp.status(), 200);
    let bound: Value = resp.json().await.unwrap();

    let token = bound["access_token"].as_str().unwrap();
    assert_eq!(status_with_key(&app, token, &default_session_key("code@lena"), APPID).await, 200);
}
