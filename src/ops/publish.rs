//! Serving a newly compiled configuration, whatever its source (file reload, admin API,
//! etcd): one atomic swap of the [`Table`], the version counter (1 at start, +1 per applied
//! change), the metrics and one log line of the same shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use log::{info, warn};

use super::metrics;
use crate::config::inventory::Inventory;
use crate::config::Compiled;
use crate::table::Table;

/// The table requests read, and its version.
pub struct Published {
    table: Arc<ArcSwap<Table>>,
    version: AtomicU64,
}

impl Published {
    /// Version 1: `compiled` (loaded at start) serving in `table`.
    pub fn start(table: Arc<ArcSwap<Table>>, compiled: Compiled) -> (Published, Inventory) {
        table.store(Arc::new(compiled.table));
        metrics::config_applied(1, &table.load(), &compiled.inventory);
        let p = Published {
            table,
            version: AtomicU64::new(1),
        };
        (p, compiled.inventory)
    }

    /// The version serving now.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Serves `compiled`: its warnings logged against `source`, the table swapped in, the
    /// version, metrics and the log line `config version N applied from SOURCE (COUNTS; DETAIL)
    /// in MS ms (HOW)`. Returns the new version and the compiled inventory.
    pub fn publish(
        &self,
        compiled: Compiled,
        source: &str,
        detail: &str,
        how: &str,
        started: Instant,
    ) -> (u64, Inventory) {
        for w in &compiled.warnings {
            warn!("{source}: {w}");
        }
        let table = Arc::new(compiled.table);
        self.table.store(table.clone());
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::reload_result(true);
        metrics::config_applied(version, &table, &compiled.inventory);
        info!(
            "config version {version} applied from {source} ({}; {detail}) in {} ms ({how})",
            compiled.counts,
            started.elapsed().as_millis(),
        );
        (version, compiled.inventory)
    }
}
