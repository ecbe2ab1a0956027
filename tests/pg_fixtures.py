"""PostgreSQL fixtures (imported by conftest.py): one throw-away server per test session.

    pg_server   the session's tests/pg_server.PgServer, started; a test may pg_server.stop(),
                pg_server.start() or pg_server.restart() it (fault tests): the next test that
                asks for `pg_url` finds it running again.
    pg_url      a new, empty database on it, per test: its postgresql:// URL.

Without PostgreSQL's server binaries every test using them is skipped, saying why.
"""

from __future__ import annotations

import pytest
from pg_server import PgServer, find_bin_dir


@pytest.fixture(scope="session")
def pg_server():
    bin_dir, reason = find_bin_dir()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = PgServer(bin_dir)
    try:
        server.start()
    except Exception:
        server.destroy()
        raise
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server):
    if not pg_server.running:
        pg_server.start()
    url = pg_server.create_database()
    yield url
    if not pg_server.running:   # the test stopped it: bring it back for the next one
        pg_server.start()
    pg_server.drop_database(url.rsplit("/", 1)[1])
