//! The HTTPS listener reads certificates from the table current at each handshake, so
//! swapping the table (as a reload does) changes what new connections get. In-process: the
//! listener's OpenSSL acceptor is taken out of its Pingora settings and driven directly.

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use common::tls::*;
use common::Pki;
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use pylon::config::{compile, parse_yaml, Resources};
use pylon::table::Table;
use pylon::tls::accept::tls_settings;

fn table(base: &Path, resources: &str) -> Table {
    let res: Resources = parse_yaml(&base.join("resources.yaml"), resources).unwrap();
    compile(&res, base)
        .map_err(|p| format!("{p:?}"))
        .unwrap()
        .table
}

/// The CN of the certificate `acceptor` serves for `sni`, or the client's error.
fn served_cn(acceptor: &SslAcceptor, sni: &str) -> Result<String, String> {
    let (server, client) = UnixStream::pair().unwrap();
    let acceptor = acceptor.clone();
    let server = std::thread::spawn(move || {
        let _ = acceptor.accept(server);
    });
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let result = b
        .build()
        .connect(sni, client)
        .map_err(|e| e.to_string())
        .map(|s| {
            let cert = s.ssl().peer_certificate().unwrap();
            let cn = cert.subject_name().entries().next().unwrap();
            cn.data().to_string().unwrap()
        });
    server.join().unwrap();
    result
}

#[test]
fn a_swapped_table_serves_its_certificates_to_new_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let old = server_cert(&pki.ca, "old", &["api.example.com"], KeyKind::Rsa, 365);
    let old = write_pair(&pki.dir, "old", &old, &[]);
    let new = server_cert(&pki.ca, "new", &["api.example.com"], KeyKind::Ecdsa, 365);
    let new = write_pair(&pki.dir, "new", &new, &[]);
    let res = |(crt, key): &(String, String), sni: &str| {
        format!("ssls:\n  - {{ id: s, sni: {sni}, cert: {crt}, key: {key} }}\n")
    };

    let current = Arc::new(ArcSwap::from_pointee(table(
        dir.path(),
        &res(&old, "api.example.com"),
    )));
    let mut settings = tls_settings(current.clone(), None).unwrap();
    let placeholder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    let acceptor = std::mem::replace(&mut *settings, placeholder).build();

    assert_eq!(served_cn(&acceptor, "api.example.com").unwrap(), "old");
    current.store(Arc::new(table(dir.path(), &res(&new, "api.example.com"))));
    assert_eq!(served_cn(&acceptor, "api.example.com").unwrap(), "new");
    // A name the new table no longer serves is refused.
    current.store(Arc::new(table(dir.path(), &res(&new, "other.example.com"))));
    assert!(served_cn(&acceptor, "api.example.com").is_err());
    assert_eq!(served_cn(&acceptor, "other.example.com").unwrap(), "new");
}
