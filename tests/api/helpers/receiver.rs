//! A webhook receiver on loopback: it checks each delivery's signature as a business's
//! receiver would (HMAC-SHA256 of `t.body` with the secret), and answers 200, or 503 while
//! told to refuse.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use poem::{
    EndpointExt, Route, Server, handler,
    http::{HeaderMap, StatusCode},
    listener::{Acceptor, Listener, TcpListener},
    post,
    web::Data,
};
use serde_json::Value;

/// The secret the tests' `[[webhooks]]` entries use.
pub const WEBHOOK_SECRET: &str = "whsec-test-0123456789abcdefghijklmnopqrstuv";

#[derive(Default)]
struct State {
    refusing: AtomicBool,
    attempts: AtomicUsize,
    bad_signatures: AtomicUsize,
    received: Mutex<Vec<Value>>,
    /// Event ids being received right now, and how often one arrived while in flight.
    in_flight: Mutex<std::collections::HashSet<String>>,
    overlaps: AtomicUsize,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<State>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().cloned().unwrap();
        let state = Arc::new(State::default());
        let app = Route::new().at("/hook", post(receive)).data(state.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Receiver { url: format!("http://{addr}/hook"), state }
    }

    /// Answer 503 (`true`) or 200 from now on.
    pub fn refuse(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Deliveries that arrived, accepted or not.
    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    /// Deliveries whose signature did not verify (never accepted).
    pub fn bad_signatures(&self) -> usize {
        self.state.bad_signatures.load(Ordering::SeqCst)
    }

    /// How often an event arrived while another delivery of it was being received.
    pub fn overlaps(&self) -> usize {
        self.state.overlaps.load(Ordering::SeqCst)
    }

    /// The accepted events, in arrival order (a retried one may be there twice).
    pub fn received(&self) -> Vec<Value> {
        self.state.received.lock().unwrap().clone()
    }

    /// The `[[webhooks]]` entry for this receiver, wanting `events` (none: every kind).
    pub fn toml(&self, events: &[&str]) -> String {
        let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        format!(
            "[[webhooks]]\nurl = {:?}\nsecret = {WEBHOOK_SECRET:?}\n{}",
            self.url,
            if events.is_empty() { String::new() } else { format!("events = [{}]\n", events.join(", ")) }
        )
    }
}

/// Whether `header` (`t=...,v1=...`) signs `body` with `secret`, within 5 minutes of now.
pub fn verify(header: &str, body: &[u8], secret: &str) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (time::OffsetDateTime::now_utc().unix_timestamp() - t).abs() > 300 {
        return false;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = [t.to_string().as_bytes(), b".", body].concat();
    v1.iter().any(|hex| {
        let tag: Option<Vec<u8>> =
            (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
        tag.is_some_and(|tag| aws_lc_rs::hmac::verify(&key, &signed, &tag).is_ok())
    })
}

#[handler]
async fn receive(headers: &HeaderMap, body: Vec<u8>, state: Data<&Arc<State>>) -> StatusCode {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let header = headers.get("wxauth-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !verify(header, &body, WEBHOOK_SECRET) {
        state.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::BAD_REQUEST;
    }
    let event: Value = serde_json::from_slice(&body).unwrap();
    let id = event["id"].as_str().unwrap_or_default().to_owned();
    if !state.in_flight.lock().unwrap().insert(id.clone()) {
        state.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    // A receiver takes a moment: two senders of one event would meet here.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    state.in_flight.lock().unwrap().remove(&id);
    if state.refusing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    state.received.lock().unwrap().push(event);
    StatusCode::OK
}
