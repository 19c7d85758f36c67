//! `cors` (APISIX, priority 4000): Cross-Origin Resource Sharing headers, decided as
//! APISIX's `cors.lua` decides them, and preflight requests answered by the gateway.
//!
//! - Any `OPTIONS` request is answered by the gateway with 200 and an empty body (rewrite
//!   phase: before authentication, so preflights need no credentials) plus the CORS headers.
//! - `allow_origins` (default `*`): `*`; `**` (the request's `Origin`, or `*` without one);
//!   one origin; or a comma-separated list, of which the request's `Origin` must be one.
//!   `allow_origins_by_regex` replaces it: the `Origin` must match one of the regexes
//!   (unanchored, as `ngx.re.find`). An origin that is not allowed gets no CORS headers.
//! - On an allowed origin: `Access-Control-Allow-Origin`, `-Allow-Methods` (`allow_methods`,
//!   default `*`; `**` lists every method), `-Max-Age` (`max_age`, default 5),
//!   `-Expose-Headers` (`expose_headers`, when set), `-Allow-Headers` (`allow_headers`,
//!   default `*`; `**` echoes `Access-Control-Request-Headers`) and, with
//!   `allow_credential: true`, `-Allow-Credentials: true`. They replace the upstream's.
//!   `Vary: Origin` is added whenever `allow_origins` is not `*`.
//! - `timing_allow_origins` / `timing_allow_origins_by_regex`: `Timing-Allow-Origin`, by the
//!   same rules.
//! - `allow_credential: true` with `*` in another field is refused, as APISIX refuses it;
//!   `allow_origins_by_metadata` (plugin metadata) is not supported by Pylon.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method};
use pingora_http::{RequestHeader, ResponseHeader};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::registry::{parse, Env, PluginError, Spec};
use super::{stash_key, Flow, Phases, Plugin, PluginCtx, Reply};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "cors",
    priority: 4000,
    compile,
    credential: None,
};

/// What `allow_methods: "**"` sends.
pub const ALL_METHODS: &str = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE";

static TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "star")]
    allow_origins: String,
    #[serde(default = "star")]
    allow_methods: String,
    #[serde(default = "star")]
    allow_headers: String,
    expose_headers: Option<String>,
    #[serde(default = "five")]
    max_age: i64,
    #[serde(default)]
    allow_credential: bool,
    allow_origins_by_regex: Option<Vec<String>>,
    allow_origins_by_metadata: Option<Value>,
    timing_allow_origins: Option<String>,
    timing_allow_origins_by_regex: Option<Vec<String>>,
}

fn star() -> String {
    "*".into()
}

fn five() -> i64 {
    5
}

/// Allowed origins, as `allow_origins` / `timing_allow_origins` say.
#[derive(Debug)]
enum Origins {
    /// `**`: whatever the request says (`*` without an `Origin`).
    Mirror,
    /// A list (`a,b`): the request's `Origin` when it is one of them.
    List(HashSet<String>),
    /// `*`, `null` or one origin, sent as is (and then only if it is `*` or the request's
    /// `Origin`).
    One(HeaderValue),
    /// Regexes (`*_by_regex`), joined: the request's `Origin` when one matches.
    Regex(Regex),
}

impl Origins {
    /// The `Access-Control-Allow-Origin` (or `Timing-Allow-Origin`) value for a request
    /// from `origin`, or `None`: APISIX's `process_with_allow_origins*` then
    /// `match_origins`.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let value = match self {
            Origins::Mirror => origin
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("*")),
            Origins::List(set) => {
                let o = origin?;
                set.contains(o.to_str().ok()?).then(|| o.clone())?
            }
            Origins::One(v) => v.clone(),
            Origins::Regex(re) => {
                let o = origin?;
                re.is_match(o.to_str().ok()?).then(|| o.clone())?
            }
        };
        (value == "*" || Some(&value) == origin).then_some(value)
    }
}

#[derive(Debug)]
struct Cors {
    origins: Origins,
    vary: bool,
    methods: HeaderValue,
    /// `None`: `**`, the request's `Access-Control-Request-Headers`.
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    credential: bool,
    timing: Option<Origins>,
}

/// What the request decided, for the response.
struct Decided {
    allow_origin: Option<HeaderValue>,
    request_headers: Option<HeaderValue>,
    timing: Option<HeaderValue>,
}

fn origins_pattern() -> Regex {
    Regex::new(r"^(\*|\*\*|null|\w+://[^,]+(,\w+://[^,]+)*)$").expect("constant regex")
}

fn value(path: &str, s: &str) -> Result<HeaderValue, PluginError> {
    HeaderValue::from_str(s).map_err(|_| PluginError::new(path, "not a valid header value"))
}

fn origins(path: &str, s: &str) -> Result<Origins, PluginError> {
    if !origins_pattern().is_match(s) {
        return Err(PluginError::new(
            path,
            format!("{s:?} is not *, **, null or a comma-separated list of scheme://host[:port]"),
        ));
    }
    Ok(match s {
        "**" => Origins::Mirror,
        s if s.contains(',') => Origins::List(s.split(',').map(str::to_string).collect()),
        s => Origins::One(value(path, s)?),
    })
}

fn regexes(path: &str, list: &[String]) -> Result<Origins, PluginError> {
    if list.is_empty() {
        return Err(PluginError::new(path, "must not be empty"));
    }
    for (i, r) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if r.is_empty() || r.len() > 4096 {
            return Err(PluginError::new(p, "must be 1 to 4096 characters"));
        }
        if list[..i].contains(r) {
            return Err(PluginError::new(p, "duplicate regex"));
        }
        Regex::new(r).map_err(|e| PluginError::new(p, format!("bad regex: {e}")))?;
    }
    let joined = Regex::new(&list.join("|"))
        .map_err(|e| PluginError::new(path, format!("bad regex: {e}")))?;
    Ok(Origins::Regex(joined))
}

fn compile(v: &Value, _env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    if c.allow_origins_by_metadata.is_some() {
        return Err(PluginError::new(
            "allow_origins_by_metadata",
            "not supported by Pylon (it has no plugin metadata): list the origins in \
             allow_origins or allow_origins_by_regex",
        ));
    }
    if c.allow_credential {
        let star = [
            Some(&c.allow_origins),
            Some(&c.allow_methods),
            Some(&c.allow_headers),
            c.expose_headers.as_ref(),
            c.timing_allow_origins.as_ref(),
        ]
        .into_iter()
        .any(|f| f.is_some_and(|f| f == "*"));
        if star {
            return Err(PluginError::new(
                "allow_credential",
                "you can not set '*' for other option when 'allow_credential' is true",
            ));
        }
    }
    let origins_conf = origins("allow_origins", &c.allow_origins)?;
    let origins = match &c.allow_origins_by_regex {
        Some(list) => regexes("allow_origins_by_regex", list)?,
        None => origins_conf,
    };
    let timing = match (&c.timing_allow_origins_by_regex, &c.timing_allow_origins) {
        (Some(list), _) => Some(regexes("timing_allow_origins_by_regex", list)?),
        (None, Some(s)) => Some(self::origins("timing_allow_origins", s)?),
        (None, None) => None,
    };
    let methods = match c.allow_methods.as_str() {
        "**" => HeaderValue::from_static(ALL_METHODS),
        m => value("allow_methods", m)?,
    };
    let headers = match c.allow_headers.as_str() {
        "**" => None,
        h => Some(value("allow_headers", h)?),
    };
    let expose = match c.expose_headers.as_deref() {
        None | Some("") => None,
        Some(e) => Some(value("expose_headers", e)?),
    };
    Ok(Arc::new(Cors {
        origins,
        vary: c.allow_origins != "*",
        methods,
        headers,
        expose,
        max_age: HeaderValue::from(c.max_age),
        credential: c.allow_credential,
        timing,
    }))
}

#[async_trait]
impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: true,
            response_header: true,
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        // The Origin as the client sent it (a later proxy-rewrite does not change it).
        let origin = req.headers.get(ORIGIN);
        let allow_origin = self.origins.allow(origin);
        let request_headers = match (&allow_origin, &self.headers) {
            (Some(_), None) => req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
            _ => None,
        };
        let timing = self.timing.as_ref().and_then(|t| t.allow(origin));
        cx.stash_put(
            stash_key(self),
            Decided {
                allow_origin,
                request_headers,
                timing,
            },
        );
        if req.method == Method::OPTIONS {
            return Flow::Reply(Reply::status(200));
        }
        Flow::Continue
    }

    fn response_header(
        &self,
        resp: &mut ResponseHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        let Some(d) = cx.stash_take::<Decided>(stash_key(self)) else {
            return Ok(());
        };
        if self.vary {
            resp.append_header(VARY, HeaderValue::from_static("Origin"))?;
        }
        if let Some(origin) = d.allow_origin {
            resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, origin)?;
            resp.insert_header(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone())?;
            resp.insert_header(ACCESS_CONTROL_MAX_AGE, self.max_age.clone())?;
            if let Some(e) = &self.expose {
                resp.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone())?;
            }
            match self.headers.clone().or(d.request_headers) {
                Some(h) => resp.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, h)?,
                None => {
                    resp.remove_header(&ACCESS_CONTROL_ALLOW_HEADERS);
                }
            }
            if self.credential {
                resp.insert_header(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                )?;
            }
        }
        if let Some(t) = d.timing {
            resp.insert_header(TIMING_ALLOW_ORIGIN.clone(), t)?;
        }
        Ok(())
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

    /// (reply status if answered, response headers) for a request with `headers`.
    fn run(
        p: &Arc<dyn Plugin>,
        method: &str,
        headers: &[(&str, &str)],
    ) -> (Option<u16>, ResponseHeader) {
        let mut req = RequestHeader::build(method, b"/hello", None).unwrap();
        for (k, v) in headers {
            req.insert_header(k.to_string(), *v).unwrap();
        }
        let mut cx = PluginCtx::default();
        let status = match p.rewrite(&req, &mut cx) {
            Flow::Reply(r) => Some(r.status),
            Flow::Continue => None,
        };
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("vary", "Via").unwrap();
        resp.insert_header("access-control-allow-methods", "upstream")
            .unwrap();
        p.response_header(&mut resp, &mut cx).unwrap();
        (status, resp)
    }

    fn h<'a>(r: &'a ResponseHeader, name: &str) -> Vec<&'a str> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn defaults_allow_everything() {
        let p = build(json!({})).unwrap();
        let (status, r) = run(&p, "GET", &[]);
        assert_eq!(status, None);
        assert_eq!(h(&r, "access-control-allow-origin"), ["*"]);
        assert_eq!(h(&r, "access-control-allow-methods"), ["*"]);
        assert_eq!(h(&r, "access-control-allow-headers"), ["*"]);
        assert_eq!(h(&r, "access-control-max-age"), ["5"]);
        assert_eq!(h(&r, "vary"), ["Via"], "no Vary: Origin for *");
        assert!(h(&r, "access-control-expose-headers").is_empty());
        assert!(h(&r, "access-control-allow-credentials").is_empty());
        assert_eq!(run(&p, "OPTIONS", &[]).0, Some(200));
    }

    #[test]
    fn a_list_of_origins_with_credentials() {
        let p = build(
            json!({"allow_origins": "http://sub.domain.com,http://sub2.domain.com",
            "allow_methods": "GET,POST", "allow_headers": "headr1,headr2",
            "expose_headers": "ex-headr1,ex-headr2", "max_age": 50, "allow_credential": true}),
        )
        .unwrap();
        let (_, r) = run(&p, "GET", &[("origin", "http://sub2.domain.com")]);
        assert_eq!(
            h(&r, "access-control-allow-origin"),
            ["http://sub2.domain.com"]
        );
        assert_eq!(h(&r, "vary"), ["Via", "Origin"]);
        assert_eq!(h(&r, "access-control-allow-methods"), ["GET,POST"]);
        assert_eq!(h(&r, "access-control-allow-headers"), ["headr1,headr2"]);
        assert_eq!(
            h(&r, "access-control-expose-headers"),
            ["ex-headr1,ex-headr2"]
        );
        assert_eq!(h(&r, "access-control-max-age"), ["50"]);
        assert_eq!(h(&r, "access-control-allow-credentials"), ["true"]);
        let (_, r) = run(&p, "GET", &[("origin", "http://sub3.domain.com")]);
        assert!(h(&r, "access-control-allow-origin").is_empty());
        assert_eq!(h(&r, "access-control-allow-methods"), ["upstream"]);
        assert_eq!(h(&r, "vary"), ["Via", "Origin"]);
    }

    #[test]
    fn single_origin_forced_wildcards_and_regex() {
        let p = build(json!({"allow_origins": "http://a.com"})).unwrap();
        assert!(h(
            &run(&p, "GET", &[("origin", "http://b.com")]).1,
            "access-control-allow-origin"
        )
        .is_empty());
        assert!(h(&run(&p, "GET", &[]).1, "access-control-allow-origin").is_empty());
        assert_eq!(
            h(
                &run(&p, "GET", &[("origin", "http://a.com")]).1,
                "access-control-allow-origin"
            ),
            ["http://a.com"]
        );

        let p = build(
            json!({"allow_origins": "**", "allow_methods": "**", "allow_headers": "**",
                             "expose_headers": "*"}),
        )
        .unwrap();
        let (_, r) = run(
            &p,
            "GET",
            &[
                ("origin", "https://sub.domain.com"),
                ("access-control-request-headers", "req-header1,req-header2"),
            ],
        );
        assert_eq!(
            h(&r, "access-control-allow-origin"),
            ["https://sub.domain.com"]
        );
        assert_eq!(h(&r, "access-control-allow-methods"), [ALL_METHODS]);
        assert_eq!(
            h(&r, "access-control-allow-headers"),
            ["req-header1,req-header2"]
        );
        let (_, r) = run(&p, "GET", &[]);
        assert_eq!(h(&r, "access-control-allow-origin"), ["*"]);
        assert!(h(&r, "access-control-allow-headers").is_empty());

        let p = build(
            json!({"allow_origins_by_regex": [".*\\.test.com$", ".*\\.example.org$"],
                             "timing_allow_origins_by_regex": [".*\\.test.com$"]}),
        )
        .unwrap();
        let (_, r) = run(&p, "GET", &[("origin", "http://a.example.org")]);
        assert_eq!(
            h(&r, "access-control-allow-origin"),
            ["http://a.example.org"]
        );
        assert!(h(&r, "timing-allow-origin").is_empty());
        let (_, r) = run(&p, "GET", &[("origin", "http://a.test.com")]);
        assert_eq!(h(&r, "timing-allow-origin"), ["http://a.test.com"]);
        assert!(h(
            &run(&p, "GET", &[("origin", "http://a.test2.com")]).1,
            "access-control-allow-origin"
        )
        .is_empty());
    }

    #[test]
    fn bad_configurations_are_named() {
        for (conf, path) in [
            (json!({"allow_credential": true}), "allow_credential"),
            (
                json!({"allow_credential": true, "allow_origins": "http://a.com",
                    "allow_methods": "GET", "allow_headers": "x", "expose_headers": "*"}),
                "allow_credential",
            ),
            (json!({"allow_origins": "a.com"}), "allow_origins"),
            (
                json!({"allow_origins_by_regex": ["("]}),
                "allow_origins_by_regex[0]",
            ),
            (
                json!({"allow_origins_by_regex": []}),
                "allow_origins_by_regex",
            ),
            (
                json!({"allow_origins_by_metadata": ["k"]}),
                "allow_origins_by_metadata",
            ),
            (json!({"max_age": "5"}), "max_age"),
        ] {
            assert_eq!(build(conf.clone()).unwrap_err().path, path, "{conf}");
        }
        // ** with credentials is allowed (APISIX's "forcefully").
        assert!(
            build(json!({"allow_credential": true, "allow_origins": "**",
            "allow_methods": "**", "allow_headers": "**"}))
            .is_ok()
        );
    }
}
