"""The processes of the load benchmark and what the kernel says about them.

Owns: starting a child process with its output in a log file, waiting for the line that says
where it listens, stopping it (SIGTERM, then SIGKILL) on every path; reading a process's CPU
time and resident memory from /proc, and the machine's CPU use from /proc/stat; small HTTP
helpers (127.0.0.1 only, basic auth). No benchmark logic here.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A child process whose stdout and stderr go to `log`. Use as a context manager, or call
    stop() in a finally: it is always ended."""

    def __init__(self, name: str, argv: list[str], log: Path,
                 env: Optional[dict[str, str]] = None,
                 cpus: Optional[set[int]] = None) -> None:
        self.name = name
        self.log = log
        self.cpus = cpus
        log.parent.mkdir(parents=True, exist_ok=True)

        def in_child() -> None:
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        with log.open("w") as out:
            self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=in_child)
        self.pid = self.popen.pid

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first match of `pattern` in the log; RuntimeError if the process exits or the
        timeout passes first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log.read_text(errors="replace"))
            if match:
                return match
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}: "
                                   f"{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not print {pattern!r} within {timeout} s: "
                                   f"{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, wait up to `timeout`, then SIGKILL. The exit status (None if killed)."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
                return None
        return self.popen.returncode

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(self.pid)

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def runqueue_wait_seconds(self) -> float:
        return runqueue_wait_seconds(self.pid)


def cpu_split() -> tuple[Optional[set[int]], Optional[set[int]]]:
    """(the CPU for the process under test, the CPUs for the load generators): the last CPU
    this process may use, and the others; (None, None) with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark dies, however it dies (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far (/proc/PID/stat utime, stime); system is
    the kernel's work on its behalf (system calls, socket I/O)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def runqueue_wait_seconds(pid: int) -> float:
    """How long the process's main thread (the gevent hub's) has waited for a CPU while
    runnable (/proc/PID/schedstat, second field): the scheduler's delay, not the process's."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kb(pid: int) -> int:
    """Resident set size of a process (/proc/PID/status VmRSS), KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)        # idle + iowait
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a child told to listen on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: Any = None, auth: Optional[tuple[str, str]] = None,
         timeout: float = 30.0) -> tuple[int, bytes]:
    """(status, body) of one request; a JSON-able body is sent as JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str, auth: Optional[tuple[str, str]] = None, timeout: float = 30.0,
             **params: Any) -> Any:
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    status, body = http("GET", url, auth=auth, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status} {body[:200]!r}")
    return json.loads(body)


def post_json(url: str, body: Any, auth: Optional[tuple[str, str]] = None,
              timeout: float = 30.0) -> Any:
    status, data = http("POST", url, body, auth=auth, timeout=timeout)
    if status not in (200, 201, 204):
        raise RuntimeError(f"POST {url}: {status} {data[:200]!r}")
    return json.loads(data) if data else None
