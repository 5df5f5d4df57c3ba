//! Services allowed to ask `POST /v1/token/introspect` about a token: `[[introspection_clients]]`
//! in the file, each with a `client_id` and a `secret` (HTTP Basic, RFC 6749 section 2.3.1).

use secrecy::SecretString;

use super::{ConfigError, catalog, catalog::CLIENTS_KEY, load::Layers};

/// Shortest client secret accepted: 128 bits of base64 or more.
pub const MIN_CLIENT_SECRET: usize = 32;

/// One service that may introspect tokens.
#[derive(Debug, Clone)]
pub struct IntrospectionClient {
    /// Its name, the user part of its `Authorization: Basic`.
    pub client_id: String,
    /// Its secret: printed only as `[REDACTED]`.
    pub secret: SecretString,
}

/// The list from the file (none by default), each entry checked.
pub(super) fn clients(layers: &Layers) -> Result<Vec<IntrospectionClient>, ConfigError> {
    let error = |reason: String| ConfigError::Invalid { env: catalog::env_name(CLIENTS_KEY), key: CLIENTS_KEY, reason };
    let mut clients: Vec<IntrospectionClient> = Vec::new();
    for (i, entry) in layers.introspection_clients.iter().enumerate() {
        let n = i + 1;
        let id = entry.client_id.trim();
        let valid = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
        if id.is_empty() || id.len() > 64 || !id.bytes().all(valid) {
            return Err(error(format!("client {n}: client_id must be 1 to 64 letters, digits, '.', '_' or '-'")));
        }
        // A shorter secret could be guessed; the check runs before anything is answered.
        if entry.secret.len() < MIN_CLIENT_SECRET || entry.secret.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(error(format!(
                "client {n} ({id}): secret must be at least {MIN_CLIENT_SECRET} visible ASCII characters \
                 (e.g. `openssl rand -base64 32`)"
            )));
        }
        if clients.iter().any(|c| c.client_id == id) {
            return Err(error(format!("client {id} is listed twice")));
        }
        clients.push(IntrospectionClient { client_id: id.to_owned(), secret: entry.secret.clone().into() });
    }
    Ok(clients)
}
