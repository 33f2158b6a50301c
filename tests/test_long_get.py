#!/usr/bin/python3
"""Long get lines, as memcached 1.6.18 serves them.

memcached reads a get or gets line whatever its length (checked: 2 MB,
10 MB and 50 MB lines of keys all answered, if slowly) where stashd once
reset any line past its 1.06 MB read buffer. Lines up to that buffer are
decoded whole, exactly as before; longer ones have their keys run as they
arrive, so the buffer never grows past it. Checked against
$STASHD_BIN ($STASHD_BACKEND's backend) on a free 127.0.0.1 port:
- 2 MB and 10 MB lines of misses with hits at the start, middle and end:
  the hits in order, END, the connection still usable, and (but under
  AddressSanitizer) the server's peak RSS within 4 MB of where it was;
- a 2 MB gets line of one key named 200,000 times: every value, with CAS;
- a NUL in a streamed line ends it, as it ends any line;
- a key over 250 bytes refuses a line of up to 1 MB whole (only the
  CLIENT_ERROR, as memcached); in a longer line it stops the line there,
  keys before it may have been answered, and the next command works.
Prints "N passed, M failed"; stops the server by pid.
"""
import sys
import time

import lib

MB = 1024 * 1024
CHECKS = []
SRV = None


def check(fn):
    CHECKS.append(fn)
    return fn


def connect():
    return lib.connect(SRV.port, timeout=20)


recv_until = lib.recv_until


def send_and_read(s, data, end):
    """Sends data while reading what comes back, until it ends with end."""
    s.setblocking(False)
    out = bytearray()
    sent = 0
    deadline = time.monotonic() + 30
    try:
        while sent < len(data) or not out.endswith(end):
            assert time.monotonic() < deadline, "timed out"
            progress = False
            if sent < len(data):
                try:
                    sent += s.send(data[sent:sent + MB])
                    progress = True
                except BlockingIOError:
                    pass
            try:
                chunk = s.recv(4 * MB)
                assert chunk, "closed after %d bytes" % len(out)
                out += chunk
                progress = True
            except BlockingIOError:
                pass
            if not progress:
                time.sleep(0.001)
    finally:
        s.setblocking(True)
        s.settimeout(20)
    return bytes(out)


def misses(nbytes):
    """Distinct missing keys, about nbytes of them with their spaces."""
    n = nbytes // 12
    return b"".join(b" miss%07d" % i for i in range(n))


@check
def lines_of_2_and_10_mb_are_served_within_a_bounded_buffer():
    s = connect()
    for key in (b"a", b"b", b"c"):
        s.sendall(b"set %s 7 0 3\r\nv-%s\r\n" % (key, key))
        assert recv_until(s, b"\r\n") == b"STORED\r\n"
    notes = []
    for size in (2 * MB, 10 * MB):
        half = misses(size // 2)
        line = b"get a" + half + b" b" + half + b" c\r\n"
        rss0 = SRV.reset_peak()
        got = send_and_read(s, line + b"get c\r\n",
                            b"END\r\nVALUE c 7 3\r\nv-c\r\nEND\r\n")
        want = (b"VALUE a 7 3\r\nv-a\r\nVALUE b 7 3\r\nv-b\r\n"
                b"VALUE c 7 3\r\nv-c\r\nEND\r\n"
                b"VALUE c 7 3\r\nv-c\r\nEND\r\n")
        assert got == want, got[:200]
        peak = SRV.kb("VmHWM") - rss0
        SRV.bounded(peak < 4 * 1024,
                    "a %d-byte line took +%d kB" % (len(line), peak))
        notes.append("%d MB line: peak +%d kB" % (size // MB, peak))
    s.close()
    return ", ".join(notes)


@check
def one_key_named_600000_times_in_a_gets_line():
    s = connect()
    s.sendall(b"set k 0 0 5\r\nhello\r\n")
    assert recv_until(s, b"\r\n") == b"STORED\r\n"
    s.sendall(b"gets k\r\n")
    head = recv_until(s, b"END\r\n").split(b"\r\n")[0]
    line = b"gets" + b" k" * 600000 + b"   \r\n"
    got = send_and_read(s, line, b"END\r\n")
    one = head + b"\r\nhello\r\n"
    assert got == one * 600000 + b"END\r\n", len(got)
    s.close()


@check
def a_nul_ends_a_streamed_line():
    s = connect()
    s.sendall(b"set n 0 0 1\r\nn\r\n")
    assert recv_until(s, b"\r\n") == b"STORED\r\n"
    line = b"get n" + misses(2 * MB) + b" n\0 n n" + misses(MB) + b"\r\n"
    got = send_and_read(s, line + b"get n\r\n", b"END\r\nVALUE n 0 1\r\n"
                        b"n\r\nEND\r\n")
    assert got == (b"VALUE n 0 1\r\nn\r\n" * 2 + b"END\r\n" +
                   b"VALUE n 0 1\r\nn\r\nEND\r\n"), got[:200]
    s.close()


@check
def a_key_too_long_ends_the_line_with_memcacheds_error():
    long_key = b"x" * 251
    s = connect()
    s.sendall(b"set k 0 0 1\r\nk\r\n")
    assert recv_until(s, b"\r\n") == b"STORED\r\n"
    # Up to the read buffer the line is judged whole: only the error.
    line = b"get k" + misses(MB // 2) + b" " + long_key + b" k\r\n"
    got = send_and_read(s, line + b"get k\r\n", b"END\r\n")
    assert got == (b"CLIENT_ERROR bad command line format\r\n"
                   b"VALUE k 0 1\r\nk\r\nEND\r\n"), got[:200]
    # Past it, what came before the long key may have been answered.
    line = b"get k" + misses(3 * MB) + b" " + long_key + b" k" + \
        misses(MB) + b"\r\n"
    got = send_and_read(s, line + b"get k\r\n", b"END\r\n")
    assert got.endswith(b"CLIENT_ERROR bad command line format\r\n"
                        b"VALUE k 0 1\r\nk\r\nEND\r\n"), got[-200:]
    assert got.count(b"CLIENT_ERROR") == 1 and got.count(b"END") == 1
    s.close()


def stat(s, name):
    s.sendall(b"stats\r\n")
    for line in recv_until(s, b"END\r\n").split(b"\r\n"):
        if line.startswith(b"STAT %s " % name):
            return int(line.split()[2])
    raise AssertionError("no stat %s" % name)


@check
def work_beyond_a_turn_is_taken_in_turns_and_in_order():
    s = connect()
    s.sendall(b"set t 3 0 2\r\nok\r\n")
    assert recv_until(s, b"\r\n") == b"STORED\r\n"
    yields = stat(s, b"conn_yields")
    # 3,000 pipelined requests in one write, then 5,000 keys in one line:
    # each is more than one turn (256 keys or requests) of the worker.
    one = b"VALUE t 3 2\r\nok\r\n"
    got = send_and_read(s, b"get t nokey\r\n" * 3000 + b"get" +
                        b" t" * 5000 + b"\r\nmn\r\n", b"END\r\nMN\r\n")
    assert got == ((one + b"END\r\n") * 3000 + one * 5000 +
                   b"END\r\nMN\r\n")
    taken = stat(s, b"conn_yields") - yields
    assert taken >= 20, taken
    s.close()
    return "%d turns given up" % taken


def main():
    global SRV
    SRV = lib.Server()
    return lib.run(CHECKS, SRV)


if __name__ == "__main__":
    sys.exit(main())
