#!/usr/bin/env python3
"""Pylon load harness: Pylon, nginx and HAProxy on the same mTLS proxy job, side by side.

Run through `benches/load/run.sh` (which builds Pylon and makes the PKI first). Per scenario
this starts the nginx mTLS origin(s) and the targets, then runs `wrk --latency` against each
target in turn: one warm-up run each, then BENCH_ROUNDS rounds (the starting target rotates
every round). It prints markdown tables on stdout; progress goes to stderr.

Targets (each with one worker process/thread, access log off unless said):
  direct   wrk -> plain-HTTP nginx answering the origin's body (no proxy: the rig's ceiling)
  pingora  wrk -> a bare Pingora proxy (benches/pingora_bare.rs) -> HTTPS + client cert -> origin:
           the floor of what Pingora costs on this job
  pylon    wrk -> Pylon   -> HTTPS + client certificate -> origin
  pylon_ws as pylon, with the work-stealing runtime (Pingora's default)
  pylon_prod     as pylon in production settings: access log to a file, metrics listener on
  pylon_plugins  as pylon, the route with key-auth + limit-count (local) + proxy-rewrite
  pylon_ab as pylon, with BENCH_AB_ENV in its environment and BENCH_AB_POOL_SIZE as its
           upstream_keepalive_pool_size: the B side of a lever (src/proxy/levers.rs)
  nginx    wrk -> nginx   -> HTTPS + client certificate -> origin
  nginx_log      as nginx, with `access_log` to a file (combined format, nginx's default)
  haproxy  wrk -> HAProxy -> HTTPS + client certificate -> origin
  caddy    wrk -> Caddy 2 (reverse_proxy, tls_client_auth, tls_trusted_ca_certs) -> origin,
           GOMAXPROCS=1
The target runs on BENCH_PROXY_CPU; wrk and the origin(s) share BENCH_LOAD_CPU.

Measures per target: requests/s (median of rounds), p50/p99 latency (median of rounds),
CPU seconds per 10k requests (utime+stime of the target's processes, all threads, from
/proc/PID/stat, over the measured rounds), peak RSS (largest VmHWM among its processes,
/proc/PID/status), socket errors and non-2xx/3xx responses (wrk; over all runs, warm-up
included), and new upstream TLS connections per 10k requests (lines in the origin's log of
connections' first requests, over the measured rounds; also counted without each run's
first second). The wrk parsing and the tables live in report.py (tests: test_report.py,
`python3 -m unittest discover benches/load`).

Environment (defaults in brackets):
  BENCH_DIR          work folder holding certs/ (required; run.sh makes it)
  BENCH_PYLON        path of the release pylon binary (required)
  BENCH_DURATION     seconds per measured run [10]
  BENCH_WARMUP       seconds of the warm-up run per target [5]
  BENCH_ROUNDS       measured rounds, at least 3 [3]
  BENCH_CONNECTIONS  wrk connections in the default scenarios [32]
  BENCH_WRK_THREADS  wrk threads [1]
  BENCH_SCENARIOS    comma list of single, weighted, c256 [all three]
  BENCH_TARGETS      comma list of the targets above [all]
  BENCH_PINGORA      path of the release pingora-bare example (run.sh builds it)
  BENCH_AB_ENV       pylon_ab's extra environment, space-separated NAME=VALUE
                     (e.g. PYLON_BENCH_COMPRESSION_MODULE=1, MIMALLOC_PURGE_DELAY=0) [none]
  BENCH_AB_POOL_SIZE pylon_ab's upstream_keepalive_pool_size [as the others]
  BENCH_PROXY_CPU    CPU for the target [0];  BENCH_LOAD_CPU  CPU for wrk + origins [1]
  BENCH_KEEP         1 = run.sh keeps the work folder (generated configs, logs) [0]
"""

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field

from report import LABELS, NOTES, machine, parse_wrk, table

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = b"Hello API7!"
ALL_TARGETS = ["direct", "pingora", "pylon", "pylon_ws", "pylon_prod", "pylon_plugins",
               "nginx", "nginx_log", "haproxy", "caddy"]
# Run only when asked for (BENCH_TARGETS).
EXTRA_TARGETS = ["pylon_ab"]
PYLON_TARGETS = ("pylon", "pylon_ws", "pylon_prod", "pylon_plugins", "pylon_ab")
# Every request carries this header (wrk and the readiness probe); pylon_plugins' key-auth
# checks it, the other targets ignore it.
API_KEY = "bench-key-0123456789"
# pylon_plugins: the route's plugins (issue 13's benchmark: key-auth + limit-count (local,
# never reached) + proxy-rewrite), and the consumer key-auth looks up.
PLUGINS = """    plugins:
      key-auth: {}
      limit-count: { count: 1000000000, time_window: 60 }
      proxy-rewrite: { uri: /hello, headers: { set: { X-Gateway: pylon } } }"""
CONSUMERS = f"""consumers:
  - username: bench
    plugins:
      key-auth: {{ key: {API_KEY} }}"""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_int(name, default, minimum=1):
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        sys.exit(f"{name}: expected an integer, got {raw!r}")
    if value < minimum:
        sys.exit(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_list(name, allowed, extra=()):
    items = [s.strip() for s in os.environ.get(name, ",".join(allowed)).split(",") if s.strip()]
    allowed = [*allowed, *extra]
    for item in items:
        if item not in allowed:
            sys.exit(f"{name}: unknown {item!r} (choose from {', '.join(allowed)})")
    return items


@dataclass
class Settings:
    dir: str
    pylon: str
    pingora: str
    duration: int
    warmup: int
    rounds: int
    connections: int
    wrk_threads: int
    scenarios: list
    targets: list
    proxy_cpu: str
    load_cpu: str

    @property
    def certs(self):
        return os.path.join(self.dir, "certs")

    @staticmethod
    def from_env():
        for name in ("BENCH_DIR", "BENCH_PYLON"):
            if not os.environ.get(name):
                sys.exit(f"{name} is not set; run benches/load/run.sh")
        return Settings(
            dir=os.environ["BENCH_DIR"],
            pylon=os.environ["BENCH_PYLON"],
            pingora=os.environ.get("BENCH_PINGORA", ""),
            duration=env_int("BENCH_DURATION", 10),
            warmup=env_int("BENCH_WARMUP", 5),
            rounds=env_int("BENCH_ROUNDS", 3, minimum=3),
            connections=env_int("BENCH_CONNECTIONS", 32),
            wrk_threads=env_int("BENCH_WRK_THREADS", 1),
            scenarios=env_list("BENCH_SCENARIOS", list(SCENARIOS)),
            targets=env_list("BENCH_TARGETS", ALL_TARGETS, EXTRA_TARGETS),
            proxy_cpu=str(env_int("BENCH_PROXY_CPU", 0, minimum=0)),
            load_cpu=str(env_int("BENCH_LOAD_CPU", 1, minimum=0)),
        )


@dataclass
class Scenario:
    title: str
    weights: list  # one upstream node (origin) per weight
    connections: int = 0  # 0 = BENCH_CONNECTIONS


SCENARIOS = {
    "single": Scenario("1 node", [1]),
    "weighted": Scenario("2 weighted nodes (3:1)", [3, 1]),
    "c256": Scenario("1 node", [1], connections=256),
}


# ---------------------------------------------------------------- processes and /proc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def proc_tree(root):
    """`root` and its descendants (nginx: master + worker)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(rest[1])
            except (OSError, IndexError):
                pass
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(p for p, pp in parents.items() if pp == pid)
    return tree


def cpu_ticks(pids):
    """utime + stime (clock ticks) of processes; each process's line counts all its threads."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total


def largest_status_kib(pids, field):
    """The largest value of /proc/PID/status `field` (VmRSS, VmHWM; KiB) among processes."""
    best = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    best = max(best, int(line.split()[1]))
    return best


class Procs:
    """Started processes, stopped in reverse order; pids also go to DIR/pids for run.sh's trap."""

    # Fast shutdown for each: nginx and HAProxy on SIGTERM, Pingora on SIGINT.
    STOP_SIGNAL = {"pylon": signal.SIGINT, "pingora-bare": signal.SIGINT}

    def __init__(self, settings):
        self.s = settings
        self.running = []  # (label, Popen)
        self.pid_file = os.path.join(settings.dir, "pids")

    def record(self, pid, name=None):
        """Notes `pid` for run.sh's trap, which kills it only if its comm is still `name`."""
        with open(self.pid_file, "a") as f:
            f.write(f"{pid} {(name or comm(pid))[:15]}\n")

    def start(self, label, argv, cpu, env=None):
        out = open(os.path.join(self.s.dir, f"{label}.out.log"), "ab")
        proc = subprocess.Popen(
            ["taskset", "-c", cpu, *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=self.s.dir,
        )
        out.close()
        self.running.append((label, proc))
        self.record(proc.pid, os.path.basename(argv[0]))  # its name once taskset has exec'd
        return proc

    def ready(self, label, proc, probe):
        """Polls `probe()` (True when serving) for up to 20 s; records the process tree."""
        deadline = time.monotonic() + 20
        last = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.fail(label, f"exited with status {proc.returncode} during startup")
            try:
                if probe():
                    for child in proc_tree(proc.pid)[1:]:  # nginx's worker
                        self.record(child)
                    return
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                last = e
            time.sleep(0.1)
        self.fail(label, f"not serving after 20 s (last error: {last})")

    def fail(self, label, why):
        path = os.path.join(self.s.dir, f"{label}.out.log")
        try:
            with open(path, errors="replace") as f:
                tail = "".join(f.readlines()[-20:])
        except OSError:
            tail = ""
        raise SystemExit(f"{label}: {why}\n--- {path} (last lines) ---\n{tail}")

    def stop_all(self):
        while self.running:
            label, proc = self.running.pop()
            if proc.poll() is not None:
                continue
            tree = [(p, comm(p)) for p in proc_tree(proc.pid)]
            proc.send_signal(self.STOP_SIGNAL.get(comm(proc.pid), signal.SIGTERM))
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{label} did not stop within 10 s; SIGKILL")
                proc.kill()
                proc.wait()
            for pid, name in tree[1:]:  # orphaned children, if the parent died abruptly
                if name and comm(pid) == name:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


# ---------------------------------------------------------------- configs


def render(template, out_name, settings, **values):
    values = {
        "DIR": settings.dir,
        "CERTS": settings.certs,
        "NGINX_USER": "user root;" if os.geteuid() == 0 else "",
        **{k: str(v) for k, v in values.items()},
    }
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    text = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], text)
    path = os.path.join(settings.dir, out_name)
    with open(path, "w") as f:
        f.write(text)
    return path


def http_ok(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/hello", headers={"apikey": API_KEY})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or body != BODY:
        raise http.client.HTTPException(f"GET /hello -> {resp.status} {body[:80]!r}")
    return True


def mtls_ok(port, certs):
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
    ctx.load_cert_chain(os.path.join(certs, "client.crt"), os.path.join(certs, "client.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        with ctx.wrap_socket(raw, server_hostname="test.com") as tls:
            tls.sendall(b"GET /hello HTTP/1.1\r\nHost: test.com\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(BODY):
        raise http.client.HTTPException(f"mTLS GET /hello -> {data[:80]!r}")
    return True


def start_nginx(procs, label, conf, cpu, probe):
    s = procs.s
    err = os.path.join(s.dir, f"{label}-error.log")
    proc = procs.start(label, ["nginx", "-p", s.dir + "/", "-c", conf, "-e", err], cpu)
    procs.ready(label, proc, probe)
    return proc


def start_origins(procs, weights):
    s = procs.s
    ports, logs = [], []
    for i, _ in enumerate(weights):
        name = f"o{i + 1}"
        port = free_port()
        os.makedirs(os.path.join(s.dir, f"tmp-origin-{name}"), exist_ok=True)
        conf = render("origin.nginx.conf.tmpl", f"origin-{name}.nginx.conf", s, NAME=name, PORT=port)
        start_nginx(procs, f"origin-{name}", conf, s.load_cpu, lambda p=port: mtls_ok(p, s.certs))
        ports.append(port)
        logs.append(os.path.join(s.dir, f"origin-{name}-conn.log"))
    return ports, logs


def start_target(procs, name, nodes, pool_size):
    """Starts target `name` proxying to `nodes` [(port, weight)]; returns (port, pid)."""
    s = procs.s
    port = free_port()
    probe = lambda: http_ok(port)  # noqa: E731
    if name == "direct":
        os.makedirs(os.path.join(s.dir, "tmp-direct"), exist_ok=True)
        conf = render("direct.nginx.conf.tmpl", "direct.nginx.conf", s, PORT=port)
        proc = start_nginx(procs, "direct", conf, s.proxy_cpu, probe)
    elif name in ("nginx", "nginx_log"):
        os.makedirs(os.path.join(s.dir, f"tmp-{name}"), exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{p} weight={w};" for p, w in nodes)
        access_log = (f"access_log {s.dir}/{name}-access.log combined;" if name == "nginx_log"
                      else "access_log off;")
        conf = render("proxy.nginx.conf.tmpl", f"{name}.nginx.conf", s, NAME=name,
                      PORT=port, UPSTREAM_SERVERS=servers, POOL_SIZE=pool_size,
                      ACCESS_LOG=access_log)
        proc = start_nginx(procs, name, conf, s.proxy_cpu, probe)
    elif name == "haproxy":
        servers = "\n".join(f"    server n{i + 1} 127.0.0.1:{p} weight {w}"
                            for i, (p, w) in enumerate(nodes))
        conf = render("haproxy.cfg.tmpl", "haproxy.cfg", s, PORT=port, BACKEND_SERVERS=servers)
        subprocess.run(["haproxy", "-c", "-q", "-f", conf], check=True)
        proc = procs.start("haproxy", ["haproxy", "-db", "-f", conf], s.proxy_cpu)
        procs.ready("haproxy", proc, probe)
    elif name == "caddy":
        os.makedirs(os.path.join(s.dir, "caddy-home"), exist_ok=True)
        # Caddy 2.6 has no weighted round robin: a node of weight w is listed w times.
        upstreams = " ".join(f"127.0.0.1:{p}" for p, w in nodes for _ in range(w))
        conf = render("Caddyfile.tmpl", "Caddyfile", s, PORT=port, UPSTREAMS=upstreams,
                      POOL_SIZE=pool_size)
        home = os.path.join(s.dir, "caddy-home")
        env = {"HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home, "GOMAXPROCS": "1"}
        check = subprocess.run(["caddy", "validate", "--config", conf, "--adapter", "caddyfile"],
                               capture_output=True, text=True, env={**os.environ, **env})
        if check.returncode != 0:
            sys.exit(f"caddy validate {conf}:\n{check.stdout}{check.stderr}")
        proc = procs.start("caddy", ["caddy", "run", "--config", conf, "--adapter", "caddyfile"],
                           s.proxy_cpu, env=env)
        procs.ready("caddy", proc, probe)
    elif name == "pingora":
        if not s.pingora:
            sys.exit("BENCH_PINGORA is not set; run benches/load/run.sh")
        spec = ",".join(f"127.0.0.1:{p}*{w}" for p, w in nodes)
        proc = procs.start("pingora", [s.pingora, f"127.0.0.1:{port}", spec, s.certs,
                                       str(pool_size), "1", "false"], s.proxy_cpu)
        procs.ready("pingora", proc, probe)
    elif name in PYLON_TARGETS:
        node_lines = "\n".join(f"      - {{host: 127.0.0.1, port: {p}, weight: {w}}}"
                               for p, w in nodes)
        plugins = name == "pylon_plugins"
        render("pylon-resources.yaml.tmpl", f"{name}-resources.yaml", s, NODES=node_lines,
               PLUGINS=PLUGINS if plugins else "", CONSUMERS=CONSUMERS if plugins else "")
        # "pylon": Pingora's per-thread runtimes (work_stealing: false, measured faster);
        # "pylon_ws": the work-stealing runtime, Pingora's default.
        # "pylon_prod": the access log to a file and the metrics listener, as operators run it.
        prod = name == "pylon_prod"
        access_log = (f"{{ path: {s.dir}/pylon_prod-access.log }}" if prod
                      else "{ enabled: false }")
        metrics = f'metrics_listen: "127.0.0.1:{free_port()}"' if prod else ""
        env = {"RUST_LOG": "warn"}
        if name == "pylon_ab":
            env.update(kv.split("=", 1) for kv in os.environ.get("BENCH_AB_ENV", "").split())
            pool_size = env_int("BENCH_AB_POOL_SIZE", pool_size)
        conf = render("pylon.yaml.tmpl", f"{name}.yaml", s, PORT=port, POOL_SIZE=pool_size,
                      WORK_STEALING="true" if name == "pylon_ws" else "false",
                      RESOURCES=f"{name}-resources.yaml", ACCESS_LOG=access_log,
                      METRICS=metrics)
        subprocess.run([s.pylon, "check", "-c", conf], check=True, stdout=subprocess.DEVNULL)
        # Pylon logs at info to stderr by default: warn keeps the log out of the measurement.
        proc = procs.start(name, [s.pylon, "run", "-c", conf], s.proxy_cpu, env=env)
        procs.ready(name, proc, probe)
    else:
        raise ValueError(name)
    return port, proc.pid


# ---------------------------------------------------------------- wrk

def run_wrk(procs, port, connections, seconds):
    s = procs.s
    argv = ["taskset", "-c", s.load_cpu, "wrk", "--latency", "-t", str(s.wrk_threads),
            "-c", str(connections), "-d", f"{seconds}s", "--timeout", "2s",
            "-H", f"apikey: {API_KEY}", f"http://127.0.0.1:{port}/hello"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.record(proc.pid, "wrk")
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"wrk did not finish within {seconds + 60} s")
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}): {err}{out}")
    return parse_wrk(out)


def conn_times(paths):
    """Times (epoch seconds) of the new connections logged by the origins so far."""
    times = []
    for path in paths:
        try:
            with open(path) as f:
                times.extend(float(line.split()[0]) for line in f if line.strip())
        except FileNotFoundError:
            pass
    return times


# ---------------------------------------------------------------- one scenario


@dataclass
class TargetResult:
    runs: list = field(default_factory=list)  # parsed wrk, measured rounds
    errors: int = 0  # all runs, warm-up included
    non2xx: int = 0
    cpu_ticks: int = 0
    new_conns: int = 0  # measured rounds
    new_conns_steady: int = 0  # measured rounds, each run's first second left out
    idle_rss_kib: int = 0  # once serving, before any load
    rss_kib: int = 0


def run_scenario(s, key):
    sc = SCENARIOS[key]
    conns = sc.connections or s.connections
    pool_size = max(1024, conns)
    procs = Procs(s)
    results = {t: TargetResult() for t in s.targets}
    try:
        ports, conn_logs = start_origins(procs, sc.weights)
        nodes = list(zip(ports, sc.weights))
        targets = {}
        for t in s.targets:
            port, pid = start_target(procs, t, nodes, pool_size)
            targets[t] = (port, proc_tree(pid))
            results[t].idle_rss_kib = largest_status_kib(targets[t][1], "VmRSS")
            log(f"{sc.title}: {t} ready on :{port} (pids {targets[t][1]})")

        def one(t, seconds, measured):
            port, pids = targets[t]
            ticks0, conns0, t0 = cpu_ticks(pids), len(conn_times(conn_logs)), time.time()
            r = run_wrk(procs, port, conns, seconds)
            ticks1, times = cpu_ticks(pids), conn_times(conn_logs)
            conns1 = len(times)
            steady = sum(1 for t in times if t >= t0 + 1)
            res = results[t]
            res.errors += r["errors"]
            res.non2xx += r["non2xx"]
            if measured:
                res.runs.append(r)
                res.cpu_ticks += ticks1 - ticks0
                res.new_conns += conns1 - conns0
                res.new_conns_steady += steady
            log(f"{sc.title}: {t:8} {'run' if measured else 'warm-up'}: {r['rps']:9.0f} req/s "
                f"p99 {r['p99']:.2f} ms, new upstream conns {conns1 - conns0} "
                f"({steady} after the first second), "
                f"errors {r['errors']}, non-2xx {r['non2xx']}")

        for t in s.targets:
            one(t, s.warmup, False)
        for i in range(s.rounds):
            order = s.targets[i % len(s.targets):] + s.targets[:i % len(s.targets)]
            for t in order:
                one(t, s.duration, True)
        for t, (_, pids) in targets.items():
            results[t].rss_kib = largest_status_kib(pids, "VmHWM")
    finally:
        procs.stop_all()
    return sc, conns, results


def main():
    s = Settings.from_env()
    ab = " ".join([os.environ.get("BENCH_AB_ENV", ""),
                   f"pool {os.environ['BENCH_AB_POOL_SIZE']}"
                   if os.environ.get("BENCH_AB_POOL_SIZE") else ""]).strip()
    LABELS["pylon_ab"] = f"Pylon, B: {ab or 'no change'}"
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: sys.exit(f"stopped by signal {n}"))
    log(f"rounds {s.rounds} x {s.duration} s after a {s.warmup} s warm-up; targets "
        f"{','.join(s.targets)}; scenarios {','.join(s.scenarios)}; target on CPU {s.proxy_cpu}, "
        f"wrk + origins on CPU {s.load_cpu}")
    tables = [table(*run_scenario(s, key)) for key in s.scenarios]
    print("## Load benchmark\n")
    print(machine())
    print(f"- settings: BENCH_DURATION={s.duration} BENCH_WARMUP={s.warmup} "
          f"BENCH_ROUNDS={s.rounds} BENCH_WRK_THREADS={s.wrk_threads}; target pinned to CPU "
          f"{s.proxy_cpu}, wrk + origin(s) to CPU {s.load_cpu}\n")
    print(NOTES)
    print("\n".join(text for text, _ in tables))
    if any(failed for _, failed in tables):
        log("FAILED: errors or non-2xx responses above (they must be 0)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
