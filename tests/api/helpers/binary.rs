//! The real binary, for tests of start-up, signals, crashes and logs (`process/`).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use serde_json::{Value, json};

use super::{MockWechat, base_vars};

pub const BIN: &str = env!("CARGO_BIN_EXE_wxauth");

pub fn command(vars: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    with_settings(cmd, vars)
}

/// `cmd` with `vars` as its only `WXAUTH_` settings.
pub fn with_settings(mut cmd: Command, vars: &HashMap<String, String>) -> Command {
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("WXAUTH_") || n == "RUST_LOG") {
        cmd.env_remove(name);
    }
    cmd.envs(vars);
    cmd
}

pub fn run(vars: &HashMap<String, String>, args: &[&str]) -> Output {
    command(vars, args).output().unwrap()
}

/// A `wxauth serve` child process with its combined log output captured.
pub struct Server {
    pub child: Child,
    pub address: String,
    pub log: Arc<Mutex<String>>,
}

/// A test that fails or times out must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(vars: &HashMap<String, String>, args: &[&str]) -> Server {
        Server::spawn(command(vars, args))
    }

    /// Runs `command`, which must start a server, and waits for its "listening" line.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr: String =
                            rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                        let _ = tx.send(format!("http://{addr}"));
                    }
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not start:\n{}", log.lock().unwrap()));
        Server { child, address, log }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// SIGTERM, wait for exit, and return everything it logged.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        assert!(self.child.wait().unwrap().success(), "unclean exit:\n{}", self.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        self.log.lock().unwrap().clone()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn login(&self, code: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/login", self.address))
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Waits until `/readyz` answers 200, failing the test after `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let started = std::time::Instant::now();
        loop {
            let (status, body) = self.get("/readyz", None).await;
            if status == 200 {
                return;
            }
            assert!(started.elapsed() < within, "not ready after {within:?}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.address));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

pub async fn production(dir: &Path) -> (MockWechat, HashMap<String, String>) {
    let wechat = MockWechat::start().await;
    let mut vars = base_vars(dir, &wechat);
    // Fixed: the default issuer names the bound address, and port 0 changes on restart.
    vars.insert("WXAUTH_ISSUER".into(), "https://auth.example.com".into());
    let out = run(&vars, &["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (wechat, vars)
}

/// Runs `wxauth <args>`, which must fail within 30 s (a server that starts instead is
/// killed); its stderr.
pub fn refused_start(vars: &HashMap<String, String>, args: &[&str]) -> String {
    let mut child = command(vars, args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the server started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `wxauth <args>` with `stdin` as its standard input; returns status, stdout, stderr.
pub fn run_with_stdin(vars: &HashMap<String, String>, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child =
        command(vars, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}
