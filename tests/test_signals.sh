#!/usr/bin/env bash
# The operator's signals: SIGHUP and SIGUSR1 (log rotation, habits from
# other daemons) and SIGPIPE must leave stashd serving, with what it stored;
# SIGTERM then still stops it cleanly (exit 0).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# Sends $1 (printf escapes) and prints the reply, read until $2 arrives.
request() {
    /usr/bin/python3 - "$PORT" "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
want = sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
buf = b""
while not buf.endswith(want):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
sys.stdout.write(buf.decode("latin-1"))
PY
}

start_stashd
out=$(request 'set k 0 0 2\r\nhi\r\n' 'STORED\r\n')
[ "$out" = $'STORED\r' ] || fail "set: $out"
for sig in HUP USR1 PIPE HUP USR1; do
    kill -s "$sig" "$PID"
    # A signal's default action would end the process at once; give it
    # time to, then ask for the value stored before.
    sleep 0.2
    kill -0 "$PID" 2>/dev/null || fail "SIG$sig stopped stashd"
    out=$(request 'get k\r\n' 'END\r\n')
    [ "$out" = $'VALUE k 0 2\r\nhi\r\nEND\r' ] || fail "after SIG$sig: $out"
    ok "SIG$sig: still serving"
done
stop_stashd
ok "SIGTERM still stops it, exit 0"
echo "$passed passed, 0 failed"
