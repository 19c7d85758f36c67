//! PEM loading for certificates, private keys and CA bundles.
//!
//! Every PEM-valued config field (`ssls[].cert`, `upstreams[].tls.ca_certs[]`, …) holds either
//! PEM text (it starts with `-----BEGIN`) or a path to a PEM file, relative to the folder of
//! the file that names it. Everything here runs at config load; the request path only ever
//! sees the parsed [`X509`] and [`PKey`] values.

pub mod accept;
pub mod client_cert;
pub mod inspect;
pub mod store;

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use thiserror::Error;

/// Why a PEM field could not be turned into certificates or a key. The messages are meant to
/// be shown after the field's path (`ssls[0].key: …`).
#[derive(Debug, Error)]
pub enum PemError {
    /// The field named a file that could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text holds no certificate, or one that does not parse.
    #[error("not a valid PEM certificate{}: {detail}", from_file(.path))]
    BadCert {
        /// The file, when the field was a path.
        path: Option<PathBuf>,
        /// OpenSSL's reason.
        detail: String,
    },
    /// The key is encrypted and no passphrase was configured.
    #[error("private key{} is encrypted: a passphrase is required (set {passphrase_field})", from_file(.path))]
    PassphraseRequired {
        /// The file, when the field was a path.
        path: Option<PathBuf>,
        /// The config field that would hold the passphrase.
        passphrase_field: &'static str,
    },
    /// The key does not parse (or the passphrase is wrong).
    #[error("not a valid PEM private key{}: {detail}", from_file(.path))]
    BadKey {
        /// The file, when the field was a path.
        path: Option<PathBuf>,
        /// OpenSSL's reason.
        detail: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match certificate (subject {subject})")]
    KeyMismatch {
        /// The leaf certificate's subject, e.g. `CN=client`.
        subject: String,
    },
}

fn from_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

/// PEM text together with the file it came from (`None` when the field held PEM inline).
#[derive(Debug, Clone)]
pub struct PemSource {
    /// The PEM bytes.
    pub text: Vec<u8>,
    /// The file the text was read from, if any.
    pub path: Option<PathBuf>,
}

/// Reads a PEM-valued field: inline PEM text is taken as is, anything else is a path resolved
/// against `base` (the folder of the config file that holds the field).
///
/// Errors: [`PemError::Read`] when the file cannot be read.
pub fn read_pem_field(value: &str, base: &Path) -> Result<PemSource, PemError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(PemSource {
            text: value.as_bytes().to_vec(),
            path: None,
        });
    }
    let path = base.join(value.trim());
    match read_regular_file(&path) {
        Ok(text) => Ok(PemSource {
            text,
            path: Some(path),
        }),
        Err(source) => Err(PemError::Read { path, source }),
    }
}

/// Largest certificate or key file read, in bytes (a chain of a few certificates is ~10 KiB).
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Reads a certificate or key file: only a regular file of at most [`MAX_PEM_FILE`] bytes.
/// The open never blocks (a FIFO or a device named by mistake, or by a hostile admin API
/// client, is refused instead of hanging or exhausting memory).
///
/// Errors: the file cannot be opened or read, is not a regular file, or is too large.
pub fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_large = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_PEM_FILE} bytes: not a certificate or key file"),
        )
    };
    if meta.len() > MAX_PEM_FILE {
        return Err(too_large());
    }
    let mut text = Vec::new();
    file.take(MAX_PEM_FILE + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_PEM_FILE {
        return Err(too_large());
    }
    Ok(text)
}

/// Whether PEM text holds a private key block.
pub fn holds_private_key(text: &[u8]) -> bool {
    text.windows(11).any(|w| w == b"PRIVATE KEY")
}

/// Parses every certificate in `pem` (leaf first, then the chain, as in the file).
///
/// Errors: [`PemError::BadCert`] when there is none or one does not parse.
pub fn parse_certs(pem: &PemSource) -> Result<Vec<X509>, PemError> {
    let bad = |detail: String| PemError::BadCert {
        path: pem.path.clone(),
        detail,
    };
    let certs = X509::stack_from_pem(&pem.text).map_err(|e| bad(openssl_reason(&e)))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Parses a private key, decrypting it with `passphrase` when given.
///
/// `passphrase_field` names the config field to mention when an encrypted key has no
/// passphrase (e.g. `key_passphrase`). Errors: [`PemError::PassphraseRequired`],
/// [`PemError::BadKey`].
pub fn parse_key(
    pem: &PemSource,
    passphrase: Option<&str>,
    passphrase_field: &'static str,
) -> Result<PKey<Private>, PemError> {
    let text = String::from_utf8_lossy(&pem.text);
    let encrypted = text.contains("ENCRYPTED");
    let result = match passphrase {
        Some(pass) => PKey::private_key_from_pem_passphrase(&pem.text, pass.as_bytes()),
        None if encrypted => {
            return Err(PemError::PassphraseRequired {
                path: pem.path.clone(),
                passphrase_field,
            })
        }
        // An empty callback makes OpenSSL fail instead of prompting on the terminal.
        None => PKey::private_key_from_pem_callback(&pem.text, |_| Ok(0)),
    };
    result.map_err(|e| PemError::BadKey {
        path: pem.path.clone(),
        detail: openssl_reason(&e),
    })
}

/// Checks that `key` is the private key of `leaf`.
///
/// Errors: [`PemError::KeyMismatch`] naming the certificate's subject.
pub fn check_key_matches(leaf: &X509, key: &PKey<Private>) -> Result<(), PemError> {
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(key))
        .unwrap_or(false);
    if matches {
        Ok(())
    } else {
        Err(PemError::KeyMismatch {
            subject: subject_string(leaf),
        })
    }
}

/// Whether `cert`'s subjectAltName covers `name`: a DNS entry equal to it (case-insensitive)
/// or a one-label wildcard (`*.example.com`) over it, or an IP entry equal to it (RFC 6125).
pub fn cert_matches_name(cert: &openssl::x509::X509Ref, name: &str) -> bool {
    let Some(sans) = cert.subject_alt_names() else {
        return false;
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let ip: Option<std::net::IpAddr> = name.parse().ok();
    sans.iter().any(|san| {
        if let Some(dns) = san.dnsname() {
            let dns = dns.to_ascii_lowercase();
            match dns.strip_prefix("*.") {
                Some(suffix) => name
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => dns == name,
            }
        } else if let (Some(bytes), Some(ip)) = (san.ipaddress(), ip) {
            match ip {
                std::net::IpAddr::V4(v4) => bytes == v4.octets(),
                std::net::IpAddr::V6(v6) => bytes == v6.octets(),
            }
        } else {
            false
        }
    })
}

/// The certificate's subject as `CN=client, O=…` (one-line, RFC 4514-like order).
pub fn subject_string(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Some(not_after)` as text when `cert` has expired (its notAfter is in the past).
pub fn expired(cert: &X509) -> Option<String> {
    let now = Asn1Time::days_from_now(0).ok()?;
    (cert.not_after() < now).then(|| cert.not_after().to_string())
}

/// How close a certificate is to its notAfter date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// Valid for longer than the warning window.
    Fine,
    /// Expires within the window: the date (OpenSSL's text form) and whole days left.
    Soon {
        /// notAfter, e.g. `Jan  1 00:00:00 2030 GMT`.
        date: String,
        /// Whole days until then.
        days: i32,
    },
    /// Already expired on that date.
    Expired(String),
}

/// Compares `cert`'s notAfter with now and `window_days` from now.
pub fn expiry(cert: &X509, window_days: u32) -> Expiry {
    let Ok(now) = Asn1Time::days_from_now(0) else {
        return Expiry::Fine;
    };
    let not_after = cert.not_after();
    if not_after < now {
        return Expiry::Expired(not_after.to_string());
    }
    match now.diff(not_after) {
        Ok(d) if d.days < i32::try_from(window_days).unwrap_or(i32::MAX) => Expiry::Soon {
            date: not_after.to_string(),
            days: d.days,
        },
        _ => Expiry::Fine,
    }
}

/// SHA-256 of the certificate's DER encoding: a stable identity for connection-pool keys.
pub fn fingerprint(cert: &X509) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(digest) = cert.digest(openssl::hash::MessageDigest::sha256()) {
        out.copy_from_slice(&digest);
    }
    out
}

fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    let reasons: Vec<String> = e
        .errors()
        .iter()
        .filter_map(|e| e.reason().map(str::to_string))
        .collect();
    if reasons.is_empty() {
        "unparsable PEM".into()
    } else {
        reasons.join("; ")
    }
}
