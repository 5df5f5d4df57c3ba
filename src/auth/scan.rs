//! PC login by scanning a mini-program code (小程序扫码登录): the PC page starts a scan
//! session and shows a mini-program code carrying its `scene`; the person scans it, the
//! mini-program (logged in) confirms the scene; the PC, polling with its secret session id,
//! receives tokens once.
//!
//! The `scene` is public (it is in the picture on the screen); the session id is the PC's
//! secret: `<scene>.<256 random bits>`, of which only a hash is stored. So whoever sees the
//! code can confirm it (that is the point: the person whose phone scans it), but only the PC
//! that started it can collect the tokens. A session lives five minutes, is confirmed once
//! and collected once, on any replica (a grant).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::{Auth, Banned, BearerFailure, Internal, LoginOutcome, Peer, PendingDeletion, secret, secret_id};
use crate::{
    config::AppKind,
    domain::UserId,
    store::{
        LoginRecord, StoreError,
        events::EventKind,
        grants::{Grant, GrantKind},
    },
    token::Rejection,
    wechat::{WechatClient, WechatError},
};

/// How long a scan session works, in seconds.
pub const SCAN_SECS: i64 = 300;
/// The mini-program page the code opens, unless the request names one.
pub const SCAN_PAGE: &str = "pages/scan/confirm";

/// Why a scan-login step failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanFailure {
    /// A malformed request (the description says what).
    #[error("{0}")]
    InvalidInput(String),
    /// The request names no mini-program of this server.
    #[error("unknown appid {0:?}; this server's mini-programs are: {1}")]
    UnknownApp(String, String),
    /// Several mini-programs are served and the request names none.
    #[error("appid is required: this server serves several mini-programs ({0})")]
    AppRequired(String),
    /// No such live session (unknown, expired, already confirmed or collected).
    #[error("the scan session is unknown, expired or already used; show a new code")]
    NotFound,
    /// The confirming token is of an app the session is not for, and its user has no
    /// identity in that app (no unionid links them).
    #[error("this code is for mini-program {0}; the token is of another app that no unionid links to it")]
    AppMismatch(String),
    /// The bearer token is not acceptable.
    #[error("{0}")]
    Rejected(Rejection),
    /// Too many sessions started from this address.
    #[error("too many scan sessions from this address; retry in {retry_after} s")]
    TooManyRequests {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// WeChat could not make the code's image.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// An operator banned the user.
    #[error(transparent)]
    Banned(#[from] Banned),
    /// The user asked for the account's deletion.
    #[error(transparent)]
    PendingDeletion(#[from] PendingDeletion),
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<StoreError> for ScanFailure {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<BearerFailure> for ScanFailure {
    fn from(f: BearerFailure) -> Self {
        match f {
            BearerFailure::Rejected(r) => Self::Rejected(r),
            BearerFailure::Internal(e) => Self::Internal(e),
        }
    }
}

/// A new scan session, for the PC page (no `Debug`: the id is the PC's secret).
pub struct ScanStart {
    /// The PC's secret handle for polling.
    pub id: String,
    /// What the mini-program code carries (`options.scene` on the page).
    pub scene: String,
    /// The mini-program it is for.
    pub appid: String,
    /// Seconds it works.
    pub expires_in: u64,
    /// The code's PNG from WeChat, when asked for.
    pub image: Option<Vec<u8>>,
}

/// What a poll finds.
#[derive(Debug)]
pub enum ScanPoll {
    /// Not confirmed yet; the seconds left.
    Pending(u64),
    /// Confirmed: the PC's login (answered once).
    Confirmed(Box<LoginOutcome>),
}

/// A scan session as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ScanState {
    appid: String,
    /// SHA-256 of the id's secret part, base64url.
    poll: String,
    expires_at: i64,
    confirmed: Option<Confirmed>,
}

/// Who confirmed, through which identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Confirmed {
    user: UserId,
    appid: String,
    openid: String,
}

impl Auth {
    /// Starts a scan session for the mini-program `appid` (or the only one), with the
    /// code's image from WeChat when `image`, opening `page` (default [`SCAN_PAGE`]).
    pub async fn start_scan(
        &self,
        appid: Option<&str>,
        image: bool,
        page: Option<&str>,
        peer: &Peer<'_>,
    ) -> Result<ScanStart, ScanFailure> {
        let page = page.unwrap_or(SCAN_PAGE);
        if page.is_empty() || page.len() > 128 || page.starts_with('/') || !page.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ScanFailure::InvalidInput(
                "page must be a mini-program page path such as pages/scan/confirm (no leading /)".into(),
            ));
        }
        if let Some(addr) = peer.addr {
            let attempts = &self.parts.attempts;
            attempts.check_request(attempts.client_ip(addr, &peer.forwarded_for)).map_err(|wait| {
                ScanFailure::TooManyRequests { retry_after: (wait.as_secs_f64().ceil() as u64).max(1) }
            })?;
        }
        let app = self.mini_program(appid)?;
        // WeChat's scene: at most 32 visible characters; 128 random bits in hex.
        let mut raw = [0u8; 16];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| Internal::Randomness)?;
        let scene: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let (poll_secret, poll_hash) = secret("")?;
        let now = self.parts.clock.now();
        let expires_at = now + time::Duration::seconds(SCAN_SECS);
        let state = ScanState {
            appid: app.appid().to_owned(),
            poll: URL_SAFE_NO_PAD.encode(poll_hash),
            expires_at: expires_at.unix_timestamp(),
            confirmed: None,
        };
        let grant = Grant { kind: GrantKind::Scan, payload: json(&state)?, expires_at };
        self.parts.store.put_grant(&scene_id(&scene), &grant, now).await?;
        let image = match image {
            true => Some(app.mini_program_code(&scene, page).await?),
            false => None,
        };
        Ok(ScanStart {
            id: format!("{scene}.{poll_secret}"),
            scene,
            appid: app.appid().to_owned(),
            expires_in: SCAN_SECS as u64,
            image,
        })
    }

    /// The mini-program, logged in as the bearer, confirms the session of `scene`.
    pub async fn confirm_scan(&self, scene: &str, bearer: &str) -> Result<(), ScanFailure> {
        let caller = self.live_caller(bearer).await?;
        let now = self.parts.clock.now();
        let id = scene_id(scene);
        let payload = self.parts.store.grant(&id, GrantKind::Scan, now).await?.ok_or(ScanFailure::NotFound)?;
        let state: ScanState = serde_json::from_str(&payload).map_err(corrupt)?;
        if state.confirmed.is_some() {
            return Err(ScanFailure::NotFound);
        }
        // The PC logs in as the person's identity in the code's mini-program: the token's
        // own, or the one a unionid linked to its user.
        let Some(openid) = caller.user.openid_in(&state.appid).map(str::to_owned) else {
            return Err(ScanFailure::AppMismatch(state.appid));
        };
        if let Some(banned) = Banned::of(&caller.user, now) {
            return Err(banned.into());
        }
        let confirmed = Confirmed { user: caller.user.id, appid: state.appid.clone(), openid };
        let next = ScanState { confirmed: Some(confirmed), ..state };
        if !self.parts.store.replace_grant(&id, GrantKind::Scan, &payload, &json(&next)?, now).await? {
            return Err(ScanFailure::NotFound);
        }
        tracing::info!(user_id = %caller.user.id, "scan session confirmed");
        Ok(())
    }

    /// The PC's poll: pending, or (once) the login the confirmation stands for.
    pub async fn poll_scan(&self, id: &str, peer: &Peer<'_>) -> Result<ScanPoll, ScanFailure> {
        let (scene, poll_secret) = id.split_once('.').ok_or(ScanFailure::NotFound)?;
        let grant_id = scene_id(scene);
        let now = self.parts.clock.now();
        let payload = self.parts.store.grant(&grant_id, GrantKind::Scan, now).await?.ok_or(ScanFailure::NotFound)?;
        let state: ScanState = serde_json::from_str(&payload).map_err(corrupt)?;
        let presented = URL_SAFE_NO_PAD.encode(secret_id(poll_secret));
        if aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), state.poll.as_bytes()).is_err() {
            return Err(ScanFailure::NotFound);
        }
        let Some(confirmed) = state.confirmed else {
            return Ok(ScanPoll::Pending(u64::try_from(state.expires_at - now.unix_timestamp()).unwrap_or(0)));
        };
        // Collected once: of two polls racing, one takes it.
        let taken = self.parts.store.take_grant(&grant_id, GrantKind::Scan, now).await?;
        if taken.as_deref() != Some(payload.as_str()) {
            return Err(ScanFailure::NotFound);
        }
        let user = self.parts.store.user(&confirmed.user).await?.ok_or(ScanFailure::NotFound)?;
        if let Some(banned) = Banned::of(&user, now) {
            return Err(banned.into());
        }
        if let Some(pending) = PendingDeletion::of(&user) {
            return Err(pending.into());
        }
        let origin = self.origin(peer);
        let record = LoginRecord { user, created: false };
        let outcome = self.outcome(record, &confirmed.appid, confirmed.openid, &origin, "scan login succeeded").await?;
        let event = self.event(EventKind::Login).user(outcome.user.id).app(&confirmed.appid).origin(&origin);
        self.record(event.detail("created", false).detail("via", "scan")).await;
        Ok(ScanPoll::Confirmed(Box::new(outcome)))
    }

    /// The mini-program `appid` names, or the only one.
    fn mini_program(&self, appid: Option<&str>) -> Result<&WechatClient, ScanFailure> {
        let minis = || self.parts.apps.iter().filter(|a| a.kind() == AppKind::MiniProgram);
        let known = || minis().map(WechatClient::appid).collect::<Vec<_>>().join(", ");
        match appid {
            Some(appid) => {
                minis().find(|a| a.appid() == appid).ok_or_else(|| ScanFailure::UnknownApp(appid.into(), known()))
            }
            None => {
                let mut all = minis();
                match (all.next(), all.next()) {
                    (Some(only), None) => Ok(only),
                    _ => Err(ScanFailure::AppRequired(known())),
                }
            }
        }
    }
}

/// Where a session is stored: by its scene, which both the PC and the mini-program know.
fn scene_id(scene: &str) -> [u8; 32] {
    secret_id(&format!("scan:{scene}"))
}

fn json(state: &ScanState) -> Result<String, Internal> {
    serde_json::to_string(state).map_err(corrupt)
}

fn corrupt(e: serde_json::Error) -> Internal {
    Internal::Store(StoreError::Corrupt(format!("a scan session: {e}")))
}
