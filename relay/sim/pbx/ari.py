"""ARI REST routing: paths, parameters, status codes and bodies of the Swagger files.

Owns: turning one HTTP request under /ari (method, path, query string, JSON body) into one call
on the model and its answer (status, JSON body) as Asterisk 22 gives it: parameters from the
query string or a JSON body (Asterisk accepts both; `variables` from the body), 400 for missing
or malformed parameters, 404/409/422 from the model, 204 with no body for void operations,
`{"message": "..."}` for every error, 501 for the parts of the API the simulator does not
model. Also the authentication check (basic auth or api_key=USER:PASS). No sockets here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import ujson

from relay.sim.pbx import events as ev
from relay.sim.pbx.media import PAYLOAD_TYPES as EXTERNAL_MEDIA_FORMATS
from relay.sim.pbx.model import SNOOP_DIRECTIONS, AriError, Pbx

ASTERISK_VERSION = "22.10.1"
MAX_BODY = 1 << 20

Response = tuple[int, Any]          # (status, JSON-able body or None for no body)


def check_auth(environ: dict, user: str, password: str) -> bool:
    """Basic auth or `api_key=USER:PASS` in the query string."""
    expected = f"{user}:{password}"
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    for key in query.get("api_key", []):
        if key == expected:
            return True
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header[:6].lower() == "basic ":
        try:
            return base64.b64decode(header[6:].strip()).decode("utf-8") == expected
        except (binascii.Error, UnicodeDecodeError):
            return False
    return False


class Params:
    """A request's parameters: query string, overridden by the fields of a JSON object body."""

    def __init__(self, query: dict[str, list[str]], body: dict | None = None) -> None:
        self.query = query
        self.body = body or {}

    @classmethod
    def from_environ(cls, environ: dict) -> Params:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        body = None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise AriError(400, "Request body too large")
        if length > 0:
            raw = environ["wsgi.input"].read(length)
            if raw.strip():
                try:
                    body = ujson.loads(raw)
                except ValueError:
                    raise AriError(400, "Error parsing request body") from None
                if not isinstance(body, dict):
                    raise AriError(400, "Request body must be a JSON object")
        return cls(query, body)

    def raw(self, name: str) -> Any:
        if name in self.body:
            return self.body[name]
        values = self.query.get(name)
        return values[-1] if values else None

    def str(self, name: str, required: bool = False, default: str | None = None
            ) -> str | None:
        value = self.raw(name)
        if value is None or value == "":
            if required:
                raise AriError(400, f"Missing required parameter {name}")
            return default
        if isinstance(value, (dict, list)):
            raise AriError(400, f"Invalid value for parameter {name}")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def int(self, name: str, default: int | None = None, lo: int = -(1 << 31),
            hi: int = (1 << 31) - 1) -> int | None:
        value = self.raw(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            raise AriError(400, f"Invalid value for parameter {name}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise AriError(400, f"Invalid value for parameter {name}: {value!r}") from None
        if not lo <= number <= hi:
            raise AriError(400, f"Parameter {name} out of range: {number}")
        return number

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "yes", "1", "on", "y", "t"):
            return True
        if text in ("false", "no", "0", "off", "n", "f"):
            return False
        raise AriError(400, f"Invalid value for parameter {name}: {value!r}")

    def list(self, name: str, required: bool = False) -> list[str]:
        """allowMultiple parameters: repeated and/or comma-separated."""
        if name in self.body:
            value = self.body[name]
            items = value if isinstance(value, list) else [value]
        else:
            items = self.query.get(name, [])
        out = [part for item in items for part in str(item).split(",") if part]
        if required and not out:
            raise AriError(400, f"Missing required parameter {name}")
        return out

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.str(name, default=default) or default
        if value not in choices:
            raise AriError(400, f"Invalid value for parameter {name}: {value!r}")
        return value

    def variables(self) -> dict[str, str]:
        value = self.body.get("variables")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise AriError(400, "variables must be an object of name: value")
        return {str(k): "" if v is None else str(v) for k, v in value.items()}


Handler = Callable[..., Response]


class Router:
    """(method, path template) -> handler; path parameters are URL-decoded."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def dispatch(self, method: str, path: str, params: Params) -> Response:
        allowed = False
        for route_method, pattern, handler in self.routes:
            m = pattern.match(path)
            if m is None:
                continue
            if route_method != method:
                allowed = True
                continue
            kwargs = {k: unquote(v) for k, v in m.groupdict().items()}
            return handler(params, **kwargs)
        if allowed:
            raise AriError(405, "Invalid method")
        raise AriError(404, "Resource not found")


def _not_implemented(params: Params, **_: str) -> Response:
    raise AriError(501, "Not implemented by the simulated PBX")


class AriApi:
    """The REST resources of ARI that the simulated PBX models, over a Pbx."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        r = self.router = Router()
        c = "/channels/{channelId}"
        for method, path, fn in (
            ("GET", "/channels", self.list_channels),
            ("POST", "/channels", self.originate),
            ("POST", "/channels/externalMedia", self.external_media),
            ("POST", "/channels/create", _not_implemented),
            ("GET", c, self.get_channel),
            ("POST", c, self.originate_with_id),
            ("DELETE", c, self.hangup),
            ("POST", c + "/answer", self.answer),
            ("POST", c + "/continue", self.continue_),
            ("POST", c + "/move", self.move),
            ("POST", c + "/redirect", self.redirect),
            ("POST", c + "/dtmf", self.dtmf),
            ("POST", c + "/play", self.play_channel),
            ("POST", c + "/play/{playbackId}", self.play_channel),
            ("POST", c + "/record", self.record_channel),
            ("GET", c + "/variable", self.get_var),
            ("POST", c + "/variable", self.set_var),
            ("GET", c + "/variables", self.get_vars),
            ("POST", c + "/variables", self.set_vars),
            ("POST", c + "/snoop", self.snoop),
            ("POST", c + "/snoop/{snoopId}", self.snoop),
            ("GET", c + "/rtp_statistics", self.rtp_statistics),
            ("POST", c + "/mute", self.mute),
            ("DELETE", c + "/mute", self.unmute),
            ("POST", c + "/ring", self.stasis_noop),
            ("DELETE", c + "/ring", self.stasis_noop),
            ("POST", c + "/progress", self.stasis_noop),
            ("POST", c + "/hold", self.stasis_noop),
            ("DELETE", c + "/hold", self.stasis_noop),
            ("POST", c + "/moh", self.stasis_noop),
            ("DELETE", c + "/moh", self.stasis_noop),
            ("POST", c + "/silence", self.stasis_noop),
            ("DELETE", c + "/silence", self.stasis_noop),
            ("POST", c + "/dial", _not_implemented),
            ("POST", c + "/transfer_progress", _not_implemented),
            ("GET", "/bridges", self.list_bridges),
            ("POST", "/bridges", self.create_bridge),
            ("GET", "/bridges/{bridgeId}", self.get_bridge),
            ("POST", "/bridges/{bridgeId}", self.create_bridge),
            ("DELETE", "/bridges/{bridgeId}", self.destroy_bridge),
            ("POST", "/bridges/{bridgeId}/addChannel", self.add_channel),
            ("POST", "/bridges/{bridgeId}/removeChannel", self.remove_channel),
            ("POST", "/bridges/{bridgeId}/play", self.play_bridge),
            ("POST", "/bridges/{bridgeId}/play/{playbackId}", self.play_bridge),
            ("POST", "/bridges/{bridgeId}/record", self.record_bridge),
            ("GET", "/bridges/{bridgeId}/variable", self.get_bridge_var),
            ("POST", "/bridges/{bridgeId}/variable", self.set_bridge_var),
            ("POST", "/bridges/{bridgeId}/moh", _not_implemented),
            ("DELETE", "/bridges/{bridgeId}/moh", _not_implemented),
            ("POST", "/bridges/{bridgeId}/videoSource/{channelId}", _not_implemented),
            ("DELETE", "/bridges/{bridgeId}/videoSource", _not_implemented),
            ("GET", "/playbacks/{playbackId}", self.get_playback),
            ("DELETE", "/playbacks/{playbackId}", self.stop_playback),
            ("POST", "/playbacks/{playbackId}/control", _not_implemented),
            ("GET", "/recordings/live/{recordingName}", self.get_live),
            ("DELETE", "/recordings/live/{recordingName}", self.cancel_live),
            ("POST", "/recordings/live/{recordingName}/stop", self.stop_live),
            ("POST", "/recordings/live/{recordingName}/pause", self.pause_live),
            ("DELETE", "/recordings/live/{recordingName}/pause", self.unpause_live),
            ("POST", "/recordings/live/{recordingName}/mute", self.stasis_rec_noop),
            ("DELETE", "/recordings/live/{recordingName}/mute", self.stasis_rec_noop),
            ("GET", "/recordings/stored", self.list_stored),
            ("GET", "/recordings/stored/{recordingName}", self.get_stored),
            ("DELETE", "/recordings/stored/{recordingName}", self.delete_stored),
            ("GET", "/recordings/stored/{recordingName}/file", _not_implemented),
            ("POST", "/recordings/stored/{recordingName}/copy", _not_implemented),
            ("GET", "/asterisk/info", self.info),
            ("GET", "/asterisk/ping", self.ping),
            ("GET", "/asterisk/variable", self.get_global),
            ("POST", "/asterisk/variable", self.set_global),
            ("GET", "/applications", self.list_apps),
            ("GET", "/applications/{applicationName}", self.get_app),
            ("POST", "/applications/{applicationName}/subscription", _not_implemented),
            ("DELETE", "/applications/{applicationName}/subscription", _not_implemented),
            ("PUT", "/applications/{applicationName}/eventFilter", _not_implemented),
        ):
            r.add(method, path, fn)
        for prefix in ("/endpoints", "/deviceStates", "/mailboxes", "/sounds",
                       "/asterisk/config", "/asterisk/modules", "/asterisk/logging",
                       "/events/user", "/events/claim"):
            for method in ("GET", "POST", "PUT", "DELETE"):
                r.add(method, prefix + "(?:/.*)?", _not_implemented)

    def handle(self, method: str, path: str, params: Params) -> Response:
        """Answer one request; AriError becomes {"message": ...}."""
        try:
            return self.router.dispatch(method, path, params)
        except AriError as exc:
            return exc.status, {"message": exc.message}

    # ------------------------------------------------------------------ channels
    def list_channels(self, p: Params) -> Response:
        return 200, [ev.channel_json(c) for c in self.pbx.channels.values()]

    def get_channel(self, p: Params, channelId: str) -> Response:
        return 200, ev.channel_json(self.pbx.get_channel(channelId))

    def originate_with_id(self, p: Params, channelId: str) -> Response:
        return self.originate(p, channelId=channelId)

    def originate(self, p: Params, channelId: str | None = None) -> Response:
        endpoint = p.str("endpoint")
        if not endpoint:
            raise AriError(400, "Endpoint must be specified")
        ch = self.pbx.originate(
            endpoint, app=p.str("app"), app_args=p.str("appArgs"),
            extension=p.str("extension"), context=p.str("context"),
            priority=p.int("priority"), caller_id=p.str("callerId"),
            timeout=p.int("timeout", 30), variables=p.variables(),
            channel_id=channelId or p.str("channelId"),
            other_channel_id=p.str("otherChannelId"))
        return 200, ev.channel_json(ch)

    def external_media(self, p: Params) -> Response:
        app = p.str("app")
        if not app:
            raise AriError(400, "app cannot be empty")
        fmt = p.str("format")
        if not fmt:
            raise AriError(400, "format cannot be empty")
        encapsulation = p.choice("encapsulation", ("rtp", "audiosocket", "none"), "rtp")
        transport = p.choice("transport", ("udp", "tcp", "websocket"), "udp")
        p.choice("connection_type", ("client", "server"), "client")
        direction = p.choice("direction", ("both", "in", "out"), "both")
        host = p.str("external_host")
        if not host:
            raise AriError(400, "external_host is required for all but websocket connections")
        if encapsulation != "rtp" or transport != "udp" or fmt not in EXTERNAL_MEDIA_FORMATS:
            raise AriError(501, "The simulated PBX models externalMedia RTP/UDP with ulaw or "
                                "alaw only")
        ch = self.pbx.external_media(app=app, external_host=host, fmt=fmt,
                                     channel_id=p.str("channelId"), data=p.str("data"),
                                     variables=p.variables(), direction=direction)
        return 200, ev.channel_json(ch, with_vars=True)

    def hangup(self, p: Params, channelId: str) -> Response:
        self.pbx.hangup(channelId, reason=p.str("reason"), reason_code=p.str("reason_code"))
        return 204, None

    def answer(self, p: Params, channelId: str) -> Response:
        self.pbx.answer(channelId)
        return 204, None

    def stasis_noop(self, p: Params, channelId: str) -> Response:
        self.pbx._stasis_channel(channelId)
        return 204, None

    def mute(self, p: Params, channelId: str, on: bool = True) -> Response:
        direction = p.choice("direction", ("both", "in", "out"), "both")
        ch = self.pbx._stasis_channel(channelId)
        if direction in ("both", "in"):
            ch.muted = on
            if ch.voice is not None:
                ch.voice.muted = on or bool(ch.playbacks)
            if ch.inbound is not None:
                ch.inbound.muted = on
        return 204, None

    def unmute(self, p: Params, channelId: str) -> Response:
        return self.mute(p, channelId, on=False)

    def continue_(self, p: Params, channelId: str) -> Response:
        self.pbx.continue_in_dialplan(channelId, context=p.str("context"),
                                      extension=p.str("extension"), priority=p.int("priority"),
                                      label=p.str("label"))
        return 204, None

    def move(self, p: Params, channelId: str) -> Response:
        app = p.str("app")
        self.pbx.get_channel(channelId)
        if not app:
            raise AriError(400, "Missing required parameter app")
        self.pbx.move(channelId, app, p.str("appArgs"))
        return 204, None

    def redirect(self, p: Params, channelId: str) -> Response:
        endpoint = p.str("endpoint")
        if not endpoint:
            raise AriError(400, "Endpoint parameter not provided")
        self.pbx.redirect(channelId, endpoint)
        return 204, None

    def dtmf(self, p: Params, channelId: str) -> Response:
        dtmf = p.str("dtmf")
        if not dtmf:
            raise AriError(400, "DTMF is required")
        self.pbx.send_dtmf(channelId, dtmf, before=p.int("before", 0, 0),
                           between=p.int("between", 100, 0), duration=p.int("duration", 100, 0),
                           after=p.int("after", 0, 0))
        return 204, None

    def play_channel(self, p: Params, channelId: str, playbackId: str | None = None
                     ) -> Response:
        media = p.list("media")
        self.pbx.get_channel(channelId)
        if not media:
            raise AriError(400, "Missing required parameter media")
        p.int("offsetms", 0, 0)
        p.int("skipms", 3000, 0)
        pb = self.pbx.play(media, channel_id=channelId,
                           playback_id=playbackId or p.str("playbackId"), lang=p.str("lang"))
        return 201, ev.playback_json(pb)

    def record_channel(self, p: Params, channelId: str) -> Response:
        return self._record(p, channel_id=channelId)

    def _record(self, p: Params, channel_id: str | None = None,
                bridge_id: str | None = None) -> Response:
        name, fmt = p.str("name"), p.str("format")
        if not name or not fmt:
            raise AriError(400, "Invalid parameters")
        max_duration = p.int("maxDurationSeconds", 0, 0)
        p.int("maxSilenceSeconds", 0, 0)
        if_exists = p.choice("ifExists", ("fail", "overwrite", "append"), "fail")
        p.choice("terminateOn", ("none", "any", "*", "#"), "none")
        p.bool("beep")
        rec = self.pbx.record(name, fmt, channel_id=channel_id, bridge_id=bridge_id,
                              max_duration=max_duration, if_exists=if_exists)
        return 201, ev.recording_json(rec)

    def get_var(self, p: Params, channelId: str) -> Response:
        name = p.str("variable")
        if not name:
            raise AriError(400, "Variable name is required")
        return 200, {"value": self.pbx.get_variable(channelId, name)}

    def set_var(self, p: Params, channelId: str) -> Response:
        name = p.str("variable")
        if not name:
            raise AriError(400, "Variable name is required")
        self.pbx.set_variable(channelId, name, p.str("value", default="") or "")
        return 204, None

    def get_vars(self, p: Params, channelId: str) -> Response:
        names = p.list("variables", required=True)
        return 200, {"variables": {n: self.pbx.get_variable(channelId, n) for n in names}}

    def set_vars(self, p: Params, channelId: str) -> Response:
        values = p.variables()
        if not values:
            raise AriError(400, "Missing variables parameter.")
        for name, value in values.items():
            self.pbx.set_variable(channelId, name, value)
        return 204, None

    def snoop(self, p: Params, channelId: str, snoopId: str | None = None) -> Response:
        spy = p.choice("spy", SNOOP_DIRECTIONS, "none")
        whisper = p.choice("whisper", SNOOP_DIRECTIONS, "none")
        app = p.str("app")
        if not app:
            raise AriError(400, "app cannot be empty")
        if spy == "none" and whisper == "none":
            raise AriError(400, "Snoop direction must be in or out for spy or whisper")
        sn = self.pbx.snoop(channelId, app=app, spy=spy, whisper=whisper,
                            app_args=p.str("appArgs"), snoop_id=snoopId or p.str("snoopId"))
        return 200, ev.channel_json(sn)

    def rtp_statistics(self, p: Params, channelId: str) -> Response:
        return 200, self.pbx.rtp_statistics(channelId)

    # ------------------------------------------------------------------ bridges
    def list_bridges(self, p: Params) -> Response:
        return 200, [ev.bridge_json(b) for b in self.pbx.bridges.values()]

    def get_bridge(self, p: Params, bridgeId: str) -> Response:
        return 200, ev.bridge_json(self.pbx.get_bridge(bridgeId))

    def create_bridge(self, p: Params, bridgeId: str | None = None) -> Response:
        br = self.pbx.create_bridge(bridgeId or p.str("bridgeId"), p.str("type"), p.str("name"))
        br.variables.update(p.variables())
        return 200, ev.bridge_json(br)

    def destroy_bridge(self, p: Params, bridgeId: str) -> Response:
        self.pbx.destroy_bridge(bridgeId)
        return 204, None

    def add_channel(self, p: Params, bridgeId: str) -> Response:
        channels = p.list("channel")
        self.pbx.get_bridge(bridgeId)
        if not channels:
            raise AriError(400, "Missing parameter channel")
        p.str("role")
        p.bool("absorbDTMF")
        self.pbx.add_channels(bridgeId, channels, mute=p.bool("mute"),
                              inhibit_connected_line=p.bool("inhibitConnectedLineUpdates"))
        return 204, None

    def remove_channel(self, p: Params, bridgeId: str) -> Response:
        channels = p.list("channel")
        self.pbx.get_bridge(bridgeId)
        if not channels:
            raise AriError(400, "Missing parameter channel")
        self.pbx.remove_channels(bridgeId, channels)
        return 204, None

    def play_bridge(self, p: Params, bridgeId: str, playbackId: str | None = None
                    ) -> Response:
        media = p.list("media")
        self.pbx.get_bridge(bridgeId)
        if not media:
            raise AriError(400, "Missing required parameter media")
        fmt = p.str("announcer_format")
        if fmt is not None and fmt not in ("ulaw", "alaw", "slin", "slin16", "g722"):
            raise AriError(422, "The format specified is unknown on this system")
        p.int("offsetms", 0, 0)
        p.int("skipms", 3000, 0)
        pb = self.pbx.play(media, bridge_id=bridgeId,
                           playback_id=playbackId or p.str("playbackId"), lang=p.str("lang"))
        return 201, ev.playback_json(pb)

    def record_bridge(self, p: Params, bridgeId: str) -> Response:
        self.pbx.get_bridge(bridgeId)
        return self._record(p, bridge_id=bridgeId)

    def get_bridge_var(self, p: Params, bridgeId: str) -> Response:
        name = p.str("variable")
        if not name:
            raise AriError(400, "Missing variable parameter.")
        br = self.pbx.get_bridge(bridgeId)
        if name not in br.variables:
            raise AriError(404, "Bridge or variable not found")
        return 200, {"value": br.variables[name]}

    def set_bridge_var(self, p: Params, bridgeId: str) -> Response:
        name = p.str("variable")
        if not name:
            raise AriError(400, "Missing variable parameter.")
        self.pbx.get_bridge(bridgeId).variables[name] = p.str("value", default="") or ""
        return 204, None

    # ------------------------------------------------------------------ playbacks, recordings
    def get_playback(self, p: Params, playbackId: str) -> Response:
        return 200, ev.playback_json(self.pbx.get_playback(playbackId))

    def stop_playback(self, p: Params, playbackId: str) -> Response:
        self.pbx.stop_playback(playbackId)
        return 204, None

    def get_live(self, p: Params, recordingName: str) -> Response:
        return 200, ev.recording_json(self.pbx.get_recording(recordingName))

    def stop_live(self, p: Params, recordingName: str) -> Response:
        self.pbx.stop_recording(recordingName)
        return 204, None

    def cancel_live(self, p: Params, recordingName: str) -> Response:
        self.pbx.stop_recording(recordingName, cancel=True)
        return 204, None

    def pause_live(self, p: Params, recordingName: str) -> Response:
        self.pbx.pause_recording(recordingName, True)
        return 204, None

    def unpause_live(self, p: Params, recordingName: str) -> Response:
        self.pbx.pause_recording(recordingName, False)
        return 204, None

    def stasis_rec_noop(self, p: Params, recordingName: str) -> Response:
        if self.pbx.get_recording(recordingName).state not in ("recording", "paused"):
            raise AriError(409, "Recording not in session")
        return 204, None

    def list_stored(self, p: Params) -> Response:
        return 200, [{"name": n, "format": f} for n, f in self.pbx.stored.items()]

    def get_stored(self, p: Params, recordingName: str) -> Response:
        if recordingName not in self.pbx.stored:
            raise AriError(404, "Recording not found")
        return 200, {"name": recordingName, "format": self.pbx.stored[recordingName]}

    def delete_stored(self, p: Params, recordingName: str) -> Response:
        if self.pbx.stored.pop(recordingName, None) is None:
            raise AriError(404, "Recording not found")
        return 204, None

    # ------------------------------------------------------------------ asterisk, applications
    def info(self, p: Params) -> Response:
        only = p.list("only") or ["build", "system", "config", "status"]
        for part in only:
            if part not in ("build", "system", "config", "status"):
                raise AriError(400, f"Invalid value for parameter only: {part!r}")
        started = ev.ari_time(self.pbx.started_wall)
        full = {
            "build": {"os": "Linux", "kernel": "6.1.0", "options": "", "machine": "x86_64",
                      "date": "2025-01-01 00:00:00 UTC", "user": "relay-sim"},
            "system": {"version": ASTERISK_VERSION, "entity_id": self.pbx.asterisk_id},
            "config": {"name": "relay-sim-pbx", "default_language": "en",
                       "setid": {"user": "asterisk", "group": "asterisk"}},
            "status": {"startup_time": started, "last_reload_time": started},
        }
        return 200, {k: v for k, v in full.items() if k in only}

    def ping(self, p: Params) -> Response:
        return 200, {"asterisk_id": self.pbx.asterisk_id, "ping": "pong",
                     "timestamp": ev.ari_time(self.pbx.wall())}

    def get_global(self, p: Params) -> Response:
        name = p.str("variable")
        if not name:
            raise AriError(400, "Missing variable parameter.")
        return 200, {"value": self.pbx.global_vars.get(name, "")}

    def set_global(self, p: Params) -> Response:
        name = p.str("variable")
        if not name:
            raise AriError(400, "Missing variable parameter.")
        self.pbx.global_vars[name] = p.str("value", default="") or ""
        return 204, None

    def list_apps(self, p: Params) -> Response:
        return 200, [self.pbx.application_json(n) for n in self.pbx.apps]

    def get_app(self, p: Params, applicationName: str) -> Response:
        return 200, self.pbx.application_json(applicationName)
