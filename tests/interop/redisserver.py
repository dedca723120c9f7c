"""A real redis-server for the screen-time tests (test_screen_time.py), and a
tiny RESP client to read what feedguardd stored.

RedisServer runs `redis-server` from $PATH (Debian: redis-server) on a free
loopback port (and optionally a unix socket) in its own directory, with no
persistence (`--save '' --appendonly no`): a restart starts empty.  It is
ready when PING answers (polled, no fixed sleeps); it is stopped, killed,
paused (SIGSTOP) and resumed (SIGCONT) by its PID only.

RedisClient speaks RESP2 over one socket: enough for PING, AUTH, SELECT,
SCAN, HGET, HGETALL, PTTL, SCRIPT FLUSH, FLUSHALL.  No python redis module
is needed.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from harness import closed_port, poll_until, tail, tf

REDIS_SERVER = os.environ.get("FG_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (-ERR ..., -NOSCRIPT ..., -NOAUTH ...)."""


class RedisClient:
    """One RESP2 connection to <addr> ("host:port" or a unix socket path)."""

    def __init__(self, addr, password=None, db=None, timeout=5.0):
        self.addr = addr
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self._connect()
        if password is not None:
            self.cmd("AUTH", password)
        if db:
            self.cmd("SELECT", db)

    def _connect(self):
        if self.addr.startswith("/"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(self.addr)
        else:
            host, port = self.addr.rsplit(":", 1)
            s = socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
        self.sock = s

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cmd(self, *args):
        """Send one command; return its reply: str for simple strings,
        int, bytes (or None) for bulk strings, lists for arrays.  An error
        reply raises RedisError."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ValueError("unexpected RESP line %r" % line)

    # ------------------------------------------------------------ conveniences

    def keys(self):
        """Every key of the selected database (SCAN, not KEYS)."""
        out, cursor = [], b"0"
        while True:
            cursor, batch = self.cmd("SCAN", cursor, "COUNT", 1000)
            out += batch
            if cursor in (b"0", "0"):
                return sorted(out)

    def hgetall(self, key):
        flat = self.cmd("HGETALL", key)
        return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}

    def hget_int(self, key, field):
        v = self.cmd("HGET", key, field)
        return None if v is None else int(v)

    def calls(self, command):
        """How many times the server has run <command> (INFO commandstats)."""
        info = self.cmd("INFO", "commandstats")
        m = re.search(r"^cmdstat_%s:calls=(\d+)" % re.escape(command.lower()), info.decode(), re.M)
        return int(m.group(1)) if m else 0


class RedisServer:
    """redis-server in <workdir>; .addr is "127.0.0.1:<port>"."""

    START_TIMEOUT = 10.0

    def __init__(self, workdir, name="redis", password=None, unixsocket=None):
        self.workdir = Path(workdir)
        self.name = name
        self.password = password
        self.unixsocket = unixsocket
        self.dir = self.workdir / ("%s-data" % name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / ("%s.log" % name)
        self.proc = None
        self.port = None
        self.paused = False

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _cmd(self, port):
        cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
               "--protected-mode", "no", "--logfile", ""]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        if self.unixsocket:
            cmd += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        return cmd

    @staticmethod
    def available():
        return os.access(REDIS_SERVER, os.X_OK)

    def start(self, port=None):
        """Start on <port> (None: the port it had, else a free one) and wait
        until PING answers.  A free port that another process takes first
        is retried with another one."""
        fixed = port or self.port
        for attempt in range(5):
            p = fixed or closed_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self._cmd(p), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT)
            self.port = p
            self.paused = False

            def ready():
                if self.proc.poll() is not None:
                    return "dead"
                try:
                    with RedisClient(self.addr, timeout=1) as c:
                        c.cmd("PING")
                    return "ready"
                except RedisError as e:            # NOAUTH: it serves, it wants AUTH
                    return "ready" if "NOAUTH" in str(e) or "AUTH" in str(e) else None
                except OSError:
                    return None
            state = poll_until(ready, tf(self.START_TIMEOUT), "redis-server to answer PING on %s" % self.addr,
                               interval=0.01)
            if state == "ready":
                return self
            self.proc.wait()
            if fixed:
                break
        raise AssertionError("redis-server did not start (exit %s):\n%s"
                             % (self.proc.returncode, tail(self.log_path)))

    def client(self, db=None):
        return RedisClient(self.addr, password=self.password, db=db)

    def cmd(self, *args, db=None):
        with self.client(db) as c:
            return c.cmd(*args)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pause(self):
        """SIGSTOP: the server holds its connections and answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self):
        """SIGKILL by PID, and reap; start() brings it back on the same port,
        empty."""
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)
        self.paused = False

    def stop(self):
        if self.proc is None:
            return
        if self.alive():
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def wait_gone(server, timeout=None):
    """Poll until nothing answers on <server>'s port any more."""
    def gone():
        try:
            with RedisClient(server.addr, timeout=0.2):
                return False
        except OSError:
            return True
    poll_until(gone, timeout or tf(5), "redis on %s to be gone" % server.addr)
