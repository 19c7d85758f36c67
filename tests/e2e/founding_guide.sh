#!/usr/bin/env bash
# End-to-end test of the founding scenario, following the founding guide
# ("配置 API7 企业版和上游之间的 mTLS", /work/shared/seed/upstream-mtls-guide.zh.md) literally:
#
#   1. make a CA, a server certificate for test.com and a client certificate with the
#      guide's exact openssl commands;
#   2. run nginx with the guide's server block (HTTPS on 8443, ssl_verify_client on,
#      location /hello -> 200 "Hello API7!");
#   3. point Pylon at it (HTTP on 9080 -> HTTPS + client certificate to nginx);
#   4. curl http://127.0.0.1:9080/hello must answer 200 "Hello API7!".
#
# Everything runs in a fresh temporary directory that is removed on exit (set KEEP_TMP=1
# to keep it). Works as root or as an ordinary user.
#
# Environment:
#   PYLON_BIN   Pylon binary (default: target/debug/pylon in the repo root; built with
#               `cargo build` if missing)
#   NGINX_BIN   nginx binary (default: nginx from PATH, else /usr/sbin/nginx)
#   NGINX_PORT  port of the nginx mTLS upstream (default 8443, as in the guide)
#   PYLON_PORT  port of Pylon's HTTP listener  (default 9080, as in the guide)
#   KEEP_TMP    set to 1 to keep the temporary directory
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NGINX_PORT="${NGINX_PORT:-8443}"
PYLON_PORT="${PYLON_PORT:-9080}"
KEEP_TMP="${KEEP_TMP:-0}"

if [[ -n "${NGINX_BIN:-}" ]]; then
    :
elif command -v nginx >/dev/null 2>&1; then
    NGINX_BIN="$(command -v nginx)"
else
    NGINX_BIN=/usr/sbin/nginx
fi

# PYLON_BIN: default relative to the repo root; a relative path given by the caller is
# taken relative to the caller's working directory.
if [[ -z "${PYLON_BIN:-}" ]]; then
    PYLON_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/pylon"
fi
case "$PYLON_BIN" in
    /*) ;;
    *) PYLON_BIN="$PWD/$PYLON_BIN" ;;
esac

FAILURES=0
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; FAILURES=$((FAILURES + 1)); }
die() { printf 'FAIL: %s\n' "$*"; exit 1; }

for tool in openssl curl; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool not found: $tool"
done
[[ -x "$NGINX_BIN" ]] || die "nginx not found (looked for $NGINX_BIN); install it or set NGINX_BIN"

# True if something already listens on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
port_in_use "$NGINX_PORT" && die "127.0.0.1:$NGINX_PORT is already in use; set NGINX_PORT to a free port"
port_in_use "$PYLON_PORT" && die "127.0.0.1:$PYLON_PORT is already in use; set PYLON_PORT to a free port"
[[ "$NGINX_PORT" != "$PYLON_PORT" ]] || die "NGINX_PORT and PYLON_PORT must differ"

if [[ ! -x "$PYLON_BIN" ]]; then
    echo "== $PYLON_BIN not found; running cargo build"
    (cd "$REPO_ROOT" && cargo build)
    [[ -x "$PYLON_BIN" ]] || die "cargo build did not produce $PYLON_BIN"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pylon-e2e.XXXXXX")"
NGINX_PID=""
PYLON_PID=""

# Send a signal to a process we started, wait up to 10 s for it to exit, then SIGKILL.
stop_pid() {
    local pid="$1" sig="$2" i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "   (pid $pid did not exit after SIG$sig; sending SIGKILL)"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

dump_logs() {
    local f
    for f in "$WORK/logs/nginx-error.log" "$WORK/logs/nginx-access.log" \
        "$WORK/pylon-check.log" "$WORK/pylon.log"; do
        echo "----- $f -----"
        if [[ -f "$f" ]]; then tail -n 200 "$f"; else echo "(missing)"; fi
    done
    echo "-----"
}

cleanup() {
    local rc=$?
    set +e
    if [[ $rc -ne 0 ]]; then
        echo "== logs (test failed, exit code $rc)"
        dump_logs
    fi
    # Pingora: SIGINT = fast shutdown (SIGTERM would wait for the graceful-shutdown period).
    stop_pid "$PYLON_PID" INT
    # nginx master: SIGTERM = fast shutdown (it takes its workers down with it).
    stop_pid "$NGINX_PID" TERM
    if [[ "$KEEP_TMP" == 1 ]]; then
        echo "== kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$WORK"
echo "== work dir: $WORK"
echo "== pylon: $PYLON_BIN, nginx: $NGINX_BIN, nginx port: $NGINX_PORT, pylon port: $PYLON_PORT"

# ---------------------------------------------------------------------------
# 1. Certificates and keys: the guide's commands, verbatim.
# ---------------------------------------------------------------------------
echo "== step 1: generating certificates with the guide's openssl commands"
{
# 1.1 CA key and certificate
openssl genrsa -out ca.key 2048
openssl req -x509 -new -nodes -key ca.key -sha256 -days 36500 -out ca.crt \
-subj "/CN=ROOTCA"

# 1.2 server key and certificate for test.com, signed by the CA
openssl genrsa -out server.key 2048 && \
openssl req -new -key server.key -out server.csr -subj "/CN=test.com" && \
cat > server.ext << EOF
authorityKeyIdentifier=keyid,issuer
basicConstraints=CA:FALSE
keyUsage = digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment
subjectAltName = @alt_names
[alt_names]
DNS.1 = test.com
EOF
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
-CAcreateserial -out server.crt -days 36500 \
-sha256 -extfile server.ext

# 1.3 client key and certificate, signed by the CA
openssl genrsa -out client.key 2048 && \
openssl req -new -key client.key -out client.csr -subj "/CN=client" && \
cat > client.ext << EOF
authorityKeyIdentifier=keyid,issuer
basicConstraints=CA:FALSE
keyUsage = digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment
extendedKeyUsage = clientAuth
EOF
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 36500 -sha256 -extfile client.ext
} > openssl.log 2>&1 || { cat openssl.log; die "openssl commands from the guide failed"; }

for f in ca.key ca.crt server.key server.crt client.key client.crt; do
    [[ -s "$f" ]] || die "certificate step did not produce $f"
done
if openssl verify -CAfile ca.crt server.crt client.crt >/dev/null; then
    pass "guide's openssl commands produced ca/server/client certificates that verify against ca.crt"
else
    die "server.crt/client.crt do not verify against ca.crt"
fi

# ---------------------------------------------------------------------------
# 2. The upstream: nginx with the guide's server block.
# ---------------------------------------------------------------------------
echo "== step 2: starting nginx (mTLS upstream) on 127.0.0.1:$NGINX_PORT"
mkdir -p logs tmp/client_body tmp/proxy tmp/fastcgi tmp/uwsgi tmp/scgi
cat > nginx.conf << EOF
# Generated by tests/e2e/founding_guide.sh. The server block is the founding guide's;
# everything else keeps nginx inside $WORK so it runs as root or non-root.
worker_processes  1;
daemon            off;
pid               $WORK/nginx.pid;
error_log         $WORK/logs/nginx-error.log notice;

events {
    worker_connections  1024;
}

http {
    default_type  application/octet-stream;

    # Records whether the client (Pylon) presented a verified certificate, and the SNI it sent.
    log_format  mtls  '\$remote_addr "\$request" \$status '
                      'verify=\$ssl_client_verify dn="\$ssl_client_s_dn" sni=\$ssl_server_name';
    access_log  $WORK/logs/nginx-access.log  mtls;

    client_body_temp_path  $WORK/tmp/client_body;
    proxy_temp_path        $WORK/tmp/proxy;
    fastcgi_temp_path      $WORK/tmp/fastcgi;
    uwsgi_temp_path        $WORK/tmp/uwsgi;
    scgi_temp_path         $WORK/tmp/scgi;

    keepalive_timeout  65;

    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        server_name            test.com;
        ssl_certificate        $WORK/server.crt;
        ssl_certificate_key    $WORK/server.key;
        ssl_client_certificate $WORK/ca.crt;
        ssl_verify_client on;
        location /hello {
            return 200 "Hello API7!";
        }
    }
}
EOF

"$NGINX_BIN" -t -p "$WORK/" -c "$WORK/nginx.conf" -e "$WORK/logs/nginx-error.log" \
    > nginx-t.log 2>&1 || { cat nginx-t.log; die "nginx -t rejected the generated nginx.conf"; }
"$NGINX_BIN" -p "$WORK/" -c "$WORK/nginx.conf" -e "$WORK/logs/nginx-error.log" \
    > logs/nginx-stdout.log 2>&1 &
NGINX_PID=$!

# The guide's check: a request with the client certificate gets 200.
nginx_code=000
for ((i = 0; i < 100; i++)); do
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited during startup (port $NGINX_PORT in use?)"
    nginx_code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        --cacert ca.crt --cert client.crt --key client.key \
        --resolve "test.com:$NGINX_PORT:127.0.0.1" "https://test.com:$NGINX_PORT/hello" || true)"
    [[ "$nginx_code" == 000 ]] || break
    sleep 0.1
done
if [[ "$nginx_code" == 200 ]]; then
    pass "nginx answers 200 on https://test.com:$NGINX_PORT/hello with the client certificate"
else
    die "nginx with the client certificate: expected 200, got $nginx_code"
fi

# Without a client certificate nginx must refuse (400 "No required SSL certificate was sent").
code="$(curl -s -o nocert.body -w '%{http_code}' --max-time 5 --cacert ca.crt \
    --resolve "test.com:$NGINX_PORT:127.0.0.1" "https://test.com:$NGINX_PORT/hello" || true)"
if [[ "$code" == 400 ]]; then
    pass "nginx answers 400 without a client certificate (it really demands mTLS)"
else
    fail "nginx without a client certificate: expected 400, got $code"
fi

# ---------------------------------------------------------------------------
# 3. Pylon: HTTP on PYLON_PORT -> HTTPS with mutual TLS to nginx.
# ---------------------------------------------------------------------------
echo "== step 3: configuring and starting Pylon on 127.0.0.1:$PYLON_PORT"
cat > pylon.yaml << EOF
gateway:
  listen: ["127.0.0.1:$PYLON_PORT"]
  threads: 1
  pid_file: $WORK/pylon.pid
  upgrade_sock: $WORK/upgrade.sock
resources: resources.yaml
EOF

cat > resources.yaml << EOF
routes:
  - id: hello
    uri: /hello
    methods: [GET]
    service_id: mtls-nginx
services:
  - id: mtls-nginx
    upstream_id: default
upstreams:
  - id: default
    type: roundrobin
    scheme: https
    nodes:
      - { host: 127.0.0.1, port: $NGINX_PORT, weight: 100 }
    tls:
      client_cert_id: upstream-ssl
      ca_certificate_id: upstream-ca
      sni: test.com
ssls:
  - id: upstream-ssl
    type: client
    cert: client.crt
    key: client.key
ca_certificates:
  - id: upstream-ca
    cert: ca.crt
#END
EOF

if "$PYLON_BIN" check -c "$WORK/pylon.yaml" > pylon-check.log 2>&1; then
    pass "pylon check -c pylon.yaml exits 0"
else
    rc=$?
    cat pylon-check.log
    die "pylon check -c pylon.yaml exited $rc"
fi

"$PYLON_BIN" run -c "$WORK/pylon.yaml" > pylon.log 2>&1 &
PYLON_PID=$!

ready=0
for ((i = 0; i < 100; i++)); do
    kill -0 "$PYLON_PID" 2>/dev/null || die "pylon exited during startup (port $PYLON_PORT in use?)"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
        "http://127.0.0.1:$PYLON_PORT/nope" || true)"
    if [[ "$code" != 000 ]]; then ready=1; break; fi
    sleep 0.1
done
[[ "$ready" == 1 ]] || die "pylon did not accept HTTP requests on 127.0.0.1:$PYLON_PORT within 10 s"
pass "pylon is up on 127.0.0.1:$PYLON_PORT"

# ---------------------------------------------------------------------------
# 4. The guide's verification: curl -ik http://127.0.0.1:9080/hello -> 200.
# ---------------------------------------------------------------------------
echo "== step 4: curl -sS -i http://127.0.0.1:$PYLON_PORT/hello"
access_lines_before="$(wc -l < logs/nginx-access.log)"
curl -sS -i --max-time 10 "http://127.0.0.1:$PYLON_PORT/hello" || true
echo
code="$(curl -sS -D hello.headers -o hello.body -w '%{http_code}' --max-time 10 \
    "http://127.0.0.1:$PYLON_PORT/hello" || true)"
if [[ "$code" == 200 ]]; then
    pass "GET /hello through pylon: status 200"
else
    fail "GET /hello through pylon: expected status 200, got $code"
fi
printf 'Hello API7!' > hello.expected
if cmp -s hello.body hello.expected; then
    pass "GET /hello through pylon: body is exactly 'Hello API7!'"
else
    fail "GET /hello through pylon: body is '$(cat hello.body 2>/dev/null)', expected exactly 'Hello API7!'"
fi

# nginx saw a verified client certificate (CN=client) and SNI test.com on the proxied request.
if tail -n "+$((access_lines_before + 1))" logs/nginx-access.log \
    | grep -Eq '"GET /hello HTTP/[0-9.]+" 200 verify=SUCCESS dn="CN=client" sni=test\.com$'; then
    pass "nginx logged the proxied request with verify=SUCCESS, CN=client, SNI test.com"
else
    fail "nginx access log does not show pylon's request with a verified client certificate and SNI test.com"
fi

# ---------------------------------------------------------------------------
# 5. No route: 404 with APISIX's body.
# ---------------------------------------------------------------------------
echo "== step 5: curl http://127.0.0.1:$PYLON_PORT/nope"
code="$(curl -sS -o nope.body -w '%{http_code}' --max-time 10 \
    "http://127.0.0.1:$PYLON_PORT/nope" || true)"
if [[ "$code" == 404 ]]; then
    pass "GET /nope through pylon: status 404"
else
    fail "GET /nope through pylon: expected status 404, got $code"
fi
# Byte-exact, except that one trailing newline (as APISIX sends) is accepted.
printf '{"error_msg":"404 Route Not Found"}' > nope.expected
printf '{"error_msg":"404 Route Not Found"}\n' > nope.expected-nl
if cmp -s nope.body nope.expected || cmp -s nope.body nope.expected-nl; then
    pass "GET /nope through pylon: body is {\"error_msg\":\"404 Route Not Found\"}"
else
    fail "GET /nope through pylon: body is '$(cat nope.body 2>/dev/null)', expected {\"error_msg\":\"404 Route Not Found\"}"
fi

if kill -0 "$PYLON_PID" 2>/dev/null; then
    pass "pylon still running after the requests"
else
    fail "pylon exited during the test"
fi

if [[ "$FAILURES" -ne 0 ]]; then
    echo "== founding guide e2e: FAIL ($FAILURES check(s) failed)"
    exit 1
fi
echo "== founding guide e2e: PASS"
