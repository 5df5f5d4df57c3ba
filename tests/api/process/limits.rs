//! The real binary's open-file limit: raised at start, and running out pauses the accept loop.

use std::{collections::HashMap, process::Command, time::Duration};

use crate::helpers::{BIN, Server, production, with_settings};

/// Sets the soft limit on the child's open files; returns the one it replaced.
fn cap_open_files(server: &Server, files: Option<u64>) -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, prlimit};
    let pid = rustix::process::Pid::from_child(&server.child);
    // The child inherited this process's hard limit; only root could raise it.
    let maximum = getrlimit(Resource::Nofile).maximum;
    prlimit(Some(pid), Resource::Nofile, Rlimit { current: files, maximum }).unwrap().current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_pauses_logs_once_per_10_s_and_serves_again_once_some_free_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let server = Server::start(&vars, &["serve"]);
    let address = server.address.trim_start_matches("http://").to_owned();
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).unwrap().count() as u64;
    // Room for two more connections: the third and fourth wait in the backlog, unaccepted.
    let limit = cap_open_files(&server, Some(open + 2));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }

    // With a retry every 100 ms, a loop that logged each failure would have logged ~20 times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failures = server.log.lock().unwrap().matches("accepting a connection failed").count();
    assert_eq!(failures, 1, "one line per 10 s of failing accepts:\n{}", server.log.lock().unwrap());
    // Still failing 10 s later: one more line, so that the log shows it lasts.
    tokio::time::sleep(Duration::from_millis(9_500)).await;
    let failures = server.log.lock().unwrap().matches("accepting a connection failed").count();
    assert_eq!(failures, 2, "no second line after 10 s of failing accepts:\n{}", server.log.lock().unwrap());

    cap_open_files(&server, limit);
    drop(held);
    let started = std::time::Instant::now();
    while server.get("/healthz", None).await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
}

/// The soft and hard limits on open files of a running process, from `/proc`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_raises_its_open_file_limit_and_warns_only_of_a_connection_cap_above_it() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.expect("a finite hard limit");
    assert!(hard > 1024, "this test needs a hard limit on open files above 1024, not {hard}");
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    // Started with a low soft limit, as many init systems do.
    let start = |vars: &HashMap<String, String>| {
        let mut sh = Command::new("sh");
        sh.args(["-c", r#"ulimit -Sn 512 && exec "$0" "$@""#, BIN, "serve"]);
        Server::spawn(with_settings(sh, vars))
    };
    let warning = "above what the open-file limit";

    // 256 descriptors are kept spare: a cap of exactly what remains fits.
    vars.insert("WXAUTH_MAX_CONNECTIONS".into(), (hard - 256).to_string());
    let server = start(&vars);
    assert_eq!(open_file_limits(server.child.id()), (hard, hard), "the soft limit was not raised");
    let log = server.stop();
    assert!(!log.contains(warning), "{log}");

    vars.insert("WXAUTH_MAX_CONNECTIONS".into(), (hard - 255).to_string());
    let log = start(&vars).stop();
    assert!(log.contains(warning), "{log}");
}
