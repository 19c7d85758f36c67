//! `pylon certs init`: the founding guide's three openssl steps in one call.
//!
//! Makes a CA (`CN=ROOTCA`), a server certificate for a name (with the name as a
//! subjectAltName, as `openssl x509 -extfile server.ext` does in the guide) and a client
//! certificate (`extendedKeyUsage = clientAuth`), all RSA 2048 / SHA-256 and signed by the CA.
//! Files use the guide's names: `ca.crt`, `ca.key`, `server.crt`, `server.key`,
//! `client.crt`, `client.key`. Keys are written with mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use thiserror::Error;

/// The files `init` writes, in the order it writes them.
pub const FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
];

/// What to make. `days` is the validity of every certificate, in days.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Folder to write into (created when missing).
    pub dir: PathBuf,
    /// The server certificate's CN and subjectAltName (a DNS name or an IP address).
    pub server_name: String,
    /// The client certificate's CN (the guide uses `client`).
    pub client_name: String,
    /// Validity in days (the guide uses 36500).
    pub days: u32,
    /// Overwrite existing files.
    pub force: bool,
}

/// Errors of `certs init`.
#[derive(Debug, Error)]
pub enum CertsError {
    /// A target file exists and `force` is off.
    #[error("{0} already exists (use --force to overwrite)")]
    Exists(PathBuf),
    /// Creating the folder or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// OpenSSL refused to build a key or certificate.
    #[error("openssl: {0}")]
    Openssl(#[from] ErrorStack),
    /// `days` is 0 or more than [`MAX_DAYS`].
    #[error("--days must be between 1 and {MAX_DAYS}")]
    BadDays,
    /// The server name is neither a DNS name nor an IP address.
    #[error("--server-name {0:?} is not a DNS name (letters, digits, '-', '.', optionally a leading '*.') or an IP address")]
    BadName(String),
    /// The client name is empty.
    #[error("--client-name must not be empty")]
    EmptyClientName,
}

/// A certificate with its private key.
pub struct Issued {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

/// Makes the CA, server and client certificates and writes the six files into `opts.dir`.
/// Returns the paths written.
///
/// Errors: [`CertsError::Exists`] when a file is present and `force` is off (nothing is
/// written then), [`CertsError::Write`], [`CertsError::Openssl`].
pub fn init(opts: &InitOptions) -> Result<Vec<PathBuf>, CertsError> {
    if opts.days == 0 || opts.days > MAX_DAYS {
        return Err(CertsError::BadDays);
    }
    if !valid_server_name(&opts.server_name) {
        return Err(CertsError::BadName(opts.server_name.clone()));
    }
    if opts.client_name.trim().is_empty() {
        return Err(CertsError::EmptyClientName);
    }
    let paths: Vec<PathBuf> = FILES.iter().map(|f| opts.dir.join(f)).collect();
    if !opts.force {
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            return Err(CertsError::Exists(p.clone()));
        }
    }
    // Everything is made before anything is written: a failure leaves no half-made folder.
    let ca = make_ca("ROOTCA", opts.days)?;
    let server = issue(&ca, &opts.server_name, Role::Server, opts.days)?;
    let client = issue(&ca, &opts.client_name, Role::Client, opts.days)?;
    std::fs::create_dir_all(&opts.dir).map_err(|source| CertsError::Write {
        path: opts.dir.clone(),
        source,
    })?;
    for (i, issued) in [&ca, &server, &client].into_iter().enumerate() {
        write_file(&paths[2 * i], &issued.cert.to_pem()?, 0o644)?;
        write_file(
            &paths[2 * i + 1],
            &issued.key.private_key_to_pem_pkcs8()?,
            0o600,
        )?;
    }
    Ok(paths)
}

/// Longest validity accepted, in days (about 270 years; X.509 dates end in 9999).
pub const MAX_DAYS: u32 = 100_000;

/// A DNS name (RFC 1123 labels: letters, digits and inner '-'; optionally a leading `*.`) or
/// an IP address.
fn valid_server_name(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// TLS server: subjectAltName = the name, extendedKeyUsage = serverAuth.
    Server,
    /// TLS client: extendedKeyUsage = clientAuth.
    Client,
}

/// Makes a self-signed CA certificate with subject `CN=<cn>`.
pub fn make_ca(cn: &str, days: u32) -> Result<Issued, CertsError> {
    let key = new_key()?;
    let mut b = builder(cn, &key, days)?;
    let issuer = name(cn)?;
    b.set_issuer_name(&issuer)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// Issues a certificate for `cn` signed by `ca`. A server certificate carries `cn` as its
/// subjectAltName (DNS name, or IP address when `cn` parses as one).
pub fn issue(ca: &Issued, cn: &str, role: Role, days: u32) -> Result<Issued, CertsError> {
    let key = new_key()?;
    let mut b = builder(cn, &key, days)?;
    b.set_issuer_name(ca.cert.subject_name())?;
    b.append_extension(BasicConstraints::new().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .digital_signature()
            .non_repudiation()
            .key_encipherment()
            .data_encipherment()
            .build()?,
    )?;
    let ctx = b.x509v3_context(Some(&ca.cert), None);
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .issuer(false)
        .build(&ctx)?;
    let san = match role {
        Role::Server => {
            let mut san = SubjectAlternativeName::new();
            if cn.parse::<IpAddr>().is_ok() {
                san.ip(cn);
            } else {
                san.dns(cn);
            }
            Some(san.build(&ctx)?)
        }
        Role::Client => None,
    };
    b.append_extension(aki)?;
    if let Some(san) = san {
        b.append_extension(san)?;
    }
    let eku = match role {
        Role::Server => ExtendedKeyUsage::new().server_auth().build()?,
        Role::Client => ExtendedKeyUsage::new().client_auth().build()?,
    };
    b.append_extension(eku)?;
    b.sign(&ca.key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    PKey::from_rsa(Rsa::generate(2048)?)
}

fn name(cn: &str) -> Result<openssl::x509::X509Name, ErrorStack> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

fn builder(cn: &str, key: &PKey<Private>, days: u32) -> Result<X509Builder, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    let subject = name(cn)?;
    b.set_subject_name(&subject)?;
    b.set_pubkey(key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    b.set_not_before(&not_before)?;
    let not_after = Asn1Time::days_from_now(days)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let wrap = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    // An existing file keeps its old mode on open: set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(wrap)?;
    f.write_all(bytes).map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_and_days_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let opts = |name: &str, days: u32| InitOptions {
            dir: target.clone(),
            server_name: name.into(),
            client_name: "client".into(),
            days,
            force: false,
        };
        for name in ["", "bad name!", "a..b", "-"] {
            assert!(
                matches!(init(&opts(name, 10)), Err(CertsError::BadName(_))),
                "{name:?}"
            );
        }
        assert!(matches!(
            init(&opts("test.com", 0)),
            Err(CertsError::BadDays)
        ));
        assert!(matches!(
            init(&opts("test.com", 99_999_999)),
            Err(CertsError::BadDays)
        ));
        assert!(!target.exists());
        assert!(valid_server_name("*.example.com"));
        assert!(valid_server_name("10.0.0.1"));
        assert!(valid_server_name("::1"));
    }
}
