//! The admin API: `/admin/v1/...` on its own listener (`WXAUTH_ADMIN_LISTEN`), for
//! operators and their tools, authenticated by admin tokens (`wxauth admin-tokens create`),
//! with its own OpenAPI document (`/admin/openapi.json`) and Swagger UI (`/admin/docs`).
//!
//! It never shares a listener with the public API: a reverse proxy that exposes the public
//! port exposes none of it.

mod console;
mod records;
mod users;

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, SecurityScheme, Tags, auth::Bearer};
use serde_json::Value;

pub use records::{EventsPageBody, HourBody, KeyBody, KeysBody, StatsBody, TokenBody};
pub use users::{AdminUserBody, BanBody, BanRequest, ClaimsRequest, RolesRequest, UserFileBody, UsersPageBody};

use super::{AllowedMethods, NO_STORE, examples, shapes, shared};
use crate::auth::{Auth, OperatorFailure};

/// An admin token (`wxauth admin-tokens create NAME [--role read|write]`), role `read` for
/// reading and `write` for changes. In the Authorize dialog, paste the `wxa_...` token
/// alone: Swagger UI adds `Bearer ` itself.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "wxauth admin token")]
pub struct AdminToken(Bearer);

/// Operation groups of the admin API, in the order an operator needs them.
#[derive(Tags)]
pub enum AdminTags {
    /// Find users, see one, ban, unban, set roles and claims, revoke sessions.
    Users,
    /// The event log.
    Events,
    /// The signing keys, and the admin token in use.
    Keys,
    /// Logins per hour.
    Stats,
}

/// Every operation group, in display order (poem-openapi sorts them by name).
const TAG_ORDER: &[&str] = &["Users", "Events", "Keys", "Stats"];

type Apis = (users::UsersApi, records::RecordsApi);

const DESCRIPTION: &str = "The admin API of wxauth: find users and act on them, read the event log, the \
     signing keys and login statistics. Served only on `WXAUTH_ADMIN_LISTEN`.\n\n\
     Authenticate with an admin token: `wxauth admin-tokens create NAME --role read|write` prints \
     one once. Click **Authorize** and paste it (Swagger UI adds `Bearer `). Role `read` may call \
     every `GET`; changes need `write`. Every change is an event naming the token \
     (`actor: admin-token:NAME`).";

/// The admin API as poem-openapi generates it.
pub fn service(auth: Arc<Auth>) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (users::UsersApi { auth: auth.clone() }, records::RecordsApi { auth }),
        "wxauth admin API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}

/// The published admin document: the generated one with the tags in [`TAG_ORDER`], UUID
/// path parameters said to be UUIDs, and a real example body for every error answer.
pub fn spec(api: &OpenApiService<Apis, ()>) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(&api.spec()) else { return api.spec() };
    shapes::uuid_path_parameters(&mut doc);
    if let Some(Value::Array(tags)) = doc.get_mut("tags") {
        tags.sort_by_key(|t| TAG_ORDER.iter().position(|n| t["name"] == *n).unwrap_or(usize::MAX));
    }
    super::add_examples(&mut doc, examples::admin());
    serde_json::to_string(&doc).unwrap_or_else(|_| api.spec())
}

/// The admin listener's routes: the API, `/admin/openapi.json`, Swagger UI at
/// `/admin/docs` and the operator console at `/admin/`, with the public API's body limit,
/// error envelope and access log.
pub fn routes(auth: Arc<Auth>) -> impl Endpoint {
    let api = service(auth.clone());
    let document = spec(&api);
    let allowed = Arc::new(AllowedMethods::from_document(&document));
    let html = Bytes::from(api.swagger_ui_html().replace(&api.spec(), &document));
    console::mount(Route::new())
        .nest("/admin/docs", Route::new().at("/", shared(html, "text/html; charset=utf-8")))
        .at("/admin/openapi.json", shared(Bytes::from(document), "application/json; charset=utf-8"))
        .nest("/", api)
        .around(super::limit_body)
        .catch_all_error(super::error::envelope)
        .around(move |ep, req| super::observe(auth.clone(), allowed.clone(), ep, req))
}

/// An opaque paging cursor: the last item's id, base64url. Clients pass it back unchanged.
struct Cursor;

impl Cursor {
    fn encode(id: &[u8; 16]) -> String {
        URL_SAFE_NO_PAD.encode(id)
    }

    fn decode(text: &str) -> Result<[u8; 16], OperatorFailure> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok().and_then(|b| <[u8; 16]>::try_from(b).ok());
        bytes.ok_or_else(|| invalid("cursor must be a next_cursor of a previous page, unchanged"))
    }
}

/// A refusal of a parameter or body.
fn invalid(text: &str) -> OperatorFailure {
    OperatorFailure::Invalid(text.to_owned())
}

/// The refusal of a page size.
fn bad_limit(max: u32) -> OperatorFailure {
    invalid(&format!("limit must be 1 to {max}"))
}
