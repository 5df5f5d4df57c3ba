//! The mock WeChat: code2Session, `stable_token` and the phone API on loopback, scripted per code.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
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

/// An official account (公众号) of the same Open Platform account.
pub const OA_APPID: &str = "wxoa000000000000";
pub const OA_SECRET: &str = "AppSecret-official-account-000000000000";
/// A website application (QR login) of the same Open Platform account.
pub const WEB_APPID: &str = "wxweb00000000000";
pub const WEB_SECRET: &str = "AppSecret-website-0000000000000000000000";
/// A mobile application of the same Open Platform account.
pub const MOBILE_APPID: &str = "wxmob00000000000";
pub const MOBILE_SECRET: &str = "AppSecret-mobile-app-000000000000000000";
/// Where the browser apps may return to, in the tests.
pub const CLIENT_REDIRECT: &str = "http://127.0.0.1:9/app/callback";

/// The TOML of every surface: the mini-program first, then the official account, the
/// website and the mobile app.
pub fn every_surface() -> String {
    format!(
        "[[wechat_apps]]\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\n\n\
         [[wechat_apps]]\nappid = \"{OA_APPID}\"\nsecret = \"{OA_SECRET}\"\nkind = \"official_account\"\n\
         redirect_uris = [\"{CLIENT_REDIRECT}\"]\n\n\
         [[wechat_apps]]\nappid = \"{WEB_APPID}\"\nsecret = \"{WEB_SECRET}\"\nkind = \"website\"\n\
         redirect_uris = [\"{CLIENT_REDIRECT}\"]\n\n\
         [[wechat_apps]]\nappid = \"{MOBILE_APPID}\"\nsecret = \"{MOBILE_SECRET}\"\nkind = \"mobile_app\"\n"
    )
}

/// The openid of `code`'s person in an app other than the two mini-programs.
pub fn surface_openid(appid: &str, code: &str) -> String {
    format!("{}_{}", default_openid(code), &appid[2..5])
}

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
    /// The person WeChat's authorize pages log in (`code` text), for browser tests.
    browser_person: Mutex<String>,
    /// Calls of `/sns/userinfo`.
    userinfo_calls: AtomicUsize,
    /// The JSON bodies of `getwxacodeunlimit` calls.
    wxacode_calls: Mutex<Vec<Value>>,
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
            .at("/sns/oauth2/access_token", get(oauth_access_token))
            .at("/sns/userinfo", get(userinfo))
            .at("/connect/oauth2/authorize", get(authorize_page))
            .at("/connect/qrconnect", get(authorize_page))
            .at("/wxa/getwxacodeunlimit", post(wxacode))
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

    /// The person WeChat's authorize and QR pages log in from now on: their codes are
    /// `<n>@<person>`.
    pub fn set_browser_person(&self, person: &str) {
        *self.state.browser_person.lock().unwrap() = person.to_owned();
    }

    /// The JSON bodies of every `getwxacodeunlimit` call.
    pub fn wxacode_calls(&self) -> Vec<Value> {
        self.state.wxacode_calls.lock().unwrap().clone()
    }

    /// How many times `/sns/userinfo` was called.
    pub fn userinfo_calls(&self) -> usize {
        self.state.userinfo_calls.load(Ordering::SeqCst)
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
        // `number-13912345678`: that number; any other code: PHONE.
        let number = code.strip_prefix("number-").unwrap_or(PHONE).to_owned();
        scripted.unwrap_or_else(|| {
            Reply::Body(
                json!({"errcode": 0, "errmsg": "ok", "phone_info": {
                    "phoneNumber": format!("+86{number}"), "purePhoneNumber": number, "countryCode": "86",
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

/// `/sns/oauth2/access_token` of the official account, website and mobile app: code
/// `x@bob` is `bob`, with openid [`surface_openid`], and a unionid for `union*` codes.
#[handler]
async fn oauth_access_token(Query(q): Query<HashMap<String, String>>, state: Data<&Arc<MockState>>) -> Response {
    state.calls.lock().unwrap().push(q.clone());
    let code = q.get("code").cloned().unwrap_or_default();
    let appid = q.get("appid").cloned().unwrap_or_default();
    let known = [(OA_APPID, OA_SECRET), (WEB_APPID, WEB_SECRET), (MOBILE_APPID, MOBILE_SECRET)];
    let reply = match known.iter().find(|(a, _)| *a == appid) {
        None => Reply::errcode(40013),
        Some((_, secret)) if q.get("secret").map(String::as_str) != Some(*secret) => Reply::errcode(40125),
        Some(_) if q.get("grant_type").map(String::as_str) != Some("authorization_code") => Reply::errcode(40002),
        Some(_) if code.is_empty() => Reply::errcode(41008),
        Some(_) => {
            let scripted = state.scripts.lock().unwrap().get_mut(&code).and_then(VecDeque::pop_front);
            scripted.unwrap_or_else(|| {
                let scope = if appid == WEB_APPID { "snsapi_login" } else { "snsapi_userinfo" };
                let mut body = json!({
                    "access_token": format!("web-token-{code}"), "expires_in": 7200, "refresh_token": "r",
                    "openid": surface_openid(&appid, &code), "scope": scope,
                });
                if code.rsplit('@').next().unwrap().starts_with("union") {
                    body["unionid"] = json!(format!("u_{}", code.rsplit('@').next().unwrap()));
                }
                Reply::Body(body.to_string())
            })
        }
    };
    answer(reply, &q).await
}

/// `/sns/userinfo`: the person's nickname and avatar, for the token `oauth_access_token` gave.
#[handler]
async fn userinfo(Query(q): Query<HashMap<String, String>>, state: Data<&Arc<MockState>>) -> Response {
    state.userinfo_calls.fetch_add(1, Ordering::SeqCst);
    let token = q.get("access_token").cloned().unwrap_or_default();
    let reply = match token.strip_prefix("web-token-") {
        Some(code) => {
            let person = code.rsplit('@').next().unwrap();
            Reply::Body(
                json!({"openid": q.get("openid"), "nickname": format!("Nick {person}"),
                "headimgurl": format!("https://thirdwx.qlogo.cn/mmopen/{person}/132")})
                .to_string(),
            )
        }
        None => Reply::errcode(40001),
    };
    answer(reply, &q).await
}

/// WeChat's authorize and QR pages, as a person who allows at once: back to
/// `redirect_uri` with a code of [`MockWechat::set_browser_person`] and the same `state`.
#[handler]
async fn authorize_page(Query(q): Query<HashMap<String, String>>, state: Data<&Arc<MockState>>) -> Response {
    static N: AtomicUsize = AtomicUsize::new(0);
    let person = state.browser_person.lock().unwrap().clone();
    let person = if person.is_empty() { "browser".to_owned() } else { person };
    let mut target = url::Url::parse(q.get("redirect_uri").map(String::as_str).unwrap_or("http://invalid/")).unwrap();
    let code = format!("{}@{person}", N.fetch_add(1, Ordering::SeqCst));
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
    Response::builder().status(poem::http::StatusCode::FOUND).header(header::LOCATION, target.as_str()).finish()
}

/// The PNG `getwxacodeunlimit` answers.
pub const CODE_PNG: &[u8] = b"\x89PNG\r\n\x1a\nmock-mini-program-code";

/// `getwxacodeunlimit`: [`CODE_PNG`] for a valid access token, else 40001.
#[handler]
async fn wxacode(
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
    state: Data<&Arc<MockState>>,
) -> Response {
    state.wxacode_calls.lock().unwrap().push(body);
    let token = q.get("access_token").cloned().unwrap_or_default();
    let valid = {
        let tokens = state.tokens.lock().unwrap();
        tokens.iter().skip(state.revoked.load(Ordering::SeqCst)).any(|t| *t == token)
    };
    if !valid {
        return answer(Reply::errcode(40001), &q).await;
    }
    Response::builder().header(header::CONTENT_TYPE, "image/png").body(CODE_PNG.to_vec())
}
