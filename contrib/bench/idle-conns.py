#!/usr/bin/python3
"""idle-conns.py - hold N idle HTTP/2 (h2c) client connections open.

Usage: idle-conns.py [--silent] HOST PORT N [PARALLEL]

Each connection sends the client preface and an empty SETTINGS frame,
acknowledges the server's SETTINGS (as every real client does; nghttpx drops
a connection whose SETTINGS stay unacknowledged for 10s), then sends nothing
more.  At most PARALLEL (default 256) connects are in flight at once, so the
server's listen backlog never overflows (an overflow costs a 1s SYN retry).

With --silent a connection sends the preface and its SETTINGS and then
nothing at all: no SETTINGS ACK, and it never reads (what a careless or
hostile client does); it counts as set up once its bytes are sent.

Once every connection is set up (or failed) it prints one line on stdout:
    ready opened=N failed=M
and holds them, reading and discarding whatever the server sends, until its
standard input reaches EOF.  It then prints
    done open=N closed_by_peer=M
and exits, which closes them all.  Uses only the standard library; the
benchmark runs it with Debian's /usr/bin/python3.
"""
import errno
import os
import selectors
import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_LEN = 9            # RFC 9113 section 4.1
TYPE_SETTINGS = 0x4
FLAG_ACK = 0x1
EMPTY_SETTINGS = bytes([0, 0, 0, TYPE_SETTINGS, 0, 0, 0, 0, 0])
SETTINGS_ACK = bytes([0, 0, 0, TYPE_SETTINGS, FLAG_ACK, 0, 0, 0, 0])
SETUP_TIMEOUT = 120.0           # seconds for all N to be set up


class Conn:
    __slots__ = ("sock", "buf", "state")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.state = "connecting"   # then "handshake", "ready", "closed"


def server_sent_settings(c, data):
    """Scan frames for the server's SETTINGS (not an ACK).  True once seen."""
    c.buf += data
    while len(c.buf) >= FRAME_HEADER_LEN:
        length = int.from_bytes(c.buf[0:3], "big")
        if len(c.buf) < FRAME_HEADER_LEN + length:
            return False
        ftype, flags = c.buf[3], c.buf[4]
        c.buf = c.buf[FRAME_HEADER_LEN + length:]
        if ftype == TYPE_SETTINGS and not flags & FLAG_ACK:
            return True
    return False


def send_all(c, data):
    """A fresh socket's send buffer takes these few bytes whole."""
    try:
        return c.sock.send(data) == len(data)
    except OSError:
        return False


def start_connect(sel, addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS):
        s.close()
        return None
    c = Conn(s)
    sel.register(s, selectors.EVENT_WRITE, c)
    return c


def on_event(sel, c, mask, counts):
    """Advance <c>; returns the number of connections that became settled."""
    if c.state == "connecting":
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return close_conn(sel, c, counts, "failed")
        c.state = "handshake"
        if not send_all(c, PREFACE + EMPTY_SETTINGS):
            return close_conn(sel, c, counts, "failed")
        if SILENT:
            sel.unregister(c.sock)
            c.state = "ready"
            counts["opened"] += 1
            return 1
        sel.modify(c.sock, selectors.EVENT_READ, c)
        return 0
    try:
        data = c.sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        data = b""
    if not data:
        was = c.state
        close_conn(sel, c, counts, "failed" if was == "handshake" else "closed_by_peer")
        return 1 if was == "handshake" else 0
    if c.state == "handshake" and server_sent_settings(c, data):
        if not send_all(c, SETTINGS_ACK):
            return close_conn(sel, c, counts, "failed")
        c.state = "ready"
        c.buf = b""
        counts["opened"] += 1
        return 1
    return 0


def close_conn(sel, c, counts, what):
    sel.unregister(c.sock)
    c.sock.close()
    if c.state == "ready":
        counts["opened"] -= 1
    c.state = "closed"
    counts[what] += 1
    return 1 if what == "failed" else 0


SILENT = False


def main():
    global SILENT
    if len(sys.argv) > 1 and sys.argv[1] == "--silent":
        SILENT = True
        del sys.argv[1]
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    addr = (sys.argv[1], int(sys.argv[2]))
    n = int(sys.argv[3])
    parallel = int(sys.argv[4]) if len(sys.argv) == 5 else 256
    sel = selectors.DefaultSelector()
    counts = {"opened": 0, "failed": 0, "closed_by_peer": 0}
    conns = []
    started = settled = 0
    deadline = time.monotonic() + SETUP_TIMEOUT
    while settled < n and time.monotonic() < deadline:
        while started < n and started - settled < parallel:
            c = start_connect(sel, addr)
            started += 1
            if c is None:
                counts["failed"] += 1
                settled += 1
            else:
                conns.append(c)
        for key, mask in sel.select(timeout=1.0):
            settled += on_event(sel, key.data, mask, counts)
    print("ready opened=%d failed=%d" % (counts["opened"], n - counts["opened"]), flush=True)

    stdin = sys.stdin.fileno()
    sel.register(stdin, selectors.EVENT_READ, None)
    while True:
        for key, mask in sel.select():
            if key.data is None:
                if not os.read(stdin, 4096):
                    print("done open=%d closed_by_peer=%d"
                          % (counts["opened"], counts["closed_by_peer"]), flush=True)
                    return
            else:
                on_event(sel, key.data, mask, counts)


if __name__ == "__main__":
    main()
