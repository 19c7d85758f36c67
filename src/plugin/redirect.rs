//! `redirect` (APISIX, priority 900, rewrite phase): answers with a redirect instead of
//! proxying. Exactly one of:
//! - `uri`: the `Location`, with `$variables` (`$uri/index.html`, `https://$host$request_uri`);
//! - `regex_uri`: `[regex, replacement]` on the request path (`$1` names a capture); a path
//!   that does not match is proxied as usual;
//! - `http_to_https: true`: a request that did not come over HTTPS (nor says so in
//!   `X-Forwarded-Proto`, as APISIX reads it) goes to `https://$host[:port]$request_uri`, with
//!   301 for GET and HEAD and 308 for other methods. The port: `gateway.plugin_attr.redirect.
//!   https_port`, else the first `gateway.tls_listen` port, else 443 (not written) — APISIX's
//!   order (`plugin_attr.redirect.https_port`, then `apisix.ssl.listen`, then 443).
//!
//! `ret_code` (default 302, at least 200) is the status for `uri` and `regex_uri`;
//! `encode_uri` percent-encodes the new path as nginx's `ngx_escape_uri` does;
//! `append_query_string` adds the request's query string. The body is nginx's page for the
//! status (`<html>…301 Moved Permanently…`, `text/html`), empty for statuses nginx has no
//! page for.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method};
use pingora_http::RequestHeader;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::proxy_rewrite::ngx_replacement;
use super::registry::{parse, Env, PluginError, Spec};
use super::vars::Template;
use super::{Flow, Phases, Plugin, PluginCtx, Reply};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "redirect",
    priority: 900,
    compile,
    credential: None,
};

static HTTPS_PORT: AtomicU16 = AtomicU16::new(0);

/// Sets the port `http_to_https` redirects to (a static setting, read when plugins are
/// compiled): `gateway.plugin_attr.redirect.https_port`, else the first `tls_listen` port;
/// `None` for 443.
pub fn set_https_port(port: Option<u16>) {
    HTTPS_PORT.store(port.unwrap_or(0), Ordering::Relaxed);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_code")]
    ret_code: u16,
    uri: Option<String>,
    regex_uri: Option<Vec<String>>,
    http_to_https: Option<bool>,
    #[serde(default)]
    encode_uri: bool,
    #[serde(default)]
    append_query_string: bool,
}

fn default_code() -> u16 {
    302
}

#[derive(Debug)]
enum Target {
    Uri(Template),
    Regex(Regex, String),
    /// `http_to_https`: the `Location` template.
    Https(Template),
    /// `http_to_https: false`.
    Nothing,
}

#[derive(Debug)]
struct Redirect {
    target: Target,
    status: u16,
    encode_uri: bool,
    append_query_string: bool,
}

fn compile(v: &Value, _env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    if c.ret_code < 200 {
        return Err(PluginError::new("ret_code", "must be >= 200"));
    }
    let set = [
        c.uri.is_some(),
        c.regex_uri.is_some(),
        c.http_to_https.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(PluginError::new(
            "",
            "set exactly one of uri, regex_uri and http_to_https",
        ));
    }
    if c.http_to_https == Some(true) && c.append_query_string {
        return Err(PluginError::new(
            "append_query_string",
            "only one of `http_to_https` and `append_query_string` can be configured.",
        ));
    }
    let target = if let Some(u) = &c.uri {
        if u.chars().count() < 2 {
            return Err(PluginError::new("uri", "must be at least 2 characters"));
        }
        Target::Uri(Template::parse(u).map_err(|e| PluginError::new("uri", e))?)
    } else if let Some(pair) = &c.regex_uri {
        if pair.len() != 2 {
            return Err(PluginError::new(
                "regex_uri",
                "must be [regex, replacement]",
            ));
        }
        let re = Regex::new(&pair[0])
            .map_err(|e| PluginError::new("regex_uri[0]", format!("bad regex: {e}")))?;
        Target::Regex(re, ngx_replacement(&pair[1]))
    } else if c.http_to_https == Some(true) {
        let t = match HTTPS_PORT.load(Ordering::Relaxed) {
            0 | 443 => "https://$host$request_uri".to_string(),
            port => format!("https://$host:{port}$request_uri"),
        };
        Target::Https(Template::parse(&t).map_err(|e| PluginError::new("http_to_https", e))?)
    } else {
        Target::Nothing
    };
    Ok(Arc::new(Redirect {
        target,
        status: c.ret_code,
        encode_uri: c.encode_uri,
        append_query_string: c.append_query_string,
    }))
}

/// `s` percent-encoded as nginx's `ngx_escape_uri(NGX_ESCAPE_URI)` does (APISIX's
/// `core.utils.uri_safe_encode`): control characters, space, `#`, `%`, `?`, DEL and
/// non-ASCII bytes.
pub fn escape_uri(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= 0x20 || matches!(b, b'#' | b'%' | b'?') || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The reason phrase nginx's page shows for a redirect status, if nginx has a page for it.
fn reason(status: u16) -> Option<&'static str> {
    Some(match status {
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        _ => return None,
    })
}

/// nginx's page for `status` (its `ngx_http_special_response` layout, with CRLFs).
fn page(status: u16) -> Option<String> {
    let r = reason(status)?;
    Some(format!(
        "<html>\r\n<head><title>{status} {r}</title></head>\r\n<body>\r\n\
         <center><h1>{status} {r}</h1></center>\r\n<hr><center>pylon</center>\r\n\
         </body>\r\n</html>\r\n"
    ))
}

impl Redirect {
    /// The `Location` and status for this request, or `None` to proxy it.
    fn location(&self, req: &RequestHeader, cx: &PluginCtx) -> Option<(String, u16)> {
        let (mut uri, status) = match &self.target {
            Target::Nothing => return None,
            Target::Uri(t) => (t.render(req, cx), self.status),
            Target::Regex(re, rep) => {
                let path = req.uri.path();
                if !re.is_match(path) {
                    return None;
                }
                (re.replace(path, rep.as_str()).into_owned(), self.status)
            }
            Target::Https(t) => {
                let proto = req
                    .headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok());
                let https = match proto {
                    Some(p) => p == "https",
                    None => cx.tls,
                };
                if https {
                    return None;
                }
                let status = if req.method == Method::GET || req.method == Method::HEAD {
                    301
                } else {
                    308
                };
                (t.render(req, cx), status)
            }
        };
        let query_at = uri.find('?');
        if self.encode_uri {
            uri = match query_at {
                Some(i) => format!("{}{}", escape_uri(&uri[..i]), &uri[i..]),
                None => escape_uri(&uri),
            };
        }
        if self.append_query_string {
            if let Some(q) = req.uri.query() {
                let sep = if uri.contains('?') { '&' } else { '?' };
                uri.push(sep);
                uri.push_str(q);
            }
        }
        Some((uri, status))
    }
}

#[async_trait]
impl Plugin for Redirect {
    fn name(&self) -> &'static str {
        "redirect"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: true,
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let Some((location, status)) = self.location(req, cx) else {
            return Flow::Continue;
        };
        let Ok(location) = HeaderValue::from_str(&location) else {
            log::error!("redirect: the new uri {location:?} is not a valid Location header");
            return Flow::Reply(Reply::status(500));
        };
        let mut reply = Reply::status(status);
        reply.headers.push((http::header::LOCATION, location));
        if let Some(body) = page(status) {
            reply.headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/html"),
            ));
            reply.body = Bytes::from(body);
        }
        Flow::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(conf: Value) -> Result<Arc<dyn Plugin>, PluginError> {
        let consumers = Vec::new();
        compile(&conf, &Env::new(&consumers))
    }

    fn run(p: &Arc<dyn Plugin>, method: &str, uri: &str, tls: bool) -> Option<(u16, String)> {
        let mut req = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        req.insert_header("host", "example.com:9080").unwrap();
        let mut cx = PluginCtx {
            tls,
            ..Default::default()
        };
        match p.rewrite(&req, &mut cx) {
            Flow::Continue => None,
            Flow::Reply(r) => {
                let loc = r.headers.iter().find(|(k, _)| k == http::header::LOCATION);
                Some((r.status, loc.unwrap().1.to_str().unwrap().to_string()))
            }
        }
    }

    #[test]
    fn uri_with_variables_and_query() {
        let p = build(json!({"uri": "/test/default.html", "ret_code": 301})).unwrap();
        assert_eq!(
            run(&p, "GET", "/test/index.html", false),
            Some((301, "/test/default.html".into()))
        );
        let p = build(json!({"uri": "$uri/index.html"})).unwrap();
        assert_eq!(
            run(&p, "GET", "/test?a=1", false),
            Some((302, "/test/index.html".into()))
        );
        let p = build(json!({"uri": "/new?x=1", "append_query_string": true})).unwrap();
        assert_eq!(run(&p, "GET", "/old?a=1", false).unwrap().1, "/new?x=1&a=1");
        assert_eq!(run(&p, "GET", "/old", false).unwrap().1, "/new?x=1");
        let p = build(json!({"uri": "/a b#c?d e", "encode_uri": true})).unwrap();
        assert_eq!(run(&p, "GET", "/", false).unwrap().1, "/a%20b%23c?d e");
    }

    #[test]
    fn regex_uri_redirects_only_matching_paths() {
        let p = build(json!({"regex_uri": ["^/iresty/(.*)/(.*)/(.*)", "/$1-$2-$3"]})).unwrap();
        assert_eq!(
            run(&p, "GET", "/iresty/a/b/c", false),
            Some((302, "/a-b-c".into()))
        );
        assert_eq!(run(&p, "GET", "/other", false), None);
    }

    #[test]
    fn http_to_https() {
        set_https_port(None);
        let p = build(json!({"http_to_https": true})).unwrap();
        assert_eq!(
            run(&p, "GET", "/hello?x=1", false),
            Some((301, "https://example.com/hello?x=1".into()))
        );
        assert_eq!(run(&p, "POST", "/hello", false).unwrap().0, 308);
        assert_eq!(run(&p, "GET", "/hello", true), None);
        let p = build(json!({"http_to_https": false})).unwrap();
        assert_eq!(run(&p, "GET", "/hello", false), None);
    }

    #[test]
    fn pages_and_escaping() {
        assert_eq!(
            page(301).unwrap().len(),
            162,
            "nginx's 166 bytes, with pylon for openresty"
        );
        assert!(page(200).is_none());
        assert_eq!(escape_uri("/a b/%/é?#\u{7f}"), "/a%20b/%25/%C3%A9%3F%23%7F");
    }

    #[test]
    fn bad_configurations_are_named() {
        for (conf, path) in [
            (json!({}), ""),
            (json!({"uri": "/a", "http_to_https": true}), ""),
            (
                json!({"http_to_https": true, "append_query_string": true}),
                "append_query_string",
            ),
            (json!({"uri": "/a", "ret_code": 100}), "ret_code"),
            (json!({"uri": "/"}), "uri"),
            (json!({"uri": "/$nope"}), "uri"),
            (json!({"regex_uri": ["^/a"]}), "regex_uri"),
            (json!({"regex_uri": ["(", "/b"]}), "regex_uri[0]"),
        ] {
            assert_eq!(build(conf.clone()).unwrap_err().path, path, "{conf}");
        }
    }
}
