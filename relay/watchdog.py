"""The call's watchdog: a caller waiting for the agent is never left in silence.

Owns: an agent's `watchdog` settings (`WatchdogConfig`: limits, its two sounds, how the call
ends when the model gives no answer; parsed and validated from the agent file), the built-in
sounds shipped with relay (relay/data/hold.wav, apology.wav), and `Watchdog`, the sans-IO state
machine a call drives with the time passed in:

    expect(now, why)      the caller is waiting for the agent's voice (their turn ended, the call
                          began with a greeting, a tool's output was sent, a response was asked
                          for again after a socket was replaced), or, with until="ready", for the
                          model session to be usable (the call began, a socket was lost)
    satisfied(what)       the model's audio started ("audio") or its session is ready ("ready")
    cancel()              the caller speaks again: their next turn starts a new wait
    poll(now) -> action   what to do now, at most one step at a time:
                          "retry"  (timeout_s without audio: ask for the response again, once),
                          "hold"   (hold_s more: play the hold sound, "one moment please"),
                          "giveup" (give_up_s more: play the apology, then end the call as the
                                    agent says: hang up, continue in the dialplan, transfer)
    give_up()             the model session cannot be recovered (rt_failed): straight to the end

Performing the actions (response.create, the sounds, ending the call) is the Call's job; this
module does no I/O and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_HOLD_SOUND = str(DATA_DIR / "hold.wav")          # "One moment, please."
DEFAULT_APOLOGY_SOUND = str(DATA_DIR / "apology.wav")    # "I'm sorry, we are having a ..."

ENDINGS = ("hangup", "continue")     # "" (the default): the call's usual end
KEYS = ("enabled", "timeout_s", "hold_s", "give_up_s", "hold_sound", "apology_sound", "ending")

IDLE, WAITING, RETRIED, HOLDING, GAVE_UP = "idle", "waiting", "retried", "holding", "gave_up"
RETRY, HOLD, GIVEUP = "retry", "hold", "giveup"


@dataclass(frozen=True)
class WatchdogConfig:
    """An agent's `watchdog` block (see README, "Agents"). `ending` is "" (the call's usual
    end: hung up, or continued in the dialplan when call.continue_in_dialplan says so),
    "hangup", "continue" (in the dialplan, where it goes next), or a target like
    transfer_call's: {"endpoint": "PJSIP/operator"} (ARI redirect) or {"context", "extension",
    "priority"} (ARI continue)."""

    enabled: bool = True
    timeout_s: float = 4.0
    hold_s: float = 1.5
    give_up_s: float = 10.0
    hold_sound: str = DEFAULT_HOLD_SOUND
    apology_sound: str = DEFAULT_APOLOGY_SOUND
    ending: Union[str, dict] = field(default="", compare=False)

    def describe_ending(self) -> str:
        ending = self.ending
        if not ending:
            return "the usual end"
        if isinstance(ending, str):
            return {"hangup": "hang up", "continue": "continue in the dialplan"}[ending]
        if ending.get("endpoint"):
            return f"transfer to {ending['endpoint']}"
        return (f"continue at {ending['context']},{ending['extension']},"
                f"{ending.get('priority', 1)}")


def parse_watchdog(data: Any, base_dir: Path) -> WatchdogConfig:
    """The agent file's `watchdog` object (absent: the defaults); ValueError says what is wrong.
    Sound paths are relative to the agent file's folder."""
    if data is None:
        return WatchdogConfig()
    if not isinstance(data, dict):
        raise ValueError("'watchdog' must be an object")
    unknown = set(data) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) in 'watchdog': {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(KEYS)})")
    values: dict[str, Any] = {}
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ValueError("'watchdog.enabled' must be true or false")
        values["enabled"] = data["enabled"]
    for key, low, high in (("timeout_s", 0.5, 60.0), ("hold_s", 0.0, 60.0),
                           ("give_up_s", 0.5, 600.0)):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    low <= value <= high):
                raise ValueError(f"'watchdog.{key}' must be a number of seconds within "
                                 f"{low:g}..{high:g}, got {value!r}")
            values[key] = float(value)
    for key in ("hold_sound", "apology_sound"):
        if key in data:
            sound = data[key]
            if not isinstance(sound, str) or not sound:
                raise ValueError(f"'watchdog.{key}' must be the path of a WAV file")
            path = Path(sound) if Path(sound).is_absolute() else base_dir / sound
            if not path.is_file():
                raise ValueError(f"'watchdog.{key}' {sound!r}: no such file ({path})")
            values[key] = str(path)
    if "ending" in data:
        values["ending"] = _ending(data["ending"])
    return WatchdogConfig(**values)


def _ending(ending: Any) -> Union[str, dict]:
    if isinstance(ending, str):
        if ending not in ENDINGS:
            raise ValueError(f"'watchdog.ending' must be one of {', '.join(ENDINGS)}, or a "
                             "target {endpoint} / {context, extension, priority}")
        return ending
    if not isinstance(ending, dict):
        raise ValueError("'watchdog.ending' must be \"hangup\", \"continue\" or a target object")
    unknown = set(ending) - {"endpoint", "context", "extension", "priority"}
    if unknown:
        raise ValueError(f"unknown key(s) in 'watchdog.ending': {', '.join(sorted(unknown))}")
    if "endpoint" in ending:
        endpoint = ending["endpoint"]
        if set(ending) != {"endpoint"}:
            raise ValueError("'watchdog.ending': give either an endpoint or a dialplan location")
        if not isinstance(endpoint, str) or "/" not in endpoint.strip("/"):
            raise ValueError("'watchdog.ending.endpoint' must be TECH/RESOURCE, e.g. PJSIP/desk")
        return {"endpoint": endpoint}
    for key in ("context", "extension"):
        if not isinstance(ending.get(key), str) or not ending[key]:
            raise ValueError(f"'watchdog.ending' needs '{key}' (a non-empty string), or an "
                             "'endpoint'")
    priority = ending.get("priority", 1)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
        raise ValueError("'watchdog.ending.priority' must be a positive integer")
    return {"context": ending["context"], "extension": ending["extension"],
            "priority": priority}


class Watchdog:
    """The state machine of one call's watchdog (see the module docstring)."""

    def __init__(self, config: WatchdogConfig) -> None:
        self.config = config
        self.state = IDLE
        self.until = "audio"          # what ends the wait: "audio" or "ready"
        self.reason = ""              # why the caller is waiting
        self.since: Optional[float] = None    # when the wait began
        self._step_at = 0.0           # when the current step (wait, retry, hold) began
        self.retries = 0
        self.holds = 0
        self.gave_up = False

    @property
    def waiting(self) -> bool:
        return self.state in (WAITING, RETRIED, HOLDING)

    def expect(self, now: float, reason: str, until: str = "audio") -> None:
        """The caller waits for the agent's voice (until="audio") or for the model session to
        be usable (until="ready"). A wait under way keeps its start; "audio" is the stronger
        condition and replaces "ready"."""
        if not self.config.enabled or self.gave_up:
            return
        if self.state == IDLE:
            self.state, self.until, self.reason = WAITING, until, reason
            self.since = self._step_at = now
        elif until == "audio" and self.until == "ready":
            self.until, self.reason = "audio", reason

    def satisfied(self, what: str = "audio") -> bool:
        """The model's audio started (what="audio": ends any wait) or its session is ready
        ("ready": ends a wait for readiness only). True when a wait ended."""
        if not self.waiting or (what == "ready" and self.until != "ready"):
            return False
        self._reset()
        return True

    def cancel(self) -> None:
        """The caller speaks again: the wait ends (their next turn starts a new one)."""
        if self.waiting:
            self._reset()

    def give_up(self) -> bool:
        """Go to the end now (the model cannot be reached). False when already given up."""
        if self.gave_up:
            return False
        self.state, self.gave_up = GAVE_UP, True
        return True

    def poll(self, now: float) -> Optional[str]:
        """The action due now, if any (one step per call)."""
        config = self.config
        if self.state == WAITING and now - self._step_at >= config.timeout_s:
            self._step_at = now
            if self.until == "ready":       # nothing to ask for again: the session is retrying
                self.state = HOLDING
                self.holds += 1
                return HOLD
            self.state = RETRIED
            self.retries += 1
            return RETRY
        if self.state == RETRIED and now - self._step_at >= config.hold_s:
            self.state, self._step_at = HOLDING, now
            self.holds += 1
            return HOLD
        if self.state == HOLDING and now - self._step_at >= config.give_up_s:
            self.state, self.gave_up = GAVE_UP, True
            return GIVEUP
        return None

    def next_deadline(self) -> Optional[float]:
        """When poll() will next act (None: nothing pending)."""
        config = self.config
        step = {WAITING: config.timeout_s, RETRIED: config.hold_s,
                HOLDING: config.give_up_s}.get(self.state)
        return None if step is None else self._step_at + step

    def view(self) -> dict:
        """For the call's summary (dashboard)."""
        return {"state": self.state, "waiting_for": self.until if self.waiting else None,
                "reason": self.reason if self.waiting else "", "retries": self.retries,
                "holds": self.holds, "gave_up": self.gave_up}

    def _reset(self) -> None:
        self.state, self.reason, self.since = IDLE, "", None
