//! The `pylon` command: `run`, `check` and `certs init`.
#![deny(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use log::{info, warn};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;

use pylon::certs::{self, InitOptions};
use pylon::config::{self, Loaded};
use pylon::proxy::Gateway;
use pylon::tls::accept::tls_settings;
use pylon::tls::client_cert::ClientCertHeaders;
use pylon::upstream::probe::Maintenance;

/// mimalloc instead of glibc malloc: the proxy allocates and frees small buffers on every
/// request, and glibc's allocator showed up at ~10% of CPU under load (benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Make certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and compiles everything; on failure prints every problem and returns `None`.
fn load(conf: &Path) -> Option<Loaded> {
    match config::load_all(conf) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            None
        }
    }
}

fn check(conf: &Path) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load(conf) else {
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
    builder.init();
    Ok(())
}

fn run(conf: &Path, daemon: bool, upgrade: bool) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load(conf) else {
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
    init_logging(g.error_log.as_deref())?;
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
    let (ops, table) = pylon::ops::Operations::new(conf, loaded)?;
    server.add_service(background_service(
        "upstream maintenance",
        Maintenance::new(table.clone()),
    ));
    let gateway = Gateway::new(table.clone()).with_client_cert_headers(client_cert_headers);
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
        server.add_service(pylon::admin::service(admin, ops.reloader())?);
    }
    server.add_service(background_service("operations", ops));
    server.run_forever();
}
