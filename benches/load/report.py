"""Load harness reporting: wrk output parsing and the markdown tables (used by bench.py)."""

import datetime
import os
import platform
import re
import statistics
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK")

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable wrk time {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out):
    """wrk 4 `--latency` output -> requests, rps, p50 and p99 (ms), socket errors, non-2xx."""
    def grab(pattern, conv=float, default=None):
        m = re.search(pattern, out, re.M)
        if not m:
            if default is None:
                raise ValueError(f"wrk output lacks /{pattern}/:\n{out}")
            return default
        return conv(m.group(1)) if m.lastindex == 1 else tuple(conv(g) for g in m.groups())

    errors = grab(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                  int, (0, 0, 0, 0))
    return {
        "requests": grab(r"^\s*(\d+) requests in", int),
        "rps": grab(r"^Requests/sec:\s*([\d.]+)"),
        "p50": grab(r"^\s*50%\s+(\S+)", to_ms),
        "p99": grab(r"^\s*99%\s+(\S+)", to_ms),
        "errors": sum(errors),
        "non2xx": grab(r"Non-2xx or 3xx responses: (\d+)", int, 0),
    }


LABELS = {
    "direct": "direct (no proxy)",
    "pylon": "Pylon",
    "pylon_ws": "Pylon (work_stealing: true)",
    "pylon_plugins": "Pylon + key-auth, limit-count, proxy-rewrite",
    "pylon_prod": "Pylon, production settings (access log file + metrics)",
    "pylon_ab": "Pylon, lever B (BENCH_AB_ENV)",
    "pingora": "bare Pingora proxy",
    "nginx": "nginx",
    "nginx_log": "nginx with access_log",
    "haproxy": "HAProxy",
    "caddy": "Caddy",
}


def ratio(value, base):
    return f"{value / base:.2f}×" if base else "—"


def per_10k(count, requests):
    return f"{count / requests * 10000:.2f}" if requests else "—"


def reuse_pct(count, requests):
    return f"{100 * (1 - count / requests):.3f}%" if requests else "—"


def table(sc, conns, results):
    """Markdown for one scenario, and whether any run had errors or non-2xx responses."""
    summary = {}
    for t, res in results.items():
        reqs = sum(r["requests"] for r in res.runs)
        summary[t] = {
            "rps": statistics.median(r["rps"] for r in res.runs),
            "p50": statistics.median(r["p50"] for r in res.runs),
            "p99": statistics.median(r["p99"] for r in res.runs),
            "cpu": res.cpu_ticks / CLK_TCK / reqs * 10000 if reqs else 0.0,
            "reqs": reqs,
        }
    base = summary.get("nginx") or {}
    floor = summary.get("pingora") or {}
    out = [f"### {sc.title}, {conns} connections", "",
           "| target | req/s (median) | vs nginx | vs Pingora | p50 ms | p99 ms | p99 vs nginx "
           "| CPU s / 10k req | CPU vs nginx | CPU vs Pingora | idle RSS MiB | peak RSS MiB "
           "| errors | non-2xx "
           "| new upstream TLS conns / 10k req (all / after 1st s) "
           "| upstream reuse (all / after 1st s) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t, res in results.items():
        m = summary[t]
        if t == "direct":
            new = reuse = "—"
        else:
            new = f"{per_10k(res.new_conns, m['reqs'])} / {per_10k(res.new_conns_steady, m['reqs'])}"
            reuse = (f"{reuse_pct(res.new_conns, m['reqs'])} / "
                     f"{reuse_pct(res.new_conns_steady, m['reqs'])}")
        out.append(
            f"| {LABELS[t]} | {m['rps']:.0f} | {ratio(m['rps'], base.get('rps'))} "
            f"| {ratio(m['rps'], floor.get('rps'))} "
            f"| {m['p50']:.2f} | {m['p99']:.2f} | {ratio(m['p99'], base.get('p99'))} "
            f"| {m['cpu']:.3f} | {ratio(m['cpu'], base.get('cpu'))} "
            f"| {ratio(m['cpu'], floor.get('cpu'))} | {res.idle_rss_kib / 1024:.1f} "
            f"| {res.rss_kib / 1024:.1f} | {res.errors} | {res.non2xx} | {new} | {reuse} |")
    out += ["", "req/s per round: " + "; ".join(
        f"{LABELS[t]} " + ", ".join(f"{r['rps']:.0f}" for r in res.runs)
        for t, res in results.items()), ""]
    failed = any(res.errors or res.non2xx for res in results.values())
    return "\n".join(out), failed


NOTES = """\
Columns: req/s, p50 and p99 are medians over the measured rounds (wrk `--latency`). CPU is
utime+stime of the target's processes (all threads; nginx: master + worker) from
/proc/PID/stat over the measured rounds, per 10k requests; for "direct" it is the plain
nginx's. Idle RSS is the largest VmRSS among the target's processes once it serves, before
any load; peak RSS the largest VmHWM among them. Errors (wrk socket
errors) and non-2xx (wrk's non-2xx/3xx count) cover every run, warm-up included, and must
be 0. New upstream TLS connections are the origin's log lines for connections' first
requests during the measured rounds; "after 1st s" leaves out each run's first second,
where a proxy re-opens the upstream connections it dropped because the previous run's wrk
stopped with requests in flight (up to one per client connection per run).
"""


def machine():
    model, cpus = "unknown", 0
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("processor"):
                cpus += 1

    def version(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    return "\n".join([
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {cpus} CPUs, {model}; Linux {platform.release()}",
        f"- {version(['nginx', '-v'])}; {version(['haproxy', '-v'])}; "
        f"{version(['wrk', '-v']).split(' [')[0]}",
    ])
