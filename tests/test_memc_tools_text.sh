#!/bin/bash
# Real-client test: libmemcached's command-line tools (memccp, memccat,
# memcrm, memcflush, memcstat) in text mode (no --binary) store and read
# files through stashd, compared byte for byte. Starts stashd ($STASHD_BIN)
# on a free 127.0.0.1 port and stops it by pid; every tool call is
# time-bounded. Expected outcomes were taken from memcached 1.6.18.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

for tool in memccp memccat memcrm memcflush memcstat; do
    command -v "$tool" >/dev/null \
        || fail "$tool not found (libmemcached-tools)"
done
start_stashd
SERVERS="--servers=127.0.0.1:$PORT"

# Text protocol: the tools' default, so no --binary anywhere.
mc() {
    timeout 20 "$@" "$SERVERS"
}

# Files: text, random binary, every byte value (so \r\n and NUL inside),
# one with a line "END" in it, and a value near -I (1 MB).
mkdir "$TMP/in" "$TMP/out"
printf 'hello, stashd\n' >"$TMP/in/small.txt"
head -c 300000 /dev/urandom >"$TMP/in/random.bin"
for _ in 1 2 3 4; do
    for i in $(seq 0 255); do
        printf "\\$(printf '%03o' "$i")"
    done
done >"$TMP/in/bytes.bin"
printf 'VALUE x 0 3\r\nEND\r\n\r\nSTORED\r\n\0' >"$TMP/in/proto.txt"
head -c 1000000 /dev/urandom >"$TMP/in/large.bin"
[ "$(wc -c <"$TMP/in/bytes.bin")" -eq 1024 ] || fail "bytes.bin setup"
FILES="small.txt random.bin bytes.bin proto.txt large.bin"

(cd "$TMP/in" && mc memccp --flags=77 $FILES) || fail "memccp"
ok "memccp stored $FILES"

for f in $FILES; do
    mc memccat --file="$TMP/out/$f" "$f" || fail "memccat $f"
    cmp "$TMP/in/$f" "$TMP/out/$f" || fail "memccat $f: bytes differ"
done
ok "memccat read every file back byte for byte"

# memccat without --file prints each value followed by a newline.
mc memccat small.txt bytes.bin >"$TMP/out/cat"
cat "$TMP/in/small.txt" >"$TMP/out/want"
echo >>"$TMP/out/want"
cat "$TMP/in/bytes.bin" >>"$TMP/out/want"
echo >>"$TMP/out/want"
cmp "$TMP/out/cat" "$TMP/out/want" || fail "memccat of two keys to stdout"
ok "memccat of two keys to stdout"

[ "$(mc memccat --flags small.txt | head -n 1)" = "77" ] \
    || fail "memccat --flags: flags not kept"
ok "flags kept"

if (cd "$TMP/in" && mc memccp --add small.txt) 2>/dev/null; then
    fail "memccp --add of an existing key succeeded"
fi
printf 'replaced\n' >"$TMP/in/small.txt"
(cd "$TMP/in" && mc memccp --replace small.txt) || fail "memccp --replace"
mc memccat --file="$TMP/out/small.txt" small.txt || fail "memccat replaced"
cmp "$TMP/in/small.txt" "$TMP/out/small.txt" || fail "replace: bytes differ"
printf 'new\n' >"$TMP/in/new.txt"
if (cd "$TMP/in" && mc memccp --replace new.txt) 2>/dev/null; then
    fail "memccp --replace of a missing key succeeded"
fi
if mc memccat new.txt >/dev/null 2>&1; then
    fail "memccp --replace stored a missing key"
fi
ok "memccp --add refused, --replace stored only an existing key"

# Over -I (1 MB): refused (SERVER_ERROR), and the server keeps serving.
head -c 2000000 /dev/zero >"$TMP/in/huge.bin"
if (cd "$TMP/in" && mc memccp huge.bin) 2>/dev/null; then
    fail "memccp of a 2 MB file succeeded"
fi
if mc memccat huge.bin >/dev/null 2>&1; then
    fail "memccat found the 2 MB value"
fi
mc memccat --file="$TMP/out/large.bin" large.bin || fail "memccat large"
cmp "$TMP/in/large.bin" "$TMP/out/large.bin" || fail "large.bin changed"
ok "value over -I refused, server still serving"

mc memcrm small.txt || fail "memcrm"
if mc memccat small.txt >/dev/null 2>&1; then
    fail "memccat found a removed key"
fi
if mc memcrm small.txt 2>/dev/null; then
    fail "memcrm of a missing key succeeded"
fi
mc memccat --file="$TMP/out/random.bin" random.bin || fail "other keys lost"
cmp "$TMP/in/random.bin" "$TMP/out/random.bin" || fail "random.bin changed"
ok "memcrm removed one key only"

mc memcstat >"$TMP/out/stat" || fail "memcstat"
grep -q "^Server: 127.0.0.1 ($PORT)" "$TMP/out/stat" \
    || fail "memcstat: no server line"
grep -qE "^[[:space:]]+pid: $PID\$" "$TMP/out/stat" \
    || fail "memcstat: pid is not $PID"
grep -qE "^[[:space:]]+curr_items: 4\$" "$TMP/out/stat" \
    || fail "memcstat: curr_items is not 4"
grep -qE "^[[:space:]]+cmd_get: [0-9]+\$" "$TMP/out/stat" \
    || fail "memcstat: no cmd_get"
ok "memcstat"

mc memcstat settings >"$TMP/out/settings" || fail "memcstat settings"
grep -qE "^[[:space:]]+tcpport: $PORT\$" "$TMP/out/settings" \
    || fail "memcstat settings: tcpport is not $PORT"
grep -qE "^[[:space:]]+item_size_max: 1048576\$" "$TMP/out/settings" \
    || fail "memcstat settings: item_size_max is not 1048576"
mc memcstat items >"$TMP/out/items" || fail "memcstat items"
# Slab classes are the memory backend's layout; others may have none.
if [ "${STASHD_BACKEND:-}" = memory ]; then
    grep -qE "^[[:space:]]+items:[0-9]+:number: [0-9]+\$" "$TMP/out/items" \
        || fail "memcstat items: no items:N:number"
fi
mc memcstat --server-version >"$TMP/out/version" 2>&1 \
    || fail "memcstat --server-version"
grep -qE "^127\.0\.0\.1:$PORT [0-9]+\.[0-9]+\.[0-9]+" "$TMP/out/version" \
    || fail "memcstat --server-version: $(cat "$TMP/out/version")"
ok "memcstat settings, items, --server-version"

mc memcflush || fail "memcflush"
for f in random.bin bytes.bin proto.txt large.bin; do
    if mc memccat "$f" >/dev/null 2>&1; then
        fail "memccat found $f after memcflush"
    fi
done
ok "memcflush emptied the cache"

# Still serving after all that, then a clean SIGTERM.
(cd "$TMP/in" && mc memccp bytes.bin) || fail "memccp after flush"
mc memccat --file="$TMP/out/bytes2.bin" bytes.bin || fail "memccat after flush"
cmp "$TMP/in/bytes.bin" "$TMP/out/bytes2.bin" || fail "bytes.bin after flush"
ok "served after flush"

stop_stashd
ok "SIGTERM: exit 0"

echo "$passed passed, 0 failed"
