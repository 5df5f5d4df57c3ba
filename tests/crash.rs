//! Crash test: the release binary, SIGKILLed at random moments under concurrent first
//! logins, then restarted. Every login acknowledged before a kill must map to the same user
//! afterwards, and every restart must open cleanly.
//!
//! Slow and meant for the release build, hence ignored by `cargo test`. Run it with
//! `cargo test --release --test crash -- --ignored --nocapture` (CI does).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_wxauth");
const CYCLES: usize = 20;
const CLIENTS: usize = 32;

/// A random number below `n`, from the operating system's generator (through UUIDs).
fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64
}

/// Starts `wxauth serve --dev` on the directory and returns it with its address.
fn start(dir: &std::path::Path) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("WXAUTH_") || n == "RUST_LOG") {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .args(["serve", "--dev"])
        .env("WXAUTH_LISTEN", "127.0.0.1:0")
        .env("WXAUTH_DATA_DIR", dir.join("data"))
        .env("WXAUTH_KEYS_DIR", dir.join("keys"))
        .env("RUST_LOG", "warn,wxauth::startup=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                let _ = tx.send(format!("http://{addr}"));
            }
            lines.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the server did not open cleanly:\n{}", log.lock().unwrap()));
    (child, address)
}

/// Logs `code` in; the user id if the server acknowledged it.
async fn login(client: &reqwest::Client, address: &str, code: &str) -> Option<(String, bool)> {
    let resp = client.post(format!("{address}/v1/login")).json(&json!({ "code": code })).send().await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    Some((body["user"]["id"].as_str()?.to_owned(), body["user"]["created"].as_bool()?))
}

/// Checks that every acknowledged person still maps to their user.
async fn verify(client: &reqwest::Client, address: &str, acknowledged: &HashMap<String, String>, round: usize) {
    for (person, id) in acknowledged {
        let again = login(client, address, &format!("check{round}@{person}")).await;
        assert_eq!(again, Some((id.clone(), false)), "{person} lost its user {id} (round {round})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: run with cargo test --release --test crash -- --ignored"]
async fn acknowledged_first_logins_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let acknowledged: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let (mut server, address) = start(dir.path());
        // What the previous cycle acknowledged just before its kill (all of it at the end).
        let previous: HashMap<String, String> = acknowledged
            .lock()
            .unwrap()
            .iter()
            .filter(|(person, _)| cycle > 0 && person.starts_with(&format!("p{}x", cycle - 1)))
            .map(|(p, id)| (p.clone(), id.clone()))
            .collect();
        verify(&client, &address, &previous, cycle).await;

        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (client, address, acknowledged) = (client.clone(), address.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        let person = format!("p{cycle}x{c}x{n}");
                        match login(&client, &address, &format!("first@{person}")).await {
                            Some((id, true)) => _ = acknowledged.lock().unwrap().insert(person, id),
                            Some((id, false)) => panic!("{person} existed before its first login: {id}"),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50 + random_below(400))).await;
        server.kill().unwrap();
        server.wait().unwrap();
        for c in clients {
            c.await.unwrap();
        }
    }
    let (mut server, address) = start(dir.path());
    let all = acknowledged.lock().unwrap().clone();
    verify(&client, &address, &all, CYCLES).await;
    server.kill().unwrap();
    server.wait().unwrap();
    println!(
        "{CYCLES} SIGKILLs, {} acknowledged first logins, all found again after restarts ({:.1} s)",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(all.len() > CYCLES * 10, "too few logins to prove anything: {}", all.len());
}
