//! The release binary as a child process, as an operator runs it, with its log parsed for
//! the listening address and the store's shutdown statistics.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_wxauth");

/// A running `wxauth serve`.
pub struct Server {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// What the store reported when it closed.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    /// Group commits (durable flushes).
    pub group_commits: u64,
    /// `fdatasync` calls.
    pub fsyncs: u64,
}

fn command(dir: &Path, wechat: &str, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("WXAUTH_") || n == "RUST_LOG") {
        cmd.env_remove(name);
    }
    cmd.envs([
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
        ("WXAUTH_ISSUER", "http://127.0.0.1:8080".to_string()),
        ("WXAUTH_AUDIENCE", "bench".to_string()),
        ("WXAUTH_DATA_DIR", dir.join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", dir.join("keys").display().to_string()),
        ("WXAUTH_WECHAT_APPID", "wxbench0000000000".to_string()),
        ("WXAUTH_WECHAT_SECRET", "bench-secret-0123456789abcdef".to_string()),
        ("WXAUTH_WECHAT_BASE_URL", wechat.to_string()),
        ("WXAUTH_LOG_FORMAT", "json".to_string()),
        ("RUST_LOG", "warn,wxauth::startup=info,wxauth::store=info".to_string()),
    ]);
    // The one setting a bench run may vary, to see what the cache does to speed and memory.
    if let Ok(mb) = std::env::var("WXAUTH_STORE_CACHE_MB") {
        cmd.env("WXAUTH_STORE_CACHE_MB", mb);
    }
    cmd.envs(extra.iter().copied());
    cmd
}

impl Server {
    /// Creates a key if `dir` has none, starts the server on `dir/data` and waits until it listens.
    pub fn start(dir: &Path, wechat: &str) -> Server {
        Self::start_with(dir, wechat, &[])
    }

    /// Like [`Server::start`], with more settings (another store, another admin socket).
    pub fn start_with(dir: &Path, wechat: &str, extra: &[(&str, &str)]) -> Server {
        let keys = std::fs::read_dir(dir.join("keys"));
        let has_key = keys.is_ok_and(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "pem")));
        if !has_key {
            let out = command(dir, wechat, &["keys", "rotate"], extra).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut child = command(dir, wechat, &["serve"], extra).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("server: {line}");
                    continue;
                };
                let message = event["message"].as_str().unwrap_or_default();
                if let Some(rest) = message.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                } else if event["level"] != "INFO" {
                    eprintln!("server: {line}");
                }
                lines.lock().unwrap().push(event);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).expect("the server did not start");
        Server { child, addr, log }
    }

    /// Resident set size in MB, from `/proc`.
    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// Stops with SIGTERM (a clean shutdown) and returns the store's statistics.
    pub fn stop(mut self) -> StoreStats {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap();
        let closed = log.iter().find(|e| e["message"] == "store closed");
        closed.map_or_else(StoreStats::default, |e| StoreStats {
            group_commits: e["group_commits"].as_u64().unwrap_or(0),
            fsyncs: e["fsyncs"].as_u64().unwrap_or(0),
        })
    }
}

/// Bytes under `path`, recursively.
pub fn disk_usage(path: &Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => disk_usage(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}
