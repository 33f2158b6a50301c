#!/usr/bin/python3
"""Probe memcached's binary protocol with raw bytes and print what it answers.

Starts /usr/bin/memcached (or $ORACLE_BIN) on a free 127.0.0.1 port, runs
every probe on a fresh connection unless noted, prints one markdown row per
probe, and stops the server by its pid.  Findings are summarised in
binary-oracle.md next to this file.

Usage: /usr/bin/python3 tests/notes/binary-oracle.py [section ...]
"""
import os
import socket
import struct
import subprocess
import sys
import time

BIN = os.environ.get("ORACLE_BIN", "/usr/bin/memcached")
MARK = 0xFEEDFACE          # opaque of the trailing NOOP that proves "kept"

OPS = {
    0x00: "GET", 0x01: "SET", 0x02: "ADD", 0x03: "REPLACE", 0x04: "DELETE",
    0x05: "INCR", 0x06: "DECR", 0x07: "QUIT", 0x08: "FLUSH", 0x09: "GETQ",
    0x0a: "NOOP", 0x0b: "VERSION", 0x0c: "GETK", 0x0d: "GETKQ",
    0x0e: "APPEND", 0x0f: "PREPEND", 0x10: "STAT", 0x11: "SETQ",
    0x12: "ADDQ", 0x13: "REPLACEQ", 0x14: "DELETEQ", 0x15: "INCRQ",
    0x16: "DECRQ", 0x17: "QUITQ", 0x18: "FLUSHQ", 0x19: "APPENDQ",
    0x1a: "PREPENDQ", 0x1b: "VERBOSITY", 0x1c: "TOUCH", 0x1d: "GAT",
    0x1e: "GATQ", 0x20: "SASL_LIST", 0x21: "SASL_AUTH", 0x22: "SASL_STEP",
    0x23: "GATK", 0x24: "GATKQ",
}


def pkt(op, extras=b"", key=b"", value=b"", magic=0x80, opaque=0x11223344,
        cas=0, datatype=0, vbucket=0, keylen=None, extlen=None,
        bodylen=None):
    kl = len(key) if keylen is None else keylen
    el = len(extras) if extlen is None else extlen
    bl = len(extras) + len(key) + len(value) if bodylen is None else bodylen
    h = struct.pack(">BBHBBHIIQ", magic, op, kl, el, datatype, vbucket, bl,
                    opaque, cas)
    return h + extras + key + value


def noop_mark():
    return pkt(0x0a, opaque=MARK)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, extra=()):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [BIN, "-U", "0", "-p", str(self.port), "-l", "127.0.0.1"]
            + (["-u", "nobody"] if os.geteuid() == 0 else [])
            + list(extra), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("memcached did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def recv_all(s, idle):
    """Reads until the peer closes or stays silent for `idle` seconds."""
    out = b""
    s.settimeout(idle)
    while True:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True
        if not d:
            return out, True
        out += d


def exchange(srv, data, idle=0.4, conn=None):
    s = conn or socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    out, closed = recv_all(s, idle)
    if conn is None:
        s.close()
    return out, closed


def parse(data):
    res = []
    while len(data) >= 24:
        (magic, op, kl, el, dt, st, bl, opq, cas) = struct.unpack(
            ">BBHBBHIIQ", data[:24])
        body = data[24:24 + bl]
        res.append(dict(raw=data[:24], magic=magic, op=op, keylen=kl,
                        extlen=el, datatype=dt, status=st, bodylen=bl,
                        opaque=opq, cas=cas, extras=body[:el],
                        key=body[el:el + kl], value=body[el + kl:]))
        data = data[24 + bl:]
    if data:
        res.append(dict(trailing=data))
    return res


def fmt(r):
    if "trailing" in r:
        return "trailing %r" % r["trailing"][:40]
    s = "op=%02x st=%04x ext=%d key=%d body=%d opq=%08x cas=%x" % (
        r["op"], r["status"], r["extlen"], r["keylen"], r["bodylen"],
        r["opaque"], r["cas"])
    if r["magic"] != 0x81 or r["datatype"] != 0:
        s += " magic=%02x dt=%02x" % (r["magic"], r["datatype"])
    if r["extras"]:
        s += " x=" + r["extras"].hex()
    if r["key"]:
        s += " k=%r" % r["key"]
    if r["value"]:
        v = r["value"]
        s += " v=%r" % (v if len(v) <= 48 else v[:48] + b"...")
    return s


def report(name, data, out, closed, with_mark=True):
    rs = parse(out)
    marked = any(r.get("opaque") == MARK for r in rs)
    rs = [r for r in rs if r.get("opaque") != MARK]
    if closed:
        fate = "CLOSE"
    elif with_mark:
        fate = "kept" if marked else "open, NOOP unanswered (swallowing)"
    else:
        fate = "open"
    print("| %s | %s | %s |" % (
        name, "<br>".join(fmt(r) for r in rs) or "(none)", fate))
    sys.stdout.flush()
    return rs, closed, marked


def probe(srv, name, data, idle=0.4, mark=True):
    if mark:
        data = data + noop_mark()
    out, closed = exchange(srv, data, idle)
    return report(name, data, out, closed, mark)


# Valid shapes: (extras, key, value) that memcached should accept.
EXT8 = struct.pack(">II", 0, 0)
EXT20 = struct.pack(">QQI", 1, 0, 0)
EXT4 = struct.pack(">I", 0)
VALID = {
    0x00: (b"", b"k", b""), 0x01: (EXT8, b"k", b"v"), 0x02: (EXT8, b"k", b"v"),
    0x03: (EXT8, b"k", b"v"), 0x04: (b"", b"k", b""),
    0x05: (EXT20, b"k", b""), 0x06: (EXT20, b"k", b""),
    0x07: (b"", b"", b""), 0x08: (b"", b"", b""), 0x09: (b"", b"k", b""),
    0x0a: (b"", b"", b""), 0x0b: (b"", b"", b""), 0x0c: (b"", b"k", b""),
    0x0d: (b"", b"k", b""), 0x0e: (b"", b"k", b"v"), 0x0f: (b"", b"k", b"v"),
    0x10: (b"", b"", b""), 0x11: (EXT8, b"k", b"v"), 0x12: (EXT8, b"k", b"v"),
    0x13: (EXT8, b"k", b"v"), 0x14: (b"", b"k", b""),
    0x15: (EXT20, b"k", b""), 0x16: (EXT20, b"k", b""),
    0x17: (b"", b"", b""), 0x18: (b"", b"", b""), 0x19: (b"", b"k", b"v"),
    0x1a: (b"", b"k", b"v"), 0x1c: (EXT4, b"k", b""), 0x1d: (EXT4, b"k", b""),
    0x1e: (EXT4, b"k", b""), 0x23: (EXT4, b"k", b""), 0x24: (EXT4, b"k", b""),
}


def sec_shapes(srv):
    print("\n### shapes (fresh connection each, NOOP marker after)\n")
    print("| request | reply | connection |\n|---|---|---|")
    for op, (ex, key, val) in sorted(VALID.items()):
        n = OPS[op]
        probe(srv, "%s valid ext=%d key=%d val=%d" % (n, len(ex), len(key),
                                                     len(val)),
              pkt(op, ex, key, val))
        for el in sorted({0, 1, 3, 4, 5, 7, 8, 9, 12, 19, 20, 21}
                         - {len(ex)}):
            if op in (0x08, 0x18) and el not in (1, 3, 5, 8):
                continue
            if el > 9 and len(ex) < 8:
                continue
            probe(srv, "%s ext=%d" % (n, el), pkt(op, bytes(el), key, val))
        if key:
            probe(srv, "%s no key" % n, pkt(op, ex, b"", val))
            probe(srv, "%s key=250" % n, pkt(op, ex, b"a" * 250, val))
            probe(srv, "%s key=251" % n, pkt(op, ex, b"a" * 251, val))
        else:
            probe(srv, "%s with key" % n, pkt(op, ex, b"k", val))
        if not val:
            probe(srv, "%s with value" % n, pkt(op, ex, key, b"v"))
        else:
            probe(srv, "%s empty value" % n, pkt(op, ex, key, b""))
        if ex or key:
            # extlen + keylen > bodylen: the body is short by one byte
            body = ex + key
            probe(srv, "%s ext+key > bodylen" % n,
                  pkt(op, ex, key, b"", bodylen=len(body) - 1)[:-1])


def sec_unknown(srv):
    print("\n### unknown / unimplemented opcodes\n")
    print("| request | reply | connection |\n|---|---|---|")
    for op in (0x1b, 0x1f, 0x25, 0x30, 0x3c, 0x3d, 0x50, 0x80, 0xfe, 0xff):
        probe(srv, "op %02x empty" % op, pkt(op))
        probe(srv, "op %02x ext=4 key=1 val=3" % op,
              pkt(op, b"EEEE", b"k", b"vvv"))
        probe(srv, "op %02x val=5" % op, pkt(op, b"", b"", b"zzzzz"))
    probe(srv, "op 1b ext=4 (verbosity shape)", pkt(0x1b, EXT4))
    # does memcached swallow bodylen after having consumed extras + key?
    probe(srv, "op 50 ext=4 key=1 val=3, then 5 filler bytes",
          pkt(0x50, b"EEEE", b"k", b"vvv") + b"\x80" * 5)
    probe(srv, "op 1b ext=4, then 4 filler bytes", pkt(0x1b, EXT4) + b"F" * 4)
    probe(srv, "op 50 key=251", pkt(0x50, b"", b"a" * 251))
    probe(srv, "op 50 ext=1 key=2 bodylen=1", pkt(0x50, b"x", b"ab",
                                                  bodylen=1)[:-2])
    probe(srv, "op 50 bodylen=100 (only 24B sent)",
          pkt(0x50, bodylen=100), mark=True)


def sec_sasl(srv):
    print("\n### SASL opcodes (server without -S)\n")
    print("| request | reply | connection |\n|---|---|---|")
    for op in (0x20, 0x21, 0x22):
        n = OPS[op]
        probe(srv, "%s empty" % n, pkt(op))
        probe(srv, "%s key=PLAIN" % n, pkt(op, b"", b"PLAIN"))
        probe(srv, "%s key=PLAIN val=5" % n, pkt(op, b"", b"PLAIN",
                                                 b"\0u\0pw"))
        probe(srv, "%s val=5" % n, pkt(op, b"", b"", b"\0u\0pw"))
        probe(srv, "%s ext=4 key=1" % n, pkt(op, EXT4, b"k"))
        probe(srv, "%s key=251" % n, pkt(op, b"", b"a" * 251))


def sec_header(srv):
    print("\n### header fields\n")
    print("| request | reply | connection |\n|---|---|---|")
    first = noop_mark()
    for magic in (0x00, 0x81, 0x7f, 0x82, 0xff):
        data = pkt(0x0a) + pkt(0x0a, magic=magic)
        probe(srv, "NOOP, then magic %02x NOOP" % magic, data)
    probe(srv, "magic 81 as first byte", pkt(0x0a, magic=0x81))
    del first
    for dt in (1, 0xff):
        probe(srv, "GET datatype=%02x" % dt, pkt(0x00, key=b"k", datatype=dt))
        probe(srv, "SET datatype=%02x" % dt, pkt(0x01, EXT8, b"k", b"v",
                                                 datatype=dt))
    probe(srv, "GET vbucket=0x1234", pkt(0x00, key=b"k", vbucket=0x1234))
    probe(srv, "SET vbucket=0xffff", pkt(0x01, EXT8, b"k", b"v",
                                         vbucket=0xffff))
    probe(srv, "NOOP cas=0x1122334455667788",
          pkt(0x0a, cas=0x1122334455667788))


def sec_huge(srv):
    print("\n### huge lengths\n")
    print("| request | reply | connection |\n|---|---|---|")
    for bl in (0x7fffffff, 0xffffffff, 0x100009):
        probe(srv, "SET ext=8 key=1 bodylen=%#x (header+ext+key sent)" % bl,
              pkt(0x01, EXT8, b"k", b"", bodylen=bl))
        probe(srv, "GET key=1 bodylen=%#x" % bl,
              pkt(0x00, b"", b"k", b"", bodylen=bl))
        probe(srv, "APPEND key=1 bodylen=%#x" % bl,
              pkt(0x0e, b"", b"k", b"", bodylen=bl))
        probe(srv, "op 50 bodylen=%#x" % bl, pkt(0x50, bodylen=bl))
    probe(srv, "SET keylen=0xffff ext=8 bodylen=0xffffffff",
          pkt(0x01, EXT8, b"", b"", keylen=0xffff, bodylen=0xffffffff))
    probe(srv, "SET ext=0xff key=1 bodylen=0x200",
          pkt(0x01, b"", b"k", b"", extlen=0xff, bodylen=0x200))
    # a real over-size value, then a NOOP: is the value swallowed?
    big = b"x" * (1024 * 1024 + 1)
    probe(srv, "SET value 1MB+1 (all sent)", pkt(0x01, EXT8, b"k", big),
          idle=1.0)
    probe(srv, "SETQ value 1MB+1 (all sent)", pkt(0x11, EXT8, b"k", big),
          idle=1.0)
    probe(srv, "APPEND value 1MB+1 (all sent)", pkt(0x0e, b"", b"k", big),
          idle=1.0)
    # the largest value SET accepts with key "k"
    lo, hi = 1000000, 1024 * 1024
    s = socket.create_connection(("127.0.0.1", srv.port))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        s.sendall(pkt(0x01, EXT8, b"k", b"y" * mid))
        out, _ = recv_all(s, 0.3)
        if parse(out)[0]["status"] == 0:
            lo = mid
        else:
            hi = mid - 1
    s.close()
    print("\nlargest SET value accepted with -I 1m, key 'k' (1 byte): %d "
          "(1048576 - %d)\n" % (lo, 1048576 - lo))


def seq(srv, steps, idle=0.3):
    """Runs steps on one connection; prints each step's replies."""
    print("| request | reply | connection |\n|---|---|---|")
    s = socket.create_connection(("127.0.0.1", srv.port))
    for name, data in steps:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out, closed = recv_all(s, idle)
        report(name, data, out, closed, with_mark=False)
        if closed:
            break
    s.close()


def sec_semantics(srv):
    print("\n### replies on one connection (opaque = step number)\n")
    C = 0x1122334455667788
    flags = struct.pack(">II", 0xdeadbeef, 0)
    inc = lambda d, i, e: struct.pack(">QQI", d, i, e)
    steps = [
        ("FLUSH", pkt(0x08, opaque=1)),
        ("SET k=v flags=deadbeef", pkt(0x01, flags, b"k", b"v", opaque=2)),
        ("GET k", pkt(0x00, key=b"k", opaque=3)),
        ("GET k (req cas=C)", pkt(0x00, key=b"k", opaque=3, cas=C)),
        ("GETK k", pkt(0x0c, key=b"k", opaque=4)),
        ("GET miss (req cas=C)", pkt(0x00, key=b"nope", opaque=5, cas=C)),
        ("GETK miss", pkt(0x0c, key=b"nope", opaque=6)),
        ("GETQ miss + GETKQ miss + NOOP",
         pkt(0x09, key=b"nope", opaque=7) + pkt(0x0d, key=b"nope", opaque=8)
         + pkt(0x0a, opaque=9)),
        ("GETQ hit + GETKQ hit + NOOP",
         pkt(0x09, key=b"k", opaque=10) + pkt(0x0d, key=b"k", opaque=11)
         + pkt(0x0a, opaque=12)),
        ("ADD existing", pkt(0x02, flags, b"k", b"v", opaque=13)),
        ("ADD existing (req cas=C)", pkt(0x02, flags, b"k", b"v", opaque=13,
                                         cas=C)),
        ("ADD new", pkt(0x02, flags, b"a", b"1", opaque=14)),
        ("REPLACE missing", pkt(0x03, flags, b"nope", b"v", opaque=15)),
        ("REPLACE hit", pkt(0x03, flags, b"a", b"2", opaque=16)),
        ("SET k cas=1 (mismatch)", pkt(0x01, flags, b"k", b"v", opaque=17,
                                       cas=1)),
        ("SET missing cas=1", pkt(0x01, flags, b"nope", b"v", opaque=18,
                                  cas=1)),
        ("APPEND missing", pkt(0x0e, b"", b"nope", b"x", opaque=19)),
        ("APPEND k", pkt(0x0e, b"", b"k", b"A", opaque=20)),
        ("PREPEND k", pkt(0x0f, b"", b"k", b"P", opaque=21)),
        ("APPEND k cas=1", pkt(0x0e, b"", b"k", b"A", opaque=21, cas=1)),
        ("GET k", pkt(0x00, key=b"k", opaque=22)),
        ("INCR n (new, init 10)", pkt(0x05, inc(1, 10, 0), b"n", opaque=23)),
        ("INCR n by 5", pkt(0x05, inc(5, 0, 0), b"n", opaque=24)),
        ("GET n", pkt(0x00, key=b"n", opaque=24)),
        ("DECR n by 100", pkt(0x06, inc(100, 0, 0), b"n", opaque=25)),
        ("INCR miss exp=ffffffff", pkt(0x05, inc(1, 0, 0xffffffff), b"m",
                                       opaque=26)),
        ("INCR k (non-numeric)", pkt(0x05, inc(1, 0, 0), b"k", opaque=27)),
        ("INCR n cas=1", pkt(0x05, inc(1, 0, 0), b"n", opaque=28, cas=1)),
        ("SET big=18446744073709551615",
         pkt(0x01, flags, b"big", b"18446744073709551615", opaque=29)),
        ("INCR big by 2 (wrap)", pkt(0x05, inc(2, 0, 0), b"big", opaque=30)),
        ("INCRQ n + DECRQ n + NOOP", pkt(0x15, inc(1, 0, 0), b"n", opaque=31)
         + pkt(0x16, inc(1, 0, 0), b"n", opaque=32) + pkt(0x0a, opaque=33)),
        ("INCRQ k non-numeric + NOOP", pkt(0x15, inc(1, 0, 0), b"k",
                                           opaque=34) + pkt(0x0a, opaque=35)),
        ("DELETE miss", pkt(0x04, key=b"nope", opaque=36)),
        ("DELETE a cas=1", pkt(0x04, key=b"a", opaque=37, cas=1)),
        ("DELETE a", pkt(0x04, key=b"a", opaque=38)),
        ("DELETEQ k + DELETEQ miss + NOOP",
         pkt(0x14, key=b"k", opaque=39) + pkt(0x14, key=b"k", opaque=40)
         + pkt(0x0a, opaque=41)),
        ("SET t=tv", pkt(0x01, flags, b"t", b"tv", opaque=42)),
        ("TOUCH t", pkt(0x1c, EXT4, b"t", opaque=43)),
        ("TOUCH miss", pkt(0x1c, EXT4, b"nope", opaque=44)),
        ("GAT t", pkt(0x1d, EXT4, b"t", opaque=45)),
        ("GATK t", pkt(0x23, EXT4, b"t", opaque=46)),
        ("GAT miss", pkt(0x1d, EXT4, b"nope", opaque=47)),
        ("GATK miss", pkt(0x23, EXT4, b"nope", opaque=48)),
        ("GATQ hit + GATKQ hit + GATQ miss + GATKQ miss + NOOP",
         pkt(0x1e, EXT4, b"t", opaque=49) + pkt(0x24, EXT4, b"t", opaque=50)
         + pkt(0x1e, EXT4, b"nope", opaque=51)
         + pkt(0x24, EXT4, b"nope", opaque=52) + pkt(0x0a, opaque=53)),
        ("SETQ ok + ADDQ exists + REPLACEQ miss + APPENDQ miss + NOOP",
         pkt(0x11, flags, b"q", b"1", opaque=54)
         + pkt(0x12, flags, b"q", b"1", opaque=55)
         + pkt(0x13, flags, b"nope", b"1", opaque=56)
         + pkt(0x19, b"", b"nope", b"1", opaque=57) + pkt(0x0a, opaque=58)),
        ("SETQ cas mismatch + NOOP",
         pkt(0x11, flags, b"q", b"1", opaque=59, cas=1)
         + pkt(0x0a, opaque=60)),
        ("VERSION", pkt(0x0b, opaque=61)),
        ("NOOP (req cas=C)", pkt(0x0a, opaque=62, cas=C)),
        ("STAT bogus", pkt(0x10, key=b"bogus", opaque=63)),
        ("FLUSH ext=4 delay 0", pkt(0x08, EXT4, opaque=64)),
        ("FLUSH ext=4 delay 100", pkt(0x08, struct.pack(">I", 100),
                                      opaque=65)),
        ("FLUSHQ + NOOP", pkt(0x18, opaque=66) + pkt(0x0a, opaque=67)),
        ("GET t after flush", pkt(0x00, key=b"t", opaque=68)),
        ("QUIT", pkt(0x07, opaque=69)),
    ]
    seq(srv, steps)
    print()
    seq(srv, [("QUITQ (req cas=C)", pkt(0x17, opaque=70, cas=C))])
    print()
    seq(srv, [("QUITQ then NOOP in same write",
               pkt(0x17, opaque=71) + pkt(0x0a, opaque=72))])
    print()
    seq(srv, [("QUIT then NOOP in same write",
               pkt(0x07, opaque=71) + pkt(0x0a, opaque=72))])
    print()
    seq(srv, [("QUIT with key (invalid)", pkt(0x07, key=b"k", opaque=73))])
    print()
    for key in (b"", b"settings", b"items"):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(pkt(0x10, key=key, opaque=80, cas=C))
        out, closed = recv_all(s, 0.4)
        s.close()
        rs = parse(out)
        print("STAT %r: %d packets; first: %s; last: %s; all cas=%s, "
              "all ext=0: %s\n" % (key, len(rs), fmt(rs[0]), fmt(rs[-1]),
                                   sorted({r['cas'] for r in rs}),
                                   all(r['extlen'] == 0 for r in rs)))


def sec_order(srv):
    print("\n### which check wins; bodies memcached does not read\n")
    print("| request | reply | connection |\n|---|---|---|")
    probe(srv, "GET key=1 bodylen=0 (header only, no marker)",
          pkt(0x00, keylen=1, bodylen=0), mark=False)
    probe(srv, "SET ext=8 key=1 bodylen=8 (header only, no marker)",
          pkt(0x01, extlen=8, keylen=1, bodylen=8), mark=False)
    probe(srv, "GET keylen=251 bodylen=0 (header only)",
          pkt(0x00, keylen=251, bodylen=0), mark=False)
    probe(srv, "op 50 keylen=1 bodylen=0 (header only)",
          pkt(0x50, keylen=1, bodylen=0), mark=False)
    probe(srv, "op 50 extlen=1 bodylen=0 (header only)",
          pkt(0x50, extlen=1, bodylen=0), mark=False)
    probe(srv, "op 50 keylen=251 bodylen=0 (header only)",
          pkt(0x50, keylen=251, bodylen=0), mark=False)
    probe(srv, "GET keylen=251 bodylen=0, then 251 bytes",
          pkt(0x00, keylen=251, bodylen=0) + b"a" * 251, mark=False)
    probe(srv, "op 50 keylen=251 bodylen=0, then 251 bytes",
          pkt(0x50, keylen=251, bodylen=0) + b"a" * 251, mark=False)
    probe(srv, "op 50 keylen=1 bodylen=0, then 1 byte",
          pkt(0x50, keylen=1, bodylen=0) + b"a", mark=False)
    probe(srv, "GET ext=8 keylen=1 bodylen=1, then 9 bytes",
          pkt(0x00, extlen=8, keylen=1, bodylen=1) + b"a" * 9, mark=False)
    probe(srv, "SET ext=8 keylen=0 bodylen=4, then 8 bytes",
          pkt(0x01, extlen=8, keylen=0, bodylen=4) + b"a" * 8, mark=False)
    probe(srv, "NOOP ext=0 keylen=1 bodylen=0, then 1 byte",
          pkt(0x0a, keylen=1, bodylen=0) + b"a", mark=False)
    probe(srv, "SET ext=4 key=1 bodylen=0x7fffffff (shape vs size)",
          pkt(0x01, EXT4, b"k", b"", bodylen=0x7fffffff))
    probe(srv, "GET datatype=1 key=251", pkt(0x00, key=b"a" * 251,
                                             datatype=1))
    inner = pkt(0x0a, opaque=0xABCD)
    for op, ex, key in ((0x1c, EXT4, b"k"), (0x1d, EXT4, b"k"),
                        (0x23, EXT4, b"k"), (0x10, b"", b""),
                        (0x10, b"", b"items"), (0x0b, b"", b""),
                        (0x00, b"", b"k")):
        probe(srv, "%s ext=%d key=%d, value = a whole NOOP packet"
              % (OPS[op], len(ex), len(key)), pkt(op, ex, key, inner))
    probe(srv, "STAT key=items value=v", pkt(0x10, b"", b"items", b"v"))
    probe(srv, "STAT key=items", pkt(0x10, b"", b"items"))
    probe(srv, "STAT key=251", pkt(0x10, b"", b"a" * 251))
    probe(srv, "FLUSH ext=4 bodylen=4 + NOOP", pkt(0x08, EXT4))
    probe(srv, "FLUSH ext=4 + 0xffffffff", pkt(0x08, b"\xff" * 4))


def sec_deferred(srv):
    print("\n### when is E2BIG sent?\n")
    s = socket.create_connection(("127.0.0.1", srv.port))
    big = b"x" * (1024 * 1024 + 1)
    data = pkt(0x01, EXT8, b"k", big) + noop_mark()
    s.sendall(data[:24 + 9 + 1000])
    out1, _ = recv_all(s, 0.5)
    s.sendall(data[24 + 9 + 1000:])
    out2, closed = recv_all(s, 0.5)
    s.close()
    print("SET 1MB+1: after header+1000 value bytes: %d reply bytes; after "
          "the rest: %s closed=%s\n" % (len(out1), [fmt(r) for r in
                                                    parse(out2)], closed))


def sec_oom(_srv):
    print("\n### out of memory (-M -m 2)\n")
    srv = Server(["-M", "-m", "2"])
    try:
        s = socket.create_connection(("127.0.0.1", srv.port))
        val = b"z" * 100000
        for i in range(200):
            s.sendall(pkt(0x01, EXT8, b"k%d" % i, val, opaque=i))
            rs = parse(recv_all(s, 0.3)[0])
            if rs and rs[0]["status"] != 0:
                print("SET #%d: %s\n" % (i, fmt(rs[0])))
                break
        s.close()
    finally:
        srv.stop()


def sec_sasl_on(_srv):
    print("\n### SASL opcodes with -S\n")
    print("| request | reply | connection |\n|---|---|---|")
    try:
        srv = Server(["-S"])
    except RuntimeError:
        print("memcached -S does not start\n")
        return
    try:
        probe(srv, "SASL_LIST", pkt(0x20))
        probe(srv, "SASL_AUTH PLAIN bad", pkt(0x21, b"", b"PLAIN",
                                              b"\0u\0pw"))
        probe(srv, "GET before auth", pkt(0x00, b"", b"k"))
    finally:
        srv.stop()


SECTIONS = {"deferred": sec_deferred, "oom": sec_oom, "sasl_on": sec_sasl_on,
            "order": sec_order, "header": sec_header, "shapes": sec_shapes,
            "unknown": sec_unknown, "sasl": sec_sasl, "huge": sec_huge,
            "semantics": sec_semantics}

if __name__ == "__main__":
    srv = Server()
    try:
        for name in sys.argv[1:] or list(SECTIONS):
            SECTIONS[name](srv)
    finally:
        srv.stop()
