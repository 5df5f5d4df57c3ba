//! Connection limits: slow clients are cut off, open connections are capped, and health
//! checks keep answering meanwhile.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use wxauth::{api::BODY_DEADLINE, server::HEADER_DEADLINE};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection; what it sent on the way.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after {within:?}");
    String::from_utf8_lossy(&seen).into_owned()
}

/// A client without a connection pool: every request opens a new connection.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

#[tokio::test]
async fn slow_clients_that_never_finish_their_headers_are_cut_off_while_health_keeps_answering() {
    let app = spawn_app().await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = connect(&app).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: wxauth\r\nX-Slow: ").await.unwrap();
        slow.push(stream);
    }

    let client = fresh_client();
    for _ in 0..10 {
        let started = Instant::now();
        let resp = client.get(format!("{}/healthz", app.address)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(500), "healthz took {:?}", started.elapsed());
    }
    // One more byte now and then does not buy more time: the deadline covers the whole head.
    tokio::time::sleep(HEADER_DEADLINE / 2).await;
    for stream in &mut slow {
        stream.write_all(b"x").await.unwrap();
    }
    for stream in &mut slow {
        until_closed(stream, HEADER_DEADLINE / 2 + Duration::from_secs(3)).await;
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    let head = "POST /v1/login HTTP/1.1\r\nHost: wxauth\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"code\":";
    stream.write_all(head.as_bytes()).await.unwrap();

    let answer = until_closed(&mut stream, BODY_DEADLINE + Duration::from_secs(3)).await;

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(app.wechat.calls().is_empty());
}

/// Reads the first line the server sends, within `within`.
async fn first_line(stream: &mut TcpStream, within: Duration) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n") && stream.read(&mut byte).await.unwrap() == 1 {
            seen.push(byte[0]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within {within:?}: {:?}", String::from_utf8_lossy(&seen));
    String::from_utf8_lossy(&seen).trim_end().to_owned()
}

#[tokio::test]
async fn a_declared_body_over_the_limit_gets_413_at_once_without_100_continue() {
    let app = spawn_app().await;
    let over = wxauth::api::MAX_BODY_BYTES + 1;
    for (expect, case) in [("Expect: 100-continue\r\n", "expecting 100-continue"), ("", "sending the body later")] {
        let mut stream = connect(&app).await;
        let head = format!(
            "POST /v1/login HTTP/1.1\r\nHost: wxauth\r\nContent-Type: application/json\r\n\
             Content-Length: {over}\r\n{expect}\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();

        // The headers only: the answer must not wait for the body (nor its 10 s deadline).
        let line = first_line(&mut stream, Duration::from_secs(2)).await;

        assert_eq!(line, "HTTP/1.1 413 Payload Too Large", "{case}");
        let rest = until_closed(&mut stream, Duration::from_secs(2)).await;
        assert!(rest.contains(r#""error":"invalid_request""#), "{case}: {rest}");
    }
    // Within the limit, the client is told to go on and its login is served.
    let mut stream = connect(&app).await;
    let body = r#"{"code":"c@expecting"}"#;
    let head = format!(
        "POST /v1/login HTTP/1.1\r\nHost: wxauth\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(first_line(&mut stream, Duration::from_secs(2)).await, "HTTP/1.1 100 Continue");
    stream.write_all(body.as_bytes()).await.unwrap();
    let rest = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.contains("HTTP/1.1 200 OK"), "{rest}");
    assert_eq!(app.wechat.calls().len(), 1, "only the login within the limit reached WeChat");
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_until_one_closes() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_MAX_CONNECTIONS", "4");
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&app).await);
    }
    let client = fresh_client();
    let healthz = || client.get(format!("{}/healthz", app.address)).timeout(Duration::from_millis(500)).send();
    assert!(healthz().await.is_err(), "a fifth connection was served");

    drop(held.pop());

    assert_eq!(healthz().await.unwrap().status(), 200);
}

#[tokio::test]
async fn http2_connections_may_carry_a_hundred_streams_at_once() {
    let app = spawn_app().await;
    let (_client, mut connection) = h2::client::handshake(connect(&app).await).await.unwrap();
    // Drive the connection until the server's SETTINGS have arrived.
    let _ = tokio::time::timeout(Duration::from_millis(300), &mut connection).await;

    assert_eq!(connection.max_concurrent_send_streams(), wxauth::server::MAX_STREAMS as usize);
    assert_eq!(wxauth::server::MAX_STREAMS, 100);
}

#[tokio::test]
async fn http2_request_bodies_get_a_stream_window_of_four_body_limits() {
    let app = spawn_app().await;
    let (client, connection) =
        h2::client::Builder::new().handshake::<_, bytes::Bytes>(connect(&app).await).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = poem::http::Request::post(format!("{}/v1/login", app.address))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();

    // Ask for far more than the window; what the server's settings allow is granted.
    body.reserve_capacity(4 << 20);
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(Ok(_)) = std::future::poll_fn(|cx| body.poll_capacity(cx)).await {}
    })
    .await;
    assert_eq!(body.capacity(), wxauth::server::STREAM_WINDOW as usize);
    assert!(wxauth::server::STREAM_WINDOW as usize >= 4 * wxauth::api::MAX_BODY_BYTES);

    body.send_data(bytes::Bytes::from_static(br#"{"code":"c@h2"}"#), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
}
