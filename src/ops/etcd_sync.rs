//! The configuration from etcd (`gateway.config_provider: etcd`): one range read of the whole
//! prefix, then one watch of the whole prefix from the next revision, changes applied in
//! batches through the same compile and swap as a file reload ([`Published`]).
//!
//! - **Per item**: each object is validated on its own ([`Items`]); a bad one is logged once
//!   with its key and field path and counted in `pylon_config_skipped_items`, its previous
//!   value keeps serving, everything else applies.
//! - **Batches**: events that arrive within [`BATCH_QUIET`] of each other (for at most
//!   [`BATCH_MAX`]) are applied together; while a rebuild runs, further events queue and form
//!   the next batch, so a burst of writes costs a few rebuilds, not one per write.
//! - **etcd lost**: the last applied configuration keeps serving; reconnection with capped
//!   exponential backoff and jitter ([`BACKOFF_MIN`] to [`BACKOFF_MAX`]);
//!   `pylon_etcd_connected` and one log line per outage say so.
//! - **Resync**: every (re)connection reads the whole prefix again and replaces every item
//!   (deletions made meanwhile included). A watch cancelled because its revision was compacted
//!   and a revision going backwards (etcd wiped or restored) cause the same.
//! - **Snapshot**: the applied items are written atomically (mode 0600) to
//!   `gateway.etcd.snapshot` once changes stop for [`SNAPSHOT_QUIET`] (at the latest
//!   [`SNAPSHOT_MAX_DELAY`] after the first unsaved one, and at once when etcd is lost), off
//!   the path from a change to its first request; a start while etcd does not answer serves
//!   from it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde_json::{json, Value};

use super::metrics;
use super::publish::Published;
use crate::config::items::{Items, Key};
use crate::config::kind::Kind;
use crate::config::{self, model, Compiled};
use crate::etcd::crypt::Keyring;
use crate::etcd::{self, EtcdError, KeyClass, Settings, Snapshot};

/// Events closer together than this are applied together.
pub const BATCH_QUIET: Duration = Duration::from_millis(10);
/// A batch is applied at the latest this long after its first event.
pub const BATCH_MAX: Duration = Duration::from_millis(200);
/// First reconnection delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The snapshot is written once no change arrived for this long …
pub const SNAPSHOT_QUIET: Duration = Duration::from_secs(1);
/// … or this long after the first change it does not hold yet, whatever happens.
pub const SNAPSHOT_MAX_DELAY: Duration = Duration::from_secs(10);

/// Format marker of the snapshot file.
const SNAPSHOT_FORMAT: &str = "pylon-etcd-snapshot/1";

struct State {
    items: Items,
    /// Revision of the last applied change (0 before any read).
    revision: i64,
    /// Items logged as skipped, with the value that was logged (logged again when it
    /// changes).
    logged: HashMap<Key, Value>,
    /// Segments under the prefix that were logged as not served.
    ignored: BTreeSet<String>,
    /// Since when the snapshot lacks applied changes, and when the last one came.
    unsaved: Option<(Instant, Instant)>,
}

impl State {
    /// When the snapshot should be written, if it lacks changes.
    fn snapshot_due(&self) -> Option<Instant> {
        self.unsaved
            .map(|(first, last)| (last + SNAPSHOT_QUIET).min(first + SNAPSHOT_MAX_DELAY))
    }

    fn changed(&mut self) {
        let now = Instant::now();
        let first = self.unsaved.map_or(now, |(f, _)| f);
        self.unsaved = Some((first, now));
    }
}

/// The etcd source of one gateway; see the module documentation.
pub struct EtcdSync {
    settings: Settings,
    keyring: Keyring,
    base: PathBuf,
    snapshot: Option<PathBuf>,
    state: Mutex<State>,
    published: Mutex<Option<Arc<Published>>>,
    applied: tokio::sync::watch::Sender<i64>,
}

/// Why a watch session ended.
enum End {
    /// etcd cannot be reached or failed: back off, then reconnect.
    Lost(String),
    /// The items must be read again at once (compaction, revision going backwards).
    Resync(String),
}

impl From<EtcdError> for End {
    fn from(e: EtcdError) -> End {
        End::Lost(e.to_string())
    }
}

fn jitter(d: Duration) -> Duration {
    // ±25 %, so a fleet that lost etcd together does not come back in step.
    d.mul_f64(rand::random_range(0.75..1.25))
}

impl EtcdSync {
    /// Reads etcd once for `pylon run` (a private runtime, dropped before Pingora starts) and
    /// compiles what it holds. When etcd does not answer, starts from the snapshot with a
    /// warning. `static_path` is the static file (relative paths are against its folder).
    ///
    /// Errors: etcd unreachable and no snapshot (or an unreadable one), a bad
    /// `gateway.etcd` setting, or items that cannot be compiled at all.
    pub fn start(
        static_file: &model::StaticFile,
        static_path: &Path,
    ) -> Result<(EtcdSync, Compiled), String> {
        let g = &static_file.gateway;
        let base = config::base_dir(static_path);
        let e = g.etcd.clone().unwrap_or_default();
        let settings = Settings::new(&e, &base).map_err(|e| e.to_string())?;
        let snapshot = e.snapshot.as_ref().map(|p| base.join(p));
        let (applied, _) = tokio::sync::watch::channel(0);
        let sync = EtcdSync {
            settings,
            keyring: Keyring::new(&g.data_encryption),
            base,
            snapshot,
            state: Mutex::new(State {
                items: Items::default(),
                revision: 0,
                logged: HashMap::new(),
                ignored: BTreeSet::new(),
                unsaved: None,
            }),
            published: Mutex::new(None),
            applied,
        };
        let read = sync.settings.read_once();
        let mut st = sync
            .state
            .lock()
            .map_err(|_| "state poisoned".to_string())?;
        match read {
            Ok(snap) => {
                sync.log_ignored(&mut st, &snap);
                info!(
                    "etcd: read {} items under {} at revision {} from {}",
                    snap.items.len(),
                    sync.settings.prefix,
                    snap.revision,
                    sync.settings.endpoints_text()
                );
                st.revision = snap.revision;
                st.items
                    .resync(snap.items.into_iter().map(|s| (s.kind, s.id, s.value)));
            }
            Err(e) => {
                let Some(path) = &sync.snapshot else {
                    return Err(format!(
                        "{e}; and gateway.etcd.snapshot is off: cannot start without a \
                         configuration"
                    ));
                };
                let (revision, items) = read_snapshot(path).map_err(|why| {
                    format!("{e}; and no usable snapshot at {}: {why}", path.display())
                })?;
                warn!(
                    "{e}: starting from the snapshot {} (revision {revision}, {} items); \
                     switching to etcd when it answers",
                    path.display(),
                    items.len()
                );
                st.revision = revision;
                st.items = items;
            }
        }
        let compiled = sync.build(&mut st)?;
        // Written by the watch thread once quiet: not on the way to the first request.
        st.changed();
        let _ = sync.applied.send(st.revision);
        drop(st);
        Ok((sync, compiled))
    }

    /// Where requests read from; set once by the operations service before [`EtcdSync::run`].
    pub fn attach(&self, published: Arc<Published>) {
        if let Ok(mut p) = self.published.lock() {
            *p = Some(published);
        }
    }

    /// The connection settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The keyring for private keys.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The folder relative certificate paths are resolved against.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The etcd revision of the configuration serving, updated after each applied change.
    pub fn applied_revision(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// The configuration version serving (0 before the operations service attached).
    pub fn version(&self) -> u64 {
        self.published().map_or(0, |p| p.version())
    }

    /// A display name for log lines: `etcd http://…/apisix`.
    pub fn source_name(&self) -> String {
        format!(
            "etcd {}{}",
            self.settings.endpoints_text(),
            self.settings.prefix
        )
    }

    /// Watches etcd on the current thread, forever (a private single-thread runtime). The
    /// thread runs at a lower CPU priority (nice +10): a rebuild after a burst of changes
    /// yields to the proxy's worker threads instead of stalling requests.
    pub fn run(self: Arc<Self>) {
        // Linux: setpriority on a thread id changes that thread only.
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        // SAFETY: plain integer arguments; an error is reported by the return value.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) } != 0 {
            log::debug!("etcd: cannot lower the watch thread's priority");
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                error!("etcd: cannot start the watch runtime: {e}; configuration is frozen");
                return;
            }
        };
        rt.block_on(self.watch_forever());
    }

    async fn watch_forever(&self) {
        let mut delay = BACKOFF_MIN;
        let mut outage: Option<(Instant, u32)> = None;
        loop {
            match self.session(&mut delay, &mut outage).await {
                End::Resync(why) => warn!("etcd: {why}: reading every item again"),
                End::Lost(why) => {
                    metrics::etcd_connected(false);
                    self.save_if_due(true);
                    let version = self.published().map_or(0, |p| p.version());
                    match &mut outage {
                        None => {
                            error!(
                                "etcd unreachable: {why}; config version {version} keeps \
                                 serving; reconnecting with backoff (up to {BACKOFF_MAX:?})"
                            );
                            outage = Some((Instant::now(), 1));
                        }
                        Some((_, n)) => {
                            *n += 1;
                            if n.is_power_of_two() {
                                warn!("etcd still unreachable after {n} attempts: {why}");
                            }
                        }
                    }
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn published(&self) -> Option<Arc<Published>> {
        self.published.lock().ok().and_then(|p| p.clone())
    }

    async fn session(&self, delay: &mut Duration, outage: &mut Option<(Instant, u32)>) -> End {
        match self.session_inner(delay, outage).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn session_inner(
        &self,
        delay: &mut Duration,
        outage: &mut Option<(Instant, u32)>,
    ) -> Result<std::convert::Infallible, End> {
        let s = &self.settings;
        let mut client = s.connect().await?;
        let snap = s.read_all(&mut client).await?;
        *delay = BACKOFF_MIN;
        metrics::etcd_connected(true);
        match outage.take() {
            Some((since, _)) => info!(
                "etcd reachable again at {} after {:.1} s (revision {})",
                s.endpoints_text(),
                since.elapsed().as_secs_f64(),
                snap.revision
            ),
            None => log::debug!("etcd: watching from revision {}", snap.revision),
        }
        let revision = snap.revision;
        self.apply_full(snap);
        let mut stream = s.watch(&mut client, revision + 1).await?;
        loop {
            // Wait for the next change, or until the snapshot is due.
            let due = self.state.lock().ok().and_then(|st| st.snapshot_due());
            let next = match due {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    match tokio::time::timeout_at(at, stream.message()).await {
                        Ok(r) => r,
                        Err(_) => {
                            self.save_if_due(false);
                            continue;
                        }
                    }
                }
                None => stream.message().await,
            };
            let first = next
                .map_err(|e| End::Lost(etcd::describe(&e)))?
                .ok_or_else(|| End::Lost("etcd closed the watch".into()))?;
            let started = Instant::now();
            let mut batch = vec![first];
            let mut closed = None;
            while started.elapsed() < BATCH_MAX {
                match tokio::time::timeout(BATCH_QUIET, stream.message()).await {
                    Ok(Ok(Some(r))) => batch.push(r),
                    Ok(Ok(None)) => {
                        closed = Some(End::Lost("etcd closed the watch".into()));
                        break;
                    }
                    Ok(Err(e)) => {
                        closed = Some(End::Lost(etcd::describe(&e)));
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.apply_events(&batch, started)?;
            if let Some(end) = closed {
                return Err(end);
            }
        }
    }

    /// Replaces every item with a full read and applies the result if anything changed.
    fn apply_full(&self, snap: Snapshot) {
        let started = Instant::now();
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if snap.revision < st.revision {
            warn!(
                "etcd revision went backwards ({} -> {}): etcd was wiped or restored from a \
                 backup; applying what it holds now",
                st.revision, snap.revision
            );
        }
        self.log_ignored(&mut st, &snap);
        st.revision = snap.revision;
        let items = snap.items.into_iter().map(|s| (s.kind, s.id, s.value));
        if st.items.resync(items) {
            self.rebuild(&mut st, "etcd full read", started);
        } else {
            let _ = self.applied.send(st.revision);
        }
    }

    fn apply_events(
        &self,
        batch: &[etcd_client::WatchResponse],
        started: Instant,
    ) -> Result<(), End> {
        let Ok(mut st) = self.state.lock() else {
            return Err(End::Lost("state poisoned".into()));
        };
        let mut changes = 0;
        for resp in batch {
            if resp.compact_revision() > 0 {
                return Err(End::Resync(format!(
                    "the watch's revision was compacted (required revision has been compacted; \
                     oldest kept is {})",
                    resp.compact_revision()
                )));
            }
            if resp.canceled() {
                return Err(End::Resync(format!(
                    "etcd cancelled the watch ({})",
                    resp.cancel_reason()
                )));
            }
            if let Some(h) = resp.header() {
                if h.revision() < st.revision && !resp.created() {
                    return Err(End::Resync(format!(
                        "revision went backwards ({} -> {})",
                        st.revision,
                        h.revision()
                    )));
                }
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                st.revision = st.revision.max(kv.mod_revision());
                match self.settings.classify(&key) {
                    KeyClass::Item(kind, id) => {
                        let changed = match ev.event_type() {
                            etcd_client::EventType::Put => {
                                st.items.set(kind, id, etcd::parse_value(kv.value()))
                            }
                            etcd_client::EventType::Delete => st.items.remove(kind, id),
                        };
                        changes += usize::from(changed);
                    }
                    KeyClass::Other(seg) => {
                        if st.ignored.insert(seg.to_string()) {
                            info!("etcd: keys under {key} are not served by Pylon; ignored");
                        }
                    }
                }
            }
        }
        if changes > 0 {
            let how = format!("etcd watch: {changes} changes");
            self.rebuild(&mut st, &how, started);
        } else {
            let _ = self.applied.send(st.revision);
        }
        Ok(())
    }

    fn log_ignored(&self, st: &mut State, snap: &Snapshot) {
        for seg in &snap.ignored {
            if st.ignored.insert(seg.clone()) {
                info!(
                    "etcd: keys under {}/{seg} are not served by Pylon; ignored",
                    self.settings.prefix
                );
            }
        }
    }

    /// Compiles every item; logs newly skipped ones. Errors: nothing could be compiled.
    fn build(&self, st: &mut State) -> Result<Compiled, String> {
        let keyring = &self.keyring;
        let prepare = |kind: Kind, v: &mut Value| keyring.decrypt_fields(kind, v);
        let built = st.items.build(&self.base, &prepare).map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let mut still = HashMap::new();
        for s in &built.skipped {
            let key = (s.kind, s.id.clone());
            let value = st.items.get(s.kind, &s.id).cloned().unwrap_or(Value::Null);
            if st.logged.get(&key) != Some(&value) {
                let what = s
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let fate = if s.serving_previous {
                    "its previous value keeps serving"
                } else {
                    "not served"
                };
                error!(
                    "etcd: {} skipped ({fate}): {what}",
                    self.settings.key(s.kind, &s.id)
                );
            }
            still.insert(key, value);
        }
        st.logged = still;
        metrics::skipped_items(built.skipped.len());
        Ok(built.compiled)
    }

    fn rebuild(&self, st: &mut State, how: &str, started: Instant) {
        let compiled = match self.build(st) {
            Ok(c) => c,
            Err(e) => {
                error!("etcd: change refused: {e}");
                metrics::reload_result(false);
                return;
            }
        };
        if let Some(p) = self.published() {
            let detail = format!("revision {}, {} skipped", st.revision, st.logged.len());
            p.publish(compiled, &self.source_name(), &detail, how, started);
        }
        st.changed();
        let _ = self.applied.send(st.revision);
    }

    /// Writes the snapshot when it lacks changes and is due (or `now` regardless of time).
    fn save_if_due(&self, now: bool) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match st.snapshot_due() {
            Some(at) if now || Instant::now() >= at => {
                self.write_snapshot(&st);
                st.unsaved = None;
            }
            _ => {}
        }
    }

    fn write_snapshot(&self, st: &State) {
        let Some(path) = &self.snapshot else { return };
        let items: Vec<Value> = st
            .items
            .applied_values()
            .map(|(k, id, v)| json!({"key": self.settings.key(k, id), "value": v}))
            .collect();
        let doc = json!({
            "format": SNAPSHOT_FORMAT,
            "revision": st.revision,
            "prefix": self.settings.prefix,
            "items": items,
        });
        let text = doc.to_string();
        if let Err(e) = crate::admin::persist::replace_file(path, text.as_bytes()) {
            warn!("etcd: cannot write the snapshot {}: {e}", path.display());
        }
    }
}

/// Reads a snapshot file: its revision and items (each as applied).
///
/// Errors: unreadable, not JSON, or not a snapshot.
pub fn read_snapshot(path: &Path) -> Result<(i64, Items), String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))?;
    if doc["format"] != SNAPSHOT_FORMAT {
        return Err(format!("not a {SNAPSHOT_FORMAT} file"));
    }
    let prefix = doc["prefix"].as_str().unwrap_or_default();
    let mut values = Vec::new();
    for item in doc["items"].as_array().into_iter().flatten() {
        let key = item["key"].as_str().unwrap_or_default();
        let rest = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'));
        let Some((seg, id)) = rest.and_then(|r| r.split_once('/')) else {
            continue;
        };
        if let Some(kind) = Kind::from_segment(seg) {
            values.push((kind, id.to_string(), item["value"].clone()));
        }
    }
    Ok((
        doc["revision"].as_i64().unwrap_or(0),
        Items::applied(values),
    ))
}
