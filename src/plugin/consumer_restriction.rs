//! `consumer-restriction` (APISIX, priority 2400): lets a request through by who it is —
//! the consumer an authentication plugin found (`type: consumer_name`, the default) or the
//! id of the route it matched (`type: route_id`) — against a `whitelist`, a `blacklist`
//! and per-consumer `allowed_by_methods`.
//!
//! Decides as APISIX's `consumer-restriction.lua`, in its access phase:
//! 1. no value (no consumer authenticated) → 401
//!    `{"message":"The request is rejected, please check the consumer_name for this request"}`;
//! 2. in `blacklist` → rejected;
//! 3. a `whitelist` the value is not in → rejected;
//! 4. not whitelisted, and `allowed_by_methods` has an entry for the value whose `methods`
//!    lack the request's method → rejected.
//!
//! Rejected: `rejected_code` (default 403) with `{"message":"The consumer_name is
//! forbidden."}`, or `{"message":"<rejected_msg>"}`.
//!
//! `type: service_id` and `consumer_group_id` are refused (Pylon has no consumer groups,
//! and runs no plugins attached to consumers, where APISIX users put service restrictions).

use std::sync::Arc;

use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;

use super::registry::{parse, Env, PluginError, Spec};
use super::{Flow, Phases, Plugin, PluginCtx, Reply};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "consumer-restriction",
    priority: 2400,
    compile,
    credential: None,
};

/// Configuration (APISIX schema).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    /// What is checked. Default `consumer_name`.
    #[serde(default = "consumer_name", rename = "type")]
    kind: String,
    /// Values let through (others are rejected). At least one item.
    whitelist: Option<Vec<String>>,
    /// Values rejected. At least one item.
    blacklist: Option<Vec<String>>,
    /// Per-consumer methods.
    allowed_by_methods: Option<Vec<MethodRule>>,
    /// Status of a rejection. Default 403, at least 200.
    #[serde(default = "forbidden")]
    rejected_code: i64,
    /// Message of a rejection. Default `The <type> is forbidden.`
    rejected_msg: Option<String>,
}

fn consumer_name() -> String {
    "consumer_name".into()
}
fn forbidden() -> i64 {
    403
}

/// `allowed_by_methods` item: the methods `user` may use.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodRule {
    /// The consumer name (or route id, with `type: route_id`).
    user: Option<String>,
    /// At least one of APISIX's methods.
    #[serde(default)]
    methods: Option<Vec<String>>,
}

/// APISIX's `method_schema` values.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// What the plugin checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ConsumerName,
    RouteId,
}

fn compile(v: &Value, env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    Ok(Arc::new(build(v, env)?))
}

fn build(v: &Value, env: &Env) -> Result<ConsumerRestriction, PluginError> {
    let c: Conf = parse(v)?;
    if c.whitelist.is_none() && c.blacklist.is_none() && c.allowed_by_methods.is_none() {
        return Err(PluginError::new(
            "",
            "needs whitelist, blacklist or allowed_by_methods",
        ));
    }
    let kind = match c.kind.as_str() {
        "consumer_name" => Kind::ConsumerName,
        "route_id" if env.owner.starts_with("global_rule/") => {
            return Err(PluginError::new(
                "type",
                "route_id is not supported by Pylon in global rules (they run before the \
                 route is known)",
            ))
        }
        "route_id" => Kind::RouteId,
        "service_id" => {
            return Err(PluginError::new(
                "type",
                "service_id is not supported by Pylon",
            ))
        }
        "consumer_group_id" => {
            return Err(PluginError::new(
                "type",
                "consumer_group_id is not supported by Pylon (no consumer groups)",
            ))
        }
        _ => {
            return Err(PluginError::new(
                "type",
                "must be one of consumer_name, service_id, route_id, consumer_group_id",
            ))
        }
    };
    let list = |name: &str, l: Option<Vec<String>>| match l {
        Some(l) if l.is_empty() => Err(PluginError::new(name, "must have at least 1 item")),
        l => Ok(l.unwrap_or_default()),
    };
    let whitelist = list("whitelist", c.whitelist)?;
    let blacklist = list("blacklist", c.blacklist)?;
    let mut rules = Vec::new();
    for (i, r) in c.allowed_by_methods.iter().flatten().enumerate() {
        let methods = r.methods.clone().unwrap_or_default();
        if r.methods.is_some() && methods.is_empty() {
            return Err(PluginError::new(
                format!("allowed_by_methods[{i}].methods"),
                "must have at least 1 item",
            ));
        }
        for (j, m) in methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                return Err(PluginError::new(
                    format!("allowed_by_methods[{i}].methods[{j}]"),
                    format!("must be one of {}", METHODS.join(", ")),
                ));
            }
        }
        rules.push((r.user.clone(), methods));
    }
    if !(200..=599).contains(&c.rejected_code) {
        return Err(PluginError::new(
            "rejected_code",
            "must be >= 200 (APISIX) and an HTTP status (<= 599)",
        ));
    }
    let type_name = match kind {
        Kind::ConsumerName => "consumer_name",
        Kind::RouteId => "route_id",
    };
    let message = c
        .rejected_msg
        .unwrap_or_else(|| format!("The {type_name} is forbidden."));
    Ok(ConsumerRestriction {
        kind,
        whitelist,
        blacklist,
        rules,
        rejection: Reply::message(c.rejected_code as u16, &message),
        unknown: Reply::message(
            401,
            &format!("The request is rejected, please check the {type_name} for this request"),
        ),
    })
}

/// The compiled plugin: lists are short (APISIX scans them too), answers prebuilt.
#[derive(Debug)]
struct ConsumerRestriction {
    kind: Kind,
    whitelist: Vec<String>,
    blacklist: Vec<String>,
    /// `allowed_by_methods`: (user, methods).
    rules: Vec<(Option<String>, Vec<String>)>,
    rejection: Reply,
    /// The 401 when there is no value to check.
    unknown: Reply,
}

impl ConsumerRestriction {
    /// Whether `value` may use `method` (APISIX `is_method_allowed`: the first rule for
    /// `value` decides; no rule allows).
    fn method_allowed(&self, value: &str, method: &str) -> bool {
        self.rules
            .iter()
            .find(|(user, _)| user.as_deref() == Some(value))
            .is_none_or(|(_, methods)| methods.iter().any(|m| m == method))
    }

    fn allowed(&self, value: &str, method: &str) -> bool {
        let listed = |l: &[String]| l.iter().any(|v| v == value);
        if listed(&self.blacklist) {
            return false;
        }
        let whitelisted = listed(&self.whitelist);
        if !self.whitelist.is_empty() && !whitelisted {
            return false;
        }
        whitelisted || self.method_allowed(value, method)
    }
}

#[async_trait]
impl Plugin for ConsumerRestriction {
    fn name(&self) -> &'static str {
        "consumer-restriction"
    }

    fn phases(&self) -> Phases {
        Phases {
            access: true,
            ..Phases::default()
        }
    }

    async fn access(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let value = match self.kind {
            Kind::ConsumerName => cx.consumer.as_ref().map(|c| c.username.as_str()),
            Kind::RouteId => Some(&*cx.route_id).filter(|id| !id.is_empty()),
        };
        let Some(value) = value else {
            return Flow::Reply(self.unknown.clone());
        };
        if self.allowed(value, req.method.as_str()) {
            Flow::Continue
        } else {
            Flow::Reply(self.rejection.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin(conf: Value) -> ConsumerRestriction {
        build(&conf, &Env::new(&[])).unwrap()
    }

    fn problem(conf: Value) -> PluginError {
        build(&conf, &Env::new(&[])).unwrap_err()
    }

    fn run(p: &ConsumerRestriction, method: &str, consumer: Option<&str>) -> Option<Reply> {
        let req = RequestHeader::build(method, b"/get", None).unwrap();
        let mut cx = PluginCtx {
            consumer: consumer.map(|c| Arc::new(super::super::Consumer::new(c))),
            route_id: "r1".into(),
            ..PluginCtx::default()
        };
        let flow = block_on(p.access(&req, &mut cx));
        match flow {
            Flow::Continue => None,
            Flow::Reply(r) => Some(r),
        }
    }

    /// Runs a future that never waits (the access step here does not).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn body(r: &Reply) -> &str {
        std::str::from_utf8(&r.body).unwrap()
    }

    #[test]
    fn the_whitelist_admits_only_its_consumers() {
        // APISIX's "Restrict Access by Consumers" example.
        let p = plugin(json!({"whitelist": ["JaneDoe"]}));
        assert!(run(&p, "GET", Some("JaneDoe")).is_none());
        let r = run(&p, "GET", Some("JohnDoe")).unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(
            body(&r),
            "{\"message\":\"The consumer_name is forbidden.\"}\n"
        );
        let r = run(&p, "GET", None).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(
            body(&r),
            "{\"message\":\"The request is rejected, please check the consumer_name for this request\"}\n"
        );
    }

    #[test]
    fn the_blacklist_wins_and_custom_rejections_apply() {
        let p = plugin(json!({
            "blacklist": ["JohnDoe"], "whitelist": ["JohnDoe", "JaneDoe"],
            "rejected_code": 401, "rejected_msg": "go away"
        }));
        let r = run(&p, "GET", Some("JohnDoe")).unwrap();
        assert_eq!((r.status, body(&r)), (401, "{\"message\":\"go away\"}\n"));
        assert!(run(&p, "GET", Some("JaneDoe")).is_none());
        let p = plugin(json!({"blacklist": ["JohnDoe"]}));
        assert!(run(&p, "GET", Some("anyone")).is_none());
    }

    #[test]
    fn allowed_by_methods_limits_listed_consumers_unless_whitelisted() {
        // APISIX's "Restrict Access by Consumers and HTTP Methods" example.
        let p = plugin(json!({"allowed_by_methods": [
            {"user": "JohnDoe", "methods": ["GET"]},
            {"user": "JaneDoe", "methods": ["POST"]}
        ]}));
        assert_eq!(run(&p, "POST", Some("JohnDoe")).unwrap().status, 403);
        assert!(run(&p, "GET", Some("JohnDoe")).is_none());
        assert!(run(&p, "POST", Some("JaneDoe")).is_none());
        assert_eq!(run(&p, "GET", Some("JaneDoe")).unwrap().status, 403);
        assert!(run(&p, "DELETE", Some("unlisted")).is_none());
        let p = plugin(json!({"whitelist": ["JohnDoe"], "allowed_by_methods": [
            {"user": "JohnDoe", "methods": ["GET"]}
        ]}));
        assert!(run(&p, "POST", Some("JohnDoe")).is_none(), "whitelisted");
    }

    #[test]
    fn route_ids_are_checked_with_type_route_id() {
        let p = plugin(json!({"type": "route_id", "whitelist": ["r2"]}));
        let r = run(&p, "GET", Some("JohnDoe")).unwrap();
        assert_eq!(body(&r), "{\"message\":\"The route_id is forbidden.\"}\n");
        let p = plugin(json!({"type": "route_id", "whitelist": ["r1"]}));
        assert!(run(&p, "GET", None).is_none());
    }

    #[test]
    fn bad_configurations_name_the_field() {
        assert_eq!(problem(json!({})).path, "");
        assert_eq!(problem(json!({"whitelist": []})).path, "whitelist");
        assert_eq!(problem(json!({"whitelist": "a"})).path, "whitelist");
        assert_eq!(
            problem(json!({"type": "service_id", "whitelist": ["1"]})).path,
            "type"
        );
        assert_eq!(
            problem(json!({"type": "consumer_group_id", "whitelist": ["1"]})).message,
            "consumer_group_id is not supported by Pylon (no consumer groups)"
        );
        assert_eq!(
            problem(json!({"whitelist": ["a"], "rejected_code": 199})).path,
            "rejected_code"
        );
        assert_eq!(
            problem(json!({"allowed_by_methods": [{"user": "a", "methods": ["FETCH"]}]})).path,
            "allowed_by_methods[0].methods[0]"
        );
        assert_eq!(
            problem(json!({"allowed_by_methods": [{"user": "a", "methods": []}]})).path,
            "allowed_by_methods[0].methods"
        );
        let mut env = Env::new(&[]);
        env.owner = "global_rule/1".into();
        let conf = json!({"type": "route_id", "whitelist": ["1"]});
        assert_eq!(build(&conf, &env).unwrap_err().path, "type");
    }
}
