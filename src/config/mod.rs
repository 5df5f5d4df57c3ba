//! Typed settings: built-in defaults, then an optional TOML file, then `WXAUTH_*`
//! environment variables, merged by figment ([`load`]) and validated once at start-up
//! into one struct per concern.
//!
//! Every setting is declared once, in [`catalog`]: its TOML key (the environment variable
//! is the key upper-cased with a `WXAUTH_` prefix), its default, its range and its
//! documentation, from which `docs/configuration.md`'s tables are generated. This module
//! imports `domain` only: the parts of wxauth that use a setting import it from here.

mod apps;
pub mod catalog;
mod clients;
mod load;
#[cfg(test)]
mod tests;
mod urls;
mod webhooks;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use url::Url;

pub use self::{
    apps::{AppKind, DEV_APPID, DEV_SECRET, WechatApp},
    catalog::{APPS_KEY, env_name},
    clients::{IntrospectionClient, MIN_CLIENT_SECRET},
    load::unknown_env_vars,
    urls::DatabaseUrl,
    webhooks::{MIN_WEBHOOK_SECRET, Webhook},
};
use self::{catalog::*, load::Layers, load::invalid};
use crate::domain::SigningAlg;

/// Why settings could not be loaded. Each message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file given with `--config`.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile {
        /// The file given with `--config`.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// The file names a setting that does not exist (most often a typo).
    #[error("config file {path}: unknown setting `{key}` (known: {known})")]
    UnknownKey {
        /// The file given with `--config`.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// Every key that is known.
        known: String,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid {env} (`{key}`): {reason}")]
    Invalid {
        /// Environment variable name.
        env: String,
        /// TOML key.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// Settings that production needs are missing.
    #[error(
        "missing required settings: {0}. Set them (environment or --config file), \
         or run `wxauth serve --dev` for a local mock of WeChat"
    )]
    Missing(String),
}

/// How the settings will be used, which decides what is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `serve` against the real WeChat: credentials are required.
    Serve,
    /// `serve --dev`: WeChat is the built-in mock, credentials get defaults.
    Dev,
    /// Commands that never call WeChat (`keys ...`): credentials are not needed.
    Offline,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything wxauth needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Dev mode: built-in WeChat mock, generated keys, loud warnings.
    pub dev: bool,
    /// Address the HTTP server binds to.
    pub listen: SocketAddr,
    /// Signing key ring directory.
    pub keys_dir: PathBuf,
    /// Where users and bindings are stored.
    pub store: StoreSettings,
    /// Log output format.
    pub log_format: LogFormat,
    /// Token settings.
    pub token: TokenSettings,
    /// WeChat settings.
    pub wechat: WechatSettings,
    /// Whether an unknown openid gets a new user or must be bound to an account.
    pub registration: Registration,
    /// Attempt limits of `POST /v1/login` and `POST /v1/bind`.
    pub attempt_limits: AttemptLimits,
    /// How long a bind ticket works (`WXAUTH_BIND_TICKET_TTL`, at most 5 minutes).
    pub bind_ticket_ttl: Duration,
    /// The Unix socket the CLI's `accounts` and `users` commands reach the server through.
    pub admin_socket: PathBuf,
    /// Where the admin API listens (`WXAUTH_ADMIN_LISTEN`, loopback only); `None`: nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// Whether `/metrics` is served (`WXAUTH_METRICS`).
    pub metrics: bool,
    /// Whether Swagger UI is served at `/docs` (`WXAUTH_DOCS`; on in dev mode only, by
    /// default).
    pub docs: bool,
    /// Open client connections at most (`WXAUTH_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Services that may introspect tokens (`[[introspection_clients]]`).
    pub introspection_clients: Vec<IntrospectionClient>,
    /// How long events are kept (`WXAUTH_EVENT_RETENTION_DAYS`).
    pub event_retention: Duration,
    /// Time between a deletion request and the erasure (`WXAUTH_DELETION_GRACE_SECS`).
    pub deletion_grace: Duration,
    /// The receivers of events (`[[webhooks]]`).
    pub webhooks: Vec<Webhook>,
}

/// What a login with an openid that is bound to no user does (`WXAUTH_REGISTRATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A new user is created (the default).
    Auto,
    /// 403 `not_bound` with a bind ticket: the person must bind an account first.
    Bind,
    /// 403 `phone_required` with a bind ticket: the person proves a phone number
    /// (`getPhoneNumber`), and binds to the account with it or gets a new one.
    Phone,
}

/// Attempts allowed per minute; 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLimits {
    /// `POST /v1/login` and `POST /v1/bind` together, per client IP address
    /// (`WXAUTH_RATE_LIMIT_PER_MINUTE`; off by default, see docs/configuration.md on shared addresses).
    pub requests_per_ip: u32,
    /// Per username (`WXAUTH_BIND_ATTEMPTS_PER_USERNAME`).
    pub per_username: u32,
    /// Per client IP address (`WXAUTH_BIND_ATTEMPTS_PER_IP`).
    pub per_ip: u32,
    /// `POST /v1/token/refresh` per refresh family (`WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY`).
    pub refresh_per_family: u32,
    /// `POST /v1/token/refresh` per client IP address (`WXAUTH_REFRESH_ATTEMPTS_PER_IP`).
    pub refresh_per_ip: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`WXAUTH_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Which store backend to use, with the settings that only make sense for it.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// The embedded sled database (one process per data directory).
    Sled(SledSettings),
    /// A PostgreSQL database, which several replicas may share.
    Postgres(PostgresSettings),
}

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Where the database is (`WXAUTH_DATABASE_URL`).
    pub url: DatabaseUrl,
    /// Connections each replica keeps at most (`WXAUTH_DATABASE_POOL_SIZE`).
    pub pool_size: u32,
    /// How long one statement, or the wait for a free connection, may take
    /// (`WXAUTH_DATABASE_STATEMENT_TIMEOUT_MS`).
    pub statement_timeout: Duration,
}

/// Settings of the embedded sled store.
#[derive(Debug, Clone)]
pub struct SledSettings {
    /// Database directory (`WXAUTH_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Page cache size in bytes (`WXAUTH_STORE_CACHE_MB`).
    pub cache_bytes: u64,
}

/// How tokens are signed and checked.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss` claim and the base of the discovery URLs, without a trailing slash.
    /// `None`: `http://` + the address the server actually bound.
    pub issuer: Option<String>,
    /// `aud` claim.
    pub audience: String,
    /// Access-token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime (each refresh gets a fresh one).
    pub refresh_token_ttl: Duration,
    /// Refresh families (logins) a user keeps at most; the oldest beyond go
    /// (`WXAUTH_REFRESH_FAMILIES_PER_USER`).
    pub refresh_families_per_user: usize,
    /// Algorithm of new signing keys, and of the key that signs.
    pub signing_alg: SigningAlg,
    /// How long after `keys rotate` a new key starts signing (`WXAUTH_KEY_ACTIVATION_SECS`).
    pub key_activation: Duration,
    /// How often the server creates the next key itself (`WXAUTH_KEY_ROTATION_DAYS`);
    /// `None`: manual rotation only.
    pub key_rotation: Option<Duration>,
}

/// How to reach WeChat.
#[derive(Debug, Clone)]
pub struct WechatSettings {
    /// The mini-programs users log in through: at least one, AppIDs distinct. The first
    /// is the default when a login names none.
    pub apps: Vec<WechatApp>,
    /// Base URL of the WeChat API.
    pub base_url: Url,
    /// Base URL of WeChat's authorize pages (`WXAUTH_WECHAT_OPEN_URL`).
    pub open_url: Url,
    /// The deadline of one login's exchange with WeChat, the retry after -1 included
    /// (`WXAUTH_WECHAT_TIMEOUT_MS`).
    pub timeout: Duration,
    /// The bound on requests in flight and the circuit breaker
    /// (`WXAUTH_WECHAT_MAX_INFLIGHT`, `WXAUTH_WECHAT_BREAKER_FAILURES`,
    /// `WXAUTH_WECHAT_BREAKER_OPEN_SECS`).
    pub limits: WechatLimits,
}

/// Limits of the road to WeChat.
#[derive(Debug, Clone, Copy)]
pub struct WechatLimits {
    /// Requests to WeChat in flight at once (`WXAUTH_WECHAT_MAX_INFLIGHT`).
    pub max_inflight: usize,
    /// Consecutive transport failures that open the breaker (`WXAUTH_WECHAT_BREAKER_FAILURES`).
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe is let through
    /// (`WXAUTH_WECHAT_BREAKER_OPEN_SECS`).
    pub breaker_open: Duration,
}

/// Default WeChat API base URL.
pub const WECHAT_BASE_URL_DEFAULT: &str = "https://api.weixin.qq.com";

impl Settings {
    /// Loads settings from the optional TOML `file` and the process environment.
    pub fn load(file: Option<&std::path::Path>, mode: Mode) -> Result<Self, ConfigError> {
        Self::load_from(file, mode, |name| std::env::var(name).ok())
    }

    /// Like [`Settings::load`], with the environment supplied by `env` (for tests).
    pub fn load_from(
        file: Option<&std::path::Path>,
        mode: Mode,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::validate(&Layers::load(file, env)?, mode)
    }

    fn validate(layers: &Layers, mode: Mode) -> Result<Self, ConfigError> {
        let dev = mode == Mode::Dev;
        let listen: SocketAddr = layers.parse(&LISTEN, "HOST:PORT such as 127.0.0.1:8080")?.expect("declared default");
        if dev && !listen.ip().is_loopback() {
            return Err(invalid(
                &LISTEN,
                format!(
                    "dev mode listens on loopback only, because it signs tokens for any code; \
                     got {listen}: use 127.0.0.1:{port}, or run without --dev",
                    port = listen.port()
                ),
            ));
        }
        let log_format = match layers.get(&LOG_FORMAT).map(str::trim) {
            None if dev => LogFormat::Text,
            None => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid(&LOG_FORMAT, format!("expected text or json, got {other:?}"))),
        };
        let wechat = wechat_settings(layers, mode)?;
        let registration = match layers.get(&REGISTRATION).map(str::trim) {
            Some("auto") => Registration::Auto,
            Some("bind") => Registration::Bind,
            Some("phone") => Registration::Phone,
            other => return Err(invalid(&REGISTRATION, format!("expected auto, bind or phone, got {other:?}"))),
        };
        let data_dir = layers.path(&DATA_DIR)?.expect("declared default");
        let admin_socket = layers.path(&ADMIN_SOCKET)?.unwrap_or_else(|| data_dir.join("admin.sock"));
        let admin_listen = match layers.get(&ADMIN_LISTEN).map(str::trim) {
            None | Some("") => None,
            Some(_) => {
                let addr: SocketAddr = layers.parse(&ADMIN_LISTEN, "HOST:PORT such as 127.0.0.1:8081")?.expect("set");
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        &ADMIN_LISTEN,
                        format!(
                            "the admin API listens on loopback only, because wxauth speaks plain HTTP and admin \
                             tokens must not cross a network in clear; got {addr}: use 127.0.0.1:{port} and put a \
                             TLS proxy (or an SSH tunnel) in front",
                            port = addr.port()
                        ),
                    ));
                }
                Some(addr)
            }
        };
        let per_minute = |setting| layers.number(setting).map(|n| n as u32);
        let attempt_limits = AttemptLimits {
            requests_per_ip: per_minute(&RATE_LIMIT_PER_MINUTE)?,
            per_username: per_minute(&BIND_ATTEMPTS_PER_USERNAME)?,
            per_ip: per_minute(&BIND_ATTEMPTS_PER_IP)?,
            refresh_per_family: per_minute(&REFRESH_ATTEMPTS_PER_FAMILY)?,
            refresh_per_ip: per_minute(&REFRESH_ATTEMPTS_PER_IP)?,
            trusted_proxies: urls::trusted_proxies(layers.get(&TRUSTED_PROXIES).unwrap_or_default())?,
        };
        Ok(Settings {
            dev,
            listen,
            admin_listen,
            metrics: layers.on_or_off(&METRICS, true)?,
            // A 1.7 MB page for people trying the API: production serves it only when asked.
            docs: layers.on_or_off(&DOCS, dev)?,
            max_connections: layers.number(&MAX_CONNECTIONS)? as usize,
            introspection_clients: clients::clients(layers)?,
            webhooks: webhooks::webhooks(layers)?,
            event_retention: Duration::from_secs(layers.number(&EVENT_RETENTION_DAYS)? * 86_400),
            deletion_grace: Duration::from_secs(layers.number(&DELETION_GRACE_SECS)?),
            keys_dir: layers.path(&KEYS_DIR)?.expect("declared default"),
            registration,
            attempt_limits,
            bind_ticket_ttl: Duration::from_secs(layers.number(&BIND_TICKET_TTL)?),
            admin_socket,
            store: store_settings(layers, data_dir)?,
            log_format,
            token: token_settings(layers, dev, &wechat)?,
            wechat,
        })
    }
}

fn token_settings(layers: &Layers, dev: bool, wechat: &WechatSettings) -> Result<TokenSettings, ConfigError> {
    let seconds = |setting| layers.number(setting).map(Duration::from_secs);
    Ok(TokenSettings {
        issuer: layers.get(&ISSUER).map(|raw| urls::parse_issuer(raw, dev)).transpose()?,
        audience: match layers.get(&AUDIENCE).map(str::trim) {
            Some("") => return Err(invalid(&AUDIENCE, "must not be empty".into())),
            Some(aud) => aud.to_owned(),
            None => wechat.apps[0].appid.clone(),
        },
        access_token_ttl: seconds(&ACCESS_TOKEN_TTL)?,
        refresh_token_ttl: seconds(&REFRESH_TOKEN_TTL)?,
        refresh_families_per_user: layers.number(&REFRESH_FAMILIES_PER_USER)? as usize,
        signing_alg: layers.parse(&SIGNING_ALG, "one of ES256, EdDSA, RS256")?.expect("declared default"),
        key_activation: seconds(&KEY_ACTIVATION_SECS)?,
        key_rotation: match layers.number(&KEY_ROTATION_DAYS)? {
            0 => None,
            days => Some(Duration::from_secs(days * 86_400)),
        },
    })
}

fn store_settings(layers: &Layers, data_dir: PathBuf) -> Result<StoreSettings, ConfigError> {
    let url = layers.get(&DATABASE_URL).filter(|u| !u.trim().is_empty());
    match layers.get(&STORE).map(str::trim) {
        Some("sled") => {
            if url.is_some() {
                return Err(invalid(
                    &DATABASE_URL,
                    "is set, but WXAUTH_STORE is sled (the default): set WXAUTH_STORE=postgres to use the database, \
                     or unset WXAUTH_DATABASE_URL"
                        .into(),
                ));
            }
            Ok(StoreSettings::Sled(SledSettings {
                data_dir,
                cache_bytes: layers.number(&STORE_CACHE_MB)? * 1024 * 1024,
            }))
        }
        Some("postgres") => {
            let Some(url) = url else {
                return Err(invalid(
                    &DATABASE_URL,
                    "is required with WXAUTH_STORE=postgres: postgres://USER:PASSWORD@HOST:PORT/DATABASE".into(),
                ));
            };
            Ok(StoreSettings::Postgres(PostgresSettings {
                url: DatabaseUrl::parse(url).map_err(|reason| invalid(&DATABASE_URL, reason))?,
                pool_size: layers.number(&DATABASE_POOL_SIZE)? as u32,
                statement_timeout: Duration::from_millis(layers.number(&DATABASE_STATEMENT_TIMEOUT_MS)?),
            }))
        }
        other => Err(invalid(&STORE, format!("expected sled or postgres, got {other:?}"))),
    }
}

fn wechat_settings(layers: &Layers, mode: Mode) -> Result<WechatSettings, ConfigError> {
    Ok(WechatSettings {
        apps: apps::apps(layers, mode)?,
        base_url: urls::parse_base_url(layers.get(&WECHAT_BASE_URL).expect("declared default"))?,
        open_url: urls::parse_open_url(layers.get(&WECHAT_OPEN_URL).expect("declared default"))?,
        timeout: Duration::from_millis(layers.number(&WECHAT_TIMEOUT_MS)?),
        limits: WechatLimits {
            max_inflight: layers.number(&WECHAT_MAX_INFLIGHT)? as usize,
            breaker_failures: layers.number(&WECHAT_BREAKER_FAILURES)? as u32,
            breaker_open: Duration::from_secs(layers.number(&WECHAT_BREAKER_OPEN_SECS)?),
        },
    })
}
