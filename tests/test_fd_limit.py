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
import atexit
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("STASHD_BIN", "./build/stashd")
TOO_MANY = b"ERROR Too many open connections\r\n"
TICK = os.sysconf("SC_CLK_TCK")
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def backend_args():
    backend = os.environ.get("STASHD_BACKEND", "memory")
    if backend == "memory":
        return ["--backend", "memory"]
    path = tempfile.mkdtemp(prefix="stashd-fd-")
    atexit.register(shutil.rmtree, path, True)
    return ["--backend", backend, "--data-dir", path]


class Server:
    """stashd on a free port with RLIMIT_NOFILE (soft, hard) set in the
    child only."""

    def __init__(self, soft, hard, args):
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        self.port = free_port()
        self.proc = subprocess.Popen(
            [BIN, "-p", str(self.port), "-l", "127.0.0.1"] + args +
            backend_args(), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=limit)

    def wait_listening(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("stashd exited %d: %s" % (
                    self.proc.returncode, self.proc.stderr.read()))
            try:
                socket.create_connection(("127.0.0.1", self.port),
                                         0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("stashd did not start")

    def cpu(self):
        """utime + stime in seconds."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("stashd ignored SIGTERM")
        self.proc.stderr.close()


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(5)
    return s


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
    srv = Server(256, 256, ["-c", "1024"])
    try:
        if can_raise_hard_limit():
            srv.wait_listening()
            with open("/proc/%d/limits" % srv.proc.pid) as f:
                line = [x for x in f if x.startswith("Max open files")][0]
            assert int(line.split()[3]) >= 1024, line
            return
        try:
            rc = srv.proc.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError("started with -c 1024 under a hard limit "
                                 "of 256")
        err = srv.proc.stderr.read().decode()
        assert rc != 0, rc
        assert "-c 1024" in err and "256" in err, err
    finally:
        srv.stop()


@check
def soft_limit_raised_to_fit_c():
    srv = Server(64, 4096, ["-c", "150"])
    conns = []
    try:
        srv.wait_listening()
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
    srv = Server(256, 256, ["-c", "256"])
    conns = []
    served = refused = 0
    try:
        srv.wait_listening()
        cpu0 = srv.cpu()
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
        cpu = srv.cpu() - cpu0
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
    srv = Server(1024, 1024, ["-c", "500", "-t", "2"])
    conns = []
    waiting = []
    try:
        srv.wait_listening()
        conns.append(connect(srv.port))
        assert ask(conns[0]).startswith(b"VERSION ")
        used = len(os.listdir("/proc/%d/fd" % srv.proc.pid))
        # Now only 10 more descriptors: -c no longer fits, accept() fails.
        resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE,
                         (used + 10, used + 10))
        for _ in range(10):
            conns.append(connect(srv.port))
            assert ask(conns[-1]).startswith(b"VERSION ")
        cpu0 = srv.cpu()
        for _ in range(20):
            s = connect(srv.port)   # queued by the kernel, not accepted
            s.sendall(b"version\r\n")
            waiting.append(s)
        time.sleep(1.5)
        cpu = srv.cpu() - cpu0
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
    failed = 0
    for fn in CHECKS:
        try:
            note = fn()
            print("ok: " + fn.__name__ + (" (%s)" % note if note else ""))
        except Exception:
            failed += 1
            print("FAIL: " + fn.__name__)
            traceback.print_exc()
    print("%d passed, %d failed" % (len(CHECKS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
