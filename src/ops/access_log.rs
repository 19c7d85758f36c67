//! The access log: one line per request, nginx's "combined" format followed by the route,
//! the upstream node, the upstream status, the request time and the upstream response time:
//!
//! ```text
//! log_format pylon '$remote_addr - $remote_user [$time_local] "$request" $status '
//!                  '$body_bytes_sent "$http_referer" "$http_user_agent" '
//!                  '"$route_id" $upstream_addr $upstream_status $request_time '
//!                  '$upstream_response_time';
//! ```
//!
//! Missing values are `-` (nginx's convention); times are seconds with millisecond
//! resolution. Quoted values escape `"`, `\` and bytes outside printable ASCII as `\xHH`
//! (nginx's `escape=default`).
//!
//! Workers format their own line, without allocating, into a per-thread batch buffer (one
//! of [`SHARDS`] locked buffers; uncontended, since each worker thread keeps its own); the
//! `[time_local]` text is made once per second per thread. A writer thread collects the
//! batches and writes each with one `write` call: at most [`FLUSH_INTERVAL`] after the first
//! line of a batch, on [`flush`] and before reopening. This is nginx's
//! `access_log path buffer=… flush=…` behaviour: per request there is no syscall, no
//! thread wake-up and no allocation. Lines of different worker threads are ordered within
//! their thread, not across threads (as with several nginx workers). When a thread's buffer
//! holds [`SHARD_LIMIT`] bytes (the disk is that far behind) further lines are dropped and
//! counted (`pylon_access_log_dropped_total`). The writer reopens the file on request
//! (SIGUSR1), so logrotate can move it away.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Uri, Version};
use log::{error, info, warn};

use crate::table::Route;

/// Batch buffers; worker threads take one each, round robin.
pub const SHARDS: usize = 16;
/// Bytes a batch buffer may hold before lines are dropped (the writer is that far behind).
pub const SHARD_LIMIT: usize = 4 << 20;
/// Longest time a line waits in its batch before it is written (nginx's `flush=`).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The writer also looks for lines this often when it heard of none (a lost wake-up).
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Control messages that may wait for the writer.
const QUEUE: usize = 64;

/// What is logged about one request, borrowed from the finished request; formatted on the
/// worker by [`record`].
#[derive(Debug)]
pub struct Entry<'a> {
    /// When the request finished.
    pub time: SystemTime,
    /// The client's address (`None` for Unix sockets).
    pub client: Option<SocketAddr>,
    /// Request method.
    pub method: &'a Method,
    /// Request target as received.
    pub uri: &'a Uri,
    /// HTTP version.
    pub version: Version,
    /// Status sent to the client (499 when the client left before any response).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    /// `Referer` header.
    pub referer: Option<&'a HeaderValue>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a HeaderValue>,
    /// The matched route (its id is logged).
    pub route: Option<&'a Route>,
    /// Index of the upstream node last tried, within the route's upstream.
    pub node: Option<usize>,
    /// Status the upstream answered with.
    pub upstream_status: Option<u16>,
    /// Whole request time.
    pub request_time: Duration,
    /// Time spent on the upstream (first connection attempt to end of its response).
    pub upstream_time: Option<Duration>,
    /// Query arguments whose values are credentials, masked in the line
    /// ([`PluginCtx::secret_args`](crate::plugin::PluginCtx)).
    pub secret_args: &'a [Arc<str>],
}

enum Msg {
    /// A batch has its first line: write it within [`FLUSH_INTERVAL`].
    Wake,
    Reopen,
    Flush(mpsc::Sender<()>),
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, opened for appending (created if missing).
    File(PathBuf),
}

/// The batches and the writer's control channel, installed once per process by [`install`].
struct Shared {
    shards: Box<[Mutex<Vec<u8>>]>,
    /// Set by the first line after a collection; the setter wakes the writer.
    pending: AtomicBool,
    tx: SyncSender<Msg>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// A worker thread's shard and `[time_local]` text.
struct Local {
    shard: usize,
    clock: Clock,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local {
        shard: NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS,
        clock: Clock::default(),
    });
}

fn lock(m: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // A worker that panicked mid-line leaves at worst a partial line: keep logging.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer, ready to run: [`Writer::spawn`] starts its thread (after Pingora has forked
/// into the background, since threads do not survive a fork).
pub struct Writer {
    rx: Receiver<Msg>,
    target: Target,
    out: Box<dyn Write + Send>,
    /// The buffer swapped with a shard's batch; its capacity is reused.
    spare: Vec<u8>,
}

fn open(target: &Target) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(io::stdout()),
        Target::File(path) => Box::new(open_file(path)?),
    })
}

fn open_file(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Opens the target and installs the process-wide batches. Returns the writer, whose thread
/// must still be started.
///
/// Errors: the file cannot be opened for appending, or a logger was already installed.
pub fn install(target: Target) -> io::Result<Writer> {
    let out = open(&target).map_err(|e| {
        let what = match &target {
            Target::File(p) => p.display().to_string(),
            Target::Stdout => "stdout".into(),
        };
        io::Error::new(
            e.kind(),
            format!("gateway.access_log.path: cannot open {what}: {e}"),
        )
    })?;
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let shared = Shared {
        shards: (0..SHARDS)
            .map(|_| Mutex::new(Vec::with_capacity(64 * 1024)))
            .collect(),
        pending: AtomicBool::new(false),
        tx,
    };
    if SHARED.set(shared).is_err() {
        return Err(io::Error::other("access log already installed"));
    }
    Ok(Writer {
        rx,
        target,
        out,
        spare: Vec::with_capacity(64 * 1024),
    })
}

/// Whether access logging is on (a writer was installed).
pub fn enabled() -> bool {
    SHARED.get().is_some()
}

/// Formats the line for `entry` into this thread's batch; drops it (and counts the drop)
/// when the batch is full. Does nothing when the access log is off.
pub fn record(entry: &Entry<'_>) {
    let Some(s) = SHARED.get() else { return };
    let kept = LOCAL.with_borrow_mut(|local| {
        let time_local = local.clock.local(entry.time);
        let mut batch = lock(&s.shards[local.shard]);
        if batch.len() >= SHARD_LIMIT {
            return false;
        }
        format_line(entry, time_local, &mut batch);
        true
    });
    if !kept {
        super::metrics::access_log_dropped();
    } else if !s.pending.load(Ordering::Relaxed) && !s.pending.swap(true, Ordering::AcqRel) {
        // The first line of a batch: the writer collects it within FLUSH_INTERVAL. A full
        // queue already holds a message that wakes it; IDLE_TICK covers the rest.
        let _ = s.tx.try_send(Msg::Wake);
    }
}

/// Asks the writer to write what it holds and reopen its file (after logrotate moved it).
/// Waits for nothing.
pub fn reopen() {
    if let Some(s) = SHARED.get() {
        // Blocking send: a reopen must not be lost, and it is rare.
        let _ = s.tx.send(Msg::Reopen);
    }
}

/// Writes out every line recorded so far; waits at most `limit`.
pub fn flush(limit: Duration) {
    if let Some(s) = SHARED.get() {
        let (ack, done) = mpsc::channel();
        if s.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(limit);
        }
    }
}

impl Writer {
    /// Starts the writer thread.
    ///
    /// Errors: the thread could not be created.
    pub fn spawn(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || self.run())
            .map(|_| ())
    }

    fn run(mut self) {
        let mut failing = false;
        // When the current batch is due (set by the first Wake after a collection).
        let mut due: Option<Instant> = None;
        loop {
            let wait = due.map_or(IDLE_TICK, |d| d.saturating_duration_since(Instant::now()));
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Wake) => {
                    due.get_or_insert_with(|| Instant::now() + FLUSH_INTERVAL);
                }
                Ok(Msg::Reopen) => {
                    failing = self.collect(failing);
                    due = None;
                    self.reopen();
                }
                Ok(Msg::Flush(ack)) => {
                    failing = self.collect(failing);
                    due = None;
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    failing = self.collect(failing);
                    due = None;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.collect(failing);
                    return;
                }
            }
        }
    }

    /// Writes every batch, one `write_all` each, then flushes the target. Returns whether
    /// writing is failing (see [`report`]).
    fn collect(&mut self, mut failing: bool) -> bool {
        let Some(s) = SHARED.get() else {
            return failing;
        };
        s.pending.store(false, Ordering::Release);
        for shard in s.shards.iter() {
            {
                let mut batch = lock(shard);
                if batch.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *batch, &mut self.spare);
            }
            failing = report(self.out.write_all(&self.spare), failing, &self.target);
            self.spare.clear();
        }
        report(self.out.flush(), failing, &self.target)
    }

    fn reopen(&mut self) {
        let Target::File(path) = &self.target else {
            return;
        };
        match open_file(path) {
            Ok(f) => {
                self.out = Box::new(f);
                info!("access log reopened: {}", path.display());
            }
            Err(e) => error!(
                "access log: cannot reopen {}: {e}; still writing to the old file",
                path.display()
            ),
        }
    }
}

/// Logs the first failure of a run of failures, and the recovery.
fn report(r: io::Result<()>, failing: bool, target: &Target) -> bool {
    match (r, failing) {
        (Err(e), false) => {
            warn!("access log: cannot write to {target:?}: {e}");
            true
        }
        (Ok(()), true) => {
            info!("access log: writing to {target:?} again");
            false
        }
        (Err(_), true) => true,
        (Ok(()), false) => false,
    }
}

/// Formats `[time_local]` once per second.
#[derive(Default)]
struct Clock {
    second: u64,
    text: String,
}

impl Clock {
    fn local(&mut self, t: SystemTime) -> &str {
        let second = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            let local: chrono::DateTime<chrono::Local> = t.into();
            self.text = local.format("%d/%b/%Y:%H:%M:%S %z").to_string();
        }
        &self.text
    }
}

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => {
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
            _ => out.push(b),
        }
    }
}

fn push_quoted(out: &mut Vec<u8>, value: Option<&[u8]>) {
    out.push(b'"');
    match value {
        Some(v) if !v.is_empty() => push_escaped(out, v),
        _ => out.push(b'-'),
    }
    out.push(b'"');
}

fn push_uint(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Seconds with millisecond resolution (nginx's `$request_time`: `0.002`), rounded half up.
fn push_seconds(out: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => {
            let ms = (d.as_micros() + 500) / 1000;
            push_uint(out, (ms / 1000) as u64);
            let frac = (ms % 1000) as u16;
            out.extend_from_slice(&[
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ]);
        }
        None => out.push(b'-'),
    }
}

fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Appends the line for `e` (with its newline) to `out`; `time_local` is the request's end
/// time already formatted as nginx's `$time_local` (`10/Oct/2000:13:55:36 -0700`). Allocates
/// only when `out` must grow (or a credential is masked in the query).
pub fn format_line(e: &Entry<'_>, time_local: &str, out: &mut Vec<u8>) {
    match e.client {
        Some(a) => {
            let _ = write!(out, "{}", a.ip());
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(time_local.as_bytes());
    out.extend_from_slice(b"] \"");
    push_escaped(out, e.method.as_str().as_bytes());
    out.push(b' ');
    // The request target as nginx's $request shows it: path and query, also for HTTP/2,
    // whose URI carries scheme and authority.
    match e.uri.path_and_query() {
        Some(pq) if e.secret_args.is_empty() => push_escaped(out, pq.as_str().as_bytes()),
        Some(pq) => push_escaped(
            out,
            crate::plugin::vars::mask_args(pq.as_str(), e.secret_args).as_bytes(),
        ),
        None => push_escaped(out, e.uri.to_string().as_bytes()),
    }
    out.push(b' ');
    out.extend_from_slice(version_text(e.version).as_bytes());
    out.extend_from_slice(b"\" ");
    push_uint(out, u64::from(e.status));
    out.push(b' ');
    push_uint(out, e.bytes as u64);
    out.push(b' ');
    push_quoted(out, e.referer.map(HeaderValue::as_bytes));
    out.push(b' ');
    push_quoted(out, e.user_agent.map(HeaderValue::as_bytes));
    out.push(b' ');
    push_quoted(out, e.route.map(|r| r.id.as_bytes()));
    out.push(b' ');
    let node = match (e.route, e.node) {
        (Some(r), Some(i)) => r.upstream.nodes.get(i).map(|n| n.label.as_str()),
        _ => None,
    };
    out.extend_from_slice(node.unwrap_or("-").as_bytes());
    out.push(b' ');
    match e.upstream_status {
        Some(s) => push_uint(out, u64::from(s)),
        None => out.push(b'-'),
    }
    out.push(b' ');
    push_seconds(out, Some(e.request_time));
    out.push(b' ');
    push_seconds(out, e.upstream_time);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(uri: &'a Uri, ua: &'a HeaderValue, secret: &'a [Arc<str>]) -> Entry<'a> {
        Entry {
            time: UNIX_EPOCH,
            client: Some("192.0.2.7:5555".parse().unwrap()),
            method: &Method::GET,
            uri,
            version: Version::HTTP_11,
            status: 404,
            bytes: 35,
            referer: None,
            user_agent: Some(ua),
            route: None,
            node: None,
            upstream_status: None,
            request_time: Duration::from_micros(1500),
            upstream_time: None,
            secret_args: secret,
        }
    }

    #[test]
    fn combined_plus_pylon_fields() {
        let uri: Uri = "https://api.example.com:9443/a?b=c&apikey=s3cret"
            .parse()
            .unwrap();
        let ua = HeaderValue::from_static("curl/8 \"x\"");
        let secret = [Arc::from("apikey")];
        let mut out = Vec::new();
        format_line(
            &entry(&uri, &ua, &secret),
            "01/Jan/1970:00:00:00 +0000",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "192.0.2.7 - - [01/Jan/1970:00:00:00 +0000] \"GET /a?b=c&apikey=*** HTTP/1.1\" 404 35 \"-\" \
             \"curl/8 \\x22x\\x22\" \"-\" - - 0.002 -\n"
        );
    }

    #[test]
    fn clock_formats_like_nginx() {
        let mut c = Clock::default();
        let text = c
            .local(UNIX_EPOCH + Duration::from_secs(86_400 * 365))
            .to_string();
        // e.g. 01/Jan/1971:00:00:00 +0000 (local zone)
        assert_eq!(text.len(), 26, "{text}");
        assert_eq!(&text[2..3], "/");
        assert_eq!(&text[6..7], "/");
    }

    #[test]
    fn numbers_versions_and_escapes_without_fmt() {
        let uri: Uri = "/p%20q?x=\u{7f}"
            .parse()
            .unwrap_or_else(|_| "/p".parse().unwrap());
        let ua = HeaderValue::from_bytes(b"a\\b\t\xe9").unwrap();
        let mut e = entry(&uri, &ua, &[]);
        e.version = Version::HTTP_2;
        e.status = 200;
        e.bytes = 1_234_567;
        e.upstream_status = Some(502);
        e.request_time = Duration::from_micros(12_345_499);
        e.upstream_time = Some(Duration::ZERO);
        e.client = None;
        let mut out = Vec::new();
        format_line(&e, "T", &mut out);
        let line = String::from_utf8(out).unwrap();
        let pq = uri.path_and_query().unwrap().as_str();
        assert_eq!(
            line,
            format!(
                "- - - [T] \"GET {pq} HTTP/2.0\" 200 1234567 \"-\" \"a\\x5Cb\\x09\\xE9\" \"-\" - 502 12.345 0.000\n"
            )
        );
    }

    #[test]
    fn push_uint_and_seconds_match_fmt() {
        for n in [0u64, 7, 10, 99, 100, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_uint(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        for us in [0u64, 499, 500, 1_000, 999_499, 999_500, 61_000_000] {
            let mut out = Vec::new();
            push_seconds(&mut out, Some(Duration::from_micros(us)));
            let ms = (us + 500) / 1000;
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{}.{:03}", ms / 1000, ms % 1000),
                "{us} µs"
            );
        }
    }
}
