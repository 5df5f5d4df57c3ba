//! Token introspection (RFC 7662): whether an access token is still good, for services
//! that cannot wait for it to expire. A token wxauth signed is active while its signature
//! and times hold, its user exists and is not banned, and its session (`sid`) is live:
//! logout, logout-all, a session ended by its user, a ban, an unbind and the removal of the
//! user all end it within one request.

use super::{Auth, Banned, Internal};
use crate::{config::IntrospectionClient, domain::UserId, store::session_id, token::Claims};

/// Why `POST /v1/token/introspect` refused to answer.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectFailure {
    /// No client credentials, or none that match a configured client or a live admin token.
    #[error(
        "send the credentials of one of [[introspection_clients]] as Authorization: Basic \
         base64(client_id:secret), or an admin token as Authorization: Bearer wxa_..."
    )]
    UnknownClient,
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<crate::store::StoreError> for IntrospectFailure {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

/// Who asks `POST /v1/token/introspect`, from its `Authorization` header.
#[derive(Debug, Clone, Copy)]
pub enum Introspector<'a> {
    /// No credentials, or not of a kind introspection takes.
    Nobody,
    /// `Basic`: one of `[[introspection_clients]]`, by id and secret.
    Client {
        /// The client id.
        id: &'a str,
        /// The secret as presented.
        secret: &'a str,
    },
    /// `Bearer`: an admin token (role `read` or `write`).
    AdminToken(&'a str),
}

/// What introspection says of a token.
#[derive(Debug)]
pub enum Introspection {
    /// Not a token that works now (RFC 7662 says no more than that).
    Inactive,
    /// A token that works, with its claims.
    Active(Box<Claims>),
}

/// Whether `presented` is `secret`, in constant time. RFC 6749 section 2.3.1 has clients
/// form-encode the secret before base64 (a `+` sent as `%2B`); many send it as it is, so
/// either form is accepted.
fn secret_matches(client: &IntrospectionClient, presented: &str) -> bool {
    use secrecy::ExposeSecret;
    let secret = client.secret.expose_secret().as_bytes();
    let same = |text: &[u8]| aws_lc_rs::constant_time::verify_slices_are_equal(text, secret).is_ok();
    let decoded: String = url::form_urlencoded::parse(format!("s={presented}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    same(presented.as_bytes()) | same(decoded.as_bytes())
}

impl Auth {
    /// Introspects `token` for `caller`: one of `[[introspection_clients]]`, or a live
    /// admin token of either role.
    pub async fn introspect(&self, caller: Introspector<'_>, token: &str) -> Result<Introspection, IntrospectFailure> {
        match caller {
            Introspector::Nobody => return Err(IntrospectFailure::UnknownClient),
            Introspector::Client { id, secret } => {
                let known = self.parts.introspection_clients.iter().find(|c| c.client_id == id);
                if !known.is_some_and(|c| secret_matches(c, secret)) {
                    tracing::info!(client_id = id, "introspection refused: unknown client or wrong secret");
                    return Err(IntrospectFailure::UnknownClient);
                }
            }
            Introspector::AdminToken(text) => {
                // Either role: introspection only reads.
                if super::admin_token::verify(&self.parts.store, text).await?.is_none() {
                    tracing::info!("introspection refused: unknown or revoked admin token");
                    return Err(IntrospectFailure::UnknownClient);
                }
            }
        }
        Ok(self.judge(token).await?)
    }

    async fn judge(&self, token: &str) -> Result<Introspection, crate::store::StoreError> {
        let Ok(claims) = self.parts.tokens.verify(token) else { return Ok(Introspection::Inactive) };
        let Some(id) = UserId::parse(&claims.sub) else { return Ok(Introspection::Inactive) };
        let store = &self.parts.store;
        let Some(user) = store.user(&id).await? else { return Ok(Introspection::Inactive) };
        let now = self.parts.clock.now();
        if Banned::of(&user, now).is_some() {
            return Ok(Introspection::Inactive);
        }
        // Tokens from before sessions had no `sid`: they expire within minutes anyway.
        if let Some(sid) = &claims.sid {
            let live = store.sessions(&id, now).await?;
            if !live.iter().any(|s| session_id(&s.family).to_string() == *sid) {
                return Ok(Introspection::Inactive);
            }
        }
        Ok(Introspection::Active(Box::new(claims)))
    }
}
