//! Test harness: a scripted mock WeChat on loopback and the app on a random port, each
//! with its own temporary directories, so tests run in parallel.

use std::{
    collections::{HashMap, VecDeque},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use poem::{
    EndpointExt, Response, Route, get, handler,
    http::header,
    listener::{Acceptor, Listener, TcpListener},
    post,
    web::{Data, Json, Query},
};
use serde_json::{Value, json};
use wxauth::{
    config::{Mode, Settings},
    domain::{KeyMode, SigningAlg},
    startup::Application,
};

/// Whether the suite runs on PostgreSQL (`WXAUTH_TEST_STORE=postgres`, with
/// `WXAUTH_TEST_DATABASE_URL`) rather than sled (the default). `.ci/run` runs it on both.
pub fn on_postgres() -> bool {
    match std::env::var("WXAUTH_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Err(_) => false,
        Ok(other) => panic!("WXAUTH_TEST_STORE={other:?}: expected sled or postgres"),
    }
}

/// Says that a test checks something only the sled backend has, and whether to skip it.
pub fn skip_on_postgres(what: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on postgres: {what} is sled's");
    }
    on_postgres()
}

/// The store settings of a new app: a fresh database on PostgreSQL; nothing for sled,
/// whose data directory every app gets anyway.
pub fn store_vars() -> Vec<(String, String)> {
    if !on_postgres() {
        return Vec::new();
    }
    let url = crate::postgres::fresh_database().unwrap_or_else(|| {
        panic!("WXAUTH_TEST_STORE=postgres needs {}", crate::postgres::VARIABLE);
    });
    vec![("WXAUTH_STORE".into(), "postgres".into()), ("WXAUTH_DATABASE_URL".into(), url)]
}

pub const APPID: &str = "wx4f4bc4dec97d474b";
pub const SECRET: &str = "AppSecret-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
/// A second mini-program of the same Open Platform account.
pub const APPID2: &str = "wx8b8b8b8b8b8b8b8b";
pub const SECRET2: &str = "AppSecret-second-app-0000000000000000000";
/// The TOML that configures both apps.
pub const TWO_APPS: &str = concat!(
    "[[wechat_apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"AppSecret-9f8e7d6c5b4a39281706f5e4d3c2b1a0\"\n\n",
    "[[wechat_apps]]\nappid = \"wx8b8b8b8b8b8b8b8b\"\nsecret = \"AppSecret-second-app-0000000000000000000\"\n",
);

/// One scripted answer of the mock WeChat.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP 200, `text/plain`, this body.
    Body(String),
    /// This status and body.
    Status(u16, String),
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// 302 to this path of the mock itself, with the same query.
    Redirect(&'static str),
}

impl Reply {
    pub fn errcode(code: i64) -> Self {
        Reply::Body(json!({"errcode": code, "errmsg": format!("mock error, rid: rid-{code}")}).to_string())
    }

    pub fn success(openid: &str, session_key: &str) -> Self {
        Reply::Body(json!({"openid": openid, "session_key": session_key}).to_string())
    }
}

#[derive(Default)]
struct MockState {
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    calls: Mutex<Vec<HashMap<String, String>>>,
    /// Scripted answers of `stable_token`, used in order before the default.
    token_scripts: Mutex<VecDeque<Reply>>,
    /// Access tokens handed out, in order; WeChat accepts those not revoked.
    tokens: Mutex<Vec<String>>,
    /// Tokens up to this index are revoked (expired early at WeChat).
    revoked: AtomicUsize,
    /// `expires_in` of the next tokens.
    token_lifetime: AtomicU64,
    /// Calls of `stable_token`, whatever it answered.
    token_calls: AtomicUsize,
    /// Scripted answers of the phone API, by phone code.
    phone_scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// Every phone API call: its access token and JSON body.
    phone_calls: Mutex<Vec<(String, Value)>>,
}

/// A mock WeChat API on loopback for [`APPID`] and [`APPID2`]. Unscripted codes succeed:
/// code `x@bob` (or `bob`) logs in as openid `o_bob` (`o_bob_2` in the second app) with
/// session key [`default_session_key`]; codes starting with `union` also get the unionid
/// `u_bob`, the same in both apps.
#[derive(Clone)]
pub struct MockWechat {
    pub base_url: String,
    state: Arc<MockState>,
}

impl MockWechat {
    pub async fn start() -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        let state = Arc::new(MockState { token_lifetime: AtomicU64::new(7200), ..MockState::default() });
        let app = Route::new()
            .at("/sns/jscode2session", get(jscode2session))
            .at("/elsewhere", get(jscode2session))
            .at("/cgi-bin/stable_token", post(stable_token))
            .at("/wxa/business/getuserphonenumber", post(phone_api))
            .data(state.clone());
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        Self { base_url: format!("http://{addr}"), state }
    }

    /// Answers for `code`, used in order; after them the default applies.
    pub fn script(&self, code: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.scripts.lock().unwrap().entry(code.into()).or_default().extend(replies);
    }

    /// How many code2Session calls carried `code`.
    pub fn calls_for(&self, code: &str) -> usize {
        self.state.calls.lock().unwrap().iter().filter(|q| q.get("js_code").map(String::as_str) == Some(code)).count()
    }

    /// Every call's query parameters.
    pub fn calls(&self) -> Vec<HashMap<String, String>> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Answers of `stable_token`, used in order; after them it hands out tokens.
    pub fn script_token(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.token_scripts.lock().unwrap().extend(replies);
    }

    /// How many times `stable_token` was called.
    pub fn token_fetches(&self) -> usize {
        self.state.token_calls.load(Ordering::SeqCst)
    }

    /// `expires_in` of the tokens handed out from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.state.token_lifetime.store(secs, Ordering::SeqCst);
    }

    /// Makes WeChat refuse every token handed out so far (errcode 40001), as when a
    /// token expires early or another process forced a refresh.
    pub fn revoke_tokens(&self) {
        let issued = self.state.tokens.lock().unwrap().len();
        self.state.revoked.store(issued, Ordering::SeqCst);
    }

    /// Answers of the phone API for `code`, used in order; after them it succeeds.
    pub fn script_phone(&self, code: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.phone_scripts.lock().unwrap().entry(code.into()).or_default().extend(replies);
    }

    /// Every phone API call: the access token it carried and its JSON body.
    pub fn phone_calls(&self) -> Vec<(String, Value)> {
        self.state.phone_calls.lock().unwrap().clone()
    }
}

/// The number the mock's phone API gives for any unscripted code.
pub const PHONE: &str = "13800138000";

#[handler]
async fn stable_token(Json(body): Json<Value>, state: Data<&Arc<MockState>>) -> Response {
    state.token_calls.fetch_add(1, Ordering::SeqCst);
    let scripted = state.token_scripts.lock().unwrap().pop_front();
    let reply = scripted.unwrap_or_else(|| {
        let credentials = (body["appid"].as_str(), body["secret"].as_str());
        if credentials != (Some(APPID), Some(SECRET)) && credentials != (Some(APPID2), Some(SECRET2)) {
            return Reply::errcode(40125);
        }
        if body["grant_type"] != "client_credential" {
            return Reply::errcode(40002);
        }
        let mut tokens = state.tokens.lock().unwrap();
        let token = format!("T{}", tokens.len() + 1);
        tokens.push(token.clone());
        let expires_in = state.token_lifetime.load(Ordering::SeqCst);
        Reply::Body(json!({"access_token": token, "expires_in": expires_in}).to_string())
    });
    // Slow enough that concurrent callers pile up behind one refresh.
    tokio::time::sleep(Duration::from_millis(50)).await;
    answer(reply, &HashMap::new()).await
}

#[handler]
async fn phone_api(
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
    state: Data<&Arc<MockState>>,
) -> Response {
    let token = q.get("access_token").cloned().unwrap_or_default();
    state.phone_calls.lock().unwrap().push((token.clone(), body.clone()));
    let valid = {
        let tokens = state.tokens.lock().unwrap();
        tokens.iter().skip(state.revoked.load(Ordering::SeqCst)).any(|t| *t == token)
    };
    let code = body["code"].as_str().unwrap_or_default().to_owned();
    let reply = if !valid {
        Reply::errcode(40001)
    } else {
        let scripted = state.phone_scripts.lock().unwrap().get_mut(&code).and_then(VecDeque::pop_front);
        scripted.unwrap_or_else(|| {
            Reply::Body(
                json!({"errcode": 0, "errmsg": "ok", "phone_info": {
                    "phoneNumber": format!("+86{PHONE}"), "purePhoneNumber": PHONE, "countryCode": "86",
                    "watermark": {"timestamp": 1637744274, "appid": APPID}
                }})
                .to_string(),
            )
        })
    };
    answer(reply, &q).await
}

pub fn default_openid(code: &str) -> String {
    format!("o_{}", code.rsplit('@').next().unwrap())
}

/// The openid of `code` in the second app.
pub fn second_app_openid(code: &str) -> String {
    default_openid(code) + "_2"
}

/// A real 16-byte key in base64, derived from the name after `@`.
pub fn default_session_key(code: &str) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let name = code.rsplit('@').next().unwrap();
    let mut key = [b'_'; 16];
    for (slot, byte) in key.iter_mut().zip(name.bytes()) {
        *slot = byte;
    }
    STANDARD.encode(key)
}

#[handler]
async fn jscode2session(Query(q): Query<HashMap<String, String>>, state: Data<&Arc<MockState>>) -> Response {
    state.calls.lock().unwrap().push(q.clone());
    let code = q.get("js_code").cloned().unwrap_or_default();
    let app = |appid, secret| {
        q.get("appid").map(String::as_str) == Some(appid) && q.get("secret").map(String::as_str) == Some(secret)
    };
    let second = app(APPID2, SECRET2);
    let reply = if !app(APPID, SECRET) && !second {
        Reply::errcode(40125)
    } else if q.get("grant_type").map(String::as_str) != Some("authorization_code") {
        Reply::errcode(40002)
    } else {
        let scripted = state.scripts.lock().unwrap().get_mut(&code).and_then(VecDeque::pop_front);
        scripted.unwrap_or_else(|| {
            let openid = if second { second_app_openid(&code) } else { default_openid(&code) };
            let mut body = json!({"openid": openid, "session_key": default_session_key(&code)});
            if code.starts_with("union") {
                body["unionid"] = json!(format!("u_{}", code.rsplit('@').next().unwrap()));
            }
            Reply::Body(body.to_string())
        })
    };
    answer(reply, &q).await
}

async fn answer(mut reply: Reply, query: &HashMap<String, String>) -> Response {
    loop {
        match reply {
            Reply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            Reply::Body(body) => return Response::builder().header(header::CONTENT_TYPE, "text/plain").body(body),
            Reply::Redirect(path) => {
                let query = serde_urlencoded_like(query);
                return Response::builder()
                    .status(poem::http::StatusCode::FOUND)
                    .header(header::LOCATION, format!("{path}?{query}"))
                    .finish();
            }
            Reply::Status(status, body) => {
                return Response::builder().status(poem::http::StatusCode::from_u16(status).unwrap()).body(body);
            }
        }
    }
}

fn serde_urlencoded_like(query: &HashMap<String, String>) -> String {
    let mut url = url::Url::parse("http://x/").unwrap();
    url.query_pairs_mut().extend_pairs(query.iter());
    url.query().unwrap_or_default().to_owned()
}

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
    let auth = app.auth();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp { address, clock_offset, admin_socket, client: reqwest::Client::new(), wechat, dir, auth, database_url }
}

/// An app in dev mode (`serve --dev`): WeChat is the built-in mock. `wechat` is an unused
/// scripted mock, there only to fill the struct.
pub async fn spawn_dev_app() -> TestApp {
    spawn_dev_app_with(&[]).await
}

/// [`spawn_dev_app`] with more settings.
pub async fn spawn_dev_app_with(extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
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
    let settings = Settings::load_from(None, Mode::Dev, |name| vars.get(name).cloned()).unwrap();
    let admin_socket = settings.admin_socket.clone();
    let app = Application::build(settings).await.unwrap();
    let address = format!("http://{}", app.addr());
    let auth = app.auth();
    tokio::spawn(app.run_until(std::future::pending()));
    let clock_offset = Arc::new(AtomicI64::new(0));
    let wechat = MockWechat::start().await;
    TestApp { address, clock_offset, admin_socket, client: reqwest::Client::new(), wechat, dir, auth, database_url }
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
        let password_hash =
            wxauth::password::hash(&wxauth::domain::Password::new_for_account(password).unwrap()).unwrap();
        let command = wxauth::admin::Command::AddAccount { username: username.into(), password_hash };
        let reply = wxauth::admin::send(&self.admin_socket(), &command).await.unwrap().expect("no admin socket");
        serde_json::to_value(reply).unwrap()
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

/// Asserts the JSON error envelope and returns the `error` code.
pub async fn assert_error(resp: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(resp.status(), status, "status");
    assert!(
        resp.headers()[header::CONTENT_TYPE.as_str()].to_str().unwrap().starts_with("application/json"),
        "error content type"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}

/// Installs jsonwebtoken's crypto provider for tokens the tests sign themselves.
pub fn crypto() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
}

// The real binary, for tests of start-up, signals, crashes and logs (`process.rs`).

pub const BIN: &str = env!("CARGO_BIN_EXE_wxauth");

pub fn command(vars: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    with_settings(cmd, vars)
}

/// `cmd` with `vars` as its only `WXAUTH_` settings.
pub fn with_settings(mut cmd: Command, vars: &HashMap<String, String>) -> Command {
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("WXAUTH_") || n == "RUST_LOG") {
        cmd.env_remove(name);
    }
    cmd.envs(vars);
    cmd
}

pub fn run(vars: &HashMap<String, String>, args: &[&str]) -> Output {
    command(vars, args).output().unwrap()
}

/// A `wxauth serve` child process with its combined log output captured.
pub struct Server {
    pub child: Child,
    pub address: String,
    pub log: Arc<Mutex<String>>,
}

/// A test that fails or times out must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(vars: &HashMap<String, String>, args: &[&str]) -> Server {
        Server::spawn(command(vars, args))
    }

    /// Runs `command`, which must start a server, and waits for its "listening" line.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr: String =
                            rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                        let _ = tx.send(format!("http://{addr}"));
                    }
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not start:\n{}", log.lock().unwrap()));
        Server { child, address, log }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// SIGTERM, wait for exit, and return everything it logged.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        assert!(self.child.wait().unwrap().success(), "unclean exit:\n{}", self.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        self.log.lock().unwrap().clone()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn login(&self, code: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/login", self.address))
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Waits until `/readyz` answers 200, failing the test after `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let started = std::time::Instant::now();
        loop {
            let (status, body) = self.get("/readyz", None).await;
            if status == 200 {
                return;
            }
            assert!(started.elapsed() < within, "not ready after {within:?}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.address));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
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

pub async fn production(dir: &Path) -> (MockWechat, HashMap<String, String>) {
    let wechat = MockWechat::start().await;
    let mut vars = base_vars(dir, &wechat);
    // Fixed: the default issuer names the bound address, and port 0 changes on restart.
    vars.insert("WXAUTH_ISSUER".into(), "https://auth.example.com".into());
    let out = run(&vars, &["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (wechat, vars)
}

/// Runs `wxauth <args>`, which must fail within 30 s (a server that starts instead is
/// killed); its stderr.
pub fn refused_start(vars: &HashMap<String, String>, args: &[&str]) -> String {
    let mut child = command(vars, args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the server started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `wxauth <args>` with `stdin` as its standard input; returns status, stdout, stderr.
pub fn run_with_stdin(vars: &HashMap<String, String>, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child =
        command(vars, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}
