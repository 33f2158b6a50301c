#!/usr/bin/env bash
# Command-line behaviour of the real binary: --help and --version, a unix
# socket (-s), daemon mode with a pid file (-d -P), a second instance on a
# locked data directory, and clean exits. Every process is stopped by pid.
set -euo pipefail

BIN=${STASHD_BIN:-./build/stashd}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stashd-cli.XXXXXX")
PIDS=()
passed=0

cleanup() {
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "$passed passed, 1 failed"
    exit 1
}

ok() {
    passed=$((passed + 1))
    echo "ok: $*"
}

BACKEND=${STASHD_BACKEND:-memory}
BACKEND_ARGS=(--backend "$BACKEND" --data-dir "$TMP/data")

# A request over a unix socket, answered within 5 s.
unix_request() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
buf = b""
while not buf.endswith(b"END\r\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
sys.stdout.write(buf.decode("latin-1"))
PY
}

wait_for() {
    for _ in $(seq 1 200); do
        [ -e "$1" ] && return 0
        sleep 0.05
    done
    return 1
}

"$BIN" --help | grep -q -- "--backend" || fail "--help lists --backend"
ok "--help"
"$BIN" --version | grep -q "^stashd 1.6.18" || fail "--version"
ok "--version"

rc=0
"$BIN" --sync sometimes 2>"$TMP/err" || rc=$?
[ "$rc" = 64 ] || fail "--sync sometimes exits $rc, not 64"
grep -q -- "--sync" "$TMP/err" || fail "--sync error names the flag"
ok "bad --sync exits 64 naming the flag"

rc=0
"$BIN" --backend nosuch 2>"$TMP/err" || rc=$?
[ "$rc" = 64 ] || fail "--backend nosuch exits $rc, not 64"
ok "unknown backend exits 64"

# Daemon on a unix socket, with a pid file.
"$BIN" "${BACKEND_ARGS[@]}" -s "$TMP/sock" -d -P "$TMP/pid"
wait_for "$TMP/pid" || fail "no pid file"
wait_for "$TMP/sock" || fail "no unix socket"
DPID=$(cat "$TMP/pid")
PIDS+=("$DPID")
out=$(unix_request "$TMP/sock" 'set k 0 0 2\r\nhi\r\nget k\r\n')
[ "$out" = $'STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r' ] || fail "unix socket: $out"
ok "daemon serves on a unix socket"

if [ "$BACKEND" != memory ]; then
    rc=0
    timeout 10 "$BIN" "${BACKEND_ARGS[@]}" -s "$TMP/sock2" 2>"$TMP/err" || rc=$?
    [ "$rc" != 0 ] || fail "a second instance on the same data dir started"
    grep -qi "lock" "$TMP/err" || fail "second instance: $(cat "$TMP/err")"
    ok "a second instance on a locked data dir is refused"
fi

kill -TERM "$DPID"
for _ in $(seq 1 200); do
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$DPID" 2>/dev/null && fail "daemon still running after SIGTERM"
[ ! -e "$TMP/pid" ] || fail "pid file left behind"
[ ! -e "$TMP/sock" ] || fail "unix socket left behind"
ok "SIGTERM stops the daemon and removes its pid file and socket"

echo "$passed passed, 0 failed"
