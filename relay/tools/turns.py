"""When the model may be asked to go on after function calls (sans-IO).

Owns: per response, the function calls still waiting for their output, whether the response is
done, and whether it should be followed by a response.create at all. The protocol (FACTS.md,
"Flows: Function call"): an output for every call of a response, then ONE response.create,
only after that response's response.done AND all its outputs were sent. Not followed by one:
a response whose tool ended or transferred the call, or a cancelled response (the caller
barged in: their own turn makes the next response). No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_OPEN = 64       # responses tracked at once (the oldest is forgotten past this)


@dataclass
class _Turn:
    waiting: set[str] = field(default_factory=set)
    done: bool = False
    respond: bool = True


class ToolTurns:
    """Function calls by response. Each method that can complete a response returns True when
    the caller should now send the one response.create."""

    def __init__(self, max_open: int = MAX_OPEN) -> None:
        self._open: dict[str, _Turn] = {}
        self._max_open = max_open
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._open)

    def called(self, response_id: str, call_id: str) -> None:
        """The model asked for a function call in this response."""
        turn = self._open.get(response_id)
        if turn is None:
            turn = self._open[response_id] = _Turn()
            while len(self._open) > self._max_open:
                del self._open[next(iter(self._open))]
                self.forgotten += 1
        turn.waiting.add(call_id)

    def waiting(self, response_id: str) -> int:
        turn = self._open.get(response_id)
        return 0 if turn is None else len(turn.waiting)

    def final(self, response_id: str) -> None:
        """A tool of this response ended the conversation: no response.create after it."""
        turn = self._open.get(response_id)
        if turn is not None:
            turn.respond = False

    def output_sent(self, response_id: str, call_id: str) -> bool:
        """The output of one call went to the model."""
        turn = self._open.get(response_id)
        if turn is None:
            return False
        turn.waiting.discard(call_id)
        return self._complete(response_id, turn)

    def response_done(self, response_id: str, status: str = "completed") -> bool:
        """response.done arrived for this response (status completed, cancelled, ...)."""
        turn = self._open.get(response_id)
        if turn is None:
            return False
        turn.done = True
        if status == "cancelled":
            turn.respond = False
        return self._complete(response_id, turn)

    def forget(self, response_id: str) -> bool:
        """Stop tracking a response (its session was replaced: no response.done will come).
        True when it was tracked and would have been followed by a response.create."""
        turn = self._open.pop(response_id, None)
        return turn is not None and turn.respond

    def _complete(self, response_id: str, turn: _Turn) -> bool:
        if not turn.done or turn.waiting:
            return False
        del self._open[response_id]
        return turn.respond
