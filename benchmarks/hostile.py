#!/usr/bin/python3
"""Hostile clients for benchmarks/hostile.sh: the attacks of issue 13.

Opens --conns connections to HOST:PORT and keeps them busy until SIGTERM
or SIGINT, in four roles (shares of --conns):
- never read (60 %): a small receive buffer, then ten `get B B B B` of the
  big value B, and never a read: what the server queues for them is all it
  will ever hold for them;
- read slowly (25 %): `get` + 50 x B, then 16 KB read every 100 ms, and the
  same again at each END: the server copies B as they drain;
- long lines (5 %): a 2 MB get line of misses ending in one hit, every 5 s,
  its reply read;
- churn (10 %): connect, `version`, close, each every 100 ms.
Before the attack it stores B (--value bytes) through its own connection.
Prints "ready" once every role has sent its first requests, then once a
second a line of counters. Standard library only, one thread.
"""
import argparse
import selectors
import signal
import socket
import sys
import time

BIG = b"hostile:big"


def store(host, port, size):
    s = socket.create_connection((host, port), 10)
    s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (BIG, size, b"h" * size))
    reply = s.recv(100)
    if reply != b"STORED\r\n":
        sys.exit("hostile: storing the big value failed: %r" % reply)
    s.close()


class Conn:
    def __init__(self, role, host, port, rcvbuf=0):
        self.role = role
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, port))
        self.sock.setblocking(False)
        self.out = b""
        self.tail = b""
        self.next = 0.0
        self.paused = False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="127.0.0.1:11211")
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--value", type=int, default=1000000)
    ap.add_argument("--roles", default="never=60,slow=25,long=5,churn=10",
                    help="percent of --conns per role")
    args = ap.parse_args()
    share = {k: int(v) for k, v in
             (kv.split("=") for kv in args.roles.split(","))}
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    store(host, port, args.value)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sel = selectors.DefaultSelector()
    n = args.conns
    counts = {r: n * share.get(r, 0) // 100
              for r in ("never", "slow", "long", "churn")}
    amplify = b"get " + b" ".join([BIG] * 50) + b"\r\n"
    misses = b"".join(b" m%07d" % i for i in range(2 * 1024 * 1024 // 9))
    long_line = b"get" + misses + b" " + BIG + b"\r\n"
    conns = []
    for _ in range(counts["never"]):
        c = Conn("never", host, port, rcvbuf=4096)
        c.sock.sendall((b"get " + b" ".join([BIG] * 4) + b"\r\n") * 10)
        conns.append(c)
    now = time.monotonic()
    for i in range(counts["slow"]):
        c = Conn("slow", host, port)
        c.out = amplify
        conns.append(c)
    for i in range(counts["long"]):
        c = Conn("long", host, port)
        c.next = now + 5.0 * i / max(1, counts["long"])
        conns.append(c)
    churn_next = [now + 0.1 * i / max(1, counts["churn"])
                  for i in range(counts["churn"])]
    for c in conns:
        if c.role != "never":
            sel.register(c.sock, selectors.EVENT_READ, c)
    print("ready", flush=True)

    stats = {"read": 0, "lines": 0, "churned": 0, "refused": 0}
    report = time.monotonic() + 1
    while not stop:
        now = time.monotonic()
        for c in conns:
            if c.role == "long" and not c.out and now >= c.next:
                c.out = long_line
                c.next = now + 5.0
            if c.out:
                try:
                    sent = c.sock.send(c.out[:1 << 20])
                    c.out = c.out[sent:]
                except BlockingIOError:
                    pass
        for c in conns:
            if c.paused and now >= c.next:
                c.paused = False
                sel.register(c.sock, selectors.EVENT_READ, c)
        for i, t in enumerate(churn_next):
            if now >= t:
                churn_next[i] = now + 0.1
                why = None
                try:
                    t0 = time.monotonic()
                    s = socket.create_connection((host, port), 1)
                    s.sendall(b"version\r\n")
                    reply = s.recv(64)
                    if not reply.startswith(b"VERSION"):
                        why = repr(reply)
                    s.close()
                    stats["churned"] += 1
                except OSError as e:
                    why = "%r after %.3f s" % (e, time.monotonic() - t0)
                if why is not None:
                    stats["refused"] += 1
                    if stats["refused"] <= 5:
                        print("churn refused: " + why, file=sys.stderr,
                              flush=True)
        for key, _ in sel.select(timeout=0.01):
            c = key.data
            try:
                data = c.sock.recv(16384 if c.role == "slow" else 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                sys.exit("hostile: the server closed a %s connection" %
                         c.role)
            stats["read"] += len(data)
            c.tail = (c.tail + data)[-8:]
            if c.role == "slow":
                # Comes back for more in 100 ms: a reader, but a slow one.
                c.next = now + 0.1
                c.paused = True
                sel.unregister(c.sock)
            if c.tail.endswith(b"END\r\n"):
                stats["lines"] += 1
                if c.role == "slow":
                    c.out = amplify
        if now >= report:
            report = now + 1
            print("read %(read)d lines %(lines)d churned %(churned)d "
                  "refused %(refused)d" % stats, flush=True)
    for c in conns:
        c.sock.close()


if __name__ == "__main__":
    main()
