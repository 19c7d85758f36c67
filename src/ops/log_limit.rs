//! A bound on repeated log lines from outside Pylon's own code.
//!
//! Pingora writes a WARN or ERROR line for each junk TLS handshake or malformed request it
//! rejects; a client sending thousands of those would fill the disk and hide everything else.
//! [`Limited`] wraps the logger: per target (`pingora_core::listeners`, …) and level, at most
//! [`BURST`] lines pass in each [`WINDOW`]; the rest are counted, and the first line after the
//! window says how many were left out. Pylon's own lines (targets `pylon…`) are never held
//! back: they are one per event an operator needs to see (a failed upstream request, a
//! reload, a health change).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};

/// Lines let through per target and level in each window.
pub const BURST: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counter {
    passed: u32,
    dropped: u64,
}

/// Lines per target and level in the current window.
type Counters = HashMap<(String, Level), Counter>;

/// The limiting logger around `inner`.
pub struct Limited<L> {
    inner: L,
    /// The window's start and its counters.
    state: Mutex<(Instant, Counters)>,
}

impl<L: Log> Limited<L> {
    /// Wraps `inner`.
    pub fn new(inner: L) -> Self {
        Limited {
            inner,
            state: Mutex::new((Instant::now(), HashMap::new())),
        }
    }

    /// Whether `record` may be written now; emits the summary of a finished window first.
    fn admit(&self, record: &Record) -> bool {
        if record.target().starts_with("pylon") {
            return true;
        }
        let Ok(mut st) = self.state.lock() else {
            return true;
        };
        let (start, counters) = &mut *st;
        if start.elapsed() >= WINDOW {
            for ((target, level), c) in counters.drain() {
                if c.dropped > 0 {
                    self.inner.log(
                        &Record::builder()
                            .level(level)
                            .target("pylon::log_limit")
                            .args(format_args!(
                                "{} similar {level} lines from {target} left out in the last {:?}",
                                c.dropped, WINDOW
                            ))
                            .build(),
                    );
                }
            }
            *start = Instant::now();
        }
        let c = counters
            .entry((record.target().to_string(), record.level()))
            .or_default();
        if c.passed < BURST {
            c.passed += 1;
            true
        } else {
            c.dropped += 1;
            false
        }
    }
}

impl<L: Log> Log for Limited<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if self.inner.enabled(record.metadata()) && self.admit(record) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<String>>>);

    impl Log for Sink {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, r: &Record) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", r.target(), r.args()));
        }
        fn flush(&self) {}
    }

    fn line(logger: &impl Log, target: &str) {
        logger.log(
            &Record::builder()
                .level(Level::Warn)
                .target(target)
                .args(format_args!("junk handshake"))
                .build(),
        );
    }

    #[test]
    fn floods_are_cut_and_counted_but_pylon_lines_pass() {
        let sink = Sink::default();
        let limited = Limited::new(sink.clone());
        for _ in 0..100 {
            line(&limited, "pingora_core::listeners");
            line(&limited, "pylon::proxy");
        }
        let lines = sink.0.lock().unwrap().clone();
        let from_pingora = lines.iter().filter(|l| l.starts_with("pingora")).count();
        assert_eq!(from_pingora, BURST as usize);
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("pylon::proxy"))
                .count(),
            100
        );
        // The next window starts with the count of what was left out.
        limited.state.lock().unwrap().0 -= WINDOW;
        line(&limited, "pingora_core::listeners");
        let lines = sink.0.lock().unwrap().clone();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("80 similar WARN lines from pingora_core::listeners")),
            "{lines:?}"
        );
    }
}
