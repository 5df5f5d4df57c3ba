//! The app in-process: built from test settings on a random loopback port, with one
//! helper per endpoint.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use serde_json::{Value, json};
use wxauth::{
    config::{Mode, Settings},
    domain::{KeyMode, SigningAlg},
    startup::Application,
};

use super::{APPID, MockWechat, SECRET, assert_error, store_vars};

/// Settings of a test app, before it is built.
pub struct TestConfig {
    pub vars: HashMap<String, String>,
    pub alg: SigningAlg,
    /// A `--config` file's text.
    pub toml: Option<String>,
}

impl TestConfig {
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.vars.insert(name.into(), value.into());
        self
    }
}

/// A running app with its own mock WeChat, data and keys directories.
pub struct TestApp {
    pub address: String,
    /// Seconds the app's clock runs ahead of the system clock ([`TestApp::advance`]).
    clock_offset: Arc<AtomicI64>,
    admin_socket: PathBuf,
    pub client: reqwest::Client,
    pub wechat: MockWechat,
    pub dir: tempfile::TempDir,
    /// The running service (to reload its key ring, as SIGHUP would).
    pub auth: Arc<wxauth::auth::Auth>,
    /// The app's database, on PostgreSQL.
    pub database_url: Option<String>,
    /// The admin API's base URL, with `WXAUTH_ADMIN_LISTEN` set.
    pub admin_address: Option<String>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Environment for an app (in-process or a child process) talking to `wechat`.
pub fn base_vars(dir: &Path, wechat: &MockWechat) -> HashMap<String, String> {
    [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
        ("WXAUTH_DATA_DIR", dir.join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", dir.join("keys").display().to_string()),
        ("WXAUTH_WECHAT_APPID", APPID.to_string()),
        ("WXAUTH_WECHAT_SECRET", SECRET.to_string()),
        ("WXAUTH_WECHAT_BASE_URL", wechat.base_url.clone()),
        ("WXAUTH_WECHAT_OPEN_URL", wechat.base_url.clone()),
        ("WXAUTH_WECHAT_TIMEOUT_MS", "2000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(store_vars())
    .collect()
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut TestConfig)) -> TestApp {
    let wechat = MockWechat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestConfig { vars: base_vars(dir.path(), &wechat), alg: SigningAlg::ES256, toml: None };
    configure(&mut config);
    let file = config.toml.map(|text| {
        for flat in ["WXAUTH_WECHAT_APPID", "WXAUTH_WECHAT_SECRET"] {
            config.vars.remove(flat);
        }
        let path = dir.path().join("wxauth.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let database_url = config.vars.get("WXAUTH_DATABASE_URL").cloned();
    let alg = config.vars.get("WXAUTH_SIGNING_ALG").map(|a| a.parse().unwrap()).unwrap_or(config.alg);
    // Production mode refuses an empty key ring, as an operator would first run `keys rotate`.
    wxauth::token::rotate(&keys_dir(&dir), alg, KeyMode::Production, wxauth::token::Activation::Now).unwrap();
    let vars = config.vars;
    let settings = Settings::load_from(file.as_deref(), Mode::Serve, |name| vars.get(name).cloned()).unwrap();
    let admin_socket = settings.admin_socket.clone();
    let clock_offset = Arc::new(AtomicI64::new(0));
    let offset = clock_offset.clone();
    let clock = wxauth::clock::Clock::from_fn(move || {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(offset.load(Ordering::SeqCst))
    });
    let app = Application::build_with_clock(settings, clock).await.unwrap();
    let address = format!("http://{}", app.addr());
    let admin_address = app.admin_addr().map(|a| format!("http://{a}"));
    let auth = app.auth();
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    TestApp { address, clock_offset, admin_socket, client, wechat, dir, auth, database_url, admin_address }
}

/// An app in dev mode (`serve --dev`): WeChat is the built-in mock. `wechat` is an unused
/// scripted mock, there only to fill the struct.
pub async fn spawn_dev_app() -> TestApp {
    spawn_dev_app_with(&[]).await
}

/// [`spawn_dev_app`] with more settings.
pub async fn spawn_dev_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_dev_app_with_file(None, extra).await
}

/// [`spawn_dev_app_with`] and a `--config` file's text.
pub async fn spawn_dev_app_with_file(toml: Option<&str>, extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let file = toml.map(|text| {
        let path = dir.path().join("wxauth.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let mut vars: HashMap<String, String> = [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
        ("WXAUTH_DATA_DIR", dir.path().join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", dir.path().join("keys").display().to_string()),
        ("WXAUTH_WECHAT_TIMEOUT_MS", "500".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(store_vars())
    .collect();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let database_url = vars.get("WXAUTH_DATABASE_URL").cloned();
    let settings = Settings::load_from(file.as_deref(), Mode::Dev, |name| vars.get(name).cloned()).unwrap();
    let admin_socket = settings.admin_socket.clone();
    let app = Application::build(settings).await.unwrap();
    let address = format!("http://{}", app.addr());
    let admin_address = app.admin_addr().map(|a| format!("http://{a}"));
    let auth = app.auth();
    tokio::spawn(app.run_until(std::future::pending()));
    let clock_offset = Arc::new(AtomicI64::new(0));
    let wechat = MockWechat::start().await;
    let client = reqwest::Client::new();
    TestApp { address, clock_offset, admin_socket, client, wechat, dir, auth, database_url, admin_address }
}

pub fn keys_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("keys")
}

impl TestApp {
    /// Moves the app's clock forward: every expiry the app decides follows it (bind
    /// tickets, refresh and access tokens, key activation, WeChat's access token).
    pub fn advance(&self, secs: i64) {
        self.clock_offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// `POST path` with a JSON body and no token.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.address)).json(body).send().await.unwrap()
    }

    /// `POST /v1/token/refresh`.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post("/v1/token/refresh", &json!({ "refresh_token": refresh_token })).await
    }
    pub async fn post_login(&self, body: &Value) -> reqwest::Response {
        self.client.post(format!("{}/v1/login", self.address)).json(body).send().await.unwrap()
    }

    pub async fn login(&self, code: &str) -> reqwest::Response {
        self.post_login(&json!({ "code": code })).await
    }

    /// Logs in and returns the 200 body, failing the test otherwise.
    pub async fn login_ok(&self, code: &str) -> Value {
        let resp = self.login(code).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "login with {code:?} failed: {body}");
        body
    }

    pub async fn me(&self, token: &str) -> reqwest::Response {
        self.client.get(format!("{}/v1/me", self.address)).bearer_auth(token).send().await.unwrap()
    }

    /// `GET /v1/me`, failing the test unless it answers 200.
    pub async fn me_ok(&self, token: &str) -> Value {
        let resp = self.me(token).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn bind(&self, body: &Value) -> reqwest::Response {
        self.client.post(format!("{}/v1/bind", self.address)).json(body).send().await.unwrap()
    }

    /// `POST path` with a bearer token and a JSON body.
    pub async fn post_with(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.address)).bearer_auth(token).json(body).send().await.unwrap()
    }

    /// Every file under the data directory holding `needle`.
    /// Where the store keeps `needle`: files of the data directory (sled), or tables whose
    /// rows hold it as text (PostgreSQL). Empty is what a secret stored sealed gives.
    pub async fn stored_places_holding(&self, needle: &[u8]) -> Vec<String> {
        match &self.database_url {
            Some(url) => tables_holding(url, needle).await,
            None => self.data_files_holding(needle).into_iter().map(|p| p.display().to_string()).collect(),
        }
    }

    fn data_files_holding(&self, needle: &[u8]) -> Vec<PathBuf> {
        let mut files = vec![self.dir.path().join("data")];
        let mut found = Vec::new();
        let mut scanned = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            scanned += bytes.len();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
        assert!(scanned > 0, "the data directory is empty");
        found
    }

    pub async fn unbind(&self, token: &str) -> reqwest::Response {
        self.client.delete(format!("{}/v1/me/binding", self.address)).bearer_auth(token).send().await.unwrap()
    }

    /// Logs in while unbound (registration `bind`) and returns the bind ticket.
    pub async fn ticket(&self, code: &str) -> String {
        let body = assert_error(self.login(code).await, 403, "not_bound").await;
        body["bind_ticket"].as_str().unwrap().to_owned()
    }

    /// The app's admin socket (the default: inside the data directory).
    pub fn admin_socket(&self) -> PathBuf {
        self.admin_socket.clone()
    }

    /// Adds an account through the running server's admin socket, as the CLI does.
    pub async fn add_account(&self, username: &str, password: &str) -> Value {
        self.add_account_with(username, Some(password), None).await.unwrap()
    }

    /// Adds an account as `wxauth accounts add [--phone P] [--no-password]` does.
    pub async fn add_account_with(
        &self,
        username: &str,
        password: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Value, String> {
        let password_hash = password
            .map(|p| wxauth::password::hash(&wxauth::domain::Password::new_for_account(p).unwrap()).unwrap())
            .unwrap_or_default();
        self.admin_command(wxauth::admin::Command::AddAccount {
            username: username.into(),
            password_hash,
            phone: phone.map(Into::into),
        })
        .await
    }

    /// Runs an admin command through the running server's socket: its reply, or why it
    /// was refused.
    pub async fn admin_command(&self, command: wxauth::admin::Command) -> Result<Value, String> {
        match wxauth::admin::send(&self.admin_socket(), &command).await {
            Ok(reply) => Ok(serde_json::to_value(reply.expect("no admin socket")).unwrap()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Mints an admin token as `wxauth admin-tokens create` does and keeps it through the
    /// running server's admin socket; returns its text.
    pub async fn admin_token(&self, name: &str, role: wxauth::store::AdminRole) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        use secrecy::ExposeSecret;
        let minted = wxauth::auth::admin_token::mint(name, role, time::OffsetDateTime::now_utc()).unwrap();
        let command = wxauth::admin::Command::AddAdminToken {
            id: uuid::Uuid::from_bytes(minted.token.id),
            name: name.into(),
            role: role.as_str().into(),
            secret_hash: URL_SAFE_NO_PAD.encode(minted.token.secret_hash),
        };
        wxauth::admin::send(&self.admin_socket(), &command).await.unwrap().expect("no admin socket");
        minted.text.expose_secret().to_owned()
    }

    /// A request to the admin API (`WXAUTH_ADMIN_LISTEN` must be set) with `token`.
    pub fn admin(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        let base = self.admin_address.as_deref().expect("the app was started without WXAUTH_ADMIN_LISTEN");
        self.client.request(method, format!("{base}{path}")).bearer_auth(token)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    /// The one private key in the ring, as a PEM file's bytes.
    pub fn signing_key_pem(&self) -> (String, Vec<u8>) {
        let entry = std::fs::read_dir(keys_dir(&self.dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pem"))
            .unwrap();
        (entry.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read(&entry).unwrap())
    }
}

/// The tables of the database at `url` with a row whose text (bytea as hex and as bytes)
/// holds `needle`.
async fn tables_holding(url: &str, needle: &[u8]) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(tables.len() > 5, "the database has no wxauth tables: {tables:?}");
    let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
    let mut found = Vec::new();
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT t::text AS row FROM \"{table}\" t")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let holds = rows.iter().any(|r| {
            let text: String = r.get("row");
            text.as_bytes().windows(needle.len()).any(|w| w == needle) || text.contains(&hex)
        });
        if holds {
            found.push(table);
        }
    }
    found
}
