//! Names of configuration fields for the probe's verdicts: which field to change, spelled as
//! the operator edits it: `upstreams[0].tls.sni` in a resources file,
//! `/apisix/upstreams/1 tls.sni` for an object in etcd or behind the admin API.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::model::{self, Nodes, Resources};
use crate::upstream::Timeouts;

/// How fields are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Paths into the resources file (`upstreams[0].tls.sni`).
    File,
    /// Objects by key (`/apisix/upstreams/1 tls.sni`), for etcd and the admin API.
    Keyed,
}

/// Where an object's fields live: an optional object key, then a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    object: Option<String>,
    prefix: String,
}

impl Loc {
    fn file(prefix: impl Into<String>) -> Loc {
        Loc {
            object: None,
            prefix: prefix.into(),
        }
    }

    fn keyed(object: impl Into<String>, prefix: impl Into<String>) -> Loc {
        Loc {
            object: Some(object.into()),
            prefix: prefix.into(),
        }
    }

    /// The full name of field `rel` (a dotted path) of this object; `rel` empty names the
    /// object itself.
    pub fn field(&self, rel: &str) -> String {
        let path = match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{rel}", self.prefix),
        };
        match &self.object {
            None => path,
            Some(o) if path.is_empty() => o.clone(),
            Some(o) => format!("{o} {path}"),
        }
    }
}

/// A certificate source named for a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// How to call it: `ssl upstream-ssl`, `ca_certificate upstream-ca`,
    /// `upstreams[0].tls.client_cert`.
    pub label: String,
    /// The field holding the certificate itself: `ssls[0].cert`.
    pub cert_field: String,
}

/// The names around one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamNames {
    /// The upstream object.
    pub loc: Loc,
    /// Each node's path relative to the upstream (`nodes[0]`, `nodes."127.0.0.1:8443"`).
    pub nodes: Vec<String>,
    /// The configured client certificate, if any.
    pub client_cert: Option<Named>,
    /// The configured CA bundle, if any (`None` = the system store).
    pub ca: Option<Named>,
}

impl UpstreamNames {
    /// Field `rel` of the upstream.
    pub fn field(&self, rel: &str) -> String {
        self.loc.field(rel)
    }

    /// Field `rel` of node `i` (`rel` empty: the node itself).
    pub fn node_field(&self, i: usize, rel: &str) -> String {
        let node = self
            .nodes
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("nodes[{i}]"));
        if rel.is_empty() {
            self.field(&node)
        } else {
            self.field(&format!("{node}.{rel}"))
        }
    }

    /// Names for an upstream nothing is known about but its id.
    pub fn unknown(id: &str) -> UpstreamNames {
        UpstreamNames {
            loc: Loc::keyed(format!("upstream {id}"), ""),
            nodes: Vec::new(),
            client_cert: None,
            ca: None,
        }
    }
}

/// Field names for every upstream of a configuration, by compiled upstream id.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    upstreams: HashMap<String, UpstreamNames>,
    routes: HashMap<String, (String, Option<model::Timeout>)>,
}

fn id_text(id: Option<&model::Id>) -> Option<String> {
    id.map(ToString::to_string)
}

fn node_paths(nodes: &Nodes) -> Vec<String> {
    match nodes {
        Nodes::List(list) => (0..list.len()).map(|i| format!("nodes[{i}]")).collect(),
        Nodes::Map(map) => map.keys().map(|k| format!("nodes.{k:?}")).collect(),
    }
}

/// Where objects of `kind` (`ssls`, `ca_certificates`) with id `id` live.
fn object_loc(style: Style, kind: &str, positions: &HashMap<String, usize>, id: &str) -> Loc {
    match (style, positions.get(id)) {
        (Style::File, Some(i)) => Loc::file(format!("{kind}[{i}]")),
        _ => Loc::keyed(format!("/apisix/{kind}/{id}"), ""),
    }
}

struct Positions {
    ssls: HashMap<String, usize>,
    cas: HashMap<String, usize>,
}

fn names(style: Style, loc: Loc, u: &model::Upstream, pos: &Positions) -> UpstreamNames {
    let tls = u.tls.as_ref();
    let client_cert = tls.and_then(|t| match (&t.client_cert_id, &t.client_cert) {
        (Some(id), _) => {
            let id = id.to_string();
            Some(Named {
                label: format!("ssl {id}"),
                cert_field: object_loc(style, "ssls", &pos.ssls, &id).field("cert"),
            })
        }
        (None, Some(_)) => Some(Named {
            label: loc.field("tls.client_cert"),
            cert_field: loc.field("tls.client_cert"),
        }),
        (None, None) => None,
    });
    let ca = tls.and_then(|t| match (&t.ca_certificate_id, &t.ca_certs) {
        (Some(id), _) => {
            let id = id.to_string();
            Some(Named {
                label: format!("ca_certificate {id}"),
                cert_field: object_loc(style, "ca_certificates", &pos.cas, &id).field("cert"),
            })
        }
        (None, Some(_)) => Some(Named {
            label: loc.field("tls.ca_certs"),
            cert_field: loc.field("tls.ca_certs"),
        }),
        (None, None) => None,
    });
    UpstreamNames {
        nodes: node_paths(&u.nodes),
        loc,
        client_cert,
        ca,
    }
}

impl Naming {
    /// Names for everything in `res`.
    pub fn from_resources(res: &Resources, style: Style) -> Naming {
        let pos = Positions {
            ssls: res
                .ssls
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.to_string(), i))
                .collect(),
            cas: res
                .ca_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.to_string(), i))
                .collect(),
        };
        let mut n = Naming::default();
        for (i, u) in res.upstreams.iter().enumerate() {
            let path = format!("upstreams[{i}]");
            let id = id_text(u.id.as_ref()).unwrap_or_else(|| path.clone());
            let loc = match style {
                Style::File => Loc::file(path),
                Style::Keyed => Loc::keyed(format!("/apisix/upstreams/{id}"), ""),
            };
            n.upstreams
                .entry(id)
                .or_insert_with(|| names(style, loc, u, &pos));
        }
        let mut service_upstreams: HashMap<String, String> = HashMap::new();
        for (i, s) in res.services.iter().enumerate() {
            let path = format!("services[{i}]");
            let sid = id_text(s.id.as_ref()).unwrap_or_else(|| path.clone());
            let up = match (&s.upstream_id, &s.upstream) {
                (Some(id), _) => Some(id.to_string()),
                (None, Some(u)) => {
                    let loc = match style {
                        Style::File => Loc::file(format!("{path}.upstream")),
                        Style::Keyed => Loc::keyed(format!("/apisix/services/{sid}"), "upstream"),
                    };
                    let id = id_text(u.id.as_ref()).unwrap_or_else(|| format!("{path}.upstream"));
                    n.upstreams
                        .entry(id.clone())
                        .or_insert_with(|| names(style, loc, u, &pos));
                    Some(id)
                }
                (None, None) => None,
            };
            if let Some(up) = up {
                service_upstreams.insert(sid, up);
            }
        }
        for (i, r) in res.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            let rid = id_text(r.id.as_ref()).unwrap_or_else(|| path.clone());
            let up = match (&r.upstream_id, &r.upstream) {
                (Some(id), _) => Some(id.to_string()),
                (None, Some(u)) => {
                    let loc = match style {
                        Style::File => Loc::file(format!("{path}.upstream")),
                        Style::Keyed => Loc::keyed(format!("/apisix/routes/{rid}"), "upstream"),
                    };
                    let id = id_text(u.id.as_ref()).unwrap_or_else(|| format!("{path}.upstream"));
                    n.upstreams
                        .entry(id.clone())
                        .or_insert_with(|| names(style, loc, u, &pos));
                    Some(id)
                }
                (None, None) => r
                    .service_id
                    .as_ref()
                    .and_then(|s| service_upstreams.get(&s.to_string()).cloned()),
            };
            if let Some(up) = up {
                n.routes.insert(rid, (up, r.timeout));
            }
        }
        n
    }

    /// Names for one upstream object `u` with id `id`, as the admin API holds it.
    pub fn single(id: &str, u: &model::Upstream) -> Naming {
        let pos = Positions {
            ssls: HashMap::new(),
            cas: HashMap::new(),
        };
        let loc = Loc::keyed(format!("/apisix/upstreams/{id}"), "");
        let mut n = Naming::default();
        n.upstreams
            .insert(id.to_string(), names(Style::Keyed, loc, u, &pos));
        n
    }

    /// The names around the upstream with compiled id `id`.
    pub fn upstream(&self, id: &str) -> UpstreamNames {
        self.upstreams
            .get(id)
            .cloned()
            .unwrap_or_else(|| UpstreamNames::unknown(id))
    }

    /// The upstream id route `route` (its `id`, or `routes[N]` without one) sends to, and
    /// its own `timeout` applied over `base`; `None` when no such route has an upstream.
    pub fn route(&self, route: &str) -> Option<(String, Option<RouteTimeouts>)> {
        let (up, t) = self.routes.get(route)?;
        Some((up.clone(), t.map(RouteTimeouts)))
    }
}

/// A route's `timeout`, applied over its upstream's timeouts as the proxy does.
#[derive(Debug, Clone)]
pub struct RouteTimeouts(model::Timeout);

impl RouteTimeouts {
    /// `base` with each value the route sets replaced (values were checked at load).
    pub fn over(&self, base: Timeouts) -> Timeouts {
        let pick = |v: Option<f64>, d: Duration| match v {
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
            _ => d,
        };
        Timeouts {
            connect: pick(self.0.connect, base.connect),
            send: pick(self.0.send, base.send),
            read: pick(self.0.read, base.read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(text: &str) -> Resources {
        serde_yaml::from_str(text).unwrap()
    }

    const TEXT: &str = r#"
routes:
  - {id: r1, uri: /a, upstream_id: u1, timeout: {connect: 2}}
  - {uri: /b, upstream: {nodes: {"127.0.0.1:1": 1}, scheme: https, tls: {client_cert_id: c}}}
  - {id: r3, uri: /c, service_id: s}
services:
  - {id: s, upstream_id: u1}
upstreams:
  - id: u1
    scheme: https
    nodes: [{host: 127.0.0.1, port: 8443, weight: 1}]
    tls: {client_cert_id: c, ca_certificate_id: ca}
ssls:
  - {id: other, type: client, cert: a, key: b}
  - {id: c, type: client, cert: a, key: b}
ca_certificates:
  - {id: ca, cert: x}
"#;

    #[test]
    fn file_paths() {
        let n = Naming::from_resources(&res(TEXT), Style::File);
        let u = n.upstream("u1");
        assert_eq!(u.field("tls.sni"), "upstreams[0].tls.sni");
        assert_eq!(u.node_field(0, "port"), "upstreams[0].nodes[0].port");
        let cc = u.client_cert.unwrap();
        assert_eq!(cc.label, "ssl c");
        assert_eq!(cc.cert_field, "ssls[1].cert");
        assert_eq!(u.ca.unwrap().cert_field, "ca_certificates[0].cert");
        let inline = n.upstream("routes[1].upstream");
        assert_eq!(inline.field("scheme"), "routes[1].upstream.scheme");
        assert_eq!(
            inline.node_field(0, ""),
            "routes[1].upstream.nodes.\"127.0.0.1:1\""
        );
        let (up, t) = n.route("r1").unwrap();
        assert_eq!(up, "u1");
        let t = t.unwrap().over(Timeouts::default());
        assert_eq!(t.connect, Duration::from_secs(2));
        assert_eq!(t.read, Duration::from_secs(60));
        assert_eq!(n.route("r3").unwrap().0, "u1");
        assert_eq!(n.route("routes[1]").unwrap().0, "routes[1].upstream");
        assert!(n.route("nope").is_none());
    }

    #[test]
    fn keyed_paths() {
        let n = Naming::from_resources(&res(TEXT), Style::Keyed);
        let u = n.upstream("u1");
        assert_eq!(u.field("tls.sni"), "/apisix/upstreams/u1 tls.sni");
        assert_eq!(u.field(""), "/apisix/upstreams/u1");
        assert_eq!(u.client_cert.unwrap().cert_field, "/apisix/ssls/c cert");
        let inline = n.upstream("routes[1].upstream");
        assert_eq!(
            inline.field("tls.sni"),
            "/apisix/routes/routes[1] upstream.tls.sni"
        );
        assert_eq!(n.upstream("zzz").field("tls.sni"), "upstream zzz tls.sni");
    }
}
