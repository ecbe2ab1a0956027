"""One call's fallback transcription: which caller turns go to the provider, and their text.

Owns, for one call: its TurnBuffer (fed with the audio handed to the model), the tie-up of the
model's turn events (speech_started/stopped, committed, transcription completed/failed) with
the turns' audio, sending a turn to the worker's FallbackTranscriber when the model's
transcription failed or has not arrived `fallback_after_s` after the commit, and putting the
result into the call's transcript as kind "caller" with source "fallback", the provider and the
latency.

Duplicates: the first text of a turn wins. A fallback answer for a turn whose model transcript
arrived meanwhile is discarded (counted); a model transcript arriving after the fallback's text
entered the transcript is not added as a second caller turn: an "event" entry records it (with
`model_text`). Failures are counted by the service and logged once per call (rate-limited
worker-wide), and leave the transcript as it was. Nothing here makes a live call wait: the
requests run in the call's own greenlets (`spawn`), killed when the call ends.

The end of the call (`finish`, once the model session is closed and the telephony released):
every turn still without text — committed, stopped, still being spoken, or whose request the
end of the call cut off — goes to the provider at once, marked `at_call_end` (and `unfinished`
when the caller was still speaking), and `finish` waits for the answers for at most
`end_of_call_wait_s` (0: nothing is sent) and no later than the deadline its caller gives (a
stopping worker's). What has not answered by then is cut short, counted and logged as a
failure; no greenlet is left behind.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from typing import Any, Callable

import gevent

from relay.stt.providers import SttError
from relay.stt.service import FallbackTranscriber, SttBusy
from relay.stt.turns import Turn, TurnBuffer

log = logging.getLogger(__name__)

REMEMBERED_ITEMS = 256
FINISH_POLL_S = 0.05        # finish(): how often it looks at its deadline again
KILL_WAIT_S = 1.0           # how long killed greenlets get to run their handlers
CALL_ENDED = "call_ended"   # the reason of a turn sent because the call ended before its text
# what happened to an item's transcription
MODEL, ASKED, FALLBACK, EMPTY, FAILED = "model", "asked", "fallback", "empty", "failed"


class CallFallback:
    """The fallback transcription of one call's caller turns (see the module docstring)."""

    def __init__(self, service: FallbackTranscriber, *, call_id: str, line_format: str,
                 transcript: Any, spawn: Callable[..., Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.call_id = call_id
        self.line_format = line_format
        self.transcript = transcript
        self._spawn = spawn
        self._clock = clock
        self.turns = TurnBuffer(service.max_turn_s, service.max_pending_turns)
        self._connections = 0
        self._items: OrderedDict[str, str] = OrderedDict()
        self._logged = False
        self._greenlets: set[gevent.Greenlet] = set()   # deadlines waiting, requests in flight
        self._cut_off: list[tuple[Turn, str]] = []       # requests the call's end interrupted
        self._finished = False
        # statistics
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.discarded = 0          # answers that came after the model's own transcript
        self.late_model = 0         # model transcripts that came after the fallback's text
        self.at_call_end = 0        # of which sent when the call ended

    # the caller's audio (packet path: once per input_audio_buffer.append)
    def on_input(self, audio: bytes, connections: int) -> None:
        """Audio handed to the model; `connections` counts the model sockets so far (a new one
        restarts the model's audio time)."""
        if connections != self._connections:
            self._connections = connections
            self.turns.set_origin()
        self.turns.feed(audio)

    # the model's turn events
    def speech_started(self, item_id: str, audio_start_ms: int) -> None:
        dropped = self.turns.started(item_id, audio_start_ms)
        if dropped is not None:
            log.debug("call %s: turn %s dropped unsent (more than %d waiting)", self.call_id,
                      dropped.item_id, self.turns.max_pending)

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None:
        self.turns.stopped(item_id, audio_end_ms)

    def committed(self, item_id: str) -> None:
        turn = self.turns.committed(item_id)
        if turn is not None and self.service.fallback_after_s > 0:
            self._start(self._after_deadline, item_id)

    def model_transcript(self, item_id: str, text: str) -> bool:
        """The model's transcription arrived: True when it goes into the transcript as usual,
        False when the fallback's text for this turn is already there (recorded as an event)."""
        self.turns.discard(item_id)
        if self._items.get(item_id) == FALLBACK:
            self.late_model += 1
            self.transcript.add("event", "model transcription arrived after the fallback's",
                                item_id=item_id, model_text=text)
            return False
        self._remember(item_id, MODEL)
        return True

    def model_failed(self, item_id: str) -> None:
        if item_id in self.turns.pending:
            self._start(self._transcribe_waiting, item_id, "failed")

    # the end of the call
    def finish(self, deadline: Callable[[], float] = lambda: math.inf) -> None:
        """The call has ended and its model session is closed: send every turn still without
        text, wait for the answers for at most the service's end_of_call_wait_s and no later
        than deadline() (a monotonic time, read again while waiting), cut the rest short.
        Idempotent; never raises; leaves none of its greenlets alive."""
        if self._finished:
            return
        self._finished = True
        _kill(list(self._greenlets))        # their requests cut off go to self._cut_off
        left = self._cut_off + [(turn, CALL_ENDED) for turn in self.turns.take_all()]
        self._cut_off = []
        due = self._clock() + self.service.end_of_call_wait_s

        def until() -> float:
            return min(due, deadline())

        if not left or until() <= self._clock():
            if left:
                log.debug("call %s: %d turn(s) left untranscribed at the end of the call",
                          self.call_id, len(left))
            return
        requests = [self._start(self._transcribe, turn, reason, True) for turn, reason in left]
        try:
            running = requests
            while running and until() > self._clock():
                gevent.joinall(running, timeout=min(until() - self._clock(), FINISH_POLL_S))
                running = [greenlet for greenlet in running if not greenlet.dead]
        finally:
            _kill(requests)                 # counted and logged as failures by _transcribe

    # sending
    def _start(self, fn, *args) -> gevent.Greenlet:
        greenlet = self._spawn(fn, *args)
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)
        return greenlet

    def _after_deadline(self, item_id: str) -> None:
        gevent.sleep(self.service.fallback_after_s)
        self._transcribe_waiting(item_id, "missing")

    def _transcribe_waiting(self, item_id: str, reason: str) -> None:
        turn = self.turns.take(item_id)
        if turn is not None:
            self._transcribe(turn, reason)

    def _transcribe(self, turn: Turn, reason: str, at_call_end: bool = False) -> None:
        """Runs in a call greenlet: ask the provider, put the answer into the transcript."""
        item_id = turn.item_id
        if not turn.audio or self._items.get(item_id) == MODEL:
            return
        self._remember(item_id, ASKED)
        self.sent += 1
        if at_call_end:
            self.at_call_end += 1
        started = self._clock()
        try:
            text = self.service.transcribe(bytes(turn.audio), self.line_format)
        except gevent.GreenletExit:
            if at_call_end:     # finish() gave up waiting
                self._failed(item_id, SttError("no answer before the ended call's transcript "
                                               "was closed (stt.end_of_call_wait_s)"))
            else:               # the call is ending: finish() sends it again
                self._cut_off.append((turn, reason))
            raise
        except Exception as exc:    # SttError, and anything unexpected: never ends the call
            self._failed(item_id, exc)
            return
        self.ok += 1
        latency_ms = round((self._clock() - started) * 1000.0, 1)
        if self._items.get(item_id) == MODEL:
            self.discarded += 1
            return
        if not text:
            self._remember(item_id, EMPTY)
            return
        self._remember(item_id, FALLBACK)
        fields: dict[str, Any] = {"item_id": item_id, "source": "fallback",
                                  "provider": self.service.name, "latency_ms": latency_ms,
                                  "reason": reason, "audio_ms": turn.duration_ms}
        if turn.truncated:
            fields["truncated"] = True
        if at_call_end:
            fields["at_call_end"] = True
            if turn.unfinished:
                fields["unfinished"] = True
        self.transcript.add("caller", text, **fields)

    def _failed(self, item_id: str, exc: Exception) -> None:
        self.failed += 1
        self._remember(item_id, FAILED)
        self._log_failure(exc)

    def _log_failure(self, exc: Exception) -> None:
        if self._logged or not self.service.should_log():
            return
        self._logged = True
        if isinstance(exc, SttError):
            what = "skipped" if isinstance(exc, SttBusy) else "failed"
            log.warning("call %s: fallback transcription (%s) %s: %s", self.call_id,
                        self.service.name, what, exc)
        else:
            log.error("call %s: fallback transcription (%s) failed unexpectedly",
                      self.call_id, self.service.name, exc_info=exc)

    def _remember(self, item_id: str, state: str) -> None:
        items = self._items
        items[item_id] = state
        items.move_to_end(item_id)
        while len(items) > REMEMBERED_ITEMS:
            items.popitem(last=False)

    def stats(self) -> dict:
        return {"provider": self.service.name, "sent": self.sent, "ok": self.ok,
                "failed": self.failed, "discarded": self.discarded,
                "late_model": self.late_model, "at_call_end": self.at_call_end,
                "waiting_turns": len(self.turns), "dropped_turns": self.turns.dropped}


def _kill(greenlets: list[gevent.Greenlet]) -> None:
    """Kill greenlets and let them run their exception handlers (bounded)."""
    gevent.killall(greenlets, timeout=KILL_WAIT_S)
