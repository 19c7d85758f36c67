//! Benchmark levers: A/B switches for `benches/load` (target `pylon_ab`), read once from the
//! environment when first used, never per request. Each restores a Pingora default that
//! Pylon leaves off, so that its cost can be measured against the kept choice in one run
//! (benches/RESULTS.md, "Levers"). Unset or any value other than `1` means off.
//!
//! - `PYLON_BENCH_COMPRESSION_MODULE=1`: add Pingora's disabled response-compression module
//!   to every downstream session (`ProxyHttp::init_downstream_modules`'s default). Pylon
//!   has no compression plugin, so it leaves the module out.
//! - `PYLON_BENCH_NO_IO_TIMEOUTS=1`: drop the peers' read and write timeouts (keep the
//!   connect timeout), to measure what a timer per upstream read and write costs.
//! - `PYLON_BENCH_NO_FORWARDING_HEADERS=1`: send no `X-Forwarded-*` / `X-Real-IP` upstream,
//!   to measure what the five headers APISIX sets cost (the bare Pingora floor sends none).

use std::sync::OnceLock;

/// The levers in force; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levers {
    /// Pingora's disabled response-compression module on each downstream session.
    pub compression_module: bool,
    /// No read or write timeout on upstream peers.
    pub no_io_timeouts: bool,
    /// No forwarding headers upstream.
    pub no_forwarding_headers: bool,
}

fn on(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// The levers, read from the environment once.
pub fn get() -> Levers {
    static LEVERS: OnceLock<Levers> = OnceLock::new();
    *LEVERS.get_or_init(|| Levers {
        compression_module: on("PYLON_BENCH_COMPRESSION_MODULE"),
        no_io_timeouts: on("PYLON_BENCH_NO_IO_TIMEOUTS"),
        no_forwarding_headers: on("PYLON_BENCH_NO_FORWARDING_HEADERS"),
    })
}
