//! Every WeChat login surface under one user (issue 22): the mobile app's SDK code posted
//! to `/v1/login`, the browser flows of official accounts and websites, and PC login by
//! scanning a mini-program code.

use serde_json::{Value, json};

use crate::helpers::{
    APPID, CLIENT_REDIRECT, MOBILE_APPID, OA_APPID, Reply, TestApp, WEB_APPID, assert_error, default_openid,
    every_surface, spawn_app_with, surface_openid,
};

async fn surfaces_app() -> TestApp {
    spawn_app_with(|c| c.toml = Some(every_surface())).await
}

async fn login_in(app: &TestApp, code: &str, appid: &str) -> reqwest::Response {
    app.post_login(&json!({ "code": code, "appid": appid })).await
}

async fn login_ok_in(app: &TestApp, code: &str, appid: &str) -> Value {
    let resp = login_in(app, code, appid).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "login with {code:?} in {appid} failed: {body}");
    body
}

#[tokio::test]
async fn a_mobile_app_logs_in_with_its_sdk_code_at_the_oauth_endpoint_and_joins_the_person_by_unionid() {
    let app = surfaces_app().await;
    let mini = login_ok_in(&app, "union-amy", APPID).await;

    let mobile = login_ok_in(&app, "7@union-amy", MOBILE_APPID).await;

    assert_eq!(mobile["user_id"], mini["user_id"], "one person, two users");
    let exchange = app.wechat.calls().into_iter().find(|q| q.get("appid").map(String::as_str) == Some(MOBILE_APPID));
    let exchange = exchange.expect("the mobile app's code never reached WeChat");
    assert_eq!(exchange.get("code").map(String::as_str), Some("7@union-amy"), "not the oauth2/access_token exchange");
    assert!(!exchange.contains_key("js_code"), "a mobile app's code went to code2Session");
    let me = app.me_ok(mobile["access_token"].as_str().unwrap()).await;
    let identities = me["identities"].as_array().unwrap();
    let kinds: Vec<(&str, &str, &str)> = identities
        .iter()
        .map(|i| (i["appid"].as_str().unwrap(), i["openid"].as_str().unwrap(), i["kind"].as_str().unwrap()))
        .collect();
    let mobile_openid = surface_openid(MOBILE_APPID, "union-amy");
    let mini_openid = default_openid("union-amy");
    assert!(kinds.contains(&(APPID, mini_openid.as_str(), "miniprogram")), "{me}");
    assert!(kinds.contains(&(MOBILE_APPID, mobile_openid.as_str(), "mobile_app")), "{me}");
}

#[tokio::test]
async fn a_mobile_app_identity_has_no_session_key_so_open_data_says_so() {
    let app = surfaces_app().await;
    let body = login_ok_in(&app, "bob", MOBILE_APPID).await;
    let token = body["access_token"].as_str().unwrap();
    let resp = app
        .post_with(
            "/v1/me/phone",
            token,
            &json!({ "encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAAAAAAAAAAAAAAAAAAAA==" }),
        )
        .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string() && body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn a_mobile_app_code_wechat_refuses_is_answered_as_a_mini_program_code_would_be() {
    let app = surfaces_app().await;
    let cases = [
        (40029, 400, "invalid_code"),
        (40163, 400, "code_used"),
        (45011, 429, "rate_limited"),
        (40125, 502, "wechat_error"),
        (40013, 502, "wechat_error"),
        (41008, 502, "wechat_error"),
    ];
    for (errcode, status, error) in cases {
        let code = format!("refused-{errcode}");
        app.wechat.script(&code, [Reply::errcode(errcode)]);
        let body = assert_error(login_in(&app, &code, MOBILE_APPID).await, status, error).await;
        assert!(
            body["error_description"].as_str().unwrap().contains(&errcode.to_string())
                || errcode == 40029
                || errcode == 40163
                || errcode == 45011,
            "{errcode}: {body}"
        );
    }
    // A success without openid or access_token is no login either.
    app.wechat.script("hollow", [Reply::Body(json!({"access_token": "t", "expires_in": 7200}).to_string())]);
    assert_error(login_in(&app, "hollow", MOBILE_APPID).await, 502, "wechat_error").await;
}

#[tokio::test]
async fn a_browser_app_s_code_is_refused_at_login_before_wechat_is_asked() {
    let app = surfaces_app().await;
    for appid in [OA_APPID, WEB_APPID] {
        let body = assert_error(login_in(&app, "carol", appid).await, 400, "unknown_app").await;
        assert!(body["error_description"].as_str().unwrap().contains("/v1/oauth/wechat/authorize"), "{body}");
    }
    assert!(app.wechat.calls().is_empty(), "WeChat was asked");
    // Two apps take posted codes (the mini-program and the mobile app): the request must say which.
    assert_error(app.login("carol").await, 400, "invalid_request").await;
}

/// A browser that follows nothing by itself and keeps its cookies by name, as the tests
/// need to see every hop.
struct Browser {
    http: reqwest::Client,
    cookies: std::collections::HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, cookies: Default::default() }
    }

    /// `GET url` with the cookies it holds; keeps the cookies the answer sets.
    async fn get(&mut self, url: &str) -> reqwest::Response {
        let header: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut request = self.http.get(url);
        if !header.is_empty() {
            request = request.header("Cookie", header.join("; "));
        }
        let resp = request.send().await.unwrap();
        for set in resp.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.into(), value.into());
            }
        }
        resp
    }
}

fn location(resp: &reqwest::Response) -> String {
    assert_eq!(resp.status(), 302, "not a redirect");
    resp.headers()["location"].to_str().unwrap().to_owned()
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

/// A PKCE verifier and its S256 challenge.
fn pkce(seed: &str) -> (String, String) {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let verifier = format!("{seed}-{}", "v".repeat(50));
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

fn authorize_url(app: &TestApp, appid: &str, challenge: &str, scope: Option<&str>) -> String {
    let mut url = url::Url::parse(&format!("{}/v1/oauth/wechat/authorize", app.address)).unwrap();
    url.query_pairs_mut()
        .append_pair("appid", appid)
        .append_pair("redirect_uri", CLIENT_REDIRECT)
        .append_pair("state", "client-state-1")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    if let Some(scope) = scope {
        url.query_pairs_mut().append_pair("scope", scope);
    }
    url.into()
}

/// Authorize, WeChat's page, the callback: the client's redirect with its code.
async fn browser_login_code(
    app: &TestApp,
    browser: &mut Browser,
    appid: &str,
    challenge: &str,
    scope: Option<&str>,
) -> String {
    let to_wechat = location(&browser.get(&authorize_url(app, appid, challenge, scope)).await);
    let to_callback = location(&browser.get(&to_wechat).await);
    let to_client = location(&browser.get(&to_callback).await);
    assert!(to_client.starts_with(CLIENT_REDIRECT), "{to_client}");
    let params = query(&to_client);
    assert_eq!(params.get("state").map(String::as_str), Some("client-state-1"), "{to_client}");
    params.get("code").cloned().unwrap_or_else(|| panic!("no code: {to_client}"))
}

async fn token(app: &TestApp, code: &str, verifier: &str, redirect_uri: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    post_form(app, &form).await
}

async fn post_form(app: &TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let request = app.client.post(format!("{}/v1/token", app.address));
    request.header("Content-Type", "application/x-www-form-urlencoded").body(body).send().await.unwrap()
}

#[tokio::test]
async fn an_official_account_page_logs_in_through_wechat_s_authorize_page_with_pkce_and_keeps_the_profile() {
    let app = surfaces_app().await;
    app.wechat.set_browser_person("dan");
    let (verifier, challenge) = pkce("dan");
    let mut browser = Browser::new();

    let start = browser.get(&authorize_url(&app, OA_APPID, &challenge, Some("snsapi_userinfo"))).await;
    let to_wechat = location(&start);
    assert!(
        to_wechat
            .starts_with(&format!("{}/connect/oauth2/authorize?appid={OA_APPID}&redirect_uri=", app.wechat.base_url)),
        "{to_wechat}"
    );
    assert!(to_wechat.ends_with("#wechat_redirect") && to_wechat.contains("scope=snsapi_userinfo"), "{to_wechat}");
    assert_eq!(query(&to_wechat)["redirect_uri"], format!("{}/v1/oauth/wechat/callback", app.address));
    assert_eq!(browser.cookies.len(), 1, "no cookie binds the login to the browser");
    let to_callback = location(&browser.get(&to_wechat).await);
    let to_client = location(&browser.get(&to_callback).await);
    assert!(browser.cookies.is_empty(), "the callback left its cookie");
    let code = query(&to_client)["code"].clone();
    assert!(code.starts_with("ac_") && !to_client.contains("access_token"), "{to_client}");

    let resp = token(&app, &code, &verifier, CLIENT_REDIRECT).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["user"]["appid"], OA_APPID);
    assert_eq!(body["user"]["openid"], surface_openid(OA_APPID, "dan"));
    let me = app.me_ok(body["access_token"].as_str().unwrap()).await;
    assert_eq!(me["profile"]["nickname"], "Nick dan", "{me}");
    assert_eq!(me["identities"][0]["kind"], "official_account");
    assert_eq!(app.wechat.userinfo_calls(), 1);
    // The refresh token works as any other.
    assert_eq!(app.refresh(body["refresh_token"].as_str().unwrap()).await.status(), 200);
}

#[tokio::test]
async fn one_person_through_the_mini_program_official_account_website_and_mobile_app_is_one_user_with_four_identities()
{
    let app = surfaces_app().await;
    let mini = login_ok_in(&app, "union-eve", APPID).await;
    app.wechat.set_browser_person("union-eve");
    let mut ids = vec![mini["user"]["id"].clone()];
    for (appid, scope) in [(OA_APPID, None), (WEB_APPID, None)] {
        let (verifier, challenge) = pkce(appid);
        let code = browser_login_code(&app, &mut Browser::new(), appid, &challenge, scope).await;
        let body: Value = token(&app, &code, &verifier, CLIENT_REDIRECT).await.json().await.unwrap();
        ids.push(body["user"]["id"].clone());
    }
    let mobile = login_ok_in(&app, "2@union-eve", MOBILE_APPID).await;
    ids.push(mobile["user"]["id"].clone());

    assert!(ids.iter().all(|id| *id == ids[0] && id.is_string()), "{ids:?}");
    let me = app.me_ok(mobile["access_token"].as_str().unwrap()).await;
    let mut kinds: Vec<&str> =
        me["identities"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["miniprogram", "mobile_app", "official_account", "website"], "{me}");
    assert_eq!(me["unionid"], "u_union-eve");
}

#[tokio::test]
async fn a_bad_authorize_request_is_answered_with_json_and_the_browser_goes_nowhere() {
    let app = surfaces_app().await;
    let (_, challenge) = pkce("x");
    let base = authorize_url(&app, OA_APPID, &challenge, None);
    let swap = |from: &str, to: &str| base.replace(from, to);
    let cases = [
        ("redirect_uri not on the list", swap("%2Fapp%2Fcallback", "%2Fapp%2Fcallback2"), "invalid_request"),
        ("redirect_uri elsewhere", swap("127.0.0.1%3A9", "evil.example.com"), "invalid_request"),
        ("no redirect_uri", swap("redirect_uri=", "redirect_urx="), "invalid_request"),
        ("no challenge", swap("code_challenge=", "code_challengx="), "invalid_request"),
        ("plain PKCE", swap("code_challenge_method=S256", "code_challenge_method=plain"), "invalid_request"),
        ("no PKCE method", swap("code_challenge_method=S256", "x=1"), "invalid_request"),
        ("a short challenge", swap(&challenge, "abc"), "invalid_request"),
        ("a website scope on an official account", format!("{base}&scope=snsapi_login"), "invalid_request"),
        ("a mini-program's appid", swap(OA_APPID, APPID), "unknown_app"),
        ("an unknown appid", swap(OA_APPID, "wx0000000000000000"), "unknown_app"),
        ("no appid", swap("appid=", "appix="), "invalid_request"),
    ];
    for (what, url, error) in cases {
        let resp = app.client.get(&url).send().await.unwrap();
        assert!(resp.headers().get("location").is_none() && resp.headers().get("set-cookie").is_none(), "{what}");
        assert_error(resp, 400, error).await;
    }
}

#[tokio::test]
async fn a_callback_without_the_starting_browser_s_cookie_or_replayed_or_late_is_refused() {
    let app = surfaces_app().await;
    let (_, challenge) = pkce("f");
    let mut victim = Browser::new();
    let to_wechat = location(&victim.get(&authorize_url(&app, OA_APPID, &challenge, None)).await);
    let to_callback = location(&victim.get(&to_wechat).await);

    // Another browser (login CSRF: an attacker's callback URL opened by a victim).
    let body = assert_error(Browser::new().get(&to_callback).await, 400, "invalid_request").await;
    assert!(body["error_description"].as_str().unwrap().contains("cookie"), "{body}");
    let mut forged = Browser::new();
    forged.cookies = victim.cookies.keys().map(|k| (k.clone(), "forged".to_owned())).collect();
    assert_error(forged.get(&to_callback).await, 400, "invalid_request").await;
    // An unknown state.
    let unknown = to_callback.replace(&query(&to_callback)["state"], &"0".repeat(32));
    assert_error(victim.get(&unknown).await, 400, "invalid_request").await;

    let cookies = victim.cookies.clone();
    assert_eq!(victim.get(&to_callback).await.status(), 302);
    // Replayed, even with the cookie kept.
    victim.cookies = cookies;
    assert_error(victim.get(&to_callback).await, 400, "invalid_request").await;

    // Late: the authorization lives 10 minutes.
    let mut slow = Browser::new();
    let to_wechat = location(&slow.get(&authorize_url(&app, OA_APPID, &challenge, None)).await);
    let to_callback = location(&slow.get(&to_wechat).await);
    app.advance(601);
    assert_error(slow.get(&to_callback).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_declined_or_refused_wechat_login_returns_the_browser_to_the_client_with_an_error_and_no_code() {
    let app = surfaces_app().await;
    let (_, challenge) = pkce("g");
    for (code, expected) in
        [(None, "access_denied"), (Some("foreign"), "access_denied"), (Some("busy"), "temporarily_unavailable")]
    {
        app.wechat.script("foreign", [Reply::errcode(40029)]);
        app.wechat.script("busy", [Reply::errcode(-1)]);
        let mut browser = Browser::new();
        let to_wechat = location(&browser.get(&authorize_url(&app, OA_APPID, &challenge, None)).await);
        let state = query(&to_wechat)["state"].clone();
        let mut callback = url::Url::parse(&format!("{}/v1/oauth/wechat/callback", app.address)).unwrap();
        if let Some(code) = code {
            callback.query_pairs_mut().append_pair("code", code);
        }
        callback.query_pairs_mut().append_pair("state", &state);
        let to_client = location(&browser.get(callback.as_str()).await);
        let params = query(&to_client);
        assert!(to_client.starts_with(CLIENT_REDIRECT), "{to_client}");
        assert_eq!(params.get("error").map(String::as_str), Some(expected), "{code:?}: {to_client}");
        assert_eq!(params["state"], "client-state-1");
        assert!(!params.contains_key("code"), "{to_client}");
    }
}

#[tokio::test]
async fn a_code_is_spent_by_its_first_try_and_refused_late_with_another_redirect_uri_or_verifier() {
    let app = surfaces_app().await;
    let (verifier, challenge) = pkce("h");
    let code = async |app: &TestApp| browser_login_code(app, &mut Browser::new(), WEB_APPID, &challenge, None).await;

    let first = code(&app).await;
    assert_error(token(&app, &first, &pkce("other").0, CLIENT_REDIRECT).await, 400, "invalid_grant").await;
    assert_error(token(&app, &first, &verifier, CLIENT_REDIRECT).await, 400, "invalid_grant").await;

    let second = code(&app).await;
    assert_error(token(&app, &second, &verifier, "http://127.0.0.1:9/app/other").await, 400, "invalid_grant").await;

    let third = code(&app).await;
    assert_eq!(token(&app, &third, &verifier, CLIENT_REDIRECT).await.status(), 200);
    assert_error(token(&app, &third, &verifier, CLIENT_REDIRECT).await, 400, "invalid_grant").await;

    let late = code(&app).await;
    app.advance(61);
    assert_error(token(&app, &late, &verifier, CLIENT_REDIRECT).await, 400, "invalid_grant").await;

    assert_error(token(&app, "ac_forged", &verifier, CLIENT_REDIRECT).await, 400, "invalid_grant").await;
    let form =
        [("grant_type", "password"), ("code", "x"), ("redirect_uri", CLIENT_REDIRECT), ("code_verifier", &verifier)];
    let resp = post_form(&app, &form).await;
    assert_error(resp, 400, "unsupported_grant_type").await;
    assert_error(token(&app, "x", "short", CLIENT_REDIRECT).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn discovery_advertises_the_browser_login_only_when_a_browser_app_is_served() {
    let app = surfaces_app().await;
    let doc = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["authorization_endpoint"], format!("{}/v1/oauth/wechat/authorize", app.address));
    assert_eq!(doc["token_endpoint"], format!("{}/v1/token", app.address));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["grant_types_supported"], json!(["authorization_code"]));

    let plain = crate::helpers::spawn_app().await;
    let doc = plain.get_json("/.well-known/openid-configuration").await;
    assert_eq!(doc["response_types_supported"], json!(["token"]));
    assert!(
        doc.get("authorization_endpoint").is_none() && doc.get("code_challenge_methods_supported").is_none(),
        "{doc}"
    );
}

async fn start_scan(app: &TestApp, body: &Value) -> Value {
    let resp = app.post("/v1/scan-sessions", body).await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn poll(app: &TestApp, id: &str, wait: u64) -> reqwest::Response {
    app.client.get(format!("{}/v1/scan-sessions/{id}?wait={wait}", app.address)).send().await.unwrap()
}

async fn confirm(app: &TestApp, scene: &str, token: &str) -> reqwest::Response {
    app.post_with(&format!("/v1/scan-sessions/{scene}/confirm"), token, &json!({})).await
}

#[tokio::test]
async fn a_pc_logs_in_when_the_mini_program_confirms_the_scanned_scene_and_collects_the_tokens_once() {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let app = crate::helpers::spawn_app().await;
    let session = start_scan(&app, &json!({ "image": true })).await;
    let (id, scene) = (session["id"].as_str().unwrap(), session["scene"].as_str().unwrap());
    let png = STANDARD.decode(session["image"].as_str().unwrap().strip_prefix("data:image/png;base64,").unwrap());
    assert_eq!(png.unwrap(), crate::helpers::CODE_PNG);
    assert_eq!(
        app.wechat.wxacode_calls(),
        [json!({"scene": scene, "page": "pages/scan/confirm", "check_path": false})]
    );
    assert!(!id.contains(scene) || id.len() > scene.len() + 40, "the poll id is guessable from the scene");
    assert_eq!(session["expires_in"], 300);
    let pending: Value = poll(&app, id, 0).await.json().await.unwrap();
    assert_eq!(pending["status"], "pending");

    let ann = app.login_ok("ann").await;
    let resp = confirm(&app, scene, ann["access_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 204);

    let resp = poll(&app, id, 0).await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let confirmed: Value = resp.json().await.unwrap();
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["login"]["user"]["id"], ann["user"]["id"]);
    let me = app.me_ok(confirmed["login"]["access_token"].as_str().unwrap()).await;
    assert_eq!(me["id"], ann["user"]["id"]);
    assert_eq!(app.refresh(confirmed["login"]["refresh_token"].as_str().unwrap()).await.status(), 200);
    assert_error(poll(&app, id, 0).await, 404, "scan_session_not_found").await;
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_the_scene_is_confirmed() {
    let app = crate::helpers::spawn_app().await;
    let session = start_scan(&app, &json!({})).await;
    assert!(session.get("image").is_none() && app.wechat.wxacode_calls().is_empty(), "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let ann = app.login_ok("ann").await;
    let started = std::time::Instant::now();
    let waiting = tokio::spawn({
        let (client, address) = (app.client.clone(), app.address.clone());
        async move { client.get(format!("{address}/v1/scan-sessions/{id}?wait=20")).send().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "the long poll answered before the confirmation");
    assert_eq!(
        confirm(&app, session["scene"].as_str().unwrap(), ann["access_token"].as_str().unwrap()).await.status(),
        204
    );
    let body: Value = waiting.await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "confirmed");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_scan_session_is_confirmed_once_collected_only_with_its_secret_id_and_expires() {
    let app = crate::helpers::spawn_app().await;
    let ann = app.login_ok("ann").await;
    let token = ann["access_token"].as_str().unwrap();
    let session = start_scan(&app, &json!({})).await;
    let (id, scene) = (session["id"].as_str().unwrap(), session["scene"].as_str().unwrap());

    assert_error(app.post(&format!("/v1/scan-sessions/{scene}/confirm"), &json!({})).await, 401, "invalid_token").await;
    assert_eq!(confirm(&app, scene, token).await.status(), 204);
    let bob = app.login_ok("bob").await;
    assert_error(confirm(&app, scene, bob["access_token"].as_str().unwrap()).await, 404, "scan_session_not_found")
        .await;
    // Whoever saw the code knows the scene, not the secret part of the id.
    assert_error(poll(&app, scene, 0).await, 404, "scan_session_not_found").await;
    assert_error(poll(&app, &format!("{scene}.forged"), 0).await, 404, "scan_session_not_found").await;
    let collected: Value = poll(&app, id, 0).await.json().await.unwrap();
    assert_eq!(collected["login"]["user"]["id"], ann["user"]["id"], "Bob's confirmation replaced Ann's");

    let late = start_scan(&app, &json!({})).await;
    app.advance(301);
    assert_error(confirm(&app, late["scene"].as_str().unwrap(), token).await, 404, "scan_session_not_found").await;
    assert_error(poll(&app, late["id"].as_str().unwrap(), 0).await, 404, "scan_session_not_found").await;
    assert_error(confirm(&app, "unknown-scene", token).await, 404, "scan_session_not_found").await;
    assert_error(app.post("/v1/scan-sessions", &json!({ "appid": "wx0000000000000000" })).await, 400, "unknown_app")
        .await;
    assert_error(app.post("/v1/scan-sessions", &json!({ "page": "/pages/x" })).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_token_of_another_app_confirms_only_when_a_unionid_links_its_user_to_the_code_s_mini_program() {
    let app = surfaces_app().await;
    let session = start_scan(&app, &json!({ "appid": APPID })).await;
    let scene = session["scene"].as_str().unwrap();
    let stranger = login_ok_in(&app, "carl", MOBILE_APPID).await;
    let body =
        assert_error(confirm(&app, scene, stranger["access_token"].as_str().unwrap()).await, 403, "app_mismatch").await;
    assert!(body["error_description"].as_str().unwrap().contains(APPID), "{body}");

    login_ok_in(&app, "union-fay", APPID).await;
    let linked = login_ok_in(&app, "3@union-fay", MOBILE_APPID).await;
    assert_eq!(confirm(&app, scene, linked["access_token"].as_str().unwrap()).await.status(), 204);
    let collected: Value = poll(&app, session["id"].as_str().unwrap(), 0).await.json().await.unwrap();
    assert_eq!(collected["login"]["user"]["id"], linked["user"]["id"]);
    // The PC's login is the person's identity in the code's mini-program, not the token's.
    assert_eq!(collected["login"]["user"]["appid"], APPID);
    assert_eq!(collected["login"]["user"]["openid"], default_openid("union-fay"));
}

#[tokio::test]
async fn a_token_whose_session_ended_cannot_confirm_a_scan_into_a_new_login() {
    let app = crate::helpers::spawn_app().await;
    let ann = app.login_ok("ann").await;
    let token = ann["access_token"].as_str().unwrap();
    assert_eq!(app.post_with("/v1/me/logout-all", token, &json!({})).await.status(), 204);
    let session = start_scan(&app, &json!({})).await;

    // The access token still verifies for minutes; it must not mint a fresh 30-day login.
    assert_eq!(app.me(token).await.status(), 200);
    assert_error(confirm(&app, session["scene"].as_str().unwrap(), token).await, 401, "invalid_token").await;
    let pending: Value = poll(&app, session["id"].as_str().unwrap(), 0).await.json().await.unwrap();
    assert_eq!(pending["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_logins_pass_their_tests_in_headless_chromium_following_real_redirects() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !crate::console::browser_available(&chromium) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mini, oa, web, mobile) = ("wxdevmini0000000", "wxdevoa000000000", "wxdevweb00000000", "wxdevmob00000000");
    let callback = format!("http://127.0.0.1:{port}/callback");
    let toml = format!(
        "[[wechat_apps]]\nappid = \"{mini}\"\n\n\
         [[wechat_apps]]\nappid = \"{oa}\"\nkind = \"official_account\"\nredirect_uris = [\"{callback}\"]\n\n\
         [[wechat_apps]]\nappid = \"{web}\"\nkind = \"website\"\nredirect_uris = [\"{callback}\"]\n\n\
         [[wechat_apps]]\nappid = \"{mobile}\"\nkind = \"mobile_app\"\n"
    );
    let app = crate::helpers::spawn_dev_app_with_file(Some(&toml), &[]).await;
    let address = app.address.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(["--test", "--test-reporter=spec", "surfaces.test.mjs"])
            .current_dir(crate::console::repo("tests/browser"))
            .env("WXAUTH_URL", address)
            .env("CLIENT_PORT", port.to_string())
            .env("MINI_APPID", mini)
            .env("OA_APPID", oa)
            .env("WEB_APPID", web)
            .env("MOBILE_APPID", mobile)
            .env("CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser-login tests failed:\n{report}");
    for flow in [
        "one person through the mini-program, official account, website and mobile app is one user",
        "never a token in a URL",
        "a browser that did not start the login is refused at the callback",
    ] {
        assert!(report.contains(flow), "the flow {flow:?} did not run:\n{report}");
    }
}

#[tokio::test]
async fn an_operator_merges_two_users_of_one_person_and_the_merged_user_s_sessions_carry_over() {
    use wxauth::store::AdminRole;
    let app = spawn_app_with(|c| {
        c.toml = Some(every_surface());
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await;
    // Hal logged in through the mini-program (with his unionid) and, before the mobile app
    // was bound to the Open Platform account, through the mobile app: two users.
    let mini = login_ok_in(&app, "union-hal", APPID).await;
    let mobile = login_ok_in(&app, "hal-app", MOBILE_APPID).await;
    let (kept, gone) = (mini["user"]["id"].as_str().unwrap(), mobile["user"]["id"].as_str().unwrap());
    assert_ne!(kept, gone);

    let command = wxauth::admin::Command::MergeUsers { into: kept.into(), from: gone.into() };
    let reply = app.admin_command(command).await.unwrap();
    assert_eq!(reply["user"]["id"], kept, "{reply}");

    // The mobile app's refresh token, which names the merged user, refreshes as Hal.
    let resp = app.refresh(mobile["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
    let refreshed: Value = resp.json().await.unwrap();
    assert_eq!(refreshed["user"]["id"], kept);
    assert_eq!(refreshed["user"]["appid"], MOBILE_APPID);
    let again = login_ok_in(&app, "2@hal-app", MOBILE_APPID).await;
    assert_eq!(again["user"]["id"], kept);
    let me = app.me_ok(again["access_token"].as_str().unwrap()).await;
    assert_eq!(me["identities"].as_array().unwrap().len(), 2, "{me}");
    // The merged user's old access token names a user that is gone.
    assert_error(app.me(mobile["access_token"].as_str().unwrap()).await, 401, "invalid_token").await;

    let write = app.admin_token("ops", AdminRole::Write).await;
    let events: Value = app
        .admin(reqwest::Method::GET, &format!("/admin/v1/events?user={kept}&kind=users_merged"), &write)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"][0]["details"]["from"], gone, "{events}");

    // Two people: the admin API refuses, with the reason, and changes nothing.
    let other = login_ok_in(&app, "ivy", APPID).await;
    let resp = app
        .admin(reqwest::Method::POST, &format!("/admin/v1/users/{kept}/merge"), &write)
        .json(&json!({ "from": other["user"]["id"] }))
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 400, "invalid_request").await;
    assert!(body["error_description"].as_str().unwrap().contains("identity of app"), "{body}");
    assert_eq!(login_ok_in(&app, "2@ivy", APPID).await["user"]["id"], other["user"]["id"]);

    // Through the admin API.
    let late = login_ok_in(&app, "hal-web-era", MOBILE_APPID).await;
    let third = login_ok_in(&app, "jay", APPID).await;
    let resp = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/users/{}/merge", third["user"]["id"].as_str().unwrap()),
            &write,
        )
        .json(&json!({ "from": late["user"]["id"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let merged: Value = resp.json().await.unwrap();
    assert_eq!(merged["identities"].as_array().unwrap().len(), 2, "{merged}");
}
