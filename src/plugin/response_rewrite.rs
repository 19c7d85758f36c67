//! `response-rewrite` (APISIX, priority 899, response header and body phases): changes the
//! response the client gets, whether it comes from the upstream or from the gateway (a 401
//! of `key-auth`, a 429 of a limit), as APISIX's header and body filters run for both.
//!
//! - `status_code` (200–598): the new status.
//! - `headers`: `add` (`["Name: value", ...]`, appended), `set` (`{Name: value}`, replacing)
//!   and `remove` (`[Name, ...]`), applied in that order; a plain map (`{Name: value}`) is
//!   `set`. Values may hold `$variables` (`$remote_addr`, `$http_x_user`…).
//! - `body` (with `body_base64: true`, decoded from base64 once at load): the new body, with
//!   `Content-Length` set to its length. Or `filters`: `[{regex, replace, scope, options}]`,
//!   regex substitutions on the body (`scope: once` the first match, `global` every one;
//!   `options` as `ngx.re`'s: `i`, `m`, `s`, `x`, and `j`/`o`/`u`, which change nothing
//!   here), sent chunked. The body is held until it ends, up to `max_resp_body_size` bytes
//!   (default 64 MiB); past that, what follows passes unchanged. A gzip, deflate or brotli
//!   body is decoded first. Either way `Content-Encoding`, `ETag` and `Last-Modified` are
//!   dropped, as APISIX drops them.
//! - `vars`: conditions on the response `status` (`[["status", "==", 200]]`, with `==`,
//!   `~=`, `>`, `>=`, `<`, `<=`, `in` and `!` to negate); nothing changes when they do not
//!   all hold. Conditions on other variables are not supported by Pylon.
//!
//! A response that has no body (HEAD, 204, 304, an upstream's `Content-Length: 0`) keeps
//! having none.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;
use serde_json::Value;

use super::body_filter::{Decoder, Filter, Scope};
use super::registry::{parse, Env, PluginError, Spec};
use super::vars::Template;
use super::{stash_key, Flow, Phases, Plugin, PluginCtx};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "response-rewrite",
    priority: 899,
    compile,
    credential: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_max")]
    max_resp_body_size: u64,
    headers: Option<serde_json::Map<String, Value>>,
    body: Option<String>,
    #[serde(default)]
    body_base64: bool,
    status_code: Option<u16>,
    vars: Option<Value>,
    filters: Option<Vec<FilterConf>>,
}

fn default_max() -> u64 {
    64 * 1024 * 1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConf {
    regex: String,
    #[serde(default)]
    scope: Scope,
    replace: String,
    #[serde(default = "default_options")]
    options: String,
}

fn default_options() -> String {
    "jo".into()
}

/// A header value: fixed, or with variables (rendered in the rewrite phase, while the
/// request is at hand, into slot `usize` of [`Rendered`]).
#[derive(Debug)]
enum Val {
    Fixed(HeaderValue),
    Vars(usize),
}

#[derive(Debug, Default)]
struct Headers {
    add: Vec<(HeaderName, Val)>,
    set: Vec<(HeaderName, Val)>,
    remove: Vec<HeaderName>,
    templates: Vec<Template>,
}

/// Rendered header values of one request.
struct Rendered(Vec<Option<HeaderValue>>);

#[derive(Debug)]
enum NewBody {
    Keep,
    Fixed(Bytes),
    Filters(Vec<Filter>),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
}

/// One `vars` condition on the response status.
#[derive(Debug)]
struct Cond {
    op: Op,
    negate: bool,
    values: Vec<f64>,
}

impl Cond {
    fn holds(&self, status: u16) -> bool {
        let s = f64::from(status);
        let v = self.values.first().copied().unwrap_or(f64::NAN);
        let r = match self.op {
            Op::Eq => s == v,
            Op::Ne => s != v,
            Op::Gt => s > v,
            Op::Ge => s >= v,
            Op::Lt => s < v,
            Op::Le => s <= v,
            Op::In => self.values.contains(&s),
        };
        r != self.negate
    }
}

#[derive(Debug)]
struct ResponseRewrite {
    status: Option<http::StatusCode>,
    headers: Headers,
    body: NewBody,
    max_body: usize,
    vars: Vec<Cond>,
}

/// What the body phase does for one response.
enum BodyState {
    Fixed { sent: bool },
    Filter(Box<super::body_filter::Held>),
}

fn header_name(path: &str, name: &str) -> Result<HeaderName, PluginError> {
    HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| PluginError::new(path, format!("{name:?} is not a valid header name")))
}

fn scalar(path: &str, v: &Value) -> Result<String, PluginError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(PluginError::new(path, "must be a string or a number")),
    }
}

impl Headers {
    fn value(&mut self, path: &str, text: &str) -> Result<Val, PluginError> {
        let t = Template::parse(text).map_err(|e| PluginError::new(path, e))?;
        if t.is_literal() {
            let v = HeaderValue::from_str(text)
                .map_err(|_| PluginError::new(path, "not a valid header value"))?;
            return Ok(Val::Fixed(v));
        }
        self.templates.push(t);
        Ok(Val::Vars(self.templates.len() - 1))
    }

    fn set_map(
        &mut self,
        path: &str,
        m: &serde_json::Map<String, Value>,
    ) -> Result<(), PluginError> {
        if m.is_empty() {
            return Err(PluginError::new(path, "must not be empty"));
        }
        for (k, v) in m {
            let p = format!("{path}.{k}");
            let name = header_name(&p, k)?;
            let val = self.value(&p, &scalar(&p, v)?)?;
            self.set.push((name, val));
        }
        Ok(())
    }
}

fn names(path: &str, v: &Value) -> Result<Vec<String>, PluginError> {
    let list = v
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| PluginError::new(path, "must be a non-empty list of strings"))?;
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| PluginError::new(format!("{path}[{i}]"), "must be a string"))
        })
        .collect()
}

fn compile_headers(m: &serde_json::Map<String, Value>) -> Result<Headers, PluginError> {
    let mut h = Headers::default();
    // APISIX's `is_new_headers_conf`: add, set or remove holding a list or an object.
    let structured = ["add", "set", "remove"]
        .iter()
        .any(|k| m.get(*k).is_some_and(|v| v.is_array() || v.is_object()));
    if !structured {
        h.set_map("headers", m)?;
        return Ok(h);
    }
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), "add" | "set" | "remove"))
    {
        return Err(PluginError::new(
            format!("headers.{k}"),
            "unknown field: with add, set or remove, headers holds only those",
        ));
    }
    if let Some(add) = m.get("add") {
        for (i, line) in names("headers.add", add)?.iter().enumerate() {
            let p = format!("headers.add[{i}]");
            let parsed = line.split_once(':').filter(|(n, v)| {
                !n.trim().is_empty() && !n.trim().contains(char::is_whitespace) && !v.contains(':')
            });
            let Some((name, value)) = parsed else {
                return Err(PluginError::new(
                    p,
                    "must be \"Name: value\" (no ':' in the value)",
                ));
            };
            let name = header_name(&p, name)?;
            let val = h.value(&p, value.trim())?;
            h.add.push((name, val));
        }
    }
    if let Some(set) = m.get("set") {
        let Value::Object(set) = set else {
            return Err(PluginError::new("headers.set", "must be an object"));
        };
        h.set_map("headers.set", set)?;
    }
    if let Some(remove) = m.get("remove") {
        for (i, n) in names("headers.remove", remove)?.iter().enumerate() {
            h.remove
                .push(header_name(&format!("headers.remove[{i}]"), n)?);
        }
    }
    Ok(h)
}

const VARS_HELP: &str = "Pylon supports only conditions on the response status: \
    [\"status\", op, value] with op ==, ~=, >, >=, <, <= or in (and \"!\" before op); \
    other variables and AND/OR are not supported by Pylon";

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compile_vars(v: &Value) -> Result<Vec<Cond>, PluginError> {
    let Value::Array(list) = v else {
        return Err(PluginError::new("vars", "must be a list of conditions"));
    };
    let mut conds = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let bad = || PluginError::new(format!("vars[{i}]"), VARS_HELP);
        let parts = c.as_array().ok_or_else(bad)?;
        if parts.first().and_then(Value::as_str) != Some("status") {
            return Err(bad());
        }
        let (negate, rest) = match parts.get(1).and_then(Value::as_str) {
            Some("!") => (true, &parts[2..]),
            _ => (false, &parts[1..]),
        };
        let [op, value] = rest else {
            return Err(bad());
        };
        let op = match op.as_str().ok_or_else(bad)? {
            "==" => Op::Eq,
            "~=" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "in" => Op::In,
            _ => return Err(bad()),
        };
        let values = match (op, value) {
            (Op::In, Value::Array(vs)) => vs.iter().map(number).collect::<Option<Vec<_>>>(),
            (Op::In, _) => None,
            (_, v) => number(v).map(|n| vec![n]),
        }
        .ok_or_else(bad)?;
        conds.push(Cond { op, negate, values });
    }
    Ok(conds)
}

fn compile(v: &Value, _env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    if c.max_resp_body_size < 1 {
        return Err(PluginError::new("max_resp_body_size", "must be >= 1"));
    }
    let status = match c.status_code {
        Some(s) if !(200..=598).contains(&s) => {
            return Err(PluginError::new("status_code", "must be 200 to 598"))
        }
        Some(s) => Some(
            http::StatusCode::from_u16(s)
                .map_err(|_| PluginError::new("status_code", "not an HTTP status"))?,
        ),
        None => None,
    };
    let body = match (&c.body, &c.filters) {
        (Some(_), Some(_)) => {
            return Err(PluginError::new(
                "filters",
                "set only one of body and filters",
            ))
        }
        (Some(b), None) if c.body_base64 => {
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            match engine.decode(b.trim()) {
                Ok(d) if !b.is_empty() => NewBody::Fixed(Bytes::from(d)),
                _ => return Err(PluginError::new("body", "invalid base64 content")),
            }
        }
        (None, _) if c.body_base64 => {
            return Err(PluginError::new("body", "invalid base64 content"))
        }
        (Some(b), None) => NewBody::Fixed(Bytes::from(b.clone())),
        (None, Some(fs)) if fs.is_empty() => {
            return Err(PluginError::new("filters", "must not be empty"))
        }
        (None, Some(fs)) => NewBody::Filters(
            fs.iter()
                .enumerate()
                .map(|(i, f)| {
                    Filter::new(&f.regex, &f.replace, f.scope, &f.options)
                        .map_err(|(field, e)| PluginError::new(format!("filters[{i}].{field}"), e))
                })
                .collect::<Result<_, _>>()?,
        ),
        (None, None) => NewBody::Keep,
    };
    let headers = match &c.headers {
        Some(m) => compile_headers(m)?,
        None => Headers::default(),
    };
    let vars = match &c.vars {
        Some(v) => compile_vars(v)?,
        None => Vec::new(),
    };
    Ok(Arc::new(ResponseRewrite {
        status,
        headers,
        body,
        max_body: usize::try_from(c.max_resp_body_size).unwrap_or(usize::MAX),
        vars,
    }))
}

/// Whether the response to the client can carry a body.
fn has_body(resp: &ResponseHeader) -> bool {
    let status = resp.status.as_u16();
    let empty = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    status >= 200 && status != 204 && status != 304 && !empty
}

impl ResponseRewrite {
    fn value(&self, v: &Val, rendered: Option<&Rendered>) -> Option<HeaderValue> {
        match v {
            Val::Fixed(h) => Some(h.clone()),
            Val::Vars(i) => rendered.and_then(|r| r.0.get(*i).cloned().flatten()),
        }
    }

    /// Prepares the body change (headers, and the state the body phase reads), unless the
    /// response has no body or an encoding Pylon cannot decode.
    fn start_body(
        &self,
        resp: &mut ResponseHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        if matches!(self.body, NewBody::Keep) || !has_body(resp) {
            return Ok(());
        }
        let encoding = resp.headers.get(http::header::CONTENT_ENCODING).cloned();
        let state = match &self.body {
            NewBody::Fixed(b) => {
                resp.remove_header(&http::header::TRANSFER_ENCODING);
                resp.insert_header(http::header::CONTENT_LENGTH, b.len())?;
                BodyState::Fixed { sent: false }
            }
            _ => {
                let Some(decoder) = Decoder::for_encoding(encoding.as_ref()) else {
                    log::warn!(
                        "response-rewrite: filters skipped: the body's Content-Encoding {encoding:?} \
                         cannot be decoded (gzip, deflate and br can)"
                    );
                    return Ok(());
                };
                resp.remove_header(&http::header::CONTENT_LENGTH);
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                BodyState::Filter(Box::new(super::body_filter::Held::new(
                    decoder,
                    self.max_body,
                )))
            }
        };
        resp.remove_header(&http::header::CONTENT_ENCODING);
        resp.remove_header(&http::header::ETAG);
        resp.remove_header(&http::header::LAST_MODIFIED);
        cx.stash_put(stash_key(self), state);
        Ok(())
    }
}

#[async_trait]
impl Plugin for ResponseRewrite {
    fn name(&self) -> &'static str {
        "response-rewrite"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: !self.headers.templates.is_empty(),
            response_header: true,
            response_body: !matches!(self.body, NewBody::Keep),
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let values = self
            .headers
            .templates
            .iter()
            .map(|t| HeaderValue::from_str(&t.render(req, cx)).ok())
            .collect();
        cx.stash_put(stash_key(self), Rendered(values));
        Flow::Continue
    }

    fn response_header(
        &self,
        resp: &mut ResponseHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        let rendered = cx.stash_take::<Rendered>(stash_key(self));
        let status = resp.status.as_u16();
        if !self.vars.iter().all(|c| c.holds(status)) {
            return Ok(());
        }
        if let Some(s) = self.status {
            resp.set_status(s)?;
        }
        self.start_body(resp, cx)?;
        let h = &self.headers;
        for (name, v) in &h.add {
            if let Some(v) = self.value(v, rendered.as_ref()) {
                resp.append_header(name.clone(), v)?;
            }
        }
        for (name, v) in &h.set {
            if let Some(v) = self.value(v, rendered.as_ref()) {
                resp.insert_header(name.clone(), v)?;
            }
        }
        for name in &h.remove {
            resp.remove_header(name);
        }
        Ok(())
    }

    fn response_body(&self, body: &mut Option<Bytes>, end: bool, cx: &mut PluginCtx) {
        let Some(state) = cx.stash_mut::<BodyState>(stash_key(self)) else {
            return;
        };
        match (state, &self.body) {
            (BodyState::Fixed { sent }, NewBody::Fixed(b)) => {
                *body = (!*sent).then(|| b.clone());
                *sent = true;
            }
            (BodyState::Filter(held), NewBody::Filters(filters)) => {
                held.push(body, end, filters);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "response_rewrite_tests.rs"]
mod tests;
