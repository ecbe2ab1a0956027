"""The simulated Asterisk's state and the ARI events each change produces, in Asterisk's order.

Owns: channels, bridges, Stasis applications and their subscriptions, playbacks, live and stored
recordings, and the rules of Asterisk 22 as observed (shared/reference/asterisk/FACTS.md and
event-trace.json): which app hears which event, the hangup sequence, Local channel pairs,
externalMedia and snoop channels entering the app, cleanup that is not automatic, BRIDGEPEER
noise, simple_bridge vs softmix.

Sans-IO: operations mutate state, append `(apps, event, connection)` to `outbox`, schedule
timers (`next_deadline()` / `advance(now)`), and tell a MediaHooks object which audio sources
feed which externalMedia channel. Errors are AriError(status, message). No sockets, no greenlets;
time comes in as values (`now` monotonic seconds, `wall()` for timestamps).

Asynchronous as Asterisk is (relay.sim.pbx.timing, drawn from `timing_rng`): an externalMedia or
snoop channel exists, with its Dial/ChannelStateChange events, when the operation returns, and
enters Stasis (STASISSTATUS, StasisStart; `stasis_app` set) on a timer `stasis_entry_ms` later,
unless it was hung up first; until then it answers 409/422 "not in Stasis" but can be hung up.
`move`, `continue` and the teardown after DELETE /channels/{id} (after its ChannelHangupRequest)
are commands run `command_ms` later, in order per channel. A channel originated into an app
that has no events connection when it would enter fails as Stasis() does: STASISSTATUS=FAILED,
hung up. `PbxTiming.instant()` makes all of it synchronous (the model's own unit tests).

An originated PJSIP/NAME rings and ends as its callee (relay.sim.pbx.callees, looked up through
`callee_for`) says: Ringing `dial_ms` after the originate, then answered (Up, Dial ANSWER,
Stasis), refused (ChannelHangupRequest and ChannelDestroyed with the SIP answer's cause: 17
busy, 21 rejected, 34 congestion, 38 failure) or, at the originate's timeout, hung up by the
dial thread (ChannelDestroyed cause 19, no hangup request). As in res/ari/resource_channels.c,
the originate's app stays subscribed to the channel for its whole life (not only while it is in
Stasis). `continue` into one of `amd_contexts` runs the documented AMD context (docs/OUTBOUND.md):
AMD() (its result from the callee, after its analysis time), then
Stasis(${RELAY_APP},relay-amd,${AMDSTATUS},${AMDCAUSE}).
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.sim.pbx import events as ev
from relay.sim.pbx.sounds import EchoSource, InboundSource, Source, UnknownMedia, media_audio
from relay.sim.pbx.timing import PbxTiming, Range, draw_s

RECORDING_FORMATS = ("wav", "wav16", "gsm", "ulaw", "alaw", "sln", "sln16", "g722", "g729")
BRIDGE_TYPES = ("mixing", "holding", "dtmf_events", "proxy_media", "video_sfu", "video_single",
                "sdp_label")
SNOOP_DIRECTIONS = ("none", "both", "out", "in")
DTMF_DIGITS = set("0123456789ABCDabcd*#,")
# Sent to the application concerned only, never to subscribeAll watchers.
_ONLY_TO_THE_APP = ("StasisStart", "StasisEnd", "ApplicationMoveFailed")


class AriError(Exception):
    """An ARI error response: HTTP status and the `message` of its JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


class MediaHooks(Protocol):
    """What the model asks of the media layer (relay.sim.pbx.media.MediaEngine)."""

    def tick(self, now: float) -> int: ...
    def open_external(self, channel_id: str, host: str, port: int,
                      fmt: str = "ulaw") -> tuple[str, int]: ...
    def close_external(self, channel_id: str) -> None: ...
    def set_plan(self, channel_id: str, sources: list[Source], softmix: bool) -> None: ...
    def set_override(self, channel_id: str, source: Source | None) -> None: ...
    def set_inbound(self, channel_id: str, source: InboundSource | None) -> None: ...


class NullMedia:
    """Media hooks that do nothing: the model alone, for tests without sockets."""

    def __init__(self) -> None:
        self.plans: dict[str, tuple[list[Source], bool]] = {}
        self.inbound: dict[str, InboundSource] = {}
        self._port = itertools.count(20000, 2)

    def tick(self, now: float) -> int:
        return int(now * 1000)

    def open_external(self, channel_id: str, host: str, port: int,
                      fmt: str = "ulaw") -> tuple[str, int]:
        return "127.0.0.1", next(self._port)

    def close_external(self, channel_id: str) -> None:
        self.plans.pop(channel_id, None)
        self.inbound.pop(channel_id, None)

    def set_plan(self, channel_id: str, sources: list[Source], softmix: bool) -> None:
        self.plans[channel_id] = (sources, softmix)

    def set_override(self, channel_id: str, source: Source | None) -> None:
        pass

    def set_inbound(self, channel_id: str, source: InboundSource | None) -> None:
        if source is None:
            self.inbound.pop(channel_id, None)
        else:
            self.inbound[channel_id] = source


@dataclass(eq=False)
class Channel:
    id: str
    name: str
    tech: str                       # PJSIP, Local, UnicastRTP, Snoop
    state: str
    creationtime: str
    caller: tuple[str, str] = ("", "")        # (name, number)
    connected: tuple[str, str] = ("", "")
    context: str = "default"
    exten: str = "s"
    priority: int = 1
    app_name: str = ""
    app_data: str = ""
    protocol_id: str = ""
    accountcode: str = ""
    language: str = "en"
    outgoing: bool = False          # dialled by Asterisk: dialplan shows AppDial2 outside Stasis
    variables: dict[str, str] = field(default_factory=dict)
    channelvars: dict[str, str] = field(default_factory=dict)
    subscribers: set[str] = field(default_factory=set)
    stasis_app: str | None = None
    bridge: Bridge | None = None
    peer: Channel | None = None            # the other half of a Local pair
    snoop_target: Channel | None = None
    snoops: list[Channel] = field(default_factory=list)
    external: dict | None = None             # externalMedia parameters and local address
    voice: Source | None = None              # what this channel says into a bridge
    inbound: InboundSource | None = None     # externalMedia: what the relay sends into it
    playbacks: list[Playback] = field(default_factory=list)   # [current, queued...]
    recording: LiveRecording | None = None
    call_id: str | None = None
    muted: bool = False
    pending_caller: tuple[str, str] | None = None   # Local ;2: connected line to propagate
    hanging: bool = False
    destroyed: bool = False
    command_due: float = 0.0        # when the last command queued on the channel runs (FIFO)
    originate_app: str | None = None    # the app an originate subscribed it to (for its life)
    callee: Any = None                  # originated PJSIP: its relay.sim.pbx.callees.Callee

    def set_stasis_dialplan(self, app: str, args: list[str]) -> None:
        self.app_name = "Stasis"
        self.app_data = ",".join([app, *args])


@dataclass(eq=False)
class Bridge:
    id: str
    name: str
    bridge_type: str
    creationtime: str
    channels: list[Channel] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)   # Recorder/Announcer participants
    subscribers: set[str] = field(default_factory=set)
    playbacks: list[Playback] = field(default_factory=list)
    recording: LiveRecording | None = None
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def technology(self) -> str:
        if self.bridge_type == "holding":
            return "holding_bridge"
        return "softmix" if len(self.channels) + len(self.hidden) > 2 else "simple_bridge"


@dataclass(eq=False)
class Playback:
    id: str
    media: list[str]
    target_uri: str
    language: str
    channel: Channel | None = None
    bridge: Bridge | None = None
    index: int = 0
    state: str = "queued"
    source: Source | None = None
    hidden_name: str = ""
    generation: int = 0


@dataclass(eq=False)
class LiveRecording:
    name: str
    format: str
    target_uri: str
    channel: Channel | None = None
    bridge: Bridge | None = None
    state: str = "queued"
    duration: int | None = None
    started_at: float | None = None
    max_duration: int = 0
    hidden_name: str = ""
    generation: int = 0


@dataclass(eq=False)
class App:
    name: str
    connection: Any = None          # opaque token of the events WebSocket serving it
    subscribe_all: bool = False


Listener = Callable[[str, Channel, dict], None]


def split_args(app_args: str | None) -> list[str]:
    """appArgs as Asterisk splits them into StasisStart args: on commas; empty -> []."""
    return app_args.split(",") if app_args else []


def parse_caller_id(text: str | None) -> tuple[str, str]:
    """'"Name" <number>' / 'Name <number>' / 'number' -> (name, number)."""
    if not text:
        return "", ""
    text = text.strip()
    if "<" in text and text.endswith(">"):
        name, _, number = text[:-1].partition("<")
        return name.strip().strip('"'), number.strip()
    return "", text


class Pbx:
    """The state of one simulated Asterisk. Every public method is one ARI or caller action."""

    def __init__(self, media: MediaHooks | None = None, *, asterisk_id: str = "02:fc:00:00:00:01",
                 wall: Callable[[], float] = time.time, rng: random.Random | None = None,
                 listener: Listener | None = None, now: float = 0.0,
                 timing: PbxTiming | None = None,
                 timing_rng: random.Random | None = None) -> None:
        self.media: MediaHooks = media if media is not None else NullMedia()
        self.asterisk_id = asterisk_id
        self.wall = wall
        self.rng = rng or random.Random()
        self.timing = timing if timing is not None else PbxTiming.realistic()
        self.timing_rng = timing_rng or random.Random()
        self.listener = listener
        self.now = now
        self.started_wall = wall()
        self.channels: dict[str, Channel] = {}
        self.bridges: dict[str, Bridge] = {}
        self.apps: dict[str, App] = {}
        self.playbacks: dict[str, Playback] = {}
        self.recordings: dict[str, LiveRecording] = {}
        self.stored: dict[str, str] = {}           # stored recording name -> format
        self.global_vars: dict[str, str] = {}
        self.outbox: list[tuple[tuple[str, ...], dict, Any]] = []
        self.history_limit = 0                      # >0 keeps the last N events for inspection
        self.history: list[dict] = []
        # every PJSIP originate, as Asterisk received it: {"at": epoch, "endpoint",
        # "channel_id", "live": originated PJSIP channels alive at that moment, this one
        # included} (campaign tests check the pace and the concurrency from here)
        self.originates: list[dict] = []
        self.outbound_live: set[str] = set()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._chan_seq = itertools.count()
        self._snoop_seq = itertools.count()
        self._uid_seq = itertools.count(1)
        self._id_seq = itertools.count(1)
        # who answers an originated PJSIP/NAME (relay.sim.pbx.callees; None: answers at once,
        # silent), and the dialplan contexts that run AMD() then Stasis() (docs/OUTBOUND.md)
        self.callee_for: Callable[[str], Any] | None = None
        self.amd_contexts: set[str] = {"relay-amd"}

    # ------------------------------------------------------------------ time
    def advance(self, now: float) -> None:
        """Run every timer due at `now`."""
        self.now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn = heapq.heappop(timers)
            fn()

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def _at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_seq), fn))

    def _later(self, ms: Range, fn: Callable[[], None]) -> None:
        """Run `fn` after a delay drawn from `ms`; at once (inside this step) when it is 0."""
        delay = draw_s(self.timing_rng, ms)
        if delay <= 0.0:
            fn()
        else:
            self._at(self.now + delay, fn)

    def _command(self, ch: Channel, fn: Callable[[], None]) -> None:
        """A command queued to the channel's Stasis thread: run `command_ms` later, after the
        commands queued before it on the same channel."""
        when = self.now + draw_s(self.timing_rng, self.timing.command_ms)
        if when <= self.now and ch.command_due <= self.now:
            fn()
            return
        when = max(when, ch.command_due)
        ch.command_due = when
        self._at(when, fn)

    # ------------------------------------------------------------------ events
    def _send(self, type_: str, ch: Channel | None = None, br: Bridge | None = None,
              apps: set[str] | None = None, conn: Any = None, **fields: Any) -> None:
        to = set(apps) if apps else set()
        if ch is not None:
            to |= ch.subscribers
        if br is not None:
            to |= br.subscribers
        if type_ not in _ONLY_TO_THE_APP:
            for app in self.apps.values():
                if app.subscribe_all:
                    to.add(app.name)
        if not to and conn is None and not self.history_limit:
            return
        event = ev.event(type_, self.wall(), self.asterisk_id, **fields)
        if self.history_limit:
            self.history.append(event)
            if len(self.history) > self.history_limit:
                del self.history[: len(self.history) - self.history_limit]
        if to or conn is not None:
            self.outbox.append((tuple(sorted(to)), event, conn))

    def _chan_event(self, type_: str, ch: Channel, **fields: Any) -> None:
        self._send(type_, ch, channel=ev.channel_json(ch), **fields)

    def _varset(self, ch: Channel, name: str, value: str) -> None:
        ch.variables[name] = value
        self._send("ChannelVarset", ch, variable=name, value=value, channel=ev.channel_json(ch))

    def _notify(self, kind: str, ch: Channel, **data: Any) -> None:
        if self.listener is not None and ch.call_id is not None:
            self.listener(kind, ch, data)

    # ------------------------------------------------------------------ ids and names
    def _uniqueid(self) -> str:
        return f"{int(self.started_wall)}.{next(self._uid_seq)}"

    def _seq_name(self) -> str:
        return f"{next(self._chan_seq):08x}"

    def _new_channel(self, cid: str | None, name: str, tech: str, state: str,
                     **kw: Any) -> Channel:
        cid = cid or self._uniqueid()
        if cid in self.channels:
            raise AriError(409, "Channel with given unique ID already exists")
        ch = Channel(id=cid, name=name, tech=tech, state=state,
                     creationtime=ev.ari_time(self.wall()), **kw)
        self.channels[cid] = ch
        return ch

    def get_channel(self, cid: str) -> Channel:
        ch = self.channels.get(cid)
        if ch is None:
            raise AriError(404, "Channel not found")
        return ch

    def get_bridge(self, bid: str) -> Bridge:
        br = self.bridges.get(bid)
        if br is None:
            raise AriError(404, "Bridge not found")
        return br

    def _stasis_channel(self, cid: str) -> Channel:
        ch = self.get_channel(cid)
        if ch.stasis_app is None:
            raise AriError(409, "Channel not in Stasis application")
        return ch

    # ------------------------------------------------------------------ applications
    def register_app(self, name: str, connection: Any, subscribe_all: bool = False) -> Any:
        """An events WebSocket for `name` connected; returns the connection it replaced."""
        app = self.apps.get(name)
        if app is None:
            app = self.apps[name] = App(name)
        old = app.connection
        if old is not None and old is not connection:
            event = ev.event("ApplicationReplaced", self.wall(), self.asterisk_id)
            self.outbox.append(((name,), event, old))
        app.connection = connection
        app.subscribe_all = subscribe_all
        return old

    def unregister_app(self, name: str, connection: Any) -> None:
        """The WebSocket closed: the app goes inactive; its channels stay in Stasis."""
        app = self.apps.get(name)
        if app is not None and app.connection is connection:
            app.connection = None
            app.subscribe_all = False

    def app_active(self, name: str) -> bool:
        app = self.apps.get(name)
        return app is not None and app.connection is not None

    def application_json(self, name: str) -> dict:
        if name not in self.apps:
            raise AriError(404, "Application does not exist.")
        return {
            "name": name,
            "channel_ids": [c.id for c in self.channels.values() if name in c.subscribers],
            "bridge_ids": [b.id for b in self.bridges.values() if name in b.subscribers],
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [],
        }

    # ------------------------------------------------------------------ entering Stasis
    def _enter_stasis(self, ch: Channel, app: str, args: list[str], varset: bool = True) -> None:
        ch.stasis_app = app
        ch.subscribers.add(app)
        ch.set_stasis_dialplan(app, args)
        if varset:
            self._varset(ch, "STASISSTATUS", "")
        self._chan_event("StasisStart", ch, args=list(args))

    def _originated_enters(self, ch: Channel, app: str, args: list[str],
                           varset: bool = True) -> None:
        """An originated channel, answered, runs Stasis(app): it enters, or, with no events
        connection for the app ("Stasis app 'x' not active"), STASISSTATUS=FAILED and it is hung
        up. Nothing when it was hung up meanwhile."""
        if ch.destroyed or ch.hanging or ch.stasis_app is not None:
            return
        if not self.app_active(app):
            ch.set_stasis_dialplan(app, args)
            self._varset(ch, "STASISSTATUS", "FAILED")
            self._hangup(ch, 16, soft=False)
            return
        self._enter_stasis(ch, app, args, varset)

    def inbound_call(self, app: str, *, call_id: str, caller: tuple[str, str] = ("", ""),
                     endpoint: str = "caller", exten: str = "s", context: str = "from-external",
                     args: list[str] | None = None, answer: bool = True,
                     variables: dict[str, str] | None = None,
                     channel_id: str | None = None) -> Channel | None:
        """A SIP call arrives and runs `[Answer()], Stasis(app[,args])`. None when the app is not
        registered (STASISSTATUS=FAILED: the dialplan ends and the call is hung up)."""
        ch = self._new_channel(channel_id, f"PJSIP/{endpoint}-{self._seq_name()}", "PJSIP", "Ring",
                               caller=caller, context=context, exten=exten,
                               protocol_id=f"{self.rng.getrandbits(64):016x}@127.0.0.1")
        ch.call_id = call_id
        ch.voice = Source(ch.id)
        ch.variables.update(variables or {})
        self._send("ChannelCreated", ch, channel=ev.channel_json(ch))
        if answer:
            ch.app_name, ch.app_data = "Answer", ""
            self._chan_event("ChannelDialplan", ch, dialplan_app="Answer", dialplan_app_data="")
            ch.state = "Up"
            self._chan_event("ChannelStateChange", ch)
            ch.priority = 2
        args = list(args or [])
        ch.set_stasis_dialplan(app, args)
        self._chan_event("ChannelDialplan", ch, dialplan_app="Stasis",
                         dialplan_app_data=ch.app_data)
        if not self.app_active(app):
            self._varset(ch, "STASISSTATUS", "FAILED")
            self._hangup(ch, 16, soft=False)
            return None
        self._enter_stasis(ch, app, args)
        return ch

    # ------------------------------------------------------------------ originate
    def _callee(self, resource: str) -> Any:
        """Who answers PJSIP/RESOURCE: registered by the whole resource, or (NUMBER@trunk,
        the number dialled through a trunk endpoint) by the number alone."""
        if self.callee_for is None:
            return None
        callee = self.callee_for(resource)
        if callee is None and "@" in resource:
            callee = self.callee_for(resource.partition("@")[0])
        return callee

    def originate(self, endpoint: str, *, app: str | None = None, app_args: str | None = None,
                  extension: str | None = None, context: str | None = None,
                  priority: int | None = None, caller_id: str | None = None,
                  timeout: int = 30, variables: dict[str, str] | None = None,
                  channel_id: str | None = None, other_channel_id: str | None = None
                  ) -> Channel:
        """POST /channels: dial `endpoint`; with `app` the answered channel enters Stasis."""
        tech, _, resource = endpoint.partition("/")
        if not tech or not resource:
            raise AriError(400, "Invalid endpoint specified")
        if app and extension:
            raise AriError(400, "Application and extension are mutually exclusive")
        if not app and not extension:
            raise AriError(400, "Application or extension must be specified")
        for cid in (channel_id, other_channel_id):
            if cid and cid in self.channels:
                raise AriError(409, "Channel with given unique ID already exists")
        caller = parse_caller_id(caller_id)
        args = split_args(app_args)
        if tech == "Local":
            dest = resource.split("/", 1)[0]
            exten, _, ctx = dest.partition("@")
            ctx = ctx or "default"
            seq = self._seq_name()
            one = self._new_channel(channel_id, f"Local/{dest}-{seq};1", "Local", "Down",
                                    caller=caller, connected=caller, context=ctx, exten=exten,
                                    app_name="AppDial2", app_data="(Outgoing Line)", outgoing=True)
            two = self._new_channel(other_channel_id or f"{one.id};2", f"Local/{dest}-{seq};2",
                                    "Local", "Ring", caller=caller, connected=caller,
                                    context=ctx, exten=exten)
            one.peer, two.peer = two, one
            one.variables.update(variables or {})
            one.voice = Source(one.id)
            if app:
                one.subscribers.add(app)
                two.subscribers.add(app)
            self._at(self.now, lambda: self._local_answer(one, two, app, args, dest))
            return one
        if tech != "PJSIP":
            # ast_dial_prerun finds no such channel driver: ast_ari_response_alloc_failed
            raise AriError(500, "Allocation failed")
        ch = self._new_channel(channel_id, f"PJSIP/{resource}-{self._seq_name()}", "PJSIP", "Down",
                               caller=caller, connected=caller, context=context or "default",
                               exten=extension or "s", app_name="AppDial2",
                               app_data="(Outgoing Line)", outgoing=True)
        ch.variables.update(variables or {})
        ch.voice = Source(ch.id)
        if app:
            ch.subscribers.add(app)
            ch.originate_app = app
        ch.callee = self._callee(resource)
        self.outbound_live.add(ch.id)
        self.originates.append({"at": time.time(), "endpoint": endpoint, "channel_id": ch.id,
                                "live": len(self.outbound_live)})
        started = self.now
        self._at(self.now, lambda: self._outbound_dial(ch, app, args, resource, timeout,
                                                        started))
        return ch

    def _outbound_dial(self, ch: Channel, app: str | None, args: list[str], dialstring: str,
                       timeout: int, started: float) -> None:
        """The dial thread: ast_call (Dial ""), then the callee's 180 `dial_ms` later, then
        its final answer after its ring time, unless the originate's timeout comes first."""
        if ch.destroyed or ch.hanging:
            return
        self._send("Dial", ch, dialstatus="", forward="", dialstring=dialstring,
                   peer=ev.channel_json(ch))
        callee = ch.callee
        if callee is None:          # no callee registered: it answers at once
            self._outbound_answer(ch, app, args, dialstring)
            return
        ringing_at = started + draw_s(self.timing_rng, self.timing.dial_ms)
        final_at = ringing_at + draw_s(self.timing_rng, callee.ring_ms)
        self._at(ringing_at, lambda: self._outbound_ringing(ch, dialstring))
        timeout_at = started + timeout if timeout > 0 else None
        if callee.behaviour == "no_answer" and timeout_at is None:
            return              # rings for ever (until relay hangs it up)
        if timeout_at is not None and (callee.behaviour == "no_answer" or final_at >= timeout_at):
            self._at(timeout_at, lambda: self._outbound_timeout(ch))
        elif callee.refusal is not None:
            self._at(final_at, lambda: self._outbound_refused(ch, dialstring))
        else:
            self._at(final_at, lambda: self._outbound_answer(ch, app, args, dialstring))

    def _outbound_ringing(self, ch: Channel, dialstring: str) -> None:
        if ch.destroyed or ch.hanging or ch.state != "Down":
            return
        ch.state = "Ringing"
        self._chan_event("ChannelStateChange", ch)
        self._send("Dial", ch, dialstatus="RINGING", forward="", dialstring=dialstring,
                   peer=ev.channel_json(ch))

    def _outbound_refused(self, ch: Channel, dialstring: str) -> None:
        """A final SIP answer (486, 603, 503, 500): chan_pjsip queues the hangup with its
        cause, the dial thread reports the status and hangs the channel up."""
        if ch.destroyed or ch.hanging:
            return
        refusal = ch.callee.refusal
        ch.hanging = True
        self._chan_event("ChannelHangupRequest", ch, cause=refusal.cause)
        self._send("Dial", ch, dialstatus=refusal.dialstatus, forward="", dialstring=dialstring,
                   peer=ev.channel_json(ch))
        self._destroy(ch, refusal.cause)

    def _outbound_timeout(self, ch: Channel) -> None:
        """The originate's timeout (main/dial.c handle_timeout_trip): hangupcause 19 and
        ast_hangup, with no hangup request."""
        if ch.destroyed or ch.hanging or ch.state == "Up":
            return
        ch.hanging = True
        self._destroy(ch, 19)

    def _local_answer(self, one: Channel, two: Channel, app: str | None, args: list[str],
                      dest: str) -> None:
        if one.destroyed:
            return
        if one.caller != ("", ""):
            self._chan_event("ChannelCallerId", two, caller_presentation=0,
                             caller_presentation_txt="Presentation Allowed, Not Screened")
            self._chan_event("ChannelConnectedLine", two)
        self._send("Dial", one, dialstatus="", forward="", dialstring=dest,
                   peer=ev.channel_json(one))
        two.app_name, two.app_data = "Answer", ""
        self._chan_event("ChannelDialplan", two, dialplan_app="Answer", dialplan_app_data="")
        two.state = "Up"
        self._chan_event("ChannelStateChange", two)
        one.state = "Up"
        self._chan_event("ChannelStateChange", one)
        self._send("Dial", one, dialstatus="ANSWER", forward="", dialstring=dest,
                   peer=ev.channel_json(one))
        if app:
            self._originated_enters(one, app, args)
            if one.destroyed:
                return
        if self.listener is not None:
            self.listener("local_dialplan", two, {"voice": one, "context": two.context,
                                                  "exten": two.exten})

    def _outbound_answer(self, ch: Channel, app: str | None, args: list[str],
                         dialstring: str) -> None:
        if ch.destroyed or ch.hanging:
            return
        ch.state = "Up"
        self._chan_event("ChannelStateChange", ch)
        self._send("Dial", ch, dialstatus="ANSWER", forward="", dialstring=dialstring,
                   peer=ev.channel_json(ch))
        if app:
            self._originated_enters(ch, app, args)
            if ch.destroyed:
                return
        if self.listener is not None:
            self.listener("outbound_answered", ch, {"endpoint": dialstring})

    # ------------------------------------------------------------------ externalMedia, snoop
    def external_media(self, *, app: str, external_host: str, fmt: str = "ulaw",
                       channel_id: str | None = None, data: str | None = None,
                       variables: dict[str, str] | None = None,
                       direction: str = "both") -> Channel:
        """POST /channels/externalMedia (RTP over UDP). The channel is created and answered now;
        it enters `app` `timing.stasis_entry_ms` later (FACTS.md: the 200 answer does not mean
        the channel is in the app yet)."""
        host, _, port_text = external_host.rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise AriError(400, "external_host must be in the format host:port")
        cid = channel_id or self._uniqueid()
        if cid in self.channels:
            raise AriError(409, "Channel with given unique ID already exists")
        try:
            local_addr, local_port = self.media.open_external(cid, host, int(port_text), fmt)
        except OSError as exc:
            raise AriError(500, f"Failed to open an RTP socket: {exc}") from None
        name = f"UnicastRTP/{external_host}-0x{0x7F60F4000000 + self.rng.getrandbits(24) * 16:x}"
        ch = self._new_channel(cid, name, "UnicastRTP", "Down", app_name="AppDial2",
                               app_data="(Outgoing Line)", outgoing=True)
        ch.external = {"host": host, "port": int(port_text), "format": fmt,
                       "direction": direction, "local_address": local_addr,
                       "local_port": local_port}
        ch.inbound = InboundSource(cid)
        ch.channelvars = {"UNICASTRTP_LOCAL_ADDRESS": local_addr,
                          "UNICASTRTP_LOCAL_PORT": str(local_port)}
        ch.variables.update(ch.channelvars)
        ch.variables.update(variables or {})
        ch.subscribers.add(app)
        dialstring = f"{external_host}/c({fmt})"
        self._send("Dial", ch, dialstatus="", forward="", dialstring=dialstring,
                   peer=ev.channel_json(ch))
        ch.state = "Up"
        self._chan_event("ChannelStateChange", ch)
        self._send("Dial", ch, dialstatus="ANSWER", forward="", dialstring=dialstring,
                   peer=ev.channel_json(ch))
        args = [data] if data else []
        self._later(self.timing.stasis_entry_ms, lambda: self._originated_enters(ch, app, args))
        return ch

    def snoop(self, cid: str, *, app: str, spy: str = "none", whisper: str = "none",
              app_args: str | None = None, snoop_id: str | None = None) -> Channel:
        """POST /channels/{id}/snoop: a Snoop/ channel on `cid`, entering `app`
        `timing.stasis_entry_ms` later (no STASISSTATUS event for snoops, as in the trace)."""
        target = self.get_channel(cid)
        if snoop_id and snoop_id in self.channels:
            raise AriError(409, "Channel with given unique ID already exists")
        name = f"Snoop/{target.id}-{next(self._snoop_seq):08x}"
        sn = self._new_channel(snoop_id, name, "Snoop", "Up")
        sn.snoop_target = target
        target.snoops.append(sn)
        sn.subscribers.add(app)
        if target.bridge is not None:
            self._bridgepeer_noise(target.bridge)
        args = split_args(app_args)
        self._later(self.timing.stasis_entry_ms,
                    lambda: self._originated_enters(sn, app, args, varset=False))
        return sn

    # ------------------------------------------------------------------ channel operations
    def answer(self, cid: str) -> None:
        ch = self._stasis_channel(cid)
        if ch.state != "Up":
            ch.state = "Up"
            self._chan_event("ChannelStateChange", ch)
            self._notify("answered", ch)

    def hangup(self, cid: str, reason: str | None = None,
               reason_code: str | None = None) -> None:
        """DELETE /channels/{id}: a soft hangup request (cause 32, soft) then the hangup."""
        ch = self.get_channel(cid)
        if reason and reason_code:
            raise AriError(400, "The reason and reason_code can't both be specified")
        cause = 16
        if reason_code:
            if not reason_code.isdigit() or not 0 <= int(reason_code) <= 127:
                raise AriError(400, "Invalid reason for hangup provided")
            cause = int(reason_code)
        elif reason:
            if reason not in ev.HANGUP_REASONS:
                raise AriError(400, "Invalid reason for hangup provided")
            cause = ev.HANGUP_REASONS[reason]
        if ch.hanging:          # already being hung up: Asterisk still finds it, 204
            return
        ch.hanging = True
        self._chan_event("ChannelHangupRequest", ch, cause=ev.SOFTHANGUP_EXPLICIT, soft=True)
        # The soft hangup is noticed by the channel's thread, which then tears it down: until
        # then the channel is still listed, in its bridge and in Stasis.
        self._command(ch, lambda: self._teardown(ch, cause))

    def caller_hangup(self, ch: Channel, cause: int = 16) -> None:
        """The far end hangs up (SIP BYE, or the dialplan of a Local ;2 ends)."""
        if ch.hanging or ch.destroyed:
            return
        self._hangup(ch, cause, soft=False)

    def _hangup(self, ch: Channel, cause: int, soft: bool) -> None:
        ch.hanging = True
        if soft:
            self._chan_event("ChannelHangupRequest", ch, cause=ev.SOFTHANGUP_EXPLICIT, soft=True)
        else:
            self._chan_event("ChannelHangupRequest", ch, cause=cause)
        self._teardown(ch, cause)

    def _teardown(self, ch: Channel, cause: int) -> None:
        """After the hangup request: stop its media, leave the bridge and Stasis, the Local
        peer and the snoops go too, destroyed."""
        if ch.destroyed:
            return
        self._stop_channel_media(ch)
        if ch.bridge is not None:
            self._leave_bridge(ch)
        if ch.stasis_app is not None:
            self._leave_stasis(ch)
        peer = ch.peer if ch.peer is not None and not ch.peer.hanging else None
        if peer is not None:
            peer.hanging = True
            self._chan_event("ChannelHangupRequest", peer, cause=16)
            self._stop_channel_media(peer)
            if peer.bridge is not None:
                self._leave_bridge(peer)
            if peer.stasis_app is not None:
                self._leave_stasis(peer)
        for sn in list(ch.snoops):
            self._end_snoop(sn)
        self._destroy(ch, cause)
        if peer is not None:
            self._chan_event("ChannelHangupRequest", peer, cause=16, soft=True)
            for sn in list(peer.snoops):
                self._end_snoop(sn)
            self._destroy(peer, 16)

    def _leave_stasis(self, ch: Channel) -> None:
        self._chan_event("StasisEnd", ch)
        ch.stasis_app = None
        self._varset(ch, "STASISSTATUS", "SUCCESS")

    def _end_snoop(self, sn: Channel) -> None:
        """A snoop whose target went away: StasisEnd, and it is gone (no ChannelDestroyed)."""
        if sn.snoop_target is not None and sn in sn.snoop_target.snoops:
            sn.snoop_target.snoops.remove(sn)
        if sn.recording is not None:
            self._finish_recording(sn.recording, "done")
        if sn.stasis_app is not None:
            self._chan_event("StasisEnd", sn)
            sn.stasis_app = None
        sn.hanging = sn.destroyed = True
        self.channels.pop(sn.id, None)

    def _stop_channel_media(self, ch: Channel) -> None:
        for pb in list(ch.playbacks):
            self._finish_playback(pb, "done", restart_queue=False)
        if ch.recording is not None:
            self._finish_recording(ch.recording, "done")
        if ch.voice is not None:
            ch.voice.stop()

    def _destroy(self, ch: Channel, cause: int) -> None:
        if ch.outgoing:
            ch.app_name, ch.app_data = "AppDial2", "(Outgoing Line)"
        elif ch.tech == "Local":
            ch.app_name, ch.app_data = "", ""
        if ch.tech == "Snoop":
            self._end_snoop(ch)
            return
        self._chan_event("ChannelDestroyed", ch, cause=cause, cause_txt=ev.cause_text(cause))
        ch.destroyed = True
        self.outbound_live.discard(ch.id)
        if ch.snoop_target is not None and ch in ch.snoop_target.snoops:
            ch.snoop_target.snoops.remove(ch)
        self.channels.pop(ch.id, None)
        if ch.external is not None:
            self.media.close_external(ch.id)
        self._notify("destroyed", ch, cause=cause)

    def continue_in_dialplan(self, cid: str, context: str | None = None,
                             extension: str | None = None, priority: int | None = None,
                             label: str | None = None) -> None:
        """POST /channels/{id}/continue: leave Stasis. The simulated dialplan then ends the call
        (the app, no longer subscribed, hears nothing more about it). A command: it happens
        `timing.command_ms` after the 204."""
        ch = self._stasis_channel(cid)
        self._command(ch, lambda: self._continue(ch, context, extension, priority, label))

    def _continue(self, ch: Channel, context: str | None, extension: str | None,
                  priority: int | None, label: str | None) -> None:
        if ch.destroyed or ch.hanging or ch.stasis_app is None:
            return
        if ch.bridge is not None:
            self._leave_bridge(ch)
        self._leave_stasis(ch)
        ch.subscribers.clear()
        if ch.originate_app is not None:        # the originate's subscription lasts
            ch.subscribers.add(ch.originate_app)
        if context:
            ch.context = context
        if extension:
            ch.exten = extension
        ch.priority = priority if priority is not None else ch.priority + 1
        if ch.context in self.amd_contexts:
            self._run_amd(ch)
            return
        self._notify("continued", ch, context=ch.context, extension=ch.exten,
                     priority=ch.priority, label=label)
        self._at(self.now, lambda: self.caller_hangup(ch))

    def _run_amd(self, ch: Channel) -> None:
        """The documented AMD context: AMD(), then (after its analysis, and for a machine the
        end of its greeting and beep) Stasis(${RELAY_APP},relay-amd,STATUS,CAUSE)."""
        ch.app_name, ch.app_data = "AMD", ""
        self._chan_event("ChannelDialplan", ch, dialplan_app="AMD", dialplan_app_data="")
        callee = ch.callee
        if callee is None:      # nobody to listen to: AMD's total analysis time, NOTSURE
            status, cause, after_s = "NOTSURE", "TOOLONG-5000", 5.0
        else:
            status, cause = callee.amd_status, callee.amd_cause
            after_s = callee.amd_after_ms / 1000.0
        self._at(self.now + after_s, lambda: self._amd_done(ch, status, cause))

    def _amd_done(self, ch: Channel, status: str, cause: str) -> None:
        if ch.destroyed or ch.hanging:
            return
        self._varset(ch, "AMDSTATUS", status)
        self._varset(ch, "AMDCAUSE", cause)
        app = ch.variables.get("RELAY_APP", "")
        args = ["relay-amd", status, cause]
        ch.priority += 1
        ch.set_stasis_dialplan(app, args)
        self._chan_event("ChannelDialplan", ch, dialplan_app="Stasis",
                         dialplan_app_data=ch.app_data)
        self._originated_enters(ch, app, args)

    def redirect(self, cid: str, endpoint: str) -> None:
        ch = self._stasis_channel(cid)
        tech = endpoint.partition("/")[0]
        if tech != ch.tech or ch.tech != "PJSIP":
            raise AriError(422, "Endpoint is not the same type as the channel")
        self._notify("redirected", ch, endpoint=endpoint)
        self._at(self.now, lambda: self.caller_hangup(ch))

    def move(self, cid: str, app: str, app_args: str | None = None) -> None:
        """POST /channels/{id}/move: StasisEnd in the current app, StasisStart in `app` (or
        ApplicationMoveFailed when `app` is not active). A command: it happens
        `timing.command_ms` after the 204."""
        ch = self._stasis_channel(cid)
        args = split_args(app_args)
        self._command(ch, lambda: self._move(ch, app, args))

    def _move(self, ch: Channel, app: str, args: list[str]) -> None:
        if ch.destroyed or ch.hanging or ch.stasis_app is None:
            return
        if not self.app_active(app):
            self._send("ApplicationMoveFailed", ch, channel=ev.channel_json(ch),
                       destination=app, args=args)
            return
        old = ch.stasis_app
        self._chan_event("StasisEnd", ch)
        ch.subscribers.discard(old)
        if ch.bridge is not None:
            ch.bridge.subscribers.discard(old)
            ch.bridge.subscribers.add(app)
        ch.stasis_app = app
        ch.subscribers.add(app)
        ch.set_stasis_dialplan(app, args)
        self._chan_event("StasisStart", ch, args=args)

    def send_dtmf(self, cid: str, dtmf: str, *, before: int = 0, between: int = 100,
                  duration: int = 100, after: int = 0) -> None:
        ch = self._stasis_channel(cid)
        if not dtmf or set(dtmf) - DTMF_DIGITS:
            raise AriError(400, "DTMF is required")
        self._notify("dtmf_sent", ch, digits=dtmf, duration=duration, between=between)

    def get_variable(self, cid: str, name: str) -> str:
        ch = self._stasis_channel(cid)
        fn = name.upper()
        if fn in ("CALLERID(NUM)", "CALLERID(NUMBER)"):
            return ch.caller[1]
        if fn == "CALLERID(NAME)":
            return ch.caller[0]
        if fn == "CHANNEL(NAME)":
            return ch.name
        if fn == "CHANNEL(UNIQUEID)" or fn == "UNIQUEID":
            return ch.id
        if name not in ch.variables:
            raise AriError(404, "Provided variable was not found")
        return ch.variables[name]

    def set_variable(self, cid: str, name: str, value: str) -> None:
        ch = self._stasis_channel(cid)
        fn = name.upper()
        if fn in ("CALLERID(NUM)", "CALLERID(NUMBER)"):
            ch.caller = (ch.caller[0], value)
            self._chan_event("ChannelCallerId", ch, caller_presentation=0,
                             caller_presentation_txt="Presentation Allowed, Not Screened")
            return
        if fn == "CALLERID(NAME)":
            ch.caller = (value, ch.caller[1])
            self._chan_event("ChannelCallerId", ch, caller_presentation=0,
                             caller_presentation_txt="Presentation Allowed, Not Screened")
            return
        self._varset(ch, name, value)

    def rtp_statistics(self, cid: str) -> dict:
        ch = self.get_channel(cid)
        if ch.tech != "PJSIP":
            raise AriError(404, "Error getting RTP statistics")
        return {"txcount": 0, "rxcount": 0, "txploss": 0, "rxploss": 0,
                "local_ssrc": 0, "remote_ssrc": 0, "txoctetcount": 0, "rxoctetcount": 0,
                "channel_uniqueid": ch.id}

    # ------------------------------------------------------------------ caller side
    def caller_dtmf(self, ch: Channel, digit: str, duration_ms: int = 100) -> None:
        """The caller pressed a key: ChannelDtmfReceived on the channel in Stasis."""
        if ch.destroyed or ch.hanging:
            return
        self._chan_event("ChannelDtmfReceived", ch, digit=digit, duration_ms=duration_ms)

    def dialplan_step(self, ch: Channel, app_name: str, app_data: str) -> None:
        """The dialplan of a channel outside Stasis (a Local ;2 half) runs its next application."""
        if ch.destroyed or ch.hanging:
            return
        ch.priority += 1
        ch.app_name, ch.app_data = app_name, app_data
        self._chan_event("ChannelDialplan", ch, dialplan_app=app_name, dialplan_app_data=app_data)
        if ch.pending_caller is not None:
            ch.caller, ch.pending_caller = ch.pending_caller, None
            self._chan_event("ChannelCallerId", ch, caller_presentation=0,
                             caller_presentation_txt="Presentation Allowed, Not Screened")

    def channel_echo(self, ch: Channel, on: bool) -> None:
        """Echo() in the channel's dialplan (a caller's script) starts (`on`) or ends: while it
        runs, what the channel says into its bridge is what it hears from the bridge, one frame
        later (for a Local pair: what ;2 echoes, ;1 says into the bridge)."""
        if ch.destroyed or ch.hanging or ch.voice is None:
            return
        voice = ch.voice
        if on == isinstance(voice, EchoSource):
            return
        new = EchoSource(ch.id, replaced=voice) if on else (voice.replaced or Source(ch.id))
        new.muted = voice.muted
        ch.voice = new
        if ch.bridge is not None:
            self._replan(ch.bridge)

    def dialplan_varset(self, ch: Channel, name: str, value: str) -> None:
        if not (ch.destroyed or ch.hanging):
            self._varset(ch, name, value)

    # ------------------------------------------------------------------ bridges
    def create_bridge(self, bridge_id: str | None = None, types: str | None = None,
                      name: str | None = None) -> Bridge:
        kinds = [t.strip() for t in (types or "mixing").split(",") if t.strip()]
        for t in kinds:
            if t not in BRIDGE_TYPES:     # Asterisk fails to create it: 500
                raise AriError(500, "Unable to create bridge")
        bid = bridge_id or self._uuid()
        if bid in self.bridges:
            raise AriError(409, "Bridge with the same bridgeId already exists")
        kind = "holding" if "holding" in kinds else "mixing"
        br = Bridge(id=bid, name=name or "", bridge_type=kind,
                    creationtime=ev.ari_time(self.wall()))
        self.bridges[bid] = br
        self._send("BridgeCreated", bridge=ev.bridge_json(br))
        return br

    def add_channels(self, bid: str, channel_ids: list[str], *, mute: bool = False,
                     inhibit_connected_line: bool = False) -> None:
        br = self.get_bridge(bid)
        chans = []
        for cid in channel_ids:
            ch = self.channels.get(cid)
            if ch is None:
                raise AriError(400, "Channel not found")
            chans.append(ch)
        for ch in chans:
            if ch.stasis_app is None:
                raise AriError(422, "Channel not in Stasis application")
            if ch.recording is not None:
                raise AriError(409, "Channel currently recording")
        added = []
        for ch in chans:
            if ch.bridge is not None:
                # Asterisk departs the channel's bridge first, even this one (a second
                # addChannel makes it leave and enter again: control_swap_channel_in_bridge).
                self._leave_bridge(ch)
            br.channels.append(ch)
            ch.bridge = br
            ch.muted = mute
            if ch.voice is not None:
                ch.voice.muted = mute or bool(ch.playbacks)
            if ch.inbound is not None:
                ch.inbound.muted = mute
            br.subscribers.add(ch.stasis_app)
            added.append(ch)
            self._send("ChannelEnteredBridge", ch, br, bridge=ev.bridge_json(br),
                       channel=ev.channel_json(ch))
        if not added:
            return
        self._bridgepeer_noise(br)
        if len(br.channels) == 2 and not inhibit_connected_line:
            a, b = br.channels
            for x, y in ((b, a), (a, b)):
                if x.connected != y.caller:
                    x.connected = y.caller
                    self._chan_event("ChannelConnectedLine", x)
                    if x.tech == "Local" and x.peer is not None:
                        # Reaches the ;2 half's caller id when its dialplan next runs.
                        x.peer.pending_caller = y.caller
        self._replan(br)
        for ch in br.channels:
            if ch.external is not None:
                for other in br.channels:
                    if other.call_id is not None and other is not ch:
                        self._notify("external_bridged", other, external=ch)

    def remove_channels(self, bid: str, channel_ids: list[str]) -> None:
        br = self.get_bridge(bid)
        chans = []
        for cid in channel_ids:
            ch = self.channels.get(cid)
            if ch is None:
                raise AriError(400, "Channel not found")
            if ch.bridge is not br:
                raise AriError(422, "Channel not in this bridge")
            chans.append(ch)
        for ch in chans:
            self._leave_bridge(ch)

    def _leave_bridge(self, ch: Channel) -> None:
        br = ch.bridge
        if br is None:
            return
        if ch.variables.get("BRIDGEPEER"):
            self._varset(ch, "BRIDGEPEER", "")
        br.channels.remove(ch)
        ch.bridge = None
        if ch.voice is not None:
            ch.voice.muted = bool(ch.playbacks)
        if isinstance(ch.voice, EchoSource):
            ch.voice.heard = ()
        self._send("ChannelLeftBridge", ch, br, bridge=ev.bridge_json(br),
                   channel=ev.channel_json(ch))
        if ch.external is not None:
            self.media.set_plan(ch.id, [], False)
            self.media.set_inbound(ch.id, None)
        self._replan(br)

    def destroy_bridge(self, bid: str) -> None:
        br = self.get_bridge(bid)
        for ch in list(br.channels):
            self._leave_bridge(ch)
        for pb in list(br.playbacks):
            self._finish_playback(pb, "done", restart_queue=False)
        if br.recording is not None:
            self._finish_recording(br.recording, "done")
        self._send("BridgeDestroyed", br=br, bridge=ev.bridge_json(br))
        del self.bridges[bid]

    def _bridgepeer_noise(self, br: Bridge) -> None:
        """Every member's BRIDGEPEER: the names of the other participants, hidden ones first."""
        if len(br.channels) + len(br.hidden) < 2:
            return
        for ch in br.channels:
            peers = list(br.hidden) + [o.name for o in br.channels if o is not ch]
            self._varset(ch, "BRIDGEPEER", ",".join(peers))

    def _replan(self, br: Bridge) -> None:
        """Tell the media layer what each externalMedia channel in `br` hears."""
        softmix = br.bridge_type == "mixing" and len(br.channels) + len(br.hidden) > 2
        for ch in br.channels:
            if ch.external is None:
                continue
            if br.bridge_type != "mixing":
                self.media.set_plan(ch.id, [], False)
                continue
            sources = [o.voice for o in br.channels if o is not ch and o.voice is not None]
            sources += [pb.source for pb in br.playbacks if pb.source is not None]
            self.media.set_plan(ch.id, sources, softmix)
        # A channel running Echo() hears everything else in the bridge, the relay's RTP into
        # externalMedia channels included (fed to the bridge only while someone hears it).
        echoes = [ch for ch in br.channels if isinstance(ch.voice, EchoSource)]
        for ch in echoes:
            heard: list[Source] = []
            if br.bridge_type == "mixing":
                for o in br.channels:
                    if o is not ch:
                        heard += [s for s in (o.voice, o.inbound) if s is not None]
                heard += [pb.source for pb in br.playbacks if pb.source is not None]
            ch.voice.heard = tuple(heard)
        for ch in br.channels:
            if ch.external is not None:
                self.media.set_inbound(ch.id, ch.inbound if echoes else None)

    # ------------------------------------------------------------------ playbacks
    def play(self, media: list[str], *, channel_id: str | None = None,
             bridge_id: str | None = None, playback_id: str | None = None,
             lang: str | None = None) -> Playback:
        if channel_id is not None:
            ch, br = self._stasis_channel(channel_id), None
            target = f"channel:{ch.id}"
        else:
            ch, br = None, self.get_bridge(bridge_id or "")
            target = f"bridge:{br.id}"
        if not media or not all(media):
            raise AriError(400, "Missing parameter media")
        pid = playback_id or self._uuid()
        if pid in self.playbacks:
            raise AriError(409, "Playback with this ID already exists")
        pb = Playback(id=pid, media=list(media), target_uri=target, language=lang or "en",
                      channel=ch, bridge=br)
        self.playbacks[pid] = pb
        queue = ch.playbacks if ch is not None else br.playbacks
        queue.append(pb)
        if ch is None or len(queue) == 1:
            self._at(self.now, lambda: self._start_playback(pb))
        return pb

    def _start_playback(self, pb: Playback) -> None:
        if pb.state != "queued" or pb.id not in self.playbacks:
            return
        pb.state = "playing"
        if pb.bridge is not None:
            pb.hidden_name = f"Announcer/ARI-{self._seq_name()};2"
            pb.bridge.hidden.append(pb.hidden_name)
            self._bridgepeer_noise(pb.bridge)
        self._send("PlaybackStarted", pb.channel, pb.bridge, playback=ev.playback_json(pb))
        self._play_current(pb)

    def _play_current(self, pb: Playback) -> None:
        uri = pb.media[pb.index]
        try:
            audio, loop = media_audio(uri)
        except UnknownMedia:
            self._finish_playback(pb, "failed")
            return
        src = pb.source or Source(pb.id)
        src.play(audio, self.media.tick(self.now), loop)
        pb.source = src
        if pb.channel is not None:
            ch = pb.channel
            if ch.voice is not None:
                ch.voice.muted = True
            if ch.external is not None:
                self.media.set_override(ch.id, src)
            self._notify("playback", ch, media=uri, playback_id=pb.id)
        else:
            self._replan(pb.bridge)
        if not loop:
            pb.generation += 1
            gen = pb.generation
            # Done when its last (maybe short) 20 ms frame has gone out, whatever the phase.
            frames = -(-len(audio) // 160)
            self._at(self.now + frames * 0.020 + 0.001, lambda: self._playback_step(pb, gen))

    def _playback_step(self, pb: Playback, gen: int) -> None:
        if pb.generation != gen or pb.state != "playing":
            return
        if pb.index + 1 < len(pb.media):
            pb.index += 1
            self._send("PlaybackContinuing", pb.channel, pb.bridge, playback=ev.playback_json(pb))
            self._play_current(pb)
            return
        self._finish_playback(pb, "done")

    def _finish_playback(self, pb: Playback, state: str, restart_queue: bool = True) -> None:
        if pb.id not in self.playbacks:
            return
        was_playing = pb.state == "playing"
        pb.state = state
        pb.generation += 1
        del self.playbacks[pb.id]
        if pb.source is not None:
            pb.source.stop()
        if pb.channel is not None:
            ch = pb.channel
            if pb in ch.playbacks:
                ch.playbacks.remove(pb)
            if was_playing:
                self._send("PlaybackFinished", ch, playback=ev.playback_json(pb))
            if ch.voice is not None:
                ch.voice.muted = ch.muted
            if ch.external is not None:
                self.media.set_override(ch.id, None)
            if restart_queue and ch.playbacks:
                nxt = ch.playbacks[0]
                self._at(self.now, lambda: self._start_playback(nxt))
            return
        br = pb.bridge
        if pb in br.playbacks:
            br.playbacks.remove(pb)
        self._send("PlaybackFinished", None, br, playback=ev.playback_json(pb))
        if pb.hidden_name in br.hidden:
            br.hidden.remove(pb.hidden_name)
            self._bridgepeer_noise(br)
        self._replan(br)

    def stop_playback(self, pid: str) -> None:
        pb = self.get_playback(pid)
        self._finish_playback(pb, "done")

    def get_playback(self, pid: str) -> Playback:
        pb = self.playbacks.get(pid)
        if pb is None:
            raise AriError(404, "Playback not found")
        return pb

    def _uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    # ------------------------------------------------------------------ recordings
    def record(self, name: str, fmt: str, *, channel_id: str | None = None,
               bridge_id: str | None = None, max_duration: int = 0,
               if_exists: str = "fail") -> LiveRecording:
        if channel_id is not None:
            ch, br = self._stasis_channel(channel_id), None
            if ch.bridge is not None:
                raise AriError(409, "Channel is currently bridged with other channels")
            target = f"channel:{ch.id}"
        else:
            ch, br = None, self.get_bridge(bridge_id or "")
            target = f"bridge:{br.id}"
        if fmt not in RECORDING_FORMATS:
            raise AriError(422, "The format specified is unknown on this system")
        if if_exists not in ("fail", "overwrite", "append"):
            raise AriError(400, "Invalid parameters")
        if name in self.recordings:
            raise AriError(409, "A recording with the same name is in progress")
        if name in self.stored and if_exists == "fail":
            raise AriError(409, "A recording with the same name already exists on the system")
        if (ch is not None and ch.recording is not None) or (br is not None and br.recording):
            raise AriError(409, "Already recording")
        rec = LiveRecording(name=name, format=fmt, target_uri=target, channel=ch, bridge=br,
                            max_duration=max_duration)
        self.recordings[name] = rec
        if ch is not None:
            ch.recording = rec
        else:
            br.recording = rec
        self._at(self.now, lambda: self._start_recording(rec))
        return rec

    def _start_recording(self, rec: LiveRecording) -> None:
        if rec.state != "queued":
            return
        rec.state = "recording"
        rec.started_at = self.now
        if rec.bridge is not None:
            rec.hidden_name = f"Recorder/ARI-{self._seq_name()};2"
            rec.bridge.hidden.append(rec.hidden_name)
            self._bridgepeer_noise(rec.bridge)
            self._replan(rec.bridge)
        self._send("RecordingStarted", rec.channel, rec.bridge, recording=ev.recording_json(rec))
        if rec.max_duration > 0:
            gen = rec.generation
            self._at(self.now + rec.max_duration,
                     lambda: rec.generation == gen and self._finish_recording(rec, "done"))

    def _finish_recording(self, rec: LiveRecording, state: str) -> None:
        if self.recordings.get(rec.name) is not rec:
            return
        del self.recordings[rec.name]
        rec.generation += 1
        started = rec.started_at if rec.started_at is not None else self.now
        rec.duration = round(self.now - started)
        rec.state = state
        if rec.channel is not None:
            rec.channel.recording = None
        if rec.bridge is not None:
            rec.bridge.recording = None
        self._send("RecordingFinished", rec.channel, rec.bridge, recording=ev.recording_json(rec))
        if state == "done":
            self.stored[rec.name] = rec.format
        br = rec.bridge
        if br is not None and rec.hidden_name in br.hidden:
            br.hidden.remove(rec.hidden_name)
            self._bridgepeer_noise(br)
            self._replan(br)

    def get_recording(self, name: str) -> LiveRecording:
        rec = self.recordings.get(name)
        if rec is None:
            raise AriError(404, "Recording not found")
        return rec

    def stop_recording(self, name: str, cancel: bool = False) -> None:
        rec = self.get_recording(name)
        self._finish_recording(rec, "canceled" if cancel else "done")

    def pause_recording(self, name: str, pause: bool) -> None:
        rec = self.get_recording(name)
        if rec.state not in ("recording", "paused"):
            raise AriError(409, "Recording not in session")
        rec.state = "paused" if pause else "recording"

    # ------------------------------------------------------------------ inspection
    def live_summary(self) -> dict:
        return {
            "channels": [dict(ev.channel_json(c), bridge=c.bridge.id if c.bridge else None,
                              stasis_app=c.stasis_app, tech=c.tech, call_id=c.call_id)
                         for c in self.channels.values()],
            "bridges": [dict(ev.bridge_json(b), hidden=list(b.hidden))
                        for b in self.bridges.values()],
            "playbacks": [ev.playback_json(p) for p in self.playbacks.values()],
            "recordings": [ev.recording_json(r) for r in self.recordings.values()],
            "stored_recordings": [{"name": n, "format": f} for n, f in self.stored.items()],
            "applications": [{"name": a.name, "active": a.connection is not None,
                              "subscribe_all": a.subscribe_all} for a in self.apps.values()],
        }
