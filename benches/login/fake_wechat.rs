//! A fast fake WeChat on loopback (hyper, keep-alive), answering `/sns/jscode2session` like
//! nginx in `../shared/tools/loadtest.sh`: the part of `js_code` before `#` is the openid.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Knobs the scenarios turn between runs.
#[derive(Default)]
pub struct Behaviour {
    /// A new session_key on every call (the worst case: every login must write it).
    pub fresh_session_key: AtomicBool,
    /// Delay before every answer, in milliseconds.
    pub delay_ms: AtomicU64,
}

/// Starts the fake and returns its base URL and its knobs.
pub async fn start() -> (String, Arc<Behaviour>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let behaviour = Arc::new(Behaviour::default());
    let shared = behaviour.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let behaviour = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, behaviour.clone()));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (format!("http://{addr}"), behaviour)
}

async fn answer(req: Request<Incoming>, behaviour: Arc<Behaviour>) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = behaviour.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let code = req
        .uri()
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "js_code").map(|(_, v)| v))
        .unwrap_or_default();
    let openid = code.split('#').next().unwrap_or("x");
    let key = if behaviour.fresh_session_key.load(Ordering::Relaxed) {
        format!("{}==", code.replace(['#', '"', '\\'], "-"))
    } else {
        "tiihtNczf5v6AKRyjwEUhQ==".to_owned()
    };
    let body = format!(r#"{{"openid":"o_{openid}","session_key":"{key}"}}"#);
    Ok(Response::builder().header("content-type", "text/plain").body(Full::new(Bytes::from(body))).unwrap())
}
