//! `wxauth store export` and `import`: a store moves sled → PostgreSQL → sled through the
//! real binary, and nothing is lost.

use std::collections::{BTreeSet, HashMap};
use wxauth::store::export::FORMAT;

use serde_json::{Value, json};

use crate::helpers::{PHONE, Server, production, run_with_stdin};

/// Runs `wxauth store export`; its stdout.
fn export(vars: &HashMap<String, String>) -> String {
    let (ok, stdout, stderr) = run_with_stdin(vars, &["store", "export"], "");
    assert!(ok, "export failed: {stderr}");
    stdout
}

fn import(vars: &HashMap<String, String>, lines: &str) -> (bool, String) {
    let (ok, _, stderr) = run_with_stdin(vars, &["store", "import"], lines);
    (ok, stderr)
}

fn on_sled(vars: &HashMap<String, String>, data_dir: &std::path::Path) -> HashMap<String, String> {
    let mut vars = vars.clone();
    vars.remove("WXAUTH_DATABASE_URL");
    vars.insert("WXAUTH_STORE".into(), "sled".into());
    vars.insert("WXAUTH_DATA_DIR".into(), data_dir.display().to_string());
    vars
}

fn on_postgres(vars: &HashMap<String, String>, url: &str) -> HashMap<String, String> {
    let mut vars = vars.clone();
    vars.remove("WXAUTH_DATA_DIR");
    vars.insert("WXAUTH_STORE".into(), "postgres".into());
    vars.insert("WXAUTH_DATABASE_URL".into(), url.into());
    vars
}

async fn post(server: &Server, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{}{path}", server.address)).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_else(|| panic!("no {field} in {v}")).to_owned()
}

/// A sled store holding every kind of record: users with session keys, a unionid, an
/// account, a phone number, a bind ticket, live and revoked refresh families, a logout-all.
/// Returns the bind ticket.
/// The number of the account `bea`, which has no password.
const BEA: &str = "13700000090";

async fn a_full_store(vars: &HashMap<String, String>) -> String {
    let server = Server::start(vars, &["serve"]);
    let (status, ann) = server.login("c@ann").await;
    assert_eq!(status, 200, "{ann}");
    let (_, union) = server.login("union@una").await;
    let token = text(&ann, "access_token");
    assert_eq!(post(&server, "/v1/me/phone", Some(&token), json!({"code": "c"})).await.0, 200);
    // A rotation (the old token spent), then a logout (the family revoked).
    let (status, rotated) =
        post(&server, "/v1/token/refresh", None, json!({"refresh_token": ann["refresh_token"]})).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(post(&server, "/v1/logout", None, json!({"refresh_token": rotated["refresh_token"]})).await.0, 204);
    assert_eq!(post(&server, "/v1/me/logout-all", Some(&text(&union, "access_token")), json!({})).await.0, 204);
    // A live refresh token: the others are dead, and purged.
    assert_eq!(server.login("c@ben").await.0, 200);
    let (ok, _, stderr) = run_with_stdin(vars, &["accounts", "add", "alice"], "correct horse battery\n");
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run_with_stdin(vars, &["accounts", "add", "bea", "--phone", BEA, "--no-password"], "");
    assert!(ok, "{stderr}");
    // An operator's roles, claims and ban, through the running server.
    for command in [
        &["users", "set-roles", "alice", "staff", "shop:42"][..],
        &["users", "set-claims", "alice", r#"{"tier":"gold"}"#],
        &["users", "ban", "o_una", "--reason", "chargebacks", "--until", "2200-01-01T00:00:00+08:00"],
    ] {
        let (ok, stdout, stderr) = run_with_stdin(vars, command, "");
        assert!(ok && stderr.contains("done by the running server"), "{command:?}: {stderr}");
        assert!(stdout.contains("staff") || stdout.contains("gold") || stdout.contains("chargebacks"), "{stdout}");
    }
    // Admin tokens, one of them revoked.
    for command in [&["admin-tokens", "create", "support", "--role", "write"][..], &["admin-tokens", "create", "gone"]]
    {
        let (ok, stdout, stderr) = run_with_stdin(vars, command, "");
        assert!(ok && stdout.starts_with("wxa_"), "{command:?}: {stderr}");
    }
    let (ok, _, stderr) = run_with_stdin(vars, &["admin-tokens", "revoke", "gone"], "");
    assert!(ok, "{stderr}");
    server.stop();

    // Bind mode leaves a ticket for an unbound person.
    let mut bind = vars.clone();
    bind.insert("WXAUTH_REGISTRATION".into(), "bind".into());
    let server = Server::start(&bind, &["serve"]);
    let (status, unbound) = server.login("c@tess").await;
    assert_eq!(status, 403, "{unbound}");
    server.stop();
    text(&unbound, "bind_ticket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_from_sled_to_postgres_and_back_and_nothing_is_lost() {
    let Some(database) = crate::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let sled = on_sled(&vars, &dir.path().join("data"));
    let pg = on_postgres(&vars, &database);
    let ticket = a_full_store(&sled).await;

    let from_sled = export(&sled);
    let kinds: BTreeSet<String> = from_sled
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].as_str().unwrap().to_owned())
        .collect();
    let expected = [
        "header",
        "mode",
        "user",
        "unionid",
        "account",
        "details",
        "ticket",
        "refresh_family",
        "admin_token",
        "event",
        "end",
    ];
    assert_eq!(kinds, expected.iter().map(|k| k.to_string()).collect(), "{from_sled}");
    for secret in [PHONE, BEA, &crate::helpers::default_session_key("c@ann"), "correct horse"] {
        assert!(!from_sled.contains(secret), "the export holds {secret:?} in plaintext");
    }

    let (ok, stderr) = import(&pg, &from_sled);
    assert!(ok, "{stderr}");
    assert!(stderr.contains(&format!("imported {} records", from_sled.lines().count())), "{stderr}");
    let from_postgres = export(&pg);
    assert_eq!(from_postgres, from_sled, "PostgreSQL gave back something else");

    let back = on_sled(&vars, &dir.path().join("data-again"));
    let (ok, stderr) = import(&back, &from_postgres);
    assert!(ok, "{stderr}");
    assert_eq!(export(&back), from_sled, "sled gave back something else");

    // The moved store serves the same people, with what they shared and their ticket.
    let mut bind = pg.clone();
    bind.insert("WXAUTH_REGISTRATION".into(), "bind".into());
    let server = Server::start(&bind, &["serve"]);
    let (status, ann) = server.login("again@ann").await;
    assert_eq!((status, &ann["user"]["created"]), (200, &json!(false)), "{ann}");
    let (_, me) = server.get("/v1/me", Some(&text(&ann, "access_token"))).await;
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["phone"]["pure_phone_number"], PHONE, "{me}");
    let body = json!({"bind_ticket": ticket, "username": "alice", "password": "correct horse battery"});
    let (status, bound) = post(&server, "/v1/bind", None, body).await;
    assert_eq!(status, 200, "{bound}");
    assert_eq!(claims_of(&bound)["roles"], json!(["shop:42", "staff"]), "{bound}");
    assert_eq!(claims_of(&bound)["tier"], "gold");
    let (status, banned) = server.login("again@una").await;
    assert_eq!((status, text(&banned, "error")), (403, "user_banned".into()), "{banned}");
    assert_eq!(banned["until"], "2199-12-31T16:00:00Z");
    // An account's phone number moved with it, still found by its keyed hash.
    let (_, unbound) = server.login("c@zoe").await;
    let body = json!({"bind_ticket": unbound["bind_ticket"], "phone_code": format!("number-{BEA}")});
    let (status, bound) = post(&server, "/v1/bind", None, body).await;
    assert_eq!(status, 200, "{bound}");
    server.stop();
    let (ok, listed, stderr) = run_with_stdin(&pg, &["admin-tokens", "list"], "");
    assert!(ok, "{stderr}");
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert!(rows.len() == 2 && rows[0].starts_with("gone") && !rows[0].ends_with(" -"), "{listed}");
    assert!(rows[1].starts_with("support ") && rows[1].contains("write") && rows[1].ends_with(" -"), "{listed}");
}

fn claims_of(login: &Value) -> Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let token = text(login, "access_token");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_takes_all_or_nothing_into_an_empty_store_sealed_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let source = on_sled(&vars, &dir.path().join("data"));
    let server = Server::start(&source, &["serve"]);
    assert_eq!(server.login("c@ann").await.0, 200);
    assert_eq!(server.login("c@ben").await.0, 200);
    server.stop();
    let good = export(&source);
    let lines: Vec<&str> = good.lines().collect();
    let with = |i: usize, line: &str| {
        let mut l = lines.clone();
        l[i] = line;
        l.join("\n") + "\n"
    };
    // A user twice, just before the last line.
    let mut twice = lines.clone();
    twice.insert(lines.len() - 1, lines[2]);
    let duplicate = format!("line {}", lines.len());
    let join = |lines: &[&str]| lines.join("\n") + "\n";
    // A unionid of a user the export does not hold, just before the last line.
    let mut orphan = lines.clone();
    orphan.insert(
        lines.len() - 1,
        r#"{"record":"unionid","unionid":"u_orphan","user":"00000000-0000-0000-0000-000000000001"}"#,
    );
    let end = *lines.last().unwrap();
    assert!(end.starts_with(r#"{"record":"end""#), "{end}");
    let bad = [
        (with(3, "{not json"), "line 4"),
        (with(3, r#"{"record":"unknown"}"#), "line 4"),
        (with(0, lines[1]), "header"),
        (with(0, &lines[0].replace(&format!(r#""format":{FORMAT}"#), r#""format":1"#)), "format 1"),
        (with(0, &lines[0].replace(r#""sealing_key":""#, r#""sealing_key":"0"#)), "session-keys.secret"),
        (join(&twice), duplicate.as_str()),
        (join(&orphan), duplicate.as_str()),
        (String::new(), "header"),
        // Cut short: every line but the last, or a last line that miscounts.
        (join(&lines[..lines.len() - 1]), "cut short"),
        (join(&lines[..lines.len() - 2]), "cut short"),
        (with(lines.len() - 1, &end.replace(&format!("{}", lines.len() - 1), "2")), "counts 2 records"),
        (join(&[&lines[..], &[lines[1]]].concat()), "after the last line"),
    ];
    let mut targets = vec![on_sled(&vars, &dir.path().join("target"))];
    targets.extend(crate::postgres::fresh_database().map(|url| on_postgres(&vars, &url)));
    for target in &targets {
        for (input, expected) in &bad {
            let (ok, stderr) = import(target, input);
            assert!(!ok && stderr.contains(expected), "{expected}: {stderr}");
            // Nothing stayed behind: the good export goes in afterwards.
            assert_eq!(export(target).lines().count(), 2, "{expected}: the failed import left records");
        }
        let (ok, stderr) = import(target, &good);
        assert!(ok, "{stderr}");
        assert_eq!(export(target), good);
        // Only into an empty store.
        let (ok, stderr) = import(target, &good);
        assert!(!ok && stderr.contains("already holds data"), "{stderr}");
    }

    // Another keys directory: its key does not open the export's session keys.
    let mut elsewhere = on_sled(&vars, &dir.path().join("elsewhere"));
    elsewhere.insert("WXAUTH_KEYS_DIR".into(), dir.path().join("other-keys").display().to_string());
    let (ok, stderr) = import(&elsewhere, &good);
    assert!(!ok && stderr.contains("session-keys.secret") && stderr.contains("WXAUTH_KEYS_DIR"), "{stderr}");
    assert!(!dir.path().join("other-keys").exists(), "the import made a key of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_refuses_an_account_with_a_bad_username_or_password_hash_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let source = on_sled(&vars, &dir.path().join("data"));
    let server = Server::start(&source, &["serve"]);
    let (ok, _, stderr) = run_with_stdin(&source, &["accounts", "add", "alice"], "correct horse battery\n");
    assert!(ok, "{stderr}");
    server.stop();
    let good = export(&source);
    let lines: Vec<&str> = good.lines().collect();
    let at = lines.iter().position(|l| l.contains(r#""record":"account""#)).expect("no account line");
    let account: Value = serde_json::from_str(lines[at]).unwrap();
    let hash = text(&account, "password_hash");
    let (costs, rest) = hash.split_at(hash.find("$m=").unwrap());
    let rest = &rest[rest[1..].find('$').unwrap() + 1..];
    let with_costs = |c: &str| format!("{costs}${c}{rest}");
    let cases = [
        ("username", json!("al ice"), "username"),
        ("username", json!(""), "username"),
        ("username", json!("a".repeat(65)), "username"),
        ("password_hash", json!("correct horse battery"), "password hash"),
        ("password_hash", json!(with_costs("m=4194304,t=1,p=1")), "m (memory"),
        ("password_hash", json!(with_costs("m=19456,t=1000,p=1")), "t (passes"),
        ("password_hash", json!(with_costs("m=19456,t=2,p=255")), "p (lanes"),
        ("password_hash", json!(hash.replace("v=19", "v=16")), "version"),
    ];
    let mut targets = vec![on_sled(&vars, &dir.path().join("target"))];
    targets.extend(crate::postgres::fresh_database().map(|url| on_postgres(&vars, &url)));
    for target in &targets {
        for (field, value, expected) in &cases {
            let mut changed = account.clone();
            changed[*field] = value.clone();
            let mut edited = lines.clone();
            let line = changed.to_string();
            edited[at] = &line;

            let (ok, stderr) = import(target, &(edited.join("\n") + "\n"));

            let named = stderr.contains(&format!("line {}", at + 1)) && stderr.contains(expected);
            assert!(!ok && named, "{field} {value}: {stderr}");
        }
        let (ok, stderr) = import(target, &good);
        assert!(ok, "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_to_a_file_is_private_to_its_user_and_never_replaces_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let source = on_sled(&vars, &dir.path().join("data"));
    let server = Server::start(&source, &["serve"]);
    assert_eq!(server.login("c@ann").await.0, 200);
    server.stop();
    let file = dir.path().join("wxauth.jsonl");
    let output = file.display().to_string();

    let (ok, stdout, stderr) = run_with_stdin(&source, &["store", "export", "--output", &output], "");

    assert!(ok, "{stderr}");
    assert_eq!(stdout, "", "the export went to stdout too");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, export(&source), "the file differs from the export on stdout");
    // A second export does not replace the first, nor a file of the same name.
    let (ok, _, stderr) = run_with_stdin(&source, &["store", "export", "-o", &output], "");
    assert!(!ok && stderr.contains(&output) && stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    // A failed export leaves no file behind.
    let missing = dir.path().join("failed.jsonl");
    let nowhere = on_sled(&vars, &dir.path().join("no-such-store"));
    let (ok, _, _) = run_with_stdin(&nowhere, &["store", "export", "-o", &missing.display().to_string()], "");
    assert!(!ok && !missing.exists(), "a failed export left {}", missing.display());
}
