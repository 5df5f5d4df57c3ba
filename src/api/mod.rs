//! The HTTP API: one `#[OpenApi]` struct per tag, combined into one service with Swagger UI.

pub mod access;
pub mod admin;
pub mod bind;
pub mod deletion;
pub mod dev;
pub mod error;
pub mod events;
mod examples;
pub mod health;
pub mod introspect;
pub mod keys;
pub mod login;
pub mod me;
pub mod oauth;
pub mod open_data;
pub mod refresh;
pub mod scan;
pub mod sessions;
mod shapes;

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route,
    http::{StatusCode, header},
};
use poem_openapi::{OpenApiService, Tags};
use serde_json::Value;

use crate::{auth::Auth, devmock};

/// `Cache-Control` of answers that carry credentials or personal data.
const NO_STORE: &str = "no-store";

/// Largest request body accepted; a login body is a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a client may take to send its body once the headers are in. A body is at most
/// [`MAX_BODY_BYTES`]; one that trickles in holds a connection for nothing.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest request path written to the access log.
const MAX_LOGGED_PATH: usize = 200;

/// Longest request method written to the access log. Registered methods have at most 17
/// bytes (`UPDATEREDIRECTREF`); hyper takes any token up to the 64 KiB head limit.
const MAX_LOGGED_METHOD: usize = 32;

/// The operations counted against `WXAUTH_RATE_LIMIT_PER_MINUTE`.
const RATE_LIMITED: &[&str] = &["/v1/login", "/v1/bind", "/v1/deletion/cancel"];
/// Refreshes are counted per client address by a limit of their own.
const REFRESH_PATH: &str = "/v1/token/refresh";

/// Operation groups in Swagger UI, in the order a newcomer needs them.
#[derive(Tags)]
pub enum ApiTags {
    /// Log mini-program users in, refresh their tokens, log them out.
    Login,
    /// The logged-in user.
    User,
    /// The phone number and profile the person shares through WeChat's open data.
    OpenData,
    /// Bind a WeChat identity to an existing account (registration `bind`), or unbind it.
    Binding,
    /// Public keys for verifying tokens offline.
    Keys,
    /// Service health.
    Health,
    /// Dev mode only: fakes what the mini-program would get from WeChat.
    Dev,
}

/// Every operation group, in display order. poem-openapi sorts tags by name; Swagger UI
/// shows them in the document's order, which [`spec`] restores from this list.
const TAG_ORDER: &[&str] = &["Login", "User", "OpenData", "Binding", "Keys", "Health", "Dev"];

type Apis = (
    login::LoginApi,
    oauth::OauthApi,
    scan::ScanApi,
    refresh::RefreshApi,
    me::MeApi,
    sessions::SessionsApi,
    access::AccessApi,
    deletion::DeletionApi,
    open_data::OpenDataApi,
    bind::BindApi,
    keys::KeysApi,
    introspect::IntrospectApi,
    health::HealthApi,
    dev::DevApi,
);

const DESCRIPTION: &str = "Logs WeChat mini-program users in with a `wx.login` code and issues signed JWTs. \
     Verify tokens offline with the keys at `/.well-known/jwks.json`.\n\n\
     To try an operation that needs a token: log in, copy `access_token`, click **Authorize** and \
     paste the token alone (Swagger UI adds `Bearer ` itself).";

/// The OpenAPI service as poem-openapi generates it.
pub fn service(auth: Arc<Auth>, dev: bool) -> OpenApiService<Apis, ()> {
    let mut description = DESCRIPTION.to_owned();
    if dev {
        description.push_str(
            "\n\n**Dev mode**: WeChat is a local mock and any code logs in. These codes are \
             reserved for WeChat's errors:\n",
        );
        for (code, effect) in devmock::RESERVED_CODES {
            description.push_str(&format!("\n- `{code}`: {effect}"));
        }
        description.push_str(
            "\n\nPhone codes (`POST /v1/me/phone` with `code`): any code gives the person's fake \
             number, except:\n",
        );
        for (code, effect) in devmock::RESERVED_PHONE_CODES {
            description.push_str(&format!("\n- `{code}`: {effect}"));
        }
        description.push_str(
            "\n\nEncrypted open data: log in, authorize, then `POST /v1/dev/open-data` gives the \
             `encrypted_data` and `iv` WeChat would give the mini-program; send them to \
             `POST /v1/me/phone` or `POST /v1/me/profile`.",
        );
    }
    OpenApiService::new(
        (
            login::LoginApi { auth: auth.clone() },
            oauth::OauthApi { auth: auth.clone() },
            scan::ScanApi { auth: auth.clone() },
            refresh::RefreshApi { auth: auth.clone() },
            me::MeApi { auth: auth.clone() },
            sessions::SessionsApi { auth: auth.clone() },
            access::AccessApi { auth: auth.clone() },
            deletion::DeletionApi { auth: auth.clone() },
            open_data::OpenDataApi { auth: auth.clone() },
            bind::BindApi { auth: auth.clone() },
            keys::KeysApi { auth: auth.clone() },
            introspect::IntrospectApi { auth: auth.clone() },
            health::HealthApi::new(auth.clone()),
            dev::DevApi { auth },
        ),
        "wxauth",
        env!("CARGO_PKG_VERSION"),
    )
    .description(description)
}

/// The published OpenAPI document: the generated one with the tags in [`TAG_ORDER`], the
/// request shapes of [`shapes`], a real example body for every error answer (see
/// [`examples`]), and the dev-only
/// operations only in dev mode.
pub fn spec(api: &OpenApiService<Apis, ()>, dev: bool) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(&api.spec()) else { return api.spec() };
    if !dev {
        // Dev-only operations answer 404 in production; the document does not show them.
        if let Some(Value::Object(paths)) = doc.get_mut("paths") {
            paths.retain(|path, _| !path.starts_with("/v1/dev/"));
        }
        if let Some(Value::Array(tags)) = doc.get_mut("tags") {
            tags.retain(|t| t["name"] != "Dev");
        }
        if let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") {
            schemas.retain(|name, _| !name.starts_with("Dev"));
        }
    }
    shapes::apply(&mut doc);
    if let Some(Value::Array(tags)) = doc.get_mut("tags") {
        tags.sort_by_key(|t| TAG_ORDER.iter().position(|n| t["name"] == *n).unwrap_or(usize::MAX));
    }
    add_examples(&mut doc, examples::all());
    serde_json::to_string(&doc).unwrap_or_else(|_| api.spec())
}

/// Puts each operation's example error bodies into `doc`.
fn add_examples(doc: &mut Value, all: Vec<examples::Examples>) {
    for examples::Examples { path, method, status, list } in all {
        let examples: serde_json::Map<_, _> = list
            .into_iter()
            .map(|(name, body)| (name.to_owned(), serde_json::json!({ "summary": name, "value": body })))
            .collect();
        let content =
            doc.pointer_mut(&format!("/paths/{}/{method}/responses/{status}/content", path.replace('/', "~1")));
        for media in content.and_then(Value::as_object_mut).into_iter().flat_map(|c| c.values_mut()) {
            media["examples"] = examples.clone().into();
        }
    }
}

/// Every route: the API, the spec at `/openapi.json` and, with `docs`, Swagger UI at
/// `/docs`; with `metrics`, the Prometheus metrics at `/metrics`.
pub fn routes(auth: Arc<Auth>, dev: bool, metrics: bool, docs: bool) -> impl Endpoint {
    let api = service(auth.clone(), dev);
    let document = spec(&api, dev);
    let allowed = Arc::new(AllowedMethods::from_document(&document));
    let mut route = Route::new();
    if docs {
        // Swagger UI embeds the document it is given; give it the published one. Built once
        // and shared (1.7 MB): a client that never reads its answers holds a reference per
        // request, not a copy (see `server`'s bounds).
        let html = Bytes::from(api.swagger_ui_html().replace(&api.spec(), &document));
        route = route.nest("/docs", Route::new().at("/", shared(html, "text/html; charset=utf-8")));
    }
    let route = route.at("/openapi.json", shared(Bytes::from(document), "application/json; charset=utf-8"));
    // The liveness probe by a route of its own: the generated router's layers cost it a
    // third of its rate. The operation in the document is the same handler's.
    let live = auth.clone();
    let route = route.at(
        "/healthz",
        poem::get(poem::endpoint::make(move |_| {
            let auth = live.clone();
            async move { health::liveness(&auth).await }
        })),
    );
    let mut route = route.nest("/", api);
    if !dev {
        // Absent in production: 404 before authentication or body parsing can answer.
        route = route.nest("/v1/dev", absent);
    }
    if metrics {
        let registry = auth.metrics().clone();
        route = route.at(
            "/metrics",
            poem::endpoint::make_sync(move |_| {
                Response::builder().header(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE).body(registry.render())
            }),
        );
    }
    route
        .around(limit_body)
        .catch_all_error(error::envelope)
        .around(move |ep, req| observe(auth.clone(), allowed.clone(), ep, req))
}

/// An endpoint answering every request with `body`, shared, not copied.
fn shared(body: Bytes, content_type: &'static str) -> impl Endpoint<Output = Response> {
    poem::endpoint::make_sync(move |_| {
        Response::builder().header(header::CONTENT_TYPE, content_type).body(body.clone())
    })
}

/// The methods each operation's path answers, from the document: a 405 names them in
/// `Allow` (RFC 9110, section 15.5.6). HEAD goes with GET, as poem answers it.
#[derive(Debug, Default)]
struct AllowedMethods {
    /// Paths without parameters, looked up as they are.
    exact: HashMap<String, String>,
    /// Paths with parameters (`/v1/me/sessions/{id}`), as segments: `None` matches any one.
    templated: Vec<(Vec<Option<String>>, String)>,
}

impl AllowedMethods {
    fn from_document(document: &str) -> Self {
        let mut allowed = Self::default();
        let Ok(doc) = serde_json::from_str::<Value>(document) else { return allowed };
        for (path, operations) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
            let mut methods: Vec<String> =
                operations.as_object().into_iter().flatten().map(|(m, _)| m.to_ascii_uppercase()).collect();
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".into());
            }
            methods.sort();
            let methods = methods.join(", ");
            if path.contains('{') {
                let segments = path.split('/').map(|s| (!s.starts_with('{')).then(|| s.to_owned())).collect();
                allowed.templated.push((segments, methods));
            } else {
                allowed.exact.insert(path.clone(), methods);
            }
        }
        allowed
    }

    /// The `Allow` value of a request's path, if the document has the path.
    fn of(&self, path: &str) -> Option<&str> {
        if let Some(methods) = self.exact.get(path) {
            return Some(methods);
        }
        let segments: Vec<&str> = path.split('/').collect();
        self.templated
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| match t {
                        Some(t) => t == s,
                        None => !s.is_empty(),
                    })
            })
            .map(|(_, methods)| methods.as_str())
    }
}

/// Every request: counted while in flight (`wxauth_http_requests_in_flight`), held to
/// `WXAUTH_RATE_LIMIT_PER_MINUTE` before its body is read, and logged in one line: method
/// (cut at [`MAX_LOGGED_METHOD`] bytes), path (never the query, where a client might put a
/// code or a token; cut at [`MAX_LOGGED_PATH`] bytes), status and duration. One layer for the three: each layer
/// wraps the future of the rest, and a request's future is moved whole. A 405 gets its
/// `Allow` header here too.
async fn observe<E: Endpoint>(
    auth: Arc<Auth>,
    allowed: Arc<AllowedMethods>,
    ep: Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let _in_flight = auth.metrics().request_started();
    let method = cut_for_log(req.method().as_str(), MAX_LOGGED_METHOD);
    // The path as logged; the Allow lookup below matches it the same (a scan session's
    // secret is one path segment either way).
    let path = cut_for_log(&without_secrets(req.uri().path()), MAX_LOGGED_PATH);
    let started = std::time::Instant::now();
    let mut resp = match over_rate_limit(&auth, &req) {
        Some(refused) => refused,
        None => ep.call(req).await.map(IntoResponse::into_response)?,
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = allowed.of(&path).and_then(|m| header::HeaderValue::from_str(m).ok())
    {
        resp.headers_mut().insert(header::ALLOW, methods);
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(target: "wxauth::access", %method, %path, status = resp.status().as_u16(), elapsed_ms, "request");
    Ok(resp)
}

/// The 429 of a client over `WXAUTH_RATE_LIMIT_PER_MINUTE` on the limited operations, or
/// over `WXAUTH_REFRESH_ATTEMPTS_PER_IP` on refreshes. Counted before the body is read, so
/// that malformed requests cost their sender too.
fn over_rate_limit(auth: &Auth, req: &Request) -> Option<Response> {
    if req.method() != poem::http::Method::POST {
        return None;
    }
    let path = req.uri().path();
    let refresh = path == REFRESH_PATH;
    if !refresh && !RATE_LIMITED.contains(&path) {
        return None;
    }
    let peer = req.remote_addr().as_socket_addr()?.ip();
    let forwarded_for = forwarded_for(req.headers());
    let (checked, what) = match refresh {
        true => (auth.check_refresh_request(peer, &forwarded_for), "refreshes"),
        false => (auth.check_request(peer, &forwarded_for), "login attempts"),
    };
    checked.err().map(|wait| error::rate_limited(wait, what))
}

/// Where a request came from: its TCP peer, `X-Forwarded-For` and `User-Agent`.
fn peer<'a>(remote: &poem::web::RemoteAddr, headers: &'a header::HeaderMap) -> crate::auth::Peer<'a> {
    crate::auth::Peer {
        addr: remote.as_socket_addr().map(|a| a.ip()),
        forwarded_for: forwarded_for(headers),
        user_agent: headers.get(header::USER_AGENT).map(|v| v.as_bytes()),
    }
}

/// The lines of `X-Forwarded-For`, in order, as bytes. Proxies may add a line of their own
/// rather than append to the client's, and a line need not be ASCII: each entry is read on
/// its own ([`crate::limits::Attempts::client_ip`]).
fn forwarded_for(headers: &header::HeaderMap) -> Vec<&[u8]> {
    headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()).collect()
}

/// A 404 like that of any unknown path.
#[poem::handler]
fn absent() -> poem::Result<()> {
    Err(poem::Error::from_status(StatusCode::NOT_FOUND))
}

/// A client's `text` (the path or the method) as the access log shows it: at most `max`
/// bytes, then `…` when cut. hyper lets only ASCII through, but the cut never splits a
/// character whatever the text.
/// The path with the secrets some paths carry left out: a scan session's poll id is
/// `<scene>.<secret>`, and whoever reads the log within its five minutes could collect it.
fn without_secrets(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/v1/scan-sessions/").and_then(|rest| rest.split_once('.')) {
        Some((scene, _)) => format!("/v1/scan-sessions/{scene}.<secret>").into(),
        None => path.into(),
    }
}

fn cut_for_log(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    format!("{}…", &text[..text.floor_char_boundary(max)])
}

/// Buffers the body up to [`MAX_BODY_BYTES`], with or without a Content-Length (poem's
/// `SizeLimit` refuses requests without one, which includes every GET), within
/// [`BODY_DEADLINE`]. A Content-Length over the limit is refused before the body is
/// touched: hyper sends `100 Continue` to an `Expect: 100-continue` request only when its
/// body is first read, so such a client is told at once and never sends the body.
async fn limit_body<E: Endpoint>(ep: std::sync::Arc<E>, mut req: Request) -> poem::Result<Response> {
    if has_no_body(&req) {
        // Nothing to wait for: no timer, no read (most GETs).
        return ep.call(req).await.map(IntoResponse::into_response);
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let body = tokio::time::timeout(BODY_DEADLINE, req.take_body().into_bytes_limit(MAX_BODY_BYTES))
        .await
        .map_err(|_| poem::Error::from_status(StatusCode::REQUEST_TIMEOUT))?
        .map_err(|_| poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE))?;
    req.set_body(body);
    ep.call(req).await.map(IntoResponse::into_response)
}

/// Whether `req` has no body by its headers alone: an HTTP/1 request without
/// `Content-Length` and `Transfer-Encoding` has none (RFC 9112, section 6.3); an HTTP/2
/// request may send data frames whatever its headers say.
fn has_no_body(req: &Request) -> bool {
    req.version() < poem::http::Version::HTTP_2
        && !req.headers().contains_key(header::CONTENT_LENGTH)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_access_log_leaves_out_a_scan_session_s_secret_and_keeps_other_paths() {
        assert_eq!(super::without_secrets("/v1/scan-sessions/0abc.s3cr3t"), "/v1/scan-sessions/0abc.<secret>");
        assert_eq!(super::without_secrets("/v1/scan-sessions/0abc/confirm"), "/v1/scan-sessions/0abc/confirm");
        assert_eq!(super::without_secrets("/v1/me/sessions/x.y"), "/v1/me/sessions/x.y");
    }

    use super::*;

    #[test]
    fn a_logged_path_is_cut_only_past_its_limit() {
        let at_limit = format!("/{}", "p".repeat(MAX_LOGGED_PATH - 1));
        assert_eq!(cut_for_log(&at_limit, MAX_LOGGED_PATH), at_limit, "a path of exactly the limit was marked as cut");
        let over = format!("{at_limit}x");
        assert_eq!(cut_for_log(&over, MAX_LOGGED_PATH), format!("{at_limit}…"));
        assert_eq!(cut_for_log("/healthz", MAX_LOGGED_PATH), "/healthz");
    }

    #[test]
    fn a_logged_method_is_cut_like_a_path() {
        for (method, logged) in [
            ("GET".to_owned(), "GET".to_owned()),
            ("UPDATEREDIRECTREF".to_owned(), "UPDATEREDIRECTREF".to_owned()),
            ("M".repeat(MAX_LOGGED_METHOD), "M".repeat(MAX_LOGGED_METHOD)),
            ("M".repeat(MAX_LOGGED_METHOD + 1), format!("{}…", "M".repeat(MAX_LOGGED_METHOD))),
            ("X".repeat(60_000), format!("{}…", "X".repeat(MAX_LOGGED_METHOD))),
            // Not what hyper lets through, but a cut must not split a character either.
            (format!("{}é", "M".repeat(MAX_LOGGED_METHOD - 1)), format!("{}…", "M".repeat(MAX_LOGGED_METHOD - 1))),
        ] {
            assert_eq!(cut_for_log(&method, MAX_LOGGED_METHOD), logged, "{} bytes", method.len());
        }
    }
}
