//! `proxy-rewrite` (APISIX, priority 1008): changes the request the upstream receives —
//! `uri` (with `$variables`), or `regex_uri` (`[regex, replacement, ...]`, the first pair
//! whose regex matches the path; `$1` / `${1}` name captures), `method`, `host` (the Host
//! header, over `pass_host`), `scheme` (`http` / `https` to the upstream) and `headers`
//! (`add`, `set`, `remove`, applied in that order; a plain map is `set`). The client's query
//! string is kept.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, Method};
use pingora_http::RequestHeader;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::registry::{parse, Env, PluginError, Spec};
use super::vars::Template;
use super::{Flow, Phases, Plugin, PluginCtx};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "proxy-rewrite",
    priority: 1008,
    compile,
    credential: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    uri: Option<String>,
    method: Option<String>,
    regex_uri: Option<Vec<String>>,
    host: Option<String>,
    scheme: Option<String>,
    headers: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    use_real_request_uri_unsafe: bool,
}

/// A header value: text with `$variables`.
type Values = Vec<Template>;

#[derive(Debug, Default)]
struct Headers {
    add: Vec<(HeaderName, Values)>,
    set: Vec<(HeaderName, Values)>,
    remove: Vec<HeaderName>,
}

#[derive(Debug)]
struct ProxyRewrite {
    uri: Option<Template>,
    regex_uri: Vec<(Regex, String)>,
    method: Option<Method>,
    host: Option<HeaderValue>,
    tls: Option<bool>,
    headers: Headers,
}

fn header_name(path: &str, name: &str) -> Result<HeaderName, PluginError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PluginError::new(path, format!("{name:?} is not a valid header name")))
}

fn values(path: &str, v: &Value) -> Result<Values, PluginError> {
    let one = |v: &Value| match v {
        Value::String(s) => Template::parse(s).map_err(|e| PluginError::new(path, e)),
        Value::Number(n) => Template::parse(&n.to_string()).map_err(|e| PluginError::new(path, e)),
        _ => Err(PluginError::new(
            path,
            "must be a string, a number or a list of them",
        )),
    };
    match v {
        Value::Array(list) if !list.is_empty() => list.iter().map(one).collect(),
        Value::Array(_) => Err(PluginError::new(path, "must not be empty")),
        v => Ok(vec![one(v)?]),
    }
}

fn header_map(path: &str, m: &Value) -> Result<Vec<(HeaderName, Values)>, PluginError> {
    let Value::Object(m) = m else {
        return Err(PluginError::new(path, "must be an object"));
    };
    m.iter()
        .map(|(k, v)| {
            let p = format!("{path}.{k}");
            Ok((header_name(&p, k)?, values(&p, v)?))
        })
        .collect()
}

fn compile_headers(m: &serde_json::Map<String, Value>) -> Result<Headers, PluginError> {
    let structured = m
        .keys()
        .all(|k| matches!(k.as_str(), "add" | "set" | "remove"));
    if !structured {
        return Ok(Headers {
            set: header_map("headers", &Value::Object(m.clone()))?,
            ..Headers::default()
        });
    }
    let mut h = Headers::default();
    if let Some(a) = m.get("add") {
        h.add = header_map("headers.add", a)?;
    }
    if let Some(s) = m.get("set") {
        h.set = header_map("headers.set", s)?;
    }
    if let Some(r) = m.get("remove") {
        let Value::Array(list) = r else {
            return Err(PluginError::new(
                "headers.remove",
                "must be a list of header names",
            ));
        };
        for (i, n) in list.iter().enumerate() {
            let p = format!("headers.remove[{i}]");
            let name = n
                .as_str()
                .ok_or_else(|| PluginError::new(&p, "must be a string"))?;
            h.remove.push(header_name(&p, name)?);
        }
    }
    Ok(h)
}

/// An `ngx.re.sub` replacement (`$0`, `$1`, `${1}`, and `$$` for a dollar) in the regex
/// crate's syntax: every numbered capture braced (the regex crate reads `$1_` as a capture
/// named `1_`), and a `$` that starts no capture kept as a literal dollar.
pub fn ngx_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = tail;
            continue;
        }
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("${");
            out.push_str(&after[..digits]);
            out.push('}');
            rest = &after[digits..];
            continue;
        }
        if let Some(inner) = after.strip_prefix('{') {
            if let Some(end) = inner.find('}') {
                let name = &inner[..end];
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                    rest = &inner[end + 1..];
                    continue;
                }
            }
        }
        out.push_str("$$");
        rest = after;
    }
    out.push_str(rest);
    out
}

fn compile(v: &Value, _env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    if c.use_real_request_uri_unsafe {
        return Err(PluginError::new(
            "use_real_request_uri_unsafe",
            "not supported by Pylon",
        ));
    }
    let uri = match &c.uri {
        Some(u) if !u.starts_with('/') => return Err(PluginError::new("uri", "must start with /")),
        Some(u) => Some(Template::parse(u).map_err(|e| PluginError::new("uri", e))?),
        None => None,
    };
    let mut regex_uri = Vec::new();
    if let Some(list) = &c.regex_uri {
        if list.len() < 2 || list.len() % 2 != 0 {
            return Err(PluginError::new(
                "regex_uri",
                "must hold pairs: [regex, replacement, ...]",
            ));
        }
        for (i, pair) in list.chunks(2).enumerate() {
            let re = Regex::new(&pair[0]).map_err(|e| {
                PluginError::new(format!("regex_uri[{}]", 2 * i), format!("bad regex: {e}"))
            })?;
            regex_uri.push((re, ngx_replacement(&pair[1])));
        }
    }
    let method = match &c.method {
        Some(m) => Some(
            Method::from_bytes(m.as_bytes())
                .ok()
                .filter(|_| m.bytes().all(|b| b.is_ascii_uppercase()))
                .ok_or_else(|| {
                    PluginError::new("method", format!("{m:?} is not an HTTP method"))
                })?,
        ),
        None => None,
    };
    let host = match &c.host {
        Some(h) => {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
            if !ok {
                return Err(PluginError::new(
                    "host",
                    format!("{h:?} is not a host[:port]"),
                ));
            }
            Some(HeaderValue::from_str(h).map_err(|_| PluginError::new("host", "bad value"))?)
        }
        None => None,
    };
    let tls = match c.scheme.as_deref() {
        None => None,
        Some("http") => Some(false),
        Some("https") => Some(true),
        Some(other) => {
            return Err(PluginError::new(
                "scheme",
                format!("{other:?} is not one of http, https"),
            ))
        }
    };
    let headers = match &c.headers {
        Some(m) if m.is_empty() => return Err(PluginError::new("headers", "must not be empty")),
        Some(m) => compile_headers(m)?,
        None => Headers::default(),
    };
    Ok(Arc::new(ProxyRewrite {
        uri,
        regex_uri,
        method,
        host,
        tls,
        headers,
    }))
}

impl ProxyRewrite {
    /// The new path for the upstream, if this plugin changes it.
    fn new_path(&self, req: &RequestHeader, cx: &PluginCtx) -> Option<String> {
        if let Some(t) = &self.uri {
            return Some(t.render(req, cx));
        }
        let path = req.uri.path();
        self.regex_uri
            .iter()
            .find(|(re, _)| re.is_match(path))
            .map(|(re, rep)| re.replace(path, rep.as_str()).into_owned())
    }
}

#[async_trait]
impl Plugin for ProxyRewrite {
    fn name(&self) -> &'static str {
        "proxy-rewrite"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: self.tls.is_some(),
            upstream_request: true,
            ..Phases::default()
        }
    }

    fn rewrite(&self, _req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        cx.upstream_tls = self.tls;
        Flow::Continue
    }

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        if let Some(path) = self.new_path(req, cx) {
            let query = req.uri.query().map(str::to_string);
            let sep = if path.contains('?') { '&' } else { '?' };
            let full = match query {
                Some(q) => format!("{path}{sep}{q}"),
                None => path,
            };
            match full.parse() {
                Ok(uri) => req.set_uri(uri),
                Err(e) => {
                    return pingora_core::Error::e_explain(
                        pingora_core::ErrorType::InternalError,
                        format!("proxy-rewrite: the new uri {full:?} is not valid: {e}"),
                    )
                }
            }
        }
        if let Some(m) = &self.method {
            req.set_method(m.clone());
        }
        if let Some(h) = &self.host {
            req.insert_header(http::header::HOST, h.clone())?;
        }
        let mut text = String::new();
        for (name, vals) in &self.headers.add {
            for v in vals {
                text.clear();
                v.render_into(req, cx, &mut text);
                req.append_header(name.clone(), text.as_str())?;
            }
        }
        for (name, vals) in &self.headers.set {
            req.remove_header(name);
            for v in vals {
                text.clear();
                v.render_into(req, cx, &mut text);
                req.append_header(name.clone(), text.as_str())?;
            }
        }
        for name in &self.headers.remove {
            req.remove_header(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(conf: Value, uri: &str) -> RequestHeader {
        let consumers = Vec::new();
        let p = compile(&conf, &Env::new(&consumers)).unwrap();
        let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        req.insert_header("x-drop", "1").unwrap();
        p.upstream_request(&mut req, &mut PluginCtx::default())
            .unwrap();
        req
    }

    #[test]
    fn regex_uri_rewrites_with_captures_and_keeps_the_query() {
        let r = apply(
            json!({"regex_uri": ["^/iresty/(.*)/(.*)/(.*)", "/$1_$2_$3"]}),
            "/iresty/a/b/c?x=1",
        );
        assert_eq!(r.uri.to_string(), "/a_b_c?x=1");
        let r = apply(json!({"regex_uri": ["^/nomatch", "/x"]}), "/keep");
        assert_eq!(r.uri.to_string(), "/keep");
    }

    #[test]
    fn uri_method_host_and_headers() {
        let r = apply(
            json!({"uri": "/test/home.html", "method": "POST", "host": "iresty.com",
                   "headers": {"add": {"X-Add": ["a", 1]}, "set": {"X-Api-Version": "v1"},
                               "remove": ["X-Drop"]}}),
            "/old",
        );
        assert_eq!(r.uri.to_string(), "/test/home.html");
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.headers["host"], "iresty.com");
        assert_eq!(r.headers.get_all("x-add").iter().count(), 2);
        assert_eq!(r.headers["x-api-version"], "v1");
        assert!(r.headers.get("x-drop").is_none());
    }

    #[test]
    fn ngx_replacements_become_regex_crate_ones() {
        assert_eq!(ngx_replacement("/$1_$2"), "/${1}_${2}");
        assert_eq!(ngx_replacement("${1}x$$1 $ $a"), "${1}x$$1 $$ $$a");
        let re = Regex::new("^/(a)(b)").unwrap();
        assert_eq!(
            re.replace("/ab", ngx_replacement("$2_$1$$1").as_str()),
            "b_a$1"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let consumers = Vec::new();
        let env = Env::new(&consumers);
        for (conf, path) in [
            (json!({"uri": "x"}), "uri"),
            (json!({"regex_uri": ["("]}), "regex_uri"),
            (json!({"regex_uri": ["(", "/x"]}), "regex_uri[0]"),
            (json!({"method": "get"}), "method"),
            (json!({"scheme": "ftp"}), "scheme"),
            (
                json!({"headers": {"set": {"bad header": "x"}}}),
                "headers.set.bad header",
            ),
        ] {
            assert_eq!(compile(&conf, &env).unwrap_err().path, path, "{conf}");
        }
    }
}
