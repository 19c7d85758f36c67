//! Checks a parsed resources file and compiles it into the runtime [`Table`].
//!
//! Every problem is collected with its field path, so `pylon check` lists them all at once.
//! Certificates and keys are parsed here, once; node host names are resolved here, once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use openssl::x509::X509;
use pingora_core::utils::tls::CertKey;

use super::inventory::{CertKind, Inventory};
use super::model::{self, Id, Resources};
use super::upstream::{compile_upstream, timeouts};
use super::Problem;
use crate::router::{method_bit, HostPattern, Matcher, PathPattern, RouterBuilder};
use crate::table::{Route, Table};
use crate::tls::store::CertStoreBuilder;
use crate::tls::{self, PemError};
use crate::upstream::Upstream;

/// How many objects of each kind a resources file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Routes (disabled ones included).
    pub routes: usize,
    /// Services.
    pub services: usize,
    /// Named upstreams (inline ones not counted).
    pub upstreams: usize,
    /// SSL objects.
    pub ssls: usize,
    /// CA certificate objects.
    pub ca_certificates: usize,
    /// Consumers.
    pub consumers: usize,
    /// Plugin configs.
    pub plugin_configs: usize,
    /// Global rules.
    pub global_rules: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} routes, {} services, {} upstreams, {} ssls, {} CA certificates",
            self.routes, self.services, self.upstreams, self.ssls, self.ca_certificates
        )?;
        for (n, what) in [
            (self.consumers, "consumers"),
            (self.plugin_configs, "plugin configs"),
            (self.global_rules, "global rules"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// A compiled resources file.
pub struct Compiled {
    /// The runtime table.
    pub table: Table,
    /// Things that load but deserve the operator's attention (expired certificates, a TLS
    /// upstream with no name to verify, settings not enforced).
    pub warnings: Vec<Problem>,
    /// Object counts, for the one-line summary.
    pub counts: Counts,
    /// Files read and certificate expiry dates (for reload watching and metrics).
    pub inventory: Inventory,
}

/// Certificates expiring within this many days get a warning at load.
pub const EXPIRY_WARNING_DAYS: u32 = 30;

/// State shared by the compile steps.
pub(super) struct Ctx<'a> {
    base: &'a Path,
    pub(super) problems: Vec<Problem>,
    warnings: Vec<Problem>,
    pub(super) client_certs: HashMap<String, (bool, Option<Arc<CertKey>>)>,
    /// CA bundles by id; `None` for an object that failed to load (reported at its path).
    pub(super) cas: HashMap<String, Option<Vec<X509>>>,
    /// Every compiled upstream, named and inline, for the background health checker.
    all_upstreams: Vec<Arc<Upstream>>,
    /// Server `ssls` entries for the HTTPS listeners.
    pub(super) server_ssls: CertStoreBuilder,
    inventory: Inventory,
    /// [`Options::missing_upstream_answers_503`].
    missing_upstream_503: bool,
}

/// How [`compile_with`] treats what a keyed source (etcd) can hold between two writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A route or service whose `upstream_id` names no upstream compiles with an upstream of
    /// no nodes, so its requests answer 503 (APISIX: "failed to find upstream by id")
    /// instead of failing the whole configuration; a warning names it.
    pub missing_upstream_answers_503: bool,
}

impl Ctx<'_> {
    pub(super) fn problem(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.problems.push(Problem::new(path, msg));
    }
    pub(super) fn warn(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.warnings.push(Problem::new(path, msg));
    }
    pub(super) fn pem(&mut self, path: &str, value: &str) -> Option<tls::PemSource> {
        if !value.trim_start().starts_with("-----BEGIN") {
            self.inventory.file(&self.base.join(value.trim()));
        }
        match tls::read_pem_field(value, self.base) {
            Ok(p) => Some(p),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }
    pub(super) fn certs(&mut self, path: &str, value: &str) -> Option<Vec<X509>> {
        let pem = self.pem(path, value)?;
        if tls::holds_private_key(&pem.text) {
            // Certificate fields are returned by the admin API: a key here would leak.
            self.problem(
                path,
                "holds a private key: a certificate field takes certificates only (put the key \
                 in its key field)",
            );
            return None;
        }
        match tls::parse_certs(&pem) {
            Ok(certs) => {
                for c in &certs {
                    let subject = tls::subject_string(c);
                    match tls::expiry(c, EXPIRY_WARNING_DAYS) {
                        tls::Expiry::Fine => {}
                        tls::Expiry::Expired(date) => {
                            self.warn(path, format!("certificate {subject} expired on {date}"))
                        }
                        tls::Expiry::Soon { date, days } => self.warn(
                            path,
                            format!("certificate {subject} expires on {date} (in {days} days)"),
                        ),
                    }
                }
                Some(certs)
            }
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }
    /// Loads a certificate chain and its key and checks they belong together.
    pub(super) fn cert_key(
        &mut self,
        (cert_path, cert): (&str, &str),
        (key_path, key): (&str, &str),
        passphrase: Option<&str>,
        passphrase_field: &'static str,
    ) -> Option<Arc<CertKey>> {
        let certs = self.certs(cert_path, cert);
        let key = self.pem(key_path, key).and_then(|pem| {
            tls::parse_key(&pem, passphrase, passphrase_field)
                .map_err(|e| self.problem(key_path, e.to_string()))
                .ok()
        });
        let (certs, key) = (certs?, key?);
        if let Err(e @ PemError::KeyMismatch { .. }) = tls::check_key_matches(&certs[0], &key) {
            self.problem(key_path, e.to_string());
            return None;
        }
        Some(Arc::new(CertKey::new(certs, key)))
    }
}

fn check_unique<'a>(
    kind: &str,
    ids: impl Iterator<Item = Option<&'a Id>>,
    problems: &mut Vec<Problem>,
) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, id) in ids.enumerate() {
        let Some(id) = id else { continue };
        let key = id.to_string();
        if let Some(first) = seen.get(&key) {
            problems.push(Problem::new(
                format!("{kind}[{i}].id"),
                format!("duplicate id {key:?} (also {kind}[{first}])"),
            ));
        } else {
            seen.insert(key, i);
        }
    }
}

/// Compiles `res`; relative certificate paths are resolved against `base` (the resources
/// file's folder). Errors: every problem found, with its path.
pub fn compile(res: &Resources, base: &Path) -> Result<Compiled, Vec<Problem>> {
    compile_with(res, base, Options::default())
}

/// [`compile`] with `opts`.
pub fn compile_with(res: &Resources, base: &Path, opts: Options) -> Result<Compiled, Vec<Problem>> {
    let mut cx = Ctx {
        missing_upstream_503: opts.missing_upstream_answers_503,
        base,
        problems: Vec::new(),
        warnings: Vec::new(),
        client_certs: HashMap::new(),
        cas: HashMap::new(),
        all_upstreams: Vec::new(),
        server_ssls: CertStoreBuilder::default(),
        inventory: Inventory::default(),
    };
    let route_ids = res.routes.iter().map(|r| r.id.as_ref());
    check_unique("routes", route_ids, &mut cx.problems);
    let service_ids = res.services.iter().map(|s| s.id.as_ref());
    check_unique("services", service_ids, &mut cx.problems);
    let upstream_ids = res.upstreams.iter().map(|u| u.id.as_ref());
    check_unique("upstreams", upstream_ids, &mut cx.problems);
    check_unique(
        "ssls",
        res.ssls.iter().map(|s| Some(&s.id)),
        &mut cx.problems,
    );
    let ca_ids = res.ca_certificates.iter().map(|c| Some(&c.id));
    check_unique("ca_certificates", ca_ids, &mut cx.problems);

    for (i, ca) in res.ca_certificates.iter().enumerate() {
        let certs = cx.certs(&format!("ca_certificates[{i}].cert"), &ca.cert);
        let id = ca.id.to_string();
        cx.inventory.certs(
            CertKind::CaCertificate,
            &id,
            certs.as_deref().unwrap_or_default(),
        );
        cx.cas.insert(ca.id.to_string(), certs);
    }
    for (i, ssl) in res.ssls.iter().enumerate() {
        compile_ssl(&mut cx, &format!("ssls[{i}]"), ssl);
    }
    let mut upstreams: Upstreams = HashMap::new();
    for (i, u) in res.upstreams.iter().enumerate() {
        let path = format!("upstreams[{i}]");
        // Without an id (APISIX standalone allows it) nothing can refer to it; it is still
        // checked, and named by its position.
        let name =
            u.id.as_ref()
                .map_or_else(|| path.clone(), |id| id.to_string());
        let up = compile_upstream(&mut cx, &path, &name, u).map(Arc::new);
        cx.all_upstreams.extend(up.clone());
        if let Some(id) = &u.id {
            upstreams.insert(id.to_string(), up);
        }
    }
    let plugin_ids = res.plugin_configs.iter().map(|p| p.id.as_ref());
    check_unique("plugin_configs", plugin_ids, &mut cx.problems);
    let rule_ids = res.global_rules.iter().map(|g| g.id.as_ref());
    check_unique("global_rules", rule_ids, &mut cx.problems);
    let parts = super::plugins::prepare(&mut cx, res);
    // One environment for every chain: lookup tables (key-auth keys, jwt-auth keys) are
    // built once per configuration.
    let plugin_env = crate::plugin::Env::new(&parts.consumers);
    let global = super::plugins::global_chain(&mut cx, res, &plugin_env);
    let mut services: HashMap<String, ServiceParts> = HashMap::new();
    for (i, s) in res.services.iter().enumerate() {
        let path = format!("services[{i}]");
        let upstream = pick_upstream(
            &mut cx,
            &path,
            s.upstream_id.as_ref(),
            s.upstream.as_deref(),
            &upstreams,
        );
        let hosts = host_patterns(&mut cx, &format!("{path}.hosts"), s.hosts.iter().flatten());
        let declared = s.upstream_id.is_some() || s.upstream.is_some();
        if let Some(id) = &s.id {
            let parts = (upstream, declared, hosts, s.enable_websocket);
            services.insert(id.to_string(), parts);
        }
    }
    let mut router = RouterBuilder::default();
    for (i, r) in res.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some((paths, matcher, route)) = compile_route(
            &mut cx,
            &path,
            r,
            &upstreams,
            &services,
            (&parts, &plugin_env),
        ) {
            if r.status != Some(0) {
                router.add(paths, matcher, Arc::new(route));
            }
        }
    }
    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    Ok(Compiled {
        table: Table {
            router: router.build(),
            upstreams: cx.all_upstreams,
            tls: std::mem::take(&mut cx.server_ssls).build(),
            global,
        },
        warnings: cx.warnings,
        counts: Counts {
            routes: res.routes.len(),
            services: res.services.len(),
            upstreams: res.upstreams.len(),
            ssls: res.ssls.len(),
            ca_certificates: res.ca_certificates.len(),
            consumers: res.consumers.len(),
            plugin_configs: res.plugin_configs.len(),
            global_rules: res.global_rules.len(),
        },
        inventory: cx.inventory,
    })
}

fn compile_ssl(cx: &mut Ctx, path: &str, ssl: &model::Ssl) {
    let client = match ssl.kind.as_deref() {
        None | Some("server") => false,
        Some("client") => true,
        Some(other) => {
            cx.problem(
                format!("{path}.type"),
                format!("{other:?} is not a type: use server or client"),
            );
            return;
        }
    };
    let pass = ssl.key_passphrase.as_deref();
    let mut pairs: Vec<(String, &str, String, &str)> = Vec::new();
    match (&ssl.cert, &ssl.key) {
        (Some(c), Some(k)) => pairs.push((format!("{path}.cert"), c, format!("{path}.key"), k)),
        (Some(_), None) => cx.problem(format!("{path}.key"), "required with cert"),
        (None, Some(_)) => cx.problem(format!("{path}.cert"), "required with key"),
        (None, None) if ssl.certs.is_none() => {
            cx.problem(format!("{path}.cert"), "required (with key)")
        }
        (None, None) => {}
    }
    let certs = ssl.certs.as_deref().unwrap_or_default();
    let keys = ssl.keys.as_deref().unwrap_or_default();
    if certs.len() != keys.len() {
        cx.problem(
            format!("{path}.keys"),
            format!(
                "{} keys for {} certs: give one key per certificate",
                keys.len(),
                certs.len()
            ),
        );
    }
    for (j, (c, k)) in certs.iter().zip(keys).enumerate() {
        pairs.push((
            format!("{path}.certs[{j}]"),
            c,
            format!("{path}.keys[{j}]"),
            k,
        ));
    }
    let mut loaded = Vec::new();
    for (cp, c, kp, k) in &pairs {
        if let Some(ck) = cx.cert_key((cp, c), (kp, k), pass, "key_passphrase") {
            let id = ssl.id.to_string();
            cx.inventory
                .certs(CertKind::Ssl, &id, std::slice::from_ref(ck.leaf()));
            loaded.push((cp.clone(), ck));
        }
    }
    if client {
        super::ssl::check_client_purpose(cx, &loaded);
    }
    let first = loaded.first().map(|(_, ck)| ck.clone());
    if client && (ssl.snis.is_some() || ssl.sni.is_some()) {
        cx.warn(format!("{path}.snis"), "ignored for type: client");
    }
    if client && ssl.client.is_some() {
        cx.warn(format!("{path}.client"), "ignored for type: client");
    }
    if !client {
        super::ssl::compile_server(cx, path, ssl, &loaded);
    }
    cx.client_certs
        .insert(ssl.id.to_string(), (client, first.filter(|_| client)));
}

fn pick_upstream(
    cx: &mut Ctx,
    path: &str,
    id: Option<&Id>,
    inline: Option<&model::Upstream>,
    upstreams: &Upstreams,
) -> Option<Arc<Upstream>> {
    if id.is_some() && inline.is_some() {
        // APISIX: upstream_id wins over the inline upstream.
        cx.warn(
            format!("{path}.upstream"),
            "ignored: upstream_id is set too, and wins (as in APISIX)",
        );
    }
    match (id, inline) {
        (Some(id), _) => match upstreams.get(&id.to_string()) {
            Some(found) => found.clone(), // None: reported at the upstream's own path
            None if cx.missing_upstream_503 => {
                let id = id.to_string();
                cx.warn(
                    format!("{path}.upstream_id"),
                    format!("no upstream with id {id:?}: its requests answer 503"),
                );
                Some(Arc::new(Upstream::missing(&id)))
            }
            None => {
                cx.problem(
                    format!("{path}.upstream_id"),
                    format!("no upstream with id {:?}", id.to_string()),
                );
                None
            }
        },
        (None, Some(u)) => {
            let up_path = format!("{path}.upstream");
            let id =
                u.id.as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| up_path.clone());
            let up = compile_upstream(cx, &up_path, &id, u).map(Arc::new);
            cx.all_upstreams.extend(up.clone());
            up
        }
        (None, None) => None,
    }
}

fn host_patterns<'a>(
    cx: &mut Ctx,
    path: &str,
    hosts: impl Iterator<Item = &'a String>,
) -> Vec<HostPattern> {
    hosts
        .enumerate()
        .filter_map(|(i, h)| {
            HostPattern::parse(h)
                .map_err(|e| cx.problem(format!("{path}[{i}]"), e))
                .ok()
        })
        .collect()
}

/// A compiled service: its upstream (`None` if it declares none or that one failed), whether
/// it declares one, its hosts, and its `enable_websocket`.
type ServiceParts = (Option<Arc<Upstream>>, bool, Vec<HostPattern>, Option<bool>);

/// Named upstreams by id; `None` for one that failed to compile (reported at its path).
type Upstreams = HashMap<String, Option<Arc<Upstream>>>;

type RouteParts = (Vec<PathPattern>, Matcher, Route);

/// APISIX's radixtree reads `/user/:id` as a parameter segment; Pylon matches paths literally
/// (exact or `*` prefix), so such a route would never match what its author meant.
fn warn_if_parameter(cx: &mut Ctx, path: &str, uri: &str) {
    if uri
        .split('/')
        .any(|seg| seg.starts_with(':') && seg.len() > 1)
    {
        cx.warn(
            path,
            format!(
                "{uri:?} holds a :parameter segment, which APISIX matches as a parameter but \
                 Pylon matches literally; use a prefix (\"/user/*\") instead"
            ),
        );
    }
}

fn compile_route(
    cx: &mut Ctx,
    path: &str,
    r: &model::Route,
    upstreams: &Upstreams,
    services: &HashMap<String, ServiceParts>,
    (parts, plugin_env): (&super::plugins::PluginParts, &crate::plugin::Env),
) -> Option<RouteParts> {
    let before = cx.problems.len();
    let route_id =
        r.id.as_ref()
            .map_or_else(|| path.to_string(), Id::to_string);
    let plugins = super::plugins::route_chain(cx, path, &route_id, r, parts, plugin_env);
    if let Some(s) = r.status.filter(|s| *s > 1) {
        cx.problem(
            format!("{path}.status"),
            format!("{s} is not valid: use 1 (enabled) or 0 (disabled)"),
        );
    }
    let mut paths = Vec::new();
    match (&r.uri, &r.uris) {
        (Some(_), Some(_)) => {
            cx.problem(format!("{path}.uris"), "give either uri or uris, not both")
        }
        (None, None) => cx.problem(format!("{path}.uri"), "required (or uris)"),
        (Some(u), None) => {
            warn_if_parameter(cx, &format!("{path}.uri"), u);
            match PathPattern::parse(u) {
                Ok(p) => paths.push(p),
                Err(e) => cx.problem(format!("{path}.uri"), e),
            }
        }
        (None, Some(list)) => {
            if list.is_empty() {
                cx.problem(format!("{path}.uris"), "must not be empty");
            }
            for (i, u) in list.iter().enumerate() {
                warn_if_parameter(cx, &format!("{path}.uris[{i}]"), u);
                match PathPattern::parse(u) {
                    Ok(p) => paths.push(p),
                    Err(e) => cx.problem(format!("{path}.uris[{i}]"), e),
                }
            }
        }
    }
    let mut methods = 0u16;
    for (i, m) in r.methods.iter().flatten().enumerate() {
        match method_bit(m) {
            Some(bit) => methods |= bit,
            None => cx.problem(
                format!("{path}.methods[{i}]"),
                format!("{m:?} is not an HTTP method (upper case, e.g. GET)"),
            ),
        }
    }
    if r.host.is_some() && r.hosts.is_some() {
        cx.problem(
            format!("{path}.hosts"),
            "give either host or hosts, not both",
        );
    }
    let hosts_path = format!("{path}.{}", if r.host.is_some() { "host" } else { "hosts" });
    let mut hosts = host_patterns(
        cx,
        &hosts_path,
        r.host.iter().chain(r.hosts.iter().flatten()),
    );

    let mut service_upstream = None;
    let mut service_declares = false;
    let mut service_websocket = None;
    if let Some(sid) = &r.service_id {
        match services.get(&sid.to_string()) {
            Some((up, declared, service_hosts, websocket)) => {
                service_upstream = up.clone();
                service_declares = *declared;
                service_websocket = *websocket;
                if hosts.is_empty() {
                    hosts = service_hosts.clone();
                }
            }
            None => cx.problem(
                format!("{path}.service_id"),
                format!("no service with id {:?}", sid.to_string()),
            ),
        }
    }
    let own = pick_upstream(
        cx,
        path,
        r.upstream_id.as_ref(),
        r.upstream.as_deref(),
        upstreams,
    );
    let upstream = own.or(service_upstream);
    let declared = r.upstream_id.is_some() || r.upstream.is_some() || service_declares;
    if upstream.is_none() && !declared && cx.problems.len() == before {
        cx.problem(
            path,
            "no upstream: set upstream_id, upstream, or a service_id whose service has one",
        );
    }
    let route_timeouts = r.timeout.as_ref().map(|t| {
        let base = upstream.as_ref().map(|u| u.timeouts).unwrap_or_default();
        timeouts(cx, &format!("{path}.timeout"), t, base)
    });
    if cx.problems.len() > before {
        return None;
    }
    let matcher = Matcher {
        hosts,
        methods,
        priority: r.priority,
    };
    let route = Route {
        id_str: route_id.as_str().into(),
        id: route_id,
        upstream: upstream?,
        timeouts: route_timeouts,
        websocket: r.enable_websocket.or(service_websocket).unwrap_or(false),
        plugins,
        metrics: Default::default(),
    };
    Some((paths, matcher, route))
}
