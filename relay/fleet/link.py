"""The master's private line to one worker process: a socket pair, one JSON object per line.

Owns both ends of that line and nothing else. The master creates it (`LinkPair`) and hands the
child one end as an inherited file descriptor named by the environment variable RELAY_FLEET_FD;
the worker finds it with `WorkerLink.from_environ()`. What goes over it:

    master -> worker   {"overrides": {"ari.app": ..., "web.port": 0, ...}}   once, first
    worker -> master   {"started": {"app", "pid", "web_url", "rtp_port"}}      once started
    either way         end of file: the other side is gone

The worker treats the master's end of file as a SIGTERM (it drains): a worker never outlives its
master by more than its drain. Lines are bounded (MAX_LINE); anything that is not a JSON object
is ignored. Secrets (the internal web token) go over this line, never in argv or the
environment.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any, Callable, Optional

import gevent

log = logging.getLogger(__name__)

ENV_FD = "RELAY_FLEET_FD"
MAX_LINE = 64 * 1024


class LineSocket:
    """One end: send(obj) a line, read() -> the next object or None at end of file."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self.closed = False

    def send(self, message: dict) -> bool:
        """False when the other side is gone."""
        try:
            self.sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
            return True
        except OSError:
            return False

    def read(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The next object; None at end of file (or on an error); gevent.Timeout if timeout."""
        with gevent.Timeout(timeout):
            while True:
                line, sep, rest = self._buffer.partition(b"\n")
                if sep:
                    self._buffer = rest
                    try:
                        message = json.loads(line)
                    except ValueError:
                        log.warning("fleet link: ignoring a line that is not JSON: %.80r", line)
                        continue
                    if isinstance(message, dict):
                        return message
                    continue
                if len(self._buffer) > MAX_LINE:
                    log.warning("fleet link: a line longer than %d bytes; closing", MAX_LINE)
                    return None
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    return None
                if not chunk:
                    return None
                self._buffer += chunk

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


class LinkPair:
    """The master's side: `LinkPair()`, give `child_fd` to the child (pass_fds and
    env[ENV_FD]), then `child_started()` closes the master's copy of it."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.master = LineSocket(ours)
        self._child = theirs
        self.child_fd = theirs.fileno()
        os.set_inheritable(self.child_fd, True)

    def child_started(self) -> None:
        self._child.close()

    def close(self) -> None:
        self._child.close()
        self.master.close()


class WorkerLink:
    """The worker's side, from the inherited descriptor."""

    def __init__(self, fd: int) -> None:
        self.line = LineSocket(socket.socket(fileno=fd))
        self._watcher: Optional[gevent.Greenlet] = None

    @classmethod
    def from_environ(cls, environ: Optional[dict] = None) -> Optional["WorkerLink"]:
        """The link when this process is a fleet worker, else None."""
        value = (os.environ if environ is None else environ).get(ENV_FD, "")
        if not value:
            return None
        try:
            return cls(int(value))
        except (ValueError, OSError) as exc:
            raise RuntimeError(f"{ENV_FD}={value!r} is not an open descriptor: {exc}") from None

    def overrides(self, timeout: float = 10.0) -> dict[str, Any]:
        """The settings the master gives this worker (its app name, its web server)."""
        message = self.line.read(timeout)
        if message is None or not isinstance(message.get("overrides"), dict):
            raise RuntimeError("the master sent no settings")
        return message["overrides"]

    def report_started(self, app: str, web_url: str, rtp_port: int) -> None:
        self.line.send({"started": {"app": app, "pid": os.getpid(), "web_url": web_url,
                                    "rtp_port": rtp_port}})

    def watch(self, on_master_gone: Callable[[], None]) -> None:
        """Call on_master_gone() once, when the master's end closes."""
        def run() -> None:
            while self.line.read() is not None:
                pass
            on_master_gone()
        self._watcher = gevent.spawn(run)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
        self.line.close()
