#!/usr/bin/env bash
# The test command: everything must pass.
#
#   1. cargo test --all-targets          unit and integration tests
#   2. pylon check -c conf/<file>.yaml   every shipped static config (files with a top-level
#                                        `gateway:` key) must validate
#   3. tests/e2e/founding_guide.sh       the founding guide, end to end, with real nginx
#
# Needs nginx, openssl and curl for step 3 (scripts/quickstart.sh or .ci/run install them).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYLON_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/pylon"

step() { printf '\n==> %s\n' "$*"; }

step "cargo test --all-targets"
cargo test --all-targets

step "cargo build (debug binary for the config checks and the e2e test)"
cargo build
[[ -x "$PYLON_BIN" ]] || { echo "FAIL: $PYLON_BIN was not built"; exit 1; }

if [[ ! -f certs/ca.crt ]]; then
    step "certs/ca.crt missing: pylon certs init --dir certs --server-name test.com"
    "$PYLON_BIN" certs init --dir certs --server-name test.com
fi

step "pylon check on the static configs in conf/"
checked=0
shopt -s nullglob
for conf in conf/*.yaml conf/*.yml; do
    grep -q '^gateway:' "$conf" || continue
    if "$PYLON_BIN" check -c "$conf"; then
        echo "PASS: pylon check -c $conf"
    else
        echo "FAIL: pylon check -c $conf"
        exit 1
    fi
    checked=$((checked + 1))
done
shopt -u nullglob
[[ "$checked" -gt 0 ]] || { echo "FAIL: no static config (top-level gateway:) found in conf/"; exit 1; }

step "benches/load report parser (python3 -m unittest)"
python3 -m unittest discover -s benches/load -p 'test_*.py'

step "tests/e2e/founding_guide.sh"
PYLON_BIN="$PYLON_BIN" tests/e2e/founding_guide.sh

printf '\nALL TESTS PASSED\n'
