//! The page's stylesheet and script, compiled into the binary (no CDN: facilities may have no
//! internet). Served with a long cache lifetime would need versioned names; they are small, so
//! they are served `no-cache` (revalidated) instead.
//!
//! It must never serve a file from disk: only these two constants.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("../../assets/page.css");
const JS: &str = include_str!("../../assets/page.js");

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub(super) async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

pub(super) async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}
