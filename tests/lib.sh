# Shared by the shell tests (source it after `set -euo pipefail`): a temp
# dir removed at exit, pass/fail counting in the "N passed, M failed" form
# CTest's readers know, and stashd started on a free 127.0.0.1 port on the
# backend $STASHD_BACKEND names, stopped by pid whatever happens.
#
# Sets BIN, TMP, PID, PORT, passed; defines fail, ok, port_in_use,
# start_stashd, stop_stashd, wait_stashd_exit, exchange.

BIN=${STASHD_BIN:-./build/stashd}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stashd-test.XXXXXX")
PID=
PORT=
passed=0

lib_cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap lib_cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "$passed passed, 1 failed"
    exit 1
}

ok() {
    passed=$((passed + 1))
    echo "ok: $*"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# $STASHD_BACKEND picks the backend; its data lives under $TMP.
BACKEND_ARGS=()
if [ -n "${STASHD_BACKEND:-}" ]; then
    BACKEND_ARGS=(--backend "$STASHD_BACKEND")
    if [ "$STASHD_BACKEND" != memory ]; then
        BACKEND_ARGS+=(--data-dir "$TMP/data")
    fi
fi

# Starts stashd with "$@" on a free port (PORT, PID); retries if another
# process takes the port first.
start_stashd() {
    [ -x "$BIN" ] || fail "stashd binary $BIN not found"
    for _ in 1 2 3 4 5; do
        # Below the ephemeral range: no outgoing connection holds it.
        PORT=$((20000 + RANDOM % 12000))
        if port_in_use "$PORT"; then
            continue
        fi
        "$BIN" -p "$PORT" -l 127.0.0.1 "${BACKEND_ARGS[@]}" "$@" \
            2>"$TMP/stderr" &
        PID=$!
        for _ in $(seq 1 200); do
            if port_in_use "$PORT" || ! kill -0 "$PID" 2>/dev/null; then
                break
            fi
            sleep 0.025
        done
        if kill -0 "$PID" 2>/dev/null && port_in_use "$PORT"; then
            return 0
        fi
        wait "$PID" 2>/dev/null || true
        PID=
    done
    fail "stashd did not start: $(cat "$TMP/stderr")"
}

# Waits up to 10 s for stashd to exit; its status must be 0. $1 says what
# it exits after, for the messages.
wait_stashd_exit() {
    local rc=0

    for _ in $(seq 1 400); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.025
    done
    kill -0 "$PID" 2>/dev/null && fail "stashd still running 10 s $1"
    wait "$PID" || rc=$?
    PID=
    [ "$rc" = 0 ] || fail "stashd exited $rc $1"
}

# SIGTERM, then the exit status must be 0 within 10 s.
stop_stashd() {
    kill -TERM "$PID"
    wait_stashd_exit "after SIGTERM"
}

# Sends $1 (printf escapes) to stashd and prints every byte back until the
# server closes ("<closed>" then ends it), the reply ends with $2 (printf
# escapes, if given), or it stays silent for a second.
exchange() {
    /usr/bin/python3 - "$PORT" "$1" "${2:-}" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
until = sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
s.settimeout(1)
buf = b""
try:
    while not (until and buf.endswith(until)):
        chunk = s.recv(65536)
        if not chunk:
            buf += b"<closed>"
            break
        buf += chunk
except socket.timeout:
    pass
sys.stdout.write(buf.decode("latin-1"))
PY
}
