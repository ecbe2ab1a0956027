"""The simulated PBX: a stand-in Asterisk 22 speaking ARI (REST + events WebSocket) with
externalMedia RTP over UDP and scripted callers, faithful to shared/reference/asterisk.

    from relay.sim.pbx import SimPbx
    with SimPbx(user="u", password="p") as pbx:
        ...  # point relay at pbx.base_url; pbx.start_calls(script, count, app, rate)

Unkind by default, as the real one is: REST answers and their events race (latency with
jitter on both), externalMedia and snoop channels enter Stasis a moment after their 200 answer
(an addChannel sent at once can get 422), move/continue/DELETE happen after their 204
(timing: `PbxTiming.realistic()`; `SimPbx(timing=PbxTiming.instant())` for the old in-order
behaviour). Faults on purpose: `pbx.faults.add(kind="respond", path="^/bridges$", status=503)`
or `POST /sim/faults` (faults: respond, late, after, drop_event, mangle_event, inject_event,
drop_events_connection).

Modules: model (state and events, sans-IO), events (JSON shapes), ari (REST routing), ws (events
WebSocket), media (RTP send/receive), capture (what the relay sent: packets, WAV, pacing),
caller (scripts), scenario (calls), sounds (audio), stats (aggregated figures for load tests),
timing (the delays), faults (fault injection), control (/sim HTTP API), server (SimPbx), cli
(`relay sim-pbx`).
"""

from relay.sim.pbx.caller import Script, parse_script
from relay.sim.pbx.capture import RtpCapture, pacing_stats
from relay.sim.pbx.faults import Fault
from relay.sim.pbx.model import AriError, Pbx
from relay.sim.pbx.server import SimPbx
from relay.sim.pbx.timing import PbxTiming

__all__ = ["AriError", "Fault", "Pbx", "PbxTiming", "RtpCapture", "Script", "SimPbx",
           "pacing_stats", "parse_script"]
