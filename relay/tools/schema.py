"""A small JSON Schema validator for tool parameters: the subset function schemas use.

Owns: checking that a tool's `parameters` schema only uses keywords relay enforces
(`check_schema`, at start: a keyword relay would silently ignore is refused instead), and
validating the model's arguments against it (`validate`, per call), with messages that name
the path of the offending value.

Supported: `type` (object, string, integer, number, boolean, array, null, or a list of them),
`properties`, `required`, `additionalProperties` (true/false), `enum`, `items`, `minimum`,
`maximum`, `minLength`, `maxLength`, `pattern`; and the annotations `description`, `title`,
`default`, `examples`. No I/O, no dependency.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

TYPES = ("object", "string", "integer", "number", "boolean", "array", "null")
ANNOTATIONS = frozenset(("description", "title", "default", "examples"))
KEYWORDS = frozenset(("type", "properties", "required", "additionalProperties", "enum", "items",
                      "minimum", "maximum", "minLength", "maxLength", "pattern")) | ANNOTATIONS
MAX_ERRORS = 10


class SchemaError(ValueError):
    """A schema relay cannot enforce: the message names the path and what is wrong."""


def check_schema(schema: Any, path: str = "parameters", top: bool = True) -> None:
    """Refuse a schema outside the supported subset (SchemaError). At the top a tool's
    parameters must be an object schema."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{path} must be a JSON Schema object")
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise SchemaError(f"{path}: unsupported keyword(s) {', '.join(unknown)} (relay validates "
                          f"{', '.join(sorted(KEYWORDS - ANNOTATIONS))})")
    types = _types(schema, path)
    if top and types != ("object",):
        raise SchemaError(f"{path}: a tool's parameters must have \"type\": \"object\"")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise SchemaError(f"{path}.properties must be an object")
    for name, sub in properties.items():
        check_schema(sub, f"{path}.properties.{name}", top=False)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{path}.required must be a list of property names")
    missing = [r for r in required if r not in properties]
    if missing:
        raise SchemaError(f"{path}.required names {', '.join(map(repr, missing))}, not in "
                          f"{path}.properties")
    if not isinstance(schema.get("additionalProperties", True), bool):
        raise SchemaError(f"{path}.additionalProperties must be true or false (schemas there are "
                          f"not supported)")
    if "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum:
            raise SchemaError(f"{path}.enum must be a non-empty list")
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items", top=False)
    for key in ("minimum", "maximum"):
        if key in schema and not _is_number(schema[key]):
            raise SchemaError(f"{path}.{key} must be a number")
    for key in ("minLength", "maxLength"):
        value = schema.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SchemaError(f"{path}.{key} must be a non-negative integer")
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            raise SchemaError(f"{path}.pattern must be a string")
        try:
            _compiled(schema["pattern"])
        except re.error as exc:
            raise SchemaError(f"{path}.pattern is not a valid regular expression: {exc}") from None


def validate(value: Any, schema: dict, path: str = "arguments") -> list[str]:
    """The ways value breaks schema (at most MAX_ERRORS messages); empty when it is valid.
    The schema must have passed check_schema."""
    errors: list[str] = []
    _validate(value, schema, path, errors)
    return errors[:MAX_ERRORS]


def _validate(value: Any, schema: dict, path: str, errors: list[str]) -> None:
    if len(errors) >= MAX_ERRORS:
        return
    types = _types(schema, path)
    if types and not any(_is_type(value, t) for t in types):
        errors.append(f"{path}: expected {' or '.join(types)}, got {json_type(value)}")
        return
    if "enum" in schema and not any(json_equal(value, option) for option in schema["enum"]):
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


def _types(schema: dict, path: str) -> tuple[str, ...]:
    kind = schema.get("type")
    if kind is None:
        return ()
    kinds = kind if isinstance(kind, list) else [kind]
    if not kinds or any(k not in TYPES for k in kinds):
        raise SchemaError(f"{path}.type must be one of {', '.join(TYPES)} (or a list of them), "
                          f"got {kind!r}")
    return tuple(kinds)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return _is_number(value)
    return json_type(value) == kind


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (integer for whole numbers written as 1)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON means it: true is not 1, 1 equals 1.0, containers compared deeply."""
    if _is_number(a) and _is_number(b):
        return a == b
    if json_type(a) != json_type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return a == b


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)
