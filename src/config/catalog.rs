//! Every setting, declared once: its TOML key (the environment variable is derived from
//! it), its default and the line that documents it. The loader takes defaults and ranges
//! from here, unknown keys are refused against this list, and the settings tables in
//! `docs/configuration.md` are generated from it (a test keeps them equal), so a setting
//! cannot be added without a default, a range where it is a number, and documentation.

/// A setting's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// This value, as if it had been written in the file.
    Value(&'static str),
    /// Derived from other settings or the mode when unset; the text says how (Markdown).
    Computed(&'static str),
}

/// The accepted range of a whole-number setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
    /// What the number counts, for messages ("seconds").
    pub unit: &'static str,
}

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key.
    pub key: &'static str,
    /// What applies when neither the file nor the environment sets it.
    pub default: Default,
    /// For whole numbers: the accepted range.
    pub range: Option<Range>,
    /// What it does (Markdown, one line).
    pub doc: &'static str,
}

impl Setting {
    /// The environment variable: `WXAUTH_` and the key upper-cased.
    pub fn env(&self) -> String {
        env_name(self.key)
    }
}

/// The environment variable for a TOML key.
pub fn env_name(key: &str) -> String {
    format!("WXAUTH_{}", key.to_ascii_uppercase())
}

/// The TOML key of the list of apps (`[[wechat_apps]]`); it has no environment variable.
pub const APPS_KEY: &str = "wechat_apps";

/// The TOML key of the services that may introspect tokens (`[[introspection_clients]]`);
/// it has no environment variable.
pub const CLIENTS_KEY: &str = "introspection_clients";

/// The TOML key of the receivers of events (`[[webhooks]]`); it has no environment
/// variable.
pub const WEBHOOKS_KEY: &str = "webhooks";

/// What the `[[webhooks]]` row of the documentation says.
pub const WEBHOOKS_DOC: &str = "Receivers of [events](events.md#webhooks): a list of tables with `url` (`https://`; plain \
     `http://` only for loopback), `secret` (at least 32 visible ASCII characters; it signs each delivery) and \
     optionally `events`, a list of kinds (absent: every kind). Each delivery is retried with backoff for 24 hours.";

/// What the `[[introspection_clients]]` row of the documentation says.
pub const CLIENTS_DOC: &str = "Services that may call `POST /v1/token/introspect`: a list of tables with \
     `client_id` (1 to 64 letters, digits, `.`, `_`, `-`) and `secret` (at least 32 characters), sent as \
     HTTP Basic. None by default. See [Token introspection](tokens.md#token-introspection).";

/// What the `[[wechat_apps]]` row of the documentation says.
pub const APPS_DOC: &str = "Several apps: a list of tables with `appid`, `secret` and optionally \
     `default_role`, `kind` (`miniprogram`, the default; `official_account`, `website` or `mobile_app`) and, for \
     `official_account` and `website`, `redirect_uris` (the exact client URLs a browser login may return to), \
     instead of `wechat_appid` / `wechat_secret` / `wechat_default_role`. See [Several mini-programs](several-apps.md) \
     and [Every WeChat surface](wechat-surfaces.md).";

macro_rules! settings {
    ($($name:ident: $key:literal, $default:expr, $range:expr, $doc:literal;)*) => {
        $(
            #[doc = concat!("`", $key, "`: ", $doc)]
            pub const $name: Setting =
                Setting { key: $key, default: $default, range: $range, doc: $doc };
        )*
        /// Every setting, in the order the documentation lists them.
        pub const ALL: &[Setting] = &[$($name),*];
    };
}

settings! {
    LISTEN: "listen", Default::Value("127.0.0.1:8080"), None,
        "`HOST:PORT` to bind. Port `0` picks a free port. Dev mode refuses an address that is not loopback.";
    KEYS_DIR: "keys_dir", Default::Value("./keys"), None,
        "Signing key ring directory (see [`keys/README.md`](../keys/README.md)). Must not be empty.";
    ISSUER: "issuer", Default::Computed("`http://<bound address>`"), None,
        "The tokens' `iss` and the base of `jwks_uri`. An `http(s)` URL without query or fragment; a trailing `/` is dropped. Set it in production to wxauth's public URL (production logs a warning when unset, and refuses to start when listening on `0.0.0.0`/`::` without it). Production refuses plain `http://` unless the host is loopback (`localhost`, `127.0.0.0/8`, `::1`): verifiers fetch the keys from it.";
    AUDIENCE: "audience", Default::Computed("the AppID"), None,
        "The tokens' `aud`. Must not be empty.";
    ACCESS_TOKEN_TTL: "access_token_ttl", Default::Value("900"), Some(Range { min: 60, max: 86400, unit: "seconds" }),
        "Access-token lifetime in seconds, 60 to 86400.";
    REFRESH_TOKEN_TTL: "refresh_token_ttl", Default::Value("2592000"), Some(Range { min: 300, max: 31536000, unit: "seconds" }),
        "Refresh-token lifetime in seconds (30 days), 300 to 31536000; each refresh answers a token with the full lifetime.";
    REFRESH_FAMILIES_PER_USER: "refresh_families_per_user", Default::Value("20"), Some(Range { min: 1, max: 1000, unit: "families" }),
        "Logins (refresh families) a user keeps, 1 to 1000. Logins beyond it end the user's oldest, in batches: every half-this-th login of a user trims, so a user holds at most about twice it (on PostgreSQL, per replica), and the store cannot grow by repeated logins. Raise it if people use more devices and apps at once.";
    REFRESH_ATTEMPTS_PER_FAMILY: "refresh_attempts_per_family", Default::Value("10"), Some(Range { min: 0, max: 1000000, unit: "attempts per minute" }),
        "`POST /v1/token/refresh` per login (refresh family) per minute: a burst of this many, then one every 60/n s; past it 429 `rate_limited`. `0` turns it off. Accepted: 0 to 1000000.";
    REFRESH_ATTEMPTS_PER_IP: "refresh_attempts_per_ip", Default::Value("600"), Some(Range { min: 0, max: 1000000, unit: "attempts per minute" }),
        "The same per client address (IPv6: one /64), counted before the body is read. High because many people share one address behind carrier-grade NAT. `0` turns it off. Accepted: 0 to 1000000.";
    EVENT_RETENTION_DAYS: "event_retention_days", Default::Value("90"), Some(Range { min: 1, max: 3650, unit: "days" }),
        "Days an event (a login, a bind, a ban, ...) is kept, 1 to 3650; older ones are purged in batches every 10 minutes. Events hold client addresses and user agents, personal information under PIPL: keep them no longer than the business needs.";
    DELETION_GRACE_SECS: "deletion_grace_secs", Default::Value("0"), Some(Range { min: 0, max: 7776000, unit: "seconds" }),
        "Seconds between `DELETE /v1/me` and the erasure, 0 to 7776000 (90 days). `0` erases at once. During the grace period logins answer 403 `account_pending_deletion` and `POST /v1/deletion/cancel` undoes it: a business may want 7 days (`604800`) so that a person who deleted by mistake, or whose phone was taken, can come back ([Account deletion](account-deletion.md)).";
    KEY_ACTIVATION_SECS: "key_activation_secs", Default::Value("600"), Some(Range { min: 0, max: 604800, unit: "seconds" }),
        "Seconds after `wxauth keys rotate` before the new key signs (it is published at once): twice the JWKS `max-age`, so verifiers hold it first. 0 to 604800.";
    KEY_ROTATION_DAYS: "key_rotation_days", Default::Value("0"), Some(Range { min: 0, max: 3650, unit: "days" }),
        "`0`: rotate by hand. Otherwise the server stages the next key itself when the active one has signed this many days (0 to 3650).";
    SIGNING_ALG: "signing_alg", Default::Value("ES256"), None,
        "`ES256`, `EdDSA` or `RS256` (exact spelling): the algorithm of new keys, and of the key that signs.";
    WECHAT_APPID: "wechat_appid", Default::Computed("required; dev mode: `wxdev00000000000`"), None,
        "The mini-program's AppID. Letters and digits only.";
    WECHAT_SECRET: "wechat_secret", Default::Computed("required; dev mode: `dev-secret-not-for-production`"), None,
        "The mini-program's AppSecret. Never printed or logged.";
    WECHAT_DEFAULT_ROLE: "wechat_default_role", Default::Computed("none"), None,
        "A role every user first seen through the mini-program gets (access tokens carry it in `roles`); 1 to 64 letters, digits, `.`, `_`, `:` or `-`. With `[[wechat_apps]]`, set `default_role` per app instead.";
    WECHAT_BASE_URL: "wechat_base_url", Default::Value("https://api.weixin.qq.com"), None,
        "WeChat API base URL. Must be `https://`; plain `http://` only for loopback (`localhost`, `127.0.0.0/8`, `::1`), because the AppSecret travels in the query string. No query or fragment; a path prefix is kept. Replaced by the mock in dev mode.";
    WECHAT_OPEN_URL: "wechat_open_url", Default::Value("https://open.weixin.qq.com"), None,
        "Where browsers are sent to authorise: WeChat's `connect/oauth2/authorize` (official accounts) and `connect/qrconnect` (websites) pages, for [browser logins](wechat-surfaces.md). `https://`; plain `http://` only for loopback. Replaced by the mock in dev mode.";
    WECHAT_TIMEOUT_MS: "wechat_timeout_ms", Default::Value("5000"), Some(Range { min: 100, max: 60000, unit: "milliseconds" }),
        "The deadline of one login's exchange with WeChat in milliseconds, 100 to 60000, the retry after errcode -1 included (a phone-number request: the access-token fetch and its retry included). Connecting may take at most the smaller of this and 3 s.";
    WECHAT_MAX_INFLIGHT: "wechat_max_inflight", Default::Value("2048"), Some(Range { min: 1, max: 1000000, unit: "requests" }),
        "Requests to WeChat in flight at once, 1 to 1000000. Past it, logins answer 503 `wechat_unavailable` at once instead of queueing. Requests whose client hung up still count until WeChat answers.";
    WECHAT_BREAKER_FAILURES: "wechat_breaker_failures", Default::Value("20"), Some(Range { min: 1, max: 1000000, unit: "failures" }),
        "Consecutive transport failures (timeouts, refused or reset connections, HTTP 5xx, bodies that are not JSON or over 64 KiB) that open the circuit breaker, 1 to 1000000. WeChat's errcodes (40029, ...) are answers and never count.";
    WECHAT_BREAKER_OPEN_SECS: "wechat_breaker_open_secs", Default::Value("5"), Some(Range { min: 1, max: 3600, unit: "seconds" }),
        "Seconds an open breaker refuses logins (503 without calling WeChat) before it lets one probe through, 1 to 3600.";
    LOG_FORMAT: "log_format", Default::Computed("`json`; dev mode: `text`"), None,
        "`text` (human-readable) or `json` (one object per line).";
    REGISTRATION: "registration", Default::Value("auto"), None,
        "`auto`: an unknown openid gets a new user. `bind`: it gets 403 `not_bound` and a bind ticket, and must be bound to an account ([Account binding](account-binding.md)). `phone`: it gets 403 `phone_required` and a bind ticket, and proves a phone number to bind to the account with that number or get a new one ([Phone-first login](phone-login.md)).";
    BIND_TICKET_TTL: "bind_ticket_ttl", Default::Value("300"), Some(Range { min: 1, max: 300, unit: "seconds" }),
        "Seconds a bind ticket works, 1 to 300 (the 5 minutes a client may count on are the maximum).";
    BIND_ATTEMPTS_PER_USERNAME: "bind_attempts_per_username", Default::Value("5"), Some(Range { min: 0, max: 1000000, unit: "attempts per minute" }),
        "`POST /v1/bind` attempts per minute for one username by one WeChat identity (a burst of this many, then one every 60/n s), so that a guesser never spends the owner's budget; and binds by phone number (`phone_code`) per number, whoever asks. `0` turns the limit off. Apart from it, an identity waits after more than 3 wrong passwords in a row (1 s, doubling, at most 300 s). Accepted: 0 to 1000000.";
    BIND_ATTEMPTS_PER_IP: "bind_attempts_per_ip", Default::Value("20"), Some(Range { min: 0, max: 1000000, unit: "attempts per minute" }),
        "The same per client address, binds by phone number included (counted before WeChat verifies, and bills, the number). `0` turns it off. Mobile users in China often share one address behind carrier-grade NAT: raise it rather than lower it. Accepted: 0 to 1000000.";
    TRUSTED_PROXIES: "trusted_proxies", Default::Value(""), None,
        "Comma-separated CIDRs or addresses of your reverse proxies, e.g. `127.0.0.1, 10.0.0.0/8`. Only a request from one of them has its `X-Forwarded-For` read (all its lines, in order, each entry on its own: an address, `ip:port` or `[v6]:port`), and then the right-most address that is not a trusted proxy is the client; an entry that is none of these stops the walk at the last trusted hop. Used for the per-IP limits.";
    RATE_LIMIT_PER_MINUTE: "rate_limit_per_minute", Default::Value("0"), Some(Range { min: 0, max: 1000000, unit: "attempts per minute" }),
        "Requests to `POST /v1/login`, `POST /v1/bind` and `POST /v1/deletion/cancel` together per minute from one client address (IPv6: one /64), counted before the body is read: a burst of this many, then one every 60/n s; past it 429 `rate_limited` with `Retry-After`. Off by default because mobile users in China often share one public address behind carrier-grade NAT, where a low limit locks out strangers together. If you turn it on, start high: 300 to 600 for a consumer mini-program, 60 for an internal one; watch `wxauth_logins_total{outcome=\"rate_limited\"}`. Set `WXAUTH_TRUSTED_PROXIES` behind a reverse proxy, or every client counts as the proxy. Accepted: 0 to 1000000.";
    MAX_CONNECTIONS: "max_connections", Default::Value("10000"), Some(Range { min: 1, max: 1000000, unit: "connections" }),
        "Open client connections at most, 1 to 1000000. Past it, new connections wait in the kernel's backlog until one closes. At start the open-file limit (`ulimit -n`) is raised to its hard limit, and the cap is lowered (with a warning) to what that allows.";
    METRICS: "metrics", Default::Value("on"), None,
        "`on` serves `GET /metrics`; `off` removes it.";
    DOCS: "docs", Default::Computed("`off`; dev mode: `on`"), None,
        "`on` serves Swagger UI at `GET /docs`; `off` removes it (404). `/openapi.json` is served either way. To try the API in Swagger UI against a production server, set `WXAUTH_DOCS=on`.";
    ADMIN_SOCKET: "admin_socket", Default::Computed("`<data_dir>/admin.sock`"), None,
        "Unix socket (mode 0600) through which `wxauth accounts` and `wxauth users` reach the running server. Must not be empty.";
    ADMIN_LISTEN: "admin_listen", Default::Value(""), None,
        "`HOST:PORT` of the admin API (`/admin/v1/...`, its Swagger UI at `/admin/docs`), a listener apart from `WXAUTH_LISTEN`; empty: no admin API. Loopback addresses only (`127.0.0.1`, `::1`): wxauth speaks plain HTTP and admin tokens must not cross a network in clear, so reach it from elsewhere through a TLS proxy or an SSH tunnel ([Admin API](admin-api.md)).";
    STORE: "store", Default::Value("sled"), None,
        "`sled`: the embedded database in `WXAUTH_DATA_DIR`, one process on one machine. `postgres`: a PostgreSQL database (or one that speaks its protocol) named by `WXAUTH_DATABASE_URL`, which several replicas share.";
    DATABASE_URL: "database_url", Default::Computed("required with `postgres`"), None,
        "`postgres://USER:PASSWORD@HOST:PORT/DATABASE`, with libpq-style query parameters such as `?sslmode=verify-full`. Its password (and a `password` query parameter) is shown as `REDACTED` in every log line and error. Refused with `store = sled`, where it would be ignored.";
    DATABASE_POOL_SIZE: "database_pool_size", Default::Value("16"), Some(Range { min: 1, max: 1000, unit: "connections" }),
        "Connections each replica keeps to the database at most, 1 to 1000. Replicas × pool size must stay below the server's `max_connections` (100 by default). A request that waits longer than the statement timeout for a connection answers 503.";
    DATABASE_STATEMENT_TIMEOUT_MS: "database_statement_timeout_ms", Default::Value("5000"), Some(Range { min: 100, max: 600000, unit: "milliseconds" }),
        "PostgreSQL's `statement_timeout` for the replica's connections, in milliseconds, 100 to 600000, and the longest wait for a free connection. A query past it fails, and the request answers 503 `temporarily_unavailable` instead of hanging. `wxauth store export`/`import` are not bound by it.";
    DATA_DIR: "data_dir", Default::Value("./data"), None,
        "sled database directory. Must not be empty. With `postgres`, only the default place of the admin socket.";
    STORE_CACHE_MB: "store_cache_mb", Default::Value("16"), Some(Range { min: 1, max: 65536, unit: "MiB" }),
        "sled page cache in MiB, 1 to 65536. At a million users, 16 and 64 MiB gave the same login throughput (misses are served from the OS page cache), while 64 MiB cost about 75 MB more resident memory; raise it only if profiles show sled reading pages.";
}

/// The Markdown table of every setting, as `docs/configuration.md` shows it.
pub fn markdown_table() -> String {
    let mut table = String::from("| TOML key | Environment variable | Default | Meaning |\n|---|---|---|---|\n");
    for setting in ALL {
        let default = match setting.default {
            Default::Value("") => "empty".to_owned(),
            Default::Value(value) => format!("`{value}`"),
            Default::Computed(text) => text.to_owned(),
        };
        table.push_str(&format!("| `{}` | `{}` | {default} | {} |\n", setting.key, setting.env(), setting.doc));
    }
    table.push_str(&format!("| `[[{APPS_KEY}]]` | none (TOML only) | none | {APPS_DOC} |\n"));
    table.push_str(&format!("| `[[{CLIENTS_KEY}]]` | none (TOML only) | none | {CLIENTS_DOC} |\n"));
    table.push_str(&format!("| `[[{WEBHOOKS_KEY}]]` | none (TOML only) | none | {WEBHOOKS_DOC} |\n"));
    table
}
