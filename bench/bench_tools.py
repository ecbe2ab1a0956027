"""Tool-argument validation: jsonschema's compiled validator beside relay's old hand-written one.

Owns one question of issue #13: what does checking the model's arguments against the tool's
schema cost per function call, now that `jsonschema` (Draft 2020-12, a validator compiled once
per tool, with a format checker) does it instead of relay's old subset validator? Measured in
the same run, on a realistic schema (an order look-up: required fields, a pattern, an enum,
bounds, an array of objects) that both can enforce:

- valid arguments (the usual case): `ArgumentsValidator.errors` vs the old `validate`;
- invalid arguments (three faults, messages built): the same two;
- reported only: jsonschema on a schema the old validator refused (anyOf, $defs/$ref, const,
  format "date" and "email"), and compiling a schema (done once per tool at start).

The reference is a copy of the old validator kept here only (`_old_validate`, below), as it
was in relay/tools/schema.py. Reported, not judged: one function call per model turn at most
a few, and a model turn takes hundreds of milliseconds.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from bench.harness import Row, time_per_call_ns
from relay.tools.schema import compile_schema
from relay.tools.schema import json_type as _json_type  # unchanged from the old validator's

CALLS = 5_000

ORDER = {
    "type": "object", "additionalProperties": False, "required": ["order_number", "items"],
    "properties": {
        "order_number": {"type": "string", "pattern": "^[0-9]+$", "minLength": 1,
                         "maxLength": 8, "description": "The order number, digits only."},
        "priority": {"type": "string", "enum": ["low", "normal", "high"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
        "gift": {"type": "boolean"},
        "note": {"type": ["string", "null"], "maxLength": 200},
        "items": {"type": "array", "items": {
            "type": "object", "required": ["sku"], "additionalProperties": False,
            "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
                           "count": {"type": "integer", "minimum": 1}}}},
    },
}
GOOD = {"order_number": "427", "priority": "high", "quantity": 2, "gift": False,
        "note": "Leave at the door.", "items": [{"sku": "KB-100", "count": 1},
                                                {"sku": "MS-200", "count": 2}]}
BAD = {"order_number": 427, "priority": "urgent", "items": [{"count": 1}]}

RICH = {
    "type": "object", "additionalProperties": False, "required": ["kind", "date", "guests"],
    "properties": {
        "kind": {"const": "table"},
        "date": {"type": "string", "format": "date"},
        "contact": {"anyOf": [{"type": "string", "format": "email"}, {"$ref": "#/$defs/phone"}]},
        "guests": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/guest"}},
    },
    "$defs": {
        "guest": {"type": "object", "required": ["name"],
                  "properties": {"name": {"type": "string", "minLength": 1}}},
        "phone": {"type": "object", "required": ["number"],
                  "properties": {"number": {"type": "string", "pattern": "^[+0-9 ]{6,}$"}}},
    },
}
RICH_GOOD = {"kind": "table", "date": "2025-06-30", "contact": {"number": "+44 20 7946"},
             "guests": [{"name": "Ann"}, {"name": "Bob"}]}


def run() -> list[Row]:
    compiled = compile_schema(ORDER)
    assert compiled.errors(GOOD) == [] and _old_validate(GOOD, ORDER) == []
    assert len(compiled.errors(BAD)) == 3 and len(_old_validate(BAD, ORDER)) == 3
    rich = compile_schema(RICH)
    assert rich.errors(RICH_GOOD) == []
    reference = "old hand-written validator"
    good, bad = len(json.dumps(GOOD)), len(json.dumps(BAD))
    return [
        Row("tool args valid, jsonschema", time_per_call_ns(lambda: compiled.errors(GOOD), CALLS),
            good, reference, time_per_call_ns(lambda: _old_validate(GOOD, ORDER), CALLS)),
        Row("tool args 3 faults, jsonschema", time_per_call_ns(lambda: compiled.errors(BAD),
                                                               CALLS),
            bad, reference, time_per_call_ns(lambda: _old_validate(BAD, ORDER), CALLS)),
        Row("tool args anyOf/$ref/format", time_per_call_ns(lambda: rich.errors(RICH_GOOD),
                                                            CALLS),
            len(json.dumps(RICH_GOOD)), "(refused by the old one)", None),
        Row("tool schema compile (at start)", time_per_call_ns(lambda: compile_schema(ORDER),
                                                               200),
            len(json.dumps(ORDER)), "-", None),
    ]


# -- the reference: relay's old validator (relay/tools/schema.py before jsonschema) ---------------

_MAX_ERRORS = 10


def _old_validate(value: Any, schema: dict, path: str = "arguments") -> list[str]:
    errors: list[str] = []
    _validate(value, schema, path, errors)
    return errors[:_MAX_ERRORS]


def _validate(value: Any, schema: dict, path: str, errors: list[str]) -> None:
    if len(errors) >= _MAX_ERRORS:
        return
    types = _types(schema)
    if types and not any(_is_type(value, t) for t in types):
        errors.append(f"{path}: expected {' or '.join(types)}, got {_json_type(value)}")
        return
    if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
        options = ", ".join(_show(o) for o in schema["enum"])
        errors.append(f"{path}: must be one of {options}; got {_show(value)}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{path}: missing required property {name!r}")
        for name, item in value.items():
            sub = properties.get(name)
            if sub is not None:
                _validate(item, sub, f"{path}.{name}", errors)
            elif schema.get("additionalProperties", True) is False:
                allowed = ", ".join(map(repr, properties)) or "none"
                errors.append(f"{path}: unexpected property {name!r} (allowed: {allowed})")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{index}]", errors)
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than the minimum length {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than the maximum length {schema['maxLength']}")
        if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
            errors.append(f"{path}: does not match the pattern {schema['pattern']!r}")
    elif _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: more than the maximum {schema['maximum']}")


def _types(schema: dict) -> tuple[str, ...]:
    kind = schema.get("type")
    if kind is None:
        return ()
    return tuple(kind if isinstance(kind, list) else [kind])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return _is_number(value)
    return _json_type(value) == kind



def _json_equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return a == b
    if _json_type(a) != _json_type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)
