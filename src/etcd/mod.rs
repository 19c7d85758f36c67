//! etcd as a configuration source, in Apache APISIX's key layout.
//!
//! Objects live under `<prefix>/<kind>/<id>` (`/apisix/routes/1`, `/apisix/upstreams/u`,
//! `/apisix/plugin_configs/<id>`, `/apisix/global_rules/<id>`, …, plus Pylon's
//! `/apisix/ca_certificates/<id>`), consumers under `/apisix/consumers/<username>`, each a
//! JSON object with the resources file's fields. Keys Pylon does not serve (APISIX's
//! `consumer_groups`, `stream_routes`, `data_plane/…`, and the consumer credentials under
//! `/apisix/consumers/<username>/credentials/`) are passed over. This module connects (plain or TLS through OpenSSL, with a
//! client certificate and user/password when configured), reads the whole prefix, and names
//! keys; what to do with the items is the caller's (`ops::etcd_sync`, the admin API,
//! `pylon config`).

pub mod crypt;

use std::path::Path;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, OpenSslClientConfig, WatchOptions, WatchStream,
};
use openssl::ssl::SslVerifyMode;
use serde_json::Value;
use thiserror::Error;

use crate::config::kind::Kind;
use crate::config::model;
use crate::config::Problem;
use crate::tls;

/// Why etcd could not be used.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// The TLS settings could not be loaded (a path or PEM error, with its field).
    #[error("{0}")]
    Settings(String),
    /// etcd did not answer, refused the connection or the credentials, or failed a request.
    #[error("etcd at {endpoints}: {message}")]
    Unreachable {
        /// The endpoints tried, comma separated.
        endpoints: String,
        /// What went wrong.
        message: String,
    },
    /// A request took longer than `gateway.etcd.timeout`.
    #[error("etcd at {endpoints}: no answer within {seconds} s (gateway.etcd.timeout)")]
    Timeout {
        /// The endpoints tried.
        endpoints: String,
        /// The limit.
        seconds: f64,
    },
}

/// Connection settings, resolved from `gateway.etcd` (PEM files read once).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing `/` (`/apisix`).
    pub prefix: String,
    /// Limit for each request.
    pub timeout: Duration,
    user: Option<(String, String)>,
    tls: Option<TlsMaterial>,
}

#[derive(Debug, Clone)]
struct TlsMaterial {
    cert_key: Option<(Vec<u8>, Vec<u8>)>,
    ca: Option<Vec<u8>>,
    verify: bool,
    sni: Option<String>,
}

/// Checks `gateway.etcd` without reading files: endpoints, prefix, timeout, credentials.
pub fn check_static(e: &model::Etcd) -> Vec<Problem> {
    let mut problems = Vec::new();
    if e.endpoints.is_empty() {
        problems.push(Problem::new(
            "gateway.etcd.endpoints",
            "at least one is required",
        ));
    }
    for (i, ep) in e.endpoints.iter().enumerate() {
        let ok = ep
            .strip_prefix("http://")
            .or_else(|| ep.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !ok {
            problems.push(Problem::new(
                format!("gateway.etcd.endpoints[{i}]"),
                format!("{ep:?} is not a URL of the form http://host:port or https://host:port"),
            ));
        }
    }
    let schemes: Vec<bool> = e
        .endpoints
        .iter()
        .map(|x| x.starts_with("https://"))
        .collect();
    if schemes.windows(2).any(|w| w[0] != w[1]) {
        problems.push(Problem::new(
            "gateway.etcd.endpoints",
            "mixes http:// and https://: use one scheme",
        ));
    }
    if !e.prefix.starts_with('/') || e.prefix.len() < 2 {
        problems.push(Problem::new(
            "gateway.etcd.prefix",
            format!(
                "{:?} must start with / and name something (e.g. /apisix)",
                e.prefix
            ),
        ));
    }
    if !(e.timeout > 0.0 && e.timeout.is_finite()) {
        problems.push(Problem::new(
            "gateway.etcd.timeout",
            "must be > 0 (seconds)",
        ));
    }
    if e.user.is_some() != e.password.is_some() {
        problems.push(Problem::new(
            "gateway.etcd.password",
            "user and password go together",
        ));
    }
    if e.tls.cert.is_some() != e.tls.key.is_some() {
        problems.push(Problem::new(
            "gateway.etcd.tls.key",
            "cert and key go together",
        ));
    }
    problems
}

fn pem_bytes(field: &str, value: &str, base: &Path) -> Result<Vec<u8>, EtcdError> {
    tls::read_pem_field(value, base)
        .map(|p| p.text)
        .map_err(|e| EtcdError::Settings(format!("{field}: {e}")))
}

impl Settings {
    /// Resolves `gateway.etcd`; relative paths are against `base` (the static file's folder).
    ///
    /// Errors: [`EtcdError::Settings`] when a PEM field cannot be read.
    pub fn new(e: &model::Etcd, base: &Path) -> Result<Settings, EtcdError> {
        let https = e.endpoints.iter().any(|x| x.starts_with("https://"));
        let t = &e.tls;
        let tls = if https {
            let cert_key = match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some((
                    pem_bytes("gateway.etcd.tls.cert", c, base)?,
                    pem_bytes("gateway.etcd.tls.key", k, base)?,
                )),
                _ => None,
            };
            let ca = match &t.ca {
                Some(c) => Some(pem_bytes("gateway.etcd.tls.ca", c, base)?),
                None => None,
            };
            Some(TlsMaterial {
                cert_key,
                ca,
                verify: t.verify,
                sni: t.sni.clone(),
            })
        } else {
            None
        };
        Ok(Settings {
            endpoints: e.endpoints.clone(),
            prefix: e.prefix.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs_f64(e.timeout),
            user: e.user.clone().zip(e.password.clone()),
            tls,
        })
    }

    /// The endpoints, comma separated, for messages.
    pub fn endpoints_text(&self) -> String {
        self.endpoints.join(",")
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> EtcdError {
        EtcdError::Unreachable {
            endpoints: self.endpoints_text(),
            message: e.to_string(),
        }
    }

    /// Runs `fut` within the configured timeout.
    ///
    /// Errors: [`EtcdError::Timeout`], or the request's own error as
    /// [`EtcdError::Unreachable`].
    pub async fn limit<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| self.unreachable(describe(&e))),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.endpoints_text(),
                seconds: self.timeout.as_secs_f64(),
            }),
        }
    }

    /// The key of an object.
    pub fn key(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}/{id}", self.prefix, kind.segment())
    }

    /// What a key under the prefix names.
    pub fn classify<'a>(&self, key: &'a str) -> KeyClass<'a> {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return KeyClass::Other("");
        };
        let (segment, id) = rest.split_once('/').unwrap_or((rest, ""));
        match Kind::from_segment(segment) {
            // `/apisix/routes` itself: APISIX 2's directory marker.
            Some(_) if id.is_empty() => KeyClass::Other(segment),
            // APISIX 3.11's consumer credentials: `consumers/<username>/credentials/<id>`.
            Some(Kind::Consumers) if id.contains('/') => {
                let end = rest.rfind('/').unwrap_or(rest.len());
                KeyClass::Other(&rest[..end])
            }
            Some(kind) => KeyClass::Item(kind, id),
            None => KeyClass::Other(segment),
        }
    }

    /// Connects (lazily: the first request shows whether etcd answers) and, with a user,
    /// authenticates.
    ///
    /// Errors: [`EtcdError`].
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some((u, p)) = &self.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        match &self.tls {
            Some(t) => {
                opts = opts.with_openssl_tls(openssl_config(t));
                self.limit(Client::connect(self.endpoints.clone(), Some(opts)))
                    .await
            }
            // Plain endpoints through tonic's own channel, which sets TCP_NODELAY: the
            // OpenSSL-capable connector leaves it off, and each request on a kept connection
            // then waits ~40 ms for etcd's delayed ACK.
            None => {
                let connect =
                    Client::connect_with_balanced_channel(&self.endpoints, Some(opts), Plain);
                self.limit(connect).await
            }
        }
    }

    /// Reads every object under the prefix at one revision.
    ///
    /// Errors: [`EtcdError`].
    pub async fn read_all(&self, client: &mut Client) -> Result<Snapshot, EtcdError> {
        let opts = GetOptions::new().with_prefix();
        let prefix = format!("{}/", self.prefix);
        let resp = self.limit(client.get(prefix, Some(opts))).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match self.classify(&key) {
                KeyClass::Item(kind, id) => snap.items.push(Stored {
                    kind,
                    id: id.to_string(),
                    value: parse_value(kv.value()),
                    mod_revision: kv.mod_revision(),
                }),
                KeyClass::Other(seg) => {
                    if !snap.ignored.iter().any(|s| s == seg) {
                        snap.ignored.push(seg.to_string());
                    }
                }
            }
        }
        Ok(snap)
    }

    /// One connection and range read on a private runtime (for start-up and the command
    /// line, before any other runtime exists).
    ///
    /// Errors: [`EtcdError`].
    pub fn read_once(&self) -> Result<Snapshot, EtcdError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Settings(format!("cannot start a runtime: {e}")))?;
        rt.block_on(async {
            let mut client = self.connect().await?;
            self.read_all(&mut client).await
        })
    }

    /// Watches the whole prefix from `revision` (one watch for every kind).
    ///
    /// Errors: [`EtcdError`].
    pub async fn watch(
        &self,
        client: &mut Client,
        revision: i64,
    ) -> Result<WatchStream, EtcdError> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        let prefix = format!("{}/", self.prefix);
        self.limit(client.watch(prefix, Some(opts))).await
    }
}

/// What etcd-client's `BalancedChannelBuilder` hands back to add endpoints.
type EndpointUpdater = tokio::sync::mpsc::Sender<
    tonic::transport::channel::Change<http::Uri, tonic::transport::Endpoint>,
>;

/// A balanced channel of plain (http://) endpoints, with TCP_NODELAY.
struct Plain;

impl etcd_client::BalancedChannelBuilder for Plain {
    type Error = tonic::transport::Error;

    fn balanced_channel(
        self,
        buffer_size: usize,
    ) -> Result<(etcd_client::Channel, EndpointUpdater), Self::Error> {
        let (channel, tx) = tonic::transport::Channel::balance_channel(buffer_size);
        Ok((etcd_client::Channel::Tonic(channel), tx))
    }
}

/// What a key names.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyClass<'a> {
    /// An object Pylon serves.
    Item(Kind, &'a str),
    /// Something else under the prefix (the segment after it, e.g. `stream_routes`; for a
    /// consumer credential `consumers/<username>/credentials`), or outside.
    Other(&'a str),
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its kind.
    pub kind: Kind,
    /// Its id (the key's last segment).
    pub id: String,
    /// The JSON value ([`parse_value`]).
    pub value: Value,
    /// etcd's `mod_revision` of the key.
    pub mod_revision: i64,
}

/// The prefix at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// etcd's revision of the read.
    pub revision: i64,
    /// Every object, in key order.
    pub items: Vec<Stored>,
    /// Segments under the prefix that Pylon does not serve.
    pub ignored: Vec<String>,
}

/// A stored value as JSON. Bytes that are not JSON become a string saying so, which the item
/// validation reports (`not a JSON object: invalid JSON: …`).
pub fn parse_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| Value::String(format!("invalid JSON: {e}")))
}

/// The message of an etcd client error, without the transport's nesting noise.
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{}: {}", s.code(), s.message()),
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        }
    }
}

fn openssl_config(t: &TlsMaterial) -> OpenSslClientConfig {
    let t = t.clone();
    OpenSslClientConfig::default().manually(move |b| {
        if let Some(ca) = &t.ca {
            for cert in openssl::x509::X509::stack_from_pem(ca)? {
                b.cert_store_mut().add_cert(cert)?;
            }
        } else {
            b.set_default_verify_paths()?;
        }
        if let Some((cert, key)) = &t.cert_key {
            let mut chain = openssl::x509::X509::stack_from_pem(cert)?.into_iter();
            if let Some(leaf) = chain.next() {
                b.set_certificate(&leaf)?;
            }
            for extra in chain {
                b.add_extra_chain_cert(extra)?;
            }
            let pkey = openssl::pkey::PKey::private_key_from_pem(key)?;
            b.set_private_key(&pkey)?;
        }
        if !t.verify {
            b.set_verify(SslVerifyMode::NONE);
        } else if let Some(name) = t.sni.clone() {
            // The endpoint's host is what the connector checks; accept a certificate for the
            // configured name instead (an IP endpoint with a certificate for a DNS name).
            b.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
                if ok {
                    return true;
                }
                // X509_V_ERR_HOSTNAME_MISMATCH (62), X509_V_ERR_IP_ADDRESS_MISMATCH (64).
                let mismatch = matches!(ctx.error().as_raw(), 62 | 64);
                let leaf_matches = ctx
                    .current_cert()
                    .is_some_and(|c| tls::cert_matches_name(c, &name));
                mismatch && ctx.error_depth() == 0 && leaf_matches
            });
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new(&model::Etcd::default(), Path::new(".")).unwrap()
    }

    #[test]
    fn keys_follow_apisix() {
        let s = settings();
        assert_eq!(s.key(Kind::Routes, "1"), "/apisix/routes/1");
        assert_eq!(
            s.classify("/apisix/routes/1"),
            KeyClass::Item(Kind::Routes, "1")
        );
        assert_eq!(
            s.classify("/apisix/ca_certificates/ca"),
            KeyClass::Item(Kind::CaCertificates, "ca")
        );
        assert_eq!(s.classify("/apisix/routes"), KeyClass::Other("routes"));
        assert_eq!(
            s.classify("/apisix/consumers/jack"),
            KeyClass::Item(Kind::Consumers, "jack")
        );
        assert_eq!(
            s.classify("/apisix/consumers/jack/credentials/c1"),
            KeyClass::Other("consumers/jack/credentials")
        );
        assert_eq!(
            s.classify("/apisix/plugin_configs/1"),
            KeyClass::Item(Kind::PluginConfigs, "1")
        );
        assert_eq!(
            s.classify("/apisix/global_rules/g"),
            KeyClass::Item(Kind::GlobalRules, "g")
        );
        assert_eq!(
            s.classify("/apisix/consumer_groups/g"),
            KeyClass::Other("consumer_groups")
        );
        assert_eq!(s.classify("/other/routes/1"), KeyClass::Other(""));
    }

    #[test]
    fn static_checks_name_fields() {
        let mut e = model::Etcd::default();
        assert!(check_static(&e).is_empty());
        e.endpoints = vec!["127.0.0.1:2379".into(), "https://a:1".into()];
        e.prefix = "apisix".into();
        e.timeout = 0.0;
        e.user = Some("root".into());
        let paths: Vec<String> = check_static(&e).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "gateway.etcd.endpoints[0]",
                "gateway.etcd.endpoints",
                "gateway.etcd.prefix",
                "gateway.etcd.timeout",
                "gateway.etcd.password"
            ]
        );
    }

    #[test]
    fn values_that_are_not_json_say_so() {
        assert_eq!(parse_value(br#"{"uri":"/a"}"#)["uri"], "/a");
        assert!(parse_value(b"{nope")
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"));
    }
}
