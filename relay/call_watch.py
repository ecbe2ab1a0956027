"""The watchdog of one live call, wired to it: what the call does when the model does not answer.

Owns, for one Call: its `Watchdog` (relay/watchdog.py) fed from the call's model events (a
caller's turn ended, a response asked for, audio started, the caller speaking, the session
ready, its socket lost), polled by the call's housekeeping; the actions it takes — asking the
model again, playing the agent's hold sound and apology through the call's own playout queue
(like a greeting sound: relay plays them itself, the model being the one that is silent), and
ending the call the way the agent's `watchdog.ending` says once the apology has been heard —
the give-up of a session that cannot be recovered (rt_failed) through the same path; the
`call.setup_timeout_s` bound on the model's first readiness; and the call's count of events of an
unexpected shape. Everything is counted in the worker's counters (relay_watchdog_total,
relay_model_bad_events_total) and written to the transcript.

The Call keeps one-line hooks into it; nothing here blocks (sounds are read once, cached).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

from relay.redact import PROCESS
from relay.sounds import SoundError, load_sound
from relay.watchdog import (
    DEFAULT_APOLOGY_SOUND,
    DEFAULT_HOLD_SOUND,
    GIVEUP,
    HOLD,
    RETRY,
    Watchdog,
    WatchdogConfig,
)

if TYPE_CHECKING:
    from relay.call import Call

log = logging.getLogger(__name__)

SOUND_ITEM = "relay-watchdog"       # playout items: relay-watchdog-hold-1, ...-apology-2


class CallWatch:
    """One call's watchdog and model health (see the module docstring)."""

    def __init__(self, call: "Call") -> None:
        self.call = call
        self.config: WatchdogConfig = getattr(call.agent, "watchdog", None) or WatchdogConfig()
        self.dog = Watchdog(self.config)
        self.setup_timeout_s: float = call.settings.tree["call"]["setup_timeout_s"]
        self.started = False
        self.giving_up = ""             # why the call is being given up (apology, then end)
        self._pending = ""              # a give-up asked for before the call was active
        self._sounds = 0
        self.bad_events = 0
        self.sockets_lost = 0

    # the call's model events
    def turn_ended(self, why: str) -> None:
        self.dog.expect(time.monotonic(), why)

    def response_requested(self) -> None:
        self.dog.expect(time.monotonic(), "a response was asked for")

    def audio_started(self) -> None:
        if self.dog.satisfied("audio"):
            self._note("model audio started")

    def response_done(self, response: dict) -> None:
        """A response that called tools is the model's answer for now: the wait starts again
        when their outputs are sent and the next response is asked for (a slow tool is not a
        stalled model)."""
        output = response.get("output")
        if isinstance(output, list) and any(isinstance(item, dict) and
                                            item.get("type") == "function_call"
                                            for item in output):
            self.dog.satisfied("audio")

    def caller_speaking(self) -> None:
        self.dog.cancel()

    def ready(self) -> None:
        self.dog.satisfied("ready")

    def socket_lost(self, reason: str) -> None:
        self.sockets_lost += 1
        self.dog.expect(time.monotonic(), f"model socket lost ({reason})", until="ready")

    def bad_event(self, kind: str, problem: str) -> None:
        self.bad_events += 1
        count = getattr(self.call.worker, "count_model_bad_event", None)
        if count is not None:
            count()
        if self.bad_events == 1:
            self.call.transcript.add("event", f"model sent an event of an unexpected shape "
                                     f"({kind}: {problem[:120]}); ignored, later ones counted",
                                     level="warning")

    def failed(self, reason: str) -> None:
        """The session cannot be recovered: apology, then the ending (once active)."""
        self.give_up(reason)

    # the call's housekeeping (pacer tick, a few times a second)
    def tick(self, now: float) -> None:
        call = self.call
        session = call.session
        if session is not None:
            session.poll(now)
        if self._pending:
            reason, self._pending = self._pending, ""
            self.give_up(reason)
            return
        if self.giving_up:
            return
        if not self.started:
            self.started = True
            self._watch_the_start(now)
        if session is not None and not session.has_been_ready and \
                now - call.started_mono >= self.setup_timeout_s:
            self.give_up(f"model unresponsive: no session within {self.setup_timeout_s:g} s "
                         "(call.setup_timeout_s)")
            return
        action = self.dog.poll(now)
        if action == RETRY:
            self._retry()
        elif action == HOLD:
            self._hold()
        elif action == GIVEUP:
            self.give_up(f"model unresponsive: no answer {self._waited(now)} after "
                         f"{self.dog.reason}")

    def _watch_the_start(self, now: float) -> None:
        """The call is live: a greeting agent's caller waits for its voice, any caller for the
        model to be ready."""
        call, session = self.call, self.call.session
        greets = bool(call.agent.greeting_instructions or
                      call.settings.tree["agent"]["initial_user_prompt"])
        if session is not None and session.model_has_spoken:
            return
        if greets:
            self.dog.expect(now, "the call began (the agent speaks first)")
        elif session is None or not session.ready:
            self.dog.expect(now, "the call began", until="ready")

    # actions
    def _retry(self) -> None:
        call = self.call
        self._count("retry")
        self._note(f"no model audio {self.config.timeout_s:g} s after {self.dog.reason}: "
                   "asking again", level="warning")
        session = call.session
        if session is not None and session.ready:
            session.retry_response()

    def _hold(self) -> None:
        self._count("hold")
        self._note(f"still no model audio: playing the hold sound (waiting since "
                   f"{self.dog.reason})", level="warning")
        self._play(self.config.hold_sound, DEFAULT_HOLD_SOUND, "hold")

    def give_up(self, reason: str) -> None:
        """Apology, then the agent's ending, once it has been heard (at once when the call has
        no audio path yet or any more)."""
        call = self.call
        if self.giving_up or call.state in ("ending", "ended"):
            return
        if call.state == "setup":
            self._pending = reason      # the first tick of the live call plays the apology
            return
        self.dog.give_up()
        self.giving_up = reason
        self._count("giveup")
        handoff = self._handoff()
        log.warning("call %s: giving up on the model: %s; apology, then %s", call.id, reason,
                    self.config.describe_ending())
        self._note(f"giving up: {reason}; apology, then {self.config.describe_ending()}",
                   level="error")
        if call.session is not None:
            call.session.close()        # no more sockets, no more model audio
        # after what is queued (the hold sound, or what the model had said before it failed)
        self._play(self.config.apology_sound, DEFAULT_APOLOGY_SOUND, "apology")
        call.end_after_playout(reason, "", handoff)

    def _handoff(self) -> Optional[tuple]:
        ending, call = self.config.ending, self.call
        ari = call.worker.ari
        if not ending:
            return None
        if ending == "hangup":
            return (ari.hangup, call.id)
        if ending == "continue":
            return (ari.continue_in_dialplan, call.id)
        if isinstance(ending, dict) and ending.get("endpoint"):
            return (ari.redirect, call.id, ending["endpoint"])
        assert isinstance(ending, dict)
        return (ari.continue_in_dialplan, call.id, ending["context"], ending["extension"],
                ending.get("priority", 1))

    def _play(self, path: str, default: str, kind: str) -> None:
        call = self.call
        try:
            sound = load_sound(path, call.media.line_format)
        except SoundError as exc:
            log.warning("call %s: watchdog %s sound: %s; using the built-in one", call.id,
                        kind, exc)
            sound = load_sound(default, call.media.line_format)
        self._sounds += 1
        item = f"{SOUND_ITEM}-{kind}-{self._sounds}"
        call.media.playout.add(item, sound)
        call.media.playout.finish(item)

    def _count(self, action: str) -> None:
        count = getattr(self.call.worker, "count_watchdog", None)
        if count is not None:
            count(action)

    def _note(self, text: str, level: str = "info") -> None:
        self.call.transcript.add("event", f"watchdog: {text}", level=level)

    def _waited(self, now: float) -> str:
        since = self.dog.since
        return "" if since is None else f"for {now - since:.1f} s"

    def view(self) -> dict:
        """The call summary's `watchdog` (the dashboard shows it)."""
        view = self.dog.view()
        view["reason"] = PROCESS.scrub(view["reason"])     # may quote a socket's close reason
        view["giving_up"] = PROCESS.scrub(self.giving_up)
        return view
