"""Tool parameter schemas: JSON Schema (Draft 2020-12) through the `jsonschema` package.

Owns: checking a tool's `parameters` at start (`compile_schema`: a JSON object with
`"type": "object"`, valid against the 2020-12 meta-schema, every `$ref` resolvable inside the
schema itself) and the compiled validator kept for the tool (`ArgumentsValidator`, one per tool
and agent, with a format checker) that checks the model's arguments on each call. Both speak
in messages that name the JSON path of what is wrong: `parameters.properties.when.type: ...`
at start, `arguments.items[0]: missing required property 'sku'` back to the model.

Every keyword of 2020-12 is enforced (`anyOf`, `oneOf`, `allOf`, `not`, `$defs`/`$ref`,
`const`, `minItems`, `if`/`then`, `patternProperties`...); `format` is checked for the formats
jsonschema has a checker for here (date, date-time, time, email, hostname, ipv4, ipv6, uuid,
regex...), and is an annotation for the others, as the specification allows. No I/O: a `$ref`
to anything outside the schema is refused at start, never fetched.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Iterator

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

MAX_ERRORS = 10
MAX_MESSAGE = 300
FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER
_META = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=FORMAT_CHECKER)
_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
# Keywords whose values are data, never schemas (a "$ref" key inside them is not a reference).
_DATA_KEYWORDS = frozenset(("const", "enum", "default", "examples"))


class SchemaError(ValueError):
    """A parameters schema refused at start: the message names the path and what is wrong."""


class ArgumentsValidator:
    """A tool's parameters schema, compiled once; `errors(arguments)` on each call."""

    __slots__ = ("schema", "_validator")

    def __init__(self, schema: dict, validator: Draft202012Validator) -> None:
        self.schema = schema
        self._validator = validator

    def errors(self, value: Any, path: str = "arguments") -> list[str]:
        """The ways value breaks the schema (at most MAX_ERRORS messages, each naming the JSON
        path of the bad value); empty when it is valid."""
        out: list[str] = []
        for error in self._validator.iter_errors(value):
            for message in _messages(error, path):
                if message not in out:
                    out.append(message)
            if len(out) >= MAX_ERRORS:
                break
        return out[:MAX_ERRORS]


def compile_schema(schema: Any, path: str = "parameters") -> ArgumentsValidator:
    """The validator of a tool's parameters schema; SchemaError naming the path otherwise."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{path} must be a JSON Schema object")
    error = best_match(_META.iter_errors(schema))
    if error is not None:
        raise SchemaError(_schema_message(error, path))
    if schema.get("type") not in ("object", ["object"]):
        raise SchemaError(f"{path}: a tool's parameters must have \"type\": \"object\"")
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry = Registry().with_resource(resource.id() or "", resource)
    _check_refs(schema, registry.resolver(base_uri=resource.id() or ""), path)
    validator = Draft202012Validator(schema, registry=registry, format_checker=FORMAT_CHECKER)
    return ArgumentsValidator(schema, validator)


# -- start: the schema's own mistakes ------------------------------------------------------------

def _schema_message(error: ValidationError, path: str) -> str:
    where = path + _json_path(error.absolute_path)
    # the keyword "type" itself (not a property named "type"): the meta-schema's anyOf there
    if list(error.absolute_schema_path)[-3:] == ["properties", "type", "anyOf"]:
        return (f"{where} must be one of {', '.join(_TYPES)} (or a list of them), got "
                f"{_show(error.instance)}")
    if error.validator == "format" and error.validator_value == "regex":
        return f"{where} is not a valid regular expression: {_show(error.instance)}"
    return f"{where}: {_clip(error.message)}"


def _check_refs(node: Any, resolver: Any, path: str, top: bool = True) -> None:
    """Every $ref of the schema must point inside it (relay fetches nothing)."""
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str) and not top:
            resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                resolver.lookup(ref)
            except Unresolvable:
                raise SchemaError(f"{path}.{keyword}: {ref!r} does not point to a part of this "
                                  f"schema (relay resolves references only inside it)") from None
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                _check_refs(value, resolver, f"{path}.{key}", False)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_refs(value, resolver, f"{path}[{index}]", False)


# -- each call: the model's arguments --------------------------------------------------------------

def _messages(error: ValidationError, path: str) -> Iterator[str]:
    """One or more relay-style messages for one jsonschema error."""
    where = path + _json_path(error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        for name in value:
            if isinstance(instance, dict) and name not in instance:
                yield f"{where}: missing required property {name!r}"
        return
    if kind == "additionalProperties" and value is False and isinstance(instance, dict):
        properties = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema,
                                                                          dict) else {}
        allowed = ", ".join(map(repr, properties)) or "none"
        extras = [name for name in instance if name not in properties
                  and not any(_search(p, name) for p in patterns)]
        for name in extras:
            yield f"{where}: unexpected property {name!r} (allowed: {allowed})"
        return
    yield _clip(_message(error, where, kind, value, instance))


def _message(error: ValidationError, where: str, kind: Any, value: Any, instance: Any) -> str:
    if kind == "type":
        kinds = value if isinstance(value, list) else [value]
        return f"{where}: expected {' or '.join(kinds)}, got {json_type(instance)}"
    if kind == "enum":
        return (f"{where}: must be one of {', '.join(_show(o) for o in value)}; got "
                f"{_show(instance)}")
    if kind == "const":
        return f"{where}: must be {_show(value)}; got {_show(instance)}"
    if kind == "format":
        return f"{where}: not a valid {value}: {_show(instance)}"
    if kind == "pattern":
        return f"{where}: does not match the pattern {value!r}"
    if kind == "minLength":
        return f"{where}: shorter than the minimum length {value}"
    if kind == "maxLength":
        return f"{where}: longer than the maximum length {value}"
    if kind == "minimum":
        return f"{where}: less than the minimum {value}"
    if kind == "maximum":
        return f"{where}: more than the maximum {value}"
    if kind == "exclusiveMinimum":
        return f"{where}: must be more than {value}"
    if kind == "exclusiveMaximum":
        return f"{where}: must be less than {value}"
    if kind == "multipleOf":
        return f"{where}: must be a multiple of {value}"
    if kind == "minItems":
        return f"{where}: fewer than the minimum {value} item(s)"
    if kind == "maxItems":
        return f"{where}: more than the maximum {value} item(s)"
    if kind == "uniqueItems":
        return f"{where}: the items must be unique"
    if kind == "minProperties":
        return f"{where}: fewer than the minimum {value} properties"
    if kind == "maxProperties":
        return f"{where}: more than the maximum {value} properties"
    if kind in ("anyOf", "oneOf") and error.context:
        return f"{where}: matches none of the allowed forms ({kind}): {_branches(error, where)}"
    if kind == "oneOf":
        return f"{where}: matches more than one of the allowed forms (oneOf needs exactly one)"
    if kind == "not":
        return f"{where}: must not match the schema in 'not'"
    return f"{where}: {error.message}"


def _branches(error: ValidationError, where: str) -> str:
    """What is wrong with the value against each form of an anyOf/oneOf, most relevant first."""
    by_branch: dict[Any, list[ValidationError]] = {}
    for sub in error.context or ():
        branch = sub.relative_schema_path[0] if sub.relative_schema_path else None
        by_branch.setdefault(branch, []).append(sub)
    parts = []
    for branch, errors in sorted(by_branch.items(), key=lambda item: str(item[0])):
        best = best_match(errors)
        sub_where = where + _json_path(best.relative_path)
        parts.append(f"form {branch}: {_one(best, sub_where)}")
    return "; ".join(parts)


def _one(error: ValidationError, where: str) -> str:
    """A message of a sub-error whose path is given in full."""
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = [n for n in value if isinstance(instance, dict) and n not in instance]
        return f"{where}: missing required property {', '.join(map(repr, missing))}"
    if kind == "additionalProperties" and value is False:
        return f"{where}: unexpected property ({error.message})"
    return _message(error, where, kind, value, instance)


def _json_path(parts: Iterable[Any]) -> str:
    out = []
    for part in parts:
        out.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(out)


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


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


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."

