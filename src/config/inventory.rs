//! What a compile read and found besides the table: the files it read (so a reload can
//! watch them) and when each certificate object expires (for the metrics).

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::x509::X509;

/// Which kind of resource a certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// An `ssls` entry (server or client certificate).
    Ssl,
    /// A `ca_certificates` entry.
    CaCertificate,
}

impl CertKind {
    /// The label used in metrics: `ssl` or `ca_certificate`.
    pub fn label(self) -> &'static str {
        match self {
            CertKind::Ssl => "ssl",
            CertKind::CaCertificate => "ca_certificate",
        }
    }
}

/// The earliest expiry among the certificates of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// `ssls` or `ca_certificates` entry.
    pub kind: CertKind,
    /// The object's `id`.
    pub id: String,
    /// The earliest `notAfter` of its certificates, as Unix time (seconds).
    pub not_after: i64,
}

/// Side facts of one compile.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Every file a PEM field named, resolved, in the order first read, without repeats
    /// (including files that could not be read: fixing them should trigger a reload).
    pub files: Vec<PathBuf>,
    /// One entry per `ssls` / `ca_certificates` object whose certificates loaded.
    pub cert_expiry: Vec<CertExpiry>,
}

impl Inventory {
    /// Notes that a PEM field named `path`.
    pub(super) fn file(&mut self, path: &Path) {
        if !self.files.iter().any(|p| p == path) {
            self.files.push(path.to_path_buf());
        }
    }

    /// Notes the certificates of object `id`; keeps the earliest expiry per object.
    pub(super) fn certs(&mut self, kind: CertKind, id: &str, certs: &[X509]) {
        let Some(not_after) = certs.iter().filter_map(not_after_unix).min() else {
            return;
        };
        match self
            .cert_expiry
            .iter_mut()
            .find(|e| e.kind == kind && e.id == id)
        {
            Some(e) => e.not_after = e.not_after.min(not_after),
            None => self.cert_expiry.push(CertExpiry {
                kind,
                id: id.to_string(),
                not_after,
            }),
        }
    }
}

/// A certificate's `notAfter` as Unix time (seconds); `None` if OpenSSL cannot compare it.
pub fn not_after_unix(cert: &X509) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_matches_the_certificate() {
        let ca = crate::certs::make_ca("t", 10).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let got = not_after_unix(&ca.cert).unwrap();
        assert!((got - (now + 10 * 86_400)).abs() < 300, "{got} vs {now}");
    }

    #[test]
    fn earliest_expiry_per_object_and_files_once() {
        let a = crate::certs::make_ca("a", 5).unwrap().cert;
        let b = crate::certs::make_ca("b", 50).unwrap().cert;
        let mut inv = Inventory::default();
        inv.certs(CertKind::Ssl, "x", std::slice::from_ref(&b));
        inv.certs(CertKind::Ssl, "x", std::slice::from_ref(&a));
        inv.certs(CertKind::CaCertificate, "x", &[b]);
        assert_eq!(inv.cert_expiry.len(), 2);
        assert_eq!(inv.cert_expiry[0].not_after, not_after_unix(&a).unwrap());
        inv.file(Path::new("/a"));
        inv.file(Path::new("/a"));
        assert_eq!(inv.files, vec![PathBuf::from("/a")]);
    }
}
