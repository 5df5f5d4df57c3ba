//! Sends the outbox's deliveries to the `[[webhooks]]`: each a POST of the event's JSON,
//! signed with the webhook's secret, retried with backoff for 24 hours
//! ([`crate::store::outbox::next_attempt`]).
//!
//! The signature follows the timestamped-HMAC scheme receivers know from payment
//! providers: `Wxauth-Signature: t=<Unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
//! The timestamp lets a receiver refuse a replay of an old delivery; the event id in the
//! body lets it de-duplicate the retries of one that was received but not acknowledged.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aws_lc_rs::hmac;
use poem_openapi::types::ToJSON;
use secrecy::ExposeSecret;

use crate::{
    api::events::EventBody,
    clock::Clock,
    config::Webhook,
    metrics::Metrics,
    store::{
        Store, StoreError,
        outbox::{Delivery, HookId, Subscriptions, hook_id, next_attempt},
    },
};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Wxauth-Signature";

/// How long one delivery may take: connecting, sending and the receiver's answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a claim holds: longer than a delivery may take, so that no other sender
/// (another replica) sends it meanwhile; a sender that dies leaves it due again then.
pub const LEASE: time::Duration = time::Duration::seconds(30);

/// Deliveries claimed (and sent concurrently) at once.
const BATCH: usize = 64;

/// The pause when nothing is due.
const IDLE: Duration = Duration::from_secs(1);

/// How long a delivery waits for an event not (yet) there before it counts as purged.
const FRESH: time::Duration = time::Duration::seconds(60);

/// The time in an event id (a UUID v7), to the millisecond.
fn event_time(id: &uuid::Uuid) -> Option<time::OffsetDateTime> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?)
        .ok()
        .map(|t| t + time::Duration::nanoseconds(nanos.into()))
}

/// A webhook's URL as logs show it: without its query, where receivers often put a token.
fn shown(url: &url::Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or_default(), url.path())
}

/// The signature of `body` sent at `timestamp` (Unix seconds) with `secret`: the value of
/// [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Which webhooks want which kinds, as the store needs it to write the deliveries.
pub fn subscriptions(hooks: &[Webhook]) -> Subscriptions {
    Subscriptions::new(hooks.iter().map(|h| (hook_id(h.url.as_str()), h.kinds.clone())).collect())
}

/// Sends due deliveries, for as long as it runs.
pub struct Sender {
    store: Store,
    hooks: Arc<HashMap<HookId, Webhook>>,
    client: reqwest::Client,
    clock: Clock,
    metrics: Metrics,
}

/// How one attempt ended.
enum Outcome {
    /// 2xx.
    Sent,
    /// Anything else: the text says what, for the log.
    Failed(String),
}

impl Sender {
    /// A sender for `hooks`, reading and updating `store`'s outbox.
    pub fn new(store: Store, hooks: &[Webhook], clock: Clock, metrics: Metrics) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(DELIVERY_TIMEOUT.min(Duration::from_secs(3)))
            .timeout(DELIVERY_TIMEOUT)
            // A receiver's redirect is a misconfiguration, not an address to send events to.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wxauth/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let hooks = hooks.iter().map(|h| (hook_id(h.url.as_str()), h.clone())).collect();
        Ok(Self { store, hooks: Arc::new(hooks), client, clock, metrics })
    }

    /// Sends whatever is due, then waits a little when nothing was, forever.
    pub async fn run(self) {
        loop {
            match self.send_due().await {
                Ok(0) => tokio::time::sleep(IDLE).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the webhook outbox failed; will retry");
                    tokio::time::sleep(IDLE).await;
                }
            }
        }
    }

    /// Claims the deliveries due now and sends them, concurrently; how many there were.
    pub async fn send_due(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let claimed = self.store.claim_deliveries(now, now + LEASE, BATCH).await?;
        let count = claimed.len();
        let results = futures_util::future::join_all(claimed.into_iter().map(|d| self.deliver(d))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(count)
    }

    /// One attempt of `claimed`, and what it leaves in the outbox.
    async fn deliver(&self, claimed: Delivery) -> Result<(), StoreError> {
        let now = self.clock.now();
        let Some(event) = self.store.event(&claimed.event).await? else {
            // Written just before its event (sled), or its event was purged (older than the
            // retention) before it could be sent: wait for the first, drop the second.
            let retry = event_time(&claimed.event).is_some_and(|at| now - at < FRESH).then(|| now + FRESH);
            if retry.is_none() {
                self.metrics.webhook_delivery("dropped");
            }
            return self.store.finish_delivery(&claimed, retry).await;
        };
        let event_at = event.at;
        let Some(hook) = self.hooks.get(&claimed.hook) else {
            // A webhook this replica does not know: another replica's newer settings (a
            // rolling change), or one removed. Kept for the others until it would be given up.
            let retry = next_attempt(event_at, claimed.attempts + 1, now);
            if retry.is_none() {
                tracing::warn!(event = %claimed.event, "a webhook delivery was dropped: no replica knows its webhook");
                self.metrics.webhook_delivery("dropped");
            }
            return self.store.finish_delivery(&claimed, retry).await;
        };
        let body = EventBody::from(event).to_json_string().into_bytes();
        let outcome = self.post(hook, &body).await;
        let retry_at = match outcome {
            Outcome::Sent => {
                self.metrics.webhook_delivery("sent");
                None
            }
            Outcome::Failed(why) => {
                let next = next_attempt(event_at, claimed.attempts + 1, self.clock.now());
                let url = shown(&hook.url);
                match next {
                    Some(at) => {
                        self.metrics.webhook_delivery("failed");
                        tracing::info!(%url, event = %claimed.event, %why, retry_at = %at, "webhook delivery failed");
                    }
                    None => {
                        self.metrics.webhook_delivery("given_up");
                        tracing::warn!(%url, event = %claimed.event, %why, "webhook delivery given up, 24 hours after its event");
                    }
                }
                next
            }
        };
        self.store.finish_delivery(&claimed, retry_at).await
    }

    async fn post(&self, hook: &Webhook, body: &[u8]) -> Outcome {
        let signature = sign(hook.secret.expose_secret().as_bytes(), self.clock.now().unix_timestamp(), body);
        let sent = self
            .client
            .post(hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Outcome::Sent,
            Ok(resp) => Outcome::Failed(format!("HTTP {}", resp.status().as_u16())),
            Err(e) => Outcome::Failed(e.without_url().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_timestamp_a_dot_and_the_body() {
        // Computed independently: printf '1700000000.{"id":"e1"}' | openssl dgst -sha256 -hmac 'whsec-test'
        let signature = sign(b"whsec-test", 1_700_000_000, br#"{"id":"e1"}"#);
        assert_eq!(signature, "t=1700000000,v1=f49b81a5e23956df3f1a460f99185bcaaba87e1f98e3ac0f099adb3eaab2cb1c");
    }
}
