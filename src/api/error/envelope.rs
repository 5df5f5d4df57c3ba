//! Answers made outside the operations' response enums: errors poem and poem-openapi raise
//! before a handler runs, and the 429 of the per-address rate limit.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{error::AuthorizationError, payload::Json};

use super::{ErrorBody, ErrorCode, body};

const REALM: &str = "Bearer realm=\"wxauth\"";

/// The RFC 6750 challenge of a refused token.
pub(super) fn challenge(description: &str) -> String {
    // RFC 6750 allows %x20-21 / %x23-5B / %x5D-7E inside the quotes.
    let description: String =
        description.chars().map(|c| if matches!(c, ' ' | '!' | '#'..='[' | ']'..='~') { c } else { ' ' }).collect();
    format!("{REALM}, error=\"{}\", error_description=\"{description}\"", ErrorCode::InvalidToken)
}
/// 429 `rate_limited` for a client over `WXAUTH_RATE_LIMIT_PER_MINUTE` (or
/// `WXAUTH_REFRESH_ATTEMPTS_PER_IP`), answered before the request is read. `what` names
/// what was counted: `login attempts`, `refreshes`.
pub fn rate_limited(wait: std::time::Duration, what: &str) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, rate_limited_body(secs, what)).into_response();
    resp.headers_mut().insert(poem::http::header::RETRY_AFTER, secs.into());
    resp
}

/// The body of [`rate_limited`].
pub(in crate::api) fn rate_limited_body(secs: u64, what: &str) -> Json<ErrorBody> {
    body(ErrorCode::RateLimited, format!("too many {what} from this address; retry in {secs} s"))
}

/// Turns errors raised outside handlers (parse failures, missing auth, unknown routes,
/// oversized bodies) into the JSON envelope. Typed handler errors pass through untouched.
pub async fn envelope(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    if err.is::<AuthorizationError>() {
        // No credentials at all: RFC 6750 section 3.1 wants the challenge without an error code.
        let mut resp =
            (StatusCode::UNAUTHORIZED, body(ErrorCode::InvalidToken, "the request has no Authorization: Bearer token"))
                .into_response();
        resp.headers_mut().insert("www-authenticate", poem::http::HeaderValue::from_static(REALM));
        return resp;
    }
    let status = err.status();
    let (status, answer) = match status {
        // poem-openapi answers 415 for a wrong Content-Type; clients get one rule: 400.
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (StatusCode::BAD_REQUEST, body(ErrorCode::InvalidRequest, err.to_string()))
        }
        // 413, not 400: RFC 9110's status for content over the limit (section 15.5.14),
        // the one a proxy's own body limit gives, and what a client that sent `Expect:
        // 100-continue` gets instead of `100 Continue`. The code stays `invalid_request`.
        StatusCode::PAYLOAD_TOO_LARGE => {
            (status, body(ErrorCode::InvalidRequest, "request body too large (max 16 KiB)"))
        }
        StatusCode::REQUEST_TIMEOUT => (
            status,
            body(
                ErrorCode::RequestTimeout,
                format!("the request body did not arrive within {} s", crate::api::BODY_DEADLINE.as_secs()),
            ),
        ),
        // Not /docs: production serves Swagger UI only when WXAUTH_DOCS says so.
        StatusCode::NOT_FOUND => (status, body(ErrorCode::NotFound, "no such endpoint; see /openapi.json")),
        StatusCode::METHOD_NOT_ALLOWED => {
            (status, body(ErrorCode::MethodNotAllowed, "method not allowed; see /openapi.json"))
        }
        s if s.is_server_error() => {
            tracing::error!(error = %err, "request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, body(ErrorCode::ServerError, "internal error; see the server log"))
        }
        s => (s, body(ErrorCode::InvalidRequest, err.to_string())),
    };
    (status, answer).into_response()
}

#[cfg(test)]
mod envelope_tests {
    use super::*;

    async fn answer(err: poem::Error) -> (u16, serde_json::Value) {
        let resp = envelope(err).await;
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "{status}: {content_type:?}");
        (status, resp.into_body().into_json().await.unwrap())
    }

    #[tokio::test]
    async fn errors_raised_outside_handlers_get_the_json_envelope_whatever_their_status() {
        let from = |status: u16| poem::Error::from_status(StatusCode::from_u16(status).unwrap());
        let cases = [
            (from(400), 400, "invalid_request"),
            (from(404), 404, "not_found"),
            (from(405), 405, "method_not_allowed"),
            (from(413), 413, "invalid_request"),
            (from(415), 400, "invalid_request"),
            (from(408), 408, "request_timeout"),
            (from(418), 418, "invalid_request"),
            (from(500), 500, "server_error"),
            (from(502), 500, "server_error"),
            (
                poem::Error::from_string("sled: /srv/wxauth/data/db: I/O error", StatusCode::SERVICE_UNAVAILABLE),
                500,
                "server_error",
            ),
        ];
        for (err, status, error) in cases {
            let raised = err.status();

            let (got, body) = answer(err).await;

            assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{raised}: {body}");
            let description = body["error_description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{raised}: {body}");
            assert!(!description.contains("/srv/wxauth"), "a server error's details reached the client: {body}");
        }
        let (_, too_large) = answer(from(413)).await;
        assert!(too_large["error_description"].as_str().unwrap().contains("too large"), "{too_large}");
    }
}
