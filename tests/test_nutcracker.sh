#!/bin/bash
# Scale-out test: stashd behind nutcracker (twemproxy), ketama distribution.
#
# Starts three stashd instances (a, b, c; $STASHD_BACKEND's backend if set)
# and one nutcracker with the three pools of tests/nutcracker.yml.in (ports
# filled in), all on free 127.0.0.1 ports, then with pymemcache
# (/usr/bin/python3):
#   1. writes 10,000 keys through pool "two" (a, b) and checks that both
#      nodes hold a share (> 20 % each, together every key, no key twice)
#      and that every key reads back through the proxy;
#   2. reads them through pool "three" (a, b, c): adding a node moves ~1/3
#      of the keys (they miss) and leaves every other key where it was;
#   3. kills node b (SIGKILL) and shows what clients see:
#      - pool "two" (auto_eject_hosts: false): b's keys fail with
#        SERVER_ERROR from the proxy, reads and writes alike; a's keys are
#        still served; nothing is remapped;
#      - pool "two_eject" (auto_eject_hosts: true, server_failure_limit 1,
#        server_retry_timeout 60 s so b stays out for the rest of the test):
#        b leaves the ring on its first failure (the proxy's connection to
#        b closing, or else the first request sent to b, which fails), b's
#        keys then map to a (cache misses), writing them again stores them
#        on a, and every key is served again.
# Every process is stopped by pid; each step is time-bounded (< 60 s total).
set -euo pipefail

BIN=${STASHD_BIN:-./build/stashd}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stashd-nutcracker.XXXXXX")
declare -A PID=()       # name -> pid of what this script started
PORTS_TAKEN=" "
PORT_a='' PORT_b='' PORT_c=''  # set by start_stashd
passed=0
NKEYS=10000
DEADLINE=$((SECONDS + 55))

cleanup() {
    local name
    for name in "${!PID[@]}"; do
        if kill -0 "${PID[$name]}" 2>/dev/null; then
            kill -KILL "${PID[$name]}" 2>/dev/null || true
            wait "${PID[$name]}" 2>/dev/null || true
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    if [ -s "$TMP/nutcracker.log" ]; then
        echo "--- nutcracker log (tail):" >&2
        tail -n 20 "$TMP/nutcracker.log" >&2
    fi
    echo "$passed passed, 1 failed"
    exit 1
}

ok() {
    passed=$((passed + 1))
    echo "ok: $*"
}

command -v nutcracker >/dev/null || fail "nutcracker not found (Debian nutcracker)"
"$PY" -c 'import pymemcache' 2>/dev/null \
    || fail "pymemcache not found (Debian python3-pymemcache)"
[ -x "$BIN" ] || fail "stashd binary $BIN not found"

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port VAR: sets VAR to a port that nothing listens on and that this
# script has not handed out yet. Below the kernel's ephemeral range (32768
# and up), so no outgoing connection, live or in TIME_WAIT, holds it: a
# listener that does not set SO_REUSEADDR could not bind such a port.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        case "$PORTS_TAKEN" in *" $p "*) continue ;; esac
        if ! port_in_use "$p"; then
            PORTS_TAKEN="$PORTS_TAKEN$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

# wait_port PORT NAME: until PORT accepts (5 s at most) while NAME runs.
wait_port() {
    local _
    for _ in $(seq 1 200); do
        port_in_use "$1" && return 0
        kill -0 "${PID[$2]}" 2>/dev/null || return 1
        sleep 0.025
    done
    return 1
}

# start_stashd NAME: sets PORT_<NAME>; retries on a port taken meanwhile.
# $STASHD_BACKEND picks the backend; each node's data lives under $TMP.
start_stashd() {
    local name=$1 port args=()
    if [ -n "${STASHD_BACKEND:-}" ]; then
        args=(--backend "$STASHD_BACKEND")
        if [ "$STASHD_BACKEND" != memory ]; then
            args+=(--data-dir "$TMP/data-$name")
        fi
    fi
    for _ in 1 2 3 4 5; do
        free_port port
        "$BIN" -p "$port" -l 127.0.0.1 "${args[@]}" \
            2>>"$TMP/stashd-$name.err" &
        PID[$name]=$!
        if wait_port "$port" "$name"; then
            printf -v "PORT_$name" '%s' "$port"
            return 0
        fi
        kill -KILL "${PID[$name]}" 2>/dev/null || true
        wait "${PID[$name]}" 2>/dev/null || true
        unset "PID[$name]"
    done
    fail "stashd $name did not start: $(cat "$TMP/stashd-$name.err")"
}

start_stashd a
start_stashd b
start_stashd c
ok "three stashd instances: a=$PORT_a b=$PORT_b c=$PORT_c"

# nutcracker: its config from the template, stats on a free port too. It
# runs in the foreground (no -d) so that $! is its pid.
started=
for _ in 1 2 3 4 5; do
    free_port PORT_TWO
    free_port PORT_TWO_EJECT
    free_port PORT_THREE
    free_port PORT_STATS
    sed -e "s/@PORT_A@/$PORT_a/g" -e "s/@PORT_B@/$PORT_b/g" \
        -e "s/@PORT_C@/$PORT_c/g" -e "s/@PORT_TWO@/$PORT_TWO/g" \
        -e "s/@PORT_TWO_EJECT@/$PORT_TWO_EJECT/g" \
        -e "s/@PORT_THREE@/$PORT_THREE/g" \
        "$HERE/nutcracker.yml.in" >"$TMP/nutcracker.yml"
    if grep -v '^#' "$TMP/nutcracker.yml" | grep -q '@[A-Z_]*@'; then
        fail "nutcracker.yml: a placeholder is left"
    fi
    timeout 10 nutcracker -t -c "$TMP/nutcracker.yml" >"$TMP/conftest" 2>&1 \
        || fail "nutcracker -t: $(cat "$TMP/conftest")"
    nutcracker -c "$TMP/nutcracker.yml" -s "$PORT_STATS" -a 127.0.0.1 \
        -o "$TMP/nutcracker.log" -p "$TMP/nutcracker.pid" -v 5 &
    PID[nutcracker]=$!
    if wait_port "$PORT_TWO" nutcracker && wait_port "$PORT_TWO_EJECT" nutcracker \
        && wait_port "$PORT_THREE" nutcracker && wait_port "$PORT_STATS" nutcracker; then
        started=1
        break
    fi
    kill -KILL "${PID[nutcracker]}" 2>/dev/null || true
    wait "${PID[nutcracker]}" 2>/dev/null || true
    unset "PID[nutcracker]"
done
[ -n "$started" ] || fail "nutcracker did not start"
ok "nutcracker: two=$PORT_TWO two_eject=$PORT_TWO_EJECT three=$PORT_THREE stats=$PORT_STATS"

# The client side: one helper, one subcommand per step. Keys key:00000 ..
# key:09999; which node holds each key is read from the nodes themselves.
cat >"$TMP/nc.py" <<'PYEOF'
import json
import os
import sys
import time

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError

TMP = os.environ["NC_TMP"]
N = int(os.environ["NC_KEYS"])
KEYS = ["key:%05d" % i for i in range(N)]
BATCH = 100


def value(k):
    return ("value-of-%s|" % k).encode() * 3


def client(port):
    return Client(("127.0.0.1", int(port)), connect_timeout=5, timeout=5)


def batches(keys):
    for i in range(0, len(keys), BATCH):
        yield keys[i:i + BATCH]


def die(msg):
    print("  " + msg)
    sys.exit(1)


def write(port):
    mc = client(port)
    for b in batches(KEYS):
        failed = mc.set_many({k: value(k) for k in b}, noreply=False)
        if failed:
            die("set_many through the proxy failed for %d keys, e.g. %s"
                % (len(failed), failed[:3]))
    mc.close()
    print("  wrote %d keys through 127.0.0.1:%s" % (N, port))


def read_all(port):
    mc = client(port)
    got = {}
    for b in batches(KEYS):
        got.update(mc.get_many(b))
    mc.close()
    bad = [k for k in KEYS if got.get(k) != value(k)]
    if bad:
        die("%d of %d keys missing or wrong through :%s, e.g. %s"
            % (len(bad), N, port, bad[:3]))
    print("  read all %d keys back through 127.0.0.1:%s" % (N, port))


def curr_items(port):
    mc = client(port)
    n = mc.stats()[b"curr_items"]
    mc.close()
    return n


def share(port_a, port_b):
    """Both nodes hold a share; records which keys each one has."""
    holders = {}
    for name, port in (("a", port_a), ("b", port_b)):
        mc = client(port)
        have = []
        for b in batches(KEYS):
            have.extend(k for k, v in mc.get_many(b).items()
                        if v == value(k))
        mc.close()
        holders[name] = sorted(have)
        items = curr_items(port)
        print("  node %s: curr_items %d, %d of our keys (%.1f %%)"
              % (name, items, len(have), 100.0 * len(have) / N))
        if items != len(have):
            die("node %s: curr_items %d but %d keys" % (name, items,
                                                        len(have)))
        if len(have) <= N // 5:
            die("node %s holds %d keys, not more than 20 %%" % (name,
                                                               len(have)))
    both = set(holders["a"]) & set(holders["b"])
    if both:
        die("%d keys on both nodes, e.g. %s" % (len(both), sorted(both)[:3]))
    if len(holders["a"]) + len(holders["b"]) != N:
        die("the nodes hold %d keys, not %d"
            % (len(holders["a"]) + len(holders["b"]), N))
    with open(os.path.join(TMP, "holders.json"), "w") as f:
        json.dump(holders, f)


def holders():
    with open(os.path.join(TMP, "holders.json")) as f:
        h = json.load(f)
    return set(h["a"]), set(h["b"])


def probe(port, keys):
    """One get per key, as a client would: value, miss or error."""
    mc = client(port)
    hits, misses, errors, msgs = set(), set(), set(), {}
    for k in keys:
        try:
            v = mc.get(k)
        except (MemcacheError, OSError) as e:
            errors.add(k)
            m = "%s: %s" % (type(e).__name__, e)
            msgs[m] = msgs.get(m, 0) + 1
            continue
        if v is None:
            misses.add(k)
        elif v == value(k):
            hits.add(k)
        else:
            die("%s: wrong value %r" % (k, v[:40]))
    mc.close()
    return hits, misses, errors, msgs


def grow(port_three, port_c):
    """Pool "three" adds node c: ~1/3 of the keys now map to c (misses),
    every other key still maps to the node that holds it (hits)."""
    hits, misses, errors, msgs = probe(port_three, KEYS)
    moved = 100.0 * len(misses) / N
    print("  through pool three: %d hits, %d misses (%.1f %% moved to c), "
          "%d errors" % (len(hits), len(misses), moved, len(errors)))
    if errors:
        die("errors: %s" % msgs)
    if not 20.0 <= moved <= 47.0:
        die("%.1f %% of the keys moved, expected about 33 %%" % moved)
    # The misses are exactly the keys that now live on c: store them.
    mc = client(port_three)
    for b in batches(sorted(misses)):
        if mc.set_many({k: value(k) for k in b}, noreply=False):
            die("set_many through pool three failed")
    mc.close()
    if curr_items(port_c) != len(misses):
        die("node c holds %d items, not the %d moved keys"
            % (curr_items(port_c), len(misses)))
    print("  the %d moved keys, written again, all landed on c"
          % len(misses))


def dead_no_eject(port):
    on_a, on_b = holders()
    t0 = time.monotonic()
    hits, misses, errors, msgs = probe(port, KEYS)
    print("  through pool two (no ejection), b dead: %d hits, %d misses, "
          "%d errors in %.1f s" % (len(hits), len(misses), len(errors),
                                   time.monotonic() - t0))
    for m, n in sorted(msgs.items()):
        print("    %dx %s" % (n, m))
    if hits != on_a:
        die("hits are not exactly a's keys")
    if errors != on_b:
        die("errors are not exactly b's keys")
    # Writes for b's keys fail the same way; a's keys are still writable.
    mc = client(port)
    kb, ka = sorted(on_b)[0], sorted(on_a)[0]
    try:
        r = mc.set(kb, b"x", noreply=False)
        die("set of %s (node b) through pool two returned %r" % (kb, r))
    except (MemcacheError, OSError) as e:
        print("  set of a key of b: %s: %s" % (type(e).__name__, e))
    mc = client(port)
    if not mc.set(ka, value(ka), noreply=False):
        die("set of %s (node a) failed" % ka)
    mc.close()


def dead_eject(port, port_a):
    on_a, on_b = holders()
    t0 = time.monotonic()
    keys = sorted(on_b)[:200] + sorted(on_a) + sorted(on_b)[200:]
    hits, misses, errors, msgs = probe(port, keys)
    print("  through pool two_eject, b dead: %d hits, %d misses, %d errors "
          "in %.1f s" % (len(hits), len(misses), len(errors),
                         time.monotonic() - t0))
    for m, n in sorted(msgs.items()):
        print("    %dx %s" % (n, m))
    if hits != on_a:
        die("hits are not exactly a's keys")
    if errors | misses != on_b:
        die("errors and misses are not exactly b's keys")
    # The proxy ejects b on its first failure (server_failure_limit 1):
    # the first request sent to b, or, if the proxy already had a
    # connection to b, the close of that connection, before any request.
    if len(errors) > 3:
        die("%d errors: expected at most the first request or two"
            % len(errors))
    # b is out of the ring: b's keys are written to a and served from there.
    mc = client(port)
    for b in batches(sorted(on_b)):
        if mc.set_many({k: value(k) for k in b}, noreply=False):
            die("set_many through pool two_eject failed")
    mc.close()
    if curr_items(port_a) != N:
        die("node a holds %d items, not %d" % (curr_items(port_a), N))
    print("  b's %d keys written again landed on a (curr_items %d)"
          % (len(on_b), N))


step = sys.argv[1]
args = sys.argv[2:]
{"write": write, "read_all": read_all, "share": share, "grow": grow,
 "dead_no_eject": dead_no_eject, "dead_eject": dead_eject}[step](*args)
PYEOF

# Each step gets what is left of the 55 s budget of the whole test.
py() {
    local left=$((DEADLINE - SECONDS))
    [ "$left" -gt 0 ] || fail "out of time before step $1"
    NC_TMP=$TMP NC_KEYS=$NKEYS timeout "$left" "$PY" "$TMP/nc.py" "$@"
}

py write "$PORT_TWO" || fail "writing $NKEYS keys through nutcracker"
ok "$NKEYS keys written through pool two"

py share "$PORT_a" "$PORT_b" || fail "distribution over a and b"
ok "both nodes hold a share, every key on exactly one"

py read_all "$PORT_TWO" || fail "reading back through pool two"
py read_all "$PORT_TWO_EJECT" || fail "reading back through pool two_eject"
ok "every key read back through the proxy (both pools)"

py grow "$PORT_THREE" "$PORT_c" || fail "adding node c"
ok "adding a third node moved about 1/3 of the keys, the rest stayed"

# Node b dies.
kill -KILL "${PID[b]}"
{ wait "${PID[b]}"; } 2>/dev/null || true
unset "PID[b]"
ok "node b killed"

py dead_no_eject "$PORT_TWO" || fail "b dead, pool two"
ok "no ejection: b's keys fail with an error, a's are served"

py dead_eject "$PORT_TWO_EJECT" "$PORT_a" || fail "b dead, pool two_eject"
py read_all "$PORT_TWO_EJECT" || fail "reading back through pool two_eject"
ok "ejection: b left the ring, its keys remapped to a"

kill -0 "${PID[nutcracker]}" 2>/dev/null || fail "nutcracker died"
for name in nutcracker a c; do
    kill -TERM "${PID[$name]}"
    for _ in $(seq 1 500); do
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.02
    done
    kill -0 "${PID[$name]}" 2>/dev/null \
        && fail "$name still running 10 s after SIGTERM"
    rc=0
    wait "${PID[$name]}" || rc=$?
    unset "PID[$name]"
    if [ "$name" != nutcracker ] && [ "$rc" -ne 0 ]; then
        fail "stashd $name exited with $rc after SIGTERM"
    fi
done
ok "nutcracker and the live nodes stopped"

echo "$passed passed, 0 failed"
