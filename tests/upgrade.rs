//! Process life cycle through the real `pylon` binary: graceful upgrade under load (wrk),
//! SIGTERM drain, SIGINT, daemon mode, and the exact commands of `conf/pylon.service`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ops::*;
use common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// wrk's summary: (requests, socket errors, non-2xx/3xx responses).
fn parse_wrk(out: &str) -> (u64, u64, u64) {
    let requests = out
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{out}"));
    let errors = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .map(|part| {
                    part.split_whitespace()
                        .last()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum()
        })
        .unwrap_or(0);
    let non_2xx = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0);
    (requests, errors, non_2xx)
}

#[test]
fn wrk_summary_parser() {
    let out = "  12345 requests in 10.00s, 1.2MB read\n  Socket errors: connect 0, read 2, write 1, timeout 0\n  Non-2xx or 3xx responses: 4\n";
    assert_eq!(parse_wrk(out), (12345, 3, 4));
    assert_eq!(parse_wrk("  7 requests in 1.00s, 1KB read\n"), (7, 0, 0));
}

#[test]
fn graceful_upgrade_under_wrk_load_drops_no_request() {
    let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("wrk is needed for this test (apt-get install wrk; .ci/run installs it)");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let origin = Origin::start(&pki, true);
    let mut old = Pylon::start(
        dir.path(),
        "  graceful_shutdown_timeout: 10\n",
        &founding_resources(origin.port, FOUNDING_TLS, &pki),
    );

    let load = Command::new(wrk)
        .args(["-t1", "-c8", "-d14s", &old.url("/hello")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(LIMIT, || origin.seen().len() > 200),
        "no load reached the origin"
    );

    // The upgrade: start the new process with -u, then SIGQUIT the old one.
    let upgraded_at = Instant::now();
    let new = Command::new(pylon_bin())
        .args(["run", "-c"])
        .arg(&old.conf)
        .arg("-u")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("new.log")).unwrap())
        .spawn()
        .unwrap();
    let mut new = KillOnDrop(new);
    old.signal(libc::SIGQUIT);
    let status = old.wait_exit(LIMIT).expect("old process did not exit");
    assert!(status.success(), "old process: {status}\n{}", old.log());
    let old_gone_after = upgraded_at.elapsed();
    assert!(old.log().contains("listener sockets sent"), "{}", old.log());
    let served_by_new_before = origin.seen().len();

    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (requests, errors, non_2xx) = parse_wrk(&text);
    println!(
        "wrk: {requests} requests, {errors} socket errors, {non_2xx} non-2xx; \
         old process exited {old_gone_after:?} after the upgrade began\n{text}"
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(errors, 0, "socket errors during the upgrade:\n{text}");
    assert_eq!(non_2xx, 0, "failed responses during the upgrade:\n{text}");
    assert!(
        origin.seen().len() > served_by_new_before,
        "the new process served nothing"
    );

    // The new process owns the listener now.
    assert!(new.0.try_wait().unwrap().is_none(), "new process exited");
    assert_eq!(old.get("/hello"), (200, "Hello API7!".into()));
    let new_log = std::fs::read_to_string(dir.path().join("new.log")).unwrap();
    assert!(new_log.contains("Bootstrap done"), "{new_log}");
    assert!(
        !new_log.lines().any(|l| l.contains("ERROR pylon")),
        "{new_log}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_drains_an_in_flight_slow_request_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let mut gw = Pylon::start(
        dir.path(),
        "  graceful_shutdown_timeout: 20\n",
        &plain_routes(origin.port, &[("slow", "/slow")], true),
    );
    let url = gw.url("/slow?ms=1500");
    let request = std::thread::spawn(move || get(&url));
    assert!(wait_until(LIMIT, || origin.received() == 1));

    let signalled = Instant::now();
    gw.signal(libc::SIGTERM);
    // New connections are refused while the slow request is still running…
    assert!(wait_until(LIMIT, || !listening(gw.port)), "still accepting");
    assert_eq!(origin.answered.load(Ordering::SeqCst), 0);
    // … and the slow request completes.
    assert_eq!(request.join().unwrap(), (200, "slow".into()));
    let status = gw.wait_exit(LIMIT).expect("did not exit after draining");
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        gw.log()
            .contains("drained: every client connection is closed"),
        "{}",
        gw.log()
    );
    // Exited once drained, long before graceful_shutdown_timeout (20 s).
    assert!(took < Duration::from_secs(15), "took {took:?}");
    println!("SIGTERM to exit: {took:?} (slow request: 1.5 s)");
}

#[test]
fn sigint_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let mut gw = Pylon::start(
        dir.path(),
        "",
        &plain_routes(origin.port, &[("slow", "/slow")], true),
    );
    let url = gw.url("/slow?ms=30000");
    let request = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .get(url)
            .timeout(Duration::from_secs(60))
            .send()
            .map(|r| r.status().as_u16())
    });
    assert!(wait_until(LIMIT, || origin.received() == 1));
    gw.signal(libc::SIGINT);
    assert!(
        gw.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        gw.log()
    );
    assert!(
        request.join().unwrap().is_err(),
        "in-flight request survived SIGINT"
    );
}

#[test]
fn daemon_mode_writes_pid_file_and_detaches() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let port = free_port();
    let error_log = dir.path().join("error.log");
    write_static(
        dir.path(),
        port,
        &format!("  error_log: {}\n", error_log.display()),
        &plain_routes(origin.port, &[("a", "/a")], true),
    );
    // A relative static-file path: daemon mode must not change directory.
    let status = Command::new(pylon_bin())
        .current_dir(dir.path())
        .args(["run", "-c", "pylon.yaml", "--daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid_file = dir.path().join("pylon.pid");
    let pid = read_pid(&pid_file);
    let _guard = PidGuard(pid);
    assert!(wait_until(LIMIT, || listening(port)));
    assert_eq!(get(&format!("http://127.0.0.1:{port}/a")).0, 200);
    // Hot reload works from the daemon (relative paths still resolve).
    std::fs::write(
        dir.path().join("resources.yaml"),
        plain_routes(origin.port, &[("a", "/a"), ("b", "/b")], true),
    )
    .unwrap();
    assert!(wait_until(LIMIT, || get(&format!(
        "http://127.0.0.1:{port}/b"
    ))
    .0 == 200));

    signal(pid, libc::SIGTERM);
    assert!(
        wait_until(LIMIT, || process_gone(pid)),
        "daemon still running"
    );
    let log = std::fs::read_to_string(&error_log).unwrap();
    assert!(log.contains("config version 2 applied"), "{log}");
}

/// Reads a pid file, waiting (bounded) for it to appear.
fn read_pid(path: &Path) -> u32 {
    let mut pid = None;
    wait_until(LIMIT, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap_or_else(|| panic!("no pid in {}", path.display()))
}

/// Sends SIGKILL to a daemon left running by a failed test.
struct PidGuard(u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if !process_gone(self.0) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// The `Exec*=` command lines of the unit, in file order: (key, command).
fn unit_commands(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("Exec"))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.trim_start_matches(['-', '@', '+', '!', ':']).to_string(),
            )
        })
        .collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// A keep-alive client hammering `url` from `threads` threads until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, errors, url) =
                    (stop.clone(), ok.clone(), errors.clone(), url.to_string());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        match client.get(&url).send() {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes();
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => errors
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status())),
                            Err(e) => errors.lock().unwrap().push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            errors,
            threads,
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.errors.lock().unwrap().clone(),
        )
    }
}

/// Runs one unit command line as systemd would (no shell), with the paths of this test.
fn run_unit_command(line: &str, subst: &[(&str, String)]) -> std::process::ExitStatus {
    let mut line = line.to_string();
    for (from, to) in subst {
        line = line.replace(from, to);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    Command::new(words[0])
        .args(&words[1..])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn systemd_unit_commands_start_reload_and_stop() {
    let unit_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/pylon.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(unit_value(&unit, "Type"), Some("forking"));
    assert_eq!(unit_value(&unit, "PIDFile"), Some("/run/pylon/pylon.pid"));
    assert_eq!(
        unit_value(&unit, "AmbientCapabilities"),
        Some("CAP_NET_BIND_SERVICE")
    );
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), Some("yes"));
    assert_eq!(unit_value(&unit, "ProtectSystem"), Some("strict"));
    assert!(unit_value(&unit, "LimitNOFILE").is_some());

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let origin = PlainOrigin::start();
    let port = free_port();
    let conf = dir.path().join("pylon.yaml");
    std::fs::write(
        &conf,
        format!(
            "gateway:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 1\n  pid_file: {r}/pylon.pid\n  upgrade_sock: {r}/upgrade.sock\n  error_log: {d}/error.log\n  access_log: {{ path: {d}/access.log }}\n  graceful_shutdown_timeout: 10\nresources: resources.yaml\n",
            r = run.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("resources.yaml"),
        plain_routes(origin.port, &[("a", "/*")], true),
    )
    .unwrap();
    let pid_file = run.join("pylon.pid");
    let base: Vec<(&str, String)> = vec![
        ("/usr/local/bin/pylon", pylon_bin().to_string()),
        ("/etc/pylon/pylon.yaml", conf.display().to_string()),
    ];

    // The unit itself is valid for systemd (where systemd-analyze exists).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let mut local = unit.clone();
        for (from, to) in &base {
            local = local.replace(from, to);
        }
        let copy = dir.path().join("pylon.service");
        std::fs::write(&copy, local).unwrap();
        let out = Command::new("/usr/bin/systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify: {stderr}"
        );
    }

    let commands = unit_commands(&unit);
    let keys: Vec<&str> = commands.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ExecStartPre",
            "ExecStart",
            "ExecReload",
            "ExecReload",
            "ExecReload",
            "ExecStop"
        ]
    );
    let with_pid = |pid: u32| {
        let mut s = base.clone();
        s.push(("$MAINPID", pid.to_string()));
        s
    };

    // systemctl start
    for (key, line) in commands.iter().filter(|(k, _)| k.starts_with("ExecStart")) {
        assert!(run_unit_command(line, &base).success(), "{key}={line}");
    }
    let first = read_pid(&pid_file);
    let _g1 = PidGuard(first);
    assert!(wait_until(LIMIT, || listening(port)));
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(get(&url).0, 200);

    // systemctl reload, under load: every ExecReload line in order, $MAINPID = the running pid.
    let load = Load::start(&url, 4);
    assert!(wait_until(LIMIT, || load.ok.load(Ordering::SeqCst) > 50));
    for (key, line) in commands.iter().filter(|(k, _)| k == "ExecReload") {
        assert!(
            run_unit_command(line, &with_pid(first)).success(),
            "{key}={line}"
        );
    }
    let mut second = first;
    assert!(wait_until(LIMIT, || {
        second = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(first);
        second != first
    }));
    let _g2 = PidGuard(second);
    assert!(
        wait_until(LIMIT, || process_gone(first)),
        "old process still running"
    );
    let before = load.ok.load(Ordering::SeqCst);
    assert!(wait_until(LIMIT, || load.ok.load(Ordering::SeqCst) > before + 50));
    let (ok, errors) = load.finish();
    println!(
        "systemctl reload under load: {ok} requests ok, {} failed",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} failed requests: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(!process_gone(second));

    // systemctl stop
    let (_, stop) = commands.iter().find(|(k, _)| k == "ExecStop").unwrap();
    assert!(run_unit_command(stop, &with_pid(second)).success());
    assert!(
        wait_until(LIMIT, || process_gone(second)),
        "still running after ExecStop"
    );
    assert!(
        wait_until(LIMIT, || !listening(port)),
        "port {port} still open: {}",
        String::from_utf8_lossy(&Command::new("ss").args(["-tanp"]).output().unwrap().stdout)
            .lines()
            .filter(|l| l.contains(&format!(":{port}")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
    assert!(log.contains("listener sockets sent"), "{log}");
}
