"""One relay worker: the process-wide owner of ARI, the RTP socket, the pacer and the calls.

Owns: routing ARI events to calls (recognising and skipping the externalMedia and snoop
channels relay itself creates), starting a Call for each new caller, the dialer of outbound
calls (relay.outbound: it gets the events of its channels and starts their Calls through
start_call), the campaign engine's start and stop (relay.campaigns), reconciling calls with
Asterisk after the events socket reconnects, the worker's counters, a bounded event feed for
observers (the dashboard), a drain (no new calls; the live ones end by themselves up to a
deadline) and a clean stop that ends every call properly.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

import gevent
import gevent.event
import gevent.lock

from relay.ari import AriClient, AriError, AriEvents
from relay.backoff import CircuitBreaker
from relay.call import MEDIA_ARG, Call
from relay.campaigns.engine import CampaignEngine
from relay.campaigns.service import SharedCampaigns
from relay.config import PACKAGE_ROOT, AgentConfig, Settings
from relay.gc_pauses import GcPauses
from relay.history.pricing import warn_if_unpriced
from relay.history.record import call_record, dial_record
from relay.history.service import History
from relay.janitor import OWN_CHANNEL_PREFIXES, Janitor, backoff_delays
from relay.media import MediaSocket, Pacer
from relay.metrics import (
    AUDIO_LATENCY_BUCKETS_S,
    AUDIO_TOTALS,
    BARGE_IN_BUCKETS_S,
    TURN_LATENCY_BUCKETS_S,
    Histogram,
)
from relay.outbound.dialer import Dialer
from relay.redact import register, secrets_of
from relay.retention import Retention
from relay.socket_reader import SocketReader
from relay.socket_reader import available as socket_reader_available
from relay.stt import FallbackTranscriber
from relay.tools.webhook import WebhookClient

log = logging.getLogger(__name__)

CALLER_GONE_EVENTS = {"StasisEnd", "ChannelDestroyed", "ChannelHangupRequest"}
MEDIA_GONE_EVENTS = {"StasisEnd", "ChannelDestroyed"}
RECENT_EVENTS = 500
RELEASE_GRACE_S = 10.0      # a call's released bridge/channel is no leftover this long
HISTORY_STOP_S = 5.0        # stop(): how long the history writer may flush (then it spools)
TRANSCRIPT_MARGIN_S = 0.25  # stop(): ending calls' transcriptions end this long before its deadline


def resource_prefix(app: str) -> str:
    """What the ids of the bridges and channels a worker of ARI app `app` creates start with
    ("relay-" for app "relay": relay-br-..., relay-em-...). relay.fleet cleans up after a dead
    worker by it."""
    return f"{app}-"


class Worker:
    """Carries many calls. start() connects; stop() ends every call and releases everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        tree = settings.tree
        register(secrets_of(settings))      # every log record and transcript is scrubbed of them
        ari = tree["ari"]
        self.ari = AriClient(ari["url"], ari["username"], ari["password"], ari["app"],
                             timeout=ari["request_timeout_s"])
        self.webhooks = WebhookClient(pool_size=tree["tools"]["webhook_pool_size"])  # tools
        self.events = AriEvents(
            self.ari.events_url(ari["app"], f"{ari['username']}:{ari['password']}"),
            on_event=self.on_ari_event, on_connected=self._on_ari_connected,
            on_disconnected=self._on_ari_disconnected,
            initial_backoff=ari["reconnect_initial_s"], max_backoff=ari["reconnect_max_s"])
        rtp = tree["rtp"]
        self.media = MediaSocket(rtp["bind_host"], rtp["port_min"], rtp["port_max"])
        self.pacer = Pacer()
        # one greenlet reads every call's model socket (Linux; elsewhere one each)
        self.model_reader = SocketReader() if socket_reader_available() else None
        transcripts = Path(tree["call"]["transcripts_dir"])
        self.transcripts_dir = transcripts if transcripts.is_absolute() else (
            PACKAGE_ROOT / transcripts)
        self.resource_prefix = resource_prefix(ari["app"])
        # removes what relay created on Asterisk, however the requests fail (relay.janitor)
        self.janitor = Janitor(self.ari, self.resource_prefix)
        self.calls: dict[str, Call] = {}
        # every bridge and channel id a live call owns (created, or about to be) -> that call
        self.owned: dict[str, Call] = {}
        self._released: dict[str, float] = {}      # id -> when a call released it (release())
        self._reconcile_lock = gevent.lock.Semaphore()
        self._background: set[gevent.Greenlet] = set()     # reconciliations, the sweeper
        self._stopping = False
        self._calls_changed = gevent.event.Event()     # set by call_ended (drain waits on it)
        self._drain_until = 0.0
        # the monotonic time by which ending calls stop waiting for their end-of-call fallback
        # transcriptions (relay/stt): none but their own until stop() brings it forward
        self.transcripts_due_by = math.inf
        self.accepting = True
        self.recent: deque[dict] = deque(maxlen=RECENT_EVENTS)
        self._observers: list[Callable[[dict], None]] = []
        self.counters: dict[str, Any] = {
            "calls_total": 0, "calls_failed": 0, "calls_ended": 0, "ari_events": 0,
            "ari_reconnects": 0, "model_errors": {},
            "tool_calls": {},                   # {result: n}: count_tool_call()
            "fallback_transcriptions": {},      # {provider: {result: n}}: the transcriber's
            "setup_failures": {},               # {step: n}: calls hung up because setup failed
            "add_channel_retries": 0,           # addChannel 422s asked again
            "ari_bad_events": 0,                # events of an unexpected shape, ignored
            "reconciliations": 0,               # completed reconciliations with Asterisk
            "reconcile_failures": 0,            # attempts that failed (retried)
            "leftovers_removed": {"bridge": 0, "channel": 0},  # found by a sweep, deleted
            "waiting_callers": {"taken_over": 0, "hung_up": 0},  # found with no conversation
            "watchdog": {},                     # {retry|hold|giveup: n}: count_watchdog()
            "model_bad_events": 0,              # model events of an unexpected shape
        }
        # one breaker for every call's Realtime sockets (relay/backoff.py): an outage of the
        # model does not become a storm of sockets from every call at once
        openai = tree["openai"]
        self.model_breaker = CircuitBreaker(
            openai["breaker_threshold"], openai["breaker_cooldown_s"],
            probe_timeout_s=openai["connect_timeout_s"] + openai["healthy_after_s"] + 1.0)
        self.finished: deque[dict] = deque(maxlen=1000)   # summaries of ended calls
        # /metrics: histograms the calls observe into, and the audio figures of ended calls
        self.histograms: dict[str, Histogram] = {
            "turn_latency_seconds": Histogram(TURN_LATENCY_BUCKETS_S),
            "barge_in_reaction_seconds": Histogram(BARGE_IN_BUCKETS_S),
            "caller_audio_latency_seconds": Histogram(AUDIO_LATENCY_BUCKETS_S),
            "model_audio_latency_seconds": Histogram(AUDIO_LATENCY_BUCKETS_S),
        }
        self.audio_totals: dict[str, int] = dict.fromkeys(AUDIO_TOTALS, 0)
        self.gc_pauses = GcPauses()     # each collection stops every call: /metrics shows them
        self._setup_recording_and_stt(tree)
        self.dialer = Dialer(self)      # outbound calls (relay.outbound)
        # outbound campaigns (relay.campaigns): their state is in the history's database
        self.campaign_store: Optional[SharedCampaigns] = None
        self.campaigns: Optional[CampaignEngine] = None
        if self.history is not None and tree["campaigns"]["enabled"]:
            self.campaign_store = SharedCampaigns(self.history.target)
            self.campaigns = CampaignEngine(self, self.campaign_store)

    # life cycle
    def start(self) -> None:
        warn_if_unpriced(self.settings.tree)    # the history's cost is null without prices
        self.gc_pauses.install()
        self.media.start()
        self.pacer.start()
        if self.model_reader is not None:
            self.model_reader.start()
        self.events.start()
        self.retention.start()
        if self.history is not None:
            self.history.start()
        if self.campaigns is not None:
            self.campaigns.start()
        interval = self.settings.tree["ari"]["sweep_interval_s"]
        if interval > 0:
            self._spawn_background(self._sweep_periodically, interval)
        log.info("worker: app %r, RTP on %s:%d, agent %r", self.settings.get("ari.app"),
                 self.media.host, self.media.port, self.settings.get("agent.active"))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking calls, end every call cleanly (within timeout), release everything."""
        self.accepting = False
        self.gc_pauses.remove()
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        self.transcripts_due_by = deadline - min(TRANSCRIPT_MARGIN_S, timeout / 4)
        if self.campaigns is not None:
            self.campaigns.stop_claiming()
        self.dialer.stop()
        calls = list(self.calls.values())
        for call in calls:
            call.end("relay shutting down")
        for call in calls:
            call.wait_ended(max(0.0, deadline - time.monotonic()))
        self._stopping = True
        if self.campaigns is not None:      # the outcomes of the dials above are written
            self.campaigns.stop(max(0.5, deadline - time.monotonic()))
            self.campaign_store.close()
        gevent.killall(list(self._background), block=True, timeout=2)
        self.janitor.stop()
        self.events.stop()
        self.pacer.stop()
        if self.model_reader is not None:   # after the calls: their sockets are closed
            self.model_reader.stop()
        self.media.close()
        self.ari.close()
        self.webhooks.close()
        self.retention.stop()
        if self.stt is not None:
            self.stt.close()
        if self.history is not None:        # after the calls: their records are submitted
            self.history.stop(HISTORY_STOP_S)

    def drain(self, timeout: float, stop_timeout: float = 10.0) -> int:
        """Stop taking calls (a new caller is refused with congestion), let the live calls end
        by themselves for up to `timeout` seconds (end_drain_now() cuts that short), then stop():
        the calls still live are ended cleanly. Returns how many were still live then."""
        self.accepting = False
        self._drain_until = time.monotonic() + timeout
        while self.calls:
            left = self._drain_until - time.monotonic()
            if left <= 0:
                break
            self._calls_changed.clear()
            self._calls_changed.wait(min(left, 1.0))
        remaining = len(self.calls)
        log.info("worker: drained; ending %d call(s) still live", remaining)
        self.stop(stop_timeout)
        return remaining

    def end_drain_now(self) -> None:
        """A drain under way ends its wait now (its calls are then ended cleanly)."""
        self._drain_until = 0.0
        self._calls_changed.set()

    def _setup_recording_and_stt(self, tree: dict) -> None:
        """Where recordings go, their (and the transcripts') retention, and the fallback
        transcriber with its counters (per provider: ok, failed, skipped)."""
        recordings = Path(tree["call"]["recordings_dir"] or tree["call"]["transcripts_dir"])
        self.recordings_dir = recordings if recordings.is_absolute() else (
            PACKAGE_ROOT / recordings)
        # the history of ended calls (relay/history): written off the hub, read by the dashboard
        self.history: Optional[History] = History(tree) if tree["history"]["enabled"] else None
        self.history_store = self.history.reader if self.history is not None else None
        self.retention = Retention({self.transcripts_dir, self.recordings_dir},
                                   tree["call"]["retention_days"],
                                   expire_history=self.history.expire if self.history else None)
        stt = tree["stt"]
        self.stt: Optional[FallbackTranscriber] = None
        if stt["asyncSttEnabled"]:
            self.stt = FallbackTranscriber(stt, openai_api_key=tree["openai"]["api_key"],
                                           openai_auth=tree["openai"]["auth"])
            log.info("worker: fallback transcription by %s", self.stt.describe())
        self.counters["fallback_transcriptions"] = self.stt.counters if self.stt else {}

    @property
    def ready(self) -> bool:
        return self.events.connected and self.accepting

    # observers (dashboard, metrics)
    def subscribe(self, observer: Callable[[dict], None]) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: Callable[[dict], None]) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def _publish(self, message: dict) -> None:
        self.recent.append(message)
        for observer in tuple(self._observers):
            try:
                observer(message)
            except Exception:
                log.exception("worker: an observer failed; removing it")
                self.unsubscribe(observer)

    def publish_transcript(self, entry: dict) -> None:
        self._publish({"type": "transcript", "entry": entry})

    def publish_call(self, call: Call) -> None:
        self._publish({"type": "call", "call": call.summary()})

    def publish_dial(self, outcome, conversation: bool = False) -> None:
        """An outbound dial's final outcome (relay.outbound.DialOutcome), for observers; one
        that never became a conversation is recorded in the history here (a conversation's
        record, with its outcome, is written when its call ends)."""
        self._publish({"type": "dial", "dial": outcome.view()})
        if self.history is not None and not conversation:
            try:
                self.history.submit(dial_record(outcome, self))
            except Exception:
                log.exception("dial %s: cannot build its history record", outcome.channel_id)

    def count_model_error(self, code: str) -> None:
        errors = self.counters["model_errors"]
        errors[code] = errors.get(code, 0) + 1

    def count_watchdog(self, action: str) -> None:
        """A call's watchdog acted (retry, hold, giveup): relay_watchdog_total."""
        actions = self.counters["watchdog"]
        actions[action] = actions.get(action, 0) + 1

    def count_model_bad_event(self) -> None:
        """A model event of an unexpected shape, ignored: relay_model_bad_events_total."""
        self.counters["model_bad_events"] += 1

    def count_tool_call(self, result: str) -> None:
        """One tool call finished with result (e.g. ok, error code): relay_tool_calls_total."""
        results = self.counters["tool_calls"]
        results[result] = results.get(result, 0) + 1

    def observe(self, histogram: str, seconds: float) -> None:
        """Add an observation to one of self.histograms (turn latency, barge-in reaction)."""
        self.histograms[histogram].observe(seconds)

    # ARI
    def on_ari_event(self, event: dict) -> None:
        """One event of the app: never raises (an event of an unexpected shape is logged,
        counted and ignored; the events socket goes on)."""
        self.counters["ari_events"] += 1
        try:
            self._route_event(event)
        except Exception as exc:
            self._bad_event(event, exc)

    def _bad_event(self, event: Any, error: Exception) -> None:
        count = self.counters["ari_bad_events"] = self.counters["ari_bad_events"] + 1
        if count <= 5 or count % 1000 == 0:
            log.warning("worker: ignoring an ARI event of unexpected shape #%d (%s: %s): %.200s",
                        count, type(error).__name__, error, event)

    def _route_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "StasisStart":
            self._stasis_start(event)
            return
        if kind == "BridgeDestroyed":
            bridge = _field(event, "bridge")
            owner = self.owned.get(str(bridge.get("id", "")))
            if owner is not None:
                owner.on_resource_gone("bridge")
            return
        channel_id = str(_field(event, "channel").get("id", ""))
        if channel_id in self.dialer.pending:
            self.dialer.on_channel_event(str(kind), channel_id, event)
        call = self.calls.get(channel_id)
        if call is None:
            owner = self.owned.get(channel_id)
            if owner is not None and kind in MEDIA_GONE_EVENTS:
                owner.on_resource_gone("channel")
            return
        if kind in CALLER_GONE_EVENTS:
            call.on_caller_gone()
        elif kind == "ChannelDtmfReceived":
            call.on_dtmf(str(event.get("digit", "")))

    def _stasis_start(self, event: dict) -> None:
        channel = _field(event, "channel")
        channel_id = channel.get("id")
        if not isinstance(channel_id, str) or not channel_id:
            raise ValueError("StasisStart without a channel id")
        owner = self.owned.get(channel_id)
        if owner is not None:       # a call's externalMedia channel entered the app
            owner.on_media_in_app()
            return
        raw_args = event.get("args") or []
        if not isinstance(raw_args, list):
            raise ValueError("StasisStart args is not a list")
        # A dispatcher's move carries the original args comma-joined in one appArgs
        # (relay.fleet): "agent=support,x" counts as two args, as in Stasis(app,agent=support,x).
        args = [part for a in raw_args for part in str(a).split(",")]
        if self.dialer.on_stasis_start(channel, args):
            return      # an outbound dial's channel: the dialer starts its call (or not)
        if MEDIA_ARG in args or str(channel.get("name", "")).startswith(OWN_CHANNEL_PREFIXES):
            return      # relay's own channel of no live call: the sweep removes it
        self._take_call(channel, args)

    def _take_call(self, channel: dict, args: list[str]) -> Optional[Call]:
        """A caller in the app with no conversation: a new call (or refused when draining)."""
        channel_id = channel["id"]
        if channel_id in self.calls:
            return None
        if not self.accepting:
            gevent.spawn(self._refuse, channel_id)
            return None
        try:
            agent = self._agent_for(args)
        except KeyError as exc:
            log.warning("call %s: %s; using the active agent", channel_id, exc)
            agent = self.settings.agent()
        return self.start_call(channel, agent)

    def start_call(self, channel: dict, agent: AgentConfig, outbound: Any = None,
                   message: str = "") -> Optional[Call]:
        """A conversation on a channel in the app: an inbound caller, or an answered outbound
        dial (`outbound`: its relay.outbound Dial; `message`: leave it on a machine). None when
        the channel has one already. A draining worker still talks to the callee of a dial it
        placed before (a live call); its stop() ends the dials not yet answered first."""
        channel_id = channel["id"]
        if channel_id in self.calls or self._stopping:
            return None
        call = Call(self, channel, agent, outbound=outbound, message=message)
        self.calls[channel_id] = call
        self.counters["calls_total"] += 1
        call.start()
        self.publish_call(call)
        return call

    def _agent_for(self, args: list[str]) -> AgentConfig:
        """The agent chosen by the Stasis args (`agent=KEY` or a bare agent key)."""
        for arg in args:
            key = arg.split("=", 1)[1] if arg.startswith("agent=") else arg
            if key in self.settings.agents:
                return self.settings.agents[key]
            if arg.startswith("agent="):
                raise KeyError(f"unknown agent {key!r} in Stasis args")
        return self.settings.agent()

    def _refuse(self, channel_id: str) -> None:
        """A caller this worker will not take (it drains): hung up with congestion."""
        self.janitor.remove("caller", channel_id, reason="congestion")

    def count(self, counter: str) -> None:
        self.counters[counter] += 1

    def count_setup_failure(self, step: str) -> None:
        failures = self.counters["setup_failures"]
        failures[step] = failures.get(step, 0) + 1

    def call_ended(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self.counters["calls_ended"] += 1
        if call.end_reason.startswith(("internal error", "cannot reach", "model",
                                       "setup failed")):
            self.counters["calls_failed"] += 1
        summary = call.summary()
        for key in AUDIO_TOTALS:
            self.audio_totals[key] += int(summary["audio"].get(key, 0))
        summary["transcript"] = call.transcript.turns()
        self.finished.append(summary)
        if call.dial is not None:
            self.dialer.call_ended(call)
        if self.history is not None:
            try:
                self.history.submit(call_record(call))
            except Exception:       # a record that cannot be built never stops the call's end
                log.exception("call %s: cannot build its history record", call.id)
        self.publish_call(call)
        self._calls_changed.set()

    def _on_ari_connected(self) -> None:
        if self.events.connections > 1:
            self.counters["ari_reconnects"] += 1
        # On start (a previous run may have crashed) and after every reconnection (events
        # were lost): make relay's view and Asterisk's agree.
        self._spawn_background(self._reconcile)

    def _on_ari_disconnected(self, reason: str) -> None:
        log.warning("worker: ARI events lost (%s); calls keep their audio", reason)

    def _spawn_background(self, fn, *args) -> None:
        if self._stopping:
            return
        greenlet = gevent.spawn(fn, *args)
        self._background.add(greenlet)
        greenlet.link(self._background.discard)

    def _reconcile(self) -> None:
        """Reconcile until it succeeds (a failed listing is asked again, with backoff), as
        long as this events connection lasts: the next one starts its own."""
        connection = self.events.connections
        ari = self.settings.tree["ari"]
        for delay in backoff_delays(ari["reconnect_initial_s"], ari["reconnect_max_s"]):
            if self._stopping or self.events.connections != connection:
                return
            try:
                self.reconcile_once()
                return
            except AriError as exc:
                self.counters["reconcile_failures"] += 1
                log.warning("worker: cannot reconcile with Asterisk (%s); trying again in "
                            "%.1f s", exc, delay)
            gevent.sleep(delay)

    def _sweep_periodically(self, interval: float) -> None:
        while not self._stopping:
            gevent.sleep(interval)
            if not self.events.connected:
                continue            # the reconnection reconciles
            try:
                self.reconcile_once()
            except AriError as exc:
                self.counters["reconcile_failures"] += 1
                log.warning("worker: periodic sweep failed: %s", exc)

    def release(self, *resource_ids: str) -> None:
        """A call is done with these bridges/channels (their DELETE answered): no longer owned,
        but not leftovers either for RELEASE_GRACE_S (Asterisk tears a channel down after its
        DELETE's 204; a listing taken meanwhile still shows it)."""
        now = time.monotonic()
        for resource_id in resource_ids:
            self.owned.pop(resource_id, None)
            self._released[resource_id] = now
        while self._released and next(iter(self._released.values())) < now - RELEASE_GRACE_S:
            self._released.pop(next(iter(self._released)))

    def _recently_released(self) -> set[str]:
        since = time.monotonic() - RELEASE_GRACE_S
        return {rid for rid, at in self._released.items() if at > since}

    def reconcile_once(self) -> None:
        """One reconciliation with Asterisk (AriError when it cannot list):
        1. end the calls whose caller Asterisk no longer has (their hangup was not heard);
        2. delete the bridges and channels with our prefix that no live call owns (a crashed
           run's, a DELETE that failed, a creation that landed after its DELETE);
        3. callers in our app with no conversation (a lost StasisStart, a crashed run): taken
           over as new calls or hung up (call.waiting_callers), once a second listing a moment
           later confirms they are still waiting (their StasisStart may be on its way)."""
        with self._reconcile_lock:
            asked_at = time.monotonic()
            channels = self.janitor.list_channels()
            alive = {c.get("id") for c in channels}
            for call in list(self.calls.values()):
                if call.started_mono < asked_at and call.id not in alive:
                    call.on_caller_gone()
            leftovers = self.janitor.leftovers(
                lambda: set(self.owned) | self._recently_released() | self.dialer.channel_ids(),
                channels)
            for kind, ids in (("bridge", leftovers.bridges), ("channel", leftovers.channels)):
                for resource_id in ids:
                    log.info("worker: removing %s %s left on Asterisk by no live call", kind,
                             resource_id)
                    self.counters["leftovers_removed"][kind] += 1
                    self.janitor.remove(kind, resource_id)
            app = self.settings.tree["ari"]["app"]
            waiting = self._waiting(app, channels)
            if waiting:
                gevent.sleep(self.settings.tree["ari"]["waiting_confirm_s"])
                again = {c["id"] for c in self._waiting(app, self.janitor.list_channels())}
                for channel in waiting:
                    if channel["id"] in again and channel["id"] not in self.calls:
                        self._waiting_caller(channel)
            self.counters["reconciliations"] += 1

    def _waiting(self, app: str, channels: list[dict]) -> list[dict]:
        """Callers waiting in the app with no conversation: never an outbound dial's channel
        (the dialer decides about those, even between its StasisStart and its Call)."""
        return [c for c in self.janitor.waiting_callers(app, channels)
                if c.get("id") not in self.calls and not self.dialer.owns(str(c.get("id")))]

    def _waiting_caller(self, channel: dict) -> None:
        """A caller sitting in our app that no conversation has: take it over (its Stasis
        args from its dialplan) or hang it up, as call.waiting_callers says."""
        channel_id = str(channel["id"])
        policy = self.settings.tree["call"]["waiting_callers"]
        if policy == "take_over" and self.accepting:
            app_data = str((channel.get("dialplan") or {}).get("app_data") or "")
            args = [a for a in app_data.split(",")[1:] if a]
            log.info("call %s: waiting in the app with no conversation; taking it over",
                     channel_id)
            self.counters["waiting_callers"]["taken_over"] += 1
            self._take_call(channel, args)
            return
        log.info("call %s: waiting in the app with no conversation; hanging up", channel_id)
        self.counters["waiting_callers"]["hung_up"] += 1
        self.janitor.remove("caller", channel_id)

    def find_call(self, call_id: str) -> Optional[Call]:
        return self.calls.get(call_id)


def _field(event: dict, name: str) -> dict:
    """event[name] when it is an object; {} when absent; ValueError for any other shape."""
    value = event.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} is a {type(value).__name__}, not an object")
    return value
