#!/usr/bin/env bash
# The text protocol's shutdown command, as memcached 1.6.18 has it: refused
# with "ERROR: shutdown not enabled" unless started with -A; with -A,
# "shutdown" and "shutdown graceful" answer what came before them on the
# connection, close it and stop the server (exit 0) through the SIGTERM
# path, so a persistent backend keeps every write it acknowledged; any
# other mode is "CLIENT_ERROR invalid shutdown mode".
set -euo pipefail
. "$(dirname "$0")/lib.sh"

start_stashd
for cmd in 'shutdown' 'shutdown graceful' 'shutdown foo' 'shutdown noreply'; do
    out=$(exchange "$cmd\r\nversion\r\n" "-stashd-0.1.0\r\n")
    case "$out" in
    $'ERROR: shutdown not enabled\r\nVERSION '*) ;;
    *) fail "without -A, '$cmd': $out" ;;
    esac
done
ok "without -A: ERROR: shutdown not enabled, the connection kept"
stop_stashd

"$BIN" --help | grep -q -- "-A, --enable-shutdown" || fail "--help lists -A"
ok "--help lists -A, --enable-shutdown"

# Writes the test acknowledged: 200 sets, then stats to know they are done.
writes() {
    local i req=""

    for i in $(seq 1 200); do
        req+="set key$i 0 0 ${#i}\\r\\n$i\\r\\n"
    done
    printf '%s' "$req"
}

for mode in '' ' graceful'; do
    start_stashd -A
    out=$(exchange "shutdown foo\r\nshutdown graceful now\r\nversion\r\n" \
                  "-stashd-0.1.0\r\n")
    bad=$'CLIENT_ERROR invalid shutdown mode\r\n'
    case "$out" in
    "$bad$bad"VERSION\ *) ;;
    *) fail "-A, a bad mode: $out" ;;
    esac
    out=$(exchange "$(writes)get key7\r\nshutdown$mode\r\nget key8\r\n")
    want=""
    for _ in $(seq 1 200); do
        want+=$'STORED\r\n'
    done
    want+=$'VALUE key7 0 1\r\n7\r\nEND\r\n<closed>'
    [ "$out" = "$want" ] || fail "-A, shutdown$mode: ${out: -80}"
    wait_stashd_exit "after shutdown$mode"
    ok "-A, shutdown$mode: earlier replies sent, connection closed, exit 0"
    if [ "${STASHD_BACKEND:-memory}" != memory ]; then
        start_stashd
        out=$(exchange 'get key1 key100 key200\r\n' 'END\r\n')
        want=$'VALUE key1 0 1\r\n1\r\nVALUE key100 0 3\r\n100\r\n'
        want+=$'VALUE key200 0 3\r\n200\r\nEND\r'
        [ "$out" = "$want" ] || fail "after shutdown$mode, restarted: $out"
        stop_stashd
        rm -rf "$TMP/data"
        ok "after shutdown$mode every acknowledged write is kept"
    fi
done
echo "$passed passed, 0 failed"
