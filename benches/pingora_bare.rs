//! The floor of the load benchmark: a bare Pingora reverse proxy doing the same job as
//! Pylon's `pylon` target in `benches/load` (HTTP/1.1 in, HTTPS with a client certificate,
//! a trusted CA and SNI `test.com` out, verification on, pooled upstream connections) and
//! nothing else: no routing, no health, no logging, no metrics. Same allocator (mimalloc),
//! same server settings (one thread, per-thread runtimes, the harness's pool size), same
//! peer timeouts (connect/send/read 6 s, idle 60 s, as the harness's upstream).
//!
//! Usage (the harness runs it; built with `cargo build --release --example pingora-bare`):
//!
//! ```text
//! pingora-bare LISTEN UPSTREAM CERTS_DIR POOL_SIZE [THREADS] [WORK_STEALING]
//! pingora-bare 127.0.0.1:9080 127.0.0.1:8443 /tmp/certs 1024
//! ```
//!
//! `CERTS_DIR` holds `client.crt`, `client.key` and `ca.crt` (`pylon certs init`). Several
//! upstreams may be given as `host:port*weight,host:port*weight`: picked by smooth weighted
//! round robin, as the weighted scenario needs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openssl::pkey::PKey;
use openssl::x509::X509;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::CertKey;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One prebuilt peer per upstream node, in a weighted cycle.
struct Bare {
    cycle: Vec<HttpPeer>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.cycle.len();
        Ok(Box::new(self.cycle[i].clone()))
    }
}

fn peer(addr: SocketAddr, cert_key: &Arc<CertKey>, ca: &Arc<Box<[X509]>>) -> HttpPeer {
    let mut p = HttpPeer::new(addr, true, "test.com".to_string());
    p.client_cert_key = Some(cert_key.clone());
    p.options.ca = Some(ca.clone());
    p.options.verify_cert = true;
    p.options.verify_hostname = true;
    let six = Some(Duration::from_secs(6));
    p.options.connection_timeout = six;
    p.options.total_connection_timeout = six;
    p.options.write_timeout = six;
    p.options.read_timeout = six;
    p.options.idle_timeout = Some(Duration::from_secs(60));
    p
}

fn read(path: String) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: {} LISTEN UPSTREAM[*W][,…] CERTS_DIR POOL_SIZE [THREADS] [WORK_STEALING]",
            args[0]
        );
        std::process::exit(2);
    }
    let (listen, upstreams, certs) = (&args[1], &args[2], &args[3]);
    let pool: usize = args[4].parse().expect("POOL_SIZE: a number");
    let threads: usize = args
        .get(5)
        .map_or(1, |t| t.parse().expect("THREADS: a number"));
    let stealing = args.get(6).is_some_and(|w| w == "true");

    let cert = X509::from_pem(&read(format!("{certs}/client.crt"))).expect("client.crt");
    let key = PKey::private_key_from_pem(&read(format!("{certs}/client.key"))).expect("client.key");
    let cert_key = Arc::new(CertKey::new(vec![cert], key));
    let ca: Arc<Box<[X509]>> = Arc::new(
        X509::stack_from_pem(&read(format!("{certs}/ca.crt")))
            .expect("ca.crt")
            .into_boxed_slice(),
    );
    // Smooth weighted round robin (nginx's), unrolled into one cycle of peers.
    let nodes: Vec<(SocketAddr, i64)> = upstreams
        .split(',')
        .map(|n| {
            let (addr, w) = n.split_once('*').unwrap_or((n, "1"));
            (
                addr.parse().expect("UPSTREAM: host:port"),
                w.parse().expect("weight"),
            )
        })
        .collect();
    let total: i64 = nodes.iter().map(|n| n.1).sum();
    let mut current = vec![0i64; nodes.len()];
    let mut cycle = Vec::new();
    for _ in 0..total {
        for (c, n) in current.iter_mut().zip(&nodes) {
            *c += n.1;
        }
        let best = (0..nodes.len()).max_by_key(|&i| current[i]).unwrap_or(0);
        current[best] -= total;
        cycle.push(peer(nodes[best].0, &cert_key, &ca));
    }

    let conf = ServerConf {
        threads,
        work_stealing: stealing,
        upstream_keepalive_pool_size: pool,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let bare = Bare {
        cycle,
        next: AtomicUsize::new(0),
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, bare);
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
