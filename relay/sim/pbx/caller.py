"""Simulated callers: the script format and the state machine that plays one script.

Owns: parsing and validating a caller script (a small JSON-able structure, below), and
`CallerRun`, a sans-IO state machine driven by `poll(now)` that says what the caller does next
(speak, press keys, hang up) and when it wants to be polled again. What the agent does reaches it
through `AgentActivity` (fed by the media layer from the RTP the relay sends).

Script format (every key optional except `steps`; a bare list is taken as `steps`)::

    {
      "caller": {"name": "Test Caller", "number": "5551234"},
      "endpoint": "caller",          # channel name PJSIP/<endpoint>-0000000N
      "exten": "100", "context": "from-external",
      "args": ["incoming"],          # Stasis(APP,incoming): StasisStart args
      "variables": {"X": "1"},       # channel variables set by the dialplan
      "answer": true,                # dialplan Answer() before Stasis (false: the app answers)
      "end": "hangup",               # after the last step: "hangup" (default) or "wait"
      "max_duration_ms": 600000,     # the caller hangs up after this, whatever happens
      "steps": [
        {"pause_ms": 500},                                  # silence (no RTP in simple_bridge)
        {"say": "I would like to check my order"},          # speech-like audio of the text
        {"wait_agent_done": {"silence_ms": 800, "timeout_ms": 20000}},
        {"after_agent": "Yes please", "silence_ms": 800},   # = wait_agent_done + say
        {"barge_in": "Stop, stop", "after_ms": 600},        # = wait_agent_start + say
        {"wait_agent_start": {"after_ms": 0, "timeout_ms": 20000}},
        {"dtmf": "123#", "interval_ms": 350, "duration_ms": 100},
        {"sound": "hello-world"},                           # a prompt (ends in a short frame)
        {"tone": 440, "ms": 2000},                          # a tone for 2 s
        {"tone": 440},                     # PlayTones: the tone goes on behind the next steps
        {"wait_hangup": {"timeout_ms": 10000}},             # wait for the app to hang up
        {"echo": {"ms": 5000}},            # Echo(): send back what the bridge sends, 20 ms later
        {"echo": true},                    # Echo() until the call ends (as the dialplan app)
        {"hangup": true}
      ]
    }

A wait that times out is recorded (`timed_out`) and the script goes on. `echo` stops what the
caller was saying (a background tone too); for its duration the channel says into its bridge
what it hears from the bridge (the relay's RTP into an externalMedia channel included), one
frame later, and nothing while it hears nothing; `{"echo": 5000}` is `{"echo": {"ms": 5000}}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.sim._sim_rtp import AGENT_HANGOVER_S, AgentActivity
from relay.sim.speech import utterance_ulaw

SAMPLE_RATE = 8000
FRAME_BYTES = 160
FRAME_S = 0.020
DEFAULT_TIMEOUT_MS = 30000
STEP_KINDS = ("say", "pause", "dtmf", "wait_agent_done", "wait_agent_start", "sound", "tone",
              "wait_hangup", "hangup", "echo")
TIMED_KINDS = ("say", "sound", "pause", "tone", "echo")     # steps that end at step_end
_DTMF = set("0123456789ABCD*#")


class ScriptError(ValueError):
    """A caller script that cannot be played: the message says what is wrong and where."""


@dataclass(frozen=True)
class Step:
    kind: str
    text: str = ""
    ms: int = 0
    digits: str = ""
    interval_ms: int = 350
    duration_ms: int = 100
    silence_ms: int = 800
    after_ms: int = 0
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    hz: float = 440.0

    def describe(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind}
        if self.text:
            out["text"] = self.text
        if self.digits:
            out["digits"] = self.digits
        return out


@dataclass(frozen=True)
class Script:
    steps: tuple[Step, ...]
    caller_name: str = ""
    caller_number: str = ""
    endpoint: str = "caller"
    exten: str = "s"
    context: str = "from-external"
    args: tuple[str, ...] = ()
    variables: dict = field(default_factory=dict)
    answer: bool = True
    end: str = "hangup"
    max_duration_ms: int = 600000


def _int(obj: dict, key: str, default: int, lo: int = 0, hi: int = 3_600_000) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ScriptError(f"{key} must be a number between {lo} and {hi}, got {value!r}")
    return int(value)


def _opts(value: Any, name: str) -> dict:
    if value is True or value is None:
        return {}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"timeout_ms": value}
    if not isinstance(value, dict):
        raise ScriptError(f"{name} takes true, a number or an object, got {value!r}")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScriptError(f"{name} needs a non-empty text, got {value!r}")
    return value


def parse_steps(raw: list) -> tuple[Step, ...]:
    if not isinstance(raw, list):
        raise ScriptError("steps must be a list")
    steps: list[Step] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not item:
            raise ScriptError(f"step {i}: must be an object such as {{'say': 'hello'}}")
        try:
            steps.extend(_parse_step(item))
        except ScriptError as exc:
            raise ScriptError(f"step {i}: {exc}") from None
    return tuple(steps)


def _parse_step(item: dict) -> list[Step]:
    keys = set(item)
    if "say" in keys:
        _only(keys, {"say"})
        return [Step("say", text=_text(item["say"], "say"))]
    if "pause_ms" in keys or "pause" in keys:
        key = "pause_ms" if "pause_ms" in keys else "pause"
        _only(keys, {key})
        return [Step("pause", ms=_int(item, key, 0))]
    if "dtmf" in keys:
        _only(keys, {"dtmf", "interval_ms", "duration_ms"})
        digits = item["dtmf"]
        if not isinstance(digits, str) or not digits or set(digits.upper()) - _DTMF:
            raise ScriptError(f"dtmf must be digits 0-9 A-D * #, got {digits!r}")
        return [Step("dtmf", digits=digits.upper(), interval_ms=_int(item, "interval_ms", 350, 40),
                     duration_ms=_int(item, "duration_ms", 100, 10, 5000))]
    if "wait_agent_done" in keys:
        _only(keys, {"wait_agent_done"})
        o = _opts(item["wait_agent_done"], "wait_agent_done")
        _only(set(o), {"silence_ms", "timeout_ms"})
        return [Step("wait_agent_done", silence_ms=_int(o, "silence_ms", 800, 1),
                     timeout_ms=_int(o, "timeout_ms", DEFAULT_TIMEOUT_MS, 1))]
    if "wait_agent_start" in keys:
        _only(keys, {"wait_agent_start"})
        o = _opts(item["wait_agent_start"], "wait_agent_start")
        _only(set(o), {"after_ms", "timeout_ms"})
        return [Step("wait_agent_start", after_ms=_int(o, "after_ms", 0),
                     timeout_ms=_int(o, "timeout_ms", DEFAULT_TIMEOUT_MS, 1))]
    if "after_agent" in keys:
        _only(keys, {"after_agent", "silence_ms", "timeout_ms"})
        return [Step("wait_agent_done", silence_ms=_int(item, "silence_ms", 800, 1),
                     timeout_ms=_int(item, "timeout_ms", DEFAULT_TIMEOUT_MS, 1)),
                Step("say", text=_text(item["after_agent"], "after_agent"))]
    if "barge_in" in keys:
        _only(keys, {"barge_in", "after_ms", "timeout_ms"})
        return [Step("wait_agent_start", after_ms=_int(item, "after_ms", 500),
                     timeout_ms=_int(item, "timeout_ms", DEFAULT_TIMEOUT_MS, 1)),
                Step("say", text=_text(item["barge_in"], "barge_in"))]
    if "sound" in keys:
        _only(keys, {"sound"})
        return [Step("sound", text=_text(item["sound"], "sound"))]
    if "tone" in keys:
        _only(keys, {"tone", "ms"})
        hz = item["tone"]
        if isinstance(hz, bool) or not isinstance(hz, (int, float)) or not 20 <= hz <= 3900:
            raise ScriptError(f"tone must be a frequency in Hz (20..3900), got {hz!r}")
        return [Step("tone", hz=float(hz), ms=_int(item, "ms", 0))]
    if "wait_hangup" in keys:
        _only(keys, {"wait_hangup"})
        o = _opts(item["wait_hangup"], "wait_hangup")
        _only(set(o), {"timeout_ms"})
        return [Step("wait_hangup", timeout_ms=_int(o, "timeout_ms", DEFAULT_TIMEOUT_MS, 1))]
    if "echo" in keys:
        _only(keys, {"echo"})
        value = item["echo"]
        if value is True or value is None:
            return [Step("echo")]
        if isinstance(value, dict):
            _only(set(value), {"ms"})
            return [Step("echo", ms=_int(value, "ms", 0, 1) if "ms" in value else 0)]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [Step("echo", ms=_int({"ms": value}, "ms", 0, 1))]
        raise ScriptError(f"echo takes true, a number of ms or {{'ms': N}}, got {value!r}")
    if "hangup" in keys:
        _only(keys, {"hangup"})
        return [Step("hangup")]
    raise ScriptError(f"unknown step {sorted(keys)}; steps are {', '.join(STEP_KINDS)}, "
                     "after_agent, barge_in")


def _only(keys: set, allowed: set) -> None:
    extra = keys - allowed
    if extra:
        raise ScriptError(f"unexpected key(s) {sorted(extra)}")


_SCRIPT_KEYS = {"steps", "caller", "endpoint", "exten", "context", "args", "variables", "answer",
                "end", "max_duration_ms"}


def parse_script(obj: Any) -> Script:
    """A Script from its JSON-able form; ScriptError (a ValueError) saying what is wrong."""
    if isinstance(obj, Script):
        return obj
    if isinstance(obj, list):
        obj = {"steps": obj}
    if not isinstance(obj, dict):
        raise ScriptError("a script is an object with 'steps' (or a list of steps)")
    _only(set(obj), _SCRIPT_KEYS)
    caller = obj.get("caller") or {}
    if not isinstance(caller, dict):
        raise ScriptError("caller must be an object {name, number}")
    args = obj.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ScriptError("args must be a list of strings")
    variables = obj.get("variables") or {}
    if not isinstance(variables, dict):
        raise ScriptError("variables must be an object")
    end = obj.get("end", "hangup")
    if end not in ("hangup", "wait"):
        raise ScriptError("end must be 'hangup' or 'wait'")
    for key in ("endpoint", "exten", "context"):
        if key in obj and (not isinstance(obj[key], str) or not obj[key]):
            raise ScriptError(f"{key} must be a non-empty string")
    return Script(
        steps=parse_steps(obj.get("steps", [])),
        caller_name=str(caller.get("name", "")),
        caller_number=str(caller.get("number", "")),
        endpoint=obj.get("endpoint", "caller"),
        exten=obj.get("exten", "s"),
        context=obj.get("context", "from-external"),
        args=tuple(args),
        variables={str(k): str(v) for k, v in variables.items()},
        answer=bool(obj.get("answer", True)),
        end=end,
        max_duration_ms=_int(obj, "max_duration_ms", 600000, 1, 86_400_000),
    )


def default_audio(step: Step) -> tuple[bytes, bool]:
    """(u-law audio, loops) a say/sound/tone step produces."""
    from relay.sim.pbx.sounds import prompt_ulaw, tone_ulaw

    if step.kind == "say":
        return utterance_ulaw(step.text), False
    if step.kind == "sound":
        return prompt_ulaw(step.text), False
    if step.kind == "tone":
        return tone_ulaw(round(step.hz)), True
    raise ScriptError(f"step {step.kind} makes no audio")


# Actions CallerRun asks for (tuples, first item the verb):
#   ("say", audio: bytes, loop: bool)   start saying this audio now (replaces what was said)
#   ("silence",)                        stop saying anything
#   ("dtmf", digit: str, duration_ms)   press a key
#   ("hangup", reason: str)             hang up
#   ("dialplan", app: str, data: str)   the dialplan application this step is (noise, Local ;2)
#   ("varset", name: str, value: str)   a variable the dialplan sets (noise, Local ;2)
#   ("echo", on: bool)                  Echo() starts / ends on the caller's channel
Action = tuple


class CallerRun:
    """One caller playing one script: `start(now)`, then `poll(now)` until `done`."""

    def __init__(self, script: Script,
                 audio_for: Callable[[Step], tuple[bytes, bool]] = default_audio,
                 agent: AgentActivity | None = None) -> None:
        self.script = script
        self.audio_for = audio_for
        self.agent = agent or AgentActivity()
        self.index = -1
        self.started_at: float | None = None
        self.step_started = 0.0
        self.step_end: float | None = None     # fixed end of a timed step
        self.dtmf_next = 0
        self.dtmf_at = 0.0
        self.done = False
        self.end_reason = ""
        self.hangup_deadline = 0.0
        self.log: list[dict] = []

    @property
    def step(self) -> Step | None:
        steps = self.script.steps
        return steps[self.index] if 0 <= self.index < len(steps) else None

    def start(self, now: float) -> list[Action]:
        self.started_at = now
        self.hangup_deadline = now + self.script.max_duration_ms / 1000.0
        return self._advance(now)

    def hung_up(self, now: float, reason: str = "hung up by the app") -> None:
        """The call ended from the other side."""
        if not self.done:
            self._close_step(now, interrupted=True)
            self.done = True
            self.end_reason = reason

    def poll(self, now: float) -> list[Action]:
        if self.done or self.started_at is None:
            return []
        if now >= self.hangup_deadline:
            return self._finish(now, "max_duration", interrupted=True)
        step = self.step
        if step is None:    # end == "wait": nothing left but to wait
            return []
        kind = step.kind
        if kind in TIMED_KINDS:
            if self.step_end is not None and now >= self.step_end:
                return self._advance(now)
            return []
        if kind == "dtmf":
            out: list[Action] = []
            while self.dtmf_next < len(step.digits) and now >= self.dtmf_at:
                out.append(("dtmf", step.digits[self.dtmf_next], step.duration_ms))
                self.dtmf_next += 1
                self.dtmf_at += step.interval_ms / 1000.0
            if self.dtmf_next >= len(step.digits) and now >= self.dtmf_at:
                out.extend(self._advance(now))
            return out
        if kind == "wait_agent_done":
            last = self.agent.last_voice_at
            if last is not None and last >= self.step_started and \
                    now >= last + step.silence_ms / 1000.0:     # the same sum as next_deadline
                return self._advance(now)
            return self._advance(now, timed_out=True) if self._timed_out(now, step) else []
        if kind == "wait_agent_start":
            onset = self._onset(now)
            if onset is not None and now >= onset + step.after_ms / 1000.0:
                return self._advance(now)
            return self._advance(now, timed_out=True) if self._timed_out(now, step) else []
        if kind == "wait_hangup":
            return self._advance(now, timed_out=True) if self._timed_out(now, step) else []
        return []

    def next_deadline(self) -> float | None:
        """When poll() next has something to do (agent onsets also wake it, via on_onset)."""
        if self.done or self.started_at is None:
            return None
        step = self.step
        deadline = self.hangup_deadline
        if step is None:
            return deadline
        kind = step.kind
        timeout = self.step_started + step.timeout_ms / 1000.0
        if kind in TIMED_KINDS:
            if self.step_end is not None:
                deadline = min(deadline, self.step_end)
        elif kind == "dtmf":
            deadline = min(deadline, self.dtmf_at)
        elif kind == "wait_agent_done":
            deadline = min(deadline, timeout)
            last = self.agent.last_voice_at
            # Also when the agent was already talking as the step began: only onsets wake a
            # caller, so a talkspurt in progress must be polled until it ends.
            if last is not None and last >= self.step_started - AGENT_HANGOVER_S:
                deadline = min(deadline, last + step.silence_ms / 1000.0)
        elif kind == "wait_agent_start":
            deadline = min(deadline, timeout)
            onset = self._onset(None)
            if onset is not None:
                deadline = min(deadline, onset + step.after_ms / 1000.0)
        elif kind == "wait_hangup":
            deadline = min(deadline, timeout)
        return deadline

    def progress(self) -> dict:
        step = self.step
        return {"step": self.index, "steps": len(self.script.steps),
                "current": step.describe() if step else None, "done": self.done,
                "end_reason": self.end_reason, "log": list(self.log)}

    # ------------------------------------------------------------------ internals
    def _onset(self, now: float | None) -> float | None:
        since = self.agent.speaking_since
        if since is None:
            return None
        if since >= self.step_started:
            return since
        # The agent was already talking when the step began: that talkspurt counts.
        last = self.agent.last_voice_at
        if last is not None and last >= self.step_started - AGENT_HANGOVER_S:
            return since
        return None

    def _timed_out(self, now: float, step: Step) -> bool:
        return now >= self.step_started + step.timeout_ms / 1000.0

    def _rel(self, t: float) -> float:
        return round(t - (self.started_at or t), 4)

    def _close_step(self, now: float, timed_out: bool = False, interrupted: bool = False) -> None:
        if self.log and "ended_s" not in self.log[-1]:
            entry = self.log[-1]
            entry["ended_s"] = self._rel(now)
            if timed_out:
                entry["timed_out"] = True
            if interrupted:
                entry["interrupted"] = True

    def _finish(self, now: float, reason: str, interrupted: bool = False) -> list[Action]:
        self._close_step(now, interrupted=interrupted)
        self.done = True
        self.end_reason = reason
        return [("silence",), ("hangup", reason)]

    def _advance(self, now: float, timed_out: bool = False) -> list[Action]:
        out: list[Action] = []
        prev = self.step
        self._close_step(now, timed_out=timed_out)
        if prev is not None and prev.kind in ("say", "sound"):
            out.append(("varset", "PLAYBACKSTATUS", "SUCCESS"))    # its audio ran out by itself
        elif prev is not None and prev.kind == "tone" and prev.ms:
            out.append(("silence",))
        elif prev is not None and prev.kind == "echo":
            out.append(("echo", False))
        self.index += 1
        step = self.step
        self.step_started = now
        self.step_end = None
        if step is None:
            if self.script.end == "hangup":
                out.extend(self._finish(now, "script ended"))
            return out
        entry: dict[str, Any] = dict(step.describe(), index=self.index,
                                     started_s=self._rel(now))
        self.log.append(entry)
        kind = step.kind
        if kind in ("say", "sound", "tone"):
            audio, loop = self.audio_for(step)
            out.append(("dialplan", *_dialplan_app(step)))
            out.append(("say", audio, loop))
            if kind == "tone":
                if not step.ms:          # PlayTones: in the background, the script goes on
                    out.extend(self._advance(now))
                    return out
                self.step_end = now + step.ms / 1000.0
            else:
                # Whole frames, plus one: the last (maybe short) frame leaves whatever the
                # pacer's phase before the next step can replace this audio.
                self.step_end = now + (-(-len(audio) // FRAME_BYTES) + 1) * FRAME_S
            return out
        out.append(("dialplan", *_dialplan_app(step)))
        if kind == "pause":
            self.step_end = now + step.ms / 1000.0
            if step.ms == 0:
                out.extend(self._advance(now))
        elif kind == "dtmf":
            self.dtmf_next = 0
            self.dtmf_at = now
            out.extend(self.poll(now))
        elif kind == "echo":
            out.append(("silence",))
            out.append(("echo", True))
            if step.ms:                  # else: until the call ends, as Echo() does
                self.step_end = now + step.ms / 1000.0
        elif kind == "hangup":
            out.extend(self._finish(now, "script hangup"))
        elif kind in ("wait_agent_done", "wait_agent_start"):
            out.extend(self.poll(now))
        return out


def _dialplan_app(step: Step) -> tuple[str, str]:
    """The dialplan application a step stands for, as a Local ;2 half reports it."""
    kind = step.kind
    if kind == "say":
        return "Playback", step.text
    if kind == "sound":
        return "Playback", step.text
    if kind == "tone":
        return "PlayTones", f"{step.hz:g}"
    if kind == "pause":
        return "Wait", f"{step.ms / 1000:g}"
    if kind == "dtmf":
        return "SendDTMF", step.digits
    if kind == "wait_agent_done":
        return "WaitForSilence", f"{step.silence_ms},1,{step.timeout_ms / 1000:g}"
    if kind == "wait_agent_start":
        return "WaitForNoise", f"{max(step.after_ms, 1)},1,{step.timeout_ms / 1000:g}"
    if kind == "wait_hangup":
        return "Wait", f"{step.timeout_ms / 1000:g}"
    if kind == "echo":
        return "Echo", ""
    return "Hangup", ""
