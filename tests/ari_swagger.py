"""Validate JSON against the ARI Swagger 1.2 description shipped with Asterisk (ari-api-docs).

    spec = AriSpec.load(reference_dir / "asterisk" / "ari-api-docs")
    spec.validate(body, "Channel")            # -> list of problems ([] when valid)
    spec.validate_event(event)                # the model named by event["type"], strictly
    spec.validate_response("POST", "/channels/externalMedia", 200, body)

Types: string, boolean, int/long (integers), double (numbers), Date (a string in Asterisk's
format), object (a JSON object), List[T], and model names (recursively). Required properties
must be present; allowableValues are enforced. Events use the `subTypes` hierarchy
(Message -> Event -> StasisStart ...): an event gets the properties of its model and of every
ancestor, and unknown properties are reported (strict). Responses are matched to the operation
by method and path template; errors must be a documented (or generic, see GENERIC_ERRORS) status
with a {"message": string} body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}$")
# Any operation may answer these, documented or not: 400 (the generated handlers reject a
# malformed request or body), 401 (auth), 404/405 (no such resource/method), 500, 501.
GENERIC_ERRORS = {400, 401, 404, 405, 500, 501}


@dataclass
class Operation:
    method: str
    path: str
    pattern: re.Pattern
    response_class: str
    error_codes: set[int]
    nickname: str


class AriSpec:
    def __init__(self, models: dict[str, dict], operations: list[Operation]) -> None:
        self.models = models
        self.operations = operations
        self.parents: dict[str, str] = {}
        for name, model in models.items():
            for sub in model.get("subTypes", []):
                self.parents[sub] = name

    @classmethod
    def load(cls, directory: Path | str) -> AriSpec:
        models: dict[str, dict] = {}
        operations: list[Operation] = []
        for path in sorted(Path(directory).glob("*.json")):
            doc = json.loads(path.read_text())
            for name, model in doc.get("models", {}).items():
                if name in models and models[name] != model:
                    raise ValueError(f"model {name} defined twice differently")
                models[name] = model
            for api in doc.get("apis", []):
                template = api["path"]
                pattern = re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", template) + "$")
                for op in api.get("operations", []):
                    codes = {int(e["code"]) for e in op.get("errorResponses", [])}
                    operations.append(Operation(op["httpMethod"], template, pattern,
                                                op.get("responseClass", "void"), codes,
                                                op.get("nickname", "")))
        return cls(models, operations)

    # ------------------------------------------------------------------ models
    def properties(self, name: str) -> dict[str, dict]:
        """A model's properties with those of its ancestors (subTypes)."""
        chain = []
        while name is not None:
            chain.append(name)
            name = self.parents.get(name)
        props: dict[str, dict] = {}
        for model in reversed(chain):
            props.update(self.models[model].get("properties", {}))
        return props

    def validate(self, value: Any, type_name: str, strict: bool = True, where: str = "$"
                 ) -> list[str]:
        """Problems of `value` as `type_name` (a model name or a Swagger type)."""
        problems: list[str] = []
        self._check(value, type_name, strict, where, problems)
        return problems

    def _check(self, value: Any, t: str, strict: bool, where: str, out: list[str]) -> None:
        m = re.fullmatch(r"List\[(.+)\]", t)
        if m:
            if not isinstance(value, list):
                out.append(f"{where}: expected a list of {m.group(1)}, got {type(value).__name__}")
                return
            for i, item in enumerate(value):
                self._check(item, m.group(1), strict, f"{where}[{i}]", out)
            return
        if t == "string":
            if not isinstance(value, str):
                out.append(f"{where}: expected string, got {value!r}")
        elif t == "boolean":
            if not isinstance(value, bool):
                out.append(f"{where}: expected boolean, got {value!r}")
        elif t in ("int", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                out.append(f"{where}: expected integer, got {value!r}")
        elif t == "double":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                out.append(f"{where}: expected number, got {value!r}")
        elif t == "Date":
            if not isinstance(value, str) or not DATE_RE.match(value):
                out.append(f"{where}: expected a Date string like "
                           f"2026-11-29T21:58:58.218+0000, got {value!r}")
        elif t == "object":
            if not isinstance(value, dict):
                out.append(f"{where}: expected object, got {value!r}")
        elif t in self.models:
            self._check_model(value, t, strict, where, out)
        else:
            out.append(f"{where}: unknown type {t}")

    def _check_model(self, value: Any, name: str, strict: bool, where: str,
                     out: list[str]) -> None:
        if not isinstance(value, dict):
            out.append(f"{where}: expected {name} object, got {value!r}")
            return
        props = self.properties(name)
        for prop, spec in props.items():
            if prop not in value:
                if spec.get("required"):
                    out.append(f"{where}: {name} misses required property '{prop}'")
                continue
            self._check(value[prop], spec["type"], strict, f"{where}.{prop}", out)
            allowed = spec.get("allowableValues", {}).get("values")
            if allowed and value[prop] not in allowed:
                out.append(f"{where}.{prop}: {value[prop]!r} not one of {allowed}")
        if strict:
            for prop in value:
                if prop not in props:
                    out.append(f"{where}: {name} has unknown property '{prop}'")

    # ------------------------------------------------------------------ events
    def is_event_type(self, name: str) -> bool:
        while name in self.parents:
            name = self.parents[name]
            if name == "Message":
                return True
        return False

    def validate_event(self, event: Any, strict: bool = True) -> list[str]:
        """An event (or any Message) against the model its `type` names, with ancestors."""
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [f"not an event: {event!r}"[:200]]
        t = event["type"]
        if t not in self.models or not self.is_event_type(t):
            return [f"unknown event type {t!r}"]
        return self.validate(event, t, strict, where=t)

    # ------------------------------------------------------------------ REST responses
    def find_operation(self, method: str, path: str) -> Operation | None:
        """The operation for a path relative to /ari (e.g. /channels/abc/play)."""
        matches = [op for op in self.operations
                   if op.method == method and op.pattern.match(path)]
        if not matches:
            return None
        # Prefer the most specific template (fewest path parameters): /channels/externalMedia
        # over /channels/{channelId}.
        return min(matches, key=lambda op: op.path.count("{"))

    def validate_response(self, method: str, path: str, status: int, body: Any,
                          strict: bool = True) -> list[str]:
        op = self.find_operation(method, path)
        if op is None:
            if status in (404, 405) and isinstance(body, dict) and set(body) == {"message"}:
                return []           # a correct answer to a path or method ARI does not have
            return [f"{method} {path}: no such operation in the Swagger files"]
        where = f"{method} {op.path} -> {status}"
        if status >= 400:
            problems = []
            if status not in op.error_codes and status not in GENERIC_ERRORS:
                problems.append(f"{where}: status not documented (documented: "
                                f"{sorted(op.error_codes)})")
            if not (isinstance(body, dict) and set(body) == {"message"}
                    and isinstance(body["message"], str)):
                problems.append(f"{where}: error body must be {{'message': str}}, got {body!r}")
            return problems
        if op.response_class == "void":
            if status != 204 or body not in (None, b"", ""):
                return [f"{where}: a void operation answers 204 without a body, got {body!r}"]
            return []
        if status not in (200, 201):
            return [f"{where}: unexpected success status"]
        return self.validate(body, op.response_class, strict, where=where)
