"""Tools the agent can use: declared per agent, run by relay when the model calls them.

The package owns everything about tools and nothing else:

- `spec`: the tool declarations of an agent config, validated at start (ToolSpec);
- `schema`: tool parameter schemas (JSON Schema 2020-12, via `jsonschema`): checked at start,
  compiled once per tool, the model's arguments checked against them with path-naming messages;
- `registry`: built-in tools by name (the `@builtin` decorator), `builtins` and `retail` the
  built-ins shipped with relay;
- `context`: what a built-in sees of its call and may do to it (ToolContext);
- `webhook`: HTTP webhook tools (one pooled requests session per worker);
- `turns`: which function calls of which response still wait for their output (sans-IO);
- `runner`: one call's tool executor (greenlets, timeouts, concurrency, outputs, transcript).

Nothing here imports `relay.config` at import time (config imports `spec`).
"""
