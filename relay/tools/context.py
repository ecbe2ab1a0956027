"""What a built-in tool sees of the call that runs it, and what it may do to that call.

Owns: ToolContext, the only door from a built-in to its call: who is calling, which agent and
tool config, the call variables of an outbound call (relay.outbound: a customer's name, an
order number; {} for an inbound call), the time, and the call actions tools are allowed
(end the call or transfer it once the caller has heard the model's last sentence, send DTMF).
The built-ins never touch the Call object, ARI or the model session directly, so they stay
small and testable with a fake host.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Protocol

from relay.ari import AriError
from relay.tools.errors import ToolError

PBX_ERROR = "pbx_error"


class ToolHost(Protocol):
    """The side of a Call that tools use (relay.call.Call satisfies it)."""

    id: str
    caller_number: str
    agent: Any
    worker: Any     # .ari: the worker's AriClient

    def end_after_playout(self, reason: str, response_id: str = "",
                          handoff: Optional[tuple] = None) -> None: ...


class ToolContext:
    """One tool call's view of its call. `ends_conversation` is set by end_call()/transfer():
    the model gets the output, and no response.create follows."""

    def __init__(self, host: ToolHost, *, tool: str, config: dict, response_id: str = "",
                 function_call_id: str = "", clock: Callable[[], float] = time.time) -> None:
        self._host = host
        self.tool = tool
        self.config = config
        self.response_id = response_id
        self.function_call_id = function_call_id
        self.call_id: str = host.id
        self.caller_number: str = host.caller_number
        self.agent = host.agent
        self.direction: str = getattr(host, "direction", "inbound")
        self.variables: dict[str, str] = dict(getattr(host, "variables", None) or {})
        self.ends_conversation = False
        self._clock = clock

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    def end_call(self, reason: str, continue_in_dialplan: Optional[bool] = None) -> None:
        """Hang up (or continue in the dialplan) once the caller has heard the current
        response. None: as the `call.continue_in_dialplan` setting says."""
        ari = self._host.worker.ari
        handoff: Optional[tuple] = None
        if continue_in_dialplan is True:
            handoff = (ari.continue_in_dialplan, self.call_id)
        elif continue_in_dialplan is False:
            handoff = (ari.hangup, self.call_id)
        self._end(reason, handoff)

    def transfer(self, target: dict, label: str) -> None:
        """Once the caller has heard the current response, send the call to a dialplan
        location ({context, extension, priority}: ARI continue) or to an endpoint
        ({endpoint}: ARI redirect)."""
        ari = self._host.worker.ari
        if target.get("endpoint"):
            handoff: tuple = (ari.redirect, self.call_id, target["endpoint"])
        else:
            handoff = (ari.continue_in_dialplan, self.call_id, target.get("context"),
                       target.get("extension"), target.get("priority"))
        self._end(f"transferred to {label}", handoff)

    def send_dtmf(self, digits: str) -> None:
        """Play DTMF digits on the caller's channel (ARI POST /channels/{id}/dtmf)."""
        try:
            self._host.worker.ari.send_dtmf(self.call_id, digits)
        except AriError as exc:
            raise ToolError(PBX_ERROR, f"Asterisk did not send the digits: {exc.message}",
                            status=exc.status) from None

    def _end(self, reason: str, handoff: Optional[tuple]) -> None:
        self.ends_conversation = True
        self._host.end_after_playout(reason, self.response_id, handoff)
