//! The access log of the real binary: one bounded line per request, whatever the client sent.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{Server, production};

/// Sends `head` on a new connection and returns the status line of the answer.
async fn status_line(server: &Server, head: &str) -> String {
    let mut stream = TcpStream::connect(server.address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_or_odd_method_is_cut_in_the_access_log_like_a_long_path() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let server = Server::start(&vars, &["serve"]);
    // hyper takes any token as a method, up to the 64 KiB head limit.
    let huge = "X".repeat(60_000);
    let odd = format!("~!#$%&'*+-.^_`|{}", "z".repeat(100));

    for method in [&huge, &odd] {
        let line =
            status_line(&server, &format!("{method} /healthz HTTP/1.1\r\nHost: wxauth\r\nConnection: close\r\n\r\n"))
                .await;
        assert!(line.starts_with("HTTP/1.1 405"), "{} bytes: {line}", method.len());
    }
    let log = server.stop();

    let access: Vec<&str> = log.lines().filter(|l| l.contains("wxauth::access")).collect();
    assert_eq!(access.len(), 2, "one access line per request:\n{log}");
    assert!(
        access[0].contains(&format!("{}…", "X".repeat(32))) && !access[0].contains(&"X".repeat(33)),
        "{}",
        access[0]
    );
    assert!(access[1].contains("~!#$%&'*+-.^_`|zzz") && !access[1].contains(&"z".repeat(18)), "{}", access[1]);
}
