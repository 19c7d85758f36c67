//! `ip-restriction` (APISIX, priority 3000, access phase): admits or refuses a request by
//! the client address — the TCP peer, or what `real-ip` found — against a `whitelist` or a
//! `blacklist` (exactly one) of IPv4/IPv6 addresses and CIDR ranges. A refused request gets
//! `response_code` (403, or 404) with `{"message":"<message>"}` (default "Your IP address
//! is not allowed"), as APISIX answers.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;

use super::ip_list::IpList;
use super::registry::{parse, Env, PluginError, Spec};
use super::{Flow, Phases, Plugin, PluginCtx, Reply};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "ip-restriction",
    priority: 3000,
    compile,
    credential: None,
};

/// APISIX's default `message`.
pub const DEFAULT_MESSAGE: &str = "Your IP address is not allowed";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    #[serde(default = "default_message")]
    message: String,
    #[serde(default = "default_code")]
    response_code: u16,
}

fn default_message() -> String {
    DEFAULT_MESSAGE.into()
}

fn default_code() -> u16 {
    403
}

#[derive(Debug)]
struct IpRestriction {
    /// The list, and whether it admits (whitelist) or refuses (blacklist) what it holds.
    list: IpList,
    allow_listed: bool,
    status: u16,
    /// The refusal's body, built once.
    body: Bytes,
}

fn compile(v: &Value, _env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    if !(1..=1024).contains(&c.message.chars().count()) {
        return Err(PluginError::new("message", "must be 1 to 1024 characters"));
    }
    if !(403..=404).contains(&c.response_code) {
        return Err(PluginError::new("response_code", "must be 403 or 404"));
    }
    let (list, allow_listed) = match (&c.whitelist, &c.blacklist) {
        (Some(w), None) => (IpList::parse("whitelist", w)?, true),
        (None, Some(b)) => (IpList::parse("blacklist", b)?, false),
        _ => {
            return Err(PluginError::new(
                "",
                "set exactly one of whitelist and blacklist",
            ))
        }
    };
    let body = serde_json::json!({ "message": c.message }).to_string() + "\n";
    Ok(Arc::new(IpRestriction {
        list,
        allow_listed,
        status: c.response_code,
        body: Bytes::from(body),
    }))
}

impl IpRestriction {
    /// Whether a request from `ip` (`None`: a Unix-socket client, no address) may pass.
    fn admits(&self, ip: Option<std::net::IpAddr>) -> bool {
        let listed = ip.is_some_and(|ip| self.list.contains(ip));
        listed == self.allow_listed
    }
}

#[async_trait]
impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn phases(&self) -> Phases {
        Phases {
            access: true,
            ..Phases::default()
        }
    }

    async fn access(&self, _req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        if self.admits(cx.client_ip) {
            Flow::Continue
        } else {
            Flow::Reply(Reply::json(self.status, self.body.clone()))
        }
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

    async fn status(p: &Arc<dyn Plugin>, ip: &str) -> Option<(u16, String)> {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let mut cx = PluginCtx {
            client_ip: Some(ip.parse().unwrap()),
            ..Default::default()
        };
        match p.access(&req, &mut cx).await {
            Flow::Continue => None,
            Flow::Reply(r) => Some((r.status, String::from_utf8(r.body.to_vec()).unwrap())),
        }
    }

    #[tokio::test]
    async fn whitelist_and_blacklist() {
        let p =
            build(json!({"whitelist": ["192.168.0.1/24"], "message": "Access denied"})).unwrap();
        assert_eq!(status(&p, "192.168.0.77").await, None);
        assert_eq!(
            status(&p, "10.0.0.1").await,
            Some((403, "{\"message\":\"Access denied\"}\n".into()))
        );
        let p =
            build(json!({"blacklist": ["127.0.0.1", "fe80::/10"], "response_code": 404})).unwrap();
        assert_eq!(
            status(&p, "127.0.0.1").await,
            Some((
                404,
                "{\"message\":\"Your IP address is not allowed\"}\n".into()
            ))
        );
        assert!(status(&p, "fe80::1").await.is_some());
        assert_eq!(status(&p, "127.0.0.2").await, None);
    }

    #[test]
    fn bad_configurations_are_named() {
        for (conf, path) in [
            (json!({}), ""),
            (
                json!({"whitelist": ["1.1.1.1"], "blacklist": ["2.2.2.2"]}),
                "",
            ),
            (json!({"whitelist": []}), "whitelist"),
            (
                json!({"whitelist": ["1.1.1.1", "1.1.1.1/40"]}),
                "whitelist[1]",
            ),
            (
                json!({"blacklist": ["x"], "response_code": 401}),
                "response_code",
            ),
            (json!({"blacklist": ["::1"], "message": ""}), "message"),
            (
                json!({"blacklist": ["::1"], "whitelisted": []}),
                "whitelisted",
            ),
        ] {
            assert_eq!(build(conf.clone()).unwrap_err().path, path, "{conf}");
        }
    }
}
