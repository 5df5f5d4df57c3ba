//! The operator console: a web page for the admin API at `/admin/` on the admin listener.
//!
//! Three static files embedded in the binary (`console/`): one HTML page, one script and
//! one stylesheet, written by hand, without a framework or a build step, so that there is
//! nothing to install, nothing to rebuild and nothing to keep in step with its sources
//! (docs/console.md says why). The script calls the admin API with the admin token the
//! operator signs in with, kept in `sessionStorage`: no cookie, so no CSRF surface.
//!
//! Every file is served with a Content-Security-Policy that admits nothing but these files
//! and the API on the same origin: no inline script or style, no other origin, no frames.

use poem::{
    Endpoint, IntoResponse, Response, Route,
    http::{StatusCode, header},
};

/// The console's files, as served.
pub(super) const ASSETS: [(&str, &str, &str); 3] = [
    ("/admin/", "text/html; charset=utf-8", include_str!("console/index.html")),
    ("/admin/console.js", "text/javascript; charset=utf-8", include_str!("console/console.js")),
    ("/admin/console.css", "text/css; charset=utf-8", include_str!("console/console.css")),
];

/// Only this origin, only these files and the API; `connect-src 'self'` for the API calls.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Adds the console's routes to `route`; `/admin` redirects to `/admin/`.
pub(super) fn mount(route: Route) -> Route {
    let route =
        ASSETS.iter().fold(route, |route, &(path, content_type, body)| route.at(path, asset(content_type, body)));
    route.at(
        "/admin",
        poem::endpoint::make_sync(|_| {
            Response::builder().status(StatusCode::PERMANENT_REDIRECT).header(header::LOCATION, "/admin/").finish()
        }),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> impl Endpoint<Output = Response> {
    poem::endpoint::make_sync(move |_| {
        body.with_content_type(content_type)
            .with_header(header::CONTENT_SECURITY_POLICY, CSP)
            .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .with_header(header::REFERRER_POLICY, "no-referrer")
            .with_header(header::X_FRAME_OPTIONS, "DENY")
            // Small, and replaced by each release: always fetched again.
            .with_header(header::CACHE_CONTROL, "no-cache")
            .into_response()
    })
}
