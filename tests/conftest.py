"""Test-wide setup: gevent monkey patching first, so sockets in tests cooperate with greenlets."""

from gevent import monkey

monkey.patch_all()

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference (read-only facts about Asterisk and OpenAI); skip when absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference material not found at {REFERENCE}")
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
