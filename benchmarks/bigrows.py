#!/usr/bin/python3
"""What a lookup costs beside large values (the sqlite backend's issue).

Starts STASHD (--backend sqlite unless told otherwise, -t 2 -I 2m, a scratch
data directory), stores four 1 MB values under big:0..big:3 and 100,000
small ones (k:000000..k:099999, 32 bytes; 100 more, big:N:sNN, sort
beside the large ones), timing the sets, then, after a second for the
background checkpoints, with 100 requests pipelined per write:
- gets of the 1 MB values (--big-gets, 4 per write; first, so that no
  recency write has moved the pages since the sets),
- misses beside the 1 MB rows (keys sorting right after big:N),
- misses spread over the small keys,
- hits of small keys,
- hits of the small keys beside the 1 MB rows (--near-hits of them).
Each line gives the wall time and the server's CPU time (utime + stime
from /proc) per request. Standard library only.

  benchmarks/bigrows.py build/stashd [--backend lmdb] [--n 100000]
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BIG = 1024 * 1024


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port, proc):
    for _ in range(500):
        if proc.poll() is not None:
            sys.exit("bigrows: the server exited (%d)" % proc.returncode)
        try:
            return socket.create_connection(("127.0.0.1", port), 5)
        except OSError:
            time.sleep(0.02)
    sys.exit("bigrows: the server does not listen")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Conn:
    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def read_until(self, marker, count):
        """Reads until marker was seen count times; returns the bytes."""
        seen = 0
        out = []
        while seen < count:
            i = self.buf.find(marker)
            if i < 0:
                data = self.s.recv(1 << 20)
                if not data:
                    sys.exit("bigrows: connection closed")
                self.buf += data
                continue
            out.append(self.buf[:i + len(marker)])
            self.buf = self.buf[i + len(marker):]
            seen += 1
        return b"".join(out)

    def set_many(self, items):
        req = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v)
                       for k, v in items)
        self.s.sendall(req)
        got = self.read_until(b"\r\n", len(items))
        if got.count(b"STORED\r\n") != len(items):
            sys.exit("bigrows: a set failed: %r" % got[:200])

    def gets(self, keys, depth):
        """Gets keys, depth per write; returns the number of hits."""
        hits = 0
        for i in range(0, len(keys), depth):
            chunk = keys[i:i + depth]
            self.s.sendall(b"".join(b"get %s\r\n" % k for k in chunk))
            hits += self.read_until(b"END\r\n", len(chunk)).count(b"VALUE ")
        return hits


def report(label, n, wall, cpu):
    print("%-28s %7d ops   wall %8.1f us/op   server cpu %8.1f us/op"
          % (label, n, wall * 1e6 / n, cpu * 1e6 / n))


def timed(conn, pid, label, keys, depth, want_hits):
    c0 = cpu_s(pid)
    t0 = time.monotonic()
    hits = conn.gets(keys, depth)
    wall = time.monotonic() - t0
    cpu = cpu_s(pid) - c0
    if hits != want_hits:
        sys.exit("bigrows: %s: %d hits, expected %d" % (label, hits,
                                                        want_hits))
    report(label, len(keys), wall, cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stashd")
    ap.add_argument("--backend", default="sqlite")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--near-hits", type=int, default=10000)
    ap.add_argument("--big-gets", type=int, default=2000)
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="bigrows.")
    port = free_port()
    proc = subprocess.Popen([a.stashd, "--backend", a.backend, "--data-dir",
                             d + "/data", "-p", str(port), "-t", "2",
                             "-m", "1024", "-I", "2m"])
    try:
        conn = Conn(wait_port(port, proc))
        print("%s --backend %s" % (a.stashd, a.backend))
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        conn.set_many([(b"big:%d" % i, bytes([65 + i]) * BIG)
                       for i in range(4)])
        report("set, 1 MB value", 4, time.monotonic() - t0,
               cpu_s(proc.pid) - c0)
        small = [b"k:%06d" % i for i in range(a.n)]
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        for i in range(0, a.n, 1000):
            conn.set_many([(k, b"v" * 32) for k in small[i:i + 1000]])
        report("set, 32-byte value", a.n, time.monotonic() - t0,
               cpu_s(proc.pid) - c0)
        beside = [b"big:%d:s%02d" % (i, j) for i in range(4)
                  for j in range(25)]
        conn.set_many([(k, b"v" * 32) for k in beside])
        time.sleep(1)       # the background checkpoints settle
        near = [b"big:%d:%d" % (i % 4, i) for i in range(a.n)]
        spread = [b"k:%06d:x" % ((i * 7919) % a.n) for i in range(a.n)]
        hitkeys = [small[(i * 7919) % a.n] for i in range(a.n)]
        nearhits = [beside[i % len(beside)] for i in range(a.near_hits)]
        bigkeys = [b"big:%d" % (i % 4) for i in range(a.big_gets)]
        timed(conn, proc.pid, "hit, 1 MB value", bigkeys, 4, a.big_gets)
        timed(conn, proc.pid, "miss beside the 1 MB rows", near, 100, 0)
        timed(conn, proc.pid, "miss among small keys", spread, 100, 0)
        timed(conn, proc.pid, "hit, 32-byte value", hitkeys, 100, a.n)
        timed(conn, proc.pid, "hit beside the 1 MB rows", nearhits, 100,
              a.near_hits)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
