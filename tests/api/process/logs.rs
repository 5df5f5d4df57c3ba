//! Log hygiene of the real binary: no secret in logs or answers, at any log level.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Reply, SECRET, Server, default_session_key, production};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_or_responses() {
    let dir = tempfile::tempdir().unwrap();
    let (wechat, mut vars) = production(dir.path()).await;
    // The most specific targets too: they must not get past the cap on HTTP crates.
    vars.insert("RUST_LOG".into(), "trace,reqwest::connect=trace,hyper_util::client=trace,hyper=trace".into());
    vars.insert("WXAUTH_WECHAT_TIMEOUT_MS".into(), "300".into());
    let codes = ["CODE-7f3a9c@kim", "CODE-b81e44@lee", "CODE-0c9d2e@moe", "CODE-5a6b7c@nan", "CODE-d4e5f6@ola"];
    wechat.script(codes[1], [Reply::errcode(40029)]);
    wechat.script(
        codes[2],
        [Reply::Body(format!("{{\"openid\":\"o_x\",\"session_key\":\"{}\"", default_session_key(codes[2])))],
    );
    wechat.script(
        codes[3],
        [Reply::Delay(Duration::from_secs(2), Box::new(Reply::success("o_y", &default_session_key(codes[3]))))],
    );
    wechat.script(codes[4], [Reply::errcode(40125)]);
    let server = Server::start(&vars, &["serve"]);

    let mut responses = String::new();
    let mut tokens = Vec::new();
    for code in codes {
        let (_, body) = server.login(code).await;
        responses.push_str(&body.to_string());
        if let Some(token) = body["access_token"].as_str() {
            tokens.push(token.to_owned());
        }
    }
    assert_eq!(tokens.len(), 1);
    let (status, me) = server.get("/v1/me", Some(&tokens[0])).await;
    assert_eq!(status, 200);
    responses.push_str(&me);
    let (_, me) = server.get("/v1/me", Some("forged.token.value")).await;
    responses.push_str(&me);
    // Credentials where they do not belong: in query strings, which request logs love.
    let query_code = "QUERYCODE-31337";
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/login?code={query_code}", server.address))
        .json(&json!({"code": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = server.get(&format!("/v1/me?access_token={}", tokens[0]), None).await;
    assert_eq!(status, 401);
    // A path holding a token: the access log keeps only its first 200 bytes.
    let long_path = format!("/{}/{}", "p".repeat(300), tokens[0]);
    assert_eq!(server.get(&long_path, None).await.0, 404);
    let log = server.stop();
    let logged = log.lines().find(|l| l.contains("\"/pppp")).unwrap_or_else(|| panic!("not logged:\n{log}"));
    assert!(!logged.contains(&"p".repeat(300)), "the path was not cut: {logged}");

    assert!(log.contains("code2Session"), "the test captured no WeChat log lines:\n{log}");
    assert!(log.contains("did not answer in time"), "the WeChat timeout was not logged:\n{log}");
    assert!(log.contains("/v1/login") && log.contains("wxauth::access"), "no access log:\n{log}");
    let mut secrets = vec![SECRET.to_owned(), "secret=".to_owned(), tokens[0].clone(), query_code.to_owned()];
    secrets.extend(codes.iter().map(|c| c.to_string()));
    // As they would appear in a logged query string.
    secrets.extend(codes.iter().map(|c| c.replace('@', "%40")));
    secrets.extend(codes.iter().map(|c| default_session_key(c)));
    // On PostgreSQL, the database password (trace logging includes sqlx's own lines).
    if let Some(url) = vars.get("WXAUTH_DATABASE_URL") {
        let password = url::Url::parse(url).unwrap().password().expect("the test URL has a password").to_owned();
        assert!(log.contains("WXAUTH_DATABASE_URL=postgres://"), "the store was not logged:\n{log}");
        secrets.push(password);
    }
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "log contains {secret:?}:\n{log}");
    }
    // Responses carry the token by design; nothing else on the list.
    for secret in secrets.iter().filter(|s| **s != tokens[0] && *s != query_code) {
        assert!(!responses.contains(secret.as_str()), "a response contains {secret:?}: {responses}");
    }
    // The session key of the successful login must not leak through the token either.
    let payload = tokens[0].split('.').nth(1).unwrap();
    use base64::Engine;
    let claims = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(!claims.contains(&default_session_key(codes[0])), "{claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logging_leaves_out_the_http_crates_and_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("RUST_LOG".into(), "debug".into());
    let server = Server::start(&vars, &["serve"]);
    let code = "CODE-debug-31337@pia";
    let (status, login) = server.login(code).await;
    assert_eq!(status, 200);
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/v1/me", Some(&token)).await.0, 200);

    let log = server.stop();

    assert!(log.contains("code2Session succeeded"), "debug lines of wxauth itself are missing:\n{log}");
    let chatty = ["hyper", "hyper_util", "reqwest", "h2", "rustls", "poem"];
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let event: Value = serde_json::from_str(line).unwrap();
        let level = event["level"].as_str().unwrap_or_default();
        if matches!(level, "DEBUG" | "TRACE") {
            for target in [&event["target"], &event["log.target"]].into_iter().filter_map(Value::as_str) {
                let krate = target.split("::").next().unwrap();
                assert!(!chatty.contains(&krate), "a {level} line of {target} got through the cap: {line}");
            }
        }
    }
    for secret in [SECRET, "secret=", code, &code.replace('@', "%40"), &default_session_key(code), &token] {
        assert!(!log.contains(secret), "the debug log holds {secret:?}:\n{log}");
    }
}

/// A server whose stderr nobody reads (a full pipe, a stalled log collector) keeps
/// answering: the log's lines wait in a bounded buffer, and those past it are dropped and
/// counted. A log written on the request's thread would stop every worker at the first
/// full pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_costs_log_lines_not_answers() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let mut child = crate::helpers::command(&vars, &["serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read up to the "listening" line, then never again: the pipe fills.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let _reaper = Reaper(child);
    let mut address = None;
    let mut line = String::new();
    while address.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
        address = line.split("listening on ").nth(1).map(|a| a.split_whitespace().next().unwrap().to_owned());
        line.clear();
    }
    let address = address.expect("no listening line");
    let client = reqwest::Client::new();
    // Each request writes an access line: more than the pipe and the buffer hold.
    let requests = wxauth::telemetry::LOG_BUFFER_LINES + 4_000;
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..16 {
            let (client, url) = (client.clone(), format!("{address}/healthz"));
            tasks.spawn(async move {
                for _ in (worker..requests).step_by(16) {
                    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await;
    assert!(answered.is_ok(), "requests stopped being answered when stderr filled up");
    let metrics = client.get(format!("{address}/metrics")).send().await.unwrap().text().await.unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wxauth_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no drop count in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(dropped > 0, "no line counted as dropped");
    drop(stderr);
}

/// Kills the child when the test ends, however it ends.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
