"""relay: a media relay that puts an AI voice agent (OpenAI Realtime) on Asterisk calls.

The package owns the whole path of a call: ARI orchestration, RTP both ways, the Realtime
session, tools, transcripts and the dashboard. See docs/ARCHITECTURE.md for the map.
"""

__version__ = "0.1.0"
