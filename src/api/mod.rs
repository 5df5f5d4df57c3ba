//! The HTTP API: one `#[OpenApi]` struct per tag, combined into one service with Swagger UI.

pub mod error;
pub mod health;
pub mod keys;
pub mod login;
pub mod me;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, http::StatusCode};
use poem_openapi::{OpenApiService, Tags};

use crate::auth::Auth;

/// Largest request body accepted; a login body is a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Operation groups in Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Log mini-program users in.
    Login,
    /// The logged-in user.
    User,
    /// Public keys for verifying tokens offline.
    Keys,
    /// Service health.
    Health,
}

/// The OpenAPI service (also the source of the committed spec).
pub fn service(auth: Arc<Auth>) -> OpenApiService<(login::LoginApi, me::MeApi, keys::KeysApi, health::HealthApi), ()> {
    OpenApiService::new(
        (
            login::LoginApi { auth: auth.clone() },
            me::MeApi { auth: auth.clone() },
            keys::KeysApi { auth: auth.clone() },
            health::HealthApi { auth },
        ),
        "wxauth",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Logs WeChat mini-program users in with a `wx.login` code and issues signed JWTs. \
         Verify tokens offline with the keys at `/.well-known/jwks.json`.",
    )
}

/// Every route: the API, Swagger UI at `/docs` and the spec at `/openapi.json`.
pub fn routes(auth: Arc<Auth>) -> impl Endpoint {
    let api = service(auth);
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .around(limit_body)
        .catch_all_error(error::envelope)
        .around(access_log)
}

/// One line per request: method, path (never the query, where a client might put a code
/// or a token), status and duration.
async fn access_log<E: Endpoint>(ep: std::sync::Arc<E>, req: Request) -> poem::Result<Response> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let started = std::time::Instant::now();
    let resp = ep.call(req).await.map(IntoResponse::into_response)?;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(target: "wxauth::access", %method, %path, status = resp.status().as_u16(), elapsed_ms, "request");
    Ok(resp)
}

/// Buffers the body up to [`MAX_BODY_BYTES`], with or without a Content-Length (poem's
/// `SizeLimit` refuses requests without one, which includes every GET).
async fn limit_body<E: Endpoint>(ep: std::sync::Arc<E>, mut req: Request) -> poem::Result<Response> {
    let body = req
        .take_body()
        .into_bytes_limit(MAX_BODY_BYTES)
        .await
        .map_err(|_| poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE))?;
    req.set_body(body);
    ep.call(req).await.map(IntoResponse::into_response)
}
