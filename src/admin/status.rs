//! Pylon's read-only extensions of the admin API, for the dashboard's overview and
//! certificate forms (APISIX has no equivalent endpoints; docs/admin-api.md):
//!
//! - `GET /apisix/admin/status`: version, configuration provider and version, the
//!   certificates of `ssls` and `ca_certificates` soonest to expire first, and the health of
//!   every upstream node as the health checks see it ([`Status`]).
//! - `POST /apisix/admin/certificates/inspect`: what a PEM certificate and key are
//!   ([`crate::tls::inspect`]).

use std::path::{Path, PathBuf};

use http::Response;
use serde::Serialize;
use serde_json::{json, Value};

use super::api::{AdminError, Op};
use super::store::Kind;
use super::{error_response, json_response, AdminApp, Backend};
use crate::table::Table;
use crate::tls::{self, inspect};

/// The answer of `GET /apisix/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The Pylon release, e.g. `0.1.0`.
    pub pylon_version: &'static str,
    /// `gateway.config_provider`: `yaml` (the resources file) or `etcd`.
    pub config_provider: &'static str,
    /// The resources file's path, or `etcd <endpoints><prefix>`.
    pub config_source: String,
    /// The configuration version serving (1 at start, +1 per applied change).
    pub config_version: u64,
    /// One entry per `ssls` / `ca_certificates` object, soonest to expire first.
    pub certificates: Vec<CertStatus>,
    /// Every upstream in use, in table order.
    pub upstreams: Vec<UpstreamHealth>,
}

/// The certificate of one object that expires first.
#[derive(Debug, Clone, Serialize)]
pub struct CertStatus {
    /// `ssls` or `ca_certificates`.
    pub kind: &'static str,
    /// The object's id.
    pub id: String,
    /// Its `name`, if any.
    pub name: Option<String>,
    /// `server` or `client` for ssls; `null` for CA certificates.
    #[serde(rename = "type")]
    pub ssl_type: Option<String>,
    /// The leaf's subject (an ssl), or the subject of the bundle's certificate that expires
    /// first (a CA certificate); `null` when it cannot be read (then `error` says why).
    pub subject: Option<String>,
    /// That certificate's issuer.
    pub issuer: Option<String>,
    /// Its notAfter, RFC 3339.
    pub not_after: Option<String>,
    /// Whole days left (negative once expired).
    pub days_left: Option<i64>,
    /// Why the certificate could not be read.
    pub error: Option<String>,
}

/// One upstream's nodes.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamHealth {
    /// The upstream's id (an inline upstream: where it is defined, e.g. `routes[0].upstream`).
    pub id: String,
    /// Which health checks run: `active`, `passive`, `active+passive`, or `null` (none: every
    /// node counts as healthy).
    pub checks: Option<&'static str>,
    /// The nodes, in configuration order.
    pub nodes: Vec<NodeHealth>,
}

/// One node's state.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    /// `host:port` as configured.
    pub node: String,
    /// Its weight (0: never picked).
    pub weight: u32,
    /// Whether the health checks count it healthy (always true without checks).
    pub healthy: bool,
    /// Whether its host name resolves (always true for an IP address).
    pub resolved: bool,
}

impl AdminApp {
    /// `GET /apisix/admin/status`.
    pub(super) async fn status(&self) -> Response<Vec<u8>> {
        let (provider, source, version, base) = match &self.backend {
            Backend::File(api) => {
                let r = api.reloader();
                let path = r.resources_path();
                let base = crate::config::base_dir(path);
                ("yaml", path.display().to_string(), r.version(), base)
            }
            Backend::Etcd(api) => {
                let s = api.sync();
                let base = PathBuf::from(s.base());
                ("etcd", s.source_name(), s.version(), base)
            }
        };
        let lists = async {
            let ssls = self.list(Kind::Ssls).await?;
            let cas = self.list(Kind::CaCertificates).await?;
            Ok::<_, AdminError>((ssls, cas))
        };
        let (ssls, cas) = match lists.await {
            Ok(l) => l,
            Err(e) => return error_response(&e),
        };
        let certificates =
            tokio::task::spawn_blocking(move || certificates(&ssls, &cas, &base)).await;
        let status = Status {
            pylon_version: env!("CARGO_PKG_VERSION"),
            config_provider: provider,
            config_source: source,
            config_version: version,
            certificates: certificates.unwrap_or_default(),
            upstreams: upstream_health(&self.table.load()),
        };
        json_response(200, &serde_json::to_value(status).unwrap_or_default())
    }

    async fn list(&self, kind: Kind) -> Result<Value, AdminError> {
        let what = format!("GET /apisix/admin/{} (status)", kind.segment());
        let (_, body) = match &self.backend {
            Backend::Etcd(api) => api.run(kind, Op::List, &what).await?,
            Backend::File(api) => api.run(kind, Op::List, &what)?,
        };
        Ok(body)
    }
}

/// `POST /apisix/admin/certificates/inspect`: 200 with the [`inspect::Inspection`]; 400
/// when the body is not an [`inspect::InspectRequest`].
pub fn inspect_response(body: Value) -> Response<Vec<u8>> {
    match serde_json::from_value::<inspect::InspectRequest>(body) {
        Ok(req) => json_response(
            200,
            &serde_json::to_value(inspect::inspect(&req)).unwrap_or_default(),
        ),
        Err(e) => json_response(
            400,
            &json!({"error_msg": format!("the body must be {{\"cert\", \"key\"?, \"key_passphrase\"?, \"type\"?}}: {e}")}),
        ),
    }
}

/// The nodes of every upstream of `table`.
pub fn upstream_health(table: &Table) -> Vec<UpstreamHealth> {
    table
        .upstreams
        .iter()
        .map(|u| UpstreamHealth {
            id: u.id.clone(),
            checks: u.health.as_deref().and_then(|h| {
                match (h.active.is_some(), h.passive.is_some()) {
                    (true, true) => Some("active+passive"),
                    (true, false) => Some("active"),
                    (false, true) => Some("passive"),
                    (false, false) => None,
                }
            }),
            nodes: u
                .nodes
                .iter()
                .map(|n| NodeHealth {
                    node: n.label.clone(),
                    weight: n.weight,
                    healthy: n.health.is_healthy(),
                    resolved: n.resolved.load(std::sync::atomic::Ordering::Relaxed),
                })
                .collect(),
        })
        .collect()
}

/// The certificate status of each object in the admin API list answers `ssls` and `cas`
/// (`{"list": [{"value": …}]}`), soonest to expire first. PEM fields that hold a path are
/// read relative to `base`, as the configuration reads them.
pub fn certificates(ssls: &Value, cas: &Value, base: &Path) -> Vec<CertStatus> {
    let values = |list: &Value| -> Vec<Value> {
        list["list"]
            .as_array()
            .map(|l| l.iter().map(|i| i["value"].clone()).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (kind, list) in [("ssls", ssls), ("ca_certificates", cas)] {
        for v in values(list) {
            let mut pems: Vec<&str> = v["cert"].as_str().into_iter().collect();
            if let Some(more) = v["certs"].as_array() {
                pems.extend(more.iter().filter_map(Value::as_str));
            }
            out.push(one(kind, &v, &pems, base));
        }
    }
    out.sort_by_key(|c| c.days_left.unwrap_or(i64::MIN));
    out
}

fn one(kind: &'static str, v: &Value, pems: &[&str], base: &Path) -> CertStatus {
    let mut status = CertStatus {
        kind,
        id: crate::admin::store::id_text(Kind::Ssls, v).unwrap_or_default(),
        name: v["name"].as_str().map(str::to_string),
        ssl_type: (kind == "ssls").then(|| v["type"].as_str().unwrap_or("server").to_string()),
        subject: None,
        issuer: None,
        not_after: None,
        days_left: None,
        error: None,
    };
    let mut soonest: Option<inspect::CertFacts> = None;
    for pem in pems {
        let loaded = tls::read_pem_field(pem, base).and_then(|p| tls::parse_certs(&p));
        let certs = match loaded {
            Ok(c) => c,
            Err(e) => {
                status.error = Some(e.to_string());
                return status;
            }
        };
        // An ssl's chain certificates are its issuers': the leaf is what it presents.
        let considered = if kind == "ssls" {
            &certs[..1]
        } else {
            &certs[..]
        };
        for c in considered {
            let f = inspect::facts(c);
            if soonest.as_ref().is_none_or(|s| f.days_left < s.days_left) {
                soonest = Some(f);
            }
        }
    }
    if let Some(f) = soonest {
        status.subject = Some(f.subject);
        status.issuer = Some(f.issuer);
        status.not_after = Some(f.not_after);
        status.days_left = Some(f.days_left);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, Role};
    use serde_json::json;

    #[test]
    fn certificates_soonest_first_with_unreadable_ones_named() {
        let ca = certs::make_ca("ROOTCA", 100).unwrap();
        let client = certs::issue(&ca, "client", Role::Client, 5).unwrap();
        let pem = |c: &openssl::x509::X509| String::from_utf8(c.to_pem().unwrap()).unwrap();
        let ssls = json!({"list": [
            {"value": {"id": "c", "type": "client", "cert": pem(&client.cert) + &pem(&ca.cert)}},
            {"value": {"id": 7, "name": "gone", "cert": "missing.crt"}},
        ]});
        let cas = json!({"list": [{"value": {"id": "ca", "name": "root", "cert": pem(&ca.cert)}}]});
        let out = certificates(&ssls, &cas, Path::new("/nonexistent"));
        assert_eq!(out.len(), 3);
        // Unreadable first (unknown expiry sorts first), then 5 days, then 100.
        assert_eq!(out[0].id, "7");
        assert!(out[0].error.as_deref().unwrap().starts_with("cannot read"));
        assert_eq!(
            (out[1].id.as_str(), out[1].subject.as_deref()),
            ("c", Some("CN=client"))
        );
        assert_eq!(out[1].ssl_type.as_deref(), Some("client"));
        assert!((4..=5).contains(&out[1].days_left.unwrap()));
        assert_eq!(out[2].kind, "ca_certificates");
        assert_eq!(out[2].name.as_deref(), Some("root"));
        assert!(out[2].ssl_type.is_none());
    }
}
