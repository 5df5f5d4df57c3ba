//! Phone-first login: accounts with phone numbers (`accounts add --phone`, `set-phone`,
//! `import`), `POST /v1/bind` and `POST /v1/login` with a `phone_code`, registration
//! `phone`, the limits and what is stored. The mock's phone API gives the number in a code
//! `number-<11 digits>`, and `PHONE` for any other.

use serde_json::{Value, json};
use wxauth::admin::{Command, ImportRow};

use crate::helpers::{PHONE, Reply, TestApp, assert_error, default_openid, spawn_app_with};
use reqwest::Method;
use wxauth::store::AdminRole;

const PASSWORD: &str = "correct horse battery";
/// Carol's number, as an operator types it.
const CAROL: &str = "13912345678";

/// An app in registration `mode` with no attempt limits, and the account `carol` with the
/// number [`CAROL`] and no password.
async fn app_in(mode: &str) -> TestApp {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", mode);
        c.set("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", "0").set("WXAUTH_BIND_ATTEMPTS_PER_IP", "0");
    })
    .await;
    app.add_account_with("carol", None, Some(CAROL)).await.unwrap();
    app
}

fn carol_code() -> String {
    format!("number-{CAROL}")
}

async fn account_user(app: &TestApp, username: &str) -> String {
    let reply = app.admin_command(Command::ShowUser { query: username.into() }).await.unwrap();
    reply["users"][0]["id"].as_str().unwrap().to_owned()
}

async fn ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The bind ticket of an unbound login answered 403 `error`.
async fn ticket(app: &TestApp, code: &str, error: &str) -> String {
    let body = assert_error(app.login(code).await, 403, error).await;
    body["bind_ticket"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn in_phone_mode_an_unbound_openid_gets_403_phone_required_and_a_new_number_makes_an_account() {
    let app = app_in("phone").await;

    let resp = app.login("code1@dora").await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body = assert_error(resp, 403, "phone_required").await;
    assert_eq!(body["expires_in"], 300);
    assert!(body["error_description"].as_str().unwrap().contains("phone_code"), "{body}");
    let ticket = body["bind_ticket"].as_str().unwrap();

    let bound = ok(app.bind(&json!({"bind_ticket": ticket, "phone_code": "number-13700000001"})).await).await;
    assert_eq!(bound["user"]["created"], true);
    assert_eq!(bound["user"]["openid"], default_openid("code1@dora"));
    let me = app.me_ok(bound["access_token"].as_str().unwrap()).await;
    assert_eq!(me["phone"]["phone_number"], "+8613700000001", "the verified number is the user's: {me}");
    let token = bound["access_token"].as_str().unwrap();
    let export: Value = app
        .client
        .get(format!("{}/v1/me/export", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["account_phone"], "+8613700000001", "the person's export lacks the account's number");

    // From now on wx.login alone, as the same user.
    let again = app.login_ok("code2@dora").await;
    assert_eq!(again["user"]["id"], bound["user"]["id"]);
    assert_eq!(again["user"]["created"], false);
    // The account holds the number, under a name that is not the number.
    let accounts = app.admin_command(Command::ListAccounts).await.unwrap();
    let made = accounts["users"].as_array().unwrap().iter().find(|u| u["id"] == bound["user"]["id"]).unwrap();
    assert_eq!(made["account_phone"], "+8613700000001");
    let name = made["username"].as_str().unwrap();
    assert!(name.starts_with("phone-") && !name.contains("13700000001"), "{name}");
    // The ticket was spent.
    let spent = app.bind(&json!({"bind_ticket": ticket, "phone_code": "number-13700000001"})).await;
    assert_error(spent, 400, "invalid_ticket").await;
}

#[tokio::test]
async fn a_phone_code_binds_to_the_account_with_the_number_in_every_mode() {
    for mode in ["phone", "bind", "auto"] {
        let app = app_in(mode).await;
        let carol = account_user(&app, "carol").await;
        let bound = if mode == "auto" {
            // `auto` never answers 403: the phone code comes with a code instead.
            let body = json!({"code": "code1@dora", "phone_code": carol_code()});
            ok(app.bind(&body).await).await
        } else {
            let error = if mode == "phone" { "phone_required" } else { "not_bound" };
            let ticket = ticket(&app, "code1@dora", error).await;
            ok(app.bind(&json!({"bind_ticket": ticket, "phone_code": carol_code()})).await).await
        };
        assert_eq!(bound["user"]["id"], carol, "{mode}");
        assert_eq!(bound["user"]["created"], false, "{mode}");
        assert_eq!(app.login_ok("code2@dora").await["user"]["id"], carol, "{mode}: the next login");
    }
}

#[tokio::test]
async fn a_number_no_account_has_answers_409_no_account_for_phone_and_the_ticket_still_binds_by_password() {
    let app = app_in("bind").await;
    app.add_account("alice", PASSWORD).await;
    let ticket = ticket(&app, "code1@dora", "not_bound").await;

    let resp = app.bind(&json!({"bind_ticket": ticket, "phone_code": "number-13700000002"})).await;
    let body = assert_error(resp, 409, "no_account_for_phone").await;
    assert!(!body.to_string().contains("13700000002"), "the number in the answer: {body}");
    assert_eq!(app.wechat.phone_calls().len(), 1);
    let accounts = app.admin_command(Command::ListAccounts).await.unwrap();
    assert_eq!(accounts["users"].as_array().unwrap().len(), 2, "an account was made: {accounts}");

    let bound = ok(app.bind(&json!({"bind_ticket": ticket, "username": "alice", "password": PASSWORD})).await).await;
    assert_eq!(bound["user"]["id"], account_user(&app, "alice").await);
}

#[tokio::test]
async fn a_login_with_a_phone_code_binds_in_one_request_as_each_mode_says() {
    // Ok(true): the account carol; Ok(false): a new user; Err: the answer.
    type Expected = Result<bool, (u16, &'static str)>;
    let cases: [(&str, String, Expected); 6] = [
        ("phone", carol_code(), Ok(true)),
        ("phone", "number-13700000003".into(), Ok(false)),
        ("bind", carol_code(), Ok(true)),
        ("bind", "number-13700000003".into(), Err((409, "no_account_for_phone"))),
        ("auto", carol_code(), Ok(true)),
        ("auto", "number-13700000003".into(), Ok(false)),
    ];
    for (mode, phone_code, expected) in cases {
        let app = app_in(mode).await;
        let carol = account_user(&app, "carol").await;
        let resp = app.post_login(&json!({"code": "code1@dora", "phone_code": phone_code})).await;
        match expected {
            Ok(is_carol) => {
                let body = ok(resp).await;
                assert_eq!(body["user"]["id"] == carol.as_str(), is_carol, "{mode} {phone_code}: {body}");
                assert_eq!(body["user"]["created"], !is_carol, "{mode} {phone_code}");
                let again = app.login_ok("code2@dora").await;
                assert_eq!(again["user"]["id"], body["user"]["id"], "{mode} {phone_code}: the next login");
            }
            Err((status, error)) => {
                // With a ticket for a bind by password instead.
                let body = assert_error(resp, status, error).await;
                assert_eq!(body["expires_in"], 300, "{body}");
                app.add_account("alice", PASSWORD).await;
                let bind = json!({"bind_ticket": body["bind_ticket"], "username": "alice", "password": PASSWORD});
                assert_eq!(ok(app.bind(&bind).await).await["user"]["id"], account_user(&app, "alice").await);
            }
        }
    }
}

#[tokio::test]
async fn a_bound_identity_logging_in_with_a_phone_code_costs_no_phone_verification() {
    let app = app_in("phone").await;
    let first = ok(app.post_login(&json!({"code": "code1@dora", "phone_code": carol_code()})).await).await;
    assert_eq!(app.wechat.phone_calls().len(), 1);

    let again = ok(app.post_login(&json!({"code": "code2@dora", "phone_code": "number-13700000004"})).await).await;
    assert_eq!(again["user"]["id"], first["user"]["id"]);
    assert_eq!(app.wechat.phone_calls().len(), 1, "a bound identity's phone code was verified");
}

#[tokio::test]
async fn a_second_identical_request_does_not_call_wechats_phone_api_again() {
    let app = app_in("phone").await;
    let body = json!({"code": "code1@dora", "phone_code": "number-13700000005"});

    // A double tap, then a retry after a lost answer.
    let (a, b) = tokio::join!(app.post_login(&body), app.post_login(&body));
    let (a, b) = (ok(a).await, ok(b).await);
    let c = ok(app.post_login(&body).await).await;
    assert_eq!(app.wechat.phone_calls().len(), 1, "WeChat billed more than one verification");
    assert_eq!(a["user"]["id"], b["user"]["id"]);
    assert_eq!(a["user"]["id"], c["user"]["id"]);
    let accounts = app.admin_command(Command::ListAccounts).await.unwrap();
    assert_eq!(accounts["users"].as_array().unwrap().len(), 2, "one account per number: {accounts}");

    // The same for a bind with a ticket sent twice.
    let ticket = ticket(&app, "code1@erin", "phone_required").await;
    let bind = json!({"bind_ticket": ticket, "phone_code": "number-13700000006"});
    let (a, b) = tokio::join!(app.bind(&bind), app.bind(&bind));
    let statuses = [a.status().as_u16(), b.status().as_u16()];
    assert!(statuses.contains(&200), "{statuses:?}");
    assert_eq!(app.wechat.phone_calls().len(), 2, "the bind's retry called WeChat again");
}

#[tokio::test]
async fn bad_phone_binds_get_clear_errors_and_store_nothing() {
    let app = app_in("phone").await;
    app.wechat.script_phone("refused", [Reply::errcode(40029)]);
    let ticket = ticket(&app, "code1@dora", "phone_required").await;
    let cases = [
        (json!({"bind_ticket": ticket, "phone_code": carol_code(), "username": "carol"}), 400, "invalid_request"),
        (json!({"bind_ticket": ticket, "phone_code": carol_code(), "password": PASSWORD}), 400, "invalid_request"),
        (json!({"bind_ticket": ticket}), 400, "invalid_request"),
        (json!({"bind_ticket": ticket, "phone_code": ""}), 400, "invalid_request"),
        (json!({"bind_ticket": ticket, "phone_code": "has space"}), 400, "invalid_request"),
        (json!({"bind_ticket": ticket, "phone_code": 13912345678u64}), 400, "invalid_request"),
        (json!({"bind_ticket": "bt_forged", "phone_code": carol_code()}), 400, "invalid_ticket"),
        (json!({"bind_ticket": ticket, "phone_code": "refused"}), 400, "invalid_code"),
    ];
    for (body, status, error) in cases {
        assert_error(app.bind(&body).await, status, error).await;
    }
    let login_cases = [
        (json!({"code": "code2@dora", "phone_code": ""}), 400, "invalid_request"),
        (json!({"code": "code2@dora", "phone_code": ["x"]}), 400, "invalid_request"),
    ];
    for (body, status, error) in login_cases {
        assert_error(app.post_login(&body).await, status, error).await;
    }
    assert_eq!(app.wechat.phone_calls().len(), 1, "only the refused code reached WeChat");
    let accounts = app.admin_command(Command::ListAccounts).await.unwrap();
    assert_eq!(accounts["users"].as_array().unwrap().len(), 1, "{accounts}");
    // The ticket still works.
    ok(app.bind(&json!({"bind_ticket": ticket, "phone_code": carol_code()})).await).await;
}

#[tokio::test]
async fn phone_attempts_are_limited_per_address_before_wechat_is_asked_and_per_number() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "phone");
        c.set("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", "0").set("WXAUTH_BIND_ATTEMPTS_PER_IP", "2");
    })
    .await;
    for (person, number) in [("a", "13700000010"), ("b", "13700000011")] {
        let body = json!({"code": format!("c@{person}"), "phone_code": format!("number-{number}")});
        ok(app.post_login(&body).await).await;
    }
    let resp = app.post_login(&json!({"code": "c@c", "phone_code": "number-13700000020"})).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, 429, "rate_limited").await;
    assert_eq!(app.wechat.phone_calls().len(), 2, "a limited attempt was verified (and billed)");

    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "phone");
        c.set("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", "1").set("WXAUTH_BIND_ATTEMPTS_PER_IP", "0");
    })
    .await;
    ok(app.post_login(&json!({"code": "c@a", "phone_code": "number-13700000030"})).await).await;
    // Per number, whoever asks; and per identity, before WeChat is asked.
    let resp = app.post_login(&json!({"code": "c@b", "phone_code": "number-13700000030"})).await;
    assert_error(resp, 429, "rate_limited").await;
    let calls = app.wechat.phone_calls().len();
    let resp = app.post_login(&json!({"code": "c@b", "phone_code": "number-13700000031"})).await;
    assert_error(resp, 429, "rate_limited").await;
    assert_eq!(app.wechat.phone_calls().len(), calls, "an identity over its budget was verified (and billed)");
    ok(app.post_login(&json!({"code": "c@c", "phone_code": "number-13700000031"})).await).await;
}

#[tokio::test]
async fn a_banned_accounts_number_binds_nothing() {
    let app = app_in("bind").await;
    app.admin_command(Command::BanUser { query: "carol".into(), reason: "fraud".into(), until: None }).await.unwrap();
    let ticket = ticket(&app, "code1@dora", "not_bound").await;
    assert_error(app.bind(&json!({"bind_ticket": ticket, "phone_code": carol_code()})).await, 403, "user_banned").await;
    assert_error(app.login("code2@dora").await, 403, "not_bound").await;
}

#[tokio::test]
async fn account_numbers_are_normalised_and_unique_and_can_move() {
    let app = app_in("bind").await;
    for taken in ["+86 139 1234 5678", "13912345678", "+8613912345678"] {
        let refused = app.add_account_with("dan", Some(PASSWORD), Some(taken)).await.unwrap_err();
        assert!(refused.contains("another account has this phone number"), "{taken}: {refused}");
    }
    for bad in ["12345", "1391234567a", "+1"] {
        let refused = app.add_account_with("dan", Some(PASSWORD), Some(bad)).await.unwrap_err();
        assert!(refused.contains("is not a phone number"), "{bad}: {refused}");
    }
    let refused = app.add_account_with("dan", None, None).await.unwrap_err();
    assert!(refused.contains("needs a phone number"), "{refused}");

    // carol's number moves to dan once carol lets it go.
    app.add_account_with("dan", Some(PASSWORD), None).await.unwrap();
    let set = |username: &str, phone: Option<&str>| Command::SetAccountPhone {
        username: username.into(),
        phone: phone.map(Into::into),
    };
    let refused = app.admin_command(set("dan", Some(CAROL))).await.unwrap_err();
    assert!(refused.contains("another account"), "{refused}");
    app.admin_command(set("carol", Some("13700000041"))).await.unwrap();
    app.admin_command(set("dan", Some(CAROL))).await.unwrap();
    let refused = app.admin_command(set("nobody", Some("13700000040"))).await.unwrap_err();
    assert!(refused.contains("no account"), "{refused}");

    let ticket = ticket(&app, "code1@dora", "not_bound").await;
    let bound = ok(app.bind(&json!({"bind_ticket": ticket, "phone_code": carol_code()})).await).await;
    assert_eq!(bound["user"]["id"], account_user(&app, "dan").await);
    // carol has no password: her old number binds elsewhere, a password nowhere.
    let ticket = self::ticket(&app, "code1@erin", "not_bound").await;
    let body = json!({"bind_ticket": ticket, "username": "carol", "password": "anything at all"});
    assert_error(app.bind(&body).await, 401, "invalid_credentials").await;
}

fn row(line: u64, username: &str, phone: &str) -> ImportRow {
    ImportRow { line, username: username.into(), phone: phone.into(), password_hash: String::new() }
}

#[tokio::test]
async fn an_import_adds_every_account_or_none_and_names_the_lines_it_refuses() {
    let app = app_in("bind").await;
    let hash = wxauth::password::hash(&wxauth::domain::Password::new_for_account(PASSWORD).unwrap()).unwrap();
    let bad = vec![
        row(2, "erin", "13700000050"),
        row(3, "bad name", "13700000051"),
        row(4, "fay", "1234"),
        row(5, "carol", "13700000052"),
        row(6, "gus", CAROL),
        row(7, "erin", "13700000053"),
        row(8, "hal", "+86 137 0000 0050"),
        ImportRow { password_hash: "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into(), ..row(9, "ivy", "13700000054") },
    ];
    let refused = app.admin_command(Command::ImportAccounts { rows: bad }).await.unwrap_err();
    for line in 3..=9 {
        assert!(refused.contains(&format!("line {line}:")), "line {line} not named: {refused}");
    }
    assert!(!refused.contains("line 2:"), "{refused}");
    let accounts = app.admin_command(Command::ListAccounts).await.unwrap();
    assert_eq!(accounts["users"].as_array().unwrap().len(), 1, "part of a refused import landed: {accounts}");

    let good =
        vec![row(2, "erin", "13700000050"), ImportRow { password_hash: hash, ..row(3, "fay", "+8613700000051") }];
    let imported = app.admin_command(Command::ImportAccounts { rows: good }).await.unwrap();
    assert_eq!(imported["accounts"], 2, "{imported}");
    let ticket = ticket(&app, "code1@dora", "not_bound").await;
    let bound = ok(app.bind(&json!({"bind_ticket": ticket, "phone_code": "number-13700000050"})).await).await;
    assert_eq!(bound["user"]["id"], account_user(&app, "erin").await);
    let ticket = self::ticket(&app, "code1@gus", "not_bound").await;
    let bound = ok(app.bind(&json!({"bind_ticket": ticket, "username": "fay", "password": PASSWORD})).await).await;
    assert_eq!(bound["user"]["id"], account_user(&app, "fay").await);
}

#[tokio::test]
async fn no_phone_number_is_stored_in_plaintext() {
    let app = app_in("phone").await;
    app.admin_command(Command::ImportAccounts { rows: vec![row(1, "erin", "13700000060")] }).await.unwrap();
    ok(app.post_login(&json!({"code": "code1@dora", "phone_code": "number-13700000061"})).await).await;
    ok(app.post_login(&json!({"code": "code1@erin", "phone_code": "number-13700000060"})).await).await;
    ok(app.post_login(&json!({"code": "code1@fay", "phone_code": carol_code()})).await).await;
    for needle in [CAROL, "13700000060", "13700000061", PHONE] {
        assert_eq!(app.stored_places_holding(needle.as_bytes()).await, Vec::<String>::new(), "{needle}");
    }
}

#[tokio::test]
async fn operators_set_an_accounts_number_through_the_admin_api_and_find_the_user_by_it() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await;
    let token = app.admin_token("ops", AdminRole::Write).await;
    let alice = app.add_account("alice", PASSWORD).await["user"]["id"].as_str().unwrap().to_owned();
    app.add_account_with("bob", None, Some(CAROL)).await.unwrap();
    let set = |user: &str, phone: Value| {
        app.admin(Method::PUT, &format!("/admin/v1/users/{user}/account-phone"), &token)
            .json(&json!({ "phone": phone }))
    };

    let resp = set(&alice, json!("+86 137 0000 0070")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let file: Value =
        app.admin(Method::GET, &format!("/admin/v1/users/{alice}"), &token).send().await.unwrap().json().await.unwrap();
    assert_eq!(file["account_phone"], "+8613700000070", "{file}");
    let found: Value =
        app.admin(Method::GET, "/admin/v1/users?q=13700000070", &token).send().await.unwrap().json().await.unwrap();
    assert_eq!(found["users"][0]["id"], alice.as_str(), "{found}");

    // Refused: another account's number, not a number, a user without an account.
    let taken = assert_error(set(&alice, json!(CAROL)).send().await.unwrap(), 400, "invalid_request").await;
    assert!(taken["error_description"].as_str().unwrap().contains("another account"), "{taken}");
    assert_error(set(&alice, json!("12345")).send().await.unwrap(), 400, "invalid_request").await;
    let plain = app.login_ok("code1@zed").await["user"]["id"].as_str().unwrap().to_owned();
    let none = assert_error(set(&plain, json!("13700000071")).send().await.unwrap(), 400, "invalid_request").await;
    assert!(none["error_description"].as_str().unwrap().contains("no account"), "{none}");

    // Taken away: the number binds nothing any more.
    assert_eq!(set(&alice, Value::Null).send().await.unwrap().status(), 200);
    let resp = app.bind(&json!({"code": "code1@dora", "phone_code": "number-13700000070"})).await;
    assert_error(resp, 409, "no_account_for_phone").await;
}

#[tokio::test]
async fn a_phone_bind_of_an_identity_bound_already_answers_409_before_wechat_bills_a_verification() {
    let app = app_in("auto").await;
    app.login_ok("code1@dora").await;
    let resp = app.bind(&json!({"code": "code2@dora", "phone_code": carol_code()})).await;
    assert_error(resp, 409, "already_bound").await;
    assert_eq!(app.wechat.phone_calls().len(), 0);
}

#[tokio::test]
async fn a_passwordless_account_keeps_its_number_and_the_admin_api_needs_the_phone_field() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind").set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await;
    let carol =
        app.add_account_with("carol", None, Some(CAROL)).await.unwrap()["user"]["id"].as_str().unwrap().to_owned();
    let clear = Command::SetAccountPhone { username: "carol".into(), phone: None };
    let refused = app.admin_command(clear).await.unwrap_err();
    assert!(refused.contains("no password"), "{refused}");

    let token = app.admin_token("ops", AdminRole::Write).await;
    let path = format!("/admin/v1/users/{carol}/account-phone");
    for body in [json!({}), json!({"number": "13700000072"})] {
        let resp = app.admin(Method::PUT, &path, &token).json(&body).send().await.unwrap();
        assert_error(resp, 400, "invalid_request").await;
    }
    let resp = app.admin(Method::PUT, &path, &token).json(&json!({"phone": null})).send().await.unwrap();
    assert_error(resp, 400, "invalid_request").await;
    let ticket = ticket(&app, "code1@dora", "not_bound").await;
    ok(app.bind(&json!({"bind_ticket": ticket, "phone_code": carol_code()})).await).await;
}
