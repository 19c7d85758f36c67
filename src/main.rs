//! The `pylon` command: `run`, `check`, `probe`, `certs init` and `config push`/`dump`.
#![deny(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use log::{info, warn};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;

use pylon::admin::transfer;
use pylon::certs::{self, InitOptions};
use pylon::config::model::ConfigProvider;
use pylon::config::{self, Loaded};
use pylon::ops::etcd_sync::EtcdSync;
use pylon::proxy::Gateway;
use pylon::tls::accept::tls_settings;
use pylon::tls::client_cert::ClientCertHeaders;
use pylon::upstream::probe::Maintenance;

/// mimalloc instead of glibc malloc: the proxy allocates and frees small buffers on every
/// request, and glibc's allocator showed up at ~10% of CPU under load (benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option (`mi_option_t` 4 in mimalloc 3's `mimalloc.h`).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets mimalloc's `arena_eager_commit` to 0 before the first allocation, unless
/// `MIMALLOC_ARENA_EAGER_COMMIT` is set: committing arenas lazily keeps an idle gateway near
/// 19 MiB resident instead of 27 MiB (benches/RESULTS.md, "Levers"). It must run as a
/// constructor: the Rust runtime allocates before `main`, and mimalloc reserves its first
/// arena then.
extern "C" fn mimalloc_lazy_commit() {
    // SAFETY: getenv with a NUL-terminated name, before any thread exists; mi_option_set
    // only stores the value.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[used]
#[link_section = ".init_array"]
static MIMALLOC_LAZY_COMMIT: extern "C" fn() = mimalloc_lazy_commit;

/// Pylon: an API gateway on Pingora with upstream mutual TLS.
#[derive(Parser)]
#[command(name = "pylon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: load the static file and the resources it names, then proxy.
    Run {
        /// The static file.
        #[arg(short = 'c', long = "conf", default_value = "conf/pylon.yaml")]
        conf: PathBuf,
        /// Detach into the background (writes gateway.pid_file).
        #[arg(short, long)]
        daemon: bool,
        /// Take over the listening sockets of a running Pylon (graceful upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate the static file, the resources file and every certificate and key.
    /// Exit 0 with a summary, or 1 listing every problem with its path.
    Check {
        /// The static file.
        #[arg(short = 'c', long = "conf", default_value = "conf/pylon.yaml")]
        conf: PathBuf,
    },
    /// Connect to upstream nodes exactly as the proxy would and say, per node, what fails
    /// (DNS, TCP, TLS, certificates, mutual TLS, HTTP) and which field to change. Exit 0 when
    /// every node probed is healthy, 1 otherwise.
    Probe {
        /// The static file.
        #[arg(short = 'c', long = "conf", default_value = "conf/pylon.yaml")]
        conf: PathBuf,
        /// Probe only this upstream (its id).
        #[arg(long, conflicts_with = "route")]
        upstream: Option<String>,
        /// Probe only the upstream of this route (its id), with the route's timeout.
        #[arg(long)]
        route: Option<String>,
        /// The client Host header to assume where it is passed on (pass_host: pass), which
        /// is also the SNI when tls.sni is not set. Default: the node's host:port.
        #[arg(long)]
        host: Option<String>,
        /// Print the report as JSON (shape: docs/probe.md).
        #[arg(long)]
        json: bool,
    },
    /// Make certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Move a configuration between a resources file and etcd (gateway.etcd).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a resources file, then write every object in it into etcd (APISIX's key
    /// layout; PEM paths inlined, private keys encrypted with the keyring).
    Push {
        /// The static file (its gateway.etcd says where etcd is).
        #[arg(short = 'c', long = "conf", default_value = "conf/pylon.yaml")]
        conf: PathBuf,
        /// The resources file to push.
        file: PathBuf,
    },
    /// Print what etcd holds as a resources file (private keys decrypted: keep it secret).
    Dump {
        /// The static file (its gateway.etcd says where etcd is).
        #[arg(short = 'c', long = "conf", default_value = "conf/pylon.yaml")]
        conf: PathBuf,
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a CA, a server certificate and a client certificate (the founding guide's
    /// ca.crt/ca.key, server.crt/server.key, client.crt/client.key).
    Init {
        /// Folder to write into.
        #[arg(long)]
        dir: PathBuf,
        /// The server certificate's name (CN and subjectAltName), e.g. test.com.
        #[arg(long)]
        server_name: String,
        /// The client certificate's CN.
        #[arg(long, default_value = "client")]
        client_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 36500)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            conf,
            daemon,
            upgrade,
        } => run(&conf, daemon, upgrade),
        Command::Check { conf } => check(&conf),
        Command::Probe {
            conf,
            upstream,
            route,
            host,
            json,
        } => probe(&conf, upstream, route, host, json),
        Command::Certs {
            command:
                CertsCommand::Init {
                    dir,
                    server_name,
                    client_name,
                    days,
                    force,
                },
        } => certs_init(InitOptions {
            dir,
            server_name,
            client_name,
            days,
            force,
        }),
        Command::Config {
            command: ConfigCommand::Push { conf, file },
        } => config_push(&conf, &file),
        Command::Config {
            command: ConfigCommand::Dump { conf, output },
        } => config_dump(&conf, output.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_errors(e: &dyn std::fmt::Display) {
    for line in e.to_string().lines() {
        eprintln!("error: {line}");
    }
}

/// Loads and compiles everything, from the resources file or from etcd (with the source that
/// keeps watching it); on failure prints every problem and returns `None`.
fn load(conf: &Path) -> Option<(Loaded, Option<EtcdSync>)> {
    let static_file = match config::load_static(conf) {
        Ok(s) => s,
        Err(e) => {
            print_errors(&e);
            return None;
        }
    };
    if static_file.gateway.config_provider != ConfigProvider::Etcd {
        return match config::load_all(conf) {
            Ok(loaded) => Some((loaded, None)),
            Err(e) => {
                print_errors(&e);
                None
            }
        };
    }
    match EtcdSync::start(&static_file, conf) {
        Ok((sync, mut compiled)) => {
            let listener =
                config::ssl::listener_warnings(&static_file.gateway, &compiled.table.tls);
            compiled.warnings.extend(listener);
            let loaded = Loaded {
                resources_path: PathBuf::from(sync.source_name()),
                static_file,
                compiled,
            };
            Some((loaded, Some(sync)))
        }
        Err(e) => {
            eprintln!("error: {}: config_provider etcd: {e}", conf.display());
            None
        }
    }
}

fn check(conf: &Path) -> anyhow::Result<ExitCode> {
    let static_file = match config::load_static(conf) {
        Ok(s) => s,
        Err(e) => {
            print_errors(&e);
            return Ok(ExitCode::FAILURE);
        }
    };
    if static_file.gateway.config_provider == ConfigProvider::Etcd {
        return check_etcd(conf, &static_file);
    }
    let Ok(loaded) = config::load_all(conf).map_err(|e| print_errors(&e)) else {
        return Ok(ExitCode::FAILURE);
    };
    let file = loaded.resources_path.display();
    for w in &loaded.compiled.warnings {
        eprintln!("warning: {file}: {w}");
    }
    println!(
        "{}: ok ({}; resources {file})",
        conf.display(),
        loaded.compiled.counts
    );
    Ok(ExitCode::SUCCESS)
}

/// `pylon check` with `config_provider: etcd`: every item that a gateway would skip, one
/// line per problem (`error: /apisix/routes/1: uri: …`), exit 1 if any.
fn check_etcd(conf: &Path, static_file: &config::StaticFile) -> anyhow::Result<ExitCode> {
    let report = match transfer::check(static_file, conf) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", conf.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    for (s, key) in report.skipped.iter().zip(&report.keys) {
        for p in &s.problems {
            eprintln!("error: {key}: {p}");
        }
    }
    if !report.skipped.is_empty() {
        eprintln!(
            "{}: {} invalid items in etcd (revision {}); gateways skip them",
            conf.display(),
            report.skipped.len(),
            report.revision
        );
        return Ok(ExitCode::FAILURE);
    }
    for w in &report.compiled.warnings {
        eprintln!("warning: etcd: {w}");
    }
    println!(
        "{}: ok ({}; etcd revision {})",
        conf.display(),
        report.compiled.counts,
        report.revision
    );
    Ok(ExitCode::SUCCESS)
}

/// `pylon probe`: loads the configuration as `pylon run` would (without serving), probes
/// the selected upstreams and prints the report.
fn probe(
    conf: &Path,
    upstream: Option<String>,
    route: Option<String>,
    host: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use pylon::diagnose::{self, Naming, Selection, Style};
    let Some((loaded, etcd)) = load(conf) else {
        return Ok(ExitCode::FAILURE);
    };
    let naming = match etcd {
        None => config::load_resources(&loaded.resources_path)
            .map(|r| Naming::from_resources(&r, Style::File))
            .unwrap_or_default(),
        Some(_) => transfer::dump(&loaded.static_file, conf)
            .ok()
            .and_then(|(text, _)| {
                config::parse_yaml::<config::Resources>(Path::new("etcd"), &text).ok()
            })
            .map(|r| Naming::from_resources(&r, Style::Keyed))
            .unwrap_or_default(),
    };
    let selection = match (upstream, route) {
        (Some(u), _) => Selection::Upstream(u),
        (None, Some(r)) => Selection::Route(r),
        (None, None) => Selection::All,
    };
    let options = diagnose::Options { host };
    let report = match diagnose::probe(&loaded.compiled.table, &naming, &selection, &options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", conf.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", diagnose::text::render(&report));
    }
    Ok(if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn config_push(conf: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let Ok(static_file) = config::load_static(conf).map_err(|e| print_errors(&e)) else {
        return Ok(ExitCode::FAILURE);
    };
    match transfer::push(&static_file, conf, file) {
        Ok((objects, txns, revision)) => {
            println!(
                "pushed {objects} objects from {} in {txns} transaction(s); etcd revision {revision}",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_errors(&e);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn config_dump(conf: &Path, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Ok(static_file) = config::load_static(conf).map_err(|e| print_errors(&e)) else {
        return Ok(ExitCode::FAILURE);
    };
    let (text, snap) = match transfer::dump(&static_file, conf) {
        Ok(r) => r,
        Err(e) => {
            print_errors(&e);
            return Ok(ExitCode::FAILURE);
        }
    };
    match output {
        Some(path) => {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            pylon::admin::persist::replace_file(path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {} ({} objects, etcd revision {})",
                path.display(),
                snap.items.len(),
                snap.revision
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn certs_init(opts: InitOptions) -> anyhow::Result<ExitCode> {
    let written = certs::init(&opts)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Log filter when `RUST_LOG` is unset: info, except Pingora's connector module, which logs
/// "failed to acquire reusable stream" at error level whenever a pooled connection is busy
/// being checked by the pool's idle watcher — a harmless race under load (a new connection
/// is made) that would otherwise read as a failed request.
const DEFAULT_LOG_FILTER: &str = "info,pingora_core::connectors=off";

fn init_logging(error_log: Option<&str>) -> anyhow::Result<()> {
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(DEFAULT_LOG_FILTER),
    );
    if let Some(path) = error_log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("gateway.error_log: cannot open {path}"))?;
        builder.target(env_logger::Target::Pipe(Box::new(file)));
    }
    // Repeated lines from Pingora (junk handshakes, malformed requests) are bounded.
    let logger = builder.build();
    let level = logger.filter();
    log::set_boxed_logger(Box::new(pylon::ops::log_limit::Limited::new(logger)))
        .context("cannot install the logger")?;
    log::set_max_level(level);
    Ok(())
}

fn run(conf: &Path, daemon: bool, upgrade: bool) -> anyhow::Result<ExitCode> {
    // Logging first: loading from etcd logs (skipped items, a start from the snapshot).
    let Ok(static_file) = config::load_static(conf).map_err(|e| print_errors(&e)) else {
        return Ok(ExitCode::FAILURE);
    };
    init_logging(static_file.gateway.error_log.as_deref())?;
    let Some((loaded, etcd)) = load(conf) else {
        return Ok(ExitCode::FAILURE);
    };
    let g = loaded.static_file.gateway.clone();
    if !upgrade {
        // Pingora would retry a busy port forever; fail at once instead. (With -u the
        // sockets come from the running process.)
        let listeners = g.listen.iter().map(|a| ("gateway.listen", a));
        for (field, addr) in listeners.chain(g.tls_listen.iter().map(|a| ("gateway.tls_listen", a)))
        {
            if let Err(e) = std::net::TcpListener::bind(addr.as_str()) {
                eprintln!("error: {field}: cannot listen on {addr}: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    for w in &loaded.compiled.warnings {
        warn!("{}: {w}", loaded.resources_path.display());
    }
    info!(
        "loaded {} ({})",
        loaded.resources_path.display(),
        loaded.compiled.counts
    );

    let server_conf = ServerConf {
        threads: g
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        work_stealing: g.work_stealing,
        pid_file: g.pid_file.clone(),
        upgrade_sock: g.upgrade_sock.clone(),
        daemon: g.daemon || daemon,
        error_log: g.error_log.clone(),
        upstream_keepalive_pool_size: g.upstream_keepalive_pool_size,
        // Pingora sleeps grace_period_seconds after a graceful shutdown starts; the operations
        // service exits as soon as connections are done (or at the drain limit): this is only
        // the backstop.
        grace_period_seconds: Some(
            g.graceful_shutdown_timeout
                .unwrap_or(pylon::ops::DEFAULT_DRAIN)
                .saturating_add(2),
        ),
        // Daemon mode must not change directory: relative paths stay as configured.
        working_directory: std::env::current_dir().ok(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        daemon: g.daemon || daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let headers = &g.client_cert_headers;
    let client_cert_headers =
        ClientCertHeaders::new(headers.subject_dn.as_deref(), headers.serial.as_deref()).map_err(
            |(field, msg)| anyhow::anyhow!("gateway.client_cert_headers.{field}: {msg}"),
        )?;
    let (ops, table) = pylon::ops::Operations::new(conf, loaded, etcd)?;
    server.add_service(background_service(
        "upstream maintenance",
        Maintenance::new(table.clone()),
    ));
    let gateway = Gateway::new(table.clone())
        .with_conf_path(conf)
        .with_client_cert_headers(client_cert_headers)
        .with_reject_ambiguous_paths(g.reject_ambiguous_paths);
    let mut service = pylon::ops::proxy_service(&server.configuration, gateway);
    for addr in &g.listen {
        service.add_tcp(addr);
        info!("listening on http://{addr}");
    }
    for addr in &g.tls_listen {
        let settings = tls_settings(table.clone(), g.fallback_sni.as_deref())?;
        service.add_tls_with_settings(addr, None, settings);
        info!("listening on https://{addr}");
    }
    server.add_service(service);
    if let Some(listen) = &g.metrics_listen {
        server.add_service(pylon::ops::metrics_service(listen)?);
    }
    if let Some(admin) = &g.admin {
        server.add_service(pylon::admin::service(admin, ops.source(), table.clone())?);
    }
    server.add_service(background_service("operations", ops));
    server.run_forever();
}
