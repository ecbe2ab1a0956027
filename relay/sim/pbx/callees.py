"""Who answers an originated PJSIP/NAME: the callee's behaviour and the causes Asterisk reports.

Owns: the callee spec (what `register_endpoint` takes), its validation, and the table of what
each behaviour looks like on a real Asterisk 22 with chan_pjsip (res/res_pjsip.c
ast_sip_hangup_sip2cause, main/dial.c handle_frame / handle_timeout_trip): the SIP answer, the
hangup cause of the channel, the Dial event's dialstatus, and whether chan_pjsip queued a
hangup request first (a final SIP response) or the dial thread hung it up itself (its ring
timeout). Also what the simulated AMD() concludes about the callee. No I/O, no state.

    {"answer": "answer",      # answer | busy | no_answer | reject | congestion | failure |
                              # machine
     "ring_ms": [300, 900],   # ringing (180) before the final answer; the originate's timeout
                              # still wins (no_answer rings until it)
     "script": {...},         # what the callee does once answered (caller script format);
                              # machine: its greeting and beep (a default one otherwise)
     "amd": {"status": "HUMAN", "cause": "HUMAN-500-500", "after_ms": 1200}}   # optional

A bare caller script (an object with "steps", or a list) is {"answer": "answer", "script": it}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.sim.pbx.caller import Script, default_audio, parse_script
from relay.sim.pbx.timing import Range, _check_range

BEHAVIOURS = ("answer", "busy", "no_answer", "reject", "congestion", "failure", "machine")


@dataclass(frozen=True)
class Refusal:
    """A callee that never answers: its cause, the Dial status, and whether chan_pjsip queues
    a ChannelHangupRequest with the cause (a final SIP response) before the dial thread hangs
    the channel up."""

    sip: int
    cause: int
    dialstatus: str
    hangup_request: bool


# ast_hangup_cause_to_dial_status: 17 BUSY, 34 CONGESTION, anything else NOANSWER
REFUSALS = {
    "busy": Refusal(486, 17, "BUSY", True),
    "reject": Refusal(603, 21, "NOANSWER", True),
    "congestion": Refusal(503, 34, "CONGESTION", True),
    "failure": Refusal(500, 38, "NOANSWER", True),
    "no_answer": Refusal(0, 19, "NOANSWER", False),     # the dial thread's timeout
}
DEFAULT_RING_MS: dict[str, Range] = {
    "answer": (300.0, 900.0), "machine": (300.0, 900.0), "busy": (100.0, 400.0),
    "reject": (400.0, 1200.0), "congestion": (50.0, 200.0), "failure": (50.0, 200.0),
    "no_answer": (0.0, 0.0),
}
MACHINE_SCRIPT = {
    "steps": [{"say": "Hello, you have reached the Smith family. We cannot take your call "
                      "right now. Please leave a message after the tone."},
              {"tone": 1000, "ms": 600},
              {"wait_hangup": {"timeout_ms": 60000}}],
}
SILENT_SCRIPT = {"steps": [], "end": "wait"}
# AMD() defaults (amd.conf): after_greeting_silence 800 ms; a person's "Hello?" is short.
HUMAN_AMD = ("HUMAN", "HUMAN-800-600", 1400.0)
# The documented context waits for the greeting and its beep to end (WaitForSilence) before
# Stasis(): the machine's result comes once its leading timed steps are over, plus this.
SILENCE_AFTER_BEEP_MS = 1000.0


@dataclass(frozen=True)
class Callee:
    behaviour: str
    ring_ms: Range
    script: Script
    amd_status: str
    amd_cause: str
    amd_after_ms: float      # from the continue into the AMD context to Stasis()

    @property
    def refusal(self) -> Refusal | None:
        return REFUSALS.get(self.behaviour)


def leading_audio_ms(script: Script) -> float:
    """How long the script's leading timed steps (say, sound, tone with ms, pause) last."""
    total = 0.0
    for step in script.steps:
        if step.kind in ("say", "sound"):
            total += len(default_audio(step)[0]) / 8.0     # u-law at 8 kHz: 8 bytes a ms
        elif step.kind in ("tone", "pause") and step.ms:
            total += step.ms
        else:
            break
    return total


def parse_callee(data: Any) -> Callee:
    """A callee spec (module docstring); ValueError naming what is wrong."""
    if isinstance(data, list) or (isinstance(data, dict) and "steps" in data):
        data = {"answer": "answer", "script": data}
    if not isinstance(data, dict):
        raise ValueError("a callee is an object {answer, ring_ms, script, amd} or a script")
    unknown = set(data) - {"answer", "ring_ms", "script", "amd"}
    if unknown:
        raise ValueError(f"unknown callee key(s) {sorted(unknown)}")
    behaviour = data.get("answer", "answer")
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"callee answer must be one of {', '.join(BEHAVIOURS)}, "
                         f"got {behaviour!r}")
    ring_ms = _check_range("ring_ms", data.get("ring_ms", DEFAULT_RING_MS[behaviour]))
    default_script = MACHINE_SCRIPT if behaviour == "machine" else SILENT_SCRIPT
    script = parse_script(data.get("script", default_script))
    amd = data.get("amd") or {}
    if not isinstance(amd, dict) or set(amd) - {"status", "cause", "after_ms"}:
        raise ValueError("callee amd must be an object {status, cause, after_ms}")
    if behaviour == "machine":
        status, cause = "MACHINE", "LONGGREETING-2000-1500"
        after = leading_audio_ms(script) + SILENCE_AFTER_BEEP_MS
    else:
        status, cause, after = HUMAN_AMD
    status = amd.get("status", status)
    if status not in ("HUMAN", "MACHINE", "NOTSURE", "HANGUP"):
        raise ValueError(f"callee amd status must be HUMAN, MACHINE, NOTSURE or HANGUP, "
                         f"got {status!r}")
    after = amd.get("after_ms", after)
    if not isinstance(after, (int, float)) or isinstance(after, bool) or not 0 <= after <= 60000:
        raise ValueError("callee amd after_ms must be 0..60000")
    return Callee(behaviour, ring_ms, script, status, str(amd.get("cause", cause)), float(after))
