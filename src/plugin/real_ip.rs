//! `real-ip` (APISIX, priority 23000, rewrite phase; nginx's `ngx_http_realip_module`): takes
//! the client address from `source` — a header (`http_x_forwarded_for`, `http_x_real_ip`),
//! a query argument (`arg_realip`) or another variable — and makes it the request's client
//! address ([`PluginCtx::client_ip`]), which `ip-restriction`, the limits' `remote_addr`
//! key, `X-Forwarded-For` / `X-Real-IP` to the upstream and the access log then use.
//!
//! - `trusted_addresses` (addresses and CIDR ranges, nginx `set_real_ip_from`): the source
//!   is read only when the TCP peer is one of them; from any other peer it is ignored, so a
//!   client cannot claim another address. Without `trusted_addresses` every peer is trusted,
//!   as in APISIX.
//! - `http_x_forwarded_for` takes the last address of the (last) `X-Forwarded-For` header;
//!   with `recursive: true` (and `trusted_addresses`) the list is walked from the right and
//!   the first address that is not trusted is taken (nginx `real_ip_recursive on`), or the
//!   leftmost when all are.
//! - The value may carry a port (`1.2.3.4:9080`, `[::1]:9080`), which becomes
//!   `$remote_port`. A missing or malformed value leaves the client address as it was.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderName;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;

use super::ip_list::IpList;
use super::registry::{parse, Env, PluginError, Spec};
use super::vars::Var;
use super::{Flow, Phases, Plugin, PluginCtx};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "real-ip",
    priority: 23000,
    compile,
    credential: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    source: String,
    trusted_addresses: Option<Vec<String>>,
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug)]
enum Source {
    /// `http_x_forwarded_for`: the list's last (or last untrusted) address.
    ForwardedFor,
    /// Any other variable, read whole.
    Var(Var),
}

#[derive(Debug)]
struct RealIp {
    source: Source,
    trusted: Option<IpList>,
    recursive: bool,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

fn compile(v: &Value, _env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    if c.source.is_empty() {
        return Err(PluginError::new("source", "must not be empty"));
    }
    let source = if c.source == "http_x_forwarded_for" {
        Source::ForwardedFor
    } else {
        Source::Var(Var::parse(&c.source).map_err(|e| PluginError::new("source", e))?)
    };
    let trusted = match &c.trusted_addresses {
        Some(list) => Some(IpList::parse("trusted_addresses", list)?),
        None => None,
    };
    Ok(Arc::new(RealIp {
        source,
        trusted,
        recursive: c.recursive,
    }))
}

/// An address with an optional port, as APISIX's `core.utils.parse_addr` reads it:
/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`. `None` for anything else, or a
/// port outside 1–65535.
pub fn parse_addr(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    let port = |p: &str| -> Option<u16> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok().filter(|p| *p > 0)
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let ip = host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((IpAddr::V6(ip), None)),
            _ => Some((IpAddr::V6(ip), Some(port(after.strip_prefix(':')?)?))),
        };
    }
    match s.split_once(':') {
        // One colon: IPv4 with a port. More: a bare IPv6 address.
        Some((host, p)) if !p.contains(':') => {
            Some((IpAddr::V4(host.parse().ok()?), Some(port(p)?)))
        }
        _ => s.parse().ok().map(|ip| (ip, None)),
    }
}

impl RealIp {
    fn trusted(&self, addr: &str) -> bool {
        self.trusted.as_ref().is_some_and(|t| t.contains_str(addr))
    }

    /// The address text the source gives for this request.
    fn address<'r>(&self, req: &'r RequestHeader, cx: &PluginCtx, buf: &'r mut String) -> &'r str {
        match &self.source {
            Source::Var(v) => {
                v.append(req, cx, buf);
                buf.as_str()
            }
            Source::ForwardedFor => {
                let Some(list) = req
                    .headers
                    .get_all(&X_FORWARDED_FOR)
                    .iter()
                    .next_back()
                    .and_then(|v| v.to_str().ok())
                else {
                    return "";
                };
                if self.recursive && self.trusted.is_some() && list.contains(',') {
                    let mut parts = list.split(',').map(str::trim).rev().peekable();
                    while let Some(addr) = parts.next() {
                        if parts.peek().is_none() || !self.trusted(addr) {
                            return addr;
                        }
                    }
                    return "";
                }
                list.rsplit(',').next().unwrap_or("").trim()
            }
        }
    }
}

#[async_trait]
impl Plugin for RealIp {
    fn name(&self) -> &'static str {
        "real-ip"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: true,
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        if let Some(trusted) = &self.trusted {
            if !cx.client_ip.is_some_and(|ip| trusted.contains(ip)) {
                return Flow::Continue;
            }
        }
        let mut buf = String::new();
        let addr = self.address(req, cx, &mut buf);
        match parse_addr(addr) {
            Some((ip, port)) => {
                cx.client_ip = Some(ip);
                if port.is_some() {
                    cx.client_port = port;
                }
            }
            None if addr.is_empty() => log::debug!("real-ip: missing real address"),
            None => log::debug!("real-ip: bad address {addr:?}"),
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(conf: Value, peer: &str, uri: &str, xff: &[&str]) -> (String, Option<u16>) {
        let consumers = Vec::new();
        let p = compile(&conf, &Env::new(&consumers)).unwrap();
        let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for v in xff {
            req.append_header("x-forwarded-for", *v).unwrap();
        }
        let mut cx = PluginCtx {
            client_ip: Some(peer.parse().unwrap()),
            client_port: Some(5555),
            ..Default::default()
        };
        p.rewrite(&req, &mut cx);
        (cx.client_ip.unwrap().to_string(), cx.client_port)
    }

    #[test]
    fn parse_addr_reads_addresses_with_ports() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_addr("1.2.3.4:9080"),
            Some((ip("1.2.3.4"), Some(9080)))
        );
        assert_eq!(parse_addr(" 1.2.3.4 "), Some((ip("1.2.3.4"), None)));
        assert_eq!(parse_addr("::1"), Some((ip("::1"), None)));
        assert_eq!(parse_addr("[::1]:80"), Some((ip("::1"), Some(80))));
        assert_eq!(parse_addr("[::1]"), Some((ip("::1"), None)));
        for bad in [
            "",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "x",
            "1.2.3:80",
            "[1.2.3.4]:80",
        ] {
            assert_eq!(parse_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn documented_examples() {
        // From a query argument, with a port.
        let conf = json!({"source": "arg_realip", "trusted_addresses": ["127.0.0.0/24"]});
        assert_eq!(
            run(conf.clone(), "127.0.0.1", "/get?realip=1.2.3.4:9080", &[]),
            ("1.2.3.4".into(), Some(9080))
        );
        // An untrusted peer's claim is ignored.
        assert_eq!(
            run(conf, "10.9.9.9", "/get?realip=1.2.3.4:9080", &[]),
            ("10.9.9.9".into(), Some(5555))
        );
        // The last X-Forwarded-For address.
        let conf = json!({"source": "http_x_forwarded_for", "trusted_addresses": ["127.0.0.0/24"]});
        assert_eq!(
            run(conf.clone(), "127.0.0.1", "/", &["10.26.3.19"]).0,
            "10.26.3.19"
        );
        assert_eq!(
            run(conf, "127.0.0.1", "/", &["1.1.1.1", "2.2.2.2, 3.3.3.3"]).0,
            "3.3.3.3"
        );
        // Recursive: right to left, skipping trusted addresses.
        let conf = json!({"source": "http_x_forwarded_for", "recursive": true,
                          "trusted_addresses": ["192.128.0.0/16", "127.0.0.1/32"]});
        assert_eq!(
            run(
                conf.clone(),
                "127.0.0.1",
                "/",
                &["127.0.0.2, 192.128.1.1, 127.0.0.1"]
            )
            .0,
            "127.0.0.2"
        );
        assert_eq!(
            run(conf, "127.0.0.1", "/", &["192.128.0.5, 127.0.0.1"]).0,
            "192.128.0.5",
            "all trusted: the leftmost"
        );
        // No trusted_addresses: every peer is trusted (APISIX); a bad value changes nothing.
        let conf = json!({"source": "http_x_real_ip"});
        assert_eq!(run(conf, "10.0.0.1", "/", &[]).0, "10.0.0.1");
        let conf = json!({"source": "http_x_forwarded_for"});
        assert_eq!(
            run(conf.clone(), "10.0.0.1", "/", &["not-an-ip"]).0,
            "10.0.0.1"
        );
        assert_eq!(
            run(conf, "10.0.0.1", "/", &["2001:db8::1"]).0,
            "2001:db8::1"
        );
    }

    #[test]
    fn bad_configurations_are_named() {
        let consumers = Vec::new();
        let env = Env::new(&consumers);
        for (conf, path) in [
            (json!({}), ""),
            (json!({"source": ""}), "source"),
            (json!({"source": "nope"}), "source"),
            (
                json!({"source": "arg_x", "trusted_addresses": ["1.2.3.4/99"]}),
                "trusted_addresses[0]",
            ),
        ] {
            assert_eq!(compile(&conf, &env).unwrap_err().path, path, "{conf}");
        }
    }
}
