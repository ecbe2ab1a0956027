"""The simulated PBX: a stand-in Asterisk 22 speaking ARI (REST + events WebSocket) with
externalMedia RTP over UDP and scripted callers, faithful to shared/reference/asterisk.

    from relay.sim.pbx import SimPbx
    with SimPbx(user="u", password="p") as pbx:
        ...  # point relay at pbx.base_url; pbx.start_calls(script, count, app, rate)

Modules: model (state and events, sans-IO), events (JSON shapes), ari (REST routing), ws (events
WebSocket), media (RTP send/receive), capture (what the relay sent: packets, WAV, pacing),
caller (scripts), scenario (calls), sounds (audio), stats (aggregated figures for load tests),
control (/sim HTTP API), server (SimPbx), cli (`relay sim-pbx`).
"""

from relay.sim.pbx.caller import Script, parse_script
from relay.sim.pbx.capture import RtpCapture, pacing_stats
from relay.sim.pbx.model import AriError, Pbx
from relay.sim.pbx.server import SimPbx

__all__ = ["AriError", "Pbx", "RtpCapture", "Script", "SimPbx", "pacing_stats", "parse_script"]
