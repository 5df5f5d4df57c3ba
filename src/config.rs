//! Typed settings: built-in defaults, then an optional TOML file, then `WXAUTH_*`
//! environment variables, validated once at start-up.
//!
//! Every setting has one name in the TOML file and one environment variable (the TOML key
//! upper-cased with a `WXAUTH_` prefix), so the README's single table describes both.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use url::Url;

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

/// A string that must not be printed, such as the AppSecret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
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
    /// Whether `/metrics` is served (`WXAUTH_METRICS`).
    pub metrics: bool,
    /// Whether Swagger UI is served at `/docs` (`WXAUTH_DOCS`; on in dev mode only, by
    /// default).
    pub docs: bool,
    /// Open client connections at most (`WXAUTH_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

/// What a login with an openid that is bound to no user does (`WXAUTH_REGISTRATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A new user is created (the default).
    Auto,
    /// 403 `not_bound` with a bind ticket: the person must bind an account first.
    Bind,
}

/// Attempts allowed per minute; 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLimits {
    /// `POST /v1/login` and `POST /v1/bind` together, per client IP address
    /// (`WXAUTH_RATE_LIMIT_PER_MINUTE`; off by default, see the README on shared IPs).
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

/// A `postgres://` URL. It usually holds a password, so it prints only redacted: in
/// `Debug`, in `Display` and therefore in every log line and error message.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(url::Url);

impl DatabaseUrl {
    /// Checks the scheme; the error never repeats the value (it may hold a password).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw.trim())
            .map_err(|e| format!("not a URL ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "expected a postgres:// URL such as postgres://USER:PASSWORD@HOST:PORT/DATABASE, got scheme {:?}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL names no host; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE".into());
        }
        Ok(Self(url))
    }

    /// The URL with its password: only for connecting.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with the password (in the authority or as a query parameter) replaced.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("REDACTED"));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let secret = k.to_ascii_lowercase().contains("password");
                    (k.into_owned(), if secret { "REDACTED".to_owned() } else { v.into_owned() })
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
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
    /// The deadline of one login's exchange with WeChat, the retry after -1 included
    /// (`WXAUTH_WECHAT_TIMEOUT_MS`).
    pub timeout: Duration,
    /// The bound on requests in flight and the circuit breaker
    /// (`WXAUTH_WECHAT_MAX_INFLIGHT`, `WXAUTH_WECHAT_BREAKER_FAILURES`,
    /// `WXAUTH_WECHAT_BREAKER_OPEN_SECS`).
    pub limits: crate::wechat::Limits,
}

/// One mini-program's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatApp {
    /// The mini-program's AppID.
    pub appid: String,
    /// The mini-program's AppSecret.
    pub secret: Secret,
}

/// Default WeChat API base URL.
pub const WECHAT_BASE_URL: &str = "https://api.weixin.qq.com";
/// AppID used in dev mode when none is configured.
pub const DEV_APPID: &str = "wxdev00000000000";
/// AppSecret used in dev mode when none is configured.
pub const DEV_SECRET: &str = "dev-secret-not-for-production";

/// Every setting's TOML key; the environment variable is `WXAUTH_` + the key upper-cased.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "keys_dir",
    "issuer",
    "audience",
    "access_token_ttl",
    "refresh_token_ttl",
    "refresh_families_per_user",
    "refresh_attempts_per_family",
    "refresh_attempts_per_ip",
    "signing_alg",
    "key_activation_secs",
    "key_rotation_days",
    "wechat_appid",
    "wechat_secret",
    "wechat_base_url",
    "wechat_timeout_ms",
    "wechat_max_inflight",
    "wechat_breaker_failures",
    "wechat_breaker_open_secs",
    "store_cache_mb",
    "store",
    "database_url",
    "database_pool_size",
    "database_statement_timeout_ms",
    "log_format",
    "registration",
    "bind_attempts_per_username",
    "bind_attempts_per_ip",
    "admin_socket",
    "bind_ticket_ttl",
    "trusted_proxies",
    "rate_limit_per_minute",
    "metrics",
    "docs",
    "max_connections",
];

/// The TOML key of the list of apps (`[[wechat_apps]]`); it has no environment variable.
pub const APPS_KEY: &str = "wechat_apps";

/// `WXAUTH_*` variables in the process environment that name no setting (typos, or
/// settings of another version), for a warning at start-up: they are otherwise ignored.
pub fn unknown_env_vars() -> Vec<String> {
    let known: Vec<String> = KEYS.iter().map(|k| env_name(k)).collect();
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|n| n.starts_with("WXAUTH_"))
        .collect();
    unknown.retain(|n| !known.contains(n));
    unknown.sort();
    unknown
}

/// The environment variable for a TOML key.
pub fn env_name(key: &str) -> String {
    format!("WXAUTH_{}", key.to_ascii_uppercase())
}

/// Raw values after layering, before validation.
struct Layers {
    values: BTreeMap<&'static str, String>,
    /// `[[wechat_apps]]` from the file, as (appid, secret) pairs.
    apps: Vec<(String, String)>,
}

impl Layers {
    fn get(&self, key: &'static str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    fn parse<T: FromStr>(&self, key: &'static str, default: T, expected: &str) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| invalid(key, format!("expected {expected}, got {raw:?}"))),
        }
    }

    fn ranged(
        &self,
        key: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        unit: &str,
    ) -> Result<u64, ConfigError> {
        let expected = format!("a whole number of {unit} from {} to {}", range.start(), range.end());
        let value = self.parse(key, default, &expected)?;
        if range.contains(&value) { Ok(value) } else { Err(invalid(key, format!("expected {expected}, got {value}"))) }
    }
}

/// A setting that is `on` or `off`, `default` when unset.
fn on_or_off(layers: &Layers, key: &'static str, default: bool) -> Result<bool, ConfigError> {
    match layers.get(key).map(str::trim) {
        None => Ok(default),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(invalid(key, format!("expected on or off, got {other:?}"))),
    }
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { env: env_name(key), key, reason }
}

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
        let (mut values, apps) = match file {
            Some(path) => read_file(path)?,
            None => (BTreeMap::new(), Vec::new()),
        };
        for key in KEYS {
            if let Some(value) = env(&env_name(key)) {
                values.insert(key, value);
            }
        }
        Self::validate(&Layers { values, apps }, mode)
    }

    fn validate(layers: &Layers, mode: Mode) -> Result<Self, ConfigError> {
        let dev = mode == Mode::Dev;
        let listen: SocketAddr =
            layers.parse("listen", SocketAddr::from(([127, 0, 0, 1], 8080)), "HOST:PORT such as 127.0.0.1:8080")?;
        if dev && !listen.ip().is_loopback() {
            return Err(invalid(
                "listen",
                format!(
                    "dev mode listens on loopback only, because it signs tokens for any code; \
                     got {listen}: use 127.0.0.1:{port}, or run without --dev",
                    port = listen.port()
                ),
            ));
        }
        let signing_alg = layers.parse("signing_alg", SigningAlg::ES256, "one of ES256, EdDSA, RS256")?;
        let log_format = match layers.get("log_format").map(str::trim) {
            None if dev => LogFormat::Text,
            None => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid("log_format", format!("expected text or json, got {other:?}")));
            }
        };
        let wechat = wechat_settings(layers, mode)?;
        let issuer = layers.get("issuer").map(|raw| parse_issuer(raw, dev)).transpose()?;
        let audience = match layers.get("audience").map(str::trim) {
            Some("") => return Err(invalid("audience", "must not be empty".into())),
            Some(aud) => aud.to_owned(),
            None => wechat.apps[0].appid.clone(),
        };
        let registration = match layers.get("registration").map(str::trim) {
            None | Some("auto") => Registration::Auto,
            Some("bind") => Registration::Bind,
            Some(other) => return Err(invalid("registration", format!("expected auto or bind, got {other:?}"))),
        };
        let data_dir = path_setting(layers, "data_dir", "./data")?;
        let admin_socket = match layers.get("admin_socket") {
            None => data_dir.join("admin.sock"),
            Some(_) => path_setting(layers, "admin_socket", "")?,
        };
        let limit = |key| layers.ranged(key, 0, 0..=1_000_000, "attempts per minute").map(|n| n as u32);
        let attempt_limits = AttemptLimits {
            requests_per_ip: limit("rate_limit_per_minute")?,
            per_username: if layers.get("bind_attempts_per_username").is_some() {
                limit("bind_attempts_per_username")?
            } else {
                5
            },
            per_ip: if layers.get("bind_attempts_per_ip").is_some() { limit("bind_attempts_per_ip")? } else { 20 },
            refresh_per_family: layers.ranged(
                "refresh_attempts_per_family",
                10,
                0..=1_000_000,
                "attempts per minute",
            )? as u32,
            refresh_per_ip: layers.ranged("refresh_attempts_per_ip", 600, 0..=1_000_000, "attempts per minute")? as u32,
            trusted_proxies: trusted_proxies(layers.get("trusted_proxies").unwrap_or_default())?,
        };
        let metrics = on_or_off(layers, "metrics", true)?;
        // A 1.7 MB page for people trying the API: production serves it only when asked.
        let docs = on_or_off(layers, "docs", dev)?;
        Ok(Settings {
            dev,
            listen,
            metrics,
            docs,
            max_connections: layers.ranged("max_connections", 10_000, 1..=1_000_000, "connections")? as usize,
            keys_dir: path_setting(layers, "keys_dir", "./keys")?,
            registration,
            attempt_limits,
            bind_ticket_ttl: Duration::from_secs(layers.ranged("bind_ticket_ttl", 300, 1..=300, "seconds")?),
            admin_socket,
            store: store_settings(layers, data_dir)?,
            log_format,
            token: TokenSettings {
                issuer,
                audience,
                access_token_ttl: Duration::from_secs(layers.ranged(
                    "access_token_ttl",
                    900,
                    60..=86_400,
                    "seconds",
                )?),
                refresh_token_ttl: Duration::from_secs(layers.ranged(
                    "refresh_token_ttl",
                    2_592_000,
                    300..=31_536_000,
                    "seconds",
                )?),
                refresh_families_per_user: layers.ranged("refresh_families_per_user", 20, 1..=1000, "families")?
                    as usize,
                signing_alg,
                key_activation: Duration::from_secs(layers.ranged(
                    "key_activation_secs",
                    600,
                    0..=604_800,
                    "seconds",
                )?),
                key_rotation: match layers.ranged("key_rotation_days", 0, 0..=3650, "days")? {
                    0 => None,
                    days => Some(Duration::from_secs(days * 86_400)),
                },
            },
            wechat,
        })
    }
}

fn store_settings(layers: &Layers, data_dir: PathBuf) -> Result<StoreSettings, ConfigError> {
    let url = layers.get("database_url").filter(|u| !u.trim().is_empty());
    match layers.get("store").map(str::trim) {
        None | Some("sled") => {
            if url.is_some() {
                return Err(invalid(
                    "database_url",
                    "is set, but WXAUTH_STORE is sled (the default): set WXAUTH_STORE=postgres to use the database, \
                     or unset WXAUTH_DATABASE_URL"
                        .into(),
                ));
            }
            Ok(StoreSettings::Sled(SledSettings {
                data_dir,
                cache_bytes: layers.ranged("store_cache_mb", 16, 1..=65_536, "MiB")? * 1024 * 1024,
            }))
        }
        Some("postgres") => {
            let Some(url) = url else {
                return Err(invalid(
                    "database_url",
                    "is required with WXAUTH_STORE=postgres: postgres://USER:PASSWORD@HOST:PORT/DATABASE".into(),
                ));
            };
            Ok(StoreSettings::Postgres(PostgresSettings {
                url: DatabaseUrl::parse(url).map_err(|reason| invalid("database_url", reason))?,
                pool_size: layers.ranged("database_pool_size", 16, 1..=1_000, "connections")? as u32,
                statement_timeout: Duration::from_millis(layers.ranged(
                    "database_statement_timeout_ms",
                    5_000,
                    100..=600_000,
                    "milliseconds",
                )?),
            }))
        }
        Some(other) => Err(invalid("store", format!("expected sled or postgres, got {other:?}"))),
    }
}

fn wechat_settings(layers: &Layers, mode: Mode) -> Result<WechatSettings, ConfigError> {
    let raw_url = layers.get("wechat_base_url").unwrap_or(WECHAT_BASE_URL);
    Ok(WechatSettings {
        apps: if layers.apps.is_empty() { vec![single_app(layers, mode)?] } else { app_list(layers, mode)? },
        base_url: parse_base_url(raw_url)?,
        timeout: Duration::from_millis(layers.ranged("wechat_timeout_ms", 5_000, 100..=60_000, "milliseconds")?),
        limits: crate::wechat::Limits {
            max_inflight: layers.ranged("wechat_max_inflight", 2048, 1..=1_000_000, "requests")? as usize,
            breaker_failures: layers.ranged("wechat_breaker_failures", 20, 1..=1_000_000, "failures")? as u32,
            breaker_open: Duration::from_secs(layers.ranged("wechat_breaker_open_secs", 5, 1..=3_600, "seconds")?),
        },
    })
}

/// Dev mode logs anyone in as anyone; with a real secret around, it is probably pointed at
/// production settings (keys, issuer, audience) by mistake.
fn refuse_secret_in_dev(key: &'static str) -> ConfigError {
    invalid(
        key,
        "must not be set with --dev: dev mode uses its built-in mock and signs tokens for any code; \
         unset it, or run without --dev"
            .into(),
    )
}

/// Today's flat `wechat_appid` / `wechat_secret`.
fn single_app(layers: &Layers, mode: Mode) -> Result<WechatApp, ConfigError> {
    let non_empty = |key| layers.get(key).map(str::trim).filter(|v| !v.is_empty());
    if mode == Mode::Dev && non_empty("wechat_secret").is_some() {
        return Err(refuse_secret_in_dev("wechat_secret"));
    }
    let (appid, secret) = match (mode, non_empty("wechat_appid"), non_empty("wechat_secret")) {
        (_, Some(appid), Some(secret)) => (appid.to_owned(), secret.to_owned()),
        (Mode::Serve, appid, secret) => {
            let missing: Vec<String> = [("wechat_appid", appid), ("wechat_secret", secret)]
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| env_name(k))
                .collect();
            return Err(ConfigError::Missing(missing.join(", ")));
        }
        (_, appid, secret) => (appid.unwrap_or(DEV_APPID).to_owned(), secret.unwrap_or(DEV_SECRET).to_owned()),
    };
    check_appid("wechat_appid", &appid)?;
    Ok(WechatApp { appid, secret: Secret::new(secret) })
}

/// `[[wechat_apps]]`: every entry needs both values (dev mode: no secret), AppIDs distinct,
/// and the flat single-app settings must not be set beside it.
fn app_list(layers: &Layers, mode: Mode) -> Result<Vec<WechatApp>, ConfigError> {
    for key in ["wechat_appid", "wechat_secret"] {
        if layers.get(key).is_some() {
            return Err(invalid(
                key,
                format!("must not be set together with [[{APPS_KEY}]] in the config file; list every app there"),
            ));
        }
    }
    let mut apps: Vec<WechatApp> = Vec::new();
    for (i, (appid, secret)) in layers.apps.iter().enumerate() {
        let n = i + 1;
        let appid = appid.trim();
        check_appid(APPS_KEY, appid).map_err(|e| match e {
            ConfigError::Invalid { env, key, reason } => {
                ConfigError::Invalid { env, key, reason: format!("app {n}: {reason}") }
            }
            other => other,
        })?;
        let secret = match (mode, secret.trim()) {
            (Mode::Dev, "") => DEV_SECRET,
            (Mode::Dev, _) => return Err(refuse_secret_in_dev(APPS_KEY)),
            (_, "") if mode == Mode::Serve => {
                return Err(invalid(APPS_KEY, format!("app {n} ({appid}) has no secret")));
            }
            (_, secret) => secret,
        };
        if apps.iter().any(|a| a.appid == appid) {
            return Err(invalid(APPS_KEY, format!("app {appid} is listed twice")));
        }
        apps.push(WechatApp { appid: appid.to_owned(), secret: Secret::new(secret) });
    }
    Ok(apps)
}

fn check_appid(key: &'static str, appid: &str) -> Result<(), ConfigError> {
    if appid.is_empty() || !appid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid(key, "expected an AppID of letters and digits only, such as wx4f4bc4dec97d474b".into()));
    }
    Ok(())
}

fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| invalid("wechat_base_url", format!("not a URL ({e}): {raw:?}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    // The AppSecret travels in the query string: plain HTTP is only safe on this machine.
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(invalid(
                "wechat_base_url",
                format!("must be an https:// URL (plain http only for loopback), got {raw:?}"),
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("wechat_base_url", "must not have a query or fragment".into()));
    }
    Ok(url)
}

/// Comma-separated CIDRs or single addresses.
fn trusted_proxies(raw: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
                invalid("trusted_proxies", format!("expected CIDRs such as 10.0.0.0/8, 127.0.0.1, got {s:?}"))
            })
        })
        .collect()
}

/// The issuer URL. Outside dev mode, plain `http://` only for a loopback host: verifiers
/// fetch the keys from it, and over plain HTTP anyone on the way could hand them others.
fn parse_issuer(raw: &str, dev: bool) -> Result<String, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| invalid("issuer", format!("not a URL ({e}): {raw:?}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("issuer", format!("expected an http(s) URL without query or fragment, got {raw:?}")));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback && !dev {
        return Err(invalid(
            "issuer",
            format!(
                "plain http:// is refused for a public host ({raw:?}): verifiers fetch the signing keys \
                 from the issuer, so use https://"
            ),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn path_setting(layers: &Layers, key: &'static str, default: &str) -> Result<PathBuf, ConfigError> {
    match layers.get(key).unwrap_or(default) {
        "" => Err(invalid(key, "must not be empty".into())),
        path => Ok(PathBuf::from(path)),
    }
}

type FileValues = (BTreeMap<&'static str, String>, Vec<(String, String)>);

fn read_file(path: &std::path::Path) -> Result<FileValues, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.into(), source })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::ParseFile { path: path.into(), message: e.message().to_owned() })?;
    let mut values = BTreeMap::new();
    let mut apps = Vec::new();
    for (key, value) in table {
        if key == APPS_KEY {
            apps = read_apps(path, value)?;
            continue;
        }
        let Some(known) = KEYS.iter().find(|k| **k == key) else {
            let known = format!("{}, [[{APPS_KEY}]]", KEYS.join(", "));
            return Err(ConfigError::UnknownKey { path: path.into(), key, known });
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(invalid(known, format!("expected a string or a whole number, got {other}")));
            }
        };
        values.insert(*known, text);
    }
    Ok((values, apps))
}

/// `[[wechat_apps]]` tables with `appid` and `secret` (strings), nothing else.
fn read_apps(path: &std::path::Path, value: toml::Value) -> Result<Vec<(String, String)>, ConfigError> {
    let expected = || invalid(APPS_KEY, "expected [[wechat_apps]] tables with appid and secret strings".into());
    let toml::Value::Array(items) = value else { return Err(expected()) };
    let mut apps = Vec::new();
    for item in items {
        let toml::Value::Table(table) = item else { return Err(expected()) };
        let (mut appid, mut secret) = (None, None);
        for (key, value) in table {
            let toml::Value::String(text) = value else { return Err(expected()) };
            match key.as_str() {
                "appid" => appid = Some(text),
                "secret" => secret = Some(text),
                _ => {
                    return Err(ConfigError::UnknownKey {
                        path: path.into(),
                        key: format!("{APPS_KEY}.{key}"),
                        known: format!("{APPS_KEY}.appid, {APPS_KEY}.secret"),
                    });
                }
            }
        }
        apps.push((appid.ok_or_else(expected)?, secret.unwrap_or_default()));
    }
    if apps.is_empty() {
        return Err(expected());
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(mode: Mode, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(None, mode, |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn production_without_credentials_names_both_settings() {
        let err = load(Mode::Serve, &[]).unwrap_err().to_string();
        assert!(err.contains("WXAUTH_WECHAT_APPID") && err.contains("WXAUTH_WECHAT_SECRET"), "{err}");
        let err = load(Mode::Serve, &[("WXAUTH_WECHAT_APPID", "wx1")]).unwrap_err().to_string();
        assert!(!err.contains("WXAUTH_WECHAT_APPID") && err.contains("WXAUTH_WECHAT_SECRET"), "{err}");
    }

    #[test]
    fn dev_mode_has_defaults_for_everything() {
        let s = load(Mode::Dev, &[]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.token.issuer, None);
        assert_eq!(s.token.audience, DEV_APPID);
        assert_eq!(s.token.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.token.signing_alg, SigningAlg::ES256);
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("WXAUTH_LISTEN", "nope"),
            ("WXAUTH_ACCESS_TOKEN_TTL", "abc"),
            ("WXAUTH_ACCESS_TOKEN_TTL", "0"),
            ("WXAUTH_SIGNING_ALG", "HS256"),
            ("WXAUTH_WECHAT_TIMEOUT_MS", "-5"),
            ("WXAUTH_WECHAT_BASE_URL", "http://api.weixin.qq.com"),
            ("WXAUTH_ISSUER", "not a url"),
            ("WXAUTH_DATA_DIR", ""),
            ("WXAUTH_LISTEN", "0.0.0.0:8080"),
            ("WXAUTH_LISTEN", "192.0.2.7:8080"),
            ("WXAUTH_WECHAT_MAX_INFLIGHT", "0"),
            ("WXAUTH_WECHAT_BREAKER_FAILURES", "0"),
            ("WXAUTH_WECHAT_BREAKER_OPEN_SECS", "0"),
            ("WXAUTH_RATE_LIMIT_PER_MINUTE", "-1"),
            ("WXAUTH_METRICS", "yes"),
            ("WXAUTH_DOCS", "true"),
            ("WXAUTH_MAX_CONNECTIONS", "0"),
        ] {
            let err = load(Mode::Dev, &[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value:?} gave: {err}");
        }
    }

    #[test]
    fn bad_store_settings_name_the_variable_and_never_echo_a_password() {
        let pg = ("WXAUTH_STORE", "postgres");
        for (settings, var) in [
            (vec![("WXAUTH_STORE", "mysql")], "WXAUTH_STORE"),
            (vec![pg], "WXAUTH_DATABASE_URL"),
            (vec![pg, ("WXAUTH_DATABASE_URL", "  ")], "WXAUTH_DATABASE_URL"),
            (vec![pg, ("WXAUTH_DATABASE_URL", "mysql://u:hunter2@db/x")], "WXAUTH_DATABASE_URL"),
            (vec![pg, ("WXAUTH_DATABASE_URL", "hunter2 is no url")], "WXAUTH_DATABASE_URL"),
            (vec![pg, ("WXAUTH_DATABASE_URL", "postgres:///x?password=hunter2")], "WXAUTH_DATABASE_URL"),
            (vec![("WXAUTH_DATABASE_URL", "postgres://u:hunter2@db/x")], "WXAUTH_DATABASE_URL"),
            (vec![pg, ("WXAUTH_DATABASE_URL", "postgres://db/x"), ("WXAUTH_DATABASE_POOL_SIZE", "0")], "POOL_SIZE"),
            (
                vec![pg, ("WXAUTH_DATABASE_URL", "postgres://db/x"), ("WXAUTH_DATABASE_STATEMENT_TIMEOUT_MS", "5")],
                "WXAUTH_DATABASE_STATEMENT_TIMEOUT_MS",
            ),
        ] {
            let err = load(Mode::Dev, &settings).unwrap_err().to_string();
            assert!(err.contains(var), "{settings:?} gave: {err}");
            assert!(!err.contains("hunter2"), "{settings:?} echoed the password: {err}");
        }
    }

    #[test]
    fn a_database_url_prints_without_its_password() {
        let settings = load(
            Mode::Dev,
            &[
                ("WXAUTH_STORE", "postgres"),
                (
                    "WXAUTH_DATABASE_URL",
                    "postgres://wx:hunter2@db.internal:5432/wxauth?sslmode=require&password=hunter3",
                ),
                ("WXAUTH_DATABASE_POOL_SIZE", "7"),
            ],
        )
        .unwrap();
        let StoreSettings::Postgres(pg) = &settings.store else { panic!("not postgres: {:?}", settings.store) };
        assert_eq!(pg.pool_size, 7);
        assert_eq!(pg.statement_timeout, Duration::from_secs(5));
        assert!(pg.url.expose().contains("hunter2"));
        let shown = format!("{settings:?} {}", pg.url);
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert!(shown.contains("postgres://wx:REDACTED@db.internal:5432/wxauth?sslmode=require"), "{shown}");
        assert!(matches!(load(Mode::Dev, &[]).unwrap().store, StoreSettings::Sled(_)), "sled is not the default");
    }

    #[test]
    fn production_takes_plain_http_issuers_only_for_loopback_hosts() {
        let prod = |issuer: &str| {
            load(
                Mode::Serve,
                &[("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s"), ("WXAUTH_ISSUER", issuer)],
            )
        };
        for public in ["http://auth.example.com", "http://192.0.2.7:8080", "http://[2001:db8::1]/"] {
            let err = prod(public).unwrap_err().to_string();
            assert!(err.contains("WXAUTH_ISSUER") && err.contains("https://"), "{public}: {err}");
        }
        for fine in ["https://auth.example.com", "http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
        {
            assert!(prod(fine).is_ok(), "{fine} refused");
        }
        assert!(load(Mode::Dev, &[("WXAUTH_ISSUER", "http://auth.example.com")]).is_ok(), "dev mode refused it");
    }

    #[test]
    fn dev_mode_listens_on_loopback_only_and_production_anywhere() {
        assert!(load(Mode::Dev, &[("WXAUTH_LISTEN", "[::1]:8080")]).is_ok());
        let err = load(Mode::Dev, &[("WXAUTH_LISTEN", "0.0.0.0:8080")]).unwrap_err().to_string();
        assert!(err.contains("loopback") && err.contains("--dev"), "{err}");
        let prod = [("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s"), ("WXAUTH_LISTEN", "0.0.0.0:8080")];
        assert!(load(Mode::Serve, &prod).is_ok());
    }

    #[test]
    fn reliability_settings_have_their_documented_defaults() {
        let s = load(Mode::Dev, &[]).unwrap();
        assert_eq!(s.wechat.limits.max_inflight, 2048);
        assert_eq!(s.wechat.limits.breaker_failures, 20);
        assert_eq!(s.wechat.limits.breaker_open, Duration::from_secs(5));
        assert_eq!(s.attempt_limits.requests_per_ip, 0);
        assert!(s.metrics);
        assert_eq!(s.max_connections, 10_000);
        let s = load(Mode::Dev, &[("WXAUTH_RATE_LIMIT_PER_MINUTE", "30"), ("WXAUTH_METRICS", "off")]).unwrap();
        assert_eq!((s.attempt_limits.requests_per_ip, s.metrics), (30, false));
    }

    #[test]
    fn swagger_ui_is_on_in_dev_mode_and_off_in_production_unless_set() {
        let prod = [("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s")];
        assert!(load(Mode::Dev, &[]).unwrap().docs);
        assert!(!load(Mode::Serve, &prod).unwrap().docs);
        assert!(load(Mode::Serve, &[prod[0], prod[1], ("WXAUTH_DOCS", "on")]).unwrap().docs);
        assert!(!load(Mode::Dev, &[("WXAUTH_DOCS", "off")]).unwrap().docs);
    }

    #[test]
    fn environment_overrides_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.toml");
        std::fs::write(
            &path,
            "access_token_ttl = 600\nissuer = \"https://auth.example.com/\"\nsigning_alg = \"RS256\"\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&path), Mode::Dev, |n| (n == "WXAUTH_SIGNING_ALG").then(|| "EdDSA".into()))
            .unwrap();
        assert_eq!(s.token.access_token_ttl, Duration::from_secs(600));
        assert_eq!(s.token.issuer.as_deref(), Some("https://auth.example.com"));
        assert_eq!(s.token.signing_alg, SigningAlg::EdDSA);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.toml");
        std::fs::write(&path, "acess_token_ttl = 600\n").unwrap();
        let err = Settings::load_from(Some(&path), Mode::Dev, |_| None).unwrap_err().to_string();
        assert!(err.contains("acess_token_ttl"), "{err}");
    }

    #[test]
    fn dev_mode_refuses_a_real_app_secret() {
        let err = load(Mode::Dev, &[("WXAUTH_WECHAT_SECRET", "real")]).unwrap_err().to_string();
        assert!(err.contains("WXAUTH_WECHAT_SECRET") && err.contains("--dev"), "{err}");
        assert!(load(Mode::Dev, &[("WXAUTH_WECHAT_APPID", "wxmine")]).is_ok());
    }

    #[test]
    fn secret_does_not_print() {
        let s = load(Mode::Serve, &[("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "topsecret")]).unwrap();
        assert!(!format!("{s:?}").contains("topsecret"));
    }

    fn load_file(text: &str, mode: Mode, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load_from(Some(&path), mode, |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn several_apps_are_read_from_the_file_and_the_first_is_the_audience() {
        let s = load_file(
            "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"sa\"\n\n[[wechat_apps]]\nappid = \"wxb\"\nsecret = \"sb\"\n",
            Mode::Serve,
            &[],
        )
        .unwrap();
        let apps: Vec<_> = s.wechat.apps.iter().map(|a| (a.appid.as_str(), a.secret.expose())).collect();
        assert_eq!(apps, [("wxa", "sa"), ("wxb", "sb")]);
        assert_eq!(s.token.audience, "wxa");
    }

    #[test]
    fn bad_app_lists_are_refused_with_the_reason() {
        let two = "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"s\"\n";
        for (text, vars, expected) in [
            (format!("{two}{two}"), &[][..], "listed twice"),
            ("[[wechat_apps]]\nappid = \"wxa\"\n".to_string(), &[][..], "no secret"),
            ("[[wechat_apps]]\nappid = \"wx-a\"\nsecret = \"s\"\n".to_string(), &[][..], "app 1"),
            (
                "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"s\"\nname = \"x\"\n".to_string(),
                &[][..],
                "wechat_apps.name",
            ),
            ("wechat_apps = \"wxa\"\n".to_string(), &[][..], "wechat_apps"),
            (two.to_string(), &[("WXAUTH_WECHAT_APPID", "wxc")][..], "WXAUTH_WECHAT_APPID"),
        ] {
            let err = load_file(&text, Mode::Serve, vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let err = load_file(two, Mode::Dev, &[]).unwrap_err().to_string();
        assert!(err.contains("--dev"), "{err}");
    }

    #[test]
    fn registration_limits_and_admin_socket_have_defaults_and_are_checked() {
        let s = load(Mode::Dev, &[]).unwrap();
        assert_eq!(s.registration, Registration::Auto);
        assert_eq!(
            s.attempt_limits,
            AttemptLimits {
                requests_per_ip: 0,
                per_username: 5,
                per_ip: 20,
                refresh_per_family: 10,
                refresh_per_ip: 600,
                trusted_proxies: Vec::new()
            }
        );
        assert_eq!(s.admin_socket, PathBuf::from("./data/admin.sock"));
        assert_eq!(s.token.refresh_families_per_user, 20);
        let s = load(Mode::Dev, &[("WXAUTH_REFRESH_FAMILIES_PER_USER", "1"), ("WXAUTH_REFRESH_ATTEMPTS_PER_IP", "0")]);
        let s = s.unwrap();
        assert_eq!((s.token.refresh_families_per_user, s.attempt_limits.refresh_per_ip), (1, 0));
        let s = load(Mode::Dev, &[("WXAUTH_REGISTRATION", "bind"), ("WXAUTH_BIND_ATTEMPTS_PER_IP", "0")]).unwrap();
        assert_eq!((s.registration, s.attempt_limits.per_ip), (Registration::Bind, 0));
        let s = load(Mode::Dev, &[("WXAUTH_TRUSTED_PROXIES", "10.0.0.0/8, ::1")]).unwrap();
        assert_eq!(s.attempt_limits.trusted_proxies, ["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        for (var, value) in [
            ("WXAUTH_REGISTRATION", "manual"),
            ("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", "-1"),
            ("WXAUTH_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("WXAUTH_BIND_TICKET_TTL", "301"),
            ("WXAUTH_REFRESH_FAMILIES_PER_USER", "0"),
            ("WXAUTH_REFRESH_FAMILIES_PER_USER", "1001"),
            ("WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY", "-1"),
            ("WXAUTH_REFRESH_ATTEMPTS_PER_IP", "many"),
        ] {
            let err = load(Mode::Dev, &[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value:?} gave: {err}");
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn the_wechat_base_url_is_https_and_plain_http_only_on_this_machine() {
        // The AppSecret travels in its query string.
        for accepted in [
            "https://api.weixin.qq.com",
            "https://10.1.2.3:8443",
            "http://127.0.0.1:9",
            "http://127.8.9.10",
            "http://localhost:8080",
            "http://[::1]:9",
        ] {
            assert!(parse_base_url(accepted).is_ok(), "{accepted} was refused");
        }
        for refused in [
            "http://api.weixin.qq.com",
            "http://10.1.2.3",
            "http://localhost.example.com",
            "http://[::2]",
            "ftp://127.0.0.1",
            "https://api.weixin.qq.com/?appid=x",
            "https://api.weixin.qq.com/#x",
        ] {
            let err = parse_base_url(refused).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains("wechat_base_url")), "{refused}: {err:?}");
        }
    }

    #[test]
    fn the_issuer_is_an_http_or_https_url_without_query_or_fragment() {
        assert_eq!(parse_issuer("https://auth.example.com/", false).unwrap(), "https://auth.example.com");
        assert_eq!(parse_issuer("http://127.0.0.1:8080", false).unwrap(), "http://127.0.0.1:8080");
        for refused in
            ["ftp://auth.example.com", "urn:wxauth", "https://auth.example.com/?a=b", "https://auth.example.com/#top"]
        {
            let err = parse_issuer(refused, false).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains("issuer")), "{refused}: {err:?}");
        }
    }
}
