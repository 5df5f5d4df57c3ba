//! The mini-program client (`clients/miniprogram`) and the verifier guides
//! (`clients/verifiers`) run against real wxauth servers, and the docs link exactly those
//! files. `.ci/run` installs Node, jose and PyJWT; elsewhere a missing tool skips its
//! test with a message, unless `CI` is set.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use wxauth::{domain::KeyMode, token::Activation};

use crate::helpers::{APPID, TestApp, spawn_app, spawn_dev_app, spawn_dev_app_with};

#[path = "../../clients/verifiers/rust/verify.rs"]
mod rust_verifier;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether `program` (and what it must import) works here. Missing in CI is a failure.
fn available(program: &str, check: &[&str], what: &str) -> bool {
    available_in(&repo(""), program, check, what)
}

/// [`available`], run in `dir` (where `node_modules` is).
fn available_in(dir: &Path, program: &str, check: &[&str], what: &str) -> bool {
    let ok = Command::new(program).current_dir(dir).args(check).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{what} is missing: .ci/run must install it");
        eprintln!("skipping: {what} is not installed (CI installs it; `bash .ci/run` does too)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mini_program_client_passes_its_tests_against_dev_servers() {
    if !available("node", &["--version"], "Node.js") {
        return;
    }
    let auto = spawn_dev_app().await;
    let bind = spawn_dev_app_with(&[("WXAUTH_REGISTRATION", "bind")]).await;
    let phone = spawn_dev_app_with(&[("WXAUTH_REGISTRATION", "phone")]).await;
    let mut account_users = Vec::new();
    for app in [&bind, &phone] {
        let added = app.add_account_with("js-phone", None, Some(ACCOUNT_PHONE)).await.unwrap();
        account_users.push(added["user"]["id"].as_str().unwrap().to_owned());
    }
    let (url, bind_url, phone_url) = (auto.address.clone(), bind.address.clone(), phone.address.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--test", "--test-reporter=spec"])
            .arg(repo("clients/miniprogram/wxauth.test.js"))
            .env("WXAUTH_URL", url)
            .env("WXAUTH_BIND_URL", bind_url)
            .env("WXAUTH_PHONE_URL", phone_url)
            .env("WXAUTH_ACCOUNT_PHONE", ACCOUNT_PHONE)
            .env("WXAUTH_BIND_ACCOUNT_USER", &account_users[0])
            .env("WXAUTH_PHONE_ACCOUNT_USER", &account_users[1])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client's tests failed:\n{report}");
    assert!(report.contains("concurrent requests that all get a 401 cause one refresh"), "{report}");
    assert!(report.contains("registration phone: the number of an existing account"), "{report}");
    assert!(report.contains("confirmScan logs the PC in as the person once"), "{report}");
}

/// The number of the account the client's phone tests bind to.
const ACCOUNT_PHONE: &str = "13912340000";

/// A verifier driver: writes a token per line, reads `ok <sub>` or `invalid <why>`.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn start(mut command: Command, app: &TestApp) -> Driver {
        let mut child = command
            .env("WXAUTH_ISSUER", &app.address)
            .env("WXAUTH_AUDIENCE", APPID)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
        Driver { child, stdin, stdout }
    }

    fn check(&mut self, token: &str) -> String {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{token}").unwrap();
            self.stdin.flush().unwrap();
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            line.trim().to_owned()
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One check of every verifier: `accepts(token)` → the user id, or an error text.
struct Verifiers {
    drivers: Vec<(&'static str, Driver)>,
    rust: rust_verifier::WxauthVerifier,
}

impl Verifiers {
    fn check(&mut self, token: &str) -> Vec<(&'static str, String)> {
        let mut results: Vec<(&'static str, String)> =
            self.drivers.iter_mut().map(|(name, d)| (*name, d.check(token))).collect();
        let rust = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(self.rust.verify(token)));
        let rust = rust.map(|c| {
            assert_eq!(c.appid, APPID);
            assert!(c.openid.starts_with("o_"), "{}", c.openid);
            format!("ok {}", c.sub)
        });
        results.push(("rust", rust.unwrap_or_else(|e| format!("invalid {e}"))));
        results
    }
}

fn tampered(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.len() - 5;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_guides_check_tokens_and_follow_a_key_rotation() {
    let node = available_in(
        &repo("clients/verifiers/node"),
        "node",
        &["--input-type=module", "-e", "import 'jose'"],
        "Node.js with jose (npm ci in clients/verifiers/node)",
    );
    let python = available("python3", &["-c", "import jwt, cryptography"], "Python with PyJWT[crypto]");
    let app = spawn_app().await;
    let login = app.login_ok("verified").await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let sub = login["user"]["id"].as_str().unwrap().to_owned();

    let mut drivers = Vec::new();
    if node {
        let mut command = Command::new("node");
        command.arg(repo("clients/verifiers/node/check.mjs"));
        drivers.push(("node", Driver::start(command, &app)));
    }
    if python {
        let mut command = Command::new("python3");
        command.arg(repo("clients/verifiers/python/check.py"));
        drivers.push(("python", Driver::start(command, &app)));
    }
    let rust = rust_verifier::WxauthVerifier::new(&app.address, APPID, Duration::ZERO).await.unwrap();
    let mut verifiers = Verifiers { drivers, rust };

    let names: Vec<&str> = verifiers.drivers.iter().map(|(n, _)| *n).collect();
    eprintln!("verifiers run: {names:?} and rust");
    for (name, result) in verifiers.check(&token) {
        assert_eq!(result, format!("ok {sub}"), "{name}");
    }
    for (name, result) in verifiers.check(&tampered(&token)) {
        assert!(result.starts_with("invalid"), "{name} accepted a tampered token: {result}");
    }
    // A refresh token is not an access token, whatever a verifier is given.
    for (name, result) in verifiers.check(login["refresh_token"].as_str().unwrap()) {
        assert!(result.starts_with("invalid"), "{name}: {result}");
    }

    // A key the verifiers have never seen: they fetch the JWKS again.
    wxauth::token::rotate(
        &crate::helpers::keys_dir(&app.dir),
        wxauth::domain::SigningAlg::ES256,
        KeyMode::Production,
        Activation::Now,
    )
    .unwrap();
    app.auth.tokens().reload().unwrap();
    let rotated = app.login_ok("verified").await["access_token"].as_str().unwrap().to_owned();
    assert_ne!(jsonwebtoken::decode_header(&rotated).unwrap().kid, jsonwebtoken::decode_header(&token).unwrap().kid);
    for (name, result) in verifiers.check(&rotated) {
        assert_eq!(result, format!("ok {sub}"), "{name} did not follow the rotation");
    }
}

/// Every file of `clients/` a test runs, with the file that runs it and the text there that
/// does: the docs link these files instead of copying them, so what a reader copies is what
/// the tests run.
const RUN: [(&str, &str, &str); 10] = [
    ("clients/miniprogram/wxauth.js", "clients/miniprogram/wxauth.test.js", "require('./wxauth.js')"),
    ("clients/miniprogram/wxauth.test.js", "tests/api/clients.rs", "clients/miniprogram/wxauth.test.js"),
    ("clients/verifiers/node/verify.mjs", "clients/verifiers/node/check.mjs", "from './verify.mjs'"),
    ("clients/verifiers/node/check.mjs", "tests/api/clients.rs", "clients/verifiers/node/check.mjs"),
    ("clients/verifiers/node/package.json", ".ci/run", "cd clients/verifiers/node && npm ci"),
    ("clients/verifiers/python/verify.py", "clients/verifiers/python/check.py", "from verify import"),
    ("clients/verifiers/python/check.py", "tests/api/clients.rs", "clients/verifiers/python/check.py"),
    ("clients/verifiers/python/requirements.txt", ".ci/run", "-r clients/verifiers/python/requirements.txt"),
    (
        "clients/verifiers/rust/verify.rs",
        "tests/api/clients.rs",
        "#[path = \"../../clients/verifiers/rust/verify.rs\"]",
    ),
    ("clients/webhooks/receiver.py", "tests/api/webhooks.rs", "/clients/webhooks/receiver.py"),
];

#[test]
fn the_docs_link_the_client_and_verifier_files_and_every_file_they_link_there_is_run_by_a_test() {
    for (file, runner, how) in RUN {
        let text = std::fs::read_to_string(repo(runner)).unwrap();
        assert!(text.contains(how), "{runner} no longer runs {file} (through `{how}`): correct RUN");
    }
    let linked: Vec<PathBuf> = crate::markdown::all_links()
        .into_iter()
        .map(|link| link.path)
        .filter(|path| path.starts_with("clients"))
        .collect();
    for path in &linked {
        assert!(
            !repo(&path.to_string_lossy()).is_file() || RUN.iter().any(|(file, ..)| Path::new(file) == path),
            "the docs link {}, which no test runs: run it, and add it to RUN",
            path.display()
        );
    }
    for shown in [
        "clients/miniprogram/wxauth.js",
        "clients/verifiers/node/verify.mjs",
        "clients/verifiers/python/verify.py",
        "clients/verifiers/rust/verify.rs",
        "clients/webhooks/receiver.py",
    ] {
        assert!(linked.iter().any(|path| path == Path::new(shown)), "no page of the docs links {shown}");
    }
}
