//! The business's systems told of events: `[[webhooks]]` in the file, each with a `url`, a
//! `secret` that signs every delivery, and optionally the `events` kinds it wants.

use secrecy::SecretString;
use url::Url;

use super::{ConfigError, catalog, catalog::WEBHOOKS_KEY, load::Layers, urls::is_loopback};
use crate::store::events::EventKind;

/// Shortest webhook secret accepted: 128 bits of base64 or more.
pub const MIN_WEBHOOK_SECRET: usize = 32;

/// One receiver of events.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where deliveries are POSTed.
    pub url: Url,
    /// Signs each delivery (`Wxauth-Signature`): printed only as `[REDACTED]`.
    pub secret: SecretString,
    /// The kinds it receives; empty: every kind.
    pub kinds: Vec<EventKind>,
}

/// The list from the file (none by default), each entry checked.
pub(super) fn webhooks(layers: &Layers) -> Result<Vec<Webhook>, ConfigError> {
    let error =
        |reason: String| ConfigError::Invalid { env: catalog::env_name(WEBHOOKS_KEY), key: WEBHOOKS_KEY, reason };
    let mut hooks: Vec<Webhook> = Vec::new();
    for (i, entry) in layers.webhooks.iter().enumerate() {
        let n = i + 1;
        let url = Url::parse(entry.url.trim()).map_err(|e| error(format!("webhook {n}: url is not a URL ({e})")))?;
        // The body holds addresses and user agents: only TLS, or this machine.
        let transport = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url));
        if !transport || url.fragment().is_some() || url.username() != "" || url.password().is_some() {
            return Err(error(format!(
                "webhook {n}: url must be https:// (plain http only for loopback), without credentials or fragment"
            )));
        }
        if entry.secret.len() < MIN_WEBHOOK_SECRET || entry.secret.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(error(format!(
                "webhook {n} ({url}): secret must be at least {MIN_WEBHOOK_SECRET} visible ASCII characters \
                 (e.g. `openssl rand -base64 32`)"
            )));
        }
        let mut kinds = Vec::new();
        for name in &entry.events {
            let kind = EventKind::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                error(format!("webhook {n} ({url}): unknown event kind {name:?}; the kinds are {}", known.join(", ")))
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if hooks.iter().any(|h| h.url == url) {
            return Err(error(format!("webhook {url} is listed twice")));
        }
        hooks.push(Webhook { url, secret: entry.secret.clone().into(), kinds });
    }
    Ok(hooks)
}
