"""Tool declarations in agent configs: the registry of built-ins and the checks at start."""

import json
from pathlib import Path

import pytest

from relay import realtime_events as ev
from relay.config import PACKAGE_ROOT, ConfigError, load_agent, load_settings
from relay.tools.registry import BUILTINS, EMPTY_PARAMETERS, Builtin, Registry
from relay.tools.spec import ToolConfigError, parse_tools

ENV = {"SHOP_KEY": "s3cret-value", "SHOP_TOKEN": "tok"}


def write_agent(tmp_path: Path, tools, **extra) -> Path:
    path = tmp_path / "shop.json"
    path.write_text(json.dumps({"instructions": "x", "tools": tools, **extra}))
    return path


# the registry ----------------------------------------------------------------------------------

def test_a_builtin_is_a_decorated_function():
    registry = Registry()

    @registry.builtin("greet", description="Say hello.",
                      parameters={"type": "object", "properties": {"who": {"type": "string"}}})
    def greet(ctx, args):
        return f"hello {args['who']}"

    found = registry.get("greet")
    assert found is not None and found.run is greet and registry.names() == ["greet"]
    assert found.default_parameters({})["properties"] == {"who": {"type": "string"}}
    assert found.prepared({}, Path(".")) == {}
    with pytest.raises(ValueError, match="takes no 'config'"):
        found.prepared({"x": 1}, Path("."))


def test_the_registry_refuses_duplicates_and_undescribed_tools():
    registry = Registry()
    registry.builtin("a", description="A.")(lambda ctx, args: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.builtin("a", description="Again.")(lambda ctx, args: None)
    with pytest.raises(ValueError, match="needs a description"):
        registry.add(Builtin("b", lambda ctx, args: None, ""))
    registry.remove("a")
    assert registry.get("a") is None


def test_the_shipped_builtins_are_registered_on_first_use():
    assert {"end_call", "transfer_call", "get_current_time", "send_dtmf", "lookup_order",
            "list_caller_orders"} <= set(BUILTINS.names())
    assert BUILTINS.get("get_current_time").parameters == EMPTY_PARAMETERS


def test_a_builtin_registered_by_name_is_usable_from_an_agent_file(tmp_path):
    BUILTINS.add(Builtin("test_weather", lambda ctx, args: {"sky": "clear"}, "The weather.",
                         {"type": "object", "properties": {"city": {"type": "string"}}}))
    try:
        agent = load_agent(write_agent(tmp_path, [{"name": "weather", "builtin": "test_weather"}]))
    finally:
        BUILTINS.remove("test_weather")
    [tool] = agent.tools
    assert tool == {"name": "weather", "description": "The weather.", "builtin": "test_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    assert agent.tool_specs[0].builtin.name == "test_weather"


# what the model sees ---------------------------------------------------------------------------

RICH_PARAMETERS = {
    "type": "object", "required": ["when", "contact"],
    "properties": {
        "kind": {"const": "table"},
        "when": {"type": "string", "format": "date"},
        "contact": {"anyOf": [{"type": "string", "format": "email"}, {"$ref": "#/$defs/phone"}]},
        "guests": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
    },
    "$defs": {"phone": {"type": "object", "properties": {"number": {"type": "string"}}}},
}


def test_a_tool_schema_openai_accepts_loads_and_is_compiled_once(tmp_path):
    agent = load_agent(write_agent(tmp_path, [{
        "name": "book", "description": "Book a table.", "parameters": RICH_PARAMETERS,
        "webhook": {"url": "https://bookings.example/book"}}]))
    [spec] = agent.tool_specs
    assert agent.tools[0]["parameters"] == RICH_PARAMETERS      # the model sees it as written
    assert spec.validator is not None and spec.validator.schema is spec.parameters
    assert spec.validator.errors({"when": "2025-01-31", "contact": "a@example.com"}) == []
    assert spec.validator.errors({"when": "31/01/2025", "contact": {"number": "1"},
                                  "guests": []}) == [
        "arguments.when: not a valid date: '31/01/2025'",
        "arguments.guests: fewer than the minimum 1 item(s)"]


def test_builtin_defaults_and_overrides(tmp_path):
    agent = load_agent(write_agent(tmp_path, [
        {"name": "end_call"},
        {"name": "bye", "builtin": "end_call", "description": "Hang up politely.",
         "parameters": {"type": "object", "properties": {}}},
        {"name": "transfer_call", "config": {"targets": {
            "sales": {"context": "dept", "extension": "200", "description": "buying"},
            "billing": {"endpoint": "PJSIP/billing"}}}},
    ]))
    end, bye, transfer = ev.function_tools(agent)
    assert end["name"] == "end_call" and "goodbye" in end["description"]
    assert bye["description"] == "Hang up politely."
    department = transfer["parameters"]["properties"]["department"]
    assert department["enum"] == ["sales", "billing"]
    assert "sales: buying" in department["description"]
    assert transfer["parameters"]["required"] == ["department"]
    spec = agent.tool_specs[2]
    assert spec.config["targets"]["sales"] == {"context": "dept", "extension": "200",
                                               "priority": 1, "description": "buying"}


def test_webhook_header_values_come_from_the_environment_and_stay_out_of_views(tmp_path):
    path = write_agent(tmp_path, [{
        "name": "stock", "description": "Stock level.",
        "webhook": {"url": "https://erp.example/stock", "method": "put", "timeout_s": 3,
                    "headers": {"X-Key": "${SHOP_KEY}", "Authorization": "Bearer ${SHOP_TOKEN}"}}}])
    agent = load_agent(path, ENV)
    [spec] = agent.tool_specs
    assert spec.webhook.headers == {"X-Key": "s3cret-value", "Authorization": "Bearer tok"}
    assert spec.webhook.method == "PUT" and spec.timeout_s == 3.0
    assert agent.tools[0]["webhook"] == {"url": "https://erp.example/stock", "method": "PUT",
                                         "headers": {"X-Key": "${SHOP_KEY}",
                                                     "Authorization": "Bearer ${SHOP_TOKEN}"}}
    assert "s3cret" not in repr(agent) and "s3cret" not in json.dumps(agent.tools)
    assert "s3cret" not in repr(spec)


def test_the_bundled_sample_agents_load_with_their_tools():
    settings = load_settings(env={})
    reception, retail = settings.agent("reception"), settings.agent("retail")
    assert reception.timezone == "Europe/London"
    assert [t["name"] for t in reception.tools] == ["transfer_call", "get_current_time",
                                                    "send_dtmf", "end_call"]
    assert {"lookup_order", "list_caller_orders", "end_call"} <= {t["name"] for t in retail.tools}
    data = Path(retail.tool_specs[0].config["data_file"])
    assert data == PACKAGE_ROOT / "config" / "sample_data" / "orders.json"
    assert "SAMPLE DATA" in json.loads(data.read_text())["_sample_data"]
    assert settings.agent("default").tools == ()


# errors that name the file, the tool and what --------------------------------------------------

@pytest.mark.parametrize("tools, message", [
    ("lookup", r"'tools' must be a list"),
    ([{"description": "no name"}], r"tools\[0\] must be an object with a 'name'"),
    ([{"name": "bad name!", "builtin": "end_call"}], r"tools\[0\] \('bad name!'\): 'name' may"),
    ([{"name": "end_call"}, {"name": "end_call"}], r"tools\[1\] \('end_call'\): another tool"),
    ([{"name": "x", "builtin": "teleport"}], r"tools\[0\] \('x'\): unknown built-in 'teleport' "
                                             r"\(known: .*end_call"),
    ([{"name": "lookup"}], r"needs 'builtin' \(one of .*\) or 'webhook'"),
    ([{"name": "x", "builtin": "end_call", "webhook": {"url": "http://a"}}], "not both"),
    ([{"name": "x", "builtin": "end_call", "colour": "red"}], r"unknown key\(s\) colour"),
    ([{"name": "x", "builtin": "end_call", "timeout_s": 0}], "'timeout_s' must be a number"),
    ([{"name": "x", "builtin": "end_call", "timeout_s": "5"}], "'timeout_s' must be a number"),
    ([{"name": "x", "builtin": "end_call", "description": 5}], "'description' must be a string"),
    ([{"name": "x", "builtin": "end_call", "parameters": {"type": "object", "anyOf": []}}],
     r"tools\[0\] \('x'\): parameters.anyOf: \[\] should be non-empty"),
    ([{"name": "x", "description": "d", "webhook": {"url": "http://a"}, "parameters": {
        "type": "object", "properties": {"when": {"type": "date"}}}}],
     r"tools\[0\] \('x'\): parameters.properties.when.type must be one of"),
    ([{"name": "x", "description": "d", "webhook": {"url": "http://a"}, "parameters": {
        "type": "object", "properties": {"who": {"$ref": "#/$defs/person"}}}}],
     r"parameters.properties.who.\$ref: '#/\$defs/person' does not point to a part"),
    ([{"name": "x", "builtin": "end_call", "config": {"continue_in_dialplan": "yes"}}],
     "continue_in_dialplan' must be true or false"),
    ([{"name": "x", "builtin": "get_current_time", "config": {"zone": "x"}}], "takes no 'config'"),
    ([{"name": "x", "builtin": "transfer_call"}], r"'config.targets' must be a non-empty object"),
    ([{"name": "x", "builtin": "transfer_call", "config": {"targets": {"s": {"context": "c"}}}}],
     r"'config.targets.s' needs 'extension'"),
    ([{"name": "x", "builtin": "transfer_call",
       "config": {"targets": {"s": {"endpoint": "sales"}}}}], "must be TECH/RESOURCE"),
    ([{"name": "x", "builtin": "transfer_call", "config": {"targets": {
        "s": {"endpoint": "PJSIP/s", "context": "c"}}}}], "either an endpoint or a dialplan"),
    ([{"name": "x", "builtin": "transfer_call", "config": {"targets": {
        "s": {"context": "c", "extension": "1", "priority": 0}}}}], "priority must be a positive"),
    ([{"name": "x", "builtin": "lookup_order", "config": {"data_file": "nowhere.json"}}],
     "cannot read the order data"),
    ([{"name": "x", "webhook": {"url": "http://a/b"}}], "a webhook tool needs a 'description'"),
    ([{"name": "x", "description": "d", "webhook": "http://a"}], "'webhook' must be an object"),
    ([{"name": "x", "description": "d", "webhook": {"url": "ftp://a/b"}}],
     "'webhook.url' must be an http"),
    ([{"name": "x", "description": "d", "webhook": {"url": "http://a", "method": "GET"}}],
     "'webhook.method' must be one of POST, PUT, PATCH"),
    ([{"name": "x", "description": "d", "webhook": {"url": "http://a", "retries": 3}}],
     r"unknown key\(s\) retries in 'webhook'"),
    ([{"name": "x", "description": "d", "webhook": {"url": "http://a",
                                                    "headers": {"X-Key": "hard-coded"}}}],
     r"'webhook.headers.X-Key': the value must come from the environment"),
    ([{"name": "x", "description": "d", "webhook": {"url": "http://a",
                                                    "headers": {"X-Key": "${NOT_SET_VAR}"}}}],
     "environment variable NOT_SET_VAR is not set"),
    ([{"name": "x", "description": "d", "webhook": {"url": "http://a",
                                                    "headers": {"Bad Name": "${SHOP_KEY}"}}}],
     "not a valid header name"),
    ([{"name": "x", "description": "d", "timeout_s": 2,
       "webhook": {"url": "http://a", "timeout_s": 3}}], "give 'timeout_s' once"),
    ([{"name": "x", "description": "d", "config": {}, "webhook": {"url": "http://a"}}],
     "'config' is for built-ins"),
])
def test_tool_errors_name_the_file_the_tool_and_what(tmp_path, tools, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_agent(write_agent(tmp_path, tools), ENV)
    assert str(error.value).startswith(str(tmp_path / "shop.json") + ": ")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", 5, "../etc/passwd", "europe/paris"])
def test_an_unknown_time_zone_is_refused(tmp_path, zone):
    with pytest.raises(ConfigError, match="'timezone' must be an IANA time zone name"):
        load_agent(write_agent(tmp_path, [], timezone=zone))


def test_a_known_time_zone_is_kept(tmp_path):
    assert load_agent(write_agent(tmp_path, [], timezone="Asia/Tokyo")).timezone == "Asia/Tokyo"
    assert load_agent(write_agent(tmp_path, [])).timezone == "UTC"


def test_an_agent_with_a_broken_tool_stops_the_start(tmp_path):
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "default.json").write_text(json.dumps({"instructions": "x"}))
    (agents / "bad.json").write_text(json.dumps({"instructions": "x", "tools": [
        {"name": "x", "builtin": "nope"}]}))
    with pytest.raises(ConfigError, match=r"bad.json: tools\[0\] \('x'\): unknown built-in"):
        load_settings(env={}, overrides={"agent.configs_dir": str(agents)})


@pytest.mark.parametrize("dotted, value, message", [
    ("tools.max_concurrent_per_call", 0, "tools.max_concurrent_per_call"),
    ("tools.default_timeout_s", 0.0, "tools.default_timeout_s"),
    ("tools.webhook_pool_size", 0, "tools.webhook_pool_size"),
])
def test_tool_settings_are_checked(dotted, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, overrides={dotted: value})


def test_parse_tools_can_use_its_own_registry(tmp_path):
    registry = Registry()
    registry.builtin("ping", description="Ping.")(lambda ctx, args: "pong")
    declarations, specs = parse_tools([{"name": "ping"}], tmp_path, {}, registry)
    assert declarations[0]["builtin"] == "ping" and specs[0].kind == "builtin"
    with pytest.raises(ToolConfigError, match="unknown built-in 'end_call'"):
        parse_tools([{"name": "x", "builtin": "end_call"}], tmp_path, {}, registry)
