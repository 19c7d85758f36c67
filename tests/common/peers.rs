//! Real upstream servers for `pylon probe` tests: nginx (the founding guide's upstream) and
//! HAProxy (whose `verify required` answers a refused client certificate with a TLS alert,
//! after the handshake with TLS 1.3), each a child process on a free loopback port with its
//! files in a temporary folder, killed on drop; and client certificates with chosen dates.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder};
use pylon::certs::Issued;

use super::{free_port, Pki};

/// A server process on `port`, killed on drop.
pub struct Peer {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Peer {
    /// Runs `cmd` (its output to `log`) and waits (bounded) until `port` accepts.
    fn spawn(mut cmd: Command, port: u16, dir: &Path, log: PathBuf) -> Peer {
        let out = std::fs::File::create(dir.join("stdout.log")).unwrap();
        let child = cmd
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut peer = Peer {
            port,
            dir: dir.to_path_buf(),
            child,
            log,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..400 {
            if let Some(status) = peer.child.try_wait().unwrap() {
                panic!("{cmd:?} exited with {status}:\n{}", peer.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return peer;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{cmd:?} did not listen on {port}:\n{}", peer.log());
    }

    /// The server's own log and output so far.
    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default());
        text
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx with one `server` block: `listen` is `127.0.0.1:<free port>` followed by
/// `listen_flags` (`ssl`, or empty for plain HTTP), then `body`. Single process
/// (`master_process off`), everything inside `dir`.
pub fn nginx(dir: &Path, listen_flags: &str, body: &str) -> Peer {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        r#"worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port} {listen_flags};
        server_name test.com;
{body}
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let bin = std::env::var("NGINX_BIN").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx".into()
        } else {
            "nginx".into()
        }
    });
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"));
    Peer::spawn(cmd, port, dir, dir.join("error.log"))
}

/// The founding guide's nginx server block (without `listen`): `pki`'s server certificate,
/// client certificates verified against `pki`'s CA, with `extra` lines.
pub fn mtls_block(pki: &Pki, extra: &str) -> String {
    format!(
        "        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_client_certificate {};\n        ssl_verify_client on;\n{extra}",
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("ca.crt"),
    )
}

/// HAProxy terminating TLS 1.3 only with `pki`'s server certificate and `verify required`
/// against `pki`'s CA: a missing or refused client certificate gets a TLS alert after the
/// handshake. Answers 200 `ok` otherwise.
pub fn haproxy_tls13(dir: &Path, pki: &Pki) -> Peer {
    std::fs::create_dir_all(dir).unwrap();
    let pem = dir.join("server.pem");
    let mut both = pki.pem("server.crt");
    both.push_str(&pki.pem("server.key"));
    std::fs::write(&pem, both).unwrap();
    let port = free_port();
    let conf = format!(
        "global\n  log stderr format raw local0 info\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\nfrontend fe\n  bind 127.0.0.1:{port} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3\n  http-request return status 200 content-type text/plain string ok\n",
        pem.display(),
        pki.path("ca.crt"),
    );
    std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    Peer::spawn(cmd, port, dir, dir.join("stdout.log"))
}

/// A client certificate `CN=<cn>` signed by `issuer`, valid from `not_before` to
/// `not_after` (Unix seconds), written to `<dir>/<cn>.crt` and `.key`; returns their paths.
pub fn client_cert_dated(
    dir: &Path,
    issuer: &Issued,
    cn: &str,
    not_before: i64,
    not_after: i64,
) -> (String, String) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_issuer_name(issuer.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    b.sign(&issuer.key, MessageDigest::sha256()).unwrap();
    let issued = Issued {
        cert: b.build(),
        key,
    };
    let crt = dir.join(format!("{cn}.crt"));
    let keyf = dir.join(format!("{cn}.key"));
    std::fs::write(&crt, issued.cert.to_pem().unwrap()).unwrap();
    std::fs::write(&keyf, issued.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (crt.display().to_string(), keyf.display().to_string())
}
