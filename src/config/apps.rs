//! The mini-programs wxauth serves: one from `wechat_appid` / `wechat_secret`, or a list
//! from `[[wechat_apps]]` in the file.

use secrecy::SecretString;

use super::{
    ConfigError, Mode,
    catalog::{self, APPS_KEY, WECHAT_APPID, WECHAT_DEFAULT_ROLE, WECHAT_SECRET},
    load::{Layers, invalid},
};

/// AppID used in dev mode when none is configured.
pub const DEV_APPID: &str = "wxdev00000000000";
/// AppSecret used in dev mode when none is configured.
pub const DEV_SECRET: &str = "dev-secret-not-for-production";

/// Which WeChat surface an app is: how its people log in and how a code is exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppKind {
    /// A mini-program: `wx.login` codes, exchanged at `code2Session`.
    #[default]
    MiniProgram,
    /// An official account (公众号): web pages in WeChat's browser, authorised at
    /// `connect/oauth2/authorize`.
    OfficialAccount,
    /// An Open Platform website application: QR login at `connect/qrconnect`.
    Website,
    /// An Open Platform mobile application: codes from the WeChat SDK, posted to
    /// `/v1/login` like a mini-program's.
    MobileApp,
}

impl AppKind {
    /// Every kind, in the documentation's order.
    pub const ALL: [Self; 4] = [Self::MiniProgram, Self::OfficialAccount, Self::Website, Self::MobileApp];

    /// The name in the config file and in API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MiniProgram => "miniprogram",
            Self::OfficialAccount => "official_account",
            Self::Website => "website",
            Self::MobileApp => "mobile_app",
        }
    }

    /// Whether people log in through a browser redirect (`/v1/oauth/wechat/authorize`).
    pub fn is_browser(self) -> bool {
        matches!(self, Self::OfficialAccount | Self::Website)
    }

    fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// One app's credentials.
#[derive(Debug, Clone)]
pub struct WechatApp {
    /// The mini-program's AppID.
    pub appid: String,
    /// The mini-program's AppSecret: printed only as `[REDACTED]`.
    pub secret: SecretString,
    /// The role a user first seen through this app gets, if any.
    pub default_role: Option<String>,
    /// Which surface it is.
    pub kind: AppKind,
    /// The client URLs a browser login of this app may return to, compared exactly (browser
    /// kinds only, at least one).
    pub redirect_uris: Vec<String>,
}

/// The apps: the list when the file has one, else the flat pair.
pub(super) fn apps(layers: &Layers, mode: Mode) -> Result<Vec<WechatApp>, ConfigError> {
    if layers.apps.is_empty() { Ok(vec![single_app(layers, mode)?]) } else { app_list(layers, mode) }
}

/// Dev mode logs anyone in as anyone; with a real secret around, it is probably pointed at
/// production settings (keys, issuer, audience) by mistake.
fn refuse_secret_in_dev(env: String, key: &'static str) -> ConfigError {
    ConfigError::Invalid {
        env,
        key,
        reason: "must not be set with --dev: dev mode uses its built-in mock and signs tokens for any code; \
                 unset it, or run without --dev"
            .into(),
    }
}

/// Today's flat `wechat_appid` / `wechat_secret`.
fn single_app(layers: &Layers, mode: Mode) -> Result<WechatApp, ConfigError> {
    let non_empty = |setting| layers.get(setting).map(str::trim).filter(|v| !v.is_empty());
    if mode == Mode::Dev && non_empty(&WECHAT_SECRET).is_some() {
        return Err(refuse_secret_in_dev(WECHAT_SECRET.env(), WECHAT_SECRET.key));
    }
    let (appid, secret) = match (mode, non_empty(&WECHAT_APPID), non_empty(&WECHAT_SECRET)) {
        (_, Some(appid), Some(secret)) => (appid.to_owned(), secret.to_owned()),
        (Mode::Serve, appid, secret) => {
            let missing: Vec<String> = [(&WECHAT_APPID, appid), (&WECHAT_SECRET, secret)]
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(s, _)| s.env())
                .collect();
            return Err(ConfigError::Missing(missing.join(", ")));
        }
        (_, appid, secret) => (appid.unwrap_or(DEV_APPID).to_owned(), secret.unwrap_or(DEV_SECRET).to_owned()),
    };
    if !is_appid(&appid) {
        return Err(invalid(&WECHAT_APPID, APPID_SHAPE.into()));
    }
    let default_role =
        non_empty(&WECHAT_DEFAULT_ROLE).map(role).transpose().map_err(|e| invalid(&WECHAT_DEFAULT_ROLE, e))?;
    Ok(WechatApp { appid, secret: secret.into(), default_role, kind: AppKind::MiniProgram, redirect_uris: Vec::new() })
}

/// `[[wechat_apps]]`: every entry needs both values (dev mode: no secret), AppIDs distinct,
/// and the flat single-app settings must not be set beside it.
fn app_list(layers: &Layers, mode: Mode) -> Result<Vec<WechatApp>, ConfigError> {
    let list_error = |reason: String| ConfigError::Invalid { env: catalog::env_name(APPS_KEY), key: APPS_KEY, reason };
    for setting in [&WECHAT_APPID, &WECHAT_SECRET, &WECHAT_DEFAULT_ROLE] {
        if layers.get(setting).is_some() {
            return Err(invalid(
                setting,
                format!("must not be set together with [[{APPS_KEY}]] in the config file; list every app there"),
            ));
        }
    }
    let mut apps: Vec<WechatApp> = Vec::new();
    for (i, entry) in layers.apps.iter().enumerate() {
        let n = i + 1;
        let appid = entry.appid.trim();
        if !is_appid(appid) {
            return Err(list_error(format!("app {n}: {APPID_SHAPE}")));
        }
        let secret = match (mode, entry.secret.trim()) {
            (Mode::Dev, "") => DEV_SECRET,
            (Mode::Dev, _) => return Err(refuse_secret_in_dev(catalog::env_name(APPS_KEY), APPS_KEY)),
            (Mode::Serve, "") => return Err(list_error(format!("app {n} ({appid}) has no secret"))),
            (_, secret) => secret,
        };
        if apps.iter().any(|a| a.appid == appid) {
            return Err(list_error(format!("app {appid} is listed twice")));
        }
        let default_role = match entry.default_role.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(role(raw).map_err(|e| list_error(format!("app {n} ({appid}): default_role {e}")))?),
        };
        let kind = match entry.kind.as_deref().map(str::trim) {
            None | Some("") => AppKind::MiniProgram,
            Some(raw) => AppKind::parse(raw).ok_or_else(|| {
                let kinds: Vec<&str> = AppKind::ALL.iter().map(|k| k.as_str()).collect();
                list_error(format!("app {n} ({appid}): kind {raw:?} is not one of {}", kinds.join(", ")))
            })?,
        };
        let redirect_uris = entry
            .redirect_uris
            .iter()
            .map(|raw| super::urls::redirect_uri(raw.trim(), mode == Mode::Dev))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| list_error(format!("app {n} ({appid}): {e}")))?;
        match (kind.is_browser(), redirect_uris.is_empty()) {
            (true, true) => {
                return Err(list_error(format!(
                    "app {n} ({appid}): kind {} needs redirect_uris, the client URLs its browser logins may return to",
                    kind.as_str()
                )));
            }
            (false, false) => {
                return Err(list_error(format!(
                    "app {n} ({appid}): redirect_uris is only for official_account and website apps, not {}",
                    kind.as_str()
                )));
            }
            _ => {}
        }
        apps.push(WechatApp { appid: appid.to_owned(), secret: secret.into(), default_role, kind, redirect_uris });
    }
    Ok(apps)
}

/// A default role, checked like an operator's roles.
fn role(raw: &str) -> Result<String, String> {
    match crate::domain::roles(&[raw.to_owned()]) {
        Ok(mut roles) => Ok(roles.remove(0)),
        Err(e) => Err(e.to_string()),
    }
}

const APPID_SHAPE: &str = "expected an AppID of letters and digits only, such as wx4f4bc4dec97d474b";

fn is_appid(appid: &str) -> bool {
    !appid.is_empty() && appid.bytes().all(|b| b.is_ascii_alphanumeric())
}
