//! Building and running the server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use poem::EndpointExt as _;
use tokio::net::TcpListener;

use crate::{
    admin, api,
    auth::{Auth, Parts},
    clock::Clock,
    config::{Settings, StoreSettings},
    devmock, dirs,
    domain::KeyMode,
    limits::Attempts,
    metrics::Metrics,
    password::{PasswordError, Verifier},
    server,
    store::events::EventKind,
    store::{
        Store, StoreError,
        sealed::{SealError, Sealer},
    },
    token::{TokenError, Tokens},
    webhooks,
    wechat::{WechatClient, WechatError},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr} (WXAUTH_LISTEN): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// Listening on all interfaces without a configured issuer.
    #[error(
        "WXAUTH_ISSUER must be set when listening on {0}: set it to the public URL verifiers use, \
         e.g. https://auth.example.com"
    )]
    IssuerRequired(SocketAddr),
    /// A signal handler could not be installed.
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
    /// The dev-mode WeChat mock could not start.
    #[error("cannot start the dev-mode WeChat mock: {0}")]
    DevMock(std::io::Error),
    /// The key ring is unusable.
    #[error("signing keys: {0}")]
    Keys(#[from] TokenError),
    /// The store could not be opened.
    #[error("cannot open the store ({location}): {source}")]
    Store {
        /// Where the store is, and the setting that says so.
        location: String,
        /// The failure.
        source: StoreError,
    },
    /// The HTTP client could not be built.
    #[error("WeChat client: {0}")]
    Wechat(#[from] WechatError),
    /// The session-key encryption key could not be loaded or created.
    #[error("session-key encryption key (WXAUTH_KEYS_DIR): {0}")]
    Seal(#[from] SealError),
    /// The password checker could not start.
    #[error("password hashing: {0}")]
    Password(#[from] PasswordError),
    /// The data or keys directory is open to other users.
    #[error(transparent)]
    Exposed(#[from] crate::dirs::Exposed),
    /// The webhooks' HTTP client could not be built.
    #[error("webhooks: cannot build the HTTP client: {0}")]
    Webhooks(String),
    /// Binding the admin API's address failed.
    #[error("cannot listen on {addr} (WXAUTH_ADMIN_LISTEN): {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// The admin socket could not be created.
    #[error("cannot create the admin socket {path} (WXAUTH_ADMIN_SOCKET): {source}")]
    AdminSocket {
        /// The socket's path.
        path: std::path::PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    dev: bool,
    metrics: bool,
    docs: bool,
    max_connections: usize,
    admin: admin::Listener,
    /// The admin API's listener (`WXAUTH_ADMIN_LISTEN`), when it is on.
    admin_api: Option<TcpListener>,
    /// Sends the outbox's webhook deliveries (and drops those of webhooks no longer
    /// configured).
    sender: webhooks::Sender,
    auth: Arc<Auth>,
    /// Held for its handler: past `RLIMIT_FSIZE` the kernel sends SIGXFSZ, whose default
    /// action kills the process. Handled, the write fails with EFBIG instead, and the
    /// request gets a 503 like on a full disk.
    _file_too_large: tokio::signal::unix::Signal,
}

impl Application {
    /// Binds the listener and opens keys, store and WeChat client. In dev mode it first
    /// starts the WeChat mock and points the client at it.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// [`Application::build`] with a clock of the caller's (tests move time with it).
    pub async fn build_with_clock(mut settings: Settings, clock: Clock) -> Result<Self, StartupError> {
        let file_too_large = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
            rustix::process::Signal::XFSZ.as_raw(),
        ))
        .map_err(StartupError::Signal)?;
        if settings.dev {
            let slow = settings.wechat.timeout + Duration::from_secs(1);
            settings.wechat.base_url =
                devmock::spawn(&settings.wechat.apps, slow).await.map_err(StartupError::DevMock)?;
            // Its stand-ins for WeChat's authorize and QR pages too.
            settings.wechat.open_url = settings.wechat.base_url.clone();
            let codes: Vec<&str> = devmock::RESERVED_CODES.iter().map(|(code, _)| *code).collect();
            tracing::warn!(
                mock = %settings.wechat.base_url,
                reserved_codes = %codes.join(" "),
                "DEV MODE: WeChat is replaced by a local mock and keys are generated on demand. \
                 Never let real users reach this server."
            );
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| StartupError::Bind { addr: settings.listen, source })?;
        let addr = listener.local_addr().unwrap_or(settings.listen);
        let issuer = match &settings.token.issuer {
            Some(issuer) => issuer.clone(),
            // 0.0.0.0 is no address a verifier can fetch keys from.
            None if addr.ip().is_unspecified() && !settings.dev => return Err(StartupError::IssuerRequired(addr)),
            None if addr.ip().is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
            None => {
                if !settings.dev {
                    tracing::warn!("WXAUTH_ISSUER is not set; tokens name http://{addr} as issuer");
                }
                format!("http://{addr}")
            }
        };
        private_dir(&settings.keys_dir, "WXAUTH_KEYS_DIR", settings.dev)?;
        if let StoreSettings::Sled(sled) = &settings.store {
            private_dir(&sled.data_dir, "WXAUTH_DATA_DIR", settings.dev)?;
        }
        let tokens =
            Tokens::open(&settings.token, issuer, &settings.keys_dir, KeyMode::of(settings.dev), clock.clone())?;
        let sealer = Sealer::load_or_create(&settings.keys_dir)?;
        let location = match &settings.store {
            StoreSettings::Sled(s) => format!("WXAUTH_DATA_DIR={}", s.data_dir.display()),
            StoreSettings::Postgres(s) => format!("WXAUTH_DATABASE_URL={}", s.url.redacted()),
        };
        let store = Store::open(&settings.store, sealer)
            .await
            .map_err(|source| StartupError::Store { location: location.clone(), source })?
            .with_webhooks(webhooks::subscriptions(&settings.webhooks));
        // Dev mode logs anyone in as anyone: its users must never meet production's.
        store
            .claim_mode(KeyMode::of(settings.dev))
            .await
            .map_err(|source| StartupError::Store { location: location.clone(), source })?;
        // After the mode: a dev server on production's database is told that first.
        store.claim_sealing_key().await.map_err(|source| StartupError::Store { location: location.clone(), source })?;
        tracing::info!(store = %location, "store opened");
        // After the store: its lock proves no other server uses this data directory.
        let admin = admin::Listener::bind(&settings.admin_socket)
            .await
            .map_err(|source| StartupError::AdminSocket { path: settings.admin_socket.clone(), source })?;
        let admin_api = match settings.admin_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.map_err(|source| StartupError::AdminBind { addr, source })?)
            }
            None => None,
        };
        let metrics = Metrics::new();
        let sender = webhooks::Sender::new(store.clone(), &settings.webhooks, clock.clone(), metrics.clone())
            .map_err(|e| StartupError::Webhooks(e.without_url().to_string()))?;
        let parts = Parts {
            apps: WechatClient::for_apps(&settings.wechat, &metrics, &clock)?,
            metrics,
            store,
            tokens,
            registration: settings.registration,
            attempts: Attempts::new(settings.attempt_limits),
            passwords: Verifier::new()?,
            ticket_ttl: settings.bind_ticket_ttl,
            refresh_ttl: settings.token.refresh_token_ttl,
            refresh_families_per_user: settings.token.refresh_families_per_user,
            default_roles: settings
                .wechat
                .apps
                .iter()
                .filter_map(|app| Some((app.appid.clone(), app.default_role.clone()?)))
                .collect(),
            browser_redirects: settings
                .wechat
                .apps
                .iter()
                .filter(|app| app.kind.is_browser())
                .map(|app| (app.appid.clone(), app.redirect_uris.clone()))
                .collect(),
            open_url: settings.wechat.open_url.clone(),
            introspection_clients: settings.introspection_clients.clone(),
            event_retention: settings.event_retention,
            deletion_grace: settings.deletion_grace,
            clock,
        };
        Ok(Self {
            listener,
            addr,
            dev: settings.dev,
            metrics: settings.metrics,
            docs: settings.docs,
            max_connections: connection_cap(settings.max_connections),
            admin,
            admin_api,
            sender,
            auth: Arc::new(Auth::new(parts)),
            _file_too_large: file_too_large,
        })
    }

    /// The bound port (useful with `WXAUTH_LISTEN=127.0.0.1:0`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API's bound address, when `WXAUTH_ADMIN_LISTEN` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_api.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The service behind the routes.
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    /// Serves until Ctrl-C or SIGTERM, then drains requests and flushes the database.
    /// SIGHUP re-reads the keys directory (after `wxauth keys rotate`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // Registered before the "listening" line: a signal sent after it must not meet the
        // default action, which would kill the process without the final flush.
        let stop = shutdown_signal()?;
        self.run_until(stop).await
    }

    /// Serves until `stop` completes.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let auth = self.auth.clone();
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = tokio::spawn(reload_keys_on_sighup(auth.clone(), hangup));
        let purger = tokio::spawn(purge_old_records(auth.clone()));
        let eraser = tokio::spawn(erase_due_deletions(auth.clone()));
        let sender = tokio::spawn(self.sender.run());
        let watcher = tokio::spawn(watch_keys(auth.clone()));
        let (activations, activated) = tokio::sync::mpsc::unbounded_channel();
        auth.tokens().on_activation(activations);
        let activation_events = tokio::spawn(record_activations(auth.clone(), activated));
        let admin_path = self.admin.path().to_owned();
        let appids: Arc<[String]> = auth.appids().into_iter().map(str::to_owned).collect();
        let admin = tokio::spawn(self.admin.serve(auth.store().clone(), appids));
        if self.docs {
            tracing::info!("wxauth listening on http://{} (Swagger UI at /docs)", self.addr);
        } else {
            tracing::info!("wxauth listening on http://{} (API described at /openapi.json)", self.addr);
        }
        // One stop for both listeners: each drains its own connections.
        let stop = futures_util::FutureExt::shared(Box::pin(stop));
        let admin_api = self.admin_api.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("admin API listening on http://{addr} (Swagger UI at /admin/docs)");
            }
            let routes = api::admin::routes(auth.clone()).map_to_response();
            tokio::spawn(server::serve(listener, routes, ADMIN_CONNECTIONS, stop.clone(), Duration::from_secs(10)))
        });
        let app = api::routes(self.auth, self.dev, self.metrics, self.docs).map_to_response();
        let served = server::serve(self.listener, app, self.max_connections, stop, Duration::from_secs(10)).await;
        if let Some(admin_api) = admin_api {
            match admin_api.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "admin API listener failed"),
                Err(e) => tracing::error!(error = %e, "admin API listener panicked"),
            }
        }
        reloader.abort();
        purger.abort();
        eraser.abort();
        sender.abort();
        watcher.abort();
        activation_events.abort();
        admin.abort();
        let _ = std::fs::remove_file(&admin_path);
        if let Err(e) = auth.store().close().await {
            tracing::error!(error = %e, "final flush failed");
        }
        served
    }
}

/// Refuses (dev mode: tightens or warns about) a directory that other users can read or
/// enter: the data directory holds session keys and phone numbers, the keys directory the
/// signing keys. A missing one is fine: it is created 0700.
fn private_dir(path: &std::path::Path, setting: &'static str, dev: bool) -> Result<(), StartupError> {
    let exposure = if dev { dirs::Exposure::TightenOrWarn } else { dirs::Exposure::Refuse };
    Ok(dirs::check(path, setting, exposure)?)
}

/// Open connections the admin API takes at once: operators and their tools, not the public.
const ADMIN_CONNECTIONS: usize = 64;

/// File descriptors kept free of connections: the store, keys, admin socket, WeChat.
const SPARE_FDS: u64 = 256;

/// Raises the soft open-file limit to the hard one, and lowers `WXAUTH_MAX_CONNECTIONS` to
/// what the limit allows: past it, `accept` fails with EMFILE instead of waiting.
fn connection_cap(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            limit = getrlimit(Resource::Nofile);
        }
    }
    let allowed =
        limit.current.map_or(usize::MAX, |n| usize::try_from(n.saturating_sub(SPARE_FDS)).unwrap_or(usize::MAX));
    if wanted > allowed {
        tracing::warn!(
            wanted,
            allowed,
            "WXAUTH_MAX_CONNECTIONS is above what the open-file limit (ulimit -n) allows; using the lower value"
        );
    }
    wanted.min(allowed).max(1)
}

/// How often the keys directory is read again without SIGHUP.
const KEYS_EVERY: Duration = Duration::from_secs(60);

/// Picks up key files added by `keys rotate` (or another process sharing the directory)
/// within a minute, and creates the next key when `WXAUTH_KEY_ROTATION_DAYS` says so. A
/// failure keeps the current ring and is logged once until it changes.
async fn watch_keys(auth: Arc<Auth>) {
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(KEYS_EVERY).await;
        let tokens = auth.tokens();
        // A rotation rereads the directory itself; a failed one (a read-only directory)
        // must not stop this replica from seeing keys made elsewhere.
        let outcome = match tokens.rotate_if_due() {
            Ok(Some(key)) => {
                tracing::info!(kid = %key.kid, alg = %key.alg, "created the next signing key (WXAUTH_KEY_ROTATION_DAYS)");
                auth.record_key_change(
                    EventKind::KeyStaged,
                    key.created,
                    &key.kid,
                    &key.alg.to_string(),
                    Some(key.activates),
                )
                .await;
                Ok(())
            }
            Ok(None) => tokens.reload(),
            Err(e) => tokens.reload().and(Err(e)),
        };
        match outcome {
            Ok(()) => last_error.clear(),
            Err(e) if e.to_string() != last_error => {
                last_error = e.to_string();
                tracing::error!(error = %e, "reading the keys directory failed; keeping the current ring");
            }
            Err(_) => {}
        }
    }
}

/// Records a `key_activated` event for each key that starts to sign, as the ring notices
/// it (at the first signature or JWKS after its activation, or a reload). Each replica
/// notices; the event's id is the same, so one is kept.
async fn record_activations(
    auth: Arc<Auth>,
    mut activated: tokio::sync::mpsc::UnboundedReceiver<crate::token::KeyInfo>,
) {
    while let Some(key) = activated.recv().await {
        tracing::info!(kid = %key.kid, alg = %key.alg, "a staged signing key signs now");
        auth.record_key_change(EventKind::KeyActivated, key.activates, &key.kid, &key.alg.to_string(), None).await;
    }
}

/// How often dead refresh records and old events are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Purges dead refresh records and events past their retention now and then, for as long
/// as the server runs.
async fn purge_old_records(auth: Arc<Auth>) {
    loop {
        match auth.purge_refresh().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "purged expired and revoked refresh tokens"),
            Err(e) => tracing::warn!(error = %e, "purging refresh tokens failed; will retry"),
        }
        match auth.purge_events().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "purged events older than WXAUTH_EVENT_RETENTION_DAYS"),
            Err(e) => tracing::warn!(error = %e, "purging events failed; will retry"),
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}

/// How often deletions whose grace period ended are erased.
const ERASE_EVERY: Duration = Duration::from_secs(60);

/// Erases the accounts whose deletion is due, at start (finishing an erasure a crash
/// interrupted) and every [`ERASE_EVERY`] after.
async fn erase_due_deletions(auth: Arc<Auth>) {
    loop {
        match auth.erase_due().await {
            Ok(0) => {}
            Ok(due) => tracing::info!(due, "erased the accounts whose deletion was due"),
            Err(e) => tracing::warn!(error = %e, "erasing due deletions failed; will retry"),
        }
        tokio::time::sleep(ERASE_EVERY).await;
    }
}

fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

async fn reload_keys_on_sighup(auth: Arc<Auth>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        match auth.tokens().reload() {
            Ok(()) => tracing::info!("key ring reloaded"),
            Err(e) => tracing::error!(error = %e, "key ring reload failed; keeping the old ring"),
        }
    }
}
