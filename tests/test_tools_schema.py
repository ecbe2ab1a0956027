"""The JSON Schema subset validator of tool parameters and arguments."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.tools.schema import SchemaError, check_schema, json_equal, validate

ORDER = {
    "type": "object", "additionalProperties": False, "required": ["order_number", "items"],
    "properties": {
        "order_number": {"type": "string", "pattern": "^[0-9]+$", "minLength": 1,
                         "maxLength": 8},
        "priority": {"type": "string", "enum": ["low", "high"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
        "discount": {"type": "number", "minimum": 0, "maximum": 0.5},
        "gift": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "items": {"type": "array", "items": {
            "type": "object", "required": ["sku"],
            "properties": {"sku": {"type": "string"}, "count": {"type": "integer"}}}},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_valid_object_has_no_errors():
    check_schema(ORDER)
    assert validate({"order_number": "427", "items": [{"sku": "KB", "count": 2}],
                     "priority": "high", "quantity": 3, "discount": 0.25, "gift": False,
                     "note": None, "address": {"city": "Paris", "zip": "75001"}}, ORDER) == []


@pytest.mark.parametrize("arguments, message", [
    ({"items": []}, "arguments: missing required property 'order_number'"),
    ({"order_number": 427, "items": []}, "arguments.order_number: expected string, got integer"),
    ({"order_number": "42a", "items": []}, "does not match the pattern"),
    ({"order_number": "", "items": []}, "shorter than the minimum length 1"),
    ({"order_number": "123456789", "items": []}, "longer than the maximum length 8"),
    ({"order_number": "1", "items": [], "priority": "urgent"},
     "arguments.priority: must be one of 'low', 'high'; got 'urgent'"),
    ({"order_number": "1", "items": [], "quantity": 2.5}, "expected integer, got number"),
    ({"order_number": "1", "items": [], "quantity": True}, "expected integer, got boolean"),
    ({"order_number": "1", "items": [], "quantity": 0}, "less than the minimum 1"),
    ({"order_number": "1", "items": [], "quantity": 11}, "more than the maximum 10"),
    ({"order_number": "1", "items": [], "discount": "10%"}, "expected number, got string"),
    ({"order_number": "1", "items": [], "gift": "yes"}, "expected boolean, got string"),
    ({"order_number": "1", "items": [], "note": 5}, "expected string or null, got integer"),
    ({"order_number": "1", "items": {}}, "arguments.items: expected array, got object"),
    ({"order_number": "1", "items": [{"count": 1}]},
     "arguments.items[0]: missing required property 'sku'"),
    ({"order_number": "1", "items": [], "colour": "red"},
     "arguments: unexpected property 'colour' (allowed: 'order_number'"),
    ({"order_number": "1", "items": [], "address": "Paris"},
     "arguments.address: expected object, got string"),
])
def test_each_violation_names_the_path_and_what(arguments, message):
    errors = validate(arguments, ORDER)
    assert any(message in e for e in errors), errors
    assert len(errors) <= 2     # "" is both too short and not digits


def test_whole_numbers_written_as_floats_are_integers_and_true_is_not_one():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2]}}}
    assert validate({"n": 2.0}, schema) == []
    assert validate({"n": True}, schema) == ["arguments.n: expected integer, got boolean"]
    assert not json_equal(True, 1) and json_equal(1, 1.0) and json_equal([{"a": 1}], [{"a": 1.0}])


def test_several_errors_are_all_reported_up_to_a_limit():
    errors = validate({"order_number": 1, "items": 2, "gift": 3}, ORDER)
    assert len(errors) == 3
    many = {"type": "object", "additionalProperties": False, "properties": {}}
    assert len(validate({f"k{i}": i for i in range(50)}, many)) == 10


def test_a_non_object_is_refused_at_the_top():
    assert validate([1, 2], ORDER) == ["arguments: expected object, got array"]


@pytest.mark.parametrize("schema, message", [
    ([], "parameters must be a JSON Schema object"),
    ({"type": "string"}, "must have \"type\": \"object\""),
    ({"properties": {}}, "must have \"type\": \"object\""),
    ({"type": "object", "oneOf": []}, "unsupported keyword(s) oneOf"),
    ({"type": "object", "properties": {"a": {"type": "str"}}},
     "parameters.properties.a.type must be one of"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
     "parameters.properties.a: unsupported keyword(s) format"),
    ({"type": "object", "required": ["a"]}, "required names 'a', not in parameters.properties"),
    ({"type": "object", "required": "a", "properties": {"a": {}}}, "must be a list"),
    ({"type": "object", "additionalProperties": {"type": "string"}}, "must be true or false"),
    ({"type": "object", "properties": {"a": {"enum": []}}}, "enum must be a non-empty list"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "x"}}}},
     "parameters.properties.a.items.type"),
    ({"type": "object", "properties": {"a": {"minimum": "1"}}}, "minimum must be a number"),
    ({"type": "object", "properties": {"a": {"maxLength": -1}}}, "maxLength must be a non-neg"),
    ({"type": "object", "properties": {"a": {"pattern": "("}}}, "not a valid regular expression"),
    ({"type": "object", "properties": []}, "properties must be an object"),
])
def test_schemas_relay_cannot_enforce_are_refused(schema, message):
    with pytest.raises(SchemaError) as error:
        check_schema(schema)
    assert message in str(error.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4), max_leaves=20)


@given(JSON)
def test_any_decoded_json_gets_a_list_of_messages_never_an_exception(value):
    errors = validate(value, ORDER)
    assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)


@given(st.text(alphabet="0123456789", min_size=1, max_size=8),
       st.lists(st.text(max_size=4), max_size=3), st.integers(1, 10))
def test_generated_valid_arguments_pass(number, skus, quantity):
    arguments = {"order_number": number, "items": [{"sku": s} for s in skus],
                 "quantity": quantity}
    assert validate(arguments, ORDER) == []
