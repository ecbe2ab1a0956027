"""Fallback speech-to-text for caller turns the model did not transcribe.

Owns: keeping each caller turn's audio until its transcription arrives (`turns`), the HTTP
requests to the configured provider and their answers (`providers`), the worker-wide service
that sends them with a pooled session, bounded concurrency and counters (`service`), and, per
call, the choice of which turns go to the provider and how their text enters the transcript
(`fallback`). Nothing here runs on the packet path except TurnBuffer.feed.
"""

from relay.stt.fallback import CallFallback
from relay.stt.providers import PROVIDERS, SttError
from relay.stt.service import FallbackTranscriber
from relay.stt.turns import Turn, TurnBuffer

__all__ = ["PROVIDERS", "CallFallback", "FallbackTranscriber", "SttError", "Turn", "TurnBuffer"]
