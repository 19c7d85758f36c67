//! etcd as the configuration source, end to end, on a real etcd and real `pylon run`
//! processes: how fast one change reaches every gateway (propagation), how fast a gateway
//! starts serving 10,000 routes (initial load), and what a burst of 1,000 changes does to the
//! latency of traffic and to the state the gateways end on (burst).
//!
//! Run: `cargo bench --bench etcd` (needs `etcd`, `etcdctl` and `wrk` on PATH). Everything runs
//! on free loopback ports in a temporary folder and is stopped at the end; a markdown table of
//! the figures is printed, and the exit status is non-zero when a gateway never converges.
//! Results and their reading: benches/RESULTS.md.
//!
//! Sizes can be changed for a quick try or a diagnosis: `ETCD_BENCH_ROUTES` (10000),
//! `ETCD_BENCH_CHANGES` (100), `ETCD_BENCH_BURST` (1000), `ETCD_BENCH_ROUNDS` (3),
//! `ETCD_BENCH_STARTS` (5), `ETCD_BENCH_GATEWAYS` (3), `ETCD_BENCH_B2B` (50 back-to-back
//! changes), `ETCD_BENCH_GAP_MS` (500, pause before each isolated change);
//! `ETCD_BENCH_SNAPSHOT=off` sets `gateway.etcd.snapshot: ~` (no local snapshot written after
//! each change).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::etcd::{etcd_gateway_lines, upstream_json, Etcd};
use common::free_port;
use common::ops::write_static;
use common::origins::HttpOrigin;
use etcd_client::{Client, Txn, TxnOp};
use serde_json::{json, Value};

/// How long one gateway may take to show one change before it counts as never converging.
const CONVERGE_LIMIT: Duration = Duration::from_secs(10);
/// Pause between polls of a gateway.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// Pause before each isolated change (every gateway idle again: the previous change's
/// rebuild and snapshot done).
const ISOLATED_GAP: Duration = Duration::from_millis(500);
/// Pause before each back-to-back change.
const B2B_GAP: Duration = Duration::from_millis(20);
/// Writes per key in a burst (the key's last write must be what serves).
const WRITES_PER_KEY: usize = 4;
/// wrk's window, before and during the burst.
const WRK_SECONDS: u64 = 3;
/// Time between the start of wrk and the first write of the burst.
const BURST_AFTER: Duration = Duration::from_millis(250);
/// Puts per etcd transaction when loading the routes (etcd's default limit is 128).
const LOAD_TXN_OPS: usize = 100;

fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Sizes {
    /// Gateways following etcd in the propagation and burst measurements.
    gateways: usize,
    /// `gateway.etcd` lines added to each gateway's static file.
    etcd_extra: &'static str,
    routes: usize,
    changes: usize,
    /// Back-to-back changes.
    b2b: usize,
    /// Pause before each isolated change.
    gap: Duration,
    burst: usize,
    rounds: usize,
    starts: usize,
}

fn main() -> ExitCode {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing heavy then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("etcd bench: run it with `cargo bench --bench etcd`");
        return ExitCode::SUCCESS;
    }
    let gateways = env_size("ETCD_BENCH_GATEWAYS", 3).max(1);
    let snapshot_off = std::env::var("ETCD_BENCH_SNAPSHOT").is_ok_and(|v| v == "off");
    let sizes = Sizes {
        gateways,
        etcd_extra: if snapshot_off {
            "    snapshot: ~\n"
        } else {
            ""
        },
        routes: env_size("ETCD_BENCH_ROUTES", 10_000).max(3),
        changes: env_size("ETCD_BENCH_CHANGES", 100).max(1),
        b2b: env_size("ETCD_BENCH_B2B", 50),
        gap: Duration::from_millis(
            env_size("ETCD_BENCH_GAP_MS", ISOLATED_GAP.as_millis() as usize) as u64,
        ),
        burst: env_size("ETCD_BENCH_BURST", 1_000).max(WRITES_PER_KEY),
        rounds: env_size("ETCD_BENCH_ROUNDS", 3).max(1),
        starts: env_size("ETCD_BENCH_STARTS", 5).max(gateways),
    };
    match run(&sizes) {
        Ok(report) => {
            println!("{}", report.table);
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                for f in &report.failures {
                    eprintln!("FAILED: {f}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("etcd bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Report {
    table: String,
    failures: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Routes and etcd writes
// ---------------------------------------------------------------------------------------

/// Route `i` of the loaded set: a third exact, a third prefix, a third host-qualified (as the
/// `compile` bench), all to upstream `u1`.
fn route_value(i: usize) -> Value {
    let name = format!("route-{i}");
    match i % 3 {
        0 => json!({"uri": format!("/svc{i}/items"), "methods": ["GET", "POST"],
                    "name": name, "upstream_id": "u1"}),
        1 => json!({"uri": format!("/svc{i}/api/*"), "methods": ["GET", "POST"],
                    "name": name, "upstream_id": "u1"}),
        _ => json!({"uri": format!("/svc{i}/host"), "hosts": [format!("api{i}.example.com")],
                    "name": name, "upstream_id": "u1"}),
    }
}

fn route_key(id: &str) -> String {
    format!("/apisix/routes/{id}")
}

/// The path of an exact route of the loaded set (`i` rounded down to a multiple of 3).
fn exact_path(i: usize) -> String {
    format!("/svc{}/items", i - i % 3)
}

/// Writes upstream `u1` (the origin) and `routes` routes, in transactions of
/// [`LOAD_TXN_OPS`] puts.
async fn load_routes(client: &mut Client, routes: usize, origin_port: u16) -> anyhow::Result<()> {
    client
        .put(
            "/apisix/upstreams/u1",
            upstream_json(origin_port).to_string(),
            None,
        )
        .await?;
    let ids: Vec<usize> = (0..routes).collect();
    for chunk in ids.chunks(LOAD_TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|&i| {
                TxnOp::put(
                    route_key(&format!("r{i}")),
                    route_value(i).to_string(),
                    None,
                )
            })
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

/// Round trips of 20 sequential puts with nothing else going on (ms).
fn idle_puts(
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    tag: &str,
) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        rt.block_on(client.put(format!("/bench/idle-{tag}-{i}"), "x", None))?;
        v.push(ms(t.elapsed()));
    }
    Ok(v)
}

/// Sets TCP_NODELAY on every TCP connection of this process to 127.0.0.1:`port`; returns how
/// many. (etcd-client 0.21 with `tls-openssl` dials through hyper-util's `HttpConnector`
/// without `set_nodelay`, and offers no option for it.)
fn set_nodelay_to(port: u16) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: getpeername writes at most `len` bytes into `addr`; setsockopt reads an int.
        unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len);
            if rc != 0
                || i32::from(addr.sin_family) != libc::AF_INET
                || u16::from_be(addr.sin_port) != port
            {
                continue;
            }
            let one: libc::c_int = 1;
            let rc = libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if rc == 0 {
                n += 1;
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------------
// Gateways and probes
// ---------------------------------------------------------------------------------------

/// A `pylon run` on etcd, killed on drop.
struct Gw {
    name: String,
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Gw {
    /// Writes the static file (etcd provider, one proxy thread, admin API on) and starts
    /// `pylon run`; returns at once with the instant just before the spawn.
    fn spawn(
        dir: &Path,
        name: &str,
        endpoint: &str,
        etcd_extra: &str,
    ) -> anyhow::Result<(Gw, Instant)> {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub)?;
        let port = free_port();
        let admin_port = free_port();
        let conf = write_static(
            &sub,
            port,
            &etcd_gateway_lines(endpoint, admin_port, etcd_extra),
            "",
        );
        let log = sub.join("pylon.log");
        let stderr = std::fs::File::create(&log)?;
        let mut cmd = Command::new(common::pylon_bin());
        cmd.args(["run", "-c"])
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr);
        let started = Instant::now();
        let child = cmd.spawn().context("pylon run")?;
        Ok((
            Gw {
                name: name.to_string(),
                port,
                log,
                child,
            },
            started,
        ))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a new connection (`Connection: close`) to 127.0.0.1:`port`: the status, 0
/// when there is no answer.
fn probe(port: u16, path: &str) -> u16 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return 0;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    // Read the whole answer (to the close), so the gateway never writes into a reset socket.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    // "HTTP/1.1 200 OK"
    buf.get(9..12)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Polls `path` on `port` every [`POLL_EVERY`] until it answers `want`: the time since `t0`,
/// or `None` after `limit`.
fn poll_until(port: u16, path: &str, want: u16, t0: Instant, limit: Duration) -> Option<Duration> {
    loop {
        if probe(port, path) == want {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Polls every gateway at once (one thread each) for `path` answering `want`: each one's time
/// since `t0` (`None`: never within `limit`).
fn poll_all(
    gws: &[Gw],
    path: &str,
    want: u16,
    t0: Instant,
    limit: Duration,
) -> Vec<Option<Duration>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = gws
            .iter()
            .map(|g| s.spawn(move || poll_until(g.port, path, want, t0, limit)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    })
}

/// Batch apply times logged by a gateway after byte `from` of its log: `in N ms (etcd watch:`
/// (from the batch's first event to the swap, the quiet wait included).
fn batch_times(log: &str, from: usize) -> Vec<f64> {
    let re = regex::Regex::new(r"applied from etcd .* in (\d+) ms \(etcd watch: (\d+) changes\)")
        .expect("valid regex");
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter_map(|l| re.captures(l))
        .filter_map(|c| c[1].parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Statistics and wrk
// ---------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `123 ms`, or `never`.
fn opt_ms(v: Option<f64>) -> String {
    v.map_or("never".to_string(), |v| format!("{v:.0} ms"))
}

/// Nearest-rank percentile of `v` (sorted inside); 0 when empty.
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    pct(v, 50.0)
}

/// What one wrk run reported.
#[derive(Debug, Clone, Default)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    non2xx: u64,
    errors: u64,
}

/// `1.23ms`, `623.00us`, `1.01s` in milliseconds.
fn wrk_time(t: &str) -> Option<f64> {
    let t = t.trim();
    if let Some(v) = t.strip_suffix("us") {
        return v.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    if let Some(v) = t.strip_suffix("ms") {
        return v.parse().ok();
    }
    if let Some(v) = t.strip_suffix('m') {
        return v.parse::<f64>().ok().map(|v| v * 60_000.0);
    }
    t.strip_suffix('s')?.parse::<f64>().ok().map(|v| v * 1000.0)
}

fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk::default();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Latency", _avg, _sd, max, ..] => w.max_ms = wrk_time(max).unwrap_or(0.0),
            ["50%", t] => w.p50_ms = wrk_time(t).unwrap_or(0.0),
            ["99%", t] => w.p99_ms = wrk_time(t).unwrap_or(0.0),
            ["Requests/sec:", r] => w.rps = r.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors = rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if w.p99_ms == 0.0 || w.rps == 0.0 {
        bail!("unexpected wrk output:\n{out}");
    }
    Ok(w)
}

fn wrk_command(port: u16, path: &str) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c16", &format!("-d{WRK_SECONDS}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn wrk_wait(child: Child) -> anyhow::Result<Wrk> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("wrk: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

struct Propagation {
    /// Pause between one change served everywhere and the next write.
    gap: Duration,
    /// Per change: the slowest gateway's time from just before the put to its first 200.
    max_over_gws: Vec<f64>,
    /// Per change and gateway.
    per_gw: Vec<Vec<f64>>,
    /// `max_over_gws` of the new routes and of the changed ones.
    new: Vec<f64>,
    changed: Vec<f64>,
    /// Per change: put sent to put acknowledged (etcd's commit, fsync included).
    ack: Vec<f64>,
    /// Logged batch apply times (every gateway).
    batches: Vec<f64>,
    not_converged: usize,
}

/// Writes changes `which` one at a time, each `gap` after the previous one was served by
/// every gateway, and times each from just before its put to its first 200 on each gateway.
/// Even changes add a route (`/new/<c>`), odd ones move an existing exact route
/// (`/changed/<c>`).
fn propagation(
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    gws: &[Gw],
    routes: usize,
    which: std::ops::Range<usize>,
    gap: Duration,
    failures: &mut Vec<String>,
) -> anyhow::Result<Propagation> {
    let log_from: Vec<usize> = gws.iter().map(|g| g.log().len()).collect();
    let mut prop = Propagation {
        gap,
        max_over_gws: Vec::new(),
        per_gw: Vec::new(),
        new: Vec::new(),
        changed: Vec::new(),
        ack: Vec::new(),
        batches: Vec::new(),
        not_converged: 0,
    };
    for c in which {
        std::thread::sleep(gap);
        let (key, value, path) = if c % 2 == 0 {
            let path = format!("/new/{c}");
            let v = json!({"uri": path, "name": format!("new-{c}"), "upstream_id": "u1"});
            (route_key(&format!("p{c}")), v, path)
        } else {
            // An existing exact route moved to another path.
            let k = (c * 3) % routes;
            let k = k - k % 3;
            let path = format!("/changed/{c}");
            let mut v = route_value(k);
            v["uri"] = json!(path);
            (route_key(&format!("r{k}")), v, path)
        };
        let t0 = Instant::now();
        let (times, ack) = std::thread::scope(|s| {
            let path = path.as_str();
            let pollers: Vec<_> = gws
                .iter()
                .map(|g| s.spawn(move || poll_until(g.port, path, 200, t0, CONVERGE_LIMIT)))
                .collect();
            let put = rt.block_on(client.put(key.as_str(), value.to_string(), None));
            let ack = t0.elapsed();
            let times: Vec<Option<Duration>> = pollers
                .into_iter()
                .map(|h| h.join().unwrap_or(None))
                .collect();
            (times, put.map(|_| ack))
        });
        prop.ack.push(ms(ack?));
        if times.iter().any(Option::is_none) {
            prop.not_converged += 1;
            failures.push(format!(
                "propagation: change {c} ({key} -> {path}) not served by every gateway within \
                 {CONVERGE_LIMIT:?}: {times:?}"
            ));
            continue;
        }
        let per: Vec<f64> = times.iter().flatten().map(|d| ms(*d)).collect();
        let slowest = per.iter().copied().fold(0.0, f64::max);
        prop.max_over_gws.push(slowest);
        if c % 2 == 0 {
            prop.new.push(slowest);
        } else {
            prop.changed.push(slowest);
        }
        prop.per_gw.push(per);
    }
    for (g, from) in gws.iter().zip(&log_from) {
        prop.batches.extend(batch_times(&g.log(), *from));
    }
    eprintln!(
        "propagation ({gap:?} apart): p50 {:.1} ms, p99 {:.1} ms over {} changes",
        median(&prop.max_over_gws),
        pct(&prop.max_over_gws, 99.0),
        prop.max_over_gws.len()
    );
    Ok(prop)
}

struct Start {
    listening: Option<f64>,
    first_200: Option<f64>,
}

struct BurstRound {
    before: Wrk,
    during: Wrk,
    /// Time to write every change (acknowledged).
    write_ms: f64,
    /// From the first write to the last write (highest revision) served by every gateway.
    converge_ms: Option<f64>,
    /// Keys whose last write was not what a gateway served, over every gateway.
    wrong_final: usize,
    /// Logged batches per gateway during the burst.
    batches: Vec<usize>,
    /// Longest logged batch apply time.
    batch_max_ms: f64,
}

fn run(sizes: &Sizes) -> anyhow::Result<Report> {
    for tool in ["etcd", "etcdctl", "wrk"] {
        Command::new(tool)
            .arg("--version")
            .output()
            .with_context(|| format!("{tool} is not on PATH"))?;
    }
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut client = rt.block_on(Client::connect([etcd.endpoint()], None))?;
    let mut failures = Vec::new();
    // The bench's writer: etcd-client as Pylon builds it (feature `tls-openssl`) dials without
    // TCP_NODELAY, which costs every unary request a delayed ACK (~40 ms); measured as is,
    // then fixed on the socket so that the figures below are etcd's and Pylon's, as with a Go
    // writer (etcdctl, APISIX) that sets it.
    let idle_as_dialed = idle_puts(&rt, &mut client, "dialed")?;
    let fixed = set_nodelay_to(etcd.port);
    if fixed == 0 {
        bail!(
            "no connection to etcd's port {} found to set TCP_NODELAY on",
            etcd.port
        );
    }
    let idle_nodelay = idle_puts(&rt, &mut client, "nodelay")?;
    eprintln!(
        "etcd put round trip: p50 {:.1} ms as etcd-client dials, {:.1} ms with TCP_NODELAY",
        median(&idle_as_dialed),
        median(&idle_nodelay)
    );
    let t = Instant::now();
    rt.block_on(load_routes(&mut client, sizes.routes, origin.port))?;
    eprintln!(
        "loaded {} routes into etcd in {:.1} s",
        sizes.routes,
        t.elapsed().as_secs_f64()
    );

    // 1. Initial load: gateways started one at a time; the first `gateways` keep running.
    let probe_path = exact_path(sizes.routes - 1);
    let mut gws = Vec::new();
    let mut starts = Vec::new();
    for i in 0..sizes.starts {
        let (mut gw, t0) = Gw::spawn(
            dir.path(),
            &format!("gw{i}"),
            &etcd.endpoint(),
            sizes.etcd_extra,
        )?;
        let mut listening = None;
        let mut first_200 = None;
        while t0.elapsed() < Duration::from_secs(30) {
            let s = probe(gw.port, &probe_path);
            if s != 0 && listening.is_none() {
                listening = Some(ms(t0.elapsed()));
            }
            if s == 200 {
                first_200 = Some(ms(t0.elapsed()));
                break;
            }
            if gw.exited() {
                break;
            }
            std::thread::sleep(POLL_EVERY);
        }
        if first_200.is_none() {
            failures.push(format!(
                "initial load: {} never answered 200 on {probe_path}:\n{}",
                gw.name,
                gw.log()
            ));
        }
        eprintln!(
            "start {i}: listening after {}, first 200 after {}",
            opt_ms(listening),
            opt_ms(first_200)
        );
        starts.push(Start {
            listening,
            first_200,
        });
        if i < sizes.gateways {
            gws.push(gw);
        }
    }
    if gws.iter_mut().any(Gw::exited) {
        bail!("a gateway exited: {:?}", failures);
    }

    // 2. Propagation: one change at a time, every gateway polled from just before the put;
    // isolated changes (the goal), then back-to-back ones.
    let prop = propagation(
        &rt,
        &mut client,
        &gws,
        sizes.routes,
        0..sizes.changes,
        sizes.gap,
        &mut failures,
    )?;
    let b2b = propagation(
        &rt,
        &mut client,
        &gws,
        sizes.routes,
        sizes.changes..sizes.changes + sizes.b2b,
        B2B_GAP,
        &mut failures,
    )?;

    // 3. Burst under load on gateway 0's existing route.
    let wrk_path = exact_path(0);
    if probe(gws[0].port, &wrk_path) != 200 {
        bail!("{wrk_path} does not answer 200 on gw0");
    }
    let keys = sizes.burst / WRITES_PER_KEY;
    let mut bursts = Vec::new();
    for round in 0..sizes.rounds {
        let before = wrk_wait(wrk_command(gws[0].port, &wrk_path).spawn()?)?;
        let log_from: Vec<usize> = gws.iter().map(|g| g.log().len()).collect();
        let wrk = wrk_command(gws[0].port, &wrk_path).spawn()?;
        std::thread::sleep(BURST_AFTER);
        let tb = Instant::now();
        let last_version = round * WRITES_PER_KEY + WRITES_PER_KEY - 1;
        let (last_key, written) = rt.block_on(async {
            let mut last = (0usize, 0i64);
            for w in 0..WRITES_PER_KEY {
                let version = round * WRITES_PER_KEY + w;
                let mut set = tokio::task::JoinSet::new();
                for k in 0..keys {
                    let mut cl = client.clone();
                    let v = json!({"uri": format!("/burst/{k}/v{version}"),
                                   "name": format!("burst-{k}"), "upstream_id": "u1"});
                    set.spawn(async move {
                        cl.put(route_key(&format!("b{k}")), v.to_string(), None)
                            .await
                            .map(|r| (k, r.header().map_or(0, |h| h.revision())))
                    });
                }
                while let Some(r) = set.join_next().await {
                    let (k, rev) = r??;
                    if rev > last.1 {
                        last = (k, rev);
                    }
                }
            }
            anyhow::Ok((last.0, tb.elapsed()))
        })?;
        let last_path = format!("/burst/{last_key}/v{last_version}");
        let converged = poll_all(&gws, &last_path, 200, tb, CONVERGE_LIMIT);
        let converge_ms = converged
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().map(ms).fold(0.0, f64::max));
        let during = wrk_wait(wrk)?;
        // Every key's last write serves on every gateway; its previous one does not.
        let mut wrong_final = 0;
        for g in &gws {
            for k in 0..keys {
                let new = format!("/burst/{k}/v{last_version}");
                let old = format!("/burst/{k}/v{}", last_version - 1);
                let ok = probe(g.port, &new) == 200 && probe(g.port, &old) == 404;
                if !ok {
                    wrong_final += 1;
                }
            }
        }
        if converge_ms.is_none() || wrong_final > 0 {
            failures.push(format!(
                "burst round {round}: convergence {converged:?}, {wrong_final} keys not on \
                 their last write"
            ));
        }
        let mut batches = Vec::new();
        let mut batch_max_ms: f64 = 0.0;
        for (g, from) in gws.iter().zip(&log_from) {
            let b = batch_times(&g.log(), *from);
            batch_max_ms = b.iter().copied().fold(batch_max_ms, f64::max);
            batches.push(b.len());
        }
        eprintln!(
            "burst {round}: p99 {:.2} -> {:.2} ms, writes {:.0} ms, converged after {}",
            before.p99_ms,
            during.p99_ms,
            ms(written),
            opt_ms(converge_ms)
        );
        bursts.push(BurstRound {
            before,
            during,
            write_ms: ms(written),
            converge_ms,
            wrong_final,
            batches,
            batch_max_ms,
        });
    }
    for g in gws.iter_mut() {
        if g.exited() {
            failures.push(format!("{} exited:\n{}", g.name, g.log()));
        }
    }
    drop(gws);
    drop(etcd);
    let writer = [idle_as_dialed, idle_nodelay];
    let table = render(sizes, &writer, &starts, [&prop, &b2b], &bursts);
    Ok(Report { table, failures })
}

// ---------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

fn list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(
    sizes: &Sizes,
    writer: &[Vec<f64>; 2],
    starts: &[Start],
    props: [&Propagation; 2],
    bursts: &[BurstRound],
) -> String {
    let mut out = String::new();
    let [prop, b2b] = props;
    let p50 = median(&prop.max_over_gws);
    let p99 = pct(&prop.max_over_gws, 99.0);
    let first: Vec<f64> = starts.iter().filter_map(|s| s.first_200).collect();
    let listen: Vec<f64> = starts.iter().filter_map(|s| s.listening).collect();
    let worst_start = first.iter().copied().fold(0.0, f64::max);
    let load_ok = first.len() == starts.len() && worst_start < 1000.0;
    let ratios: Vec<f64> = bursts
        .iter()
        .map(|b| b.during.p99_ms / b.before.p99_ms)
        .collect();
    let before_p99: Vec<f64> = bursts.iter().map(|b| b.before.p99_ms).collect();
    let during_p99: Vec<f64> = bursts.iter().map(|b| b.during.p99_ms).collect();
    let burst_ratio = median(&during_p99) / median(&before_p99);
    let final_ok = bursts
        .iter()
        .all(|b| b.converge_ms.is_some() && b.wrong_final == 0);
    let converge: Vec<f64> = bursts.iter().filter_map(|b| b.converge_ms).collect();

    out.push_str(&format!(
        "\n{} routes + 1 upstream in etcd; {} gateways (`threads: 1`{}); polls every \
         {POLL_EVERY:?} on a new connection; times in ms.\n\n",
        sizes.routes,
        sizes.gateways,
        if sizes.etcd_extra.is_empty() {
            ", etcd snapshot on (default)"
        } else {
            ", `etcd.snapshot: ~`"
        }
    ));
    out.push_str("| measurement | goal | result | met? |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| propagation, etcd put → 200 on every gateway ({} changes {:?} apart, max over {} \
         gateways) | p99 < 100 ms | p50 {p50:.1}, p99 {p99:.1}, max {:.1}{} | {} |\n",
        prop.max_over_gws.len(),
        prop.gap,
        sizes.gateways,
        pct(&prop.max_over_gws, 100.0),
        if prop.not_converged > 0 {
            format!("; {} changes never converged", prop.not_converged)
        } else {
            String::new()
        },
        yes_no(prop.not_converged == 0 && p99 < 100.0)
    ));
    if !b2b.max_over_gws.is_empty() || b2b.not_converged > 0 {
        out.push_str(&format!(
            "| propagation, back-to-back ({} changes, each written {:?} after the previous one \
             was served everywhere) | (not a goal) | p50 {:.1}, p99 {:.1}, max {:.1}{} | — |\n",
            b2b.max_over_gws.len(),
            b2b.gap,
            median(&b2b.max_over_gws),
            pct(&b2b.max_over_gws, 99.0),
            pct(&b2b.max_over_gws, 100.0),
            if b2b.not_converged > 0 {
                format!("; {} changes never converged", b2b.not_converged)
            } else {
                String::new()
            },
        ));
    }
    out.push_str(&format!(
        "| initial load, `pylon run` → first 200 ({} starts) | < 1000 ms | median {:.0}, \
         worst {worst_start:.0} (listening: median {:.0}) | {} |\n",
        starts.len(),
        median(&first),
        median(&listen),
        yes_no(load_ok)
    ));
    out.push_str(&format!(
        "| burst of {} writes under wrk: p99 during / p99 before ({} rounds) | ≤ 2× | \
         {:.2} / {:.2} ms = {burst_ratio:.2}× (per round: {}) | {} |\n",
        keys_writes(sizes),
        bursts.len(),
        median(&during_p99),
        median(&before_p99),
        list(&ratios, 2),
        yes_no(burst_ratio <= 2.0)
    ));
    out.push_str(&format!(
        "| burst: every gateway ends on each key's last write | all | {} (converged in {} ms \
         after the first write) | {} |\n",
        if final_ok {
            "all keys, every gateway".to_string()
        } else {
            "mismatches, see below".to_string()
        },
        list(&converge, 0),
        yes_no(final_ok)
    ));

    out.push_str(&format!(
        "\nPropagation detail (ms; isolated = {:?} apart, back-to-back = {:?} apart):\n\n\
         | figure | isolated p50 | p99 | max | back-to-back p50 | p99 | max |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        prop.gap, b2b.gap
    ));
    let stats = |v: &[f64]| {
        format!(
            "{:.1} | {:.1} | {:.1}",
            median(v),
            pct(v, 99.0),
            pct(v, 100.0)
        )
    };
    let rows: [(&str, Figure); 6] = [
        ("slowest gateway (the figure)", |p| p.max_over_gws.clone()),
        ("fastest gateway", fastest_of),
        ("new routes only", |p| p.new.clone()),
        ("changed routes only", |p| p.changed.clone()),
        ("etcd put acknowledged", |p| p.ack.clone()),
        (
            "gateway batch apply, logged (first event → swap, 10 ms quiet wait included)",
            |p| p.batches.clone(),
        ),
    ];
    for (name, get) in rows {
        out.push_str(&format!(
            "| {name} | {} | {} |\n",
            stats(&get(prop)),
            stats(&get(b2b))
        ));
    }

    out.push_str(&format!(
        "\nThe bench's etcd writer, 20 sequential puts, nothing else running (ms): as \
         etcd-client 0.21 (`tls-openssl`) dials, p50 {:.1}, max {:.1}; with TCP_NODELAY set on \
         its socket (used for every figure above), p50 {:.1}, max {:.1}.\n",
        median(&writer[0]),
        pct(&writer[0], 100.0),
        median(&writer[1]),
        pct(&writer[1], 100.0)
    ));
    out.push_str(&format!(
        "\nInitial load per start (ms): first 200 {}; listening {}.\n",
        list(&first, 0),
        list(&listen, 0)
    ));

    out.push_str(
        "\nBurst rounds (wrk -t1 -c16 on gw0's existing route, 3 s windows):\n\n| round | \
         before: req/s, p50, p99, max | during: req/s, p50, p99, max | p99 ratio | writes \
         acknowledged | converged | batches per gateway | longest batch | non-2xx / errors \
         (before, during) | keys not on last write |\n|---|---|---|---:|---:|---:|---|---:|---|---:|\n",
    );
    for (i, b) in bursts.iter().enumerate() {
        out.push_str(&format!(
            "| {i} | {:.0}, {:.2}, {:.2}, {:.1} | {:.0}, {:.2}, {:.2}, {:.1} | {:.2}× | {:.0} ms | \
             {} | {} | {:.0} ms | {}/{}, {}/{} | {} |\n",
            b.before.rps,
            b.before.p50_ms,
            b.before.p99_ms,
            b.before.max_ms,
            b.during.rps,
            b.during.p50_ms,
            b.during.p99_ms,
            b.during.max_ms,
            b.during.p99_ms / b.before.p99_ms,
            b.write_ms,
            b.converge_ms
                .map_or("never".to_string(), |c| format!("{c:.0} ms")),
            b.batches
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            b.batch_max_ms,
            b.before.non2xx,
            b.before.errors,
            b.during.non2xx,
            b.during.errors,
            b.wrong_final
        ));
    }
    out
}

/// One figure of a propagation run.
type Figure = fn(&Propagation) -> Vec<f64>;

/// Per change, the fastest gateway's time.
fn fastest_of(p: &Propagation) -> Vec<f64> {
    p.per_gw
        .iter()
        .map(|v| v.iter().copied().fold(f64::INFINITY, f64::min))
        .collect()
}

fn keys_writes(sizes: &Sizes) -> String {
    let keys = sizes.burst / WRITES_PER_KEY;
    format!("{} ({keys} keys × {WRITES_PER_KEY})", keys * WRITES_PER_KEY)
}
