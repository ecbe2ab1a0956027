"""The life of one call: setup through ARI, audio both ways, barge-in, DTMF, transcripts, cleanup.

Owns, for one caller channel: the bridge and the externalMedia channel relay creates for it (it
deletes both on every path: Asterisk does not), its route on the worker's RTP socket and its
place in the pacer, its Realtime session, its DTMF collector and its transcript. Everything that
can block (ARI requests, connecting) runs in the call's own greenlets, never in the pacer's or
the socket reader's. The pacer ticks the call's CallMedia, which calls the call back only on
its events (the assistant's first frame, the playout drained, the tick after a barge-in,
housekeeping four times a second). A failure inside the call ends this call only.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

import gevent
import gevent.event

from relay import realtime_events as ev
from relay.ari import AriError
from relay.backoff import ReconnectPolicy
from relay.call_media import CallMedia
from relay.call_watch import CallWatch
from relay.config import VOICES, AgentConfig, turn_detection_problem
from relay.dtmf import DtmfCollector
from relay.history.usage import Usage
from relay.janitor import retryable
from relay.realtime_session import RealtimeSession
from relay.recording import CallRecorder
from relay.redact import PROCESS
from relay.sounds import load_sound
from relay.stt import CallFallback
from relay.tools.runner import CallTools
from relay.transcript import Transcript

if TYPE_CHECKING:
    from relay.outbound.dialer import Dial
    from relay.worker import Worker

log = logging.getLogger(__name__)

GREETING_ITEM = "relay-greeting"    # the playout item of a greeting sound relay streams itself
OWN_ITEMS = "relay-"                # playout items of relay's own sounds (never truncated)
MEDIA_ARG = "relay-media"           # the `data` of our externalMedia channels (their Stasis args)
HOUSEKEEPING_S = 0.25
PLAYOUT_POLL_S = 0.02        # end_after_playout: how often it looks at the playout queue
AFTER_PLAYOUT_S = 0.2        # ... and how long after the last frame it waits (far-end buffers)
SETUP_TRIES = 3              # an ARI request of the setup that got a 5xx or no answer: tries
SETUP_RETRY_S = 0.1          # ... the pause before the second try (doubling)
ADD_CHANNEL_TRIES = 6        # addChannel answered 422 (media channel not in the app yet): tries
ADD_CHANNEL_RETRY_S = 0.02   # ... 20, 40, 80, 160, 320 ms apart
SETUP_STEPS = {              # what each step of the setup does, for reasons and counters
    "answer": "answer the caller", "bridge": "create the bridge",
    "media_channel": "create the externalMedia channel",
    "add_channel": "add the caller and the media channel to the bridge",
    "internal": "set up the call",
}


def _before_the_session(audio: bytes, stamp: Optional[float]) -> None:
    """Caller audio that arrives once the RTP route is set but before the model session
    exists: dropped. From the session on, the media hands it to the session's appender, in C
    (CallMedia.attach_model_writer)."""


class SetupFailed(Exception):
    """A step of the call's setup failed (`step`: a key of SETUP_STEPS)."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{SETUP_STEPS[step]}: {detail}")
        self.step = step
        self.detail = detail


class SetupStopped(Exception):
    """The call ended while it was being set up: the setup stops quietly."""


class Call:
    """One caller's conversation with the agent."""

    def __init__(self, worker: "Worker", channel: dict, agent: AgentConfig,
                 outbound: Optional["Dial"] = None, message: str = "") -> None:
        self.worker = worker
        self.settings = worker.settings
        self.channel = channel
        self.id: str = channel["id"]
        self.agent = agent      # an outbound call's: its texts filled with the call variables
        caller = channel.get("caller") or {}
        self.caller_number = str(caller.get("number", ""))
        self.caller_name = str(caller.get("name", ""))
        # An outbound call (relay.outbound): the dial it comes from, its variables (for the
        # tools), and the message to leave on an answering machine ("": a conversation).
        self.dial = outbound
        self.direction = "inbound" if outbound is None else "outbound"
        self.variables: dict[str, str] = {} if outbound is None else \
            dict(outbound.outcome.variables)
        self.machine_message = message
        self._message_requested = False
        if outbound is not None:    # the callee's number, not the caller id relay sent
            self.caller_number = outbound.request.endpoint.partition("/")[2].split("@")[0]
            self.caller_name = ""
        # Ids carry the worker's app name, so that whoever cleans up after a dead worker
        # (relay.fleet) finds what it created on Asterisk: relay-br-..., relay-w0-3-em-...
        suffix = uuid.uuid4().hex[:12]
        self.bridge_id = f"{worker.resource_prefix}br-{suffix}"
        self.media_channel_id = f"{worker.resource_prefix}em-{suffix}"
        self.state = "setup"
        self.end_reason = ""
        self.created_at = time.time()
        self.answered_at: Optional[float] = None    # epoch: media up, the conversation starts
        self.ended_at: Optional[float] = None
        self.started_mono = time.monotonic()
        self.usage = Usage()        # the model's tokens, from every response.done
        pacer = worker.pacer        # worker-wide pacing figures when the call started
        self.pacer_marks = (getattr(pacer, "late_ticks", 0),
                            getattr(pacer, "skipped_slots", 0))
        self._speaking = "nobody"
        self.transcript = Transcript(self.id, on_entry=worker.publish_transcript)
        dtmf = self.settings.tree["dtmf"]
        self.dtmf = DtmfCollector(dtmf["inter_digit_timeout_ms"] / 1000.0, dtmf["max_digits"],
                                  dtmf["terminator"])
        rtp = self.settings.tree["rtp"]
        self.media = CallMedia(
            model_format=agent.audio_format, send_rtp=self._send_rtp,
            send_to_model=_before_the_session, jitter_depth=rtp["jitter_depth"],
            append_frames=rtp["append_frames"], playout_max_s=rtp["playout_max_s"],
            jitter_adaptive=rtp["jitter_adaptive"], jitter_max_depth=rtp["jitter_max_depth"],
            long_silence_s=rtp["long_silence_after_ms"] / 1000.0,
            long_silence_frames=rtp["long_silence_append_ms"] // 20,
            on_played=self._played,
            on_model_audio_latency=self._latency_observer("model_audio_latency_seconds"))
        # the call's per-tick logic, run by the media's tick only when its events happen
        self.media.on_drained = self._playout_drained
        self.media.on_idle_tick = self._barge_in_measured
        self.media.on_housekeeping = self._housekeeping
        self.media.housekeeping_s = HOUSEKEEPING_S
        self.media.on_tick_failed = self._media_failed
        self.remote: Optional[tuple[str, int]] = None
        self.session: Optional[RealtimeSession] = None
        self._bridge_made = False
        self._setup_greenlet: Optional[gevent.Greenlet] = None
        self._media_channel_made = False
        self._media_in_app = gevent.event.Event()    # its StasisStart came
        self._uncertain: set[str] = set()    # ids whose creation request had no answer
        self._caller_gone = False
        self._ended = gevent.event.Event()
        self._greenlets: set[gevent.Greenlet] = set()
        self._deadline = self.started_mono + self.settings.tree["call"]["max_duration_s"]
        self._cancelled_responses: set[str] = set()
        self.tools = CallTools(self)
        self.handoff: Optional[tuple] = None   # (ARI call, args) replacing the final hangup
        self._turn_end_at: Optional[float] = None
        self._speech_started_at: Optional[float] = None
        self.turn_latencies_ms: list[float] = []
        self.barge_ins = 0
        self.setup_ms: Optional[float] = None     # StasisStart to audio flowing
        self.barge_in_at: list[float] = []    # monotonic times audio was cut by the caller
        self.barge_in_reactions_ms: list[float] = []   # speech_started -> last frame sent
        self._barge_in_from: Optional[float] = None    # a reaction being measured
        self.truncations: list[tuple[str, int]] = []
        self.model_errors: dict[str, int] = {}
        self.transcript_path = ""
        self.recording_path = ""
        self.recorder: Optional[CallRecorder] = self._make_recorder()
        self._want_play_events()
        service = getattr(worker, "stt", None)
        self.stt: Optional[CallFallback] = None if service is None else CallFallback(
            service, call_id=self.id, line_format=self.media.line_format,
            transcript=self.transcript,
            spawn=functools.partial(Call.spawn, weakref.proxy(self)))   # no cycle: see _let_go
        if self.recorder is not None or self.stt is not None:
            self.media.on_input = self._tap_input
        self.watch = CallWatch(self)    # the model never leaves the caller in silence

    # life cycle
    def spawn(self, fn, *args) -> gevent.Greenlet:
        greenlet = gevent.spawn(self._guarded, fn, *args)
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)
        return greenlet

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            name = getattr(fn, "__name__", fn)
            if self.state in ("ending", "ended"):
                # e.g. the caller hung up while the bridge was being made: not an error
                log.info("call %s: %s stopped by the end of the call: %s", self.id, name, exc)
                return
            if fn == self._setup:
                self._setup_failed(exc)
                return
            log.exception("call %s: %s failed", self.id, name)
            self.end(f"internal error: {exc}")

    def start(self) -> None:
        self._setup_greenlet = self.spawn(self._setup)

    def _setup(self) -> None:
        """Answer, bridge, externalMedia, then the bridge joined once the media channel is in
        the app (Asterisk answers externalMedia before the channel enters Stasis: FACTS.md),
        then audio once the model session is open. Each step checks that the call is still
        being set up; a failure is judged by _setup_failed from what Asterisk said."""
        tree = self.settings.tree
        log.info("call %s: %s %r, agent %s", self.id,
                 "to" if self.dial is not None else "from", self.caller_number, self.agent.key)
        if self.dial is not None:
            self.transcript.add("event", f"outbound call to {self.dial.request.endpoint} "
                                "answered", agent=self.agent.key, variables=self.variables,
                                amd=self.dial.outcome.amd)
        else:
            self.transcript.add("event", f"call from {self.caller_number or 'unknown'}",
                                agent=self.agent.key)
        model = self.spawn(self._open_session)
        ari = self.worker.ari
        self._step("answer", ari.answer, self.id)
        # The ids are ours, so cleanup can delete what may exist before the answer arrives.
        self._bridge_made = True
        self.worker.owned[self.bridge_id] = self
        self._step("bridge", ari.create_bridge, self.bridge_id, "mixing",
                   name=f"relay {self.id}", created_id=self.bridge_id)
        media = self.worker.media
        external_host = f"{tree['rtp']['advertise_host']}:{media.port}"
        self.worker.owned[self.media_channel_id] = self
        self._media_channel_made = True
        channel = self._step("media_channel", ari.external_media, self.media_channel_id,
                             external_host, self.media.line_format, data=MEDIA_ARG,
                             created_id=self.media_channel_id)
        if channel is None:     # a retry found it created by an earlier, unanswered attempt
            channel = self._step("media_channel", ari.get_channel, self.media_channel_id)
        variables = (channel or {}).get("channelvars") or {}
        try:
            self.remote = (str(variables["UNICASTRTP_LOCAL_ADDRESS"]),
                           int(variables["UNICASTRTP_LOCAL_PORT"]))
        except (KeyError, ValueError, TypeError):
            raise SetupFailed("media_channel", "externalMedia gave no UNICASTRTP address: "
                              f"{str(variables)[:200]}") from None
        media.route(self.remote, self.media)
        sink = media.sink_for(self.remote)
        if sink is not None:
            self.media.attach_sink(*sink)
        self._join_bridge(tree["call"]["media_stasis_wait_s"])
        model.join(timeout=tree["openai"]["connect_timeout_s"] + 1)
        if self.state != "setup" or self.session is None or not self.session.connected:
            return   # ended meanwhile, or _open_session has ended the call
        self.media.start(time.monotonic())
        if self.agent.greeting_sound and not self.machine_message:
            sound = load_sound(self.agent.greeting_sound, self.media.line_format)
            self.media.playout.add(GREETING_ITEM, sound)
            self.media.playout.finish(GREETING_ITEM)
        self.worker.pacer.add(self.media)
        self.state = "active"
        self.answered_at = time.time()
        self.setup_ms = (time.monotonic() - self.started_mono) * 1000.0
        self.worker.publish_call(self)

    def _step(self, step: str, fn, *args, created_id: str = "", **kwargs) -> Any:
        """One ARI request of the setup, asked again after a 5xx or no answer (SETUP_TRIES
        in all, with a growing pause). A creation (`created_id`) that had no answer may still
        land on Asterisk: its id is remembered as uncertain for the cleanup, and a 409 to the
        next try means the earlier one did land (None is returned). SetupFailed otherwise."""
        for attempt in range(SETUP_TRIES):
            self._still_setting_up()
            try:
                answer = fn(*args, **kwargs)
            except AriError as exc:
                if exc.status == 0 and created_id:
                    self._uncertain.add(created_id)
                if created_id and attempt > 0 and exc.status == 409:
                    return None
                if not retryable(exc) or attempt == SETUP_TRIES - 1:
                    raise SetupFailed(step, str(exc)) from exc
                log.info("call %s: %s: %s; trying again", self.id, SETUP_STEPS[step], exc)
                gevent.sleep(SETUP_RETRY_S * 2 ** attempt)
                continue
            self._still_setting_up()     # the call may have ended while the request was out
            return answer
        raise AssertionError("unreachable")

    def _join_bridge(self, wait_s: float) -> None:
        """Add the caller and the media channel to the bridge once the media channel's
        StasisStart has come (at most wait_s); a 422 (not in the app yet) is asked again a few
        times, a few ms apart, before it counts as a failure."""
        if not self._media_in_app.wait(wait_s):
            log.info("call %s: no StasisStart for the media channel within %.1f s; adding it "
                     "to the bridge anyway", self.id, wait_s)
        def count_retry(error: AriError) -> None:
            if error.status == 422:
                self.worker.count("add_channel_retries")
        try:
            self.worker.ari.add_channel_once_in_app(
                self.bridge_id, [self.id, self.media_channel_id], tries=ADD_CHANNEL_TRIES,
                first_pause_s=ADD_CHANNEL_RETRY_S, retry_also=retryable,
                before_try=self._still_setting_up, on_retry=count_retry)
        except AriError as exc:
            if exc.status == 422:
                raise SetupFailed("add_channel", "the media channel did not enter the app in "
                                  f"time ({exc.message})") from exc
            raise SetupFailed("add_channel", str(exc)) from exc

    def _still_setting_up(self) -> None:
        if self.state != "setup":
            raise SetupStopped()

    def _setup_failed(self, exc: Exception) -> None:
        """The setup failed: conclude that the caller left only from evidence (its hangup
        events, or a 404 for its own channel); otherwise hang up (or continue in the dialplan)
        with the reason logged and counted, so the caller is never left in silence."""
        if isinstance(exc, SetupStopped):
            return
        if self._caller_gone or self._caller_absent():
            self._caller_gone = True
            log.info("call %s: the caller left during setup (%s)", self.id, exc)
            self.end("caller hung up during setup", hangup=False)
            return
        step = exc.step if isinstance(exc, SetupFailed) else "internal"
        if isinstance(exc, SetupFailed):
            log.warning("call %s: setup failed: cannot %s: %s", self.id, SETUP_STEPS[step],
                        exc.detail)
            reason = f"setup failed: cannot {SETUP_STEPS[step]}: {exc.detail}"
        else:
            log.exception("call %s: setup failed", self.id)
            reason = f"setup failed: {exc}"
        self.worker.count_setup_failure(step)
        self.transcript.add("event", reason, level="error")
        self.end(reason)

    def _caller_absent(self) -> bool:
        """True only when Asterisk says the caller's channel no longer exists (404)."""
        if self._caller_gone:
            return True
        try:
            self.worker.ari.get_channel(self.id)
        except AriError as exc:
            return exc.status == 404
        return False

    def _open_session(self) -> None:
        openai = self.settings.tree["openai"]
        session = RealtimeSession(
            url=openai["realtime_url"], model=openai["model"], api_key=openai["api_key"],
            auth=openai["auth"],
            session=ev.session_config(self.agent), handler=self,
            connect_timeout=openai["connect_timeout_s"],
            max_reconnects=openai["max_reconnects"], name=self.id,
            on_append_sent=self._latency_observer("caller_audio_latency_seconds"),
            policy=ReconnectPolicy.from_settings(openai),
            breaker=getattr(self.worker, "model_breaker", None),
            reader=getattr(self.worker, "model_reader", None))
        self.session = session      # set first, so that cleanup closes it whatever happens
        self.media.attach_model_writer(session.appender)    # the caller's audio, from C
        try:
            session.start()
        except Exception as exc:
            self.end(f"cannot reach the model: {exc}")

    def end(self, reason: str, hangup: bool = True) -> None:
        """End the call (idempotent): stop audio, close the model, delete what relay created,
        then finish the transcript (the fallback's last turns included) and write it."""
        if self.state in ("ending", "ended"):
            return
        self.state = "ending"
        self.end_reason = reason
        self.ended_at = time.time()
        log.info("call %s: ending (%s)", self.id, reason)
        self.worker.pacer.remove(self.media)
        self.media.enabled = False
        self._media_in_app.set()        # a setup waiting for it stops now
        if self.remote is not None:
            self.worker.media.unroute(self.remote)
        gevent.spawn(self._cleanup, hangup)

    def _cleanup(self, hangup: bool) -> None:
        # Let an ARI request of the setup finish (each has a timeout): killing it mid-request
        # could leave a bridge or channel created after its DELETE.
        setup = self._setup_greenlet
        if setup is not None and setup is not gevent.getcurrent():
            setup.join(timeout=2 * self.settings.tree["ari"]["request_timeout_s"])
        if self.session is not None:
            self.session.close()
        current = gevent.getcurrent()
        for greenlet in list(self._greenlets):
            if greenlet is not current:
                greenlet.kill(block=False)
        janitor = self.worker.janitor
        if self._media_channel_made:
            janitor.remove("channel", self.media_channel_id,
                           uncertain=self.media_channel_id in self._uncertain)
        if self._bridge_made:
            janitor.remove("bridge", self.bridge_id, uncertain=self.bridge_id in self._uncertain)
        if hangup and not self._caller_gone:
            self._release_caller()
        self.worker.release(self.media_channel_id, self.bridge_id)
        self._finish_recording()
        self._finish_fallback()
        self.transcript.add("event", f"call ended: {self.end_reason}")
        try:
            self.transcript_path = str(self.transcript.write(
                self.worker.transcripts_dir))
        except OSError as exc:
            log.warning("call %s: cannot write the transcript: %s", self.id, exc)
        self.state = "ended"
        self.worker.call_ended(self)
        self._ended.set()
        self._let_go()

    def _let_go(self) -> None:
        """The call has ended: its parts stop holding it (the media's callbacks are dropped,
        the others hold it through a weak proxy), so that no reference cycle is left and the
        finished call is freed by reference counting as soon as the worker, the dashboard or a
        test lets go of it, not at the garbage collector's next full pass (which stops every
        call while it walks the worker's objects: docs/ARCHITECTURE.md, "Memory and the
        collector")."""
        me = weakref.proxy(self)
        self.media.detach()
        self.tools.call = me
        self.watch.call = me
        if self.session is not None:
            self.session.let_go(me)
        if self.dial is not None:       # an outbound call's dial (its dialer is done with it)
            self.dial.call = me

    def _release_caller(self) -> None:
        """The caller leaves relay: the transfer a tool asked for, the dialplan, or a hangup
        (retried until Asterisk confirms it: a caller is never left in silence)."""
        if self.handoff is not None:
            self._hand_off(*self.handoff)
        elif self.settings.tree["call"]["continue_in_dialplan"]:
            self._hand_off(self.worker.ari.continue_in_dialplan, self.id)
        else:
            self.worker.janitor.remove("caller", self.id)

    def end_after_playout(self, reason: str, response_id: str = "",
                          handoff: Optional[tuple] = None) -> None:
        """End the call once the caller has heard what the model is saying: after the response
        `response_id` is done and the playout queue has drained (bounded by the longest
        playout), then `handoff` — an ARI call and its arguments, such as continue or
        redirect — instead of the usual hangup (end_call, transfer_call)."""
        self.transcript.add("event", f"ending after the agent's last words: {reason}")
        self.spawn(self._end_after_playout, reason, response_id, handoff)

    def _end_after_playout(self, reason: str, response_id: str,
                           handoff: Optional[tuple]) -> None:
        deadline = time.monotonic() + self.settings.tree["rtp"]["playout_max_s"] + 10.0
        while self.state in ("setup", "active") and time.monotonic() < deadline:
            session = self.session
            responding = bool(response_id) and session is not None and \
                session.response_id == response_id
            if not responding and not self.media.playout:
                gevent.sleep(AFTER_PLAYOUT_S)
                break
            gevent.sleep(PLAYOUT_POLL_S)
        if self.state in ("ending", "ended"):
            return
        self.handoff = handoff
        self.end(reason)

    def _hand_off(self, fn, *args) -> None:
        """The transfer (or continue, or end) asked for; a 5xx or no answer is asked again;
        hang up if Asterisk refuses it or never answers."""
        for attempt in range(SETUP_TRIES):
            try:
                fn(*args)
                return
            except AriError as exc:
                if exc.status == 404:
                    return
                if retryable(exc) and attempt < SETUP_TRIES - 1:
                    gevent.sleep(SETUP_RETRY_S * 2 ** attempt)
                    continue
                log.warning("call %s: %s refused (%s); hanging up", self.id, fn.__name__, exc)
                self.transcript.add("event", f"{fn.__name__} failed: {exc}; hanging up",
                                    level="warning")
                self.worker.janitor.remove("caller", self.id)
                return

    def wait_ended(self, timeout: Optional[float] = None) -> bool:
        return self._ended.wait(timeout)

    # ARI events for this call
    def on_caller_gone(self) -> None:
        self._caller_gone = True
        self.end("caller hung up", hangup=False)

    def on_media_in_app(self) -> None:
        """The externalMedia channel's StasisStart: it may join the bridge now."""
        self._media_in_app.set()

    def on_resource_gone(self, what: str) -> None:
        """Asterisk destroyed the call's media channel or bridge (not relay): the caller
        would hear nothing more, so the call ends and the caller is hung up."""
        if self.state in ("ending", "ended"):
            return
        if what == "channel":
            self._media_channel_made = False
        else:
            self._bridge_made = False
        self.end(f"the {'media channel' if what == 'channel' else 'bridge'} was removed on "
                 "Asterisk")

    def on_dtmf(self, digit: str) -> None:
        result = self.dtmf.digit(digit, time.monotonic())
        self.transcript.add("dtmf", digit)
        if result is not None:
            self._dtmf_result(result)

    def _dtmf_result(self, digits: str) -> None:
        self.transcript.add("dtmf_result", digits)
        if self.session is not None:
            self.session.add_user_text(f"The caller pressed the keys: {digits}")
        self.spawn(self.worker.ari.set_variable, self.id, "DTMF_RESULT", digits)

    # media
    @property
    def speaking(self) -> str:
        """Who is speaking: "caller", "assistant" or "nobody"."""
        return self._speaking

    @speaking.setter
    def speaking(self, who: str) -> None:
        self._speaking = who
        self.media.drained_wanted = who == "assistant"
        self._want_play_events()

    def _want_play_events(self) -> None:
        """_played runs for each frame only while it has something to do: a recording, a turn
        latency to measure, the assistant becoming the one speaking."""
        self.media.play_events = (self.recorder is not None or self._turn_end_at is not None
                                  or self._speaking != "assistant")

    def _media_failed(self, exc: BaseException) -> None:
        """The pacer dropped this call's media after its tick raised: end the call (hung up,
        its bridge and channel deleted) rather than leave the caller in silence."""
        self.end(f"internal error in the call's audio: {type(exc).__name__}: {exc}")

    def _playout_drained(self) -> None:
        """The media's tick: the assistant was speaking and nothing more is queued."""
        if self._speaking == "assistant":
            self.speaking = "nobody"

    def _housekeeping(self, now: float) -> None:
        """Four times a second, from the media's tick: DTMF, the call's deadline, its watchdog."""
        digits = self.dtmf.poll(now)
        if digits is not None:
            self._dtmf_result(digits)
        if now >= self._deadline:
            self.end("maximum call duration reached")
        self.watch.tick(now)

    def _send_rtp(self, packet: bytes) -> None:
        if self.remote is not None:
            self.worker.media.sendto(packet, self.remote)

    def _latency_observer(self, histogram: str) -> Callable[[float], None]:
        """The worker histogram's own observe (called per append: no layers in between), or
        the worker's observe() for a worker without that histogram."""
        found = getattr(self.worker, "histograms", {}).get(histogram)
        if found is not None:
            return found.observe
        return lambda seconds: self.worker.observe(histogram, seconds)

    def _barge_in_measured(self) -> None:
        """The first tick that sent nothing after a barge-in: the reaction is the time from
        speech_started to the last frame sent (0 when none was sent after it)."""
        if self._barge_in_from is None:
            return
        reaction_s = max(0.0, self.media.last_frame_out_at - self._barge_in_from)
        self._barge_in_from = None
        self.barge_in_reactions_ms.append(reaction_s * 1000.0)
        self.worker.observe("barge_in_reaction_seconds", reaction_s)

    def _played(self, frame: bytes) -> None:
        if self._turn_end_at is not None:
            self.turn_latencies_ms.append((time.monotonic() - self._turn_end_at) * 1000.0)
            self.worker.observe("turn_latency_seconds", self.turn_latencies_ms[-1] / 1000.0)
            self._turn_end_at = None
        self.speaking = "assistant"
        if self.recorder is not None:
            self.recorder.assistant(self.media.ticks - 1, frame)

    # recording and fallback transcription
    def _make_recorder(self) -> Optional[CallRecorder]:
        """A recorder when the agent says "record": true, or the call.record setting does (an
        agent's "record": false overrides the setting)."""
        record = getattr(self.agent, "record", None)
        if record is None:
            record = self.settings.tree["call"]["record"]
        if not record:
            return None
        directory = getattr(self.worker, "recordings_dir", None) or self.worker.transcripts_dir
        return CallRecorder(directory, self.id, self.media.line_format, self.created_at)

    def _tap_input(self, audio: bytes) -> None:
        """Each chunk of caller audio handed to the model (line codec, silence included)."""
        if self.recorder is not None:
            self.recorder.caller(audio)
        if self.stt is not None:
            session = self.session
            self.stt.on_input(audio, session.connections if session is not None else 0)

    def _finish_recording(self) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        try:
            path = recorder.close()
        except Exception:       # never stops the cleanup
            log.exception("call %s: cannot finish the recording", self.id)
            return
        if path is not None:
            self.recording_path = str(path)
            self.transcript.add("event", "recording saved", recording=path.name)

    def _finish_fallback(self) -> None:
        """The caller turns the model never transcribed go to the fallback transcriber now that
        the telephony is released: the transcript waits for them, at most the stt section's
        end_of_call_wait_s and no later than a stopping worker's deadline (relay/stt)."""
        if self.stt is None:
            return
        try:
            self.stt.finish(deadline=lambda: self.worker.transcripts_due_by)
        except Exception:       # never stops the cleanup
            log.exception("call %s: cannot finish the fallback transcriptions", self.id)

    # the model (RealtimeHandler)
    def rt_ready(self, first: bool) -> None:
        self.watch.ready()
        if not first:
            self.transcript.add("event", "model session replaced")
            return
        prompt = self.settings.tree["agent"]["initial_user_prompt"]
        if self.machine_message and self.session is not None:
            self._message_requested = True
            self.session.request_response(
                "You have reached an answering machine. Say exactly this message, word for "
                f"word, and nothing else: {self.machine_message}")
        elif prompt and self.session is not None:
            self.session.add_user_text(prompt)
        elif self.agent.greeting_instructions and self.session is not None:
            self.session.request_response(self.agent.greeting_instructions)

    def rt_speech_started(self, item_id: str, audio_start_ms: int) -> None:
        self.speaking = "caller"
        self.watch.caller_speaking()
        self._speech_started_at = time.monotonic()
        if self.stt is not None:
            self.stt.speech_started(item_id, audio_start_ms)
        cut = self.media.flush_playout()
        session = self.session
        if session is not None and session.response_id is not None:
            self._cancelled_responses.add(session.response_id)
            turn_detection = self.agent.turn_detection or {}
            if not turn_detection.get("interrupt_response", True):
                session.cancel_response()
        if cut is not None:
            self.barge_ins += 1
            self.barge_in_at.append(self._speech_started_at)
            self._barge_in_from = self._speech_started_at
            self.media.idle_tick_wanted = True
            heard = cut.heard_ms()
            self.truncations.append((cut.item_id, heard))
            # only an item of the current socket: a replaced one's items are not in its
            # conversation (nor are relay's own sounds)
            if session is not None and not cut.item_id.startswith(OWN_ITEMS) and \
                    session.owns_item(cut.item_id):
                session.send(ev.truncate(cut.item_id, heard))
            self.transcript.mark(cut.item_id, interrupted=True, heard_ms=heard)
            self.transcript.add("event", "caller interrupted the agent", item_id=cut.item_id,
                                heard_ms=heard)

    def rt_speech_stopped(self, item_id: str, audio_end_ms: int) -> None:
        self.speaking = "nobody"
        self._turn_end_at = time.monotonic()
        self.watch.turn_ended("the caller's turn")
        if self.stt is not None:
            self.stt.speech_stopped(item_id, audio_end_ms)

    def rt_committed(self, item_id: str) -> None:
        self.watch.turn_ended("the caller's turn")
        if self.stt is not None:
            self.stt.committed(item_id)

    def rt_user_transcript(self, item_id: str, text: str) -> None:
        if self.stt is not None and not self.stt.model_transcript(item_id, text):
            return      # the fallback's text of this turn is already in (see relay/stt)
        if text:
            self.transcript.add("caller", text, item_id=item_id)

    def rt_transcription_failed(self, item_id: str, message: str) -> None:
        self.transcript.add("event", f"transcription failed: {message}", item_id=item_id)
        if self.stt is not None:
            self.stt.model_failed(item_id)

    def rt_audio(self, response_id: str, item_id: str, audio: bytes) -> None:
        if response_id in self._cancelled_responses or self.watch.giving_up:
            return
        self.watch.audio_started()
        arrived = self.session.last_event_at if self.session is not None else None
        self.media.add_model_audio(item_id, audio, arrived)

    def rt_audio_done(self, item_id: str) -> None:
        self.media.playout.finish(item_id)

    def rt_assistant_transcript(self, item_id: str, text: str) -> None:
        progress = self.media.playout.items.get(item_id)
        fields: dict[str, Any] = {"item_id": item_id}
        if progress is not None and progress.dropped:
            fields.update(interrupted=True, heard_ms=progress.heard_ms())
        if text:
            self.transcript.add("assistant", text, **fields)

    def rt_function_call(self, response_id: str, call_id: str, name: str,
                         arguments: str) -> None:
        """Run the tool in its own greenlet (relay.tools.runner): its output goes to the model,
        then, once the response is done and all its outputs were sent, one response.create."""
        self.tools.on_function_call(response_id, call_id, name, arguments)

    def rt_response_done(self, response: dict) -> None:
        response_id = str(response.get("id", ""))
        self._cancelled_responses.discard(response_id)
        self.usage.add(response.get("usage"))
        self.watch.response_done(response)      # before the tools may ask for the next one
        self.tools.on_response_done(response_id, str(response.get("status", "")))
        if self._message_requested and self.state in ("setup", "active"):
            self._message_requested = False     # the message was said: hang up once heard
            self.end_after_playout("message left on the answering machine", response_id)
        if self.speaking == "assistant" and not self.media.playout.queued_bytes:
            self.speaking = "nobody"

    def rt_response_requested(self) -> None:
        self.watch.response_requested()

    def rt_bad_event(self, kind: str, problem: str) -> None:
        self.watch.bad_event(kind, problem)

    def rt_socket_lost(self, reason: str) -> None:
        self.transcript.add("event", f"model socket lost: {reason}", level="warning")
        self.watch.socket_lost(reason)

    def rt_error(self, code: str, message: str) -> None:
        self.model_errors[code] = self.model_errors.get(code, 0) + 1
        self.worker.count_model_error(code)
        if code != "session_expired":
            self.transcript.add("event", f"model error {code}: {message}", level="warning")

    def rt_failed(self, reason: str) -> None:
        """The model session cannot be recovered: the caller hears the apology, then the
        agent's ending (relay/call_watch.py)."""
        self.transcript.add("event", reason, level="error")
        self.watch.failed(reason)

    # operator changes (dashboard / API)
    def apply_config(self, changes: dict) -> dict:
        """Change the live call's instructions, voice, turn detection or tools: validated, then
        sent to the model as one session.update. Returns the session fields sent; ValueError
        (with the reason) when a change is not allowed."""
        allowed = {"instructions", "voice", "turn_detection", "tools"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}; "
                             f"allowed: {', '.join(sorted(allowed))}")
        session = self.session
        if session is None or self.state != "active":
            raise ValueError(f"the call is {self.state}, not active")
        update: dict[str, Any] = {}
        if "instructions" in changes:
            if not isinstance(changes["instructions"], str):
                raise ValueError("instructions must be a string")
            update["instructions"] = changes["instructions"]
        if "voice" in changes:
            if changes["voice"] not in VOICES:
                raise ValueError(f"voice must be one of {', '.join(VOICES)}")
            if session.model_has_spoken and changes["voice"] != self.current_voice():
                raise ValueError("the voice cannot change once the model has spoken in this "
                                 "session (the Realtime API refuses it)")
            update.setdefault("audio", {}).setdefault("output", {})["voice"] = changes["voice"]
        if "turn_detection" in changes:
            turn_detection = changes["turn_detection"]
            problem = turn_detection_problem(turn_detection)
            if problem:
                raise ValueError(problem)
            update.setdefault("audio", {}).setdefault("input", {})["turn_detection"] = \
                turn_detection
        if "tools" in changes:
            names = changes["tools"]
            declared = {tool["name"]: tool for tool in self.agent.tools}
            if not isinstance(names, list) or any(n not in declared for n in names):
                raise ValueError(f"tools must be a list of this agent's tools: "
                                 f"{', '.join(declared) or 'none'}")
            update["tools"] = ev.function_tools_named(self.agent, names)
        if not update:
            raise ValueError("nothing to change")
        session.update_session(update)
        self.transcript.add("event", "operator changed " + ", ".join(sorted(changes)),
                            changes=changes)
        return update

    def current_voice(self) -> str:
        session = self.session
        if session is None:
            return self.agent.voice
        return session.session.get("audio", {}).get("output", {}).get("voice", self.agent.voice)

    def hangup(self, reason: str = "hung up by the operator") -> None:
        self.end(reason)

    @property
    def outbound(self) -> Optional[dict]:
        """The call record's `outbound` dict (docs/HISTORY.md); None for an inbound call."""
        return None if self.dial is None else self.dial.outcome.record()

    # views
    def summary(self) -> dict:
        """The call as the dashboard and the history of ended calls show it. The texts that come
        from outside (an end reason quoting a model error, the caller's name) are scrubbed of
        the secrets; the rest are relay's own words and numbers."""
        session = self.session
        scrub = PROCESS.scrub
        return {
            "id": self.id, "direction": self.direction, "outbound": self.outbound,
            "caller": scrub(self.caller_number),
            "caller_name": scrub(self.caller_name),
            "agent": self.agent.key, "state": self.state, "speaking": self.speaking,
            "started_at": self.created_at,
            "duration_s": round(time.monotonic() - self.started_mono, 1),
            "end_reason": scrub(self.end_reason), "barge_ins": self.barge_ins,
            "setup_ms": None if self.setup_ms is None else round(self.setup_ms, 1),
            "turn_latency_ms": [round(x, 1) for x in self.turn_latencies_ms[-20:]],
            "audio": self.media.stats(),
            "model_errors": {scrub(code): n for code, n in self.model_errors.items()},
            "model_reconnects": session.reconnects if session else 0,
            "model_sockets": session.connections if session else 0,
            "model_failed_attempts": session.failed_attempts if session else 0,
            "model_resumed": session.resumed if session else 0,
            "model_bad_events": self.watch.bad_events,
            "watchdog": self.watch.view(),
        }

