"""Call variables and `{name}` placeholders (relay/variables.py)."""

from __future__ import annotations

import pytest

from relay.config import AgentConfig
from relay.variables import (
    MissingVariables,
    agent_with_variables,
    check_variables,
    fill,
    placeholders,
)


def test_fill_replaces_placeholders_and_keeps_other_braces():
    text = 'Hi {name}, order {order_number}. {{name}} stays; JSON {"a": 1} and { x } too.'
    assert fill(text, {"name": "Al", "order_number": "7"}) == \
        'Hi Al, order 7. {name} stays; JSON {"a": 1} and { x } too.'
    assert placeholders(text) == {"name", "order_number"}


def test_a_value_is_never_read_as_a_placeholder():
    assert fill("{a} {b}", {"a": "{b}", "b": "x"}) == "{b} x"


def test_missing_placeholders_are_named_all_at_once():
    with pytest.raises(MissingVariables) as err:
        fill("{b} {a} {c}", {"c": "1"}, "the greeting")
    assert err.value.names == ["a", "b"]
    assert str(err.value) == "the greeting use(s) placeholder(s) with no call variable: {a}, {b}"


@pytest.mark.parametrize("raw, message", [
    ([1], "an object"), ({"1x": "a"}, "identifier"), ({"a b": "a"}, "identifier"),
    ({"a": [1]}, "string, number or boolean"), ({"a": "x" * 2001}, "longer than"),
    ({f"v{i}": "" for i in range(51)}, "at most 50"),
])
def test_bad_variables_are_refused_with_the_reason(raw, message):
    with pytest.raises(ValueError, match=message):
        check_variables(raw)


def test_values_are_kept_as_text():
    assert check_variables({"n": 3, "ok": True, "f": 1.5, "s": "x"}) == \
        {"n": "3", "ok": "true", "f": "1.5", "s": "x"}
    assert check_variables(None) == {}


def test_the_agent_copy_has_its_texts_filled_and_the_original_is_untouched():
    agent = AgentConfig(key="a", name="A", instructions="Call {who}.",
                        greeting_instructions="Hello {who}!")
    filled = agent_with_variables(agent, {"who": "Bo"})
    assert (filled.instructions, filled.greeting_instructions) == ("Call Bo.", "Hello Bo!")
    assert agent.instructions == "Call {who}."
    with pytest.raises(MissingVariables, match="agent 'a' instructions"):
        agent_with_variables(agent, {})
