#!/usr/bin/env bash
# A full disk under a persistent backend: writes get memcached's "out of
# memory" error, reads and deletes keep working, the server keeps serving
# and exits cleanly. The data directory is a 4 MB tmpfs, so this needs root
# (CI runs as root); elsewhere the test says it was skipped.
set -euo pipefail

BIN=${STASHD_BIN:-./build/stashd}
BACKEND=${STASHD_BACKEND:-lmdb}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stashd-full.XXXXXX")
PID=
MOUNTED=

cleanup() {
    if [ -n "$PID" ]; then
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [ -n "$MOUNTED" ]; then
        umount "$TMP/disk" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

if [ "$BACKEND" = memory ]; then
    echo "0 passed, 0 failed, 1 skipped: the memory backend has no disk"
    exit 0
fi
mkdir -p "$TMP/disk"
if [ "$(id -u)" != 0 ] || ! mount -t tmpfs -o size=4m tmpfs "$TMP/disk" 2>/dev/null; then
    echo "0 passed, 0 failed, 1 skipped: cannot mount a small tmpfs here"
    exit 0
fi
MOUNTED=1

PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# -m far above the disk, so the disk and not the limit runs out.
"$BIN" -p "$PORT" -l 127.0.0.1 --backend "$BACKEND" --data-dir "$TMP/disk/data" \
    -m 64 2>"$TMP/stderr" &
PID=$!

/usr/bin/python3 - "$PORT" <<'PY'
import socket, sys, time

port = int(sys.argv[1])
deadline = time.monotonic() + 10
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), 1)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("FAIL: server did not start")
        time.sleep(0.05)
s.settimeout(10)
f = s.makefile("rb")

def cmd(line, data=None):
    s.sendall(line + b"\r\n" + (data + b"\r\n" if data is not None else b""))
    return f.readline()

passed = 0
def ok(what):
    global passed
    passed += 1
    print("ok:", what)

val = b"v" * 100000
first_fail = None
errors = set()
for i in range(200):
    r = cmd(b"set k%d 0 0 %d" % (i, len(val)), val)
    if r != b"STORED\r\n":
        errors.add(r)
        if first_fail is None:
            first_fail = i
if first_fail is None:
    sys.exit("FAIL: 20 MB went onto a 4 MB disk")
if errors != {b"SERVER_ERROR out of memory storing object\r\n"}:
    sys.exit("FAIL: a full disk answered %r" % errors)
ok("writes past a full disk get SERVER_ERROR out of memory (%d stored)" % first_fail)

r = cmd(b"get k0")
if r != b"VALUE k0 0 %d\r\n" % len(val):
    sys.exit("FAIL: read after disk full: %r" % r)
f.read(len(val) + 2)
if f.readline() != b"END\r\n":
    sys.exit("FAIL: read end")
ok("reads keep working")

if cmd(b"version")[:8] != b"VERSION ":
    sys.exit("FAIL: server stopped answering")
ok("the server keeps serving")
print("%d passed, 0 failed" % passed)
PY

kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=
[ "$rc" = 0 ] || { echo "FAIL: exit status $rc after SIGTERM"; cat "$TMP/stderr"; exit 1; }
echo "ok: clean exit after a full disk"
