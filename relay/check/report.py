"""The report of `relay check`: a table for people (✓ ✗ ! and a fix under each failure) or
JSON for scripts."""

from __future__ import annotations

import json
import textwrap

from relay.check import FAIL, OK, SKIP, WARN, Check, exit_status

MARKS = {OK: "✓", WARN: "!", FAIL: "✗", SKIP: "-"}
WIDTH = 100


def table(checks: list[Check]) -> str:
    name_width = max((len(c.name) for c in checks), default=10)
    lines, group = [], None
    for c in checks:
        if c.group != group:
            group = c.group
            lines.append(f"{group}")
        head = f"  {MARKS[c.status]} {c.name.ljust(name_width)}  "
        found = textwrap.wrap(c.found, WIDTH - len(head)) or [""]
        lines.append(head + found[0])
        lines.extend(" " * len(head) + more for more in found[1:])
        if c.fix and c.status in (FAIL, WARN):
            for i, part in enumerate(textwrap.wrap(c.fix, WIDTH - len(head) - 5)):
                lines.append(" " * len(head) + ("fix: " if i == 0 else "     ") + part)
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append("")
    lines.append(f"{len(checks)} checks: {failed} failed, {warned} warning(s)" +
                 ("" if failed else " — ready for a first call"))
    return "\n".join(lines)


def as_json(checks: list[Check]) -> str:
    return json.dumps({"ok": exit_status(checks) == 0,
                       "checks": [c.as_dict() for c in checks]}, indent=2, ensure_ascii=False)
