//! TLS to WeChat is verified: a server with an untrusted certificate is never believed.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, pki_types::PrivateKeyDer},
};

use crate::helpers::{assert_error, spawn_app_with};

/// An HTTPS "WeChat" on loopback with a self-signed certificate for 127.0.0.1. Any client
/// that completes the handshake gets a valid code2Session success.
async fn impostor() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let refusals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = refusals.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter, seen) = (acceptor.clone(), counter.clone(), seen.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => return seen.lock().unwrap().push(e.to_string()),
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"openid":"o_impostor","session_key":"aW1wb3N0b3I="}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (address, served, refusals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_fails_with_502_when_wechat_presents_an_untrusted_certificate() {
    let (address, served, refusals) = impostor().await;
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_WECHAT_BASE_URL", address.clone());
    })
    .await;

    assert_error(app.login("code@victim").await, 502, "wechat_error").await;

    assert_eq!(served.load(Ordering::SeqCst), 0, "the client sent a request over an unverified connection");
    // Positive control: the client did speak TLS to this server and refused its certificate
    // (rather than failing for some unrelated reason before the handshake).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let refusals = refusals.lock().unwrap().clone();
    assert!(refusals.iter().any(|e| e.contains("UnknownCA") || e.contains("BadCertificate")), "{refusals:?}");
}
