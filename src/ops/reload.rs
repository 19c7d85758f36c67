//! Hot reload of the resources file.
//!
//! A reload reads the resources file once, parses and compiles it with the same code as
//! `pylon check` and `pylon run` ([`config::parse_yaml`], [`config::compile()`]), and only
//! then swaps the new [`Table`] in with one atomic store. Requests already running keep the
//! route (and so the upstream, peers and certificates) they started with. A file that does
//! not load is refused with the same messages as `pylon check`, one error-log line each, and
//! the running version keeps serving.
//!
//! Triggers: SIGHUP, and changes to the resources file or to any certificate or key file it
//! names (watched with inotify through `notify`, or by polling where inotify is unavailable
//! or `PYLON_WATCH=poll` is set). File events are debounced (quiet for [`QUIET`], at most
//! [`MAX_DELAY`] after the first) and a change that leaves every watched file's content as
//! it was is ignored.
//!
//! Half-written files: when the running version ends with APISIX's `#END` line, a changed
//! file without it is taken as still being written and not applied until `#END` arrives
//! (SIGHUP applies it regardless: it is the operator saying the file is complete). Without
//! the marker, validation decides; writing the new file beside the old one and renaming it
//! over is the safe way.
//!
//! Changes to the static file are reported as needing a restart or graceful upgrade; none of
//! it is applied.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

use super::metrics;
use super::publish::Published;
use crate::config::inventory::Inventory;
use crate::config::{self, ConfigError, Resources, StaticFile};

/// A file event is acted on once no other arrived for this long.
pub const QUIET: Duration = Duration::from_millis(100);
/// … or this long after the first event, whatever happens.
pub const MAX_DELAY: Duration = Duration::from_millis(400);
/// Polling interval when inotify is not used.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: always reload, even if nothing changed.
    Signal,
    /// A watched file changed.
    FileChange,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration serves now, with this version.
    Applied(u64),
    /// Nothing changed since the last attempt.
    Unchanged,
    /// The file lacks the `#END` line the running version had: waiting for the rest.
    Incomplete,
    /// Refused; the running version keeps serving.
    Failed,
}

/// Messages for the reload thread.
pub enum Event {
    /// A file-system event.
    Fs(notify::Result<notify::Event>),
    /// SIGHUP.
    Hangup,
}

pub(super) struct State {
    /// The resources file's bytes the running version was built from.
    pub(super) text: Vec<u8>,
    /// Why the last reload was refused (empty after a success).
    pub(super) last_error: String,
    end_marker: bool,
    pub(super) files: Vec<PathBuf>,
    pub(super) last: Option<u64>,
    pub(super) last_ok: bool,
    static_seen: Option<u64>,
}

/// Reloads the resources file into the shared table.
pub struct Reloader {
    static_path: PathBuf,
    pub(super) resources_path: PathBuf,
    running_static: StaticFile,
    published: Arc<Published>,
    pub(super) state: Mutex<State>,
}

/// True when the last non-blank line is `#END` (APISIX's end-of-file marker).
pub fn has_end_marker(text: &[u8]) -> bool {
    String::from_utf8_lossy(text)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        == Some("#END")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub(super) fn fingerprint(main: &[u8], files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    main.hash(&mut h);
    for f in files {
        crate::tls::read_regular_file(f).ok().hash(&mut h);
    }
    h.finish()
}

fn static_changes(a: &StaticFile, b: &StaticFile) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => {$(
            if a.gateway.$f != b.gateway.$f {
                out.push(concat!("gateway.", stringify!($f)));
            }
        )*};
    }
    cmp!(
        listen,
        tls_listen,
        fallback_sni,
        client_cert_headers,
        threads,
        work_stealing,
        pid_file,
        upgrade_sock,
        daemon,
        error_log,
        graceful_shutdown_timeout,
        access_log,
        upstream_keepalive_pool_size,
        metrics_listen,
        admin,
        reject_ambiguous_paths,
        config_provider,
        etcd,
        data_encryption
    );
    if a.resources != b.resources {
        out.push("resources");
    }
    if out.is_empty() && a != b {
        out.push("gateway");
    }
    out
}

impl Reloader {
    /// A reloader for the resources file `resources_path` named by `static_file` (read from
    /// `static_path`), whose version 1 (having read `inventory`) is serving in `published`.
    /// Paths are made absolute, so a daemon's change of directory does not matter.
    pub fn new(
        static_path: &Path,
        static_file: &StaticFile,
        resources_path: &Path,
        inventory: &Inventory,
        published: Arc<Published>,
    ) -> Self {
        let text = std::fs::read(resources_path).unwrap_or_default();
        let files: Vec<PathBuf> = inventory.files.iter().map(|p| absolute(p)).collect();
        let static_text = std::fs::read(static_path).unwrap_or_default();
        Reloader {
            static_path: absolute(static_path),
            resources_path: absolute(resources_path),
            running_static: static_file.clone(),
            published,
            state: Mutex::new(State {
                last_error: String::new(),
                end_marker: has_end_marker(&text),
                last: Some(fingerprint(&text, &files)),
                last_ok: true,
                files,
                static_seen: Some(fingerprint(&static_text, &[])),
                text,
            }),
        }
    }

    /// The version serving now (1 at start).
    pub fn version(&self) -> u64 {
        self.published.version()
    }

    /// Reloads the resources file if needed; see the module documentation for the rules.
    pub fn reload(&self, trigger: Trigger) -> Outcome {
        let Ok(mut st) = self.state.lock() else {
            return Outcome::Failed;
        };
        self.reload_locked(&mut st, trigger)
    }

    pub(super) fn reload_locked(&self, st: &mut State, trigger: Trigger) -> Outcome {
        let path = &self.resources_path;
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(source) => {
                let e = ConfigError::Read {
                    file: path.clone(),
                    source,
                };
                return self.refuse(st, &e, None);
            }
        };
        let fp = fingerprint(&text, &st.files);
        if trigger == Trigger::FileChange && st.last_ok && st.last == Some(fp) {
            return Outcome::Unchanged;
        }
        if trigger == Trigger::FileChange && st.end_marker && !has_end_marker(&text) {
            info!(
                "{}: changed but does not end with #END yet (the running version does): \
                 waiting for the rest of the file",
                path.display()
            );
            return Outcome::Incomplete;
        }
        let started = Instant::now();
        let parsed = String::from_utf8(text.clone())
            .map_err(|e| ConfigError::Parse {
                file: path.clone(),
                problem: config::Problem::new("", format!("not UTF-8: {e}")),
            })
            .and_then(|s| config::parse_yaml::<Resources>(path, &s));
        let compiled = parsed.and_then(|res| {
            config::compile(&res, &config::base_dir(path)).map_err(|problems| {
                ConfigError::Invalid {
                    file: path.clone(),
                    problems,
                }
            })
        });
        let compiled = match compiled {
            Ok(c) => c,
            Err(e) => return self.refuse(st, &e, Some(fp)),
        };
        let how = match trigger {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
        };
        Outcome::Applied(self.apply(st, text, compiled, started, how))
    }

    /// Swaps in `compiled` (built from `text`, the resources file's bytes): version + 1,
    /// watched files, metrics and the log line. Returns the new version.
    pub(super) fn apply(
        &self,
        st: &mut State,
        text: Vec<u8>,
        compiled: config::Compiled,
        started: Instant,
        how: &str,
    ) -> u64 {
        let files: Vec<PathBuf> = compiled
            .inventory
            .files
            .iter()
            .map(|p| absolute(p))
            .collect();
        let detail = format!("{} certificate/key files watched", files.len());
        let source = self.resources_path.display().to_string();
        let (version, _) = self
            .published
            .publish(compiled, &source, &detail, how, started);
        st.end_marker = has_end_marker(&text);
        st.last = Some(fingerprint(&text, &files));
        st.files = files;
        st.text = text;
        st.last_error.clear();
        st.last_ok = true;
        version
    }

    fn refuse(&self, st: &mut State, e: &ConfigError, fp: Option<u64>) -> Outcome {
        for line in e.to_string().lines() {
            error!("reload refused: {line}");
        }
        error!(
            "reload refused: config version {} keeps serving",
            self.published.version()
        );
        st.last = fp;
        st.last_ok = false;
        st.last_error = e.to_string();
        metrics::reload_result(false);
        Outcome::Failed
    }

    /// Reports a changed static file: it needs a restart or graceful upgrade. Returns the
    /// changed settings (empty when nothing differs from the running process).
    pub fn check_static(&self) -> Vec<&'static str> {
        let text = std::fs::read(&self.static_path).unwrap_or_default();
        let fp = fingerprint(&text, &[]);
        {
            let Ok(mut st) = self.state.lock() else {
                return Vec::new();
            };
            if st.static_seen == Some(fp) {
                return Vec::new();
            }
            st.static_seen = Some(fp);
        }
        match config::load_static(&self.static_path) {
            Err(e) => {
                for line in e.to_string().lines() {
                    warn!("static file changed but does not load (nothing applied): {line}");
                }
                Vec::new()
            }
            Ok(s) => {
                let changed = static_changes(&self.running_static, &s);
                if !changed.is_empty() {
                    warn!(
                        "{} changed ({}): not applied; these settings need a restart or a \
                         graceful upgrade (pylon run -u, or systemctl reload pylon)",
                        self.static_path.display(),
                        changed.join(", ")
                    );
                }
                changed
            }
        }
    }

    /// Files to watch, by folder: the static file, the resources file and every certificate
    /// and key file the running version read.
    fn watch_set(&self) -> HashMap<PathBuf, HashSet<OsString>> {
        let mut out: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        let files = self
            .state
            .lock()
            .map(|s| s.files.clone())
            .unwrap_or_default();
        let all = [self.static_path.clone(), self.resources_path.clone()];
        for f in all.iter().chain(files.iter()) {
            let (Some(dir), Some(name)) = (f.parent(), f.file_name()) else {
                continue;
            };
            if let Ok(dir) = dir.canonicalize() {
                out.entry(dir).or_default().insert(name.to_os_string());
            }
        }
        out
    }

    /// Runs the reload loop on the current thread until every sender of `rx` is gone.
    /// `tx` feeds the file watcher into the same loop.
    pub fn run(&self, tx: Sender<Event>, rx: Receiver<Event>) {
        let mut watch = Watch::new(tx);
        let mut set = self.watch_set();
        watch.update(&set);
        // Catch changes made between the start-up load and the watch.
        self.check_static();
        self.reload(Trigger::FileChange);
        let static_key = self
            .static_path
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .zip(self.static_path.file_name())
            .map(|(d, n)| d.join(n));
        while let Ok(first) = rx.recv() {
            let mut signal = false;
            let (mut stat, mut files) = (false, false);
            match &first {
                Event::Hangup => signal = true,
                Event::Fs(Ok(ev)) => (stat, files) = touched(ev, &set, static_key.as_deref()),
                Event::Fs(Err(e)) => warn!("file watcher: {e}"),
            }
            if !signal && !stat && !files {
                continue;
            }
            if stat || files {
                // Debounce: act once QUIET passed without a relevant event, or at MAX_DELAY.
                let first_at = Instant::now();
                let mut last_at = first_at;
                loop {
                    let until = (last_at + QUIET).min(first_at + MAX_DELAY);
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(Event::Hangup) => signal = true,
                        Ok(Event::Fs(Ok(ev))) => {
                            let (s, f) = touched(&ev, &set, static_key.as_deref());
                            if s || f {
                                last_at = Instant::now();
                            }
                            stat |= s;
                            files |= f;
                        }
                        Ok(Event::Fs(Err(_))) => {}
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
            if stat {
                self.check_static();
            }
            if signal {
                self.reload(Trigger::Signal);
            } else if files {
                self.reload(Trigger::FileChange);
            }
            set = self.watch_set();
            watch.update(&set);
        }
    }
}

/// Which files an event touched: (only the static file, something else we load).
fn touched(
    ev: &notify::Event,
    set: &HashMap<PathBuf, HashSet<OsString>>,
    static_file: Option<&Path>,
) -> (bool, bool) {
    if !relevant(ev, set) {
        return (false, false);
    }
    let only_static = ev.paths.iter().all(|p| Some(p.as_path()) == static_file);
    (only_static, !only_static)
}

/// Whether a file event may change what we load: data written to (or metadata of) a watched
/// file, or any entry created, removed or renamed in a watched folder (editors and
/// Kubernetes swap files in by renaming). Opens and reads are not changes.
fn relevant(ev: &notify::Event, set: &HashMap<PathBuf, HashSet<OsString>>) -> bool {
    let any_name = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => return false,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
            true
        }
        _ => false,
    };
    ev.paths.iter().any(|p| {
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
            return false;
        };
        set.get(dir)
            .is_some_and(|names| any_name || names.contains(name))
    })
}

/// The file watcher: inotify when it works, polling otherwise.
struct Watch {
    tx: Sender<Event>,
    watcher: Option<Box<dyn Watcher + Send>>,
    polling: bool,
    /// Folders (inotify) or files (polling) being watched.
    paths: HashSet<PathBuf>,
}

impl Watch {
    fn new(tx: Sender<Event>) -> Watch {
        let force_poll = std::env::var("PYLON_WATCH").is_ok_and(|v| v == "poll");
        let mut w = Watch {
            tx,
            watcher: None,
            polling: force_poll,
            paths: HashSet::new(),
        };
        w.watcher = w.make();
        w
    }

    fn make(&mut self) -> Option<Box<dyn Watcher + Send>> {
        let tx = self.tx.clone();
        let handler = move |res| {
            let _ = tx.send(Event::Fs(res));
        };
        if !self.polling {
            match notify::RecommendedWatcher::new(handler.clone(), notify::Config::default()) {
                Ok(w) => return Some(Box::new(w)),
                Err(e) => {
                    warn!(
                        "file watcher: inotify unavailable ({e}); polling every {POLL_INTERVAL:?}"
                    );
                    self.polling = true;
                }
            }
        }
        // Modification times have one-second resolution here: compare contents (only the
        // watched files are read, and they are small).
        let config = notify::Config::default()
            .with_poll_interval(POLL_INTERVAL)
            .with_compare_contents(true);
        match notify::PollWatcher::new(handler, config) {
            Ok(w) => Some(Box::new(w)),
            Err(e) => {
                error!("file watcher: cannot poll either ({e}); reload with SIGHUP");
                None
            }
        }
    }

    /// Watches the folders of `set` (inotify), or its files themselves when polling (so a
    /// large file beside them, such as a log, is never read).
    fn update(&mut self, set: &HashMap<PathBuf, HashSet<OsString>>) {
        let wanted: HashSet<PathBuf> = if self.polling {
            set.iter()
                .flat_map(|(dir, names)| names.iter().map(move |n| dir.join(n)))
                .collect()
        } else {
            set.keys().cloned().collect()
        };
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.paths.difference(&wanted) {
            let _ = w.unwatch(gone);
        }
        let mut failed = false;
        for path in wanted.difference(&self.paths) {
            if let Err(e) = w.watch(path, RecursiveMode::NonRecursive) {
                warn!("file watcher: cannot watch {}: {e}", path.display());
                failed = true;
            }
        }
        self.paths = wanted;
        if failed && !self.polling {
            // e.g. the inotify watch limit: poll everything instead.
            warn!("file watcher: switching to polling every {POLL_INTERVAL:?}");
            self.polling = true;
            self.watcher = self.make();
            self.paths.clear();
            self.update(set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_marker_is_the_last_non_blank_line() {
        assert!(has_end_marker(b"routes: []\n#END\n"));
        assert!(has_end_marker(b"routes: []\n  #END  \n\n"));
        assert!(!has_end_marker(b"#END\nroutes: []\n"));
        assert!(!has_end_marker(b"routes: []\n"));
        assert!(!has_end_marker(b""));
    }

    #[test]
    fn static_changes_name_the_fields() {
        let a = StaticFile::default();
        let mut b = a.clone();
        b.gateway.threads = Some(3);
        b.resources = "other.yaml".into();
        assert_eq!(static_changes(&a, &b), vec!["gateway.threads", "resources"]);
        assert!(static_changes(&a, &a.clone()).is_empty());
    }

    #[test]
    fn relevance_of_events() {
        let mut set = HashMap::new();
        set.insert(
            PathBuf::from("/c"),
            HashSet::from([OsString::from("r.yaml")]),
        );
        let ev = |kind, p: &str| notify::Event::new(kind).add_path(PathBuf::from(p));
        let data = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        assert!(relevant(&ev(data, "/c/r.yaml"), &set));
        assert!(!relevant(&ev(data, "/c/access.log"), &set));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!relevant(&ev(open, "/c/r.yaml"), &set));
        let create = EventKind::Create(notify::event::CreateKind::File);
        assert!(relevant(&ev(create, "/c/..data_tmp"), &set));
        assert!(!relevant(&ev(create, "/elsewhere/r.yaml"), &set));
    }
}
