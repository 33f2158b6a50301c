#!/usr/bin/python3
"""Real-client test: pymemcache (text protocol) against stashd.

Starts $STASHD_BIN -I 1m ($STASHD_BACKEND's backend, if set, with a data
directory of its own) on a free 127.0.0.1 port and runs every check below
with pymemcache's base Client (values are bytes, stored as-is). Commands
that pymemcache 3.x does not have (gat, gats, verbosity, stats reset) and
replies it cannot show (exact error lines, what a pipelined packet gets
back) go over a raw socket. Every expected reply was taken from memcached
1.6.18 with the same requests. Stops the server by pid (SIGTERM, which must
exit 0), prints "N passed, M failed" and exits non-zero on a failure.
"""
import os
import random
import re
import signal
import socket
import sys
import time
import traceback

from pymemcache.client.base import Client
from pymemcache.exceptions import (MemcacheClientError,
                                   MemcacheIllegalInputError,
                                   MemcacheServerError)

from lib import start_server, stop_server

CHECKS = []
PORT = 0
MAX_ITEM = 1024 * 1024          # -I 1m
# memcached 1.6 counts a 56-byte item header, the key + 1 and the value + 2
# (its trailing \r\n) against -I: the largest value is 1048517 - len(key).
ITEM_OVERHEAD = 56 + 1 + 2


def check(fn):
    CHECKS.append(fn)
    return fn


def client():
    # pymemcache sends storage commands with noreply unless told otherwise;
    # wait for every reply (so that other connections see the write) except
    # where a check asks for noreply itself.
    return Client(("127.0.0.1", PORT), connect_timeout=5, timeout=10,
                  default_noreply=False)


def raw(data, until=b"END\r\n", closes=False, count=1):
    """Sends data on a new connection and returns what comes back once it
    ends with `until` and holds it `count` times (or, with closes=True,
    once the server closes). Times out after 10 s with what arrived."""
    s = socket.create_connection(("127.0.0.1", PORT), 5)
    try:
        s.settimeout(10)
        s.sendall(data)
        out = b""
        while closes or not (out.endswith(until) and
                             out.count(until) >= count):
            try:
                b = s.recv(1 << 20)
            except socket.timeout:
                break
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


def expect_raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s%r did not raise %s" % (fn.__name__, args,
                                                    exc.__name__))


def eq(got, want):
    assert got == want, "got %r, want %r" % (got, want)


@check
def set_get_flags(mc):
    assert mc.set("sg", b"v")
    eq(mc.get("sg"), b"v")
    eq(mc.get("sg-missing"), None)
    assert mc.set("sg", b"v2", flags=4294967295)
    eq(mc.get("sg"), b"v2")
    eq(raw(b"get sg\r\n"), b"VALUE sg 4294967295 2\r\nv2\r\nEND\r\n")
    assert mc.set("sg-empty", b"")
    eq(mc.get("sg-empty"), b"")


@check
def add_and_replace(mc):
    assert mc.add("ar", b"1", noreply=False)
    assert not mc.add("ar", b"2", noreply=False)            # NOT_STORED
    eq(mc.get("ar"), b"1")
    assert not mc.replace("ar-missing", b"x", noreply=False)
    eq(mc.get("ar-missing"), None)
    assert mc.replace("ar", b"3", noreply=False)
    eq(mc.get("ar"), b"3")


@check
def append_and_prepend(mc):
    assert mc.set("ap", b"mid")
    assert mc.append("ap", b"-end", noreply=False)
    assert mc.prepend("ap", b"start-", noreply=False)
    eq(mc.get("ap"), b"start-mid-end")
    assert not mc.append("ap-missing", b"x", noreply=False)
    assert not mc.prepend("ap-missing", b"x", noreply=False)
    eq(mc.get("ap-missing"), None)
    # Flags and the data block's own bytes of append are ignored.
    assert mc.set("ap2", b"a", flags=7)
    assert mc.append("ap2", b"\r\n\x00", flags=9, noreply=False)
    eq(raw(b"get ap2\r\n"), b"VALUE ap2 7 4\r\na\r\n\x00\r\nEND\r\n")


@check
def cas(mc):
    assert mc.set("c", b"v1")
    val, cas1 = mc.gets("c")
    eq(val, b"v1")
    assert cas1.isdigit() and int(cas1) > 0
    eq(mc.cas("c", b"v2", cas1), True)                     # STORED
    eq(mc.get("c"), b"v2")
    eq(mc.cas("c", b"v3", cas1), False)                    # EXISTS
    eq(mc.get("c"), b"v2")
    val2, cas2 = mc.gets("c")
    assert val2 == b"v2" and cas2 != cas1
    eq(mc.cas("c-missing", b"x", cas2), None)              # NOT_FOUND
    eq(mc.gets("c-missing"), (None, None))
    eq(raw(b"cas c 0 0 1 " + cas2 + b"\r\nz\r\ncas c 0 0 1 " + cas2 +
           b"\r\nz\r\ncas c-missing 0 0 1 1\r\nz\r\n", b"NOT_FOUND\r\n"),
       b"STORED\r\nEXISTS\r\nNOT_FOUND\r\n")
    # Every write gives a new CAS; touch and gat keep it (memcached 1.6).
    _, c0 = mc.gets("c")
    assert mc.touch("c", 100, noreply=False)
    eq(mc.gets("c"), (b"z", c0))
    eq(raw(b"gats 100 c\r\n"), b"VALUE c 0 1 " + c0 + b"\r\nz\r\nEND\r\n")
    assert mc.append("c", b"y", noreply=False)
    _, c1 = mc.gets("c")
    assert c1 != c0
    eq(raw(b"cas c 0 0 1 abc\r\nx\r\n", b"ERROR\r\n"),
       b"CLIENT_ERROR bad command line format\r\nERROR\r\n")


@check
def get_many_300(mc):
    data = {"many-%03d" % i: ("value-%d" % i).encode() * (i % 7 + 1)
            for i in range(300)}
    eq(mc.set_many(data, noreply=False), [])
    keys = list(data) + ["many-missing-%d" % i for i in range(20)]
    random.Random(3).shuffle(keys)
    got = mc.get_many(keys)
    assert got == data, "get_many: %d of %d" % (len(got), len(data))
    gets = mc.gets_many(list(data))
    eq(sorted(gets), sorted(data))
    for k, (v, c) in gets.items():
        assert v == data[k] and c.isdigit(), (k, v, c)
    assert len({c for _, c in gets.values()}) == 300, "CAS values not unique"
    eq(mc.get_many(["many-missing-a", "many-missing-b"]), {})
    # The same 300 keys in one raw get: replies in request order.
    out = raw(b"get " + " ".join(data).encode() + b"\r\n")
    eq(re.findall(rb"VALUE (\S+) 0 \d+\r\n", out),
       [k.encode() for k in data])
    eq(mc.delete_many(["many-000", "many-001"], noreply=False), True)
    eq(mc.get_many(["many-000", "many-001", "many-002"]),
       {"many-002": data["many-002"]})


@check
def gat_and_gats(mc):
    assert mc.set("g", b"hi", flags=5)
    _, c = mc.gets("g")
    eq(raw(b"gat 100 g g-missing\r\n"), b"VALUE g 5 2\r\nhi\r\nEND\r\n")
    eq(raw(b"gats 0 g-missing g\r\n"),
       b"VALUE g 5 2 " + c + b"\r\nhi\r\nEND\r\n")
    eq(raw(b"gat 100 g-missing\r\n"), b"END\r\n")
    eq(raw(b"gat\r\n", b"\r\n"), b"ERROR\r\n")
    eq(raw(b"gat abc g\r\n", b"\r\n"),
       b"CLIENT_ERROR invalid exptime argument\r\n")


@check
def touch(mc):
    assert mc.set("t", b"tv")
    eq(mc.touch("t", 100, noreply=False), True)            # TOUCHED
    eq(mc.touch("t-missing", 100, noreply=False), False)   # NOT_FOUND
    eq(mc.touch("t", 100, noreply=True), True)
    eq(mc.get("t"), b"tv")
    eq(raw(b"touch t 10\r\ntouch t-missing 10\r\ntouch t abc\r\n",
           b"argument\r\n"),
       b"TOUCHED\r\nNOT_FOUND\r\nCLIENT_ERROR invalid exptime argument\r\n")


@check
def delete(mc):
    assert mc.set("d", b"1")
    eq(mc.delete("d", noreply=False), True)                 # DELETED
    eq(mc.delete("d", noreply=False), False)                # NOT_FOUND
    assert mc.set("d", b"1")
    eq(mc.delete("d", noreply=True), True)
    eq(mc.get("d"), None)
    assert mc.set("d", b"1")
    # A trailing 0 is accepted as memcached does; any other time is not.
    eq(raw(b"delete d 0\r\ndelete d 0\r\ndelete d 1\r\n", b"]\r\n"),
       b"DELETED\r\nNOT_FOUND\r\nCLIENT_ERROR bad command line format.  "
       b"Usage: delete <key> [noreply]\r\n")
    assert mc.set("d", b"1")
    eq(raw(b"delete d noreply\r\ndelete d noreply\r\nget d\r\n"), b"END\r\n")


@check
def incr_and_decr(mc):
    assert mc.set("n", b"10")
    eq(mc.incr("n", 1), 11)
    eq(mc.incr("n", 5), 16)
    eq(mc.decr("n", 6), 10)
    eq(mc.decr("n", 100), 0)                 # floor at 0, no wrap
    eq(mc.get("n"), b"0 ")                   # memcached pads in place
    assert mc.set("n", b"10")
    eq(mc.decr("n", 1), 9)
    eq(mc.get("n"), b"9 ")
    eq(mc.incr("n", 991), 1000)
    eq(mc.get("n"), b"1000")
    assert mc.set("big", b"18446744073709551615")
    eq(mc.incr("big", 2), 1)                 # wraps at 2^64
    assert mc.set("big", b"1")
    eq(mc.incr("big", 18446744073709551615), 0)
    eq(mc.incr("n-missing", 1), None)        # NOT_FOUND
    eq(mc.decr("n-missing", 1), None)
    assert mc.set("text", b"abc")
    e = expect_raises(MemcacheClientError, mc.incr, "text", 1)
    eq(e.args[0], b"cannot increment or decrement non-numeric value")
    expect_raises(MemcacheClientError, mc.decr, "text", 1)
    eq(mc.get("text"), b"abc")
    assert mc.set("n", b"5")
    eq(mc.incr("n", 1, noreply=True), None)
    eq(mc.get("n"), b"6")
    eq(raw(b"incr n abc\r\nincr n 18446744073709551616\r\nincr n -1\r\n"
           b"decr n\r\n", b"ERROR\r\n"),
       b"CLIENT_ERROR invalid numeric delta argument\r\n" * 3 + b"ERROR\r\n")


@check
def flush_all(mc):
    assert mc.set("f1", b"1") and mc.set("f2", b"2")
    eq(mc.flush_all(noreply=False), True)
    eq(mc.get_many(["f1", "f2"]), {})
    assert mc.set("f1", b"1")
    eq(mc.flush_all(noreply=True), True)
    eq(mc.get("f1"), None)
    assert mc.set("f1", b"1")
    eq(raw(b"flush_all 0\r\nflush_all abc\r\nget f1\r\n"),
       b"OK\r\nCLIENT_ERROR invalid exptime argument\r\nEND\r\n")


@check
def flush_all_delay(mc):
    # memcached's clock ticks once a second and a delayed flush takes
    # effect within (delay - 2, delay] s: with 3 it is surely not yet done
    # at once and surely done after 3 s.
    assert mc.set("fd", b"1")
    eq(mc.flush_all(delay=3, noreply=False), True)
    eq(mc.get("fd"), b"1")                   # not yet
    time.sleep(3.1)
    eq(mc.get("fd"), None)
    assert mc.set("fd", b"2")                # the flush is not sticky
    eq(mc.get("fd"), b"2")


@check
def ttl_expiry(mc):
    # memcached's clock ticks once a second, so an item with TTL n is gone
    # within (n - 1, n] s: TTL 2 leaves time to extend these.
    t0 = time.monotonic()
    assert mc.set("x-short", b"1", expire=2)
    assert mc.set("x-touched", b"1", expire=2)
    assert mc.set("x-gat", b"1", expire=2)
    assert mc.set("x-gats", b"1", expire=2)
    assert mc.set("x-forever", b"1", expire=0)
    assert mc.set("x-shortened", b"1", expire=0)
    assert mc.set("x-gat-shortened", b"1")
    assert mc.touch("x-touched", 100, noreply=False)
    assert mc.touch("x-shortened", 1, noreply=False)
    eq(raw(b"gat 100 x-gat\r\ngats 100 x-gats\r\ngat 1 x-gat-shortened\r\n",
           count=3).count(b"VALUE"), 3)
    # A negative TTL: stored, and already expired.
    assert mc.set("x-negative", b"1", expire=-1)
    eq(mc.get("x-negative"), None)
    # An absolute unix time in the past (> 30 days) is expired too.
    assert mc.set("x-past", b"1", expire=int(time.time()) - 10)
    eq(mc.get("x-past"), None)
    assert mc.set("x-future", b"1", expire=int(time.time()) + 100)
    assert time.monotonic() - t0 < 0.9, "setup too slow for a 2 s TTL"
    time.sleep(2.2)
    eq(mc.get_many(["x-short", "x-shortened", "x-gat-shortened",
                    "x-touched", "x-gat", "x-gats", "x-forever",
                    "x-future"]),
       {"x-touched": b"1", "x-gat": b"1", "x-gats": b"1", "x-forever": b"1",
        "x-future": b"1"})


@check
def version(mc):
    v = mc.version()
    assert re.match(rb"^\d+\.\d+\.\d+", v), v
    eq(raw(b"version\r\n", b"\r\n"), b"VERSION " + v + b"\r\n")


@check
def verbosity(_mc):
    eq(raw(b"verbosity 1\r\nverbosity 0 noreply\r\nverbosity 0\r\n",
           b"OK\r\nOK\r\n"), b"OK\r\nOK\r\n")
    eq(raw(b"verbosity\r\n", b"\r\n"), b"ERROR\r\n")


def text(d):
    return {(k.decode() if isinstance(k, bytes) else k):
            (v.decode() if isinstance(v, bytes) else v)
            for k, v in d.items()}


@check
def stats(mc):
    assert mc.set("st", b"v")
    mc.get("st")
    st = text(mc.stats())
    for k in ("pid", "uptime", "time", "version", "pointer_size",
              "rusage_user", "rusage_system", "curr_connections",
              "total_connections", "cmd_get", "cmd_set", "cmd_flush",
              "cmd_touch", "get_hits", "get_misses", "delete_hits",
              "incr_hits", "decr_hits", "cas_hits", "cas_badval",
              "touch_hits", "bytes_read", "bytes_written", "limit_maxbytes",
              "threads", "bytes", "curr_items", "total_items", "evictions"):
        assert k in st, "stat %s missing" % k
    assert st["pid"] > 0 and st["curr_connections"] >= 1
    assert st["curr_items"] >= 1 and st["get_hits"] >= 1
    eq(st["limit_maxbytes"], 64 * 1024 * 1024)
    assert abs(st["time"] - time.time()) < 5
    assert isinstance(st["rusage_user"], float)


@check
def stats_settings(mc):
    st = text(mc.stats("settings"))
    eq(st["item_size_max"], MAX_ITEM)
    eq(st["maxbytes"], 64 * 1024 * 1024)
    eq(st["tcpport"], PORT)
    eq(st["maxconns"], 1024)
    eq(st["evictions"], "on")
    eq(st["cas_enabled"], "yes")


@check
def stats_items_slabs_sizes(mc):
    # Slab classes are the memory backend's layout (memcached's); another
    # backend may have none and then sends no per-class lines, but what it
    # sends must add up the same way.
    slabbed = os.environ.get("STASHD_BACKEND") == "memory"
    assert mc.set("si-small", b"x")
    assert mc.set("si-big", b"y" * 5000)
    curr = text(mc.stats())["curr_items"]
    items = text(mc.stats("items"))
    numbers = [v for k, v in items.items()
               if re.match(r"items:\d+:number$", k)]
    if slabbed or numbers:
        assert len(numbers) >= 2, items
        eq(sum(numbers), curr)
    for k in items:
        assert re.match(r"items:\d+:\w+$", k), k
    slabs = text(mc.stats("slabs"))
    used = [v for k, v in slabs.items() if re.match(r"\d+:used_chunks$", k)]
    if slabbed or used:
        assert slabs["active_slabs"] >= 2
        assert slabs["total_malloced"] > 0
        eq(sum(used), curr)
    for k in slabs:
        assert re.match(r"(\d+:\w+|active_slabs|total_malloced)$", k), k
    eq(raw(b"stats sizes\r\n"), b"STAT sizes_status disabled\r\nEND\r\n")


@check
def stats_conns(mc):
    mc.get("sc")
    port = mc.sock.getsockname()[1]
    conns = text(mc.stats("conns"))
    addrs = {k.split(":")[0]: v for k, v in conns.items()
             if k.endswith(":addr")}
    assert "tcp:127.0.0.1:%d" % PORT in addrs.values(), conns
    mine = [fd for fd, a in addrs.items() if a == "tcp:127.0.0.1:%d" % port]
    eq(len(mine), 1)
    eq(conns[mine[0] + ":listen_addr"], "tcp:127.0.0.1:%d" % PORT)
    eq(conns[mine[0] + ":state"], "conn_parse_cmd")
    assert mine[0] + ":secs_since_last_cmd" in conns


@check
def stats_reset(mc):
    mc.get("sr-missing")
    assert text(mc.stats())["get_misses"] >= 1
    eq(raw(b"stats reset\r\n", b"\r\n"), b"RESET\r\n")
    st = text(mc.stats())
    eq((st["cmd_get"], st["get_misses"], st["get_hits"], st["total_items"]),
       (0, 0, 0, 0))
    assert st["curr_items"] >= 1            # items are not touched
    eq(raw(b"stats nonsense\r\n", b"\r\n"), b"ERROR\r\n")


@check
def quit_command(mc):
    # Replies to what came before quit arrive; nothing after it is run.
    assert mc.set("q", b"1")
    eq(raw(b"get q\r\nquit\r\nset q 0 0 1\r\n2\r\n", closes=True),
       b"VALUE q 0 1\r\n1\r\nEND\r\n")
    eq(mc.get("q"), b"1")
    c = client()
    eq(c.get("q"), b"1")
    c.quit()                                 # the server closes, pymemcache
    eq(c.get("q"), b"1")                     # reconnects on the next call
    c.close()


@check
def large_values(mc):
    rnd = random.Random(42)
    val = rnd.randbytes(1000000)
    assert mc.set("large", val, noreply=False)
    eq(mc.get("large"), val)
    # The largest value memcached takes under -I 1m for these keys, then
    # one byte more: refused with the data swallowed, connection kept.
    for key in ("L", "L" * 250):
        biggest = MAX_ITEM - ITEM_OVERHEAD - len(key)
        big = rnd.randbytes(biggest)
        assert mc.set(key, big, noreply=False), len(big)
        eq(mc.get(key), big)
        e = expect_raises(MemcacheServerError, mc.set, key, big + b"x",
                          noreply=False)
        eq(e.args[0], b"object too large for cache")
        eq(mc.get(key), None)                # memcached drops the old one
        eq(raw(b"set %s 0 0 %d\r\n" % (key.encode(), biggest + 1) +
               big + b"x\r\nget large\r\n"),
           b"SERVER_ERROR object too large for cache\r\nVALUE large 0 "
           b"1000000\r\n" + val + b"\r\nEND\r\n")
    eq(mc.get("large"), val)
    expect_raises(MemcacheServerError, mc.set, "huge", b"h" * (2 * MAX_ITEM),
                  noreply=False)
    eq(mc.get("large"), val)


@check
def binary_safe_values(mc):
    every = bytes(range(256)) * 4
    assert mc.set("bytes", every, noreply=False)
    eq(mc.get("bytes"), every)
    nasty = (b"a\r\nb\x00c\r\nEND\r\nVALUE x 0 1\r\nSTORED\r\n\r\n\x00" * 50
             + b"\r\n")
    assert mc.set("nasty", nasty, noreply=False)
    eq(mc.get("nasty"), nasty)
    eq(mc.get_many(["nasty", "bytes"]), {"nasty": nasty, "bytes": every})
    want = b"VALUE nasty 0 %d\r\n" % len(nasty) + nasty + b"\r\nEND\r\n"
    eq(raw(b"get nasty\r\n", want), want)
    assert mc.set("crlf", b"\r\n", noreply=False)
    eq(mc.get("crlf"), b"\r\n")


@check
def key_lengths(mc):
    k250 = "k" * 250
    assert mc.set(k250, b"250", noreply=False)
    eq(mc.get(k250), b"250")
    eq(mc.get_many([k250, "k" * 249]), {k250: b"250"})
    assert mc.delete(k250, noreply=False)
    # pymemcache itself refuses 251 bytes; the server does too.
    expect_raises(MemcacheIllegalInputError, mc.set, "k" * 251, b"x")
    k251 = b"k" * 251
    eq(raw(b"set " + k251 + b" 0 0 1\r\nx\r\n", b"\r\nERROR\r\n"),
       b"CLIENT_ERROR bad command line format\r\nERROR\r\n")
    eq(raw(b"get " + k251 + b"\r\n", b"\r\n"),
       b"CLIENT_ERROR bad command line format\r\n")


@check
def noreply_storage(mc):
    assert mc.set("nr", b"base", noreply=True)
    assert mc.add("nr", b"no", noreply=True)          # NOT_STORED, silent
    assert mc.add("nr-add", b"a", noreply=True)
    assert mc.replace("nr-missing", b"no", noreply=True)
    assert mc.append("nr", b"+app", noreply=True)
    assert mc.prepend("nr", b"pre+", noreply=True)
    _, c = mc.gets("nr")
    mc.cas("nr", b"cas", c, noreply=True)
    mc.cas("nr", b"stale", c, noreply=True)          # EXISTS, silent
    eq(mc.get_many(["nr", "nr-add", "nr-missing"]),
       {"nr": b"cas", "nr-add": b"a"})
    # On the wire: nothing at all comes back for noreply commands, even
    # failed ones, so the get is the first reply.
    eq(raw(b"set w 0 0 1 noreply\r\n1\r\n"
           b"add w 0 0 1 noreply\r\n2\r\n"
           b"replace w-missing 0 0 1 noreply\r\n3\r\n"
           b"append w 0 0 1 noreply\r\n4\r\n"
           b"prepend w 0 0 1 noreply\r\n5\r\n"
           b"cas w 0 0 1 1 noreply\r\n6\r\n"
           b"cas w-missing 0 0 1 1 noreply\r\n7\r\n"
           b"incr w 1 noreply\r\ntouch w 10 noreply\r\n"
           b"get w w-missing\r\n"),
       b"VALUE w 0 3\r\n515\r\nEND\r\n")


@check
def pipelined_and_split(mc):
    reqs = (b"set p1 0 0 3\r\nabc\r\nget p1\r\nincr p1 1\r\n"
            b"delete p1\r\nget p1\r\nversion\r\n")
    want = (b"STORED\r\nVALUE p1 0 3\r\nabc\r\nEND\r\n"
            b"CLIENT_ERROR cannot increment or decrement non-numeric value"
            b"\r\nDELETED\r\nEND\r\nVERSION " + mc.version() + b"\r\n")
    eq(raw(reqs, want), want)
    # The same requests a few bytes at a time.
    s = socket.create_connection(("127.0.0.1", PORT), 5)
    s.settimeout(10)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(reqs), 3):
            s.sendall(reqs[i:i + 3])
            time.sleep(0.001)
        got = b""
        while len(got) < len(want):
            b = s.recv(65536)
            if not b:
                break
            got += b
        eq(got, want)
    finally:
        s.close()


def main():
    signal.alarm(120)       # never hang a test run
    global PORT
    proc, port = start_server(["-I", "1m"])
    PORT = port
    passed = failed = 0
    t0 = time.monotonic()
    try:
        mc = client()
        for fn in CHECKS:
            t1 = time.monotonic()
            try:
                fn(mc)
                passed += 1
                print("ok: %s (%.1f s)" % (fn.__name__, time.monotonic() - t1))
            except Exception:
                failed += 1
                print("FAIL: %s" % fn.__name__)
                traceback.print_exc(file=sys.stdout)
                mc.close()
        mc.close()
    finally:
        rc = stop_server(proc)
    if rc != 0:
        failed += 1
        print("FAIL: stashd exit status after SIGTERM: %r" % rc)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr \
            else ""
        if err:
            print(err)
    else:
        passed += 1
        print("ok: SIGTERM exit 0")
    print("(%.1f s)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
