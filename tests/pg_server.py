"""A throw-away PostgreSQL server for the tests and the history benchmark.

Owns: finding Debian's PostgreSQL binaries (/usr/lib/postgresql/<version>/bin, 15 first),
initdb into a temporary folder (as the `postgres` user when we run as root: PostgreSQL refuses
to run as root), starting it on a free 127.0.0.1 port with its unix socket in that folder,
stopping and starting it again (fault tests stop it while calls run), creating databases, and
removing everything at the end. Independent of relay: `python tests/pg_server.py` starts one
and prints its URL until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

PG_ROOT = Path("/usr/lib/postgresql")
PREFERRED_VERSION = "15"
START_TIMEOUT_S = 60


def find_bin_dir() -> tuple[Optional[Path], str]:
    """(the bin folder of an installed PostgreSQL server, "") or (None, why there is none)."""
    override = os.environ.get("RELAY_PG_BIN")
    candidates = [Path(override)] if override else []
    if PG_ROOT.is_dir():
        versions = sorted((p.name for p in PG_ROOT.iterdir() if p.name.isdigit()),
                          key=lambda v: (v != PREFERRED_VERSION, -int(v)))
        candidates += [PG_ROOT / v / "bin" for v in versions]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            break
    else:
        return None, (f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) under "
                      f"{override or PG_ROOT}: `make postgres` (apt-get install postgresql)")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return None, "running as root without `runuser` to start PostgreSQL as postgres"
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no `postgres` user to run PostgreSQL"
    return folder, ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temporary folder. start() (initdb the first time), stop(),
    restart(), create_database(name) -> URL, destroy()."""

    def __init__(self, bin_dir: Optional[Path] = None, fast_unsafe: bool = True) -> None:
        found, reason = (bin_dir, "") if bin_dir else find_bin_dir()
        if found is None:
            raise RuntimeError(reason)
        self.bin_dir = Path(found)
        self.root = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        # fsync off: a test server's data need not survive a power cut, and it is 10x faster
        self.fast_unsafe = fast_unsafe
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._initialised = False
        self._databases = 0

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if done.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{log}")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start the server (initdb first, the first time); returns when it accepts
        connections."""
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
            self._initialised = True
        if self.running:
            return
        options = [f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1",
                   "-c max_connections=100"]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(START_TIMEOUT_S), "-o", " ".join(options))

    def stop(self) -> None:
        """Stop the server now (pg_ctl stop -m fast: open sessions are cut)."""
        if self.running:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: Optional[str] = None) -> str:
        """A new empty database; its URL."""
        import psycopg

        self._databases += 1
        name = name or f"relay_test_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    server = PgServer()
    server.start()
    print(server.create_database("relay"), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.destroy()
