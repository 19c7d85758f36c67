#!/usr/bin/env bash
# Pylon load harness: Pylon, a bare Pingora proxy, nginx, HAProxy and Caddy proxying HTTP ->
# HTTPS with mutual TLS to an nginx origin, plus a direct (no proxy) baseline, measured with
# wrk in one run.
#
#   benches/load/run.sh                       full run (3 scenarios, warm-up 5 s, 3 x 10 s rounds)
#   BENCH_DURATION=5 BENCH_WARMUP=3 benches/load/run.sh     shorter rounds
#   BENCH_SCENARIOS=single BENCH_TARGETS=pylon,nginx benches/load/run.sh
#
# Steps: cargo build --release (pylon and the pingora-bare example); a fresh PKI (pylon certs init) in a temporary folder; then
# benches/load/bench.py starts the origin(s) and targets from the templates in this folder,
# runs wrk against each in turn and prints markdown tables on stdout (progress on stderr).
# Every process it starts is stopped on exit, and the temporary folder removed (set
# BENCH_KEEP=1 to keep it: generated configs and logs). All knobs: see bench.py's header.
#
# Needs: cargo, nginx, haproxy, caddy, wrk, taskset (util-linux), python3 (stdlib only), and
# at least 2 CPUs (the target runs on CPU 0, wrk and the origin on CPU 1). Debian:
#   apt-get install nginx haproxy caddy wrk util-linux python3
# (stop the packaged services: the harness starts its own processes on free ports).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"

die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }
info() { printf '[bench] %s\n' "$*" >&2; }

targets="${BENCH_TARGETS:-caddy,nginx,haproxy}"
for tool in cargo nginx wrk taskset python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH"
done
for tool in haproxy caddy; do
    if [[ ",$targets," == *",$tool,"* ]]; then
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH (apt-get install $tool, or leave it out of BENCH_TARGETS)"
    fi
done
[[ "$(nproc --all)" -ge 2 ]] || die "needs at least 2 CPUs (target on one, wrk + origin on the other)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pylon-bench.XXXXXX")"

# Stops whatever bench.py recorded in $WORK/pids that is still alive (bench.py stops its
# processes itself; this covers it being killed), then removes the work folder.
cleanup() {
    local pid name left=()
    if [[ -f "$WORK/pids" ]]; then
        while read -r pid name; do
            if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]]; then
                kill -TERM "$pid" 2>/dev/null || true
                left+=("$pid:$name")
            fi
        done < "$WORK/pids"
        if [[ ${#left[@]} -gt 0 ]]; then
            sleep 1
            for entry in "${left[@]}"; do
                pid="${entry%%:*}" name="${entry#*:}"
                if [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]]; then
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            done
        fi
    fi
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        info "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$REPO_ROOT"
info "cargo build --release --bin pylon --example pingora-bare"
cargo build --release --bin pylon --example pingora-bare >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
PYLON="$TARGET_DIR/release/pylon"
PINGORA="$TARGET_DIR/release/examples/pingora-bare"
[[ -x "$PYLON" ]] || die "cargo build --release did not produce $PYLON"
[[ -x "$PINGORA" ]] || die "cargo build --release did not produce $PINGORA"

info "making a PKI in $WORK/certs"
"$PYLON" certs init --dir "$WORK/certs" --server-name test.com >/dev/null
# HAProxy's "crt" takes the certificate and its key in one file.
cat "$WORK/certs/client.crt" "$WORK/certs/client.key" > "$WORK/certs/client.pem"
chmod 600 "$WORK/certs/client.pem"

BENCH_DIR="$WORK" BENCH_PYLON="$PYLON" BENCH_PINGORA="$PINGORA" python3 -B "$HERE/bench.py"
