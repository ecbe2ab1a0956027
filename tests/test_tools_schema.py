"""Tool parameter schemas (JSON Schema 2020-12 through jsonschema) and the model's arguments."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.tools.schema import SchemaError, compile_schema


def validate(value, schema):
    return compile_schema(schema).errors(value)

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
    compile_schema(ORDER)
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
    assert validate({"n": True}, schema)[0] == "arguments.n: expected integer, got boolean"
    assert validate({"n": 1.0}, schema) == []
    schema = {"type": "object", "properties": {"n": {"const": [{"a": 1}]}, "b": {"enum": [1]}}}
    assert validate({"n": [{"a": 1.0}]}, schema) == []
    assert validate({"b": True}, schema) == ["arguments.b: must be one of 1; got true"]


def test_several_errors_are_all_reported_up_to_a_limit():
    errors = validate({"order_number": 1, "items": 2, "gift": 3}, ORDER)
    assert len(errors) == 3
    many = {"type": "object", "additionalProperties": False, "properties": {}}
    assert len(validate({f"k{i}": i for i in range(50)}, many)) == 10


def test_a_non_object_is_refused_at_the_top():
    assert validate([1, 2], ORDER) == ["arguments: expected object, got array"]


@pytest.mark.parametrize("schema, message", [
    ([], "parameters must be a JSON Schema object"),
    (True, "parameters must be a JSON Schema object"),
    ({"type": "string"}, "must have \"type\": \"object\""),
    ({"properties": {}}, "must have \"type\": \"object\""),
    ({"type": "object", "properties": {"a": {"type": "str"}}},
     "parameters.properties.a.type must be one of array, boolean, integer"),
    ({"type": "object", "properties": {"type": 5}},
     "parameters.properties.type: 5 is not of type 'object', 'boolean'"),
    ({"type": "object", "required": "a", "properties": {"a": {}}},
     "parameters.required: 'a' is not of type 'array'"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "x"}}}},
     "parameters.properties.a.items.type must be one of"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": [{"type": "string"}]}}},
     "parameters.properties.a.items: "),
    ({"type": "object", "properties": {"a": {"minimum": "1"}}},
     "parameters.properties.a.minimum: '1' is not of type 'number'"),
    ({"type": "object", "properties": {"a": {"maxLength": -1}}},
     "parameters.properties.a.maxLength: -1 is less than the minimum of 0"),
    ({"type": "object", "properties": {"a": {"type": "array", "minItems": 1.5}}},
     "parameters.properties.a.minItems: "),
    ({"type": "object", "properties": {"a": {"pattern": "("}}},
     "parameters.properties.a.pattern is not a valid regular expression: '('"),
    ({"type": "object", "properties": []}, "parameters.properties: [] is not of type 'object'"),
    ({"type": "object", "anyOf": []}, "parameters.anyOf: [] should be non-empty"),
    ({"type": "object", "$defs": {"p": 5}}, "parameters.$defs.p: 5 is not of type"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/phone"}}},
     "parameters.properties.a.$ref: '#/$defs/phone' does not point to a part of this schema"),
    ({"type": "object", "properties": {"a": {"$ref": "https://schemas.example/phone.json"}}},
     "parameters.properties.a.$ref: 'https://schemas.example/phone.json' does not point"),
    ({"type": "object", "properties": {"a": {"$dynamicRef": "#node"}}},
     "parameters.properties.a.$dynamicRef: '#node' does not point"),
])
def test_invalid_schemas_are_refused_with_their_path(schema, message):
    with pytest.raises(SchemaError) as error:
        compile_schema(schema)
    assert message in str(error.value)


# What OpenAI accepts in a function's parameters, relay accepts and enforces ----------------------

BOOKING = {
    "type": "object", "additionalProperties": False,
    "required": ["kind", "date", "guests", "contact"],
    "properties": {
        "kind": {"const": "table"},
        "date": {"type": "string", "format": "date", "description": "YYYY-MM-DD"},
        "email": {"type": "string", "format": "email"},
        "guests": {"type": "array", "minItems": 1, "maxItems": 8,
                   "items": {"$ref": "#/$defs/guest"}},
        "contact": {"anyOf": [{"type": "string", "format": "email"},
                              {"$ref": "#/$defs/phone"}]},
        "seating": {"oneOf": [{"enum": ["inside", "terrace"]}, {"type": "null"}]},
        "courses": {"type": "array", "items": {
            "type": "array", "items": {"type": "object", "required": ["dish"],
                                       "properties": {"dish": {"type": "string"},
                                                      "count": {"type": "integer",
                                                                "exclusiveMinimum": 0}}}}},
    },
    "$defs": {
        "guest": {"type": "object", "required": ["name"], "additionalProperties": False,
                  "properties": {"name": {"type": "string", "minLength": 1},
                                 "diet": {"type": "array", "uniqueItems": True,
                                          "items": {"enum": ["vegan", "gluten-free"]}}}},
        "phone": {"type": "object", "required": ["number"],
                  "properties": {"number": {"type": "string", "pattern": "^\\+?[0-9 ]{6,}$"}}},
    },
}
GOOD = {"kind": "table", "date": "2025-06-30", "email": "ann@example.com",
        "guests": [{"name": "Ann", "diet": ["vegan"]}, {"name": "Bob"}],
        "contact": {"number": "+44 20 7946 0000"}, "seating": None,
        "courses": [[{"dish": "soup", "count": 2}], []]}


def test_a_schema_with_anyof_defs_ref_const_format_and_nested_arrays_is_accepted():
    validator = compile_schema(BOOKING)
    assert validator.errors(GOOD) == []
    assert validator.errors(dict(GOOD, contact="ann@example.com", seating="terrace")) == []


def test_a_recursive_schema_is_accepted():
    tree = {"type": "object", "$defs": {"node": {"type": "object", "properties": {
        "label": {"type": "string"}, "children": {"type": "array",
                                                  "items": {"$ref": "#/$defs/node"}}}}},
        "properties": {"root": {"$ref": "#/$defs/node"}}}
    validator = compile_schema(tree)
    assert validator.errors({"root": {"children": [{"children": [{"label": "x"}]}]}}) == []
    assert validator.errors({"root": {"children": [{"children": [{"label": 1}]}]}}) == [
        "arguments.root.children[0].children[0].label: expected string, got integer"]


@pytest.mark.parametrize("change, message", [
    ({"kind": "chair"}, "arguments.kind: must be 'table'; got 'chair'"),
    ({"date": "2025-02-30"}, "arguments.date: not a valid date: '2025-02-30'"),
    ({"date": "next friday"}, "arguments.date: not a valid date: 'next friday'"),
    ({"email": "ann.example.com"}, "arguments.email: not a valid email: 'ann.example.com'"),
    ({"guests": []}, "arguments.guests: fewer than the minimum 1 item(s)"),
    ({"guests": [{"name": "A"}] * 9}, "arguments.guests: more than the maximum 8 item(s)"),
    ({"guests": [{"name": "Ann"}, {}]}, "arguments.guests[1]: missing required property 'name'"),
    ({"guests": [{"name": "Ann", "age": 3}]},
     "arguments.guests[0]: unexpected property 'age' (allowed: 'name', 'diet')"),
    ({"guests": [{"name": "Ann", "diet": ["vegan", "vegan"]}]},
     "arguments.guests[0].diet: the items must be unique"),
    ({"guests": [{"name": "Ann", "diet": ["keto"]}]},
     "arguments.guests[0].diet[0]: must be one of 'vegan', 'gluten-free'; got 'keto'"),
    ({"contact": {"number": "call me"}},
     "arguments.contact: matches none of the allowed forms (anyOf): form 0: arguments.contact: "
     "expected string, got object; form 1: arguments.contact.number: does not match the pattern"),
    ({"contact": "ann"}, "form 0: arguments.contact: not a valid email: 'ann'"),
    ({"seating": "roof"}, "arguments.seating: matches none of the allowed forms (oneOf)"),
    ({"courses": [[{"dish": "soup"}], [{"count": 1}]]},
     "arguments.courses[1][0]: missing required property 'dish'"),
    ({"courses": [[{"dish": "soup", "count": 0}]]},
     "arguments.courses[0][0].count: must be more than 0"),
    ({"courses": [{"dish": "soup"}]}, "arguments.courses[0]: expected array, got object"),
])
def test_arguments_breaking_each_keyword_name_the_path(change, message):
    errors = compile_schema(BOOKING).errors(dict(GOOD, **change))
    assert any(message in e for e in errors), errors


def test_a_form_matched_twice_by_oneof_is_refused():
    schema = {"type": "object", "properties": {"n": {"oneOf": [{"type": "integer"},
                                                               {"type": "number"}]}}}
    assert compile_schema(schema).errors({"n": 1}) == [
        "arguments.n: matches more than one of the allowed forms (oneOf needs exactly one)"]
    assert compile_schema(schema).errors({"n": 1.5}) == []


@pytest.mark.parametrize("fmt, good, bad", [
    ("date-time", "2025-06-30T19:30:00+01:00", "2025-06-30 evening"),
    ("time", "19:30:00Z", "half past seven"),
    ("hostname", "erp.example.com", "not a host!"),
    ("ipv4", "192.0.2.1", "192.0.2.300"),
    ("uuid", "0b4e7a8e-4d3c-4b8a-9d6e-2f1c3a5b7d9e", "0b4e7a8e"),
])
def test_the_formats_openai_names_are_checked(fmt, good, bad):
    validator = compile_schema({"type": "object", "properties": {"v": {"format": fmt}}})
    assert validator.errors({"v": good}) == []
    assert validator.errors({"v": bad}) == [f"arguments.v: not a valid {fmt}: {bad!r}"]


def test_formats_without_a_checker_here_and_unknown_formats_are_annotations():
    schema = {"type": "object", "properties": {"d": {"type": "string", "format": "duration"},
                                               "p": {"type": "string", "format": "phone"}}}
    assert compile_schema(schema).errors({"d": "soon", "p": "x"}) == []


def test_anchors_dynamic_refs_and_a_declared_older_dialect_resolve():
    anchored = {"type": "object", "$defs": {"a": {"$anchor": "sku", "type": "string"}},
                "properties": {"x": {"$ref": "#sku"}}}
    assert compile_schema(anchored).errors({"x": 1}) == [
        "arguments.x: expected string, got integer"]
    dynamic = {"type": "object", "$dynamicAnchor": "node", "properties": {
        "n": {"type": "integer"}, "kids": {"type": "array", "items": {"$dynamicRef": "#node"}}}}
    assert compile_schema(dynamic).errors({"kids": [{"n": "x"}]}) == [
        "arguments.kids[0].n: expected integer, got string"]
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "definitions": {"a": {"type": "string"}},
              "properties": {"x": {"$ref": "#/definitions/a"}}}
    assert compile_schema(draft7).errors({"x": "ok"}) == []


def test_a_ref_inside_const_or_enum_data_is_not_a_reference():
    schema = {"type": "object", "properties": {"a": {"const": {"$ref": "#/nowhere"}}}}
    assert compile_schema(schema).errors({"a": {"$ref": "#/nowhere"}}) == []


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
