#!/usr/bin/env bash
# A full disk under a persistent backend, on an 8 MB tmpfs: writes past it
# get memcached's "out of memory" error and nothing else, reads go on,
# deletes work and free room so that writes resume, and a restart on the
# full disk opens the store and serves what it holds. Needs root to mount
# the tmpfs (CI runs as root); elsewhere the test says it was skipped.
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
if [ "$(id -u)" != 0 ] || ! mount -t tmpfs -o size=8m tmpfs "$TMP/disk" 2>/dev/null; then
    echo "0 passed, 0 failed, 1 skipped: cannot mount a small tmpfs here"
    exit 0
fi
MOUNTED=1

PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start() {
    # -m far above the disk, so the disk and not the limit runs out.
    "$BIN" -p "$PORT" -l 127.0.0.1 --backend "$BACKEND" \
        --data-dir "$TMP/disk/data" -m 64 2>>"$TMP/stderr" &
    PID=$!
}
stop() {
    kill -TERM "$PID"
    local rc=0
    wait "$PID" || rc=$?
    PID=
    [ "$rc" = 0 ] || { echo "FAIL: exit status $rc after SIGTERM"; cat "$TMP/stderr"; exit 1; }
}

cat >"$TMP/full.py" <<'PY'
import socket, sys, time

port, phase, state = int(sys.argv[1]), sys.argv[2], sys.argv[3]
deadline = time.monotonic() + 15
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), 1)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("FAIL: server did not start")
        time.sleep(0.05)
s.settimeout(20)
f = s.makefile("rb")

def cmd(line, data=None):
    s.sendall(line + b"\r\n" + (data + b"\r\n" if data is not None else b""))
    return f.readline()

def get(key):
    r = cmd(b"get " + key)
    if r == b"END\r\n":
        return None
    if not r.startswith(b"VALUE "):
        sys.exit("FAIL: get %r: %r" % (key, r))
    n = int(r.split()[3])
    v = f.read(n + 2)[:-2]
    if f.readline() != b"END\r\n":
        sys.exit("FAIL: get end")
    return v

passed = 0
def ok(what):
    global passed
    passed += 1
    print("ok:", what)

def val(i):
    return (b"%08d" % i) * 500        # 4000 bytes

FULL = b"SERVER_ERROR out of memory storing object\r\n"

def fill(first):
    """Sets keys from first on until the disk is full; the count stored."""
    i = first
    while True:
        r = cmd(b"set k%d 0 0 4000" % i, val(i))
        if r == FULL:
            return i - first
        if r != b"STORED\r\n":
            sys.exit("FAIL: a full disk answered set with %r" % r)
        i += 1
        if i - first > 5000:
            sys.exit("FAIL: 20 MB went onto an 8 MB disk")

if phase == "phase1":
    n = fill(0)
    ok("%d values of 4 KB stored on an 8 MB disk, then SERVER_ERROR out of "
       "memory" % n)
    # Most of the disk holds data: the store's own files do not eat it.
    if n < 1200:
        sys.exit("FAIL: only %d of 4 KB fit on 8 MB" % n)
    ok("at least 1200 fit")
    if get(b"k0") != val(0) or get(b"k%d" % (n - 1)) != val(n - 1):
        sys.exit("FAIL: reads after the disk filled")
    ok("reads keep working")
    for i in range(0, n // 2):
        r = cmd(b"delete k%d" % i)
        if r != b"DELETED\r\n":
            sys.exit("FAIL: delete k%d on a full disk: %r" % (i, r))
    ok("deletes work on the full disk")
    # At once: the room the deletes got must not go to these writes
    # before the reserve is back (a race the maintenance tick lost).
    m = fill(100000)
    if m < n // 4:
        sys.exit("FAIL: only %d writes resumed after deleting %d" % (m, n // 2))
    ok("writes resume after deletes (%d more stored)" % m)
    open(state, "w").write("%d %d\n" % (n, m))
else:
    n, m = map(int, open(state).read().split())
    if get(b"k%d" % (n - 1)) != val(n - 1) or get(b"k100000") != val(100000):
        sys.exit("FAIL: restarted on a full disk, the data is not served")
    ok("restarted on the full disk: the data is served")
    r = cmd(b"delete k%d" % (n - 1))
    if r != b"DELETED\r\n":
        sys.exit("FAIL: delete after a restart on a full disk: %r" % r)
    ok("deletes work after the restart")
    time.sleep(0.5)
    r = cmd(b"set after 0 0 4000", val(7))
    if r != b"STORED\r\n":
        sys.exit("FAIL: set after freeing room: %r" % r)
    ok("writes work after the restart")
if cmd(b"version")[:8] != b"VERSION ":
    sys.exit("FAIL: server stopped answering")
ok("the server keeps serving")
print("%d passed, 0 failed" % passed)
PY

start
/usr/bin/python3 "$TMP/full.py" "$PORT" phase1 "$TMP/state" || {
    echo "FAIL: filling the disk"; cat "$TMP/stderr"; exit 1; }
stop
echo "ok: clean exit on a full disk"
# The reserve a delete gave back is made again before writes can take the
# room: a full disk keeps it, for the deletes of the next run.
if [ ! -f "$TMP/disk/data/stashd.reserve" ]; then
    echo "FAIL: the disk filled up again without its reserve"; cat "$TMP/stderr"; exit 1
fi
echo "ok: the full disk still holds the reserve"
# The disk is still (almost) full: the restart must open the store anyway.
df -k "$TMP/disk" | tail -1
start
/usr/bin/python3 "$TMP/full.py" "$PORT" phase2 "$TMP/state" || {
    echo "FAIL: after a restart on a full disk"; cat "$TMP/stderr"; exit 1; }
stop
echo "ok: clean exit after the restart"
