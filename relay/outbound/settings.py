"""An agent's "outbound" settings: whether its dials go through answering-machine detection
and what relay does when AMD() says MACHINE.

Owns: `OutboundAgentConfig` and its validation from the agent's JSON (clear errors naming the
key). No I/O.

    "outbound": {
      "amd": true,                    # originate, then run AMD() in the documented context
      "on_machine": "message",        # hangup | message | talk
      "machine_message": "Hello {customer_name}, ..."   # what the agent says (message)
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MACHINE_ACTIONS = ("hangup", "message", "talk")
MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class OutboundAgentConfig:
    amd: bool = False
    on_machine: str = "hangup"
    machine_message: str = ""


def parse_outbound(data: Any) -> OutboundAgentConfig:
    """The agent's "outbound" object (None: the defaults); ValueError naming the bad key."""
    if data is None:
        return OutboundAgentConfig()
    if not isinstance(data, dict):
        raise ValueError("'outbound' must be an object")
    unknown = set(data) - {"amd", "on_machine", "machine_message"}
    if unknown:
        raise ValueError(f"'outbound' has unknown key(s) {', '.join(sorted(unknown))} "
                         "(known: amd, on_machine, machine_message)")
    amd = data.get("amd", False)
    if not isinstance(amd, bool):
        raise ValueError("'outbound.amd' must be true or false")
    action = data.get("on_machine", "hangup")
    if action not in MACHINE_ACTIONS:
        raise ValueError(f"'outbound.on_machine' must be one of {', '.join(MACHINE_ACTIONS)}, "
                         f"got {action!r}")
    message = data.get("machine_message", "")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise ValueError(f"'outbound.machine_message' must be a string of at most "
                         f"{MAX_MESSAGE_CHARS} characters")
    if action == "message" and not message.strip():
        raise ValueError("'outbound.on_machine' is 'message' but 'outbound.machine_message' "
                         "is empty")
    return OutboundAgentConfig(amd=amd, on_machine=action, machine_message=message)
