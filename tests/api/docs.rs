//! Swagger UI at `/docs`: off in production unless `WXAUTH_DOCS=on`, and served from one
//! shared copy, so that clients that never read it cannot make the server hold copies.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::helpers::{Server, assert_error, production, spawn_app, spawn_app_with, spawn_dev_app, spawn_dev_app_with};

/// The resident memory of process `pid` in bytes, from `/proc`.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_that_never_read_the_swagger_page_do_not_each_pin_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("WXAUTH_DOCS".into(), "on".into());
    let server = Server::start(&vars, &["serve"]);
    let page = reqwest::get(format!("{}/docs/", server.address)).await.unwrap().bytes().await.unwrap().len();
    assert!(page > 1_000_000, "the page is {page} bytes: the test needs a large one");
    let before = resident_bytes(server.child.id());

    // h2c with a window of 0: the server may send headers, never a byte of a body. The
    // connection task answers the server's PINGs, so the connection stays up.
    let tcp = TcpStream::connect(server.address.trim_start_matches("http://")).await.unwrap();
    let (client, connection) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(tcp).await.unwrap();
    tokio::spawn(connection);
    let streams = wxauth::server::MAX_STREAMS as usize;
    let mut client = client.ready().await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..streams {
        let request = poem::http::Request::get(format!("{}/docs/", server.address)).body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        pending.push(response);
        client = client.ready().await.unwrap();
    }
    let mut bodies = Vec::new();
    for response in pending {
        let response = tokio::time::timeout(Duration::from_secs(10), response).await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        // Held, unread: the server keeps the answer until the client takes it.
        bodies.push(response.into_body());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = resident_bytes(server.child.id()).saturating_sub(before);

    // A copy per stream would be streams × page (166 MB); a shared page costs a refcount.
    let copies = (streams * page) as u64;
    assert!(grown < copies / 10, "{streams} unread streams grew the server by {grown} bytes ({copies} for copies)");
    drop(bodies);
    server.stop();
}

#[tokio::test]
async fn swagger_ui_is_absent_in_production_unless_turned_on_and_present_in_dev_mode_unless_turned_off() {
    let production = spawn_app().await;
    let turned_on = spawn_app_with(|c| {
        c.set("WXAUTH_DOCS", "on");
    })
    .await;
    let dev = spawn_dev_app().await;
    let dev_off = spawn_dev_app_with(&[("WXAUTH_DOCS", "off")]).await;

    for (app, served, case) in [
        (&production, false, "production"),
        (&turned_on, true, "WXAUTH_DOCS=on"),
        (&dev, true, "dev mode"),
        (&dev_off, false, "dev mode, WXAUTH_DOCS=off"),
    ] {
        for path in ["/docs", "/docs/"] {
            let resp = app.get(path).await;
            if served {
                assert_eq!(resp.status(), 200, "{case}: {path}");
                assert!(resp.text().await.unwrap().contains("swagger"), "{case}: {path}");
            } else {
                assert_error(resp, 404, "not_found").await;
            }
        }
        // The document stays: tools and client generators read it.
        assert_eq!(app.get("/openapi.json").await.status(), 200, "{case}");
    }
}
