//! `POST /v1/login`.

use std::{borrow::Cow, sync::Arc};

use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::Json,
    registry::{MetaSchema, MetaSchemaRef},
    types::{Example, ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use super::{ApiTags, error::LoginError};
use crate::auth::{Auth, LoginOutcome};

/// Login request.
#[derive(Debug, Object)]
#[oai(example)]
pub struct LoginRequest {
    /// The one-time code from `wx.login` (valid 5 minutes, single use). 1 to 128 visible
    /// ASCII characters. In dev mode any text works, and some codes are reserved for
    /// WeChat's errors: the API description lists them when the server runs with `--dev`.
    pub code: CodeText,
    /// The AppID of the mini-program the code comes from. Optional when the server serves
    /// one app; required when it serves several.
    #[oai(nullable)]
    pub appid: Option<String>,
    /// Optional: the code from the `getPhoneNumber` button, to bind an unbound WeChat
    /// identity by its phone number in this same request (registration `phone` or `bind`;
    /// see the Phone-first login guide). Ignored, and never sent to WeChat, when the identity
    /// is bound already.
    #[oai(nullable)]
    pub phone_code: Option<CodeText>,
}

impl Example for LoginRequest {
    fn example() -> Self {
        Self { code: CodeText("alice".into()), appid: None, phone_code: None }
    }
}

/// Implements poem-openapi's traits for a newtype over `String` that accepts a JSON string
/// and nothing else: poem-openapi's `String` would turn `123` or `true` into text.
macro_rules! strict_string {
    ($name:ident, $what:literal, $schema:expr) => {
        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = String;
            type RawElementValueType = String;

            fn name() -> Cow<'static, str> {
                "string".into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&String> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
                Box::new(std::iter::once(&self.0))
            }
        }

        impl ParseFromJSON for $name {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value {
                    Some(Value::String(s)) => Ok(Self(s)),
                    other => Err(ParseError::custom(format!(
                        concat!($what, " must be a JSON string, got {}"),
                        json_kind(other.as_ref())
                    ))),
                }
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.0.clone()))
            }
        }
    };
}

/// A `wx.login` (or phone) code: a JSON string (see [`strict_string`]) sent on to WeChat.
/// Length and characters are checked by [`crate::domain::JsCode`]; the schema repeats the
/// rules for Swagger UI users.
#[derive(Debug)]
pub struct CodeText(pub String);

strict_string!(
    CodeText,
    "code",
    MetaSchema {
        min_length: Some(1),
        max_length: Some(crate::domain::JsCode::MAX_LEN),
        pattern: Some("^[!-~]+$".into()),
        ..MetaSchema::new("string")
    }
);

/// An opaque token: a JSON string, and only a string (see [`strict_string`]).
#[derive(Debug)]
pub struct TokenText(pub String);

strict_string!(TokenText, "the token", MetaSchema { min_length: Some(1), ..MetaSchema::new("string") });

fn json_kind(value: Option<&Value>) -> &'static str {
    match value {
        None | Some(Value::Null) => "nothing",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

/// The logged-in user, as part of a login answer.
#[derive(Debug, Object)]
pub struct LoginUser {
    /// Stable, opaque user id (UUID v7); the token's `sub`.
    pub id: String,
    /// The AppID the person logged in through; the token's `appid`.
    pub appid: String,
    /// WeChat openid of the user within this mini-program.
    pub openid: String,
    /// WeChat unionid, when the mini-program is bound to an Open Platform account.
    #[oai(skip_serializing_if_is_none)]
    pub unionid: Option<String>,
    /// `true` when this login created the user.
    pub created: bool,
}

/// A signed access token.
#[derive(Object)]
pub struct LoginBody {
    /// JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires; refresh it (or log in again) before then.
    pub expires_in: u64,
    /// Opaque, single-use token for `POST /v1/token/refresh`. Keep it like a password.
    pub refresh_token: String,
    /// Seconds until `refresh_token` expires (`WXAUTH_REFRESH_TOKEN_TTL`).
    pub refresh_expires_in: u64,
    /// Who logged in.
    pub user: LoginUser,
}

impl From<LoginOutcome> for LoginBody {
    fn from(o: LoginOutcome) -> Self {
        Self {
            access_token: o.token.token,
            token_type: "Bearer".into(),
            expires_in: o.token.expires_in,
            refresh_token: o.refresh.token,
            refresh_expires_in: o.refresh.expires_in,
            user: LoginUser {
                id: o.user.id.to_string(),
                appid: o.identity.appid,
                openid: o.identity.openid,
                unionid: o.user.unionid,
                created: o.created,
            },
        }
    }
}

/// Login answer.
#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Logged in. A first login answers once the new user and binding are on disk.
    #[oai(status = 200)]
    Ok(
        Json<LoginBody>,
        /// Tokens must not be cached (RFC 6749 section 5.1).
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Login operations.
pub struct LoginApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Login")]
impl LoginApi {
    /// Log in with a wx.login code
    ///
    /// Exchanges the code with WeChat (`auth.code2Session`) and returns a signed access
    /// token. The first login of an openid creates the user (registration `auto`), or
    /// answers 403 `not_bound` with a bind ticket (registration `bind`). A login whose
    /// unionid belongs to a user first seen in another app of this server logs in as that
    /// user.
    #[oai(path = "/v1/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        body: Json<LoginRequest>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<LoginResponse, LoginError> {
        let peer = super::peer(remote, headers);
        let phone_code = body.0.phone_code.as_ref().map(|c| c.0.as_str());
        let result = self.auth.login(&body.0.code.0, body.0.appid.as_deref(), phone_code, &peer).await;
        let metrics = self.auth.metrics();
        match result {
            Ok(outcome) => {
                metrics.login_succeeded();
                Ok(LoginResponse::Ok(Json(outcome.into()), super::NO_STORE.into()))
            }
            Err(failure) => {
                let error = LoginError::from(failure);
                metrics.login_failed(error.code());
                self.auth.record_login_failure(body.0.appid.as_deref(), error.code(), &peer).await;
                Err(error)
            }
        }
    }
}
