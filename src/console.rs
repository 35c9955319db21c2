//! The web console's files (console/dist, built from console/src and committed), compiled
//! into the binary so that `grantd serve` serves them with nothing else installed. The
//! page calls the same gRPC services as every client, through gRPC-web, with the
//! operator's own token: nothing here reads a token or decides a right.

use axum::{
    Router,
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Redirect},
    routing::get,
};

const INDEX: &str = include_str!("../console/dist/index.html");
const SCRIPT: &str = include_str!("../console/dist/app.js");
const STYLE: &str = include_str!("../console/dist/app.css");

/// The page loads only its own files and talks only to its own origin; it may not be
/// framed, and links out of it carry no referrer (the token sits in the URL fragment
/// on the way in).
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    // A new binary may carry a new page: browsers ask again instead of running an old one.
    (header::CACHE_CONTROL, "no-cache"),
];

/// `/console/` and its files.
pub fn routes() -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/console/app.js", get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/app.css", get(|| async { file("text/css; charset=utf-8", STYLE) }))
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
