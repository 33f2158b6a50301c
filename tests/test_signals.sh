#!/usr/bin/env bash
# The operator's signals: SIGHUP and SIGUSR1 (log rotation, habits from
# other daemons) and SIGPIPE must leave stashd serving, with what it stored;
# SIGTERM then still stops it cleanly (exit 0).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

start_stashd
out=$(exchange 'set k 0 0 2\r\nhi\r\n' 'STORED\r\n')
[ "$out" = $'STORED\r' ] || fail "set: $out"
for sig in HUP USR1 PIPE HUP USR1; do
    kill -s "$sig" "$PID"
    # A signal's default action would end the process at once; give it
    # time to, then ask for the value stored before.
    sleep 0.2
    kill -0 "$PID" 2>/dev/null || fail "SIG$sig stopped stashd"
    out=$(exchange 'get k\r\n' 'END\r\n')
    [ "$out" = $'VALUE k 0 2\r\nhi\r\nEND\r' ] || fail "after SIG$sig: $out"
    ok "SIG$sig: still serving"
done
stop_stashd
ok "SIGTERM still stops it, exit 0"
echo "$passed passed, 0 failed"
