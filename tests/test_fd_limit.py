#!/usr/bin/python3
"""Descriptor limits, as memcached 1.6.18 handles them.

Each check starts $STASHD_BIN ($STASHD_BACKEND's backend) under its own
RLIMIT_NOFILE, as `ulimit -n N` would, while this client keeps a higher
one of its own:
- the hard limit below -c, which an unprivileged process cannot raise:
  stashd refuses to start and says why (with CAP_SYS_RESOURCE it raises
  the limit and starts);
- a soft limit below -c: stashd raises it and serves all -c clients;
- soft = hard = -c (the common `ulimit -n 1024` with the default -c 1024):
  the clients that do not fit get "ERROR Too many open connections" at
  once and stashd stays idle, instead of spinning on accept() while they
  hang;
- the limit lowered under a running server (prlimit), so that accept()
  itself fails: stashd pauses accepting instead of spinning, and serves
  the waiting clients once descriptors are free again.
CPU time is stashd's utime + stime from /proc/PID/stat. Only 127.0.0.1 is
used; every process is stopped by pid. Prints "N passed, M failed".
"""
import os
import resource
import socket
import subprocess
import sys
import time

import lib

TOO_MANY = b"ERROR Too many open connections\r\n"
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def limit(soft, hard):
    """For preexec_fn: RLIMIT_NOFILE (soft, hard) in the child only, as
    `ulimit -n` would set it."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def cpu_s(srv):
    return srv.cpu_ticks() / lib.TICK


def connect(port):
    return lib.connect(port, timeout=5)


def ask(s, req=b"version\r\n", timeout=5):
    """Sends req; the first line of the reply, b"" if closed, None if no
    reply came within timeout."""
    s.settimeout(timeout)
    try:
        s.sendall(req)
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf
    except socket.timeout:
        return None
    except OSError:
        return b""


def can_raise_hard_limit():
    """Whether a child could raise its own hard limit (CAP_SYS_RESOURCE)."""
    pid = os.fork()
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
            resource.setrlimit(resource.RLIMIT_NOFILE, (2048, 2048))
            os._exit(0)
        except (OSError, ValueError):
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


@check
def hard_limit_below_c():
    proc, port = lib.spawn(["-c", "1024"], limit(256, 256))
    try:
        if can_raise_hard_limit():
            assert lib.listening(proc, port), "did not start"
            with open("/proc/%d/limits" % proc.pid) as f:
                line = [x for x in f if x.startswith("Max open files")][0]
            assert int(line.split()[3]) >= 1024, line
            return "raised, as root may"
        try:
            rc = proc.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError("started with -c 1024 under a hard limit "
                                 "of 256")
        err = proc.stderr.read().decode()
        assert rc != 0, rc
        assert "-c 1024" in err and "256" in err, err
        return "refused: " + err.strip()
    finally:
        lib.stop_server(proc)
        proc.stderr.close()


@check
def soft_limit_raised_to_fit_c():
    srv = lib.Server(["-c", "150"], limit(64, 4096))
    conns = []
    try:
        for i in range(150):
            conns.append(connect(srv.port))
            r = ask(conns[-1])
            assert r is not None and r.startswith(b"VERSION "), (i, r)
        extra = connect(srv.port)
        assert ask(extra) == TOO_MANY
        extra.close()
    finally:
        for c in conns:
            c.close()
        srv.stop()


@check
def clients_over_the_limit_are_told_and_cost_nothing():
    srv = lib.Server(["-c", "256"], limit(256, 256))
    conns = []
    served = refused = 0
    try:
        cpu0 = cpu_s(srv)
        for i in range(320):
            s = connect(srv.port)
            r = ask(s)
            if r is not None and r.startswith(b"VERSION "):
                served += 1
                conns.append(s)
                continue
            # Every client that does not fit hears why, as from memcached.
            assert r == TOO_MANY, (i, r)
            refused += 1
            s.close()
        # stashd's own descriptors come out of the 256, as memcached's do.
        assert 150 <= served < 256, served
        assert refused == 320 - served
        time.sleep(1)
        cpu = cpu_s(srv) - cpu0
        assert cpu < 0.5, "%.2f s of CPU for %d clients" % (cpu, 320)
        # A slot given back is a slot to take.
        conns.pop().close()
        time.sleep(0.2)
        s = connect(srv.port)
        r = ask(s)
        assert r is not None and r.startswith(b"VERSION "), r
        conns.append(s)
        return "%d served, %d refused, %.2f s CPU" % (served, refused, cpu)
    finally:
        for c in conns:
            c.close()
        srv.stop()


def stat(s, name):
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = s.recv(65536)
        assert chunk, "closed"
        buf += chunk
    for line in buf.decode().split("\r\n"):
        if line.startswith("STAT %s " % name):
            return int(line.split()[2])
    raise AssertionError("no stat " + name)


@check
def accept_failing_pauses_instead_of_spinning():
    srv = lib.Server(["-c", "500", "-t", "2"], limit(1024, 1024))
    conns = []
    waiting = []
    try:
        conns.append(connect(srv.port))
        assert ask(conns[0]).startswith(b"VERSION ")
        used = len(os.listdir("/proc/%d/fd" % srv.proc.pid))
        # Now only 10 more descriptors: -c no longer fits, accept() fails.
        resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE,
                         (used + 10, used + 10))
        for _ in range(10):
            conns.append(connect(srv.port))
            assert ask(conns[-1]).startswith(b"VERSION ")
        cpu0 = cpu_s(srv)
        for _ in range(20):
            s = connect(srv.port)   # queued by the kernel, not accepted
            s.sendall(b"version\r\n")
            waiting.append(s)
        time.sleep(1.5)
        cpu = cpu_s(srv) - cpu0
        assert cpu < 0.3, "%.2f s of CPU in 1.5 s while out of fds" % cpu
        assert stat(conns[0], "listen_disabled_num") > 0
        # Served in order once descriptors come back.
        for c in conns[1:]:
            c.close()
        for i, s in enumerate(waiting[:8]):
            r = ask(s, b"", timeout=5)
            assert r is not None and r.startswith(b"VERSION "), (i, r)
        return "%.2f s CPU in 1.5 s out of descriptors" % cpu
    finally:
        for c in conns + waiting:
            c.close()
        srv.stop()


def main():
    return lib.run(CHECKS)


if __name__ == "__main__":
    sys.exit(main())
