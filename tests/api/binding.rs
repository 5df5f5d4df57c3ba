//! Registration `bind`: not_bound answers with bind tickets, `POST /v1/bind`, its errors and
//! attempt limits, and `DELETE /v1/me/binding`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, default_openid, spawn_app_with};

const PASSWORD: &str = "correct horse battery";

/// An app in bind mode with the account `alice`, and no attempt limits unless `limits`.
async fn bind_mode(limits: Option<(&str, &str)>) -> TestApp {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
        let (per_user, per_ip) = limits.unwrap_or(("0", "0"));
        c.set("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", per_user).set("WXAUTH_BIND_ATTEMPTS_PER_IP", per_ip);
    })
    .await;
    app.add_account("alice", PASSWORD).await;
    app
}

async fn bind_ok(app: &TestApp, body: Value) -> Value {
    let resp = app.bind(&body).await;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "bind failed: {answer}");
    answer
}

#[tokio::test]
async fn an_unbound_openid_gets_403_not_bound_with_a_ticket_and_nothing_is_stored() {
    let app = bind_mode(None).await;

    let resp = app.login("code1@dora").await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body = assert_error(resp, 403, "not_bound").await;

    let ticket = body["bind_ticket"].as_str().unwrap();
    assert!(ticket.starts_with("bt_") && ticket.len() >= 40, "{ticket}");
    assert_eq!(body["expires_in"], 300);
    assert!(body["error_description"].as_str().unwrap().contains("POST /v1/bind"), "{body}");
    assert!(!body.to_string().contains("session-key"), "the session key left the server: {body}");
    // Still unbound: a second login gets another ticket, not a user.
    let again = assert_error(app.login("code2@dora").await, 403, "not_bound").await;
    assert_ne!(again["bind_ticket"], body["bind_ticket"]);
}

#[tokio::test]
async fn a_bind_with_the_ticket_logs_in_as_the_account_and_later_logins_are_silent() {
    let app = bind_mode(None).await;
    let alice = app.add_account("bob", PASSWORD).await;
    let ticket = app.ticket("code1@dora").await;

    let bound = bind_ok(&app, json!({"bind_ticket": ticket, "username": "bob", "password": PASSWORD})).await;

    assert_eq!(bound["user"]["id"], alice["user"]["id"]);
    assert_eq!(bound["user"]["openid"], default_openid("code1@dora"));
    assert_eq!((bound["token_type"].as_str(), bound["user"]["created"].as_bool()), (Some("Bearer"), Some(false)));
    let me = app.me_ok(bound["access_token"].as_str().unwrap()).await;
    assert_eq!(me["username"], "bob");
    assert_eq!(
        me["identities"],
        json!([{"appid": crate::helpers::APPID, "openid": default_openid("code1@dora"), "kind": "miniprogram"}])
    );
    // From now on wx.login alone logs the person in.
    let login = app.login_ok("code2@dora").await;
    assert_eq!(
        (login["user"]["id"].clone(), login["user"]["created"].clone()),
        (alice["user"]["id"].clone(), json!(false))
    );
}

#[tokio::test]
async fn a_bind_with_a_fresh_code_works_without_a_ticket() {
    let app = bind_mode(None).await;

    let bound = bind_ok(&app, json!({"code": "code1@erin", "username": "alice", "password": PASSWORD})).await;

    assert_eq!(bound["user"]["openid"], default_openid("code1@erin"));
    app.login_ok("code2@erin").await;
}

#[tokio::test]
async fn wrong_password_and_unknown_username_get_the_same_401_and_keep_the_ticket() {
    let app = bind_mode(None).await;
    let ticket = app.ticket("code1@dora").await;

    let wrong = app.bind(&json!({"bind_ticket": ticket, "username": "alice", "password": "not the password"})).await;
    let wrong = assert_error(wrong, 401, "invalid_credentials").await;
    let nobody = app.bind(&json!({"bind_ticket": ticket, "username": "mallory", "password": PASSWORD})).await;
    let nobody = assert_error(nobody, 401, "invalid_credentials").await;

    assert_eq!(wrong, nobody, "the answers tell whether the username exists");
    // A typo does not cost the person a new wx.login.
    bind_ok(&app, json!({"bind_ticket": ticket, "username": "alice", "password": PASSWORD})).await;
}

#[tokio::test]
async fn unknown_usernames_cost_about_as_much_time_as_wrong_passwords() {
    let app = bind_mode(None).await;
    let mut fastest = [std::time::Duration::MAX; 2];
    // Interleaved, and the fastest of each kind: noise from other tests only adds time. A
    // ticket of another person each round: one person's wrong passwords make them wait.
    for round in 0..6 {
        let ticket = app.ticket(&format!("code{round}@dora{round}")).await;
        for (i, username) in ["alice", "nobody"].into_iter().enumerate() {
            let body = json!({"bind_ticket": ticket, "username": username, "password": "wrong password"});
            let started = std::time::Instant::now();
            assert_eq!(app.bind(&body).await.status(), 401);
            fastest[i] = fastest[i].min(started.elapsed());
        }
    }

    // Without the dummy hash an unknown username answers in well under a millisecond and a
    // known one in tens of milliseconds: a ratio in the hundreds.
    let ratio = fastest[0].as_secs_f64() / fastest[1].as_secs_f64();
    assert!((0.25..4.0).contains(&ratio), "known {:?} vs unknown {:?}", fastest[0], fastest[1]);
}

#[tokio::test]
async fn a_ticket_works_once_and_forged_expired_or_confused_tickets_are_refused() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    for username in ["alice", "bob", "carol"] {
        app.add_account(username, PASSWORD).await;
    }
    let ticket = app.ticket("code1@dora").await;
    let with =
        |ticket: &str, username: &str| json!({"bind_ticket": ticket, "username": username, "password": PASSWORD});
    let token = bind_ok(&app, with(&ticket, "alice")).await["access_token"].as_str().unwrap().to_owned();

    let cases = [
        ("a spent ticket", ticket.clone()),
        ("a forged ticket", "bt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()),
        ("an access token", token.clone()),
        ("an empty ticket", String::new()),
    ];
    for (what, ticket) in cases {
        let body = assert_error(app.bind(&with(&ticket, "bob")).await, 400, "invalid_ticket").await;
        assert!(body["error_description"].as_str().unwrap().contains("log in again"), "{what}: {body}");
    }
    // A ticket is never accepted as an access token.
    let fresh = app.ticket("code1@frank").await;
    assert_error(app.me(&fresh).await, 401, "invalid_token").await;
    // Expired: the default lifetime is 300 s of the app's clock. Moved an hour first, so
    // that a ticket dated by the system clock would be born expired.
    app.advance(3600);
    let (fresh, spare) = (app.ticket("code2@frank").await, app.ticket("code1@grace").await);
    app.advance(295);
    bind_ok(&app, with(&spare, "bob")).await;
    app.advance(10);
    assert_error(app.bind(&with(&fresh, "carol")).await, 400, "invalid_ticket").await;
}

#[tokio::test]
async fn malformed_bind_requests_are_400_invalid_request() {
    let app = bind_mode(None).await;
    let ticket = app.ticket("code1@dora").await;
    for (case, body) in [
        ("neither ticket nor code", json!({"username": "alice", "password": PASSWORD})),
        (
            "both ticket and code",
            json!({"bind_ticket": ticket, "code": "c@x", "username": "alice", "password": PASSWORD}),
        ),
        ("no username", json!({"bind_ticket": ticket, "password": PASSWORD})),
        ("no password", json!({"bind_ticket": ticket, "username": "alice"})),
        ("empty password", json!({"bind_ticket": ticket, "username": "alice", "password": ""})),
        ("username with a space", json!({"bind_ticket": ticket, "username": "al ice", "password": PASSWORD})),
        ("bad code", json!({"code": "two words", "username": "alice", "password": PASSWORD})),
        ("not an object", json!(["alice"])),
    ] {
        let resp = app.bind(&body).await;
        assert_eq!(resp.status(), 400, "{case}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{case}: {body}");
    }
    assert!(app.wechat.calls_for("two words") == 0);
    // None of that spent the ticket.
    bind_ok(&app, json!({"bind_ticket": ticket, "username": "alice", "password": PASSWORD})).await;
}

#[tokio::test]
async fn an_openid_bound_to_another_user_is_409_already_bound() {
    let app = bind_mode(None).await;
    app.add_account("bob", PASSWORD).await;
    bind_ok(&app, json!({"code": "code1@dora", "username": "alice", "password": PASSWORD})).await;

    let resp = app.bind(&json!({"code": "code2@dora", "username": "bob", "password": PASSWORD})).await;

    assert_error(resp, 409, "already_bound").await;
    assert_eq!(app.login_ok("code3@dora").await["user"]["openid"], default_openid("code3@dora"));
}

#[tokio::test]
async fn an_account_bound_to_another_openid_of_the_app_is_409_account_already_bound() {
    let app = bind_mode(None).await;
    bind_ok(&app, json!({"code": "code1@dora", "username": "alice", "password": PASSWORD})).await;
    let ticket = app.ticket("code1@erin").await;

    let resp = app.bind(&json!({"bind_ticket": ticket, "username": "alice", "password": PASSWORD})).await;

    assert_error(resp, 409, "account_already_bound").await;
    assert_error(app.login("code2@erin").await, 403, "not_bound").await;
    // A refused bind leaves the ticket usable, for another account.
    app.add_account("bob", PASSWORD).await;
    bind_ok(&app, json!({"bind_ticket": ticket, "username": "bob", "password": PASSWORD})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_binds_of_one_account_give_one_success_and_409s() {
    let app = Arc::new(bind_mode(None).await);
    let mut tickets = Vec::new();
    for i in 0..50 {
        tickets.push(app.ticket(&format!("code@person{i}")).await);
    }

    let binds: Vec<_> = tickets
        .into_iter()
        .map(|ticket| {
            let app = app.clone();
            tokio::spawn(async move {
                let resp = app.bind(&json!({"bind_ticket": ticket, "username": "alice", "password": PASSWORD})).await;
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for bind in binds {
        answers.push(bind.await.unwrap());
    }

    assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 1, "{answers:?}");
    let conflicts = answers.iter().filter(|(s, b)| *s == 409 && b["error"] == "account_already_bound").count();
    assert_eq!(conflicts, 49, "{answers:?}");
}

#[tokio::test]
async fn too_many_attempts_for_one_username_get_429_with_retry_after() {
    let app = bind_mode(Some(("2", "0"))).await;
    let ticket = app.ticket("code1@dora").await;
    let attempt = |username: &str| json!({"bind_ticket": ticket, "username": username, "password": "wrong password"});
    for _ in 0..2 {
        assert_eq!(app.bind(&attempt("alice")).await.status(), 401);
    }

    let resp = app.bind(&attempt("alice")).await;

    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_error(resp, 429, "rate_limited").await;
    // Even the right password waits; another username does not.
    let right = json!({"bind_ticket": ticket, "username": "alice", "password": PASSWORD});
    assert_error(app.bind(&right).await, 429, "rate_limited").await;
    assert_eq!(app.bind(&attempt("bob")).await.status(), 401);
}

#[tokio::test]
async fn a_guesser_cannot_use_up_the_attempts_of_the_usernames_owner() {
    let app = bind_mode(Some(("3", "0"))).await;
    let guesser = app.ticket("code1@mallory").await;
    let guess = json!({"bind_ticket": guesser, "username": "alice", "password": "a guess"});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.bind(&guess).await.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429], "the guesser's budget for the username");

    // The owner comes with their own WeChat identity, and is let in at once.
    let owner = app.ticket("code1@alice").await;
    bind_ok(&app, json!({"bind_ticket": owner, "username": "alice", "password": PASSWORD})).await;
}

#[tokio::test]
async fn after_three_wrong_passwords_each_one_makes_the_guessers_next_attempt_wait_longer() {
    let app = bind_mode(Some(("0", "0"))).await;
    let guesser = app.ticket("code1@mallory").await;
    let guess = |username: &str| json!({"bind_ticket": guesser, "username": username, "password": "a guess"});
    for username in ["a1", "a2", "a3", "a4"] {
        assert_eq!(app.bind(&guess(username)).await.status(), 401, "{username}");
    }

    // Whatever the username, and with the right password too: the identity waits.
    let resp = app.bind(&json!({"bind_ticket": guesser, "username": "alice", "password": PASSWORD})).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_error(resp, 429, "rate_limited").await;
    // A new code of the same person does not start over; another person is not slowed.
    let again = app.bind(&json!({"code": "code2@mallory", "username": "a5", "password": "a guess"})).await;
    assert_error(again, 429, "rate_limited").await;
    let other = app.ticket("code1@olga").await;
    assert_eq!(app.bind(&json!({"bind_ticket": other, "username": "a5", "password": "x"})).await.status(), 401);
    // Once the wait is over, the next wrong password doubles it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.bind(&guess("a5")).await.status(), 401);
    let resp = app.bind(&guess("a6")).await;
    assert_eq!(resp.headers()["retry-after"], "2");
}

#[tokio::test]
async fn junk_tickets_do_not_use_up_a_usernames_attempts() {
    let app = bind_mode(Some(("2", "0"))).await;
    for _ in 0..5 {
        let junk = json!({"bind_ticket": "bt_junk", "username": "alice", "password": "guess"});
        assert_error(app.bind(&junk).await, 400, "invalid_ticket").await;
    }
    let ticket = app.ticket("code1@dora").await;

    bind_ok(&app, json!({"bind_ticket": ticket, "username": "alice", "password": PASSWORD})).await;
}

#[tokio::test]
async fn too_many_attempts_from_one_address_get_429_whatever_the_username() {
    let app = bind_mode(Some(("0", "3"))).await;
    let ticket = app.ticket("code1@dora").await;
    for name in ["a1", "a2", "a3"] {
        let body = json!({"bind_ticket": ticket, "username": name, "password": "wrong password"});
        assert_eq!(app.bind(&body).await.status(), 401);
    }

    let resp = app.bind(&json!({"bind_ticket": ticket, "username": "a4", "password": "wrong password"})).await;

    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, 429, "rate_limited").await;
}

#[tokio::test]
async fn unbinding_keeps_the_account_and_the_next_login_is_unbound() {
    let app = bind_mode(None).await;
    let bound = bind_ok(&app, json!({"code": "code1@dora", "username": "alice", "password": PASSWORD})).await;
    let token = bound["access_token"].as_str().unwrap();

    let resp = app.unbind(token).await;

    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["unbound"],
        json!([{"appid": crate::helpers::APPID, "openid": default_openid("code1@dora"), "kind": "miniprogram"}])
    );
    assert_error(app.login("code2@dora").await, 403, "not_bound").await;
    let me = app.me_ok(token).await;
    assert_eq!((me["username"].as_str(), me["identities"].clone()), (Some("alice"), json!([])));
    // The account binds again, to the same user.
    let again = bind_ok(&app, json!({"code": "code3@dora", "username": "alice", "password": PASSWORD})).await;
    assert_eq!(again["user"]["id"], bound["user"]["id"]);
}

#[tokio::test]
async fn unbinding_in_auto_mode_makes_the_next_login_a_new_user() {
    let app = crate::helpers::spawn_app().await;
    let first = app.login_ok("code1@gina").await;

    assert_eq!(app.unbind(first["access_token"].as_str().unwrap()).await.status(), 200);

    let next = app.login_ok("code2@gina").await;
    assert_eq!(next["user"]["created"], true);
    assert_ne!(next["user"]["id"], first["user"]["id"]);
}

#[tokio::test]
async fn unbinding_needs_a_bearer_token() {
    let app = crate::helpers::spawn_app().await;
    let resp = app.client.delete(format!("{}/v1/me/binding", app.address)).send().await.unwrap();
    assert_error(resp, 401, "invalid_token").await;
    assert_error(app.unbind("not-a-token").await, 401, "invalid_token").await;
}

#[tokio::test]
async fn bind_answers_are_not_cacheable_and_a_bind_also_works_in_auto_mode() {
    let app = crate::helpers::spawn_app().await;
    app.add_account("alice", PASSWORD).await;

    let resp = app.bind(&json!({"code": "code1@hank", "username": "alice", "password": PASSWORD})).await;

    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.status(), 200);
    // In auto mode the openid of a person who already logged in is someone's user: 409.
    app.login_ok("code1@ivan").await;
    let taken = app.bind(&json!({"code": "code2@ivan", "username": "alice", "password": PASSWORD})).await;
    assert_error(taken, 409, "already_bound").await;
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    for (trusted, expected) in [("127.0.0.1", [401, 401, 429]), ("", [401, 429, 429])] {
        let app = spawn_app_with(|c| {
            c.set("WXAUTH_REGISTRATION", "bind").set("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", "0");
            c.set("WXAUTH_BIND_ATTEMPTS_PER_IP", "1").set("WXAUTH_TRUSTED_PROXIES", trusted);
        })
        .await;
        let ticket = app.ticket("code1@dora").await;
        let mut statuses = Vec::new();
        for (client, username) in [("1.1.1.1", "a1"), ("2.2.2.2", "a2"), ("1.1.1.1", "a3")] {
            let body = json!({"bind_ticket": ticket, "username": username, "password": "wrong password"});
            let resp = app
                .client
                .post(format!("{}/v1/bind", app.address))
                .header("x-forwarded-for", client)
                .json(&body)
                .send()
                .await
                .unwrap();
            statuses.push(resp.status().as_u16());
        }
        assert_eq!(statuses, expected, "trusted proxies {trusted:?}");
    }
}

#[tokio::test]
async fn a_forged_x_forwarded_for_line_does_not_hide_the_client_behind_a_proxy_that_adds_its_own() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind").set("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", "0");
        c.set("WXAUTH_BIND_ATTEMPTS_PER_IP", "1").set("WXAUTH_TRUSTED_PROXIES", "127.0.0.1");
    })
    .await;
    let ticket = app.ticket("code1@dora").await;
    let mut statuses = Vec::new();
    for forged in ["9.9.9.1", "9.9.9.2"] {
        let body = json!({"bind_ticket": ticket, "username": "a", "password": "wrong password"});
        // The client's own line first, then the one the proxy added.
        let resp = app
            .client
            .post(format!("{}/v1/bind", app.address))
            .header("x-forwarded-for", forged)
            .header("x-forwarded-for", "1.1.1.1")
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 429]);
}

#[tokio::test]
async fn an_x_forwarded_for_entry_with_a_port_or_a_stray_byte_does_not_count_as_the_proxy() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_RATE_LIMIT_PER_MINUTE", "1").set("WXAUTH_TRUSTED_PROXIES", "127.0.0.1");
    })
    .await;
    let login = |lines: &'static [&'static [u8]]| {
        let mut req = app.client.post(format!("{}/v1/login", app.address)).body("{}");
        for line in lines {
            req = req.header("x-forwarded-for", reqwest::header::HeaderValue::from_bytes(line).unwrap());
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let cases: [(&str, &[&[u8]]); 4] = [
        ("an address with a port", &[b"1.1.1.1:5555"]),
        ("an IPv6 address with a port", &[b"[2001:db8::1]:443"]),
        ("a stray byte left of the client", &[b"caf\xe9, 2.2.2.2"]),
        ("a line of stray bytes before the proxy's", &[b"\xff\xfe", b"3.3.3.3"]),
    ];
    for (what, lines) in cases {
        // Each its own client, each within its limit: none lands in the proxy's bucket.
        assert_eq!(login(lines).await, 400, "{what}");
    }
    assert_eq!(login(&[]).await, 400, "the proxy's own first request");
    assert_eq!(login(&[]).await, 429, "the proxy's own second request");
    assert_eq!(login(&[b"1.1.1.1:6666"]).await, 429, "the same client with another port");
}

#[tokio::test]
async fn the_admin_socket_can_live_in_a_directory_of_its_own() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("run/wxauth/admin.sock");
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_SOCKET", socket.display().to_string());
    })
    .await;

    app.add_account("alice", PASSWORD).await;

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    bind_ok(&app, json!({"code": "code1@jo", "username": "alice", "password": PASSWORD})).await;
}

#[tokio::test]
async fn admin_commands_with_a_password_hash_outside_the_bounds_are_refused_and_change_nothing() {
    use wxauth::admin::{Command, Reply, send};
    let app = bind_mode(None).await;
    let good = wxauth::password::hash(&wxauth::domain::Password::new_for_account("another password").unwrap()).unwrap();
    let bad = [
        good.replace("m=19456", "m=4194304"),
        good.replace("t=2", "t=1000"),
        good.replace("p=1", "p=255"),
        good.replace("m=19456", "m=64"),
        good.replace("v=19", "v=16"),
        good.replace("argon2id", "argon2i"),
    ];
    for password_hash in bad {
        let commands = [
            Command::AddAccount { username: "mallory".into(), password_hash: password_hash.clone(), phone: None },
            Command::SetPassword { username: "alice".into(), password_hash: password_hash.clone() },
        ];
        for command in commands {
            let refused = send(&app.admin_socket(), &command).await;

            let err = refused.err().unwrap_or_else(|| panic!("{command:?} was accepted")).to_string();
            assert!(err.contains("password hash"), "{password_hash}: {err}");
        }
    }
    let Some(Reply::Users { users }) = send(&app.admin_socket(), &Command::ListAccounts).await.unwrap() else {
        panic!("no list of accounts");
    };
    let names: Vec<_> = users.iter().filter_map(|u| u.username.as_deref()).collect();
    assert_eq!(names, ["alice"]);
    bind_ok(&app, json!({"code": "code1@jo", "username": "alice", "password": PASSWORD})).await;
}
