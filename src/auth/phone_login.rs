//! Phone-first login: a WeChat identity bound to the account that has the phone number
//! WeChat verified (`getPhoneNumber`), or, in registration `phone`, to a new account with
//! it. Reached from `POST /v1/bind` with a `phone_code`, and from `POST /v1/login` with a
//! `phone_code` beside the `code`.
//!
//! Each verified number is a call WeChat bills, so the attempt is counted against the
//! client's address before WeChat is asked, and the same code sent again by the same person
//! shares the first call ([`crate::wechat::WechatClient::phone_number`]).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{Auth, Banned, BindFailure, Internal, LoginOutcome, Peer, PendingDeletion, too_many};
use crate::{
    config::Registration,
    domain::{Dated, JsCode, WechatSession},
    store::{NewAccount, Origin, StoreError, TicketId, events::EventKind},
    wechat::WechatClient,
};

/// The prefix of the username of an account made by phone registration: the number itself
/// would be personal data in plaintext.
pub const PHONE_ACCOUNT_PREFIX: &str = "phone-";

/// A WeChat identity about to be linked by phone: who, through which app, with which
/// ticket (spent by the bind), from where.
pub(super) struct PhoneLink<'a> {
    pub app: &'a WechatClient,
    pub session: &'a WechatSession,
    pub ticket: Option<&'a TicketId>,
    pub phone_code: &'a JsCode,
    pub peer: &'a Peer<'a>,
    /// Whether a number no account has makes a new account (registration `phone`).
    pub create: bool,
}

/// The key a WeChat identity's phone verifications are counted under, in the limiter's
/// per-username budget (`:` is in no username).
const PHONE_VERIFICATIONS: &str = "phone-verification:";

impl Auth {
    /// Verifies the phone code with WeChat and binds the identity to the account with that
    /// number, or to a new one when `link.create`; [`BindFailure::NoAccountForPhone`]
    /// otherwise, with nothing stored and the ticket unspent. The caller has counted the
    /// attempt against the client's address ([`Auth::check_bind_ip`]).
    pub(super) async fn link_by_phone(&self, link: PhoneLink<'_>) -> Result<LoginOutcome, BindFailure> {
        let attempts = &self.parts.attempts;
        let peer = link.peer;
        let appid = link.app.appid();
        let store = &self.parts.store;
        // Before WeChat bills a verification: what would fail after it anyway, and the
        // identity's own budget (one WeChat account behind changing addresses).
        if store.user_by_openid(appid, &link.session.openid).await?.is_some() {
            tracing::info!("bind by phone refused: the identity is bound already");
            return Err(BindFailure::AlreadyBound);
        }
        let guesser = format!("{appid}:{}", link.session.openid);
        attempts.check_username(PHONE_VERIFICATIONS, &guesser).map_err(too_many)?;
        let phone = link.app.phone_number(link.phone_code, &link.session.openid).await?;
        let number = phone.normalised();
        // Per number, whoever asks: only its holder's WeChat can prove it.
        attempts.check_username(&format!("phone:{number}"), "").map_err(too_many)?;
        let (account, created) = match store.account_by_phone(&number).await? {
            Some(account) => (account.username, false),
            None if link.create => (self.phone_account(appid, &number).await?, true),
            None => {
                tracing::info!("bind by phone refused: no account has the number");
                return Err(BindFailure::NoAccountForPhone);
            }
        };
        if let Some(account) = store.account(&account).await?
            && let Some(user) = store.user(&account.user).await?
        {
            if let Some(banned) = Banned::of(&user, self.parts.clock.now()) {
                tracing::info!(user_id = %user.id, "bind by phone refused: the account's user is banned");
                return Err(banned.into());
            }
            if let Some(pending) = PendingDeletion::of(&user) {
                tracing::info!(user_id = %user.id, "bind by phone refused: the account's user is being deleted");
                return Err(pending.into());
            }
        }
        let now = self.parts.clock.now();
        let bound = store.bind(appid, link.session, &account, link.ticket, now).await;
        let mut record = bound.map_err(|e| match e {
            // Removed since it was found: as if it never was.
            StoreError::NoSuchAccount => BindFailure::NoAccountForPhone,
            e => e.into(),
        })?;
        record.created = created;
        // The person just proved the number: it is theirs, as `POST /v1/me/phone` keeps it.
        store.set_phone(&record.user.id, Dated { value: phone, at: now }).await?;
        let origin: Origin = self.origin(peer);
        let outcome =
            self.outcome(record, appid, link.session.openid.clone(), &origin, "bind by phone succeeded").await?;
        let event = self.event(EventKind::Bind).user(outcome.user.id).app(appid).origin(&origin);
        self.record(event.detail("username", account.as_str()).detail("via", "phone")).await;
        Ok(outcome)
    }

    /// Makes the account (and user) of a phone number no account has: a username of its
    /// own, no password, the number, and the app's default role. A racing request for the
    /// same number may have made it first: then that one is used.
    async fn phone_account(&self, appid: &str, number: &str) -> Result<String, BindFailure> {
        let store = &self.parts.store;
        for _ in 0..3 {
            let mut bytes = [0u8; 9];
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Internal::Randomness)?;
            let username = format!("{PHONE_ACCOUNT_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
            let account =
                NewAccount { username: username.clone(), password_hash: String::new(), phone: Some(number.to_owned()) };
            match store.add_account(account).await {
                Ok(user) => {
                    if let Some(role) = self.parts.default_roles.get(appid) {
                        store.change_controls(&user.id, |c| c.roles = vec![role.clone()]).await?;
                    }
                    tracing::info!(user_id = %user.id, "account made by phone registration");
                    let event = self.event(EventKind::AccountAdded).user(user.id).app(appid);
                    self.record(event.detail("username", username.as_str()).detail("via", "phone")).await;
                    return Ok(username);
                }
                Err(StoreError::PhoneTaken) => {
                    if let Some(account) = store.account_by_phone(number).await? {
                        return Ok(account.username);
                    }
                }
                // Another username, next time round.
                Err(StoreError::AccountExists) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Internal::Store(StoreError::Database("could not make a new account for the number".into())).into())
    }

    /// Whether a login's unbound identity goes through phone linking, and whether it may
    /// make an account there: registration `phone` makes one, `bind` and `auto` only find
    /// one (in `auto`, a number no account has then makes a plain user).
    pub(super) fn phone_creates(&self) -> bool {
        self.parts.registration == Registration::Phone
    }
}
