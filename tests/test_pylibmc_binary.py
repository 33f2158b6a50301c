#!/usr/bin/python3
"""Real-client test: pylibmc (libmemcached) in binary mode against stashd.

Starts $STASHD_BIN on a free 127.0.0.1 port, runs every check below with
pylibmc.Client(..., binary=True), stops the server by pid (SIGTERM, which
must exit 0), prints "N passed, M failed" and exits non-zero on a failure.
Values are bytes throughout, so pylibmc stores them as-is (no pickling).
"""
import random
import signal
import sys
import time
import traceback

import pylibmc

from lib import start_server, stop_server

CHECKS = []
PORT = 0


def check(fn):
    CHECKS.append(fn)
    return fn


def expect_raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError("%s%r did not raise %s" % (fn.__name__, args,
                                                    exc.__name__))


@check
def set_get_delete(mc):
    assert mc.set("k", b"v")
    assert mc.get("k") == b"v"
    assert mc.get("missing") is None
    assert mc.set("k", b"v2")
    assert mc.get("k") == b"v2"
    assert mc.delete("k")
    assert mc.get("k") is None
    assert not mc.delete("k")


@check
def add_and_replace(mc):
    assert mc.add("a", b"1")
    assert not mc.add("a", b"2")
    assert mc.get("a") == b"1"
    # Binary protocol: the server's "Not found" surfaces as NotFound.
    expect_raises(pylibmc.NotFound, mc.replace, "r-missing", b"x")
    assert mc.get("r-missing") is None
    assert mc.replace("a", b"3")
    assert mc.get("a") == b"3"


@check
def append_and_prepend(mc):
    assert mc.set("ap", b"mid")
    assert mc.append("ap", b"-end")
    assert mc.prepend("ap", b"start-")
    assert mc.get("ap") == b"start-mid-end"
    assert not mc.append("ap-missing", b"x")
    assert not mc.prepend("ap-missing", b"x")
    assert mc.get("ap-missing") is None


@check
def incr_and_decr(mc):
    assert mc.set("n", b"10")
    assert mc.incr("n") == 11
    assert mc.incr("n", 5) == 16
    assert mc.decr("n", 6) == 10
    assert mc.decr("n", 100) == 0          # no wrap below zero
    assert mc.get("n") in (b"0", b"0 ")    # memcached pads in place
    assert mc.set("big", b"18446744073709551615")
    assert mc.incr("big", 2) == 1          # wraps at 2^64
    expect_raises(pylibmc.NotFound, mc.incr, "n-missing")
    expect_raises(pylibmc.NotFound, mc.decr, "n-missing")
    assert mc.set("text", b"abc")
    expect_raises(pylibmc.Error, mc.incr, "text")
    assert mc.get("text") == b"abc"


@check
def multi(mc):
    data = {"multi-%03d" % i: ("value-%d" % i).encode() * (i % 7 + 1)
            for i in range(200)}
    assert mc.set_multi(data) == []
    got = mc.get_multi(list(data) + ["multi-missing"])
    assert got == data, "get_multi returned %d of %d" % (len(got), len(data))
    assert mc.get_multi(["multi-missing-1", "multi-missing-2"]) == {}
    assert mc.set_multi({"a": b"1", "b": b"2"}, key_prefix="pfx:") == []
    assert mc.get_multi(["a", "b"], key_prefix="pfx:") == {"a": b"1",
                                                         "b": b"2"}
    assert mc.get("pfx:a") == b"1"
    assert mc.delete_multi(["multi-000", "multi-001"])
    assert mc.get("multi-000") is None and mc.get("multi-002") is not None


@check
def touch(mc):
    assert mc.set("t", b"tv", time=2)
    assert mc.touch("t", 0)                 # now never expires
    assert mc.set("t2", b"tv2")
    assert mc.touch("t2", 1)                # now expires in a second
    assert not mc.touch("t-missing", 10)
    time.sleep(2.5)
    assert mc.get("t") == b"tv"
    assert mc.get("t2") is None


@check
def binary_safe_values(mc):
    every = bytes(range(256)) * 4
    assert mc.set("bytes", every)
    assert mc.get("bytes") == every
    nasty = b"\x80\x01\x00\x00\r\nEND\r\n\x00" * 100
    assert mc.set("nasty", nasty)
    assert mc.get("nasty") == nasty
    assert mc.set("empty", b"")
    assert mc.get("empty") == b""


@check
def large_value(mc):
    rnd = random.Random(42)
    val = bytes(rnd.getrandbits(8) for _ in range(1000000))
    assert mc.set("large", val)
    assert mc.get("large") == val
    # Over -I (1 MB by default): refused, and the connection still works.
    try:
        stored = mc.set("too-large", b"x" * (2 * 1024 * 1024))
    except pylibmc.Error:
        stored = False
    assert not stored
    assert mc.get("too-large") is None
    assert mc.get("large") == val


@check
def flush_all(mc):
    assert mc.set("f1", b"1") and mc.set("f2", b"2")
    assert mc.flush_all()
    assert mc.get_multi(["f1", "f2"]) == {}


@check
def stats(mc):
    (name, st), = mc.get_stats()

    def text(x):
        return x.decode() if isinstance(x, bytes) else x
    st = {text(k): text(v) for k, v in st.items()}
    assert "127.0.0.1" in text(name)
    for k in ("pid", "uptime", "curr_connections", "cmd_get", "get_hits",
              "curr_items", "version"):
        assert k in st, "stat %s missing" % k
    assert int(st["curr_connections"]) >= 1


@check
def cas(_mc):
    mc = pylibmc.Client(["127.0.0.1:%d" % PORT], binary=True,
                        behaviors={"cas": True})
    assert mc.set("c", b"v1")
    val, cas = mc.gets("c")
    assert val == b"v1" and cas
    assert mc.cas("c", b"v2", cas)
    assert mc.get("c") == b"v2"
    assert not mc.cas("c", b"v3", cas)      # that CAS was spent
    assert mc.get("c") == b"v2"
    val2, cas2 = mc.gets("c")
    assert val2 == b"v2" and cas2 != cas
    assert mc.gets("c-missing") == (None, None)
    mc.disconnect_all()


def main():
    signal.alarm(300)       # never hang a test run
    global PORT
    proc, port = start_server()
    PORT = port
    passed = failed = 0
    try:
        mc = pylibmc.Client(["127.0.0.1:%d" % port], binary=True)
        for fn in CHECKS:
            try:
                fn(mc)
                passed += 1
                print("ok: %s" % fn.__name__)
            except Exception:
                failed += 1
                print("FAIL: %s" % fn.__name__)
                traceback.print_exc(file=sys.stdout)
        mc.disconnect_all()
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
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
