"""Built-in tools by name: the registry and the `@builtin` decorator that fills it.

Owns: which built-in tools exist, with the description and parameters schema the model sees
by default and an optional `prepare(config, base_dir)` that validates (and may normalise) the
tool's `config` from the agent file at start. The modules that define built-ins are imported
the first time the registry is asked (BUILTIN_MODULES), so registering one is writing a function:

    @builtin("get_weather", description="The weather in a city.",
             parameters={"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"], "additionalProperties": False})
    def get_weather(ctx: ToolContext, args: dict) -> dict:
        return {"city": args["city"], "sky": "clear"}

A built-in gets its ToolContext and its arguments (already checked against its schema) and
returns the output: a str as is, anything else as JSON. It raises ToolError for a failure the
model should hear about. It runs in a greenlet with a timeout: it may block on I/O.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

if TYPE_CHECKING:
    from relay.tools.context import ToolContext

BuiltinFn = Callable[["ToolContext", dict], Any]
Parameters = Union[dict, Callable[[dict], dict]]
Prepare = Callable[[dict, Path], dict]

BUILTIN_MODULES = ("relay.tools.builtins", "relay.tools.retail")
EMPTY_PARAMETERS: dict = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Builtin:
    """One built-in tool: its function, what the model sees by default, its config check."""

    name: str
    run: BuiltinFn
    description: str
    parameters: Parameters = field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    prepare: Optional[Prepare] = None

    def default_parameters(self, config: dict) -> dict:
        """The parameters schema the model sees when the agent file gives none."""
        if callable(self.parameters):
            return self.parameters(config)
        return self.parameters

    def prepared(self, config: dict, base_dir: Path) -> dict:
        """The tool's config, checked (ValueError saying what is wrong) and normalised."""
        if self.prepare is None:
            if config:
                raise ValueError(f"built-in {self.name!r} takes no 'config'")
            return {}
        return self.prepare(config, base_dir)


class Registry:
    """Built-ins by name. `builtin(...)` is the decorator; modules load on first use."""

    def __init__(self, modules: tuple[str, ...] = ()) -> None:
        self._tools: dict[str, Builtin] = {}
        self._modules = modules
        self._loaded = not modules

    def builtin(self, name: str, *, description: str, parameters: Optional[Parameters] = None,
                prepare: Optional[Prepare] = None) -> Callable[[BuiltinFn], BuiltinFn]:
        """Register the decorated function as the built-in `name`."""
        def register(fn: BuiltinFn) -> BuiltinFn:
            self.add(Builtin(name, fn, description,
                             EMPTY_PARAMETERS if parameters is None else parameters, prepare))
            return fn
        return register

    def add(self, tool: Builtin) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a built-in tool named {tool.name!r} is already registered")
        if not tool.description:
            raise ValueError(f"built-in tool {tool.name!r} needs a description")
        self._tools[tool.name] = tool

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str) -> Optional[Builtin]:
        self._load()
        return self._tools.get(name)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._tools)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            importlib.import_module(module)


BUILTINS = Registry(BUILTIN_MODULES)
builtin = BUILTINS.builtin


def refuse_unknown_keys(config: dict, known: tuple[str, ...]) -> None:
    """A built-in's config check: ValueError naming the keys it does not know, and the ones it
    does."""
    unknown = set(config) - set(known)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} in 'config' "
                         f"(known: {', '.join(known)})")
