"""Call variables and the `{name}` placeholders they fill in an agent's texts.

Owns: checking the variables a dial brings (names, values, sizes: `check_variables`) and
filling `{name}` placeholders in the agent's instructions and greeting (`fill`). The rule,
decided once for every text: a placeholder is `{` + an identifier + `}`; `{{` and `}}` are a
literal brace; any other brace is left as it is (JSON examples in instructions stay intact). A
placeholder with no variable of its name is an error at dial time (`MissingVariables`, naming
them all), never a text sent to the model with a hole in it. Inbound calls have no variables
and their texts are not filled at all. No I/O.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_VARIABLES = 50
MAX_VALUE_CHARS = 2000


class MissingVariables(ValueError):
    """Placeholders with no variable of their name (`names`, sorted)."""

    def __init__(self, names: list[str], where: str) -> None:
        self.names = names
        super().__init__(f"{where} use(s) placeholder(s) with no call variable: "
                         + ", ".join("{" + n + "}" for n in names))


def check_variables(raw: Any) -> dict[str, str]:
    """The call variables as {name: text}: an object of at most MAX_VARIABLES identifiers,
    each value a string, number or boolean (kept as text) of at most MAX_VALUE_CHARS.
    ValueError naming the bad entry otherwise. None is no variables."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError("variables must be an object of name: value")
    if len(raw) > MAX_VARIABLES:
        raise ValueError(f"at most {MAX_VARIABLES} variables, got {len(raw)}")
    checked: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"variable name {name!r} must be an identifier (letters, digits, "
                             "'_', not starting with a digit, at most 64 characters)")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            raise ValueError(f"variable {name!r} must be a string, number or boolean")
        if len(text) > MAX_VALUE_CHARS:
            raise ValueError(f"variable {name!r} is longer than {MAX_VALUE_CHARS} characters")
        checked[name] = text
    return checked


def placeholders(text: str) -> set[str]:
    """The placeholder names used in text."""
    return {m.group(1) for m in TOKEN.finditer(text) if m.group(1)}


def fill(text: str, variables: Mapping[str, str], where: str = "the text") -> str:
    """text with each `{name}` replaced by its variable and `{{`/`}}` by a brace;
    MissingVariables when a placeholder has no variable."""
    missing = sorted(placeholders(text) - set(variables))
    if missing:
        raise MissingVariables(missing, where)

    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return variables[match.group(1)]

    return TOKEN.sub(replace, text)


def agent_with_variables(agent: Any, variables: Mapping[str, str]) -> Any:
    """A copy of an AgentConfig whose instructions and greeting instructions are filled with
    the variables (MissingVariables names the agent and the missing placeholders)."""
    return dataclasses.replace(
        agent,
        instructions=fill(agent.instructions, variables, f"agent {agent.key!r} instructions"),
        greeting_instructions=fill(agent.greeting_instructions, variables,
                                   f"agent {agent.key!r} greeting"))
