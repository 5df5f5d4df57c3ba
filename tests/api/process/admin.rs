//! The `accounts` commands through the running server's admin socket and directly on a stopped
//! one, and the admin socket's guards against other local users.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::helpers::{Server, on_postgres, production, run_with_stdin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_managed_through_the_running_server_and_directly_when_it_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("WXAUTH_REGISTRATION".into(), "bind".into());
    let mut with_typo = vars.clone();
    with_typo.insert("WXAUTH_REGISTRATON".into(), "auto".into());
    let server = Server::start(&with_typo, &["serve"]);

    // Through the admin socket: the server holds the store.
    let (ok, stdout, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "correct horse battery\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("added account alice"), "{stdout}");
    assert!(stderr.contains("done by the running server"), "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "shorty"], "short\n");
    assert!(!ok && stderr.contains("at least 8 characters"), "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "another password\n");
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    // The account works at once, without a restart.
    let client = reqwest::Client::new();
    let (_, unbound) = server.login("code1@dora").await;
    let bind = json!({"bind_ticket": unbound["bind_ticket"], "username": "alice", "password": "correct horse battery"});
    let bound = client.post(format!("{}/v1/bind", server.address)).json(&bind).send().await.unwrap();
    assert_eq!(bound.status(), 200);
    let token = bound.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let phone = client.post(format!("{}/v1/me/phone", server.address)).bearer_auth(&token);
    assert_eq!(phone.json(&json!({"code": "c"})).send().await.unwrap().status(), 200);
    let (ok, stdout, _) = run_with_stdin(&vars, &["users", "show", "o_dora"], "");
    assert!(ok && stdout.contains("account     alice") && stdout.contains("o_dora"), "{stdout}");
    assert!(stdout.contains(&format!("phone       +86{}", crate::helpers::PHONE)), "{stdout}");
    let (ok, by_name, _) = run_with_stdin(&vars, &["users", "show", "alice"], "");
    assert!(ok && by_name == stdout, "{by_name}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["users", "show", "o_nobody"], "");
    assert!(!ok && stderr.contains("no user has"), "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "passwd", "alice"], "a new password\n");
    assert!(ok, "{stderr}");
    let log = server.stop();
    assert!(log.contains("WXAUTH_REGISTRATON") && log.contains("typo"), "an unknown variable went unnoticed");
    assert!(!log.contains("correct horse"), "a password reached the log");
    assert!(!log.contains(unbound["bind_ticket"].as_str().unwrap()), "a bind ticket reached the log");
    assert!(!dir.path().join("data/admin.sock").exists(), "the socket outlived the server");

    // No server and no store where the settings point: nothing is created by accident.
    if !on_postgres() {
        let mut elsewhere = vars.clone();
        elsewhere.insert("WXAUTH_DATA_DIR".into(), dir.path().join("typo").display().to_string());
        let (ok, _, stderr) = run_with_stdin(&elsewhere, &["accounts", "add", "carol"], "carols password\n");
        assert!(!ok && stderr.contains("there is no store"), "{stderr}");
        assert!(!dir.path().join("typo").exists());
    }

    // No server: the CLI opens the store itself.
    let (ok, stdout, stderr) = run_with_stdin(&vars, &["accounts", "list"], "");
    assert!(ok, "{stderr}");
    assert!(stderr.contains("changed the store directly"), "{stderr}");
    assert!(stdout.contains("alice") && stdout.contains("o_dora"), "{stdout}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "bob"], "bobs password\n");
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = run_with_stdin(&vars, &["accounts", "remove", "alice"], "");
    assert!(ok && stdout.contains("removed account alice"), "{stdout}");

    // The server sees what the CLI wrote while it was down, and the new password.
    let server = Server::start(&vars, &["serve"]);
    let (status, body) = server.login("code2@dora").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("not_bound")), "{body}");
    let bind = json!({"bind_ticket": body["bind_ticket"], "username": "bob", "password": "bobs password"});
    let bound = client.post(format!("{}/v1/bind", server.address)).json(&bind).send().await.unwrap();
    assert_eq!(bound.status(), 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_an_admin_socket_directory_another_user_could_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    let mut cases: Vec<(u32, Option<u32>, &str)> =
        vec![(0o777, None, "mode 0777"), (0o770, None, "mode 0770"), (0o1777, None, "mode 1777")];
    if rustix::process::geteuid().is_root() {
        cases.push((0o755, Some(65534), "belongs to uid 65534"));
    } else {
        eprintln!("skipped the directory of another owner: only root can give a directory away");
    }
    for (i, (mode, owner, reason)) in cases.into_iter().enumerate() {
        let sockets = dir.path().join(format!("sockets-{i}"));
        std::fs::create_dir(&sockets).unwrap();
        std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&sockets, owner, None).unwrap();
        vars.insert("WXAUTH_ADMIN_SOCKET".into(), sockets.join("admin.sock").display().to_string());

        let stderr = crate::helpers::refused_start(&vars, &["serve"]);

        let named = stderr.contains("WXAUTH_ADMIN_SOCKET") && stderr.contains(&sockets.display().to_string());
        assert!(named && stderr.contains(reason), "{reason}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_nothing_to_an_admin_socket_another_user_serves() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: only root can start a server as another user");
        return;
    }
    // A server of user 65534 (nobody) listening where this user's CLI looks.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = dir.path().join("nobody");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let vars: HashMap<String, String> = [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_owned()),
        ("WXAUTH_DATA_DIR", home.join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", home.join("keys").display().to_string()),
        ("WXAUTH_ADMIN_SOCKET", home.join("admin.sock").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut foreign = crate::helpers::command(&vars, &["serve", "--dev"]);
    foreign.uid(65534).gid(65534).current_dir(&home);
    let server = Server::spawn(foreign);

    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "correct horse battery\n");

    assert!(!ok, "the command was sent to another user's server");
    assert!(stderr.contains("uid 65534") && stderr.contains("WXAUTH_ADMIN_SOCKET"), "{stderr}");
    let log = server.stop();
    assert!(!log.contains("account added"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_get_phone_numbers_and_a_csv_import_adds_all_or_names_the_lines_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("WXAUTH_REGISTRATION".into(), "bind".into());
    let server = Server::start(&vars, &["serve"]);

    let (ok, _, stderr) =
        run_with_stdin(&vars, &["accounts", "add", "ann", "--phone", "+86 137 0000 0080", "--no-password"], "");
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "bo", "--no-password"], "");
    assert!(!ok && stderr.contains("--phone"), "--no-password without a number: {stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "set-phone", "ann"], "");
    assert!(!ok && stderr.contains("<PHONE>"), "{stderr}");

    let csv = dir.path().join("customers.csv");
    let bad = "username,phone,password_hash\nbea,13700000081\n\ncy,13700000080\ndee,not a number\nbea,13700000082,\n";
    std::fs::write(&csv, bad).unwrap();
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "import", csv.to_str().unwrap()], "");
    assert!(!ok && stderr.contains("nothing was imported"), "{stderr}");
    assert!(stderr.contains("line 4: account ann has this phone number"), "{stderr}");
    assert!(stderr.contains("line 5:") && stderr.contains("line 6: username bea is on line 2 too"), "{stderr}");
    assert!(!stderr.contains("line 2:"), "{stderr}");
    std::fs::write(&csv, "a,b,c,d\n").unwrap();
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "import", csv.to_str().unwrap()], "");
    assert!(!ok && stderr.contains("line 1: expected username,phone[,password_hash], got 4 fields"), "{stderr}");

    let good = "username,phone\nbea,13700000081\n\"cy\",\"+86 137-0000-0083\"\n";
    let (ok, stdout, stderr) = run_with_stdin(&vars, &["accounts", "import", "-"], good);
    assert!(ok && stdout.contains("imported 2 accounts"), "{stdout}{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "set-phone", "ann", "--clear"], "");
    assert!(!ok && stderr.contains("no password"), "a password-less account lost its number: {stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "set-phone", "ann", "13700000084"], "");
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = run_with_stdin(&vars, &["accounts", "list"], "");
    assert!(ok && stdout.contains("+8613700000081") && stdout.contains("+8613700000083"), "{stdout}");
    assert!(!stdout.contains("+8613700000080"), "ann kept her number: {stdout}");
    let (ok, stdout, _) = run_with_stdin(&vars, &["users", "show", "13700000083"], "");
    assert!(ok && stdout.contains("account     cy") && stdout.contains("acct phone  +8613700000083"), "{stdout}");

    let (_, unbound) = server.login("code1@dora").await;
    let bind = json!({"bind_ticket": unbound["bind_ticket"], "phone_code": "number-13700000081"});
    let bound = reqwest::Client::new().post(format!("{}/v1/bind", server.address)).json(&bind).send().await.unwrap();
    assert_eq!(bound.status(), 200);
    let log = server.stop();
    for number in ["13700000080", "13700000081", "13700000083"] {
        assert!(!log.contains(number), "a phone number reached the log");
    }
}
