"""The worker's dialer: one outbound call at a time per `dial(...)`, from originate to outcome.

Owns: the pending dials of one worker (`pending`: channel id -> Dial), from the originate
request until the outcome is final; the channel ids it chose (`{prefix}out-...`, chosen by relay
so that events arriving before the originate's 200 are matched, and so that a crashed run's
leftovers are swept like relay's other resources); the guard greenlet of each dial (no answer
within ring timeout + grace, no AMD result within amd_wait_s: decided from what Asterisk says,
never assumed); the `continue` into the AMD context and acting on its result; starting the Call
(through the worker) when an answered originated channel enters the app; and the callback.

How a dial goes (docs/OUTBOUND.md has the picture):

    POST /channels?endpoint&app&appArgs=relay-outbound&channelId&callerId&timeout
      ChannelStateChange Ringing ... then either
      ChannelHangupRequest/ChannelDestroyed cause 17/19/21/34/38...  -> busy, no_answer, ...
      or ChannelStateChange Up, StasisStart [relay-outbound]
          no AMD: the Call starts (outcome answered)
          AMD:    POST /channels/{id}/continue to outbound.amd_context; the dialplan runs AMD()
                  then Stasis(${RELAY_APP},relay-amd,${AMDSTATUS},${AMDCAUSE}): StasisStart
                  [relay-amd, STATUS, CAUSE] -> the Call (HUMAN, NOTSURE; MACHINE with
                  on_machine talk or message) or a hangup (MACHINE with on_machine hangup)

The callback `on_outcome(DialOutcome)` is called exactly once, when the outcome is final: at
the end of the conversation for an answered call (with its end reason), at once otherwise. A
callback that raises is logged; it never reaches the worker. Must not: touch a live call's
media or model (the Call owns them), or keep anything after the outcome but a bounded list of
recent channel ids (so a late event of an ended dial is still recognised as relay's).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Callable, Optional
from urllib.parse import quote

import gevent
import gevent.event

from relay.ari import AriError
from relay.outbound.outcomes import (
    AMD_STATUSES,
    DialOutcome,
    DialRequest,
    cause_text,
    outcome_for_cause,
)
from relay.variables import MissingVariables, agent_with_variables, check_variables, fill

if TYPE_CHECKING:
    from relay.call import Call
    from relay.config import AgentConfig
    from relay.worker import Worker

log = logging.getLogger(__name__)

ORIGINATE_ARG = "relay-outbound"    # Stasis args of a channel relay originated
AMD_ARG = "relay-amd"               # ... and of it back from the AMD context
APP_VARIABLE = "RELAY_APP"          # the channel variable the AMD context's Stasis() reads
RECENT_ENDED = 2000                 # ended dials whose channel ids are still recognised
RECENT_OUTCOMES = 200              # final outcomes kept for the API
HANGUP_GRACE_S = 10.0               # an ended dial's channel is not a leftover this long:
                                    # the hangup relay asked for is under way (the janitor's)
Callback = Callable[[DialOutcome], None]


class DialError(ValueError):
    """A dial refused before anything was sent to Asterisk (bad endpoint, unknown agent,
    missing variables, too many pending dials, not accepting calls)."""


class Dial:
    """One pending dial: its request, its agent (texts filled), its outcome, its callback."""

    def __init__(self, request: DialRequest, agent: "AgentConfig", amd: bool,
                 machine_message: str, outcome: DialOutcome,
                 on_outcome: Optional[Callback]) -> None:
        self.request = request
        self.agent = agent
        self.amd = amd
        self.machine_message = machine_message
        self.outcome = outcome
        self.on_outcome = on_outcome
        self.answered = gevent.event.Event()    # first StasisStart (or the end)
        self.amd_done = gevent.event.Event()    # StasisStart back from AMD (or the end)
        self.call: Optional["Call"] = None
        self.guard: Optional[gevent.Greenlet] = None

    @property
    def channel_id(self) -> str:
        return self.outcome.channel_id


class Dialer:
    """Places outbound calls for one worker; fed the worker's ARI events of its channels."""

    def __init__(self, worker: "Worker", clock: Callable[[], float] = time.time) -> None:
        self.worker = worker
        self.settings = worker.settings.tree["outbound"]
        self.clock = clock
        self.pending: dict[str, Dial] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()   # channel id -> ended (monotonic)
        self._greenlets: set[gevent.Greenlet] = set()
        self.counters: dict[str, int] = {}      # outcome -> n
        self.recent: deque[dict] = deque(maxlen=RECENT_OUTCOMES)    # final outcomes (views)

    # the API
    def dial(self, request: DialRequest, on_outcome: Optional[Callback] = None) -> DialOutcome:
        """Originate one call (blocks for the originate request only, bounded by the ARI
        timeout). DialError, before anything is sent, for a request that cannot be placed.
        Otherwise the DialOutcome, already final ('failed' with the reason) when Asterisk
        refused the originate or never answered it; `on_outcome` is called in every case."""
        dial = self._prepare(request, on_outcome)
        self.pending[dial.channel_id] = dial
        dial.guard = self._spawn(self._guard, dial)
        self._originate(dial)
        return dial.outcome

    def _prepare(self, request: DialRequest, on_outcome: Optional[Callback]) -> Dial:
        worker = self.worker
        if not worker.accepting:
            raise DialError("relay is not accepting calls (draining or stopping)")
        if len(self.pending) >= self.settings["max_pending"]:
            raise DialError(f"{len(self.pending)} dials are pending already "
                            f"(outbound.max_pending)")
        tech, _, resource = request.endpoint.partition("/")
        if not tech or not resource or any(c in request.endpoint for c in "\r\n\0"):
            raise DialError(f"endpoint must be TECH/RESOURCE (e.g. PJSIP/+15550101@trunk), "
                            f"got {request.endpoint!r}")
        try:
            agent = worker.settings.agent(request.agent or None)
        except KeyError as exc:
            raise DialError(str(exc.args[0] if exc.args else exc)) from None
        try:
            variables = check_variables(request.variables)
            filled = agent_with_variables(agent, variables)
            message = fill(agent.outbound.machine_message, variables,
                           f"agent {agent.key!r} outbound.machine_message")
        except (MissingVariables, ValueError) as exc:
            raise DialError(str(exc)) from None
        ring = request.ring_timeout_s or self.settings["ring_timeout_s"]
        if not isinstance(ring, int) or isinstance(ring, bool) or not 1 <= ring <= 600:
            raise DialError(f"ring_timeout_s must be a whole number of seconds 1..600, "
                            f"got {ring!r}")
        if not isinstance(request.attempt, int) or request.attempt < 1:
            raise DialError("attempt must be a positive whole number")
        channel_id = f"{worker.resource_prefix}out-{uuid.uuid4().hex[:16]}"
        outcome = DialOutcome(channel_id=channel_id, endpoint=request.endpoint, agent=agent.key,
                              variables=variables, campaign_id=request.campaign_id,
                              attempt=request.attempt, started_at=self.clock())
        amd = agent.outbound.amd if request.amd is None else bool(request.amd)
        return Dial(request, filled, amd, message, outcome, on_outcome)

    def _originate(self, dial: Dial) -> None:
        request, ari = dial.request, self.worker.ari
        app = self.worker.settings.tree["ari"]["app"]
        ring = request.ring_timeout_s or self.settings["ring_timeout_s"]
        try:
            ari.request("POST", f"/channels/{quote(dial.channel_id)}", {
                "endpoint": request.endpoint, "app": app, "appArgs": ORIGINATE_ARG,
                "callerId": request.caller_id or self.settings["caller_id"] or None,
                "timeout": ring,
            }, body={"variables": {APP_VARIABLE: app}})
        except AriError as exc:
            if exc.status == 0:
                # It may still land: whatever Asterisk made of it is removed (and a late
                # StasisStart of it is hung up: the id stays recognised).
                self._hang_up(dial, "failed", reason=f"originate had no answer from "
                              f"Asterisk: {exc.message}", uncertain=True)
            else:
                self._finish(dial, "failed", reason=f"Asterisk refused the originate "
                             f"({exc.status}): {exc.message}")
            return
        if dial.outcome.state == "originating":
            dial.outcome.state = "ringing"
        log.info("dial %s: originated %s (agent %s)", dial.channel_id, request.endpoint,
                 dial.agent.key)

    # what the worker hands over
    def owns(self, channel_id: str) -> bool:
        """Is this channel one of relay's dials (pending, or ended a short while ago)?"""
        return channel_id in self.pending or channel_id in self._ended

    def channel_ids(self) -> set[str]:
        """The channels of the pending dials (their calls' included) and of the dials that
        ended less than HANGUP_GRACE_S ago (being hung up): not leftovers."""
        recent = time.monotonic() - HANGUP_GRACE_S
        return set(self.pending) | {cid for cid, at in self._ended.items() if at > recent}

    def on_channel_event(self, kind: str, channel_id: str, event: dict) -> None:
        """An event of one of our dials' channels (StasisStart excepted)."""
        dial = self.pending.get(channel_id)
        if dial is None:
            return
        outcome = dial.outcome
        if kind == "ChannelStateChange":
            state = str((event.get("channel") or {}).get("state", ""))
            if state == "Ringing" and outcome.state == "originating":
                outcome.state = "ringing"
        elif kind in ("ChannelHangupRequest", "ChannelDestroyed"):
            cause = event.get("cause")
            if isinstance(cause, int) and not isinstance(cause, bool) and \
                    not (kind == "ChannelHangupRequest" and event.get("soft")):
                outcome.cause = cause
            if kind == "ChannelDestroyed":
                self._channel_gone(dial)

    def on_stasis_start(self, channel: dict, args: list[str]) -> bool:
        """A StasisStart: True when it is one of relay's dials (handled here)."""
        channel_id = str(channel.get("id", ""))
        dial = self.pending.get(channel_id)
        if dial is None:
            if channel_id in self._ended or ORIGINATE_ARG in args or AMD_ARG in args:
                # an ended dial's channel (a late answer) or a previous run's: nobody will talk
                log.info("dial %s: in the app with no dial pending; hanging up", channel_id)
                self.worker.janitor.remove("caller", channel_id)
                return True
            return False
        if AMD_ARG in args:
            self._amd_result(dial, channel, args)
        elif dial.outcome.state in ("originating", "ringing"):
            self._answered(dial, channel)
        return True

    def call_ended(self, call: "Call") -> None:
        """The conversation of an answered dial is over: the outcome is final."""
        dial = self.pending.get(call.id)
        if dial is not None and dial.call is call:
            self._finish(dial, dial.outcome.outcome or "answered", reason=call.end_reason)

    def stop(self) -> None:
        """Kill the guards; dials not yet answered are hung up (their outcome: failed)."""
        for dial in list(self.pending.values()):
            if dial.call is None:
                self._hang_up(dial, "failed", reason="relay stopped before the dial ended")
        gevent.killall(list(self._greenlets), block=True, timeout=2)

    def view(self) -> list[dict]:
        return [d.outcome.view() for d in self.pending.values()]

    # the steps
    def _answered(self, dial: Dial, channel: dict) -> None:
        outcome = dial.outcome
        outcome.answered_at = self.clock()
        dial.answered.set()
        if not dial.amd:
            self._start_call(dial, channel, message="")
            return
        outcome.state = "amd"
        self._spawn(self._continue_to_amd, dial)

    def _continue_to_amd(self, dial: Dial) -> None:
        try:
            self.worker.ari.continue_in_dialplan(dial.channel_id, self.settings["amd_context"],
                                                 self.settings["amd_extension"], 1)
        except AriError as exc:
            if exc.status == 404:
                return      # the callee left: its ChannelDestroyed ends the dial
            self._hang_up(dial, "failed", reason=f"cannot start answering-machine "
                          f"detection: {exc}")

    def _amd_result(self, dial: Dial, channel: dict, args: list[str]) -> None:
        after = args[args.index(AMD_ARG) + 1:]
        status = (after[0] if after else "").upper()
        amd_cause = after[1] if len(after) > 1 else ""
        if status not in AMD_STATUSES:
            status = "NOTSURE"
        machine = status == "MACHINE"
        action = dial.agent.outbound.on_machine if machine else "talk"
        dial.outcome.amd = {"status": status, "cause": amd_cause, "action": action}
        dial.outcome.outcome = "machine" if machine else "answered"
        dial.amd_done.set()
        log.info("dial %s: AMD says %s (%s): %s", dial.channel_id, status, amd_cause, action)
        if action == "hangup":
            self._hang_up(dial, "machine", reason="answering machine: hung up")
            return
        self._start_call(dial, channel, message=dial.machine_message if action == "message"
                         and machine else "")

    def _start_call(self, dial: Dial, channel: dict, message: str) -> None:
        outcome = dial.outcome
        outcome.state = "talking"
        if not outcome.outcome:
            outcome.outcome = "answered"
        call = self.worker.start_call(channel, dial.agent, outbound=dial, message=message)
        if call is None:        # the worker no longer takes calls
            self._hang_up(dial, "failed", reason="answered while relay was stopping")
            return
        dial.call = call

    def _channel_gone(self, dial: Dial) -> None:
        """Its ChannelDestroyed: the end of a dial that has no conversation (a call's own end
        comes through call_ended)."""
        if dial.call is not None:
            return
        outcome = dial.outcome
        if outcome.state == "amd":
            outcome.amd = {"status": "HANGUP", "cause": "", "action": ""}
            self._finish(dial, "answered", reason="the callee hung up during answering-machine "
                         "detection")
        elif outcome.answered_at is None:
            result = outcome_for_cause(outcome.cause)
            self._finish(dial, result, reason=cause_text(outcome.cause) or "ended unanswered")
        else:
            self._finish(dial, outcome.outcome or "answered",
                         reason=outcome.reason or "the callee hung up")

    def _guard(self, dial: Dial) -> None:
        """No answer within ring timeout + grace, or no AMD result within amd_wait_s: what
        Asterisk says of the channel decides the outcome."""
        ring = dial.request.ring_timeout_s or self.settings["ring_timeout_s"]
        if not dial.answered.wait(ring + self.settings["answer_grace_s"]):
            self._expired(dial, "no_answer", f"not answered within {ring} s (and Asterisk "
                          "did not end it)")
            return
        if dial.amd and dial.outcome.state == "amd" and \
                not dial.amd_done.wait(self.settings["amd_wait_s"]):
            self._expired(dial, "failed", "no answering-machine result within "
                          f"{self.settings['amd_wait_s']:g} s: is the "
                          f"{self.settings['amd_context']!r} context installed "
                          "(docs/OUTBOUND.md)?")

    def _expired(self, dial: Dial, outcome: str, reason: str) -> None:
        if dial.channel_id not in self.pending or dial.call is not None:
            return
        try:
            self.worker.ari.get_channel(dial.channel_id)
        except AriError as exc:
            if exc.status == 404:
                self._finish(dial, "failed", reason="the channel ended but its events never "
                             "reached relay")
                return
        self._hang_up(dial, outcome, reason=reason)

    def _hang_up(self, dial: Dial, result: str, reason: str, uncertain: bool = False) -> None:
        """A dial relay ends itself: the outcome first, then the hangup. The hangup's own
        events (ChannelDestroyed) come while the DELETE is under way and must not be taken for
        the callee hanging up (the dial is no longer pending then, so they are not)."""
        self._finish(dial, result, reason=reason)
        self.worker.janitor.remove("caller", dial.channel_id, uncertain=uncertain)

    def _finish(self, dial: Dial, result: str, reason: str) -> None:
        """The outcome is final: recorded, counted, published, and the callback called."""
        if self.pending.pop(dial.channel_id, None) is None:
            return
        outcome = dial.outcome
        outcome.outcome = result
        outcome.reason = reason
        outcome.state = "ended"
        outcome.ended_at = self.clock()
        dial.answered.set()
        dial.amd_done.set()
        self._ended[dial.channel_id] = time.monotonic()
        while len(self._ended) > RECENT_ENDED:
            self._ended.popitem(last=False)
        self.counters[result] = self.counters.get(result, 0) + 1
        self.recent.append(outcome.view())
        log.info("dial %s: %s (%s)", dial.channel_id, result, reason)
        guard = dial.guard
        if guard is not None and guard is not gevent.getcurrent():
            guard.kill(block=False)
        self.worker.publish_dial(outcome, conversation=dial.call is not None)
        if dial.on_outcome is not None:
            try:
                dial.on_outcome(outcome)
            except Exception:
                log.exception("dial %s: the outcome callback failed", dial.channel_id)

    def _spawn(self, fn, *args) -> gevent.Greenlet:
        greenlet = gevent.spawn(self._guarded, fn, *args)
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)
        return greenlet

    def _guarded(self, fn, *args) -> None:
        """A failure inside one dial's step ends that dial ('failed', its channel hung up),
        never the worker."""
        try:
            fn(*args)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            log.exception("dialer: %s failed", getattr(fn, "__name__", fn))
            dial = args[0] if args and isinstance(args[0], Dial) else None
            if dial is not None and dial.call is None and dial.channel_id in self.pending:
                self._hang_up(dial, "failed", reason=f"internal error: {exc}")
