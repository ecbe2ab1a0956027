"""`relay check`: what a new user runs against their own Asterisk and OpenAI account before the
first call.

Owns: the result of one check (`Check`: ok / warn / fail / skip, what was found, how to fix
it), running the groups in order (each group is a small module: settings, ari, media,
realtime, services) and the exit status (0: nothing failed, warnings allowed; 1 otherwise).
The table and the JSON are in report.py; the command line in cli.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass
class Check:
    """One line of the report."""

    group: str
    name: str
    status: str
    found: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def exit_status(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0
