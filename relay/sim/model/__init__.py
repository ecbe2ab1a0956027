"""The simulated OpenAI Realtime model (GA protocol) for tests, the demo and the benchmarks.

Modules, one job each:
  validation     strict checks of client events and the exact errors they earn
  session        RealtimeSession: the sans-IO protocol core (text in + now -> events out)
  session_config the effective session and how session.update changes it
  response       one response's event sequence over time (speech, function calls, cancel)
  conversation   the items of a session
  input_buffer   the input audio buffer, framed for the VAD
  vad            server VAD on frame levels, in audio time
  recognition    which phrasebook phrase a committed turn contains
  audio          GA audio formats and the model's synthetic speech
  script         what the model says: the JSON script format (documented there)
  events         ids and shapes of server events
  handshake      API key / beta header / model checks on connect
  faults         fault injection descriptions
  server         SimModel: the gevent server, its sessions, script and faults
  connection     one WebSocket around its session: messages in, events out, faults, closing
  wshandler      its WebSocket class on relay.wsserver (the upgrade; large messages for audio)
  reader         the one reader of every connection (frames split in C: relay/sim/_ws_reader)
  deadlines      the one timer of every session
  control        the HTTP JSON control endpoint
  cli            `relay sim-model`

Usage::

    with SimModel(api_key="sk-test", script={"greeting": "Hello!"}) as model:
        ...connect to model.url with "Authorization: Bearer sk-test"...
        model.sessions[-1].inspect()
"""

from relay.sim.model.faults import Fault
from relay.sim.model.script import Script
from relay.sim.model.server import SimModel
from relay.sim.model.session import RealtimeSession

__all__ = ["Fault", "RealtimeSession", "Script", "SimModel"]
