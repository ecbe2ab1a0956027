"""One call's tool executor: the model's function calls in, function_call_outputs out.

Owns, for one call: running each function call in its own greenlet (spawned by the Call, so it
dies with the call) under a per-tool timeout and a per-call limit on tools running at once;
parsing the arguments and checking them against the tool's schema; turning every failure
(unknown tool, invalid JSON, schema violation, exception, timeout, HTTP or connection error)
into a JSON error output the model hears while the conversation goes on; writing each call,
its arguments, result or error and duration to the call's transcript; and, through ToolTurns,
sending the one response.create that follows a response's function calls at the right moment.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Optional

import gevent
import ujson
from gevent.lock import BoundedSemaphore

from relay import realtime_events as ev
from relay.tools.context import ToolContext
from relay.tools.errors import (
    INVALID_ARGUMENTS,
    INVALID_JSON,
    NOT_AVAILABLE,
    TIMEOUT,
    TOOL_FAILED,
    UNKNOWN_TOOL,
    ToolError,
)
from relay.tools.spec import ToolSpec
from relay.tools.turns import ToolTurns

if TYPE_CHECKING:
    from relay.call import Call

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 16_000       # of one output sent to the model
TRANSCRIPT_CHARS = 2_000        # of one result kept in the transcript


def parse_arguments(text: str) -> dict:
    """The arguments object of a function call (ToolError when it is not one)."""
    if not text or not text.strip():
        return {}
    try:
        value = ujson.loads(text)
    except (ValueError, OverflowError) as exc:
        raise ToolError(INVALID_JSON, f"the arguments are not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ToolError(INVALID_ARGUMENTS, "the arguments must be a JSON object")
    return value


def as_output(result: Any) -> str:
    """A tool's return value as function_call_output text."""
    if isinstance(result, str):
        return result
    if result is None:
        return '{"ok": true}'
    return ujson.dumps(result, ensure_ascii=False)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ...[truncated]"


class CallTools:
    """The tools of one call. The Call forwards function calls and response.done here."""

    def __init__(self, call: "Call") -> None:
        settings = call.settings.tree["tools"]
        self.call = call
        self._specs: dict[str, ToolSpec] = {s.name: s for s in call.agent.tool_specs}
        self.max_concurrent: int = settings["max_concurrent_per_call"]
        self.default_timeout_s: float = settings["default_timeout_s"]
        self._slots = BoundedSemaphore(self.max_concurrent)
        self.turns = ToolTurns()
        self.running = 0
        self.completed = 0
        self.failed = 0

    # from the model session (its reader greenlet): never blocks
    def on_function_call(self, response_id: str, call_id: str, name: str,
                         arguments: str) -> None:
        call = self.call
        if call.state in ("ending", "ended"):
            return
        session = call.session
        connection = session.connections if session is not None else 0
        self.turns.called(response_id, call_id)
        self.running += 1
        call.spawn(self._run, response_id, call_id, name, arguments, connection)

    def on_response_done(self, response_id: str, status: str) -> None:
        if self.turns.response_done(response_id, status):
            self._go_on()

    # one function call, in its own greenlet
    def _run(self, response_id: str, call_id: str, name: str, arguments: str,
             connection: int) -> None:
        started = time.monotonic()
        shown: Any = arguments
        final = False
        error: Optional[ToolError] = None
        try:
            try:
                spec = self._specs.get(name)
                if spec is None:
                    raise ToolError(UNKNOWN_TOOL, f"there is no tool named {name!r}",
                                    available=sorted(self._specs))
                args = parse_arguments(arguments)
                shown = args
                problems = spec.validator.errors(args)
                if problems:
                    raise ToolError(INVALID_ARGUMENTS, "; ".join(problems))
                self.call.transcript.add("tool", name, function_call_id=call_id, status="running",
                                         arguments=shown)
                output, final = self._execute(spec, args, response_id, call_id)
            except ToolError as exc:
                error, output = exc, exc.output()
            except Exception as exc:        # a bug in relay's own tool code
                log.exception("call %s: tool %s failed", self.call.id, name)
                error = ToolError(TOOL_FAILED, f"{type(exc).__name__}: {exc}"[:300])
                output = error.output()
        finally:
            self.running -= 1
        self._finish(response_id, call_id, name, shown, _bounded(output, MAX_OUTPUT_CHARS),
                     error, final, started, connection)

    def _execute(self, spec: ToolSpec, args: dict, response_id: str,
                 call_id: str) -> tuple[str, bool]:
        """(output, ends the conversation) of one tool, within its timeout."""
        call = self.call
        timeout = spec.timeout_s or self.default_timeout_s
        timer = gevent.Timeout(timeout)
        timer.start()
        acquired = False
        try:
            self._slots.acquire()
            acquired = True
            if spec.builtin is not None:
                ctx = ToolContext(call, tool=spec.name, config=spec.config,
                                  response_id=response_id, function_call_id=call_id)
                return as_output(spec.builtin.run(ctx, args)), ctx.ends_conversation
            webhooks = getattr(call.worker, "webhooks", None)
            if webhooks is None or spec.webhook is None:
                raise ToolError(NOT_AVAILABLE, "webhook tools are not available here")
            context = {"call_id": call.id, "caller_number": call.caller_number,
                       "agent": call.agent.key}
            if getattr(call, "direction", "inbound") == "outbound":
                context.update(direction="outbound", variables=dict(call.variables))
            return webhooks.call(spec.webhook, args, context, timeout), False
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if not acquired:
                raise ToolError(TIMEOUT, f"no tool slot came free within {timeout:g} s "
                                f"({self.max_concurrent} tools already running in this call)"
                                ) from None
            raise ToolError(TIMEOUT, f"the tool did not finish within {timeout:g} s") from None
        except ToolError:
            raise
        except Exception as exc:
            log.warning("call %s: tool %s raised %s: %s", call.id, spec.name,
                        type(exc).__name__, exc)
            raise ToolError(TOOL_FAILED, f"{type(exc).__name__}: {exc}"[:300]) from None
        finally:
            if acquired:
                self._slots.release()
            timer.close()

    def _finish(self, response_id: str, call_id: str, name: str, shown: Any, output: str,
                error: Optional[ToolError], final: bool, started: float,
                connection: int) -> None:
        call = self.call
        duration_ms = round((time.monotonic() - started) * 1000.0, 1)
        fields: dict[str, Any] = {"function_call_id": call_id, "arguments": shown,
                                  "duration_ms": duration_ms}
        if error is None:
            self.completed += 1
            fields.update(status="ok", result=_bounded(output, TRANSCRIPT_CHARS))
            log.info("call %s: tool %s ok in %.0f ms", call.id, name, duration_ms)
        else:
            self.failed += 1
            fields.update(status="error", error=error.as_dict())
            log.info("call %s: tool %s failed in %.0f ms: %s %s", call.id, name, duration_ms,
                     error.code, error.message)
        call.transcript.add("tool", name, **fields)
        count = getattr(call.worker, "count_tool_call", None)      # relay_tool_calls_total
        if count is not None:
            count("ok" if error is None else error.code)
        if final:
            self.turns.final(response_id)
        session = call.session
        if session is None:
            self.turns.forget(response_id)
            return
        if session.connections != connection:
            # A replaced socket: the new conversation has no such call to answer, so the result
            # goes in as context, and the model is asked to go on with it (unless the tool
            # ended the call or the caller had interrupted that response).
            respond = self.turns.forget(response_id) and not final
            if call.state not in ("ending", "ended"):
                session.add_context(f"The tool {name} (called before a reconnection) returned: "
                                    f"{_bounded(output, TRANSCRIPT_CHARS)}", respond=respond)
            return
        session.send(ev.function_output(call_id, output))
        if self.turns.output_sent(response_id, call_id):
            self._go_on()

    def _go_on(self) -> None:
        """The one response.create after a response's function calls."""
        call = self.call
        if call.session is not None and call.state not in ("ending", "ended"):
            call.session.request_response()

    def stats(self) -> dict:
        return {"running": self.running, "completed": self.completed, "failed": self.failed}
