"""Test-wide setup: gevent monkey patching first, so sockets in tests cooperate with greenlets."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from pg_fixtures import pg_server, pg_url  # noqa: E402,F401  (PostgreSQL for the history store)

REFERENCE = Path(__file__).resolve().parent / "reference"     # see reference/README.md

# The tests never write the checkout's call history (var/relay.db): the relay processes they
# start get a throw-away database by environment, the workers they build in process resolve
# the history's relative paths under the same folder. A test that needs its own sets its own.
_HISTORY_DIR = tempfile.mkdtemp(prefix="relay-test-history-")
os.environ.setdefault("HISTORY_SQLITE_PATH", os.path.join(_HISTORY_DIR, "relay.db"))
os.environ.setdefault("HISTORY_SPOOL_PATH", os.path.join(_HISTORY_DIR, "history-spool.jsonl"))


@pytest.fixture(autouse=True, scope="session")
def _history_outside_the_checkout():
    import shutil

    from relay.history import service
    checkout_db = service.PACKAGE_ROOT / "var" / "relay.db"

    def stamp():     # the file and its write-ahead log
        return [p.stat().st_mtime_ns if p.exists() else None
                for p in (checkout_db, checkout_db.with_name("relay.db-wal"))]
    before = stamp()
    service.PACKAGE_ROOT = Path(_HISTORY_DIR)
    yield
    shutil.rmtree(_HISTORY_DIR, ignore_errors=True)
    assert stamp() == before, (f"a test wrote the checkout's call history {checkout_db}: give "
                               "the relay it starts HISTORY_SQLITE_PATH in its temporary folder")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """tests/reference: the ARI Swagger files, a real event trace and a real RTP capture of
    Asterisk 22 (kept in the repository: a fresh clone tests itself, nothing skipped)."""
    assert REFERENCE.is_dir(), f"reference data missing at {REFERENCE}"
    return REFERENCE


@pytest.fixture
def stack(tmp_path):
    """A factory of tests/stack.Stack (simulated PBX + simulated model + relay), each one
    stopped, with its leak checks, when the test ends."""
    from stack import Stack

    stacks = []

    def make(**kwargs):
        s = Stack(tmp_path, **kwargs)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.stop()
