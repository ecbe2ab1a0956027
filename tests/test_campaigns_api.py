"""The campaign routes (relay.web.campaigns_api) on a worker's dashboard server and on the
fleet master's: create (JSON or a CSV body), list, one campaign, start/pause/resume/stop, the
do-not-call list, every refusal with its status and reason, 503 without a store.

The campaigns are stored in the worker's real SQLite database; the ones started here have
calling hours that are closed now, so the worker's engine dials nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stack import Stack
from web_client import RecordingClient

from relay.campaigns.service import SharedCampaigns
from relay.config import load_settings
from relay.web import WebServer
from relay.web.fleet import FleetWebServer

TOKEN = "campaign-api-token-51c7"
CSV = "endpoint,timezone,name\nPJSIP/+15550101@trunk,Europe/Paris,Ann\nPJSIP/bob,,Bob\n"


def closed_hours() -> dict:
    """Calling hours that open in two hours (UTC): nothing is dialled during the test."""
    hour = (time.gmtime().tm_hour + 2) % 24
    return {"start": f"{hour:02d}:00", "end": f"{(hour + 1) % 24:02d}:00"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("campaigns-api"),
              settings={"web.port": 0, "web.token": TOKEN})
    yield s
    s.stop()


@pytest.fixture
def web(stack):
    server = WebServer(stack.worker).start()
    yield server
    server.stop()


@pytest.fixture
def client(web) -> RecordingClient:
    return RecordingClient(web.url, TOKEN)


def campaign(**fields) -> dict:
    data = {"agent": "default", "max_concurrent": 4, "calls_per_s": 2,
            "hours": closed_hours(), "timezone": "UTC", "retry": {"busy": {"after_s": 60,
                                                                           "max": 1}},
            "contacts": [{"endpoint": "PJSIP/+15550101@trunk", "variables": {"x": "1"}},
                         {"endpoint": "PJSIP/carol", "timezone": "Asia/Tokyo"}]}
    data.update(fields)
    return data


def test_create_list_get_and_control_a_campaign(client):
    created = client.post_json("/api/campaigns", campaign(id="api-one", name="Spring"))
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["id"] == "api-one" and view["state"] == "draft" and view["name"] == "Spring"
    assert view["progress"]["contacts"] == 2 and view["progress"]["waiting"] == 2
    assert view["max_concurrent"] == 4 and view["calls_per_s"] == 2
    assert view["retry"] == {"busy": {"after_s": 60.0, "max": 1}}
    listed = client.get("/api/campaigns").json()["campaigns"]
    assert "api-one" in [c["id"] for c in listed]
    for action, state in (("start", "running"), ("pause", "paused"), ("resume", "running"),
                          ("stop", "stopped")):
        answer = client("POST", f"/api/campaigns/api-one/{action}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == state
    stopped = client.get("/api/campaigns/api-one").json()
    assert stopped["progress"]["not_dialled"] == 2 and stopped["recent_attempts"] == []
    conflict = client("POST", "/api/campaigns/api-one/start")
    assert conflict.status_code == 409 and "stopped: cannot start" in conflict.json()["error"]
    again = client.post_json("/api/campaigns", campaign(id="api-one"))
    assert again.status_code == 400 and "exists already" in again.json()["error"]


def test_a_csv_body_with_its_settings_in_the_query(client):
    answer = client("POST", "/api/campaigns", data=CSV.encode(), params={
        "id": "csv-one", "agent": "default", "max_concurrent": "3", "calls_per_s": "0.5",
        "hours": "{start}-{end}".format(**closed_hours()), "retry": '{"busy": {"after_s": 5,'
        ' "max": 2}}', "start": "true", "amd": "false", "ring_timeout_s": "20"},
        headers={"Content-Type": "text/csv"})
    assert answer.status_code == 201, answer.text
    view = answer.json()
    assert view["state"] == "running" and view["progress"]["contacts"] == 2
    assert view["rate"] == {"count": 1, "window_s": 2.0} and view["amd"] is False
    assert view["ring_timeout_s"] == 20
    client("POST", "/api/campaigns/csv-one/stop")


@pytest.mark.parametrize("body, error", [
    (campaign(agent="nobody"), "unknown agent 'nobody'"),
    (campaign(timezone="Mars/Base"), "not a known time zone"),
    (campaign(hours={"start": "25:00", "end": "10:00"}), "hours.start must be a time"),
    (campaign(calls_per_s=-1), "calls_per_s must be"),
    (campaign(contacts=[{"endpoint": "nothing"}]), "endpoint must be TECH/RESOURCE"),
    (dict(campaign(), contacts=None, csv="name\nAnn\n"), "either"),
    ({k: v for k, v in campaign(csv="name\nAnn\n").items() if k != "contacts"},
     "'endpoint' column"),
    (campaign(start="yes"), "start must be true or false"),
    (campaign(surprise=1), "unknown field"),
])
def test_bad_campaigns_are_400_with_the_reason(client, body, error):
    answer = client.post_json("/api/campaigns", body)
    assert answer.status_code == 400, answer.text
    assert error in answer.json()["error"]


@pytest.mark.parametrize("params, body, error", [
    ({"agent": "default", "max_concurrent": "x"}, CSV, "max_concurrent must be a whole"),
    ({"agent": "default", "hours": "09:00"}, CSV, "hours must be HH:MM-HH:MM"),
    ({"agent": "default", "retry": "{oops"}, CSV, "retry must be JSON"),
    ({"agent": "default", "colour": "red"}, CSV, "unknown parameter"),
    ({"agent": "default", "max_concurrent": "2", "calls_per_s": "1"},
     "endpoint,name\nPJSIP/a,Ann,extra\n", "CSV line 2 has 3 cells"),
    ({"agent": "default", "max_concurrent": "2", "calls_per_s": "1"}, "", "the CSV is empty"),
])
def test_bad_csv_uploads_are_400_with_the_reason(client, params, body, error):
    answer = client("POST", "/api/campaigns", data=body.encode(), params=params,
                    headers={"Content-Type": "text/csv"})
    assert answer.status_code == 400, answer.text
    assert error in answer.json()["error"]


def test_methods_unknown_campaigns_and_bodies(client):
    assert client.get("/api/campaigns/nope").status_code == 404
    assert client("POST", "/api/campaigns/nope/start").status_code == 404
    assert client("POST", "/api/campaigns/nope/explode").status_code == 404
    assert client("DELETE", "/api/campaigns").status_code == 405
    assert client.get("/api/campaigns/nope/start").status_code == 405
    assert client("POST", "/api/campaigns", data=b"{}", headers={
        "Content-Type": "text/plain"}).status_code == 415
    assert client("POST", "/api/campaigns", data=b"[1", headers={
        "Content-Type": "application/json"}).status_code == 400
    assert RecordingClient(client.base).get("/api/campaigns").status_code == 401


def test_the_do_not_call_list(client):
    added = client.post_json("/api/dnc", {"numbers": ["+1 555 0199", "PJSIP/dave@x"],
                                          "note": "complaint"})
    assert added.status_code == 201 and added.json() == {"added": 2}
    assert client.post_json("/api/dnc", {"numbers": ["15550199"]}).json() == {"added": 0}
    listed = client.get("/api/dnc").json()["numbers"]
    assert {n["key"] for n in listed} >= {"15550199", "dave"}
    assert client("DELETE", "/api/dnc/%2B15550199").json()["removed"] is True
    assert client("DELETE", "/api/dnc/%2B15550199").status_code == 404
    for body, error in (({"numbers": []}, "numbers must be"), ({"numbers": [3]}, "numbers"),
                        ({"numbers": ["1"], "note": 5}, "note must be"),
                        ({"numbers": ["1"], "x": 1}, "unknown field")):
        answer = client.post_json("/api/dnc", body)
        assert answer.status_code == 400 and error in answer.json()["error"]
    assert client("PUT", "/api/dnc").status_code == 405


def test_without_a_store_every_route_is_503(client, stack):
    store, stack.worker.campaign_store = stack.worker.campaign_store, None
    try:
        for method, path in (("GET", "/api/campaigns"), ("GET", "/api/campaigns/x"),
                             ("POST", "/api/campaigns/x/start"), ("GET", "/api/dnc")):
            answer = client(method, path)
            assert answer.status_code == 503 and "history" in answer.json()["error"]
    finally:
        stack.worker.campaign_store = store


def test_a_database_that_fails_is_503_and_the_server_goes_on(client, stack, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    store, stack.worker.campaign_store = stack.worker.campaign_store, SharedCampaigns(
        str(folder))      # a folder is not a database
    try:
        answer = client.get("/api/campaigns")
        assert answer.status_code == 503 and "StoreError" in answer.json()["error"]
    finally:
        stack.worker.campaign_store = store
    assert client.get("/api/campaigns").status_code == 200


def test_the_fleet_master_controls_the_same_campaigns(stack, tmp_path):
    settings = load_settings(env={}, overrides={"web.port": 0, "web.token": TOKEN})
    shared = SharedCampaigns(str(Path(stack.settings.tree["history"]["sqlite_path"])))
    server = FleetWebServer(settings, lambda: [], "internal-token-for-tests",
                            campaign_store=lambda: shared).start()
    try:
        api = RecordingClient(server.url, TOKEN)
        made = api.post_json("/api/campaigns", campaign(id="from-master"))
        assert made.status_code == 201, made.text
        assert api("POST", "/api/campaigns/from-master/start").json()["state"] == "running"
        # the worker reads the same database
        assert blocking_get(stack, "from-master")["state"] == "running"
        assert api("POST", "/api/campaigns/from-master/stop").status_code == 200
    finally:
        server.stop()
        shared.close()
    bare = FleetWebServer(settings, lambda: [], "internal-token-for-tests").start()
    try:
        assert RecordingClient(bare.url, TOKEN).get("/api/campaigns").status_code == 503
    finally:
        bare.stop()


def blocking_get(stack: Stack, campaign_id: str) -> dict:
    import gevent
    return gevent.get_hub().threadpool.apply(stack.worker.campaign_store.get, (campaign_id,))


def test_a_worker_with_campaigns_switched_off_has_no_engine_and_answers_503(tmp_path):
    s = Stack(tmp_path, settings={"web.port": 0, "web.token": TOKEN,
                                  "campaigns.enabled": False})
    server = WebServer(s.worker).start()
    try:
        assert s.worker.campaigns is None and s.worker.campaign_store is None
        answer = RecordingClient(server.url, TOKEN).get("/api/campaigns")
        assert answer.status_code == 503 and "campaigns.enabled" in answer.json()["error"]
    finally:
        server.stop()
        s.stop()
