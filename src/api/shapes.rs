//! What the request schemas say beyond what poem-openapi's `Object` derive can: which
//! fields go together, and the shape of values the server checks itself. Added to the
//! published document only: the server parses these bodies exactly as before, so the same
//! inputs are accepted and the same error codes answered, and the document now says so.

use serde_json::{Value, json};

/// A branch of a `oneOf`: the `given` fields are present and not null, the `absent` ones
/// missing or null (the server reads a null as missing).
fn exactly(given: &[&str], absent: &[&str]) -> Value {
    let mut properties = serde_json::Map::new();
    for field in given {
        properties.insert((*field).into(), json!({ "type": "string" }));
    }
    for field in absent {
        properties.insert((*field).into(), json!({ "nullable": true, "enum": [null] }));
    }
    json!({ "required": given, "properties": properties })
}

/// Every addition: the schema, then the keywords added to it (`oneOf`) or to one of its
/// properties.
fn additions() -> Vec<(&'static str, Option<&'static str>, Value)> {
    // An AppID as the configuration accepts it (`config::check_appid`); any other is
    // answered `unknown_app`, and so is one of this shape that the server does not serve.
    let appid = json!({ "minLength": 1, "pattern": "^[0-9A-Za-z]+$" });
    // `opendata::decrypt`: canonical base64 (the server also reads a space as `+` and
    // ignores line breaks around it) of a 16-byte iv, and of data in whole 16-byte blocks:
    // 48 bytes are 64 characters; 16 and 32 bytes left over end in `==` and `=`.
    let iv = json!({ "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$" });
    let blocks = json!({
        "pattern": "^(?:[A-Za-z0-9+/]{64})*(?:[A-Za-z0-9+/]{64}|[A-Za-z0-9+/]{21}[AQgw]==|[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)$"
    });
    vec![
        ("LoginRequest", Some("appid"), appid.clone()),
        ("CancelDeletionRequest", Some("appid"), appid.clone()),
        ("BindBody", Some("appid"), appid),
        (
            "BindBody",
            None,
            json!({ "oneOf": [exactly(&["bind_ticket"], &["code"]), exactly(&["code"], &["bind_ticket"])] }),
        ),
        // `domain::Username::parse`.
        ("BindBody", Some("username"), json!({ "minLength": 1, "maxLength": 64, "pattern": "^[0-9A-Za-z._@-]+$" })),
        // `domain::Password`: 1 to 1024 bytes. A schema counts characters; 256 of them are
        // at most 1024 bytes, so whatever the schema allows is accepted.
        ("BindBody", Some("password"), json!({ "minLength": 1, "maxLength": 256 })),
        (
            "PhoneRequest",
            None,
            json!({ "oneOf": [exactly(&["code"], &["encrypted_data", "iv"]), exactly(&["encrypted_data", "iv"], &["code"])] }),
        ),
        (
            "ProfileRequestBody",
            None,
            json!({ "oneOf": [exactly(&["raw_data", "signature"], &[]), exactly(&[], &["raw_data", "signature"])] }),
        ),
        ("PhoneRequest", Some("encrypted_data"), blocks.clone()),
        ("PhoneRequest", Some("iv"), iv.clone()),
        ("ProfileRequestBody", Some("encrypted_data"), blocks),
        ("ProfileRequestBody", Some("iv"), iv),
        // `Auth::start_scan`: a mini-program page path.
        ("ScanRequest", Some("appid"), json!({ "minLength": 1, "pattern": "^[0-9A-Za-z]+$" })),
        ("ScanRequest", Some("page"), json!({ "maxLength": 128, "pattern": "^[!-.0-~][!-~]*$" })),
        // `Auth::token` (RFC 6749 section 4.1.3, RFC 7636 section 4.1).
        ("TokenFields", None, json!({ "required": ["grant_type", "code", "redirect_uri", "code_verifier"] })),
        ("TokenFields", Some("grant_type"), json!({ "enum": ["authorization_code"] })),
        ("TokenFields", Some("code"), json!({ "minLength": 1 })),
        ("TokenFields", Some("redirect_uri"), json!({ "minLength": 1 })),
        ("TokenFields", Some("code_verifier"), json!({ "pattern": "^[A-Za-z0-9._~-]{43,128}$" })),
        // `Auth::fake_open_data`: empty for the default number, else 5 to 20 digits.
        ("DevOpenDataRequest", Some("pure_phone_number"), json!({ "pattern": "^([0-9]{5,20})?$" })),
    ]
}

/// Additions to the schemas of path parameters: the document pointer, then the keywords.
fn parameter_additions() -> Vec<(String, Value)> {
    const AUTHORIZE: &str = "/paths/~1v1~1oauth~1wechat~1authorize/get/parameters";
    vec![
        (
            // `api::sessions`: a session id as `GET /v1/me/sessions` lists it.
            "/paths/~1v1~1me~1sessions~1{id}/delete/parameters/0/schema".into(),
            uuid_schema(),
        ),
        // `Auth::authorize`, parameters in their order: appid, redirect_uri, state,
        // code_challenge, code_challenge_method, scope.
        (format!("{AUTHORIZE}/0/schema"), json!({ "minLength": 1, "pattern": "^[0-9A-Za-z]+$" })),
        (format!("{AUTHORIZE}/1/schema"), json!({ "minLength": 1 })),
        (format!("{AUTHORIZE}/2/schema"), json!({ "pattern": "^[!-~]{1,512}$" })),
        (format!("{AUTHORIZE}/3/schema"), json!({ "pattern": "^[A-Za-z0-9_-]{43}$" })),
        (format!("{AUTHORIZE}/4/schema"), json!({ "enum": ["S256"] })),
        (format!("{AUTHORIZE}/5/schema"), json!({ "enum": ["snsapi_base", "snsapi_userinfo", "snsapi_login"] })),
        // `Auth::callback`: the state wxauth sent to WeChat (parameters: code, state).
        ("/paths/~1v1~1oauth~1wechat~1callback/get/parameters/1/schema".into(), json!({ "pattern": "^[0-9a-f]{32}$" })),
        // `api::scan`: the long poll's wait (parameters: id, wait).
        ("/paths/~1v1~1scan-sessions~1{id}/get/parameters/1/schema".into(), json!({ "minimum": 0, "maximum": 25 })),
    ]
}

/// The schema of a hyphenated UUID, as path parameters take it (the server also reads the
/// other forms `uuid` parses; any other is a 400).
fn uuid_schema() -> Value {
    json!({
        "format": "uuid",
        "pattern": "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    })
}

/// Says of every path parameter of `doc` (all of the admin API's are user or session ids)
/// that it is a UUID.
pub(super) fn uuid_path_parameters(doc: &mut Value) {
    let Some(Value::Object(paths)) = doc.get_mut("paths") else { return };
    for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|p| p.values_mut()) {
        let Some(Value::Array(parameters)) = operation.get_mut("parameters") else { continue };
        for parameter in parameters.iter_mut().filter(|p| p["in"] == "path") {
            if let (Some(Value::Object(schema)), Value::Object(keywords)) = (parameter.get_mut("schema"), uuid_schema())
            {
                schema.extend(keywords);
            }
        }
    }
}

/// Adds [`additions`] to the document's schemas, and [`parameter_additions`] to its
/// parameters.
pub(super) fn apply(doc: &mut Value) {
    for (pointer, keywords) in parameter_additions() {
        let target = doc.pointer_mut(&pointer);
        // An operation renamed or moved would drop its shape silently; the spec tests run
        // with debug assertions on.
        debug_assert!(target.is_some(), "shapes: {pointer} is not in the document");
        if let (Some(Value::Object(target)), Value::Object(keywords)) = (target, keywords) {
            target.extend(keywords);
        }
    }
    for (schema, property, keywords) in additions() {
        let pointer = match property {
            Some(property) => format!("/components/schemas/{schema}/properties/{property}"),
            None => format!("/components/schemas/{schema}"),
        };
        if let (Some(Value::Object(target)), Value::Object(keywords)) = (doc.pointer_mut(&pointer), keywords) {
            target.extend(keywords);
        }
    }
}
