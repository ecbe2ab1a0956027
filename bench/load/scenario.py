"""What happens on every call of the load benchmark: the caller's script, the model's script
and the agent relay runs.

Owns: the conversation. The agent greets; the caller asks about an order, gives its number,
asks for the opening hours and interrupts the long answer (a barge-in), asks the time (the
model calls the agent's `get_current_time` tool, then answers), thanks the agent; and again,
until the caller hangs up at the end of the run. One round lasts about 35 s, so over a
measurement window every call has about one barge-in and one tool call for each 35 s, and
callers, whose calls start at different moments, are at different points of it.
Formats: relay.sim.pbx.caller (callers), relay.sim.model.script (model), README (agent).
"""

from __future__ import annotations

from typing import Any

from relay.sim.speech import duration_ms_for

ORDER = "Hi, I would like to know where my order is."
NUMBER = "The order number is four two seven."
HOURS = "What are your opening hours?"
STOP = "Okay, okay, thanks, that is enough."
TIME = "And what time is it now?"
THANKS = "Great, thank you very much."

GREETING = "Hello, thank you for calling Acme. How can I help you today?"
REPLIES = {
    ORDER: "Of course. What is your order number?",
    NUMBER: "Thank you. Order four two seven left our warehouse yesterday and arrives "
            "tomorrow.",
    HOURS: "We are open from eight in the morning to six in the evening on weekdays, from "
           "nine to one on Saturdays, and we are closed on Sundays and public holidays.",
    STOP: "Sure. Anything else?",
    THANKS: "You are welcome. Is there anything else I can do for you?",
}
TIME_SAY = "Let me check the time."
TIME_THEN = "It is just after ten in the morning."
BARGE_IN_AFTER_MS = 1500        # the caller talks over the opening hours this long after onset
REPLY_SILENCE_MS = 600          # the caller waits this long after the agent stops
VAD_SILENCE_MS = 500            # the agent's server VAD: silence that ends a caller's turn

AGENT_KEY = "bench"
AGENT: dict[str, Any] = {
    "name": "Load benchmark",
    "instructions": "You are the phone agent of the load benchmark.",
    "voice": "marin",
    "greeting": {"instructions": "Greet the caller and ask how you can help."},
    "audio_format": "audio/pcmu",
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                       "silence_duration_ms": VAD_SILENCE_MS, "create_response": True,
                       "interrupt_response": True},
    "input_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
    "tools": [{"name": "get_current_time", "builtin": "get_current_time"}],
}

MODEL_SCRIPT: dict[str, Any] = {
    "phrasebook": [ORDER, NUMBER, HOURS, STOP, TIME, THANKS],
    "greeting": GREETING,
    "rules": [
        {"keywords": ["order is"], "say": REPLIES[ORDER]},
        {"keywords": ["number"], "say": REPLIES[NUMBER]},
        {"keywords": ["opening hours"], "say": REPLIES[HOURS]},
        {"keywords": ["enough"], "say": REPLIES[STOP]},
        {"keywords": ["what time"], "say": TIME_SAY,
         "calls": [{"name": "get_current_time", "arguments": {}}], "then": TIME_THEN},
        {"keywords": ["thank you"], "say": REPLIES[THANKS]},
    ],
    "default": "I see. Could you tell me more?",
}

ROUND: list[dict] = [
    {"after_agent": ORDER, "silence_ms": REPLY_SILENCE_MS},
    {"after_agent": NUMBER, "silence_ms": REPLY_SILENCE_MS},
    {"after_agent": HOURS, "silence_ms": REPLY_SILENCE_MS},
    {"barge_in": STOP, "after_ms": BARGE_IN_AFTER_MS},
    {"after_agent": TIME, "silence_ms": REPLY_SILENCE_MS},
    {"after_agent": THANKS, "silence_ms": REPLY_SILENCE_MS},
]
ROUND_S = 35.0        # about: speech, replies, the VAD's silence and the caller's pauses


def caller_script(duration_s: float, start: int = 0) -> dict:
    """One caller: rounds of ROUND (begun at its step `start`) for at least duration_s, then
    a hangup at duration_s."""
    rounds = int(duration_s / (ROUND_S / 2)) + 2      # more than enough, whatever the pace
    steps = ROUND[start:] + ROUND * rounds
    return {"caller": {"name": "Load caller", "number": "+15550100"},
            "steps": steps, "end": "wait", "max_duration_ms": int(duration_s * 1000)}


def caller_scripts(duration_s: float) -> list[dict]:
    """One script per step of the round, each beginning there: calls started a moment apart
    are then at different points of the conversation (not all speaking at once), and every
    moment of a window holds some barge-ins and tool calls."""
    return [caller_script(duration_s, start) for start in range(len(ROUND))]


def mean_reply_ms() -> int:
    """How long the agent speaks per turn, on average over a round (the barge-in cuts the
    opening hours after BARGE_IN_AFTER_MS plus the model's reaction to the caller's voice):
    the floor's stand-in agent answers that long."""
    spoken = []
    for text, reply in REPLIES.items():
        spoken.append(BARGE_IN_AFTER_MS + 100 if text == HOURS else duration_ms_for(reply))
    spoken.append(duration_ms_for(TIME_SAY) + duration_ms_for(TIME_THEN))
    return int(sum(spoken) / len(spoken))
