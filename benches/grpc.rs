//! gRPC unary calls per second through Pylon against a direct connection, with a real gRPC
//! server (tonic's codec over hyper's HTTP/2, requiring a client certificate) and a tonic
//! client keeping `GRPC_BENCH_CONCURRENCY` calls in flight on one HTTP/2 connection.
//!
//! Run: `cargo bench --bench grpc`. Everything runs on free loopback ports in a temporary
//! folder (a PKI from `pylon certs init`'s code, the server, one `pylon run` with
//! `threads: 1` and no access log) and is stopped at the end; a markdown table is printed.
//! Scenarios, each after a 1 s warm-up:
//! - direct: the client calls the server over TLS with the client certificate;
//! - Pylon, h2 in: the client calls Pylon's HTTPS listener (ALPN h2), Pylon calls the server
//!   over `grpcs` with the client certificate (the founding scenario's upstream TLS);
//! - Pylon, h2c in: the same with the client on Pylon's plain listener (cleartext HTTP/2).
//!
//! Upstream connection reuse: the TCP connections the server accepted during each scenario
//! (direct: the client's own), against the calls it served. Results: benches/RESULTS.md.
//!
//! Knobs: `GRPC_BENCH_SECONDS` (10), `GRPC_BENCH_CONCURRENCY` (64),
//! `GRPC_BENCH_PAYLOAD` (bytes per request and reply, 128), `GRPC_BENCH_CLIENT_THREADS` (1).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::grpc::{h2c_client, tls_client, Client, EchoRequest, GrpcServer};
use common::tls::TlsGateway;
use common::Pki;
use tonic::Request;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one scenario measured.
struct Stats {
    calls: u64,
    errors: u64,
    /// Latency of every successful call, sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1].as_secs_f64() * 1000.0
    }
}

/// `concurrency` callers, each making unary calls back to back until `duration` is over.
async fn load(client: &Client, concurrency: u64, duration: Duration, payload: usize) -> Stats {
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let req = EchoRequest {
                    message: format!("caller {i}"),
                    payload: vec![7; payload],
                    ..Default::default()
                };
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    let t = Instant::now();
                    match c.unary(Request::new(req.clone())).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut stats = Stats {
        calls: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (lat, errors) = t.await.expect("caller task");
        stats.latencies.extend(lat);
        stats.errors += errors;
    }
    stats.elapsed = start.elapsed();
    stats.calls = stats.latencies.len() as u64;
    stats.latencies.sort_unstable();
    stats
}

fn main() -> ExitCode {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing heavy then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("grpc bench: run it with `cargo bench --bench grpc`");
        return ExitCode::SUCCESS;
    }
    let seconds = env_num("GRPC_BENCH_SECONDS", 10);
    let concurrency = env_num("GRPC_BENCH_CONCURRENCY", 64);
    let payload = env_num("GRPC_BENCH_PAYLOAD", 128) as usize;
    let threads = env_num("GRPC_BENCH_CLIENT_THREADS", 1) as usize;

    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let server = GrpcServer::start("bench", Some(&pki));
    let resources = format!(
        "routes:\n  - {{ id: echo, uri: /pylon.test.Echo/*, upstream_id: echo }}\nupstreams:\n  - id: echo\n    scheme: grpcs\n    nodes: {{ \"127.0.0.1:{port}\": 1 }}\n    tls:\n      client_cert_id: upstream-ssl\n      ca_certificate_id: upstream-ca\n      sni: test.com\nssls:\n  - id: upstream-ssl\n    type: client\n    cert: {cc}\n    key: {ck}\n  - id: listener\n    sni: test.com\n    cert: {sc}\n    key: {sk}\nca_certificates:\n  - id: upstream-ca\n    cert: {ca}\n",
        port = server.port,
        cc = pki.path("client.crt"),
        ck = pki.path("client.key"),
        sc = pki.path("server.crt"),
        sk = pki.path("server.key"),
        ca = pki.path("ca.crt"),
    );
    let extra = "  access_log:\n    enabled: false\n";
    let gw = TlsGateway::start(dir.path(), extra, &resources);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "\ngRPC unary calls: {concurrency} in flight on one client connection, {payload}-byte \
         payload each way, {seconds} s per scenario after a 1 s warm-up; Pylon `threads: 1`, \
         access log off; client runtime {threads} thread(s); server 1 thread; all on one \
         machine ({} CPUs).\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| scenario | calls/s | p50 ms | p99 ms | p99.9 ms | errors | TCP connections the server accepted | calls per server connection (warm-up included) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    for scenario in [
        "direct (TLS + client certificate)",
        "Pylon: h2 over TLS in, grpcs (mTLS) out",
        "Pylon: h2c in, grpcs (mTLS) out",
    ] {
        let (stats, served, opened) = runtime.block_on(async {
            let before = server.connections();
            let client = match scenario.as_bytes()[0] {
                b'd' => tls_client(server.port, &pki, true).await,
                _ if scenario.contains("h2c") => h2c_client(gw.gw.port, "test.com").await,
                _ => tls_client(gw.tls_port, &pki, false).await,
            };
            let warm = load(&client, concurrency, Duration::from_secs(1), payload).await;
            let stats = load(&client, concurrency, Duration::from_secs(seconds), payload).await;
            let served = warm.calls + stats.calls;
            (stats, served, server.connections() - before)
        });
        failed |= stats.errors > 0 || stats.calls == 0;
        println!(
            "| {scenario} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {opened} | {} |",
            stats.calls as f64 / stats.elapsed.as_secs_f64(),
            stats.percentile(0.50),
            stats.percentile(0.99),
            stats.percentile(0.999),
            stats.errors,
            match served.checked_div(opened) {
                Some(per) => per.to_string(),
                None => format!("{served} on the pooled connection(s) of the previous scenario"),
            },
        );
    }
    if failed {
        eprintln!("some calls failed; gateway log:\n{}", gw.gw.log());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
