"""One response of the simulated model, generated over time (sans-IO).

Owns: the GA event sequence of a response, in order — response.created, rate_limits.updated,
for a spoken reply output_item.added, conversation.item.added, content_part.added, audio and
transcript deltas paced by `chunk_interval_ms`, output_audio.done, output_audio_transcript.done,
content_part.done, output_item.done, conversation.item.done; for each function call its item and
arguments events; finally response.done with usage — and its cancellation (items left
`incomplete`, response.done `cancelled` with the reason). Time is passed in (`tick(now)`).
"""

from __future__ import annotations

import base64
from typing import Any, Iterator, Optional

from relay.sim.model import events as ev
from relay.sim.model.audio import AudioFormat, speech_audio
from relay.sim.model.conversation import Conversation
from relay.sim.model.script import FunctionCall, Reply


class Pacing:
    """How fast a response streams: audio per delta, wall time between deltas, latency."""

    __slots__ = ("chunk_ms", "interval_s", "latency_s")

    def __init__(self, chunk_ms: int = 200, interval_ms: int = 5, latency_ms: int = 0) -> None:
        self.chunk_ms = chunk_ms
        self.interval_s = interval_ms / 1000.0
        self.latency_s = latency_ms / 1000.0


class Response:
    """The events of one response; drive it with tick(now) until `done`."""

    def __init__(self, *, ids: ev.Ids, reply: Reply, text: Optional[str],
                 conversation: Optional[Conversation], conversation_id: Optional[str],
                 fmt: AudioFormat, voice: Any, modalities: list, max_output_tokens: Any,
                 metadata: Optional[dict], pacing: Pacing, input_tokens: int, now: float) -> None:
        self.ids = ids
        self.id = ids.new("resp")
        self.reply = reply
        self.text = text
        self.conversation = conversation
        self.fmt = fmt
        self.audio = "audio" in modalities
        self.pacing = pacing
        self.input_tokens = input_tokens
        self.obj = ev.response_object(self.id, conversation_id, modalities, fmt.as_object(),
                                      voice, max_output_tokens, metadata)
        self.audio_ms = 0            # audio sent in this response
        self.call_ids: list[str] = []
        self.done = False
        self.item: Optional[dict] = None   # the assistant message being spoken
        self._output_index = 0
        self._spoken = ""
        self._outputs: list[dict] = []
        self._out: list[dict] = []
        self._due = now
        self._steps = self._run()

    # ---- driving -------------------------------------------------------------------------------

    @property
    def next_deadline(self) -> Optional[float]:
        return None if self.done else self._due

    def tick(self, now: float) -> list[dict]:
        """The events due by `now`."""
        out = self._out = []
        while not self.done and now >= self._due:
            try:
                self._due += next(self._steps)
            except StopIteration:
                self.done = True
        return out

    def cancel(self, reason: str) -> list[dict]:
        """Stop now: the item being spoken ends incomplete, response.done says cancelled."""
        if self.done:
            return []
        self._steps.close()
        out = self._out = []
        if self.item is not None:
            self._close_message("incomplete")
        self._finish("cancelled", {"type": "cancelled", "reason": reason})
        return out

    def abort(self) -> None:
        """Stop without a word (the socket is going away)."""
        self._steps.close()
        self.done = True

    # ---- the sequence --------------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        event["event_id"] = self.ids.new("event")
        self._out.append(event)

    def _run(self) -> Iterator[float]:
        self._emit({"type": "response.created", "response": ev.snapshot(self.obj)})
        self._emit({"type": "rate_limits.updated", "rate_limits": ev.rate_limits()})
        latency = self.pacing.latency_s if self.reply.latency_ms is None \
            else self.reply.latency_ms / 1000.0
        if latency > 0:
            yield latency
        if self.reply.fail is not None:
            error = {"type": "server_error", "code": "server_error",
                     "message": "The server had an error while processing your request."}
            error.update(self.reply.fail)
            self._finish("failed", {"type": "failed", "error": error})
            return
        if self.text:
            yield from self._message(self.text)
        for call in self.reply.calls:
            self._function_call(call)
        self._finish("completed", None)

    def _add_item(self, item: dict) -> None:
        self._emit({"type": "response.output_item.added", "response_id": self.id,
                    "output_index": self._output_index, "item": ev.snapshot(item)})
        if self.conversation is not None:
            previous = self.conversation.add(item)
            self._emit({"type": "conversation.item.added", "previous_item_id": previous,
                        "item": ev.snapshot(item)})

    def _where(self, item: dict) -> dict:
        return {"response_id": self.id, "item_id": item["id"], "output_index": self._output_index}

    def _message(self, text: str) -> Iterator[float]:
        item = self.item = ev.assistant_item(self.ids.new("item"))
        self._spoken = ""
        self._add_item(item)
        where = self._where(item)
        part = {"type": "audio", "transcript": ""} if self.audio else {"type": "text", "text": ""}
        self._emit({"type": "response.content_part.added", **where, "content_index": 0,
                    "part": part})
        if self.audio:
            audio = speech_audio(text, self.fmt.name)
            step = self.pacing.chunk_ms * self.fmt.bytes_per_ms
            chunks = max(1, -(-len(audio) // step))
            delta_type = "response.output_audio_transcript.delta"
        else:
            audio, step, chunks = b"", 0, min(4, max(1, len(text.split())))
            delta_type = "response.output_text.delta"
        for k in range(chunks):
            if k:
                yield self.pacing.interval_s
            upto = len(text) * (k + 1) // chunks
            piece, self._spoken = text[len(self._spoken):upto], text[:upto]
            if piece:
                self._emit({"type": delta_type, **where, "content_index": 0, "delta": piece})
            if self.audio:
                chunk = audio[k * step:(k + 1) * step]
                self._emit({"type": "response.output_audio.delta", **where, "content_index": 0,
                            "delta": base64.b64encode(chunk).decode("ascii")})
                self.audio_ms += self.fmt.ms(len(chunk))
                if self.conversation is not None:
                    self.conversation.audio_ms[item["id"]] = \
                        self.conversation.audio_ms.get(item["id"], 0) + self.fmt.ms(len(chunk))
        self._close_message("completed")

    def _close_message(self, status: str) -> None:
        item = self.item
        assert item is not None
        where = self._where(item)
        spoken = self._spoken
        if self.audio:
            self._emit({"type": "response.output_audio.done", **where, "content_index": 0})
            self._emit({"type": "response.output_audio_transcript.done", **where,
                        "content_index": 0, "transcript": spoken})
            part = {"type": "audio", "transcript": spoken}
            item["content"] = [{"type": "output_audio", "transcript": spoken}]
        else:
            self._emit({"type": "response.output_text.done", **where, "content_index": 0,
                        "text": spoken})
            part = {"type": "text", "text": spoken}
            item["content"] = [{"type": "output_text", "text": spoken}]
        self._emit({"type": "response.content_part.done", **where, "content_index": 0,
                    "part": part})
        item["status"] = status
        self._item_done(item)
        self.item = None

    def _item_done(self, item: dict) -> None:
        self._emit({"type": "response.output_item.done", "response_id": self.id,
                    "output_index": self._output_index, "item": ev.snapshot(item)})
        if self.conversation is not None and item["id"] in self.conversation:
            self._emit({"type": "conversation.item.done",
                        "previous_item_id": self.conversation.previous_id(item["id"]),
                        "item": ev.snapshot(item)})
        self._outputs.append(item)
        self._output_index += 1

    def _function_call(self, call: FunctionCall) -> None:
        item = ev.function_call_item(self.ids.new("item"), self.ids.new("call"), call.name)
        self._add_item(item)
        where = {**self._where(item), "call_id": item["call_id"]}
        half = len(call.arguments) // 2
        for delta in (call.arguments[:half], call.arguments[half:]):
            if delta:
                self._emit({"type": "response.function_call_arguments.delta", **where,
                            "delta": delta})
        self._emit({"type": "response.function_call_arguments.done", **where,
                    "name": call.name, "arguments": call.arguments})
        item["arguments"] = call.arguments
        item["status"] = "completed"
        self.call_ids.append(item["call_id"])
        self._item_done(item)

    def _finish(self, status: str, details: Optional[dict]) -> None:
        obj = self.obj
        obj["status"] = status
        obj["status_details"] = details
        obj["output"] = [ev.snapshot(item) for item in self._outputs]
        text = "".join(c.get("transcript") or c.get("text") or ""
                       for item in self._outputs for c in item.get("content", ()))
        obj["usage"] = ev.usage(self.input_tokens, self.audio_ms, text)
        self._emit({"type": "response.done", "response": ev.snapshot(obj)})
        self.done = True
