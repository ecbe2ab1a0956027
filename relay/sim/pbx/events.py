"""The JSON shapes of ARI resources and events, exactly as Asterisk 22 writes them.

Owns: field names, field order and formats (timestamps like "2026-11-29T21:58:58.218+0000",
hangup cause texts) of Channel, Bridge, Playback, LiveRecording and the events that carry them,
as observed in shared/reference/asterisk/event-trace.json. Pure functions of the state objects of
relay.sim.pbx.model; nothing here decides *when* an event happens.
"""

from __future__ import annotations

import time
from typing import Any

# Q.850 cause -> text, as ast_cause2str() spells them.
CAUSE_TEXT: dict[int, str] = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    26: "Answered elsewhere",
    28: "Invalid number format (addr incomplete)",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    58: "Bearer capability not available",
    127: "Interworking, unspecified",
}

# DELETE /channels/{id}?reason=... -> cause
HANGUP_REASONS: dict[str, int] = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 18,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}

# The cause a soft hangup request reports is the soft-hangup flag: AST_SOFTHANGUP_EXPLICIT.
SOFTHANGUP_EXPLICIT = 32


def ari_time(wall: float) -> str:
    """Asterisk's timestamp format: UTC, ISO 8601 with milliseconds and "+0000"."""
    millis = int(wall * 1000.0)
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}+0000"


def cause_text(cause: int) -> str:
    return CAUSE_TEXT.get(cause, "Unknown")


def channel_json(ch: Any, with_vars: bool = False) -> dict:
    """A Channel model (channels.json) of a relay.sim.pbx.model.Channel."""
    out = {
        "id": ch.id,
        "name": ch.name,
        "state": ch.state,
        "protocol_id": ch.protocol_id,
        "caller": {"name": ch.caller[0], "number": ch.caller[1]},
        "connected": {"name": ch.connected[0], "number": ch.connected[1]},
        "accountcode": ch.accountcode,
        "dialplan": {
            "context": ch.context,
            "exten": ch.exten,
            "priority": ch.priority,
            "app_name": ch.app_name,
            "app_data": ch.app_data,
        },
        "creationtime": ch.creationtime,
        "language": ch.language,
    }
    if with_vars:
        out["channelvars"] = dict(ch.channelvars)
    return out


def bridge_json(br: Any) -> dict:
    """A Bridge model (bridges.json)."""
    return {
        "id": br.id,
        "technology": br.technology,
        "bridge_type": br.bridge_type,
        "bridge_class": "stasis",
        "creator": "Stasis",
        "name": br.name,
        "channels": [ch.id for ch in br.channels],
        "creationtime": br.creationtime,
        "video_mode": "talker",
    }


def playback_json(pb: Any) -> dict:
    """A Playback model (playbacks.json)."""
    out = {
        "id": pb.id,
        "media_uri": pb.media[pb.index],
        "target_uri": pb.target_uri,
        "language": pb.language,
        "state": pb.state,
    }
    if pb.index + 1 < len(pb.media):
        out["next_media_uri"] = pb.media[pb.index + 1]
    return out


def recording_json(rec: Any) -> dict:
    """A LiveRecording model (recordings.json)."""
    out = {
        "name": rec.name,
        "format": rec.format,
        "state": rec.state,
        "target_uri": rec.target_uri,
    }
    if rec.duration is not None:
        out["duration"] = rec.duration
    return out


def event(type_: str, wall: float, asterisk_id: str, **fields: Any) -> dict:
    """One event, without `application` (added per receiving app when it is sent)."""
    out: dict[str, Any] = {"type": type_, "timestamp": ari_time(wall)}
    out.update(fields)
    out["asterisk_id"] = asterisk_id
    return out
