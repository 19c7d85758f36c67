//! The downstream certificate store: every enabled `ssls` entry of `type: server`, indexed by
//! the names it serves, built once per config load and swapped with the rest of the
//! [`Table`](crate::table::Table).
//!
//! Lookup order (APISIX's SNI router, with one-level wildcards as in RFC 6125 §6.4.3):
//! an exact name first, then `*.<parent>` for the name's parent domain. `*.example.com`
//! serves `a.example.com`, never `a.b.example.com` nor `example.com`. Names are compared in
//! lower case without a trailing dot.
//!
//! Everything here is parsed already: the handshake path only hands the stored [`X509`] and
//! [`PKey`](openssl::pkey::PKey) values to OpenSSL.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use openssl::ssl::SslVersion;
use openssl::x509::store::X509Store;
use openssl::x509::{X509Name, X509};
use pingora_core::utils::tls::CertKey;
use regex::RegexSet;

/// A compiled server `ssls` entry.
pub struct ServerSsl {
    /// The entry's `id`.
    pub id: String,
    /// Certificate chains with their keys, at most one per key type (e.g. RSA and ECDSA):
    /// OpenSSL serves the one the client's signature algorithms and ciphers allow.
    pub certs: Vec<Arc<CertKey>>,
    /// Lowest TLS version allowed (`ssl_protocols`).
    pub min_version: SslVersion,
    /// Highest TLS version allowed (`ssl_protocols`).
    pub max_version: SslVersion,
    /// Downstream mutual TLS (`client`), when set.
    pub client: Option<ClientAuth>,
    /// TLS session-resumption context (at most 32 bytes): a digest of the client-verification
    /// settings, so a session verified against one CA set is never resumed under another.
    /// Equal contexts mean equal verification, which the request check relies on.
    pub session_context: [u8; 32],
}

/// `ssls[].client`: how clients are verified (APISIX `client.ca`, `client.depth`,
/// `client.skip_mtls_uri_regex`; nginx `ssl_client_certificate`, `ssl_verify_depth`).
pub struct ClientAuth {
    /// Trusted CAs for client certificates.
    pub store: X509Store,
    /// Subjects of the trusted CAs, sent in the CertificateRequest so clients can pick a
    /// certificate.
    pub ca_names: Vec<X509Name>,
    /// Maximum verification depth (OpenSSL `SSL_set_verify_depth`; 1 = signed directly by a
    /// trusted CA).
    pub depth: u32,
    /// Paths (no query string) that need no client certificate; unanchored, as APISIX's
    /// `ngx.re.find`.
    pub skip_uri: Option<RegexSet>,
}

impl ClientAuth {
    /// Whether `path` is exempt from the client-certificate requirement.
    pub fn skips(&self, path: &str) -> bool {
        self.skip_uri.as_ref().is_some_and(|set| set.is_match(path))
    }
}

impl fmt::Debug for ServerSsl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSsl")
            .field("id", &self.id)
            .field("certs", &self.certs.len())
            .field("min_version", &self.min_version)
            .field("max_version", &self.max_version)
            .field("client_auth", &self.client.is_some())
            .finish()
    }
}

/// Whether `cert`'s DNS subjectAltNames cover `pattern`: an exact name by the same name or a
/// one-level wildcard of its parent, a wildcard pattern by the same wildcard. Used for load
/// warnings only (clients check names; the gateway serves what it is told).
pub fn cert_covers(cert: &X509, pattern: &SniPattern) -> bool {
    let Some(names) = cert.subject_alt_names() else {
        return false;
    };
    names
        .iter()
        .filter_map(|n| n.dnsname())
        .filter_map(|n| SniPattern::parse(n).ok())
        .any(|san| match (&san, pattern) {
            (SniPattern::Exact(a), SniPattern::Exact(b)) => a == b,
            (SniPattern::Wildcard(_), SniPattern::Exact(b)) => san.matches(b),
            (SniPattern::Wildcard(a), SniPattern::Wildcard(b)) => a == b,
            (SniPattern::Exact(_), SniPattern::Wildcard(_)) => false,
        })
}

/// One entry of `snis`: an exact name or a one-level wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SniPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as its parent `example.com`.
    Wildcard(String),
}

impl SniPattern {
    /// Parses a configured name: lower-cased, without a trailing dot; a wildcard is `*.` and
    /// a parent of at least one label.
    ///
    /// Errors: a message for an empty name, a `*` anywhere but as the whole first label, an
    /// empty label, a character outside letters, digits, `-` and `_`, or a name over 253
    /// bytes.
    pub fn parse(name: &str) -> Result<SniPattern, String> {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if rest.is_empty() {
            return Err(format!("{name:?} is not a host name"));
        }
        if rest.len() > 253 {
            return Err(format!("{name:?} is longer than 253 bytes"));
        }
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(format!("{name:?} has an empty label"));
            }
            if label.contains('*') {
                return Err(format!(
                    "{name:?}: a wildcard must be the whole first label, as in \"*.example.com\""
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{name:?} has a character other than letters, digits, '-' and '_' \
                     (write internationalised names in their xn-- form)"
                ));
            }
        }
        Ok(if wildcard {
            SniPattern::Wildcard(rest.to_string())
        } else {
            SniPattern::Exact(rest.to_string())
        })
    }

    /// Whether a (normalised) host name is served by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SniPattern::Exact(n) => n == name,
            SniPattern::Wildcard(parent) => name
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
        }
    }
}

impl fmt::Display for SniPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniPattern::Exact(n) => f.write_str(n),
            SniPattern::Wildcard(p) => write!(f, "*.{p}"),
        }
    }
}

/// Lower-cases `raw` into `buf` and drops one trailing dot, without allocating. `None` when
/// the name is empty, longer than 255 bytes or not ASCII (SNI host names are ASCII, RFC
/// 6066 §3).
pub fn normalize<'a>(raw: &[u8], buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > buf.len() || !raw.is_ascii() {
        return None;
    }
    let out = &mut buf[..raw.len()];
    for (o, b) in out.iter_mut().zip(raw) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// The server certificates of one configuration version, by name.
#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<ServerSsl>>,
    wildcard: HashMap<String, Arc<ServerSsl>>,
    entries: usize,
    client_auth: bool,
}

impl CertStore {
    /// The entry serving `name` (already [`normalize`]d): exact first, then the one-level
    /// wildcard of its parent.
    pub fn lookup(&self, name: &str) -> Option<&Arc<ServerSsl>> {
        if let Some(found) = self.exact.get(name) {
            return Some(found);
        }
        let (first, parent) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(parent)
    }

    /// [`lookup`](Self::lookup) for a name in any case, with an optional trailing dot.
    pub fn lookup_raw(&self, name: &[u8]) -> Option<&Arc<ServerSsl>> {
        let mut buf = [0u8; 256];
        self.lookup(normalize(name, &mut buf)?)
    }

    /// Number of enabled server entries.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no server entry is enabled (every HTTPS handshake fails).
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether any entry verifies client certificates.
    pub fn any_client_auth(&self) -> bool {
        self.client_auth
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("entries", &self.entries)
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds a [`CertStore`], refusing a name that two entries claim.
#[derive(Default)]
pub struct CertStoreBuilder {
    store: CertStore,
    /// Who claimed each pattern first (a config path such as `ssls[2]`).
    owners: HashMap<SniPattern, String>,
}

impl CertStoreBuilder {
    /// Adds `ssl` under `names`. `owner` names the entry in messages (e.g. `ssls[2]`).
    /// Returns, for each name already claimed by another entry, its index in `names` and the
    /// other owner; those names stay with their first owner. With `ssl` `None` (an entry
    /// that failed to compile) the names are only claimed, so later duplicates are still
    /// reported.
    pub fn add(
        &mut self,
        owner: &str,
        names: &[SniPattern],
        ssl: Option<Arc<ServerSsl>>,
    ) -> Vec<(usize, String)> {
        let mut conflicts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if let Some(other) = self.owners.get(name) {
                if other != owner {
                    conflicts.push((i, other.clone()));
                }
                continue;
            }
            self.owners.insert(name.clone(), owner.to_string());
            let Some(ssl) = &ssl else { continue };
            let (map, key) = match name {
                SniPattern::Exact(n) => (&mut self.store.exact, n),
                SniPattern::Wildcard(p) => (&mut self.store.wildcard, p),
            };
            map.insert(key.clone(), ssl.clone());
        }
        if let Some(ssl) = ssl {
            self.store.entries += 1;
            self.store.client_auth |= ssl.client.is_some();
        }
        conflicts
    }

    /// The finished store.
    pub fn build(self) -> CertStore {
        self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl(id: &str) -> Arc<ServerSsl> {
        Arc::new(ServerSsl {
            id: id.into(),
            certs: vec![],
            min_version: SslVersion::TLS1_2,
            max_version: SslVersion::TLS1_3,
            client: None,
            session_context: [0; 32],
        })
    }

    fn pats(names: &[&str]) -> Vec<SniPattern> {
        names
            .iter()
            .map(|n| SniPattern::parse(n).unwrap())
            .collect()
    }

    #[test]
    fn exact_beats_wildcard_and_wildcards_are_one_level() {
        let mut b = CertStoreBuilder::default();
        assert!(b
            .add("ssls[0]", &pats(&["*.example.com"]), Some(ssl("wild")))
            .is_empty());
        let names = pats(&["api.example.com", "Example.COM."]);
        assert!(b.add("ssls[1]", &names, Some(ssl("exact"))).is_empty());
        let store = b.build();
        let id = |n: &str| store.lookup_raw(n.as_bytes()).map(|s| s.id.as_str());
        assert_eq!(id("api.example.com"), Some("exact"));
        assert_eq!(id("API.Example.com."), Some("exact"));
        assert_eq!(id("example.com"), Some("exact"));
        assert_eq!(id("a.example.com"), Some("wild"));
        assert_eq!(id("a.b.example.com"), None);
        assert_eq!(id(".example.com"), None);
        assert_eq!(id("other.org"), None);
        assert_eq!(store.len(), 2);
        assert!(!store.any_client_auth());
    }

    #[test]
    fn a_name_claimed_twice_is_a_conflict() {
        let mut b = CertStoreBuilder::default();
        b.add("ssls[0]", &pats(&["a.test", "*.test"]), Some(ssl("one")));
        let conflicts = b.add("ssls[1]", &pats(&["b.test", "*.TEST"]), Some(ssl("two")));
        assert_eq!(conflicts, vec![(1, "ssls[0]".to_string())]);
        // A broken entry claims its names without serving them.
        assert!(b.add("ssls[2]", &pats(&["c.other"]), None).is_empty());
        let conflicts = b.add("ssls[3]", &pats(&["c.other"]), Some(ssl("four")));
        assert_eq!(conflicts, vec![(0, "ssls[2]".to_string())]);
        let store = b.build();
        assert_eq!(store.lookup("x.test").unwrap().id, "one");
        assert_eq!(store.lookup("b.test").unwrap().id, "two");
        assert!(store.lookup("c.other").is_none());
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn patterns_are_checked() {
        assert_eq!(
            SniPattern::parse("*.Example.com.").unwrap(),
            SniPattern::Wildcard("example.com".into())
        );
        for bad in [
            "", "*", "*.", "a..b", "a.*.com", "*a.com", "a b.com", "é.com",
        ] {
            assert!(SniPattern::parse(bad).is_err(), "{bad:?}");
        }
        let w = SniPattern::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert_eq!(w.to_string(), "*.example.com");
    }

    #[test]
    fn normalize_rejects_what_cannot_be_a_name() {
        let mut buf = [0u8; 256];
        assert_eq!(normalize(b"A.B.", &mut buf), Some("a.b"));
        assert_eq!(normalize(b"", &mut buf), None);
        assert_eq!(normalize(b".", &mut buf), None);
        assert_eq!(normalize(&[b'a'; 300], &mut buf), None);
        assert_eq!(normalize("é".as_bytes(), &mut buf), None);
    }
}
