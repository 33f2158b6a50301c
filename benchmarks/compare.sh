#!/usr/bin/env bash
# stashd vs memcached, side by side, from one command.
#
# Installs what is missing (Debian), builds stashd and stashd-bench, then on
# loopback starts real memcached and stashd on every backend and --sync mode
# the binary offers, each fresh for every run with the same threads and
# memory, and runs the named workloads against each in alternation, with
# memcached right before every other target (M A M B M C .., each round).
# Reports the median of each, and of its ratios to the memcached run just
# before it, plus restart time, footprint and a
# driver check against memcaslap. Writes benchmarks/results/<date>-<host>.md,
# .png and .raw, and the latest table into benchmarks/README.md.
#
#   benchmarks/compare.sh --quick      # a few minutes
#   benchmarks/compare.sh              # the full run (about an hour)
#   benchmarks/compare.sh --help       # every knob
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="benchmarks/compare.sh${*:+ $*}"
BUILD=$ROOT/build-bench
OUT=$ROOT/benchmarks/results
README=$ROOT/benchmarks/README.md
ROUNDS=3
WARMUP=2
DURATION=8
THREADS=2           # server worker threads, memcached and stashd alike
CTHREADS=2          # stashd-bench threads
MEMORY=1024         # MB, -m of every server in the load part
FOOT_MEMORY=4096    # MB, -m in the footprint part (1M x 1000 B must fit)
ITEMS=1000000       # restart and footprint
WORKLOADS="standard writes large pipelined pipelined-text zipf"
PARTS="driver load restart footprint"
INSTALL=1
QUICK=0
UPDATE_README=1

usage() {
    cat <<EOF
usage: benchmarks/compare.sh [options]
  --quick              3 rounds of 0.5 s warm-up + 1.5 s measured, no driver
                       check (about 20 minutes with 8 targets)
  --rounds N           alternating rounds per workload ($ROUNDS)
  --warmup S           seconds of load before measuring ($WARMUP)
  --duration S         measured seconds per run ($DURATION)
  --threads N          server threads, memcached -t and stashd -t ($THREADS)
  --client-threads N   stashd-bench threads ($CTHREADS)
  --memory MB          -m of every server in the load part ($MEMORY)
  --items N            items for restart and footprint ($ITEMS)
  --workloads "W.."    subset of: $WORKLOADS text
  --parts "P.."        subset of: $PARTS
  --targets "T.."      only these targets (memcached memory lmdb-periodic ..)
  --no-install         do not apt-get missing packages
  --no-readme          do not update benchmarks/README.md
  --build DIR          build directory ($BUILD)
  --out DIR            results directory ($OUT)
  --tag NAME           add -NAME to the results file names
  --baseline REV       also run every stashd target as built from git
                       revision REV (targets named T@base), alternating
                       with the others: before/after in one run
EOF
}

ONLY_TARGETS=""
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1; ROUNDS=3; WARMUP=0.5; DURATION=1.5 ;;
    --rounds) ROUNDS=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --client-threads) CTHREADS=$2; shift ;;
    --memory) MEMORY=$2; shift ;;
    --items) ITEMS=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --parts) PARTS=$2; PARTS_SET=1; shift ;;
    --targets) ONLY_TARGETS=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --no-readme) UPDATE_README=0 ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --tag) TAG=$2; shift ;;
    --baseline) BASELINE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ] && [ -z "${PARTS_SET:-}" ]; then
    PARTS="load restart footprint"
fi
BUILD=$(realpath -m "$BUILD")
OUT=$(realpath -m "$OUT")

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- install
PACKAGES="build-essential cmake pkg-config libev-dev liblmdb-dev
          libsqlite3-dev memcached gnuplot-nox libmemcached-tools python3
          procps iproute2 time"
if [ "$INSTALL" = 1 ]; then
    missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
            || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing:$missing"
        SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
    fi
fi

# ------------------------------------------------------------------ build
log "building in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target stashd stashd-bench >/dev/null
STASHD=$BUILD/stashd
BENCH=$BUILD/stashd-bench
STASHD_BASE=""
if [ -n "${BASELINE:-}" ]; then
    # The same build of another revision, from git, beside this one.
    BASE_SRC=$BUILD-base-src
    rm -rf "$BASE_SRC"
    mkdir -p "$BASE_SRC"
    git -C "$ROOT" archive "$BASELINE" | tar -x -C "$BASE_SRC"
    log "building the baseline $BASELINE in $BUILD-base"
    cmake -S "$BASE_SRC" -B "$BUILD-base" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$BUILD-base" -j "$(nproc)" --target stashd >/dev/null
    STASHD_BASE=$BUILD-base/stashd
fi
MEMCACHED=$(command -v memcached)
MC_USER=""
[ "$(id -u)" = 0 ] && MC_USER="-u root"

TMP=$(mktemp -d /tmp/stashd-compare.XXXXXX)
cd "$TMP"                  # whatever a server writes by default lands here
RAW=$TMP/raw.txt
SLOG=$TMP/servers.log
: >"$RAW"
SERVERS=""
cleanup() {
    local p
    for p in $SERVERS; do
        kill -KILL "$p" 2>/dev/null || true
    done
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

raw() { echo "$*" >>"$RAW"; }

# Below the kernel's ephemeral range (32768..), and unused in any state.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        if ! ss -Htan "( sport = :$p or dport = :$p )" | grep -q .; then
            echo "$p"
            return
        fi
    done
}

# A process is gone once /proc has no entry or it is a zombie nobody reaps.
alive() {
    [ -r "/proc/$1/stat" ] && ! awk '{ exit !($3 == "Z") }' \
        "/proc/$1/stat" 2>/dev/null
}

stop_server() {            # pid [signal]
    local pid=$1 sig=${2:-TERM} i
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 200); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.1
    fi
    wait "$pid" 2>/dev/null || true
}

# The server's "stats" lines whose names match a regex, space-separated:
# on a failed run they tell a slow disk (a sync running for seconds) from a
# server that lost a reply.
server_stats() {           # port regex
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "stats\r\n" >&3
        while IFS= read -r -t 4 l <&3; do
            l=${l%$'"'"'\r'"'"'}
            [ "$l" = END ] && break
            echo "$l"
        done' "$1" 2>/dev/null |
        awk -v re="$2" '$1 == "STAT" && $2 ~ re { printf "%s%s=%s", sep, $2, $3; sep = " " }'
}

# target -> command line. memcached | memory | <backend>-<sync>
server_cmd() {             # target port datadir memory_mb
    local t=$1 port=$2 dir=$3 mem=$4
    if [ "$t" = memcached ]; then
        echo "$MEMCACHED $MC_USER -U 0 -l 127.0.0.1 -p $port -t $THREADS" \
             "-m $mem -c 4096"
        return
    fi
    local bin=$STASHD
    case $t in
    *@base) bin=$STASHD_BASE; t=${t%@base} ;;
    esac
    local b=${t%%-*} s=""
    [ "$b" != "$t" ] && s=${t#*-}
    # always name the backend and a data directory: the default may change
    echo "$bin -l 127.0.0.1 -p $port -t $THREADS -m $mem -c 4096" \
         "--backend $b --data-dir ${dir:-$TMP/data-none}${s:+ --sync $s}"
}

SPID=""
START_ERR=""
start_server() {           # target port datadir memory_mb
    # shellcheck disable=SC2046
    $(server_cmd "$@") >"$TMP/server.log" 2>&1 &
    SPID=$!
    SERVERS="$SERVERS $SPID"
    if ! "$BENCH" -s "127.0.0.1:$2" --wait-listen --timeout 15 >/dev/null \
        || ! alive "$SPID"; then
        stop_server "$SPID" KILL
        START_ERR="the server did not start: $(tail -c 300 "$TMP/server.log" |
                   tr '\n' ' ')"
        cat "$TMP/server.log" >>"$SLOG"
        return 1
    fi
}

# The named workloads; every one of them prefills its 100,000 keys.
workload_args() {
    local base="-c 50 -r 1:10 -v 32 -k 100000 --key-size 16 -p"
    case $1 in
    standard) echo "$base" ;;
    writes) echo "$base -r 1:1" ;;
    large) echo "$base -v 4096" ;;
    pipelined) echo "$base -d 16" ;;
    pipelined-text) echo "$base -d 16 -P text" ;;
    zipf) echo "$base -z zipf:0.99" ;;
    text) echo "$base -P text" ;;
    *) echo "compare.sh: unknown workload $1" >&2; exit 64 ;;
    esac
}

# ---------------------------------------------------- discover backends
list_from_help() {         # option name -> its "a | b (note) | c" values
    "$STASHD" --help 2>&1 | grep -E -- "--$1[= ]" | head -1 |
        sed -e 's/ *(default.*//' -e 's/.*: //' -e 's/([^)]*)//g' |
        tr '|' ' '
}
BACKENDS=$(echo memory $(list_from_help backend) lmdb sqlite |
           tr ' ' '\n' | awk 'NF && !seen[$0]++')
SYNCS=$(list_from_help sync)
[ -n "$SYNCS" ] || SYNCS="always periodic none"
TARGETS="memcached"
PERSISTENT=""
for b in $BACKENDS; do
    port=$(free_port)
    dir=$TMP/probe-$b
    mkdir -p "$dir"
    if "$BENCH" -s "127.0.0.1:$port" --wait-listen --timeout 5 -- \
        "$STASHD" -l 127.0.0.1 -p "$port" --backend "$b" --data-dir "$dir" \
        >"$TMP/probe.out" 2>>"$SLOG"; then
        pid=$(sed -n 's/.* pid=\([0-9]*\).*/\1/p' "$TMP/probe.out")
        stop_server "$pid"
        if [ "$b" = memory ]; then
            TARGETS="$TARGETS memory"
        else
            PERSISTENT="$PERSISTENT $b"
            for s in $SYNCS; do
                TARGETS="$TARGETS $b-$s"
            done
        fi
        log "backend $b: available"
    else
        pid=$(sed -n 's/.* pid=\([0-9]*\).*/\1/p' "$TMP/probe.out")
        [ -n "$pid" ] && [ "$pid" != -1 ] && stop_server "$pid" KILL
        raw "SKIP what=backend-$b reason=stashd --backend $b does not" \
            "start in this build"
        log "backend $b: not in this build, skipped"
    fi
done
if [ -n "$ONLY_TARGETS" ]; then
    TARGETS=$(for t in $TARGETS; do
                  case " $ONLY_TARGETS " in *" $t "*) echo "$t" ;; esac
              done | tr '\n' ' ')
    PERSISTENT=$(for b in $PERSISTENT; do
                     case " $ONLY_TARGETS " in *" $b-"*) echo "$b" ;; esac
                 done | tr '\n' ' ')
fi
if [ -n "$STASHD_BASE" ]; then
    TARGETS="$TARGETS $(for t in $TARGETS; do
                            [ "$t" = memcached ] || echo "$t@base"
                        done | tr '\n' ' ')"
fi
log "targets: $TARGETS"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)

# ------------------------------------------------------- driver check
# stashd-bench vs memcaslap against the same memcached, same connections
# and threads, same mix (1:10, 16-byte keys, 32-byte values), alternating.
if has_part driver && command -v memcaslap >/dev/null; then
    cat >"$TMP/memcaslap.cfg" <<EOF
key
16 16 1
value
32 32 1
cmd
0 0.0909
1 0.9091
EOF
    for r in $(seq "$ROUNDS"); do
        for proto in text binary; do
            port=$(free_port)
            if ! start_server memcached "$port" "" "$MEMORY"; then
                raw "SKIP what=driver-$proto-$r reason=$START_ERR"
                continue
            fi
            log "driver check round $r/$ROUNDS $proto: stashd-bench"
            if out=$("$BENCH" -s "127.0.0.1:$port" -P "$proto" -T 2 -c 50 \
                     -r 1:10 -v 32 -k 100000 -p -w "$WARMUP" \
                     -D "$DURATION" --server-pid "$SPID" 2>&1); then
                raw "DRIVER tool=stashd-bench proto=$proto round=$r" \
                    "$(echo "$out" | grep '^RESULT' | cut -d' ' -f2-)"
            fi
            stop_server "$SPID"
            port=$(free_port)
            if ! start_server memcached "$port" "" "$MEMORY"; then
                raw "SKIP what=driver-$proto-$r reason=$START_ERR"
                continue
            fi
            log "driver check round $r/$ROUNDS $proto: memcaslap"
            flag=""
            [ "$proto" = binary ] && flag="-B"
            s0=$(awk '{ print $14 + $15 }' "/proc/$SPID/stat")
            out=$( { /usr/bin/time -f "TIME %U %S %e" memcaslap \
                     -s "127.0.0.1:$port" -F "$TMP/memcaslap.cfg" -T 2 \
                     -c 50 $flag -t "$(awk -v a="$WARMUP" -v b="$DURATION" \
                     'BEGIN { printf "%d", a + b + 0.5 }')s"; } 2>&1 || true)
            s1=$(awk '{ print $14 + $15 }' "/proc/$SPID/stat")
            stop_server "$SPID"
            tps=$(echo "$out" | sed -n 's/.*Ops: \([0-9]*\) TPS: \([0-9]*\).*/\1 \2/p' | tail -1)
            cpu=$(echo "$out" | sed -n 's/^TIME //p' | tail -1)
            if [ -n "$tps" ] && [ -n "$cpu" ]; then
                set -- $tps $cpu
                raw "DRIVER tool=memcaslap proto=$proto round=$r ops=$1" \
                    "ops_s=$2 client_cpu_ns_op=$(awk -v u="$3" -v s="$4" \
                    -v n="$1" 'BEGIN { printf "%.0f", (u + s) * 1e9 / n }')" \
                    "server_cpu_ns_op=$(awk -v a="$s0" -v b="$s1" -v n="$1" \
                    -v hz="$(getconf CLK_TCK)" \
                    'BEGIN { printf "%.0f", (b - a) / hz * 1e9 / n }')"
            else
                raw "SKIP what=memcaslap-$proto-$r reason=memcaslap gave no" \
                    "TPS line"
            fi
        done
    done
elif has_part driver; then
    raw "SKIP what=driver reason=memcaslap is not installed"
fi

# --------------------------------------------------------------- load
# One run of workload w against target t; raw line RUN or FAIL.
run_load() {               # workload args target round slot
    local w=$1 args=$2 t=$3 r=$4 slot=$5 port dir out
    port=$(free_port)
    dir=$TMP/data-$t
    rm -rf "$dir"
    mkdir -p "$dir"
    log "$w round $r/$ROUNDS: $t"
    if ! start_server "$t" "$port" "$dir" "$MEMORY"; then
        raw "FAIL workload=$w target=$t round=$r slot=$slot" \
            "reason=$START_ERR"
        return
    fi
    # shellcheck disable=SC2086
    if out=$("$BENCH" -s "127.0.0.1:$port" $args \
             -T "$CTHREADS" -w "$WARMUP" -D "$DURATION" \
             --server-pid "$SPID" --label "$w" 2>&1); then
        raw "RUN workload=$w target=$t round=$r slot=$slot" \
            "$(echo "$out" | grep '^RESULT' | cut -d' ' -f2-)"
    else
        raw "FAIL workload=$w target=$t round=$r slot=$slot reason=$(echo \
            "$out" | grep -v '^RESULT' | tail -1)" \
            "[server: $(server_stats "$port" \
            '_sync_(count|usec|max_usec|running_usec)$|^curr_conn')]"
        log "  failed: $(echo "$out" | tail -1)"
    fi
    stop_server "$SPID"
    # What this target left dirty is written back now, not during the
    # next run.
    sync
}

# A B A C A D ...: memcached runs right before every other target, and
# each target is measured against that run (same slot), so a change in
# what other tenants of the machine do between runs hits both sides.
if has_part load; then
    OTHERS=$(for t in $TARGETS; do [ "$t" = memcached ] || echo "$t"; done)
    HAVE_MC=0
    case " $TARGETS " in *" memcached "*) HAVE_MC=1 ;; esac
    for w in $WORKLOADS; do
        args=$(workload_args "$w")
        for r in $(seq "$ROUNDS"); do
            slot=0
            if [ -z "$OTHERS" ] && [ "$HAVE_MC" = 1 ]; then
                run_load "$w" "$args" memcached "$r" 0
            fi
            for t in $OTHERS; do
                slot=$((slot + 1))
                [ "$HAVE_MC" = 1 ] && run_load "$w" "$args" memcached "$r" "$slot"
                run_load "$w" "$args" "$t" "$r" "$slot"
            done
        done
    done
fi

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# ------------------------------------------------------------ restart
# With ITEMS items stored: time from exec to the first served hit after a
# clean stop, and after kill -9 right behind a burst of writes.
if has_part restart; then
    for b in $PERSISTENT; do
        dir=$TMP/restart-$b
        rm -rf "$dir"
        mkdir -p "$dir"
        t=$b-periodic
        port=$(free_port)
        if ! start_server "$t" "$port" "$dir" "$MEMORY"; then
            raw "SKIP what=restart-$b reason=$START_ERR"
            continue
        fi
        log "restart $b: filling $ITEMS items"
        fill=$("$BENCH" -s "127.0.0.1:$port" -k "$ITEMS" -v 32 -p -D 0 \
               | grep '^RESULT' | sed 's/.*prefill_s=\([0-9.]*\).*/\1/')
        stop_server "$SPID"
        disk=$(du -sb "$dir" | cut -f1)
        for kind in clean kill9; do
            # shellcheck disable=SC2046
            out=$("$BENCH" -s "127.0.0.1:$port" --wait-hit --timeout 120 \
                  -k "$ITEMS" -- $(server_cmd "$t" "$port" "$dir" "$MEMORY") \
                  2>>"$SLOG" || true)
            pid=$(echo "$out" | sed -n 's/.* pid=\([0-9]*\).*/\1/p')
            SERVERS="$SERVERS $pid"
            hit=$(echo "$out" | sed -n 's/.*first_hit_ms=\([-0-9.]*\).*/\1/p')
            conn=$(echo "$out" | sed -n 's/.*first_conn_ms=\([-0-9.]*\).*/\1/p')
            ver=$("$BENCH" -s "127.0.0.1:$port" -k "$ITEMS" --verify -D 0 \
                  2>/dev/null | grep '^RESULT' |
                  sed 's/.*verify_hit=\([-0-9.]*\).*/\1/')
            raw "RESTART target=$b after=$kind items=$ITEMS fill_s=$fill" \
                "disk_bytes=$disk first_conn_ms=$conn first_hit_ms=$hit" \
                "verify_hit=${ver:--1}"
            log "restart $b after $kind: first hit ${hit} ms, kept ${ver}"
            if [ "$kind" = clean ]; then
                # dirty it, then crash it while the writes are fresh
                "$BENCH" -s "127.0.0.1:$port" -k "$ITEMS" -r 1:0 -w 0 -D 2 \
                    >/dev/null 2>&1 || true
                stop_server "$pid" KILL
            else
                stop_server "$pid"
            fi
        done
    done
    [ -n "$PERSISTENT" ] || raw "SKIP what=restart reason=no persistent" \
        "backend among the targets (memory and memcached keep nothing)"
fi

# ---------------------------------------------------------- footprint
if has_part footprint; then
    for t in memcached memory $(for b in $PERSISTENT; do echo "$b-periodic";
                                done); do
        case " $TARGETS " in *" $t "*) ;; *) continue ;; esac
        for v in 32 1000; do
            dir=$TMP/foot-$t
            rm -rf "$dir"
            mkdir -p "$dir"
            port=$(free_port)
            if ! start_server "$t" "$port" "$dir" "$FOOT_MEMORY"; then
                raw "SKIP what=footprint-$t-$v reason=$START_ERR"
                continue
            fi
            sleep 0.2
            base=$(rss_kb "$SPID")
            log "footprint $t: $ITEMS items of $v bytes"
            out=$("$BENCH" -s "127.0.0.1:$port" -k "$ITEMS" -v "$v" -p \
                  --verify -D 0 2>&1 | grep '^RESULT' || true)
            rss=$(rss_kb "$SPID")
            ver=$(echo "$out" | sed 's/.*verify_hit=\([-0-9.]*\).*/\1/')
            stop_server "$SPID"
            disk=0
            [ "$t" != memcached ] && [ "$t" != memory ] &&
                disk=$(du -sb "$dir" | cut -f1)
            raw "FOOT target=$t value=$v items=$ITEMS rss_base_kb=$base" \
                "rss_kb=$rss disk_bytes=$disk verify_hit=${ver:--1}"
        done
    done
fi

# ------------------------------------------------------------- report
T_END=$(date +%s)
HOST=$(hostname -s)
STAMP=$(date +%Y-%m-%d)
mkdir -p "$OUT"
BASE=$OUT/$STAMP-$HOST
[ "$QUICK" = 1 ] && BASE=$BASE-quick
[ -n "${TAG:-}" ] && BASE=$BASE-$TAG
cp "$RAW" "$BASE.raw"

export PARTS CMDLINE HOST STAMP THREADS CTHREADS MEMORY FOOT_MEMORY ROUNDS WARMUP \
       DURATION ITEMS LOAD_START TARGETS WORKLOADS QUICK UPDATE_README README
export LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
export ELAPSED=$((T_END - T_START))
export CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
export NCPU=$(nproc)
export MEM_GB=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
export KERNEL=$(uname -r)
export DISTRO=$(. /etc/os-release && echo "$PRETTY_NAME")
export STASHD_VERSION=$("$STASHD" --version 2>&1 | head -1)
export MC_VERSION=$("$MEMCACHED" -V 2>&1 | head -1)
export GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo -)
export GIT_DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . &&
                   echo " + uncommitted changes" || true)
export CC_VERSION=$(cc --version | head -1)

python3 - "$RAW" "$BASE" <<'PY'
import os, re, statistics, sys

raw_path, base = sys.argv[1], sys.argv[2]
E = os.environ
rows = []
for line in open(raw_path):
    line = line.rstrip("\n")
    if not line:
        continue
    kind, _, rest = line.partition(" ")
    d = {"kind": kind}
    m = re.search(r"(^| )reason=(.*)$", rest)
    if m:
        d["reason"] = m.group(2)
        rest = rest[:m.start()]
    for tok in rest.split():
        k, _, v = tok.partition("=")
        d[k] = v
    rows.append(d)

def num(d, k, default=None):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return default

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"

def ratio(a, b, nd=2):
    if a is None or not b:
        return "–"
    return f"{a / b:.{nd}f}×"

targets = E["TARGETS"].split()
workloads = E["WORKLOADS"].split()
runs = [r for r in rows if r["kind"] == "RUN"]
fails = [r for r in rows if r["kind"] == "FAIL"]
skips = [r for r in rows if r["kind"] == "SKIP"]

agg = {}
for w in workloads:
    for t in targets:
        rs = [r for r in runs if r["workload"] == w and r["target"] == t]
        if not rs:
            continue
        a = {k: med([num(r, k) for r in rs]) for k in
             ("ops_s", "p50_us", "p99_us", "p999_us", "hit",
              "server_cpu_ns_op", "client_cpu_ns_op", "errors")}
        a["n"] = len(rs)
        a["min"] = min(num(r, "ops_s") for r in rs)
        a["max"] = max(num(r, "ops_s") for r in rs)
        a["rounds"] = {r["round"]: num(r, "ops_s") for r in rs}
        agg[(w, t)] = a

def pair_ratios(w, t, key):
    """target/memcached per pair: each run of t against the memcached run
    of the same round and slot (run just before it); older raw files
    without slots pair by round."""
    mc = {}
    for r in runs:
        if r["workload"] == w and r["target"] == "memcached":
            mc[(r["round"], r.get("slot"))] = num(r, key)
    out = []
    for r in runs:
        if r["workload"] != w or r["target"] != t:
            continue
        b = mc.get((r["round"], r.get("slot")))
        v = num(r, key)
        if v is not None and b:
            out.append(v / b)
    return out

def rel(w, t, key):
    """Median of the paired ratios; None when nothing pairs."""
    if t == "memcached":
        return 1.0 if agg.get((w, t)) else None
    return med(pair_ratios(w, t, key))

def paired(w, t):
    """Range of the paired ops/s ratios: the spread shows the noise."""
    rs = pair_ratios(w, t, "ops_s")
    return (min(rs), max(rs)) if rs else None

def xr(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}×"

def nfail(w, t):
    return len([r for r in fails if r["workload"] == w and r["target"] == t])

out = []
P = out.append
title = "quick run" if E["QUICK"] == "1" else "full run"
if E["PARTS"] != "driver load restart footprint":
    title += ", parts: " + E["PARTS"]
P(f"# stashd vs memcached — {E['STAMP']} on {E['HOST']} ({title})")
P("")
P(f"Command: `{E['CMDLINE']}` (took {int(E['ELAPSED']) // 60} min "
  f"{int(E['ELAPSED']) % 60} s)")
P("")
P("| | |")
P("|---|---|")
P(f"| machine | {E['CPU_MODEL']}, {E['NCPU']} cores, {E['MEM_GB']} GB, "
  f"Linux {E['KERNEL']}, {E['DISTRO']} |")
P(f"| versions | {E['STASHD_VERSION']} (git {E['GIT_REV']}"
  f"{E['GIT_DIRTY']}), {E['MC_VERSION']}, {E['CC_VERSION']} |")
P(f"| servers | loopback, `-t {E['THREADS']}` worker threads and "
  f"`-m {E['MEMORY']}` MB each, started fresh for every run |")
P(f"| client | stashd-bench, {E['CTHREADS']} threads, closed loop; "
  f"{E['ROUNDS']} rounds, memcached run right before every other "
  f"target, {E['WARMUP']} s "
  f"warm-up + {E['DURATION']} s measured per run |")
P(f"| parts | {E['PARTS']}; workloads: {E['WORKLOADS']} |")
P(f"| load average | {E['LOAD_START']} at start, {E['LOAD_END']} at end |")
P("")
P("Workloads (all: 50 connections, 16-byte keys, 100,000 keys prefilled, "
  "uniform keys unless said, binary protocol unless said): `standard` "
  "set:get 1:10, 32-byte values, no pipelining; `writes` 1:1; `large` "
  "4096-byte values; `pipelined` depth 16; `pipelined-text` depth 16 over "
  "the text protocol; `zipf` zipf(0.99) keys; `text` standard over text.")
P("")
if runs:
    P("## Throughput and latency")
    P("")
    P("Medians of the runs. Memcached runs right before every other target "
      "(A B A C ...), and each `× mc` figure is the median of the ratios of "
      "a run to that memcached run, so a change in what the machine's other "
      "tenants do between runs hits both sides of a ratio. `pair ratios` is "
      "the range of those ops/s ratios (the noise). Server CPU is the "
      "server's CPU time (user + sys) per request: on a shared machine it is "
      "steadier than ops/s. A failed run (the client saw no reply for 10 s) "
      "is counted, not averaged in.")
    P("")
    P("| workload | target | runs | ops/s | × memcached | pair ratios | "
      "p50 µs | p99 µs | p99 × mc | p99.9 µs | hit | server CPU ns/op | "
      "CPU × mc |")
    P("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for w in workloads:
        m = agg.get((w, "memcached"))
        for t in targets:
            a = agg.get((w, t))
            if not a:
                f = [r for r in fails if r["workload"] == w and r["target"] == t]
                if f:
                    P(f"| {w} | {t} | 0 (+{len(f)} failed) | failed: "
                      f"{f[0].get('reason', '?')} | | | | | | | | | | |")
                continue
            pr = paired(w, t)
            nf = nfail(w, t)
            runs_s = f"{a['n']}" + (f" (+{nf} failed)" if nf else "")
            P(f"| {w} | {t} | {runs_s} | {fmt(a['ops_s'])} | "
              f"{xr(rel(w, t, 'ops_s'))} | "
              f"{'–' if not pr or t == 'memcached' else f'{pr[0]:.2f}–{pr[1]:.2f}'}"
              f" | {fmt(a['p50_us'], 0)} | {fmt(a['p99_us'], 0)} | "
              f"{xr(rel(w, t, 'p99_us'))} | "
              f"{fmt(a['p999_us'], 0)} | {fmt(a['hit'], 3)} | "
              f"{fmt(a['server_cpu_ns_op'])} | "
              f"{xr(rel(w, t, 'server_cpu_ns_op'))} |")
    P("")

persist = [t for t in targets if "-" in t]
if runs and persist and "writes" in workloads:
    P("## Durability cost (`writes`, 1:1)")
    P("")
    P("| backend | --sync | ops/s | × memcached | × same backend, --sync=none |")
    P("|---|---|--:|--:|--:|")
    m = agg.get(("writes", "memcached"))
    for t in persist:
        b, s = t.split("-", 1)
        a = agg.get(("writes", t))
        n = agg.get(("writes", f"{b}-none"))
        if a:
            P(f"| {b} | {s} | {fmt(a['ops_s'])} | "
              f"{xr(rel('writes', t, 'ops_s'))} | "
              f"{ratio(a['ops_s'], n and n['ops_s'])} |")
    P("")

rst = [r for r in rows if r["kind"] == "RESTART"]
if rst or " restart " in f" {E['PARTS']} ":
    P("## Restart time")
    P("")
if rst:
    P("Items of 32 bytes; clock from fork/exec of stashd to the first served "
      "hit on key 0; `kept` = fraction of the items a full get pass found "
      "afterwards. `kill9` = kill -9 right after 2 s of writes.")
    P("")
    P("| backend | after | items | first accept ms | first hit ms | kept |")
    P("|---|---|--:|--:|--:|--:|")
    for r in rst:
        P(f"| {r['target']} | {r['after']} | {fmt(num(r, 'items'))} | "
          f"{r['first_conn_ms']} | {r['first_hit_ms']} | "
          f"{r['verify_hit']} |")
    P("")
elif " restart " in f" {E['PARTS']} ":
    P("No persistent backend among the targets: memory and memcached keep "
      "nothing across a restart.")
    P("")

foot = [r for r in rows if r["kind"] == "FOOT"]
if foot:
    P("## Footprint")
    P("")
    P(f"{E['ITEMS']} items, 16-byte keys, `-m {E['FOOT_MEMORY']}`. RSS/item "
      "is the growth of VmRSS over the empty server; `kept` checks nothing "
      "was evicted. A persistent backend's RSS includes the pages of its "
      "memory-mapped data file, which the kernel can drop and reload.")
    P("")
    P("| target | value B | RSS empty MB | RSS full MB | RSS bytes/item | "
      "× memcached | overhead B/item | disk bytes/item | kept |")
    P("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    mc = {r["value"]: r for r in foot if r["target"] == "memcached"}
    for r in foot:
        n = num(r, "items")
        per = (num(r, "rss_kb") - num(r, "rss_base_kb")) * 1024 / n
        m = mc.get(r["value"])
        mper = m and (num(m, "rss_kb") - num(m, "rss_base_kb")) * 1024 / n
        disk = num(r, "disk_bytes", 0)
        P(f"| {r['target']} | {r['value']} | "
          f"{num(r, 'rss_base_kb') / 1024:.1f} | "
          f"{num(r, 'rss_kb') / 1024:.1f} | {per:.1f} | "
          f"{ratio(per, mper)} | {per - 16 - float(r['value']):.1f} | "
          f"{fmt(disk / n, 1) if disk else '–'} | {r['verify_hit']} |")
    P("")

drv = [r for r in rows if r["kind"] == "DRIVER"]
if drv:
    P("## Driver check: stashd-bench vs memcaslap")
    P("")
    P("Both against the same memcached (`-t {0}`), 50 connections, 2 client "
      "threads, set:get 1:10, 16-byte keys, 32-byte values, alternating. "
      "memcaslap: `memcaslap -s HOST:PORT -F cfg -T 2 -c 50 [-B] -t {1}s` "
      "(cfg: key 16, value 32, cmd set 0.0909 / get 0.9091); stashd-bench: "
      "`stashd-bench -s HOST:PORT -P PROTO -T 2 -c 50 -r 1:10 -v 32 "
      "-k 100000 -p -w {2} -D {3}`. Client CPU = user + sys of the client "
      "process per request (memcaslap's includes its own warm-up)."
      .format(E["THREADS"], round(float(E["WARMUP"]) + float(E["DURATION"])),
              E["WARMUP"], E["DURATION"]))
    P("")
    P("| protocol | tool | ops/s (median) | each round | client CPU ns/op | "
      "server CPU ns/op |")
    P("|---|---|--:|---|--:|--:|")
    for proto in ("text", "binary"):
        for tool in ("stashd-bench", "memcaslap"):
            rs = [r for r in drv if r["tool"] == tool and r["proto"] == proto]
            if not rs:
                continue
            P(f"| {proto} | {tool} | {fmt(med([num(r, 'ops_s') for r in rs]))}"
              f" | {', '.join(fmt(num(r, 'ops_s')) for r in rs)} | "
              f"{fmt(med([num(r, 'client_cpu_ns_op') for r in rs]))} | "
              f"{fmt(med([num(r, 'server_cpu_ns_op') for r in rs]))} |")
    P("")

# issue 6 targets
def tgt_ratio(w, t):
    return rel(w, t, "ops_s"), rel(w, t, "p99_us")

if runs or rst or foot:
    P("## Targets (issue 6)")
    P("")
    P("| target | goal | measured | |")
    P("|---|---|--:|---|")
    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "**missed**")
    for w, t, goal, need_p99 in (("standard", "memory", 1.00, True),
                                 ("pipelined", "memory", 1.00, True),
                                 ("pipelined-text", "memory", 2.00, False),
                                 ("standard", "lmdb-periodic", 0.90, False),
                                 ("standard", "lmdb-always", 0.50, False),
                                 ("standard", "sqlite-periodic", 0.60, False),
                                 ("standard", "sqlite-always", 0.30, False)):
        r, p = tgt_ratio(w, t)
        goal_s = f"≥ {goal:.2f}× ops/s" + (", p99 ≤ 1.00×" if need_p99 else "")
        if r is None:
            P(f"| {t} `{w}` | {goal_s} | not measured | n/a |")
            continue
        ok = r >= goal and (not need_p99 or (p is not None and p <= 1.0))
        meas = f"{r:.2f}× ops/s" + (f", p99 {p:.2f}×" if need_p99 and p else "")
        P(f"| {t} `{w}` | {goal_s} | {meas} | {verdict(ok)} |")
    for r in rst:
        if r["after"] in ("clean", "kill9"):
            h = num(r, "first_hit_ms")
            P(f"| {r['target']} restart ({r['after']}) | first hit < 1000 ms | "
              f"{r['first_hit_ms']} ms | "
              f"{verdict(None if h is None or h < 0 else h < 1000)} |")
    if not rst:
        P("| lmdb, sqlite restart | first hit < 1000 ms | not measured | n/a |")
    if foot:
        mc = {r["value"]: r for r in foot if r["target"] == "memcached"}
        for r in foot:
            if r["target"] != "memory" or r["value"] not in mc:
                continue
            m = mc[r["value"]]
            a = num(r, "rss_kb") - num(r, "rss_base_kb")
            b = num(m, "rss_kb") - num(m, "rss_base_kb")
            P(f"| memory per item, {r['value']} B | ≤ 1.00× memcached | "
              f"{a / b:.2f}× | {verdict(a <= b)} |")
    P("")

if skips or fails:
    P("## Notes")
    P("")
    for s in skips:
        P(f"- skipped {s['what']}: {s.get('reason', '')}")
    seen = set()
    for f in fails:
        key = (f["workload"], f["target"])
        if key in seen:
            continue
        seen.add(key)
        P(f"- {f['workload']} on {f['target']} failed: {f.get('reason', '')}")
    P("")

name = os.path.basename(base)
if runs:
    P(f"![ops/s and p99 per target]({name}.png)")
    P("")
P(f"Raw RESULT lines: [{name}.raw]({name}.raw).")
open(base + ".md", "w").write("\n".join(out) + "\n")

# gnuplot data: one row per workload, one column per target
with open(base + ".dat", "w") as f:
    f.write("workload " + " ".join(targets) + "\n")
    for w in workloads:
        f.write(w + " " + " ".join(
            fmt(agg.get((w, t), {}).get("ops_s"), 0).replace(",", "")
            .replace("–", "NaN") for t in targets) + "\n")
    f.write("\n\n")
    f.write("workload " + " ".join(targets) + "\n")
    for w in workloads:
        f.write(w + " " + " ".join(
            str(agg.get((w, t), {}).get("p99_us", "NaN")) for t in targets)
            + "\n")

if runs and E["UPDATE_README"] == "1" and os.path.exists(E["README"]):
    text = open(E["README"]).read()
    b, e = "<!-- latest:begin -->", "<!-- latest:end -->"
    if b in text and e in text:
        i, j = text.index(b) + len(b), text.index(e)
        body = "\n".join(out)
        end = body.index("## Notes") if "## Notes" in body else \
            body.index("![")
        sect = body[body.index("## Throughput"):end].replace("\n## ",
                                                             "\n### ")
        sect = "#" + sect
        rel = "results/" + name
        new = (f"\n\nFrom [{rel}.md]({rel}.md) (`{E['CMDLINE']}`, "
               f"{E['STAMP']}, {E['HOST']}):\n\n" + sect.strip() +
               f"\n\n![ops/s and p99 per target]({rel}.png)\n\n")
        open(E["README"], "w").write(text[:i] + new + text[j:])
PY

ntargets=$(echo "$TARGETS" | wc -w)
grep -q '^RUN ' "$RAW" && gnuplot <<EOF || log "no chart: no load results"
set terminal pngcairo size 1200,900 font "sans,10"
set output "$BASE.png"
set multiplot layout 2,1 title "stashd vs memcached, $STAMP on $HOST (median of $ROUNDS rounds, -t $THREADS)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key outside right top
set grid ytics
set logscale y
set title "throughput (ops/s, log scale; higher is better)"
set ylabel "ops/s"
plot for [i=2:$((ntargets + 1))] "$BASE.dat" index 0 using i:xtic(1) title columnheader(i)
set title "p99 latency (µs, log scale; lower is better)"
set ylabel "p99 µs"
plot for [i=2:$((ntargets + 1))] "$BASE.dat" index 1 using i:xtic(1) title columnheader(i)
unset multiplot
EOF
rm -f "$BASE.dat"

log "wrote $BASE.md"
[ -f "$BASE.png" ] && log "wrote $BASE.png"
log "wrote $BASE.raw"
[ "$UPDATE_README" = 1 ] && grep -q '^RUN ' "$RAW" && log "updated $README"
echo "$BASE.md"
