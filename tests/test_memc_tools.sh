#!/bin/bash
# Real-client test: libmemcached's command-line tools (memccp, memccat,
# memcrm, memcflush, memcstat) in binary mode store and read files through
# stashd, compared byte for byte. Starts stashd ($STASHD_BIN) on a free
# 127.0.0.1 port and stops it by pid; every tool call is time-bounded.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

for tool in memccp memccat memcrm memcflush memcstat; do
    command -v "$tool" >/dev/null \
        || fail "$tool not found (libmemcached-tools)"
done
start_stashd
SERVERS="--servers=127.0.0.1:$PORT"

mc() {
    timeout 20 "$@" --binary "$SERVERS"
}

# Files: text, random binary, every byte value, and a value near -I (1 MB).
mkdir "$TMP/in" "$TMP/out"
printf 'hello, stashd\n' >"$TMP/in/small.txt"
head -c 300000 /dev/urandom >"$TMP/in/random.bin"
for _ in 1 2 3 4; do
    for i in $(seq 0 255); do
        printf "\\$(printf '%03o' "$i")"
    done
done >"$TMP/in/bytes.bin"
head -c 1000000 /dev/urandom >"$TMP/in/large.bin"
[ "$(wc -c <"$TMP/in/bytes.bin")" -eq 1024 ] || fail "bytes.bin setup"
FILES="small.txt random.bin bytes.bin large.bin"

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
ok "memccp --add refused, --replace stored"

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
grep -qE "^[[:space:]]+curr_items: 3\$" "$TMP/out/stat" \
    || fail "memcstat: curr_items is not 3"
grep -qE "^[[:space:]]+cmd_get: [0-9]+\$" "$TMP/out/stat" \
    || fail "memcstat: no cmd_get"
ok "memcstat"

mc memcflush || fail "memcflush"
for f in random.bin bytes.bin large.bin; do
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
