"""The tools an agent config declares, validated at start.

Owns: reading the "tools" list of an agent file into ToolSpecs: the function schema the model
sees (name, description, parameters) and how relay runs the tool — a built-in by name, or an
HTTP webhook whose header values come from environment variables (`${VAR}`, never the secret
itself in the file). Every error names the tool's index and what is wrong (the caller adds the
file). A declaration may look like:

    {"name": "transfer_call", "builtin": "transfer_call", "config": {"targets": {...}}}
    {"name": "check_stock", "description": "...", "parameters": {...JSON Schema...},
     "webhook": {"url": "https://erp.example/stock", "method": "POST",
                 "headers": {"X-Key": "${ERP_KEY}"}, "timeout_s": 5}}

A built-in may leave out description and parameters (the built-in's own are used); a bare
{"name": "end_call"} names the built-in of that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from relay.tools.registry import BUILTINS, EMPTY_PARAMETERS, Builtin, Registry
from relay.tools.schema import ArgumentsValidator, SchemaError, compile_schema

TOOL_KEYS = ("name", "description", "parameters", "builtin", "webhook", "timeout_s", "config")
WEBHOOK_KEYS = ("url", "method", "headers", "timeout_s")
WEBHOOK_METHODS = ("POST", "PUT", "PATCH")
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")          # what the Realtime API accepts
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_TIMEOUT_S = 600.0


class ToolConfigError(ValueError):
    """A tool declaration is wrong: the message names the tool and what."""


@dataclass(frozen=True)
class WebhookSpec:
    """How to call a webhook tool. `headers` holds the values taken from the environment."""

    url: str
    method: str = "POST"
    header_templates: tuple[tuple[str, str], ...] = ()
    headers: dict = field(default_factory=dict, repr=False, compare=False)
    timeout_s: Optional[float] = None


@dataclass(frozen=True)
class ToolSpec:
    """One declared tool: what the model sees and how relay runs it."""

    name: str
    description: str
    parameters: dict
    builtin: Optional[Builtin] = None
    config: dict = field(default_factory=dict)
    webhook: Optional[WebhookSpec] = None
    timeout_s: Optional[float] = None
    # parameters, compiled once at start: checks the model's arguments on each call
    validator: Optional[ArgumentsValidator] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.validator is None:
            object.__setattr__(self, "validator", compile_schema(self.parameters))

    @property
    def kind(self) -> str:
        return "builtin" if self.builtin is not None else "webhook"

    def declaration(self, raw: dict) -> dict:
        """The public form (AgentConfig.tools): the schema the model sees and, as written in
        the file, how the tool runs (header templates, never their values)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description,
                               "parameters": self.parameters}
        if self.builtin is not None:
            out["builtin"] = self.builtin.name
            if raw.get("config"):
                out["config"] = raw["config"]
        if self.webhook is not None:
            hook = self.webhook
            out["webhook"] = {"url": hook.url, "method": hook.method,
                              "headers": dict(hook.header_templates)}
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        return out


def parse_tools(raw: Any, base_dir: Path, environ: Mapping[str, str],
                registry: Registry = BUILTINS) -> tuple[tuple[dict, ...], tuple[ToolSpec, ...]]:
    """(public declarations, ToolSpecs) of an agent's "tools" list; ToolConfigError otherwise."""
    if not isinstance(raw, list):
        raise ToolConfigError("'tools' must be a list")
    declarations, specs, seen = [], [], set()
    for index, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise ToolConfigError(f"tools[{index}] must be an object with a 'name'")
        name = tool["name"]
        try:
            if not NAME.match(name):
                raise ToolConfigError("'name' may only use letters, digits, '_' and '-' (1 to 64)")
            if name in seen:
                raise ToolConfigError("another tool of this agent has the same name")
            spec = parse_tool(tool, base_dir, environ, registry)
        except ToolConfigError as exc:
            raise ToolConfigError(f"tools[{index}] ({name!r}): {exc}") from None
        seen.add(name)
        declarations.append(spec.declaration(tool))
        specs.append(spec)
    return tuple(declarations), tuple(specs)


def parse_tool(tool: dict, base_dir: Path, environ: Mapping[str, str],
               registry: Registry = BUILTINS) -> ToolSpec:
    """One declaration (already known to have a valid name)."""
    unknown = sorted(set(tool) - set(TOOL_KEYS))
    if unknown:
        raise ToolConfigError(f"unknown key(s) {', '.join(unknown)} (known: "
                              f"{', '.join(TOOL_KEYS)})")
    name = tool["name"]
    if "builtin" in tool and "webhook" in tool:
        raise ToolConfigError("give either 'builtin' or 'webhook', not both")
    timeout_s = _timeout(tool.get("timeout_s"), "timeout_s")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise ToolConfigError("'description' must be a string")
    if "webhook" in tool:
        if "config" in tool:
            raise ToolConfigError("'config' is for built-ins; a webhook gets its arguments")
        if not description or not description.strip():
            raise ToolConfigError("a webhook tool needs a 'description' (the model reads it)")
        hook = _webhook(tool["webhook"], environ)
        if hook.timeout_s is not None and timeout_s is not None:
            raise ToolConfigError("give 'timeout_s' once: in the tool or in its 'webhook'")
        parameters, validator = _parameters(tool, EMPTY_PARAMETERS)
        return ToolSpec(name, description, parameters, webhook=hook,
                        timeout_s=hook.timeout_s if timeout_s is None else timeout_s,
                        validator=validator)
    builtin_name = tool.get("builtin", name if registry.get(name) is not None else None)
    if builtin_name is None:
        raise ToolConfigError(f"needs 'builtin' (one of {', '.join(registry.names())}) or "
                              f"'webhook'")
    if not isinstance(builtin_name, str):
        raise ToolConfigError("'builtin' must be the name of a built-in tool")
    found = registry.get(builtin_name)
    if found is None:
        raise ToolConfigError(f"unknown built-in {builtin_name!r} (known: "
                              f"{', '.join(registry.names())})")
    config = tool.get("config", {})
    if not isinstance(config, dict):
        raise ToolConfigError("'config' must be an object")
    try:
        prepared = found.prepared(dict(config), base_dir)
        default = found.default_parameters(prepared)
    except ValueError as exc:
        raise ToolConfigError(str(exc)) from None
    parameters, validator = _parameters(tool, default)
    return ToolSpec(name, description or found.description, parameters, builtin=found,
                    config=prepared, timeout_s=timeout_s, validator=validator)


def _parameters(tool: dict, default: dict) -> tuple[dict, ArgumentsValidator]:
    """The tool's parameters schema (JSON Schema 2020-12) and its compiled validator."""
    parameters = tool.get("parameters", default)
    try:
        return parameters, compile_schema(parameters)
    except SchemaError as exc:
        raise ToolConfigError(str(exc)) from None


def _timeout(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 < value <= MAX_TIMEOUT_S):
        raise ToolConfigError(f"'{where}' must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]")
    return float(value)


def _webhook(hook: Any, environ: Mapping[str, str]) -> WebhookSpec:
    if not isinstance(hook, dict):
        raise ToolConfigError("'webhook' must be an object {url, method, headers, timeout_s}")
    unknown = sorted(set(hook) - set(WEBHOOK_KEYS))
    if unknown:
        raise ToolConfigError(f"unknown key(s) {', '.join(unknown)} in 'webhook' (known: "
                              f"{', '.join(WEBHOOK_KEYS)})")
    url = hook.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise ToolConfigError("'webhook.url' must be an http:// or https:// URL")
    method = hook.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in WEBHOOK_METHODS:
        raise ToolConfigError(f"'webhook.method' must be one of {', '.join(WEBHOOK_METHODS)}")
    headers = hook.get("headers", {})
    if not isinstance(headers, dict):
        raise ToolConfigError("'webhook.headers' must be an object: name -> \"${ENV_VAR}\"")
    templates, resolved = [], {}
    for header, template in headers.items():
        where = f"'webhook.headers.{header}'"
        if not HEADER_NAME.match(header):
            raise ToolConfigError(f"{where}: not a valid header name")
        if not isinstance(template, str) or not ENV_REF.search(template):
            raise ToolConfigError(f"{where}: the value must come from the environment, e.g. "
                                  f"\"${{MY_API_KEY}}\" or \"Bearer ${{MY_TOKEN}}\" (secrets never "
                                  f"go in the agent file)")
        missing = [v for v in ENV_REF.findall(template) if v not in environ]
        if missing:
            raise ToolConfigError(f"{where}: environment variable {', '.join(missing)} is not "
                                  f"set")
        value = ENV_REF.sub(lambda m: environ[m.group(1)], template)
        if "\r" in value or "\n" in value:
            raise ToolConfigError(f"{where}: the environment variable holds a line break")
        templates.append((header, template))
        resolved[header] = value
    return WebhookSpec(url, method.upper(), tuple(templates), resolved,
                       _timeout(hook.get("timeout_s"), "webhook.timeout_s"))
