//! Request variables, as APISIX plugins name them (nginx variables): `remote_addr`,
//! `consumer_name`, `http_x_user`, `arg_page`, `cookie_session`, `host`, `uri`, `route_id`,
//! `server_addr`… Parsed once at compile into [`Var`]; read per request without lookups by
//! name.

use http::HeaderName;
use pingora_http::RequestHeader;

use super::PluginCtx;

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `remote_addr`: the client address (after `real-ip`).
    RemoteAddr,
    /// `remote_port`: the client's port (after `real-ip`).
    RemotePort,
    /// `consumer_name`: the authenticated consumer's username (empty without one).
    ConsumerName,
    /// `route_id`.
    RouteId,
    /// `host`: the request's host name, without port.
    Host,
    /// `uri`: the request path (without query).
    Uri,
    /// `request_uri`: path and query as the client sent them.
    RequestUri,
    /// `request_method`.
    RequestMethod,
    /// `scheme`: `http` or `https`.
    Scheme,
    /// `args`: the query string.
    Args,
    /// `http_<name>`: a request header (`_` read as `-`).
    Header(HeaderName),
    /// `arg_<name>`: a query argument.
    Arg(String),
    /// `cookie_<name>`: a cookie.
    Cookie(String),
}

impl Var {
    /// Parses a variable name (without `$`).
    ///
    /// Errors: a name Pylon does not know, in words.
    pub fn parse(name: &str) -> Result<Var, String> {
        Ok(match name {
            "remote_addr" | "realip_remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "consumer_name" => Var::ConsumerName,
            "route_id" => Var::RouteId,
            "host" => Var::Host,
            "uri" => Var::Uri,
            "request_uri" => Var::RequestUri,
            "request_method" => Var::RequestMethod,
            "scheme" => Var::Scheme,
            "args" => Var::Args,
            _ => {
                if let Some(h) = name.strip_prefix("http_") {
                    let h = h.replace('_', "-").to_ascii_lowercase();
                    let h = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("{name:?} names no valid header"))?;
                    Var::Header(h)
                } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Var::Arg(a.to_string())
                } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    Var::Cookie(c.to_string())
                } else {
                    return Err(format!(
                        "unknown variable {name:?} (Pylon knows remote_addr, remote_port, consumer_name, \
                         route_id, host, uri, request_uri, request_method, scheme, args, \
                         http_*, arg_*, cookie_*)"
                    ));
                }
            }
        })
    }

    /// Appends the variable's value for this request to `out` (nothing when it is unset).
    pub fn append(&self, req: &RequestHeader, cx: &PluginCtx, out: &mut String) {
        use std::fmt::Write;
        match self {
            Var::RemoteAddr => {
                if let Some(ip) = cx.client_ip {
                    let _ = write!(out, "{ip}");
                }
            }
            Var::RemotePort => {
                if let Some(port) = cx.client_port {
                    let _ = write!(out, "{port}");
                }
            }
            Var::ConsumerName => {
                if let Some(c) = &cx.consumer {
                    out.push_str(&c.username);
                }
            }
            Var::RouteId => out.push_str(&cx.route_id),
            Var::Host => out.push_str(host(req)),
            Var::Uri => out.push_str(req.uri.path()),
            Var::RequestUri => out.push_str(
                req.uri
                    .path_and_query()
                    .map_or_else(|| req.uri.path(), |p| p.as_str()),
            ),
            Var::RequestMethod => out.push_str(req.method.as_str()),
            Var::Scheme => out.push_str(if cx.tls { "https" } else { "http" }),
            Var::Args => out.push_str(req.uri.query().unwrap_or("")),
            Var::Header(h) => {
                if let Some(v) = req.headers.get(h).and_then(|v| v.to_str().ok()) {
                    out.push_str(v);
                }
            }
            Var::Arg(a) => {
                if let Some(v) = query_arg(req.uri.query().unwrap_or(""), a) {
                    out.push_str(&v);
                }
            }
            Var::Cookie(c) => {
                if let Some(v) = cookie(req, c) {
                    out.push_str(v);
                }
            }
        }
    }
}

/// The request's host: the Host header (or the URI's authority, for HTTP/2) without port.
pub fn host(req: &RequestHeader) -> &str {
    let h = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    match h.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || h.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                h
            }
        }
        _ => h,
    }
}

/// The first value of query argument `name` in `query`, percent-decoded (`+` as space), as
/// APISIX reads it (`ngx.req.get_uri_args`).
pub fn query_arg<'q>(query: &'q str, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// `s` with `%XX` escapes and `+` decoded (invalid escapes kept as they are).
pub fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// `target` (a path and query) with the values of the query arguments in `names` replaced
/// by `***`, for logs: credentials sent in the query must not be written there.
pub fn mask_args<'t>(target: &'t str, names: &[std::sync::Arc<str>]) -> std::borrow::Cow<'t, str> {
    let Some((path, query)) = target.split_once('?') else {
        return std::borrow::Cow::Borrowed(target);
    };
    if names.is_empty() {
        return std::borrow::Cow::Borrowed(target);
    }
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if names.iter().any(|n| **n == *k) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect();
    std::borrow::Cow::Owned(format!("{path}?{}", masked.join("&")))
}

/// The value of cookie `name` (RFC 6265 `Cookie: a=1; b=2`).
pub fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// A string with `$var` / `${var}` references (APISIX `var_combination`, proxy-rewrite's
/// `uri` and header values), parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

impl Template {
    /// Parses `s`.
    ///
    /// Errors: an unknown variable, in words.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(pos) = rest.find('$') {
            text.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let (name, next) = if let Some(inner) = after.strip_prefix('{') {
                match inner.find('}') {
                    Some(end) => (&inner[..end], &inner[end + 1..]),
                    None => return Err(format!("unclosed ${{ in {s:?}")),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                text.push('$');
            } else {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Var(Var::parse(name)?));
            }
            rest = next;
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// Whether the template holds no variable.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The template's value for this request.
    pub fn render(&self, req: &RequestHeader, cx: &PluginCtx) -> String {
        let mut out = String::new();
        self.render_into(req, cx, &mut out);
        out
    }

    /// Appends the template's value for this request to `out`.
    pub fn render_into(&self, req: &RequestHeader, cx: &PluginCtx, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => v.append(req, cx, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        r.insert_header("host", "example.com:9080").unwrap();
        r.insert_header("x-user", "ann").unwrap();
        r.insert_header("cookie", "a=1; session=xyz").unwrap();
        r
    }

    #[test]
    fn variables_read_the_request() {
        let r = req("/p/q?page=2&name=a%20b+c");
        let mut cx = PluginCtx {
            client_ip: Some("10.0.0.1".parse().unwrap()),
            ..Default::default()
        };
        cx.consumer = Some(std::sync::Arc::new(super::super::Consumer::new("jack")));
        let t = Template::parse("$remote_addr ${consumer_name}/$http_x_user/$arg_page/$arg_name/$cookie_session/$host$uri").unwrap();
        assert_eq!(
            t.render(&r, &cx),
            "10.0.0.1 jack/ann/2/a b c/xyz/example.com/p/q"
        );
        assert!(Template::parse("$nope").is_err());
        assert!(Template::parse("cost $").unwrap().is_literal());
    }

    #[test]
    fn credentials_in_the_query_are_masked() {
        let names = [std::sync::Arc::from("apikey")];
        assert_eq!(
            mask_args("/a?x=1&apikey=s3cret&y", &names),
            "/a?x=1&apikey=***&y"
        );
        assert_eq!(mask_args("/a?x=1", &[]), "/a?x=1");
        assert_eq!(mask_args("/a", &names), "/a");
    }
}
