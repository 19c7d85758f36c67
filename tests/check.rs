//! `pylon check`: every problem is reported with its path, and the exit code says so.

mod common;

use common::*;

fn setup() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    (dir, pki)
}

#[test]
fn founding_config_is_ok_with_counts() {
    let (dir, pki) = setup();
    let out = check(dir.path(), &founding_resources(8443, FOUNDING_TLS, &pki));
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("2 routes, 1 services, 1 upstreams, 1 ssls, 1 CA certificates"),
        "{}",
        out.stdout
    );
}

#[test]
fn empty_and_end_only_files_are_valid() {
    let (dir, _pki) = setup();
    for text in ["", "#END\n", "# nothing yet\n#END"] {
        let out = check(dir.path(), text);
        assert!(out.ok, "{text:?}: {}", out.stderr);
        assert!(out.stdout.contains("0 routes"), "{}", out.stdout);
    }
}

#[test]
fn key_mismatch_is_reported() {
    let (dir, pki) = setup();
    let res = founding_resources(8443, FOUNDING_TLS, &pki)
        .replace(&pki.path("client.key"), &pki.path("server.key"));
    let out = check(dir.path(), &res);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("ssls[0].key: private key does not match certificate (subject CN=client)"),
        "{}",
        out.stderr
    );
}

#[test]
fn encrypted_key_needs_a_passphrase() {
    let (dir, pki) = setup();
    let key = openssl::pkey::PKey::private_key_from_pem(pki.pem("client.key").as_bytes()).unwrap();
    let encrypted = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"s3cret")
        .unwrap();
    let enc_path = dir.path().join("enc.key");
    std::fs::write(&enc_path, encrypted).unwrap();
    let res = founding_resources(8443, FOUNDING_TLS, &pki)
        .replace(&pki.path("client.key"), &enc_path.display().to_string());
    let out = check(dir.path(), &res);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("ssls[0].key: private key")
            && out
                .stderr
                .contains("is encrypted: a passphrase is required (set key_passphrase)"),
        "{}",
        out.stderr
    );
    // With the passphrase it loads; with a wrong one it says the key is not valid.
    let with_pass = res.replace(
        "    type: client\n",
        "    type: client\n    key_passphrase: s3cret\n",
    );
    let out = check(dir.path(), &with_pass);
    assert!(out.ok, "{}", out.stderr);
    let wrong = with_pass.replace("s3cret", "nope");
    let out = check(dir.path(), &wrong);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("ssls[0].key: not a valid PEM private key"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_field_names_its_path() {
    let (dir, pki) = setup();
    let res = founding_resources(8443, FOUNDING_TLS, &pki).replace(
        "      sni: test.com",
        "      sni: test.com\n      verfy: true",
    );
    let out = check(dir.path(), &res);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("upstreams[0].tls.verfy: unknown field `verfy`"),
        "{}",
        out.stderr
    );
}

#[test]
fn dangling_ids_and_wrong_ssl_type_are_reported_together() {
    let (dir, pki) = setup();
    let res = founding_resources(8443, FOUNDING_TLS, &pki)
        .replace("client_cert_id: upstream-ssl", "client_cert_id: x")
        .replace("ca_certificate_id: upstream-ca", "ca_certificate_id: y")
        .replace(
            "service_id: mtls-nginx\n  - id: all",
            "service_id: nope\n  - id: all",
        );
    let out = check(dir.path(), &res);
    assert!(!out.ok);
    for expected in [
        r#"upstreams[0].tls.client_cert_id: no ssl with id "x""#,
        r#"upstreams[0].tls.ca_certificate_id: no ca_certificate with id "y""#,
        r#"routes[0].service_id: no service with id "nope""#,
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected}:\n{}",
            out.stderr
        );
    }
    let server_type =
        founding_resources(8443, FOUNDING_TLS, &pki).replace("type: client", "type: server");
    let out = check(dir.path(), &server_type);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains(r#"upstreams[0].tls.client_cert_id: ssl "upstream-ssl" has type server"#),
        "{}",
        out.stderr
    );
}

#[test]
fn unparsable_pem_and_duplicate_ids_are_reported() {
    let (dir, pki) = setup();
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let res = founding_resources(8443, FOUNDING_TLS, &pki)
        .replace(&pki.path("ca.crt"), &garbage.display().to_string())
        .replace("  - id: all", "  - id: hello");
    let out = check(dir.path(), &res);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("ca_certificates[0].cert: not a valid PEM certificate"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(r#"routes[1].id: duplicate id "hello" (also routes[0])"#),
        "{}",
        out.stderr
    );
}

#[test]
fn expired_certificate_is_reported() {
    let (dir, pki) = setup();
    // An already expired client certificate, signed by the test CA.
    let mut b = openssl::x509::X509Builder::new().unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(pki.pem("client.key").as_bytes()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "old").unwrap();
    let name = name.build();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(pki.ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::from_unix(1_000_000_000).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::from_unix(1_100_000_000).unwrap())
        .unwrap();
    b.sign(&pki.ca.key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let old = dir.path().join("old.crt");
    std::fs::write(&old, b.build().to_pem().unwrap()).unwrap();
    let res = founding_resources(8443, FOUNDING_TLS, &pki)
        .replace(&pki.path("client.crt"), &old.display().to_string());
    let out = check(dir.path(), &res);
    assert!(
        out.stderr
            .contains("ssls[0].cert: certificate CN=old expired on"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_config_stops_run_with_the_same_message() {
    let (dir, pki) = setup();
    let res = founding_resources(8443, FOUNDING_TLS, &pki)
        .replace("client_cert_id: upstream-ssl", "client_cert_id: x");
    let conf = write_config(dir.path(), free_port(), &res);
    let out = std::process::Command::new(pylon_bin())
        .args(["run", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"upstreams[0].tls.client_cert_id: no ssl with id "x""#),
        "{stderr}"
    );
}

#[test]
fn certs_init_refuses_to_overwrite_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = |force: bool| {
        let mut cmd = std::process::Command::new(pylon_bin());
        cmd.args(["certs", "init", "--server-name", "test.com", "--dir"])
            .arg(dir.path());
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    assert!(run(false).status.success());
    for f in pylon::certs::FILES {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, if f.ends_with(".key") { 0o600 } else { 0o644 }, "{f}");
    }
    let before = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let again = run(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists (use --force"));
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), before);
    assert!(run(true).status.success());
    assert_ne!(std::fs::read(dir.path().join("ca.crt")).unwrap(), before);
    // The server certificate verifies against the CA with the SAN, like the guide's openssl steps.
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.path().join("ca.crt"))
        .args(["-verify_hostname", "test.com"])
        .arg(dir.path().join("server.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.path().join("ca.crt"))
        .arg(dir.path().join("client.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
