"""Shared by the Python tests (`import lib`), as lib.sh is by the shell
ones: stashd started on a free 127.0.0.1 port on the backend
$STASHD_BACKEND names (with a data directory of its own, removed at exit),
stopped by pid; its memory and CPU time read from /proc; sockets with
timeouts; and the runner that prints "N passed, M failed".
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback

BIN = os.environ.get("STASHD_BIN", "./build/stashd")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def backend_args():
    """$STASHD_BACKEND's flags, with a data directory removed at exit."""
    backend = os.environ.get("STASHD_BACKEND")
    if not backend:
        return []
    if backend == "memory":
        return ["--backend", "memory"]
    path = tempfile.mkdtemp(prefix="stashd-test-")
    atexit.register(shutil.rmtree, path, True)
    return ["--backend", backend, "--data-dir", path]


def spawn(args=(), preexec_fn=None):
    """Starts stashd on a free port without waiting; (proc, port)."""
    port = free_port()
    proc = subprocess.Popen([BIN, "-p", str(port), "-l", "127.0.0.1"] +
                            list(args) + backend_args(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=preexec_fn)
    return proc, port


def listening(proc, port, limit_s=5):
    """Waits until port accepts; False if proc exited or time ran out."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def start_server(args=(), preexec_fn=None):
    """Starts stashd and waits until it accepts; (proc, port). Tries other
    ports when another process takes the one it picked first."""
    for _ in range(5):
        proc, port = spawn(args, preexec_fn)
        if listening(proc, port):
            return proc, port
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError("%s did not start" % BIN)


def stop_server(proc):
    """SIGTERM, up to 10 s; the exit status, or None if it had to be
    killed."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


class Server:
    """A running stashd and what /proc says about it."""

    def __init__(self, args=(), preexec_fn=None):
        self.proc, self.port = start_server(args, preexec_fn)
        with open("/proc/%d/maps" % self.proc.pid) as f:
            # AddressSanitizer's redzones and quarantine are memory too.
            self.asan = "libasan" in f.read()

    def kb(self, field):
        """A VmRSS-like field of /proc/PID/status, in kB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError("no " + field)

    def reset_peak(self):
        """VmRSS now; VmHWM starts again from it when the kernel lets us
        (else it stays the peak since start)."""
        try:
            with open("/proc/%d/clear_refs" % self.proc.pid, "w") as f:
                f.write("5")
        except OSError:
            pass
        return self.kb("VmRSS")

    def cpu_ticks(self):
        """utime + stime, in clock ticks (TICK a second)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def bounded(self, ok, msg):
        """Asserts a memory bound, except under AddressSanitizer."""
        assert ok or self.asan, msg

    def stop(self):
        rc = stop_server(self.proc)
        self.proc.stderr.close()
        assert rc == 0, "stashd exit status after SIGTERM: %r" % rc


def connect(port, timeout=10, rcvbuf=0):
    s = socket.socket()
    if rcvbuf:
        # Before connecting, so that the window never grows: the kernel
        # then buffers as little as it can for a client that does not read.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def recv_until(s, end, limit=256 * 1024 * 1024):
    buf = bytearray()
    while not buf.endswith(end):
        chunk = s.recv(4 * 1024 * 1024)
        assert chunk, "closed after %d bytes: %r" % (len(buf),
                                                     bytes(buf[-80:]))
        buf += chunk
        assert len(buf) < limit
    return bytes(buf)


def run(checks, server=None):
    """Runs every check (a check may return a note to print), then stops
    server if given; prints "N passed, M failed"; the exit status."""
    failed = 0
    try:
        for fn in checks:
            try:
                note = fn()
                print("ok: %s%s" % (fn.__name__,
                                    " (%s)" % note if note else ""))
            except Exception:
                failed += 1
                print("FAIL: " + fn.__name__)
                traceback.print_exc()
    finally:
        if server is not None:
            try:
                server.stop()
            except AssertionError:
                failed += 1
                traceback.print_exc()
    print("%d passed, %d failed" % (len(checks) - failed, failed))
    return 1 if failed else 0
