//! The login and identity use cases: WeChat, the store and the token service together.

use tracing::field::Empty;

use crate::{
    domain::{DomainError, JsCode, User, UserId},
    store::{Store, StoreError},
    token::{IssuedToken, Rejection, TokenError, Tokens},
    wechat::{WechatClient, WechatError},
};

/// Why a login or an identity lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The client sent an unusable value.
    #[error(transparent)]
    InvalidInput(#[from] DomainError),
    /// WeChat refused or failed.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// The token was refused, or signing failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A successful login.
#[derive(Debug)]
pub struct LoginOutcome {
    /// The signed access token.
    pub token: IssuedToken,
    /// The user it was issued for.
    pub user: User,
    /// Whether this login created the user.
    pub created: bool,
}

/// The service behind the HTTP API.
pub struct Auth {
    wechat: WechatClient,
    store: Store,
    tokens: Tokens,
}

impl Auth {
    /// Assembles the service from its parts.
    pub fn new(wechat: WechatClient, store: Store, tokens: Tokens) -> Self {
        Self { wechat, store, tokens }
    }

    /// Logs in with a `wx.login` code: code2Session, bind the openid, sign a token.
    /// Nothing is stored unless WeChat accepted the code. A first login answers only after
    /// the user and binding are durable; a returning one does not wait for the disk.
    #[tracing::instrument(skip_all, fields(openid = Empty, user_id = Empty, created = Empty))]
    pub async fn login(&self, raw_code: &str) -> Result<LoginOutcome, AuthError> {
        let code = JsCode::parse(raw_code)?;
        let session = self.wechat.code2session(&code).await?;
        let span = tracing::Span::current();
        span.record("openid", session.openid.as_str());
        let record = self.store.record_login(self.wechat.appid(), &session).await?;
        span.record("user_id", tracing::field::display(record.user.id));
        span.record("created", record.created);
        let token = self.tokens.issue(&record.user)?;
        tracing::info!("login succeeded");
        Ok(LoginOutcome { token, user: record.user, created: record.created })
    }

    /// The user a bearer token belongs to.
    pub async fn me(&self, bearer: &str) -> Result<User, AuthError> {
        let claims = self.tokens.verify(bearer)?;
        let gone = || AuthError::Token(TokenError::Rejected(Rejection::Invalid));
        let id = UserId::parse(&claims.sub).ok_or_else(gone)?;
        self.store.user(&id).await?.ok_or_else(gone)
    }

    /// The token service (for JWKS and discovery).
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The store (for health checks).
    pub fn store(&self) -> &Store {
        &self.store
    }
}
