"""Scripted calls: starting them (at a rate, to an app), running their scripts, their results.

Owns: the Call records (one per simulated call, inbound or the far end of an originate), the
schedule of call starts and script polls (one heap, driven by `advance(now)`), applying what a
CallerRun asks for to the model (speech into the channel's voice source, DTMF, hangup, dialplan
noise of Local ;2 halves), linking a call to the externalMedia channel bridged with it (so the
RTP the relay sends counts as what the caller heard), and writing the per-call WAV when that
externalMedia channel goes away. Sans-IO apart from writing WAV files: no sockets, no greenlets.

Local channels originated through ARI (`Local/EXTEN@CONTEXT`) run the script registered for
CONTEXT (or EXTEN@CONTEXT) on their ;2 half; built in: `playtone` (Wait 1, Playback hello-world,
PlayTones 440, Wait 120, as in event-trace.json), `dtmfcaller` (Wait 2, SendDTMF 123#),
`silent`; any other context is silent until hung up. An originated PJSIP/NAME rings and answers
(running its script), is busy, never answers, rejects, fails or is an answering machine as the
callee registered for NAME says (relay.sim.pbx.callees); with none registered it answers at once
and stays silent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.sim.pbx.callees import Callee, parse_callee
from relay.sim.pbx.caller import (
    SAMPLE_RATE,
    AgentActivity,
    CallerRun,
    Script,
    default_audio,
    parse_script,
)
from relay.sim.pbx.model import Channel, Pbx

log = logging.getLogger(__name__)

BUILTIN_DIALPLANS: dict[str, Any] = {
    "playtone": {"steps": [{"pause_ms": 1000}, {"sound": "hello-world"}, {"tone": 440},
                           {"pause_ms": 120000}], "end": "wait"},
    "dtmfcaller": {"steps": [{"pause_ms": 2000}, {"dtmf": "123#"}], "end": "wait"},
    "silent": {"steps": [], "end": "wait"},
}
MAX_ENDED_CALLS = 20000
ANSWER_MEDIA_WAIT_S = 0.5     # Answer() on a Local ;2 half: its dialplan goes on 500 ms later


class Call:
    """One simulated call and what happened on it."""

    def __init__(self, call_id: str, kind: str, app: str, script: Script,
                 scheduled_at: float) -> None:
        self.id = call_id
        self.kind = kind                     # inbound | local | outbound
        self.app = app
        self.script = script
        self.activity = AgentActivity()
        self.run = CallerRun(script, default_audio, self.activity)
        self.state = "scheduled"    # scheduled, ringing, answering, active, ended, failed
        self.scheduled_at = scheduled_at
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.channel: Channel | None = None          # the channel whose audio is the caller's
        self.dialplan_channel: Channel | None = None   # Local ;2: where dialplan noise shows
        self.end_reason = ""
        self.cause: int | None = None
        self.dtmf_heard: list[dict] = []
        self.playbacks_heard: list[dict] = []
        self.continued: dict | None = None
        self.redirected: str | None = None
        self.externals: dict[str, dict] = {}            # externalMedia channel id -> result
        self.captures: dict[str, Any] = {}              # externalMedia channel id -> RtpCapture
        self.due: float | None = None

    @property
    def ended(self) -> bool:
        return self.state in ("ended", "failed")

    def result(self, live_endpoints: dict | None = None) -> dict:
        ch = self.channel
        def rel(t: float | None) -> float | None:
            return None if t is None or self.started_at is None else round(t - self.started_at, 4)

        externals = {}
        for cid, info in self.externals.items():
            item = dict(info)
            if live_endpoints and cid in live_endpoints:
                ep = live_endpoints[cid]
                item.update(ep.stats(), live=True, rx=ep.capture.stats())
            externals[cid] = item
        return {
            "id": self.id, "kind": self.kind, "app": self.app, "state": self.state,
            "channel_id": ch.id if ch else None, "channel_name": ch.name if ch else None,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "duration_s": rel(self.ended_at), "end_reason": self.end_reason,
            "cause": self.cause, "script": self.run.progress(),
            "agent": {"voiced_packets": self.activity.voiced_packets,
                      "last_voice_s": rel(self.activity.last_voice_at),
                      "turn_latency_ms": [round(s * 1000.0, 1)
                                          for _, s in self.activity.turns],
                      "barge_in_heard_ms": [round(s * 1000.0, 1)
                                            for _, s in self.activity.barge_ins]},
            "dtmf_heard": list(self.dtmf_heard), "playbacks_heard": list(self.playbacks_heard),
            "continued": self.continued, "redirected": self.redirected,
            "externals": externals,
        }


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "x"


class Scenario:
    """All scripted calls of one simulated PBX."""

    def __init__(self, pbx: Pbx, recordings_dir: Path, endpoints: dict | None = None,
                 wake: Callable[[], None] = lambda: None,
                 on_call_ended: Callable[[Call], None] = lambda call: None) -> None:
        self.pbx = pbx
        self.recordings_dir = Path(recordings_dir)
        self.endpoints = endpoints if endpoints is not None else {}   # live RtpEndpoints by id
        self.wake = wake
        self.on_call_ended = on_call_ended
        self.calls: dict[str, Call] = {}
        self.dialplans: dict[str, Script] = {k: parse_script(v)
                                             for k, v in BUILTIN_DIALPLANS.items()}
        self.callees: dict[str, Callee] = {}
        pbx.callee_for = self.callees.get
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._ended_order: list[str] = []
        pbx.listener = self.on_model

    # ------------------------------------------------------------------ starting calls
    def schedule(self, script: Any, app: str, count: int = 1, rate: float | None = None,
                 now: float = 0.0, delay: float = 0.0) -> list[str]:
        """Schedule `count` inbound calls to `app`, `rate` per second (None: all at once)."""
        parsed = parse_script(script)
        if count < 1:
            raise ValueError("count must be at least 1")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        for step in parsed.steps:       # make the audio now, not while calls are running
            if step.kind in ("say", "sound", "tone"):
                default_audio(step)
        ids = []
        for i in range(count):
            call = Call(f"call-{next(self._ids)}", "inbound", app, parsed,
                        now + delay + (i / rate if rate else 0.0))
            self.calls[call.id] = call
            self._push(call, call.scheduled_at)
            ids.append(call.id)
        self.wake()
        return ids

    def register_dialplan(self, context: str, script: Any) -> None:
        """The script a Local/EXTEN@CONTEXT ;2 half runs (key CONTEXT or EXTEN@CONTEXT)."""
        self.dialplans[context] = parse_script(script)

    def register_endpoint(self, name: str, callee: Any) -> None:
        """Who answers an originated PJSIP/NAME (or PJSIP/NAME@trunk): a callee spec
        (relay.sim.pbx.callees), or a caller script it runs once it answers. ValueError for a
        bad spec."""
        self.callees[name] = parse_callee(callee)

    # ------------------------------------------------------------------ the clock
    def _push(self, call: Call, when: float) -> None:
        call.due = when
        heapq.heappush(self._heap, (when, next(self._seq), call.id))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, cid = heap[0]
            call = self.calls.get(cid)
            if call is not None and not call.ended and call.due == when:
                return when
            heapq.heappop(heap)
        return None

    def advance(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, cid = heapq.heappop(heap)
            call = self.calls.get(cid)
            if call is None or call.ended or call.due != when:
                continue
            call.due = None
            if call.state == "scheduled":
                self._start(call, now)
            elif call.state == "answering":
                self._begin_script(call, now)
            elif call.state == "active":
                self._apply(call, call.run.poll(now), now)
            self._reschedule(call, now)

    def _reschedule(self, call: Call, now: float | None = None) -> None:
        if call.ended or call.state != "active":
            return
        nd = call.run.next_deadline()
        if nd is not None and now is not None and nd <= now:
            nd = now + 0.001        # never spin on a deadline poll() did not act on
        if nd is not None and (call.due is None or nd < call.due):
            self._push(call, nd)

    def poke(self, call_id: str, now: float) -> None:
        """Something the script may be waiting for happened (the agent started speaking)."""
        call = self.calls.get(call_id)
        if call is not None and call.state == "active":
            self._push(call, now)
            self.wake()

    # ------------------------------------------------------------------ running calls
    def _start(self, call: Call, now: float) -> None:
        s = call.script
        call.started_at = now
        call.state = "ringing"
        ch = self.pbx.inbound_call(call.app, call_id=call.id,
                                   caller=(s.caller_name, s.caller_number), endpoint=s.endpoint,
                                   exten=s.exten, context=s.context, args=list(s.args),
                                   answer=s.answer, variables=s.variables)
        if ch is None:
            call.state = "failed"
            call.end_reason = f"application '{call.app}' not registered (STASISSTATUS=FAILED)"
            self._ended(call)
            return
        call.channel = ch
        if s.answer:
            self._begin_script(call, now)

    def _begin_script(self, call: Call, now: float) -> None:
        call.state = "active"
        call.activity.on_onset = lambda cid=call.id: self.poke(cid, self.pbx.now)
        self._apply(call, call.run.start(now), now)
        self._reschedule(call)

    def _apply(self, call: Call, actions: list, now: float) -> None:
        pbx = self.pbx
        ch = call.channel
        if ch is None:
            return
        for action in actions:
            verb = action[0]
            if verb == "say":
                if ch.voice is not None:
                    ch.voice.play(action[1], pbx.media.tick(now), action[2])
                    if not action[2]:
                        call.activity.caller_speaks(now, now + len(action[1]) / SAMPLE_RATE)
            elif verb == "silence":
                if ch.voice is not None:
                    ch.voice.stop()
            elif verb == "dtmf":
                pbx.caller_dtmf(ch, action[1], action[2])
            elif verb == "echo":
                pbx.channel_echo(ch, action[1])
            elif verb == "hangup":
                call.end_reason = action[1]
                pbx.caller_hangup(ch)
            elif verb == "dialplan" and call.dialplan_channel is not None:
                pbx.dialplan_step(call.dialplan_channel, action[1], action[2])
            elif verb == "varset" and call.dialplan_channel is not None:
                pbx.dialplan_varset(call.dialplan_channel, action[1], action[2])

    def _end(self, call: Call, now: float, reason: str, cause: int | None = None) -> None:
        if call.ended:
            return
        call.run.hung_up(now, reason)
        if not call.end_reason:
            call.end_reason = reason
        call.cause = cause
        call.state = "ended"
        self._ended(call)

    def _ended(self, call: Call) -> None:
        call.ended_at = self.pbx.now
        if call.started_at is None:
            call.started_at = call.ended_at
        self._ended_order.append(call.id)
        while len(self._ended_order) > MAX_ENDED_CALLS:
            self.calls.pop(self._ended_order.pop(0), None)
        self.on_call_ended(call)

    def hangup(self, call_id: str) -> None:
        """The caller hangs up now."""
        call = self.calls[call_id]
        if call.state == "scheduled":
            call.state = "failed"
            call.end_reason = "cancelled before it started"
            self._ended(call)
        elif not call.ended and call.channel is not None:
            call.end_reason = "caller hung up (requested)"
            self.pbx.caller_hangup(call.channel)

    # ------------------------------------------------------------------ model notifications
    def on_model(self, kind: str, ch: Channel, data: dict) -> None:
        now = self.pbx.now
        if kind == "local_dialplan":
            self._far_end(ch, data["voice"], "local", self._dialplan_for(ch), now)
            return
        if kind == "outbound_answered":
            callee = ch.callee
            script = callee.script if callee is not None else self.dialplans["silent"]
            self._far_end(ch, ch, "outbound", script, now)
            return
        call = self.calls.get(ch.call_id or "")
        if call is None:
            return
        if kind == "destroyed":
            if ch is call.channel or ch is call.dialplan_channel:
                self._end(call, now, "hung up", data.get("cause"))
        elif kind == "answered" and call.state == "ringing" and ch is call.channel:
            self._begin_script(call, now)
        elif kind == "dtmf_sent":
            call.dtmf_heard.append({"digits": data["digits"], "t": self._rel(call, now)})
        elif kind == "playback":
            call.playbacks_heard.append({"media": data["media"], "t": self._rel(call, now),
                                         "playback_id": data["playback_id"]})
        elif kind == "continued":
            call.continued = {k: v for k, v in data.items() if v is not None}
            call.end_reason = "continued in dialplan"
        elif kind == "redirected":
            call.redirected = data["endpoint"]
            call.end_reason = "redirected"
        elif kind == "external_bridged":
            self._link_external(call, data["external"])

    def _dialplan_for(self, two: Channel) -> Script:
        return (self.dialplans.get(f"{two.exten}@{two.context}")
                or self.dialplans.get(two.context) or self.dialplans["silent"])

    def _far_end(self, dialplan_ch: Channel, voice_ch: Channel, kind: str, script: Script,
                 now: float) -> None:
        call = Call(f"call-{next(self._ids)}", kind, voice_ch.stasis_app or "", script, now)
        self.calls[call.id] = call
        call.started_at = now
        call.channel = voice_ch
        call.dialplan_channel = dialplan_ch if dialplan_ch is not voice_ch else None
        voice_ch.call_id = dialplan_ch.call_id = call.id
        if kind == "local":
            call.state = "answering"
            self._push(call, now + ANSWER_MEDIA_WAIT_S)
            self.wake()
        else:
            self._begin_script(call, now)

    @staticmethod
    def _rel(call: Call, now: float) -> float:
        return round(now - (call.started_at or now), 4)

    def _link_external(self, call: Call, em: Channel) -> None:
        ep = self.endpoints.get(em.id)
        if ep is None or ep.call_id is not None:
            return
        ep.call_id = call.id
        ep.activity = call.activity
        call.externals[em.id] = {"channel_id": em.id, "wav": None}
        call.captures[em.id] = ep.capture

    def endpoint_closed(self, ep: Any) -> None:
        """An externalMedia channel went away: keep its capture, write the call's WAV."""
        call = self.calls.get(ep.call_id or "")
        if call is None:
            return
        info = call.externals.setdefault(ep.channel_id, {"channel_id": ep.channel_id})
        info.update(ep.stats(), live=False, rx=ep.capture.stats())
        if ep.capture.keep_audio:     # without the audio (load tests) there is nothing to write
            info["wav"] = str(self.write_wav(call, ep.channel_id))

    def write_wav(self, call: Call, em_id: str) -> Path:
        """Write (again) the WAV of what the relay sent on one of the call's externalMedia
        channels: recordings_dir/<call id>.wav, or <call id>-<channel id>.wav for a second."""
        capture = call.captures[em_id]
        first = next(iter(call.externals), em_id)
        name = call.id if em_id == first else f"{call.id}-{_safe(em_id)}"
        path = capture.write_wav(self.recordings_dir / f"{_safe(name)}.wav")
        call.externals.setdefault(em_id, {"channel_id": em_id})["wav"] = str(path)
        return path
