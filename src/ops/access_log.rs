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
//! Workers never touch the disk: [`record`] hands the entry to a bounded channel and a
//! writer thread formats and writes it. When the channel is full the line is dropped and
//! counted (`pylon_access_log_dropped_total`). The writer flushes whenever the channel runs
//! empty and reopens the file on request (SIGUSR1), so logrotate can move it away.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Uri, Version};
use log::{error, info, warn};

use crate::table::Route;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 8192;

/// What is logged about one request. Built on the worker from cheap clones; formatted on
/// the writer thread.
#[derive(Debug)]
pub struct Entry {
    /// When the request finished.
    pub time: SystemTime,
    /// The client's address (`None` for Unix sockets).
    pub client: Option<SocketAddr>,
    /// Request method.
    pub method: Method,
    /// Request target as received.
    pub uri: Uri,
    /// HTTP version.
    pub version: Version,
    /// Status sent to the client (499 when the client left before any response).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    /// `Referer` header.
    pub referer: Option<HeaderValue>,
    /// `User-Agent` header.
    pub user_agent: Option<HeaderValue>,
    /// The matched route (its id is logged; the `Arc` avoids copying strings per request).
    pub route: Option<Arc<Route>>,
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
    pub secret_args: Vec<Arc<str>>,
}

// Lines are nearly every message: boxing them would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Line(Entry),
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

/// The sending side, installed once per process by [`install`].
struct Sender {
    tx: SyncSender<Msg>,
}

static SENDER: OnceLock<Sender> = OnceLock::new();

/// The writer, ready to run: [`Writer::spawn`] starts its thread (after Pingora has forked
/// into the background, since threads do not survive a fork).
pub struct Writer {
    rx: Receiver<Msg>,
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
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

/// Opens the target and installs the process-wide sender. Returns the writer, whose thread
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
    if SENDER.set(Sender { tx }).is_err() {
        return Err(io::Error::other("access log already installed"));
    }
    Ok(Writer {
        rx,
        target,
        out: BufWriter::with_capacity(64 * 1024, out),
    })
}

/// Whether access logging is on (a writer was started).
pub fn enabled() -> bool {
    SENDER.get().is_some()
}

/// Queues one line; drops it (and counts the drop) when the writer is behind. Does nothing
/// when the access log is off.
pub fn record(entry: Entry) {
    let Some(s) = SENDER.get() else { return };
    match s.tx.try_send(Msg::Line(entry)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => super::metrics::access_log_dropped(),
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// Asks the writer to reopen its file (after logrotate moved it). Waits for nothing.
pub fn reopen() {
    if let Some(s) = SENDER.get() {
        // Blocking send: a reopen must not be lost, and it is rare.
        let _ = s.tx.send(Msg::Reopen);
    }
}

/// Writes out everything queued so far; waits at most `limit`.
pub fn flush(limit: Duration) {
    if let Some(s) = SENDER.get() {
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
        let mut line = String::with_capacity(512);
        let mut clock = Clock::default();
        let mut failing = false;
        while let Ok(first) = self.rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Line(e) => {
                        line.clear();
                        format_line(&e, clock.local(e.time), &mut line);
                        let r = self.out.write_all(line.as_bytes());
                        failing = report(r, failing, &self.target);
                    }
                    Msg::Reopen => self.reopen(),
                    Msg::Flush(ack) => {
                        failing = report(self.out.flush(), failing, &self.target);
                        let _ = ack.send(());
                    }
                }
                next = self.rx.try_recv().ok();
            }
            failing = report(self.out.flush(), failing, &self.target);
        }
    }

    fn reopen(&mut self) {
        let _ = self.out.flush();
        let Target::File(path) = &self.target else {
            return;
        };
        match open_file(path) {
            Ok(f) => {
                self.out = BufWriter::with_capacity(64 * 1024, Box::new(f));
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

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => {
                let _ = write!(out, "\\x{b:02X}");
            }
            _ => out.push(char::from(b)),
        }
    }
}

fn push_quoted(out: &mut String, value: Option<&[u8]>) {
    out.push('"');
    match value {
        Some(v) if !v.is_empty() => push_escaped(out, v),
        _ => out.push('-'),
    }
    out.push('"');
}

fn push_seconds(out: &mut String, d: Option<Duration>) {
    match d {
        Some(d) => {
            let _ = write!(out, "{:.3}", d.as_secs_f64());
        }
        None => out.push('-'),
    }
}

/// Appends the line for `e` (with its newline) to `out`; `time_local` is the request's end
/// time already formatted as nginx's `$time_local` (`10/Oct/2000:13:55:36 -0700`).
pub fn format_line(e: &Entry, time_local: &str, out: &mut String) {
    match e.client {
        Some(a) => {
            let _ = write!(out, "{}", a.ip());
        }
        None => out.push('-'),
    }
    let _ = write!(out, " - - [{time_local}] \"");
    push_escaped(out, e.method.as_str().as_bytes());
    out.push(' ');
    // The request target as nginx's $request shows it: path and query, also for HTTP/2,
    // whose URI carries scheme and authority.
    match e.uri.path_and_query() {
        Some(pq) => push_escaped(
            out,
            crate::plugin::vars::mask_args(pq.as_str(), &e.secret_args).as_bytes(),
        ),
        None => push_escaped(out, e.uri.to_string().as_bytes()),
    }
    let _ = write!(out, " {:?}\" {} {} ", e.version, e.status, e.bytes);
    push_quoted(out, e.referer.as_ref().map(HeaderValue::as_bytes));
    out.push(' ');
    push_quoted(out, e.user_agent.as_ref().map(HeaderValue::as_bytes));
    out.push(' ');
    push_quoted(out, e.route.as_ref().map(|r| r.id.as_bytes()));
    out.push(' ');
    let node = match (&e.route, e.node) {
        (Some(r), Some(i)) => r.upstream.nodes.get(i).map(|n| n.label.as_str()),
        _ => None,
    };
    out.push_str(node.unwrap_or("-"));
    out.push(' ');
    match e.upstream_status {
        Some(s) => {
            let _ = write!(out, "{s}");
        }
        None => out.push('-'),
    }
    out.push(' ');
    push_seconds(out, Some(e.request_time));
    out.push(' ');
    push_seconds(out, e.upstream_time);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH,
            client: Some("192.0.2.7:5555".parse().unwrap()),
            method: Method::GET,
            uri: "https://api.example.com:9443/a?b=c&apikey=s3cret"
                .parse()
                .unwrap(),
            version: Version::HTTP_11,
            status: 404,
            bytes: 35,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"x\"")),
            route: None,
            node: None,
            upstream_status: None,
            request_time: Duration::from_micros(1500),
            upstream_time: None,
            secret_args: vec![std::sync::Arc::from("apikey")],
        }
    }

    #[test]
    fn combined_plus_pylon_fields() {
        let mut out = String::new();
        format_line(&entry(), "01/Jan/1970:00:00:00 +0000", &mut out);
        assert_eq!(
            out,
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
}
