//! Static-file settings for a fleet: where the configuration comes from (`config_provider`),
//! the etcd cluster (`etcd`) and private keys at rest (`data_encryption`). Field names follow
//! Apache APISIX's `config.yaml` (`deployment.etcd`, `apisix.data_encryption`).

use serde::Deserialize;

/// `gateway.config_provider`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigProvider {
    /// The resources file named by `resources` (APISIX standalone's `apisix.yaml`).
    #[default]
    Yaml,
    /// Every object from etcd, under `gateway.etcd.prefix`, watched.
    Etcd,
}

/// `gateway.etcd`: the etcd cluster the configuration lives in (APISIX `deployment.etcd`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Etcd {
    /// Client URLs, `http://host:port` or `https://host:port`; all of one scheme.
    pub endpoints: Vec<String>,
    /// Key prefix the objects live under (`<prefix>/routes/<id>`); APISIX's default.
    pub prefix: String,
    /// Seconds allowed for each etcd request (connect, read, write). Must be > 0.
    pub timeout: f64,
    /// etcd user (with `password`) when etcd's authentication is on.
    pub user: Option<String>,
    /// The user's password. Never logged.
    pub password: Option<String>,
    /// TLS settings for `https://` endpoints.
    pub tls: EtcdTls,
    /// Local copy of the last applied configuration, written atomically (mode 0600) after
    /// every change and read at start when etcd does not answer. Relative to the static
    /// file's folder. `null` (YAML `~`) keeps no copy.
    pub snapshot: Option<String>,
}

impl Default for Etcd {
    fn default() -> Self {
        Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/apisix".into(),
            timeout: 30.0,
            user: None,
            password: None,
            tls: EtcdTls::default(),
            snapshot: Some("etcd-snapshot.json".into()),
        }
    }
}

/// `gateway.etcd.tls` (APISIX `deployment.etcd.tls`): PEM text or paths, relative to the
/// static file's folder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdTls {
    /// Client certificate (etcd's `--client-cert-auth`), with `key`.
    pub cert: Option<String>,
    /// The client certificate's private key.
    pub key: Option<String>,
    /// CA bundle the etcd server certificate must chain to; system store when unset.
    pub ca: Option<String>,
    /// Verify the etcd server's certificate (default true; APISIX's `tls.verify`).
    pub verify: bool,
    /// Name the server certificate is checked against, when it differs from the endpoint's
    /// host (an IP endpoint, for instance).
    pub sni: Option<String>,
}

impl Default for EtcdTls {
    fn default() -> Self {
        EtcdTls {
            cert: None,
            key: None,
            ca: None,
            verify: true,
            sni: None,
        }
    }
}

/// `gateway.data_encryption` (APISIX `apisix.data_encryption`): SSL private keys stored in
/// etcd are AES-128-CBC encrypted with the first keyring entry (key and IV both that
/// 16-byte string) and base64 encoded; reading tries every entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataEncryption {
    /// Encrypt keys written through the admin API and `pylon config push`.
    pub enable_encrypt_fields: bool,
    /// 16-character keys; the first encrypts, all decrypt (for rotation).
    pub keyring: Vec<String>,
}

impl Default for DataEncryption {
    fn default() -> Self {
        DataEncryption {
            enable_encrypt_fields: true,
            keyring: Vec::new(),
        }
    }
}
