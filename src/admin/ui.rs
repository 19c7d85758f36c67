//! The dashboard: the files of `ui/` (plain HTML, CSS and JavaScript), compiled into the
//! binary and served by the admin listener at `/ui/` (`/ui` redirects there). The page
//! itself holds nothing secret and is served without the API key; every call it makes goes
//! to the admin API with the key the user signs in with (`docs/dashboard.md`).
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's scripts,
//! styles and API; no inline script, no frames, no other origin), `nosniff`, and
//! `Cache-Control: no-cache` with an `ETag`, so a browser revalidates (304) after an upgrade.

use http::{Method, Response};
use rust_embed::RustEmbed;

/// The dashboard's files, from `ui/` at the repository root (embedded in every build
/// profile: the `debug-embed` feature).
#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

/// Where the dashboard is served.
pub const PREFIX: &str = "/ui/";

/// The Content-Security-Policy of every dashboard answer: scripts, styles, images and API
/// calls from this origin only; no inline script or style attribute, no plugins, no
/// framing, forms post nowhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; form-action 'none'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The `Content-Type` of a dashboard file, by extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Whether `path` belongs to the dashboard (`/ui` or under `/ui/`).
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with(PREFIX)
}

/// The answer for a dashboard request: `GET /ui` → 308 to `/ui/`; `GET /ui/` → `index.html`;
/// `GET /ui/<file>` → the file (304 when `if_none_match` holds its ETag), 404 when there is
/// none; other methods → 405.
pub fn serve(method: &Method, path: &str, if_none_match: Option<&str>) -> Response<Vec<u8>> {
    if method != Method::GET {
        let mut r = text(405, "the dashboard answers GET only\n");
        r.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return r;
    }
    if path == "/ui" {
        let mut r = text(308, "moved to /ui/\n");
        r.headers_mut().insert(
            http::header::LOCATION,
            http::HeaderValue::from_static(PREFIX),
        );
        return r;
    }
    let name = match path.strip_prefix(PREFIX).unwrap_or_default() {
        "" => "index.html",
        other => other,
    };
    let Some(file) = Assets::get(name) else {
        return text(404, "no such dashboard file\n");
    };
    let etag = format!(
        "\"{}\"",
        file.metadata.sha256_hash()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut r = if fresh {
        with_headers(crate::ops::http_response(
            304,
            content_type(name),
            Vec::new(),
        ))
    } else {
        with_headers(crate::ops::http_response(
            200,
            content_type(name),
            file.data.into_owned(),
        ))
    };
    if let Ok(v) = http::HeaderValue::from_str(&etag) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    r
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    with_headers(crate::ops::http_response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    ))
}

fn with_headers(mut r: Response<Vec<u8>>) -> Response<Vec<u8>> {
    use http::header::{self, HeaderValue};
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Response<Vec<u8>>, name: &str) -> &'a str {
        r.headers().get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn index_files_redirect_and_misses() {
        let r = serve(&Method::GET, "/ui/", None);
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&r, "content-security-policy"), CSP);
        assert_eq!(header(&r, "cache-control"), "no-cache");
        let body = String::from_utf8(r.body().clone()).unwrap();
        assert!(body.contains("<script type=\"module\" src=\"js/app.js\">"));
        assert!(!body.contains("http://") && !body.contains("https://"));
        let etag = header(&r, "etag").to_string();
        assert_eq!(serve(&Method::GET, "/ui/", Some(&etag)).status(), 304);
        let r = serve(&Method::GET, "/ui/js/app.js", None);
        assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
        let r = serve(&Method::GET, "/ui/style.css", None);
        assert_eq!(header(&r, "content-type"), "text/css; charset=utf-8");
        let r = serve(&Method::GET, "/ui", None);
        assert_eq!((r.status().as_u16(), header(&r, "location")), (308, "/ui/"));
        assert_eq!(serve(&Method::GET, "/ui/nope.js", None).status(), 404);
        assert_eq!(serve(&Method::GET, "/ui/../Cargo.toml", None).status(), 404);
        assert_eq!(serve(&Method::POST, "/ui/", None).status(), 405);
        assert!(is_ui_path("/ui") && is_ui_path("/ui/x") && !is_ui_path("/uix"));
    }

    #[test]
    fn no_inline_script_or_external_reference_in_any_file() {
        for name in Assets::iter() {
            let file = Assets::get(&name).unwrap();
            let text = String::from_utf8_lossy(&file.data);
            for bad in [
                "http://",
                "https://",
                "<script>",
                " onclick=",
                "style=\"",
                "eval(",
            ] {
                assert!(!text.contains(bad), "{name} contains {bad}");
            }
            assert_ne!(content_type(&name), "application/octet-stream", "{name}");
        }
    }
}
