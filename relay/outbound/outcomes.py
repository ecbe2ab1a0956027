"""What one dial asks for and how it ended: the outcome values and Asterisk's hangup causes.

Owns: `DialRequest` (what a caller of `Dialer.dial` gives), `DialOutcome` (what its callback
gets, and the `outbound` dict of the call record, docs/HISTORY.md), and the mapping from the
cause of a channel that ended before it was answered to an outcome. No I/O.

Outcomes:
    answered    the callee answered (AMD: HUMAN or NOTSURE, or no AMD); the conversation ran
    machine     AMD() said MACHINE; the agent's `on_machine` says what relay then did
    busy        cause 17 (SIP 486/600)
    no_answer   cause 19 (the ring timeout, SIP 480) or 18 (SIP 408)
    rejected    cause 21 (SIP 603, 403)
    failed      anything else: another cause (34 congestion, 38 failure, 1 unallocated...),
                an originate ARI refused or never answered, lost events, no AMD result
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

OUTCOMES = ("answered", "machine", "busy", "no_answer", "rejected", "failed")
CAUSE_OUTCOMES = {17: "busy", 18: "no_answer", 19: "no_answer", 21: "rejected"}
CAUSE_TEXTS = {
    0: "Unknown", 1: "Unallocated (unassigned) number", 3: "No route to destination",
    16: "Normal Clearing", 17: "User busy", 18: "No user responding",
    19: "User alerting, no answer", 21: "Call Rejected", 27: "Destination out of order",
    28: "Invalid number format", 31: "Normal, unspecified", 34: "Circuit/channel congestion",
    38: "Network out of order", 41: "Temporary failure", 58: "Bearer capability not available",
    127: "Interworking, unspecified",
}
AMD_STATUSES = ("HUMAN", "MACHINE", "NOTSURE", "HANGUP")


def outcome_for_cause(cause: Optional[int]) -> str:
    """The outcome of a channel that ended before it was answered, from its hangup cause."""
    if cause is None:
        return "failed"
    return CAUSE_OUTCOMES.get(cause, "failed")


def cause_text(cause: Optional[int]) -> str:
    if cause is None:
        return ""
    return CAUSE_TEXTS.get(cause, f"cause {cause}")


@dataclass(frozen=True)
class DialRequest:
    """One call to place. `ring_timeout_s` and `caller_id` default to the outbound settings;
    `amd` None means the agent's setting. `variables` fill the agent's placeholders and reach
    its tools. `campaign_id` and `attempt` are carried to the outcome for whoever dials."""

    endpoint: str
    agent: str = ""
    caller_id: str = ""
    ring_timeout_s: Optional[int] = None
    variables: dict = field(default_factory=dict)
    amd: Optional[bool] = None
    campaign_id: str = ""
    attempt: int = 1


@dataclass
class DialOutcome:
    """How one dial went: updated as it goes, final when the callback gets it."""

    channel_id: str
    endpoint: str
    agent: str
    variables: dict
    campaign_id: str = ""
    attempt: int = 1
    state: str = "originating"      # originating, ringing, amd, talking, ended
    outcome: str = ""               # one of OUTCOMES once known
    cause: Optional[int] = None     # Asterisk's hangup cause, when one was given
    reason: str = ""                # why, in words (the failure, or the conversation's end)
    amd: Optional[dict] = None      # {"status", "cause", "action"} when AMD ran
    started_at: float = 0.0
    answered_at: Optional[float] = None
    ended_at: Optional[float] = None

    def record(self) -> dict:
        """The call record's `outbound` dict (docs/HISTORY.md)."""
        return {"endpoint": self.endpoint, "outcome": self.outcome, "cause": self.cause,
                "amd": None if self.amd is None else dict(self.amd),
                "campaign_id": self.campaign_id or None, "attempt": self.attempt,
                "variables": dict(self.variables)}

    def view(self) -> dict[str, Any]:
        """Everything, for the API and the callback's logs."""
        return {"channel_id": self.channel_id, "agent": self.agent, "state": self.state,
                "cause_txt": cause_text(self.cause), "reason": self.reason,
                "started_at": self.started_at, "answered_at": self.answered_at,
                "ended_at": self.ended_at, **self.record()}
