"""The cleanup after a dead worker (relay/fleet/cleanup.py) on the simulated PBX: its callers,
its externalMedia channel and its bridge go; a live worker whose app name starts the same way
keeps everything."""

from __future__ import annotations

from stack import wait_for

from relay.ari import AriClient, AriEvents
from relay.fleet.cleanup import clean_up_after
from relay.sim.pbx.server import SimPbx

WAIT = {"steps": [{"pause_ms": 30000}]}


def worker_with_a_call(pbx: SimPbx, app: str) -> tuple[AriEvents, AriClient, str]:
    """What a worker of app `app` has made for one call: the caller in its app, bridged with
    an externalMedia channel, ids prefixed by the app name."""
    events = AriEvents(pbx.events_url(app), on_event=lambda e: None, on_connected=lambda: None,
                       on_disconnected=lambda reason: None)
    events.start()
    wait_for(lambda: events.connected, 5, f"{app} to connect")
    ari = AriClient(f"http://127.0.0.1:{pbx.port}", pbx.user, pbx.password, app, timeout=5)
    call_id = pbx.start_call(WAIT, app=app)
    caller = wait_for(lambda: pbx.call(call_id)["channel_id"], 5, "the caller")
    wait_for(lambda: any(c["id"] == caller and c["stasis_app"] == app
                         for c in pbx.inspect()["channels"]), 5, "the caller in Stasis")
    ari.create_bridge(f"{app}-br-1")
    ari.external_media(f"{app}-em-1", "127.0.0.1:9", data="relay-media")
    # Asterisk answers externalMedia before the channel enters the app (FACTS.md)
    wait_for(lambda: any(c["id"] == f"{app}-em-1" and c["stasis_app"] == app
                         for c in pbx.inspect()["channels"]), 5, "the media channel in Stasis")
    ari.add_channel(f"{app}-br-1", [caller, f"{app}-em-1"])
    return events, ari, call_id


def test_a_dead_workers_callers_channels_and_bridges_go_and_nothing_else(tmp_path):
    with SimPbx(recordings_dir=tmp_path) as pbx:
        dead_events, ari, dead_call = worker_with_a_call(pbx, "pub-w0-1")
        live_events, _, live_call = worker_with_a_call(pbx, "pub-w0-10")
        dead_events.stop()                 # the worker died: its app has no connection
        result = clean_up_after(ari, "pub-w0-1", callers=[])
        assert (result.callers, result.channels, result.bridges) == (1, 1, 1)
        assert result.errors == []
        [ended] = pbx.wait_calls([dead_call], 5)
        assert ended["state"] == "ended"
        live = pbx.inspect()
        assert sorted(b["id"] for b in live["bridges"]) == ["pub-w0-10-br-1"]
        assert {c["stasis_app"] for c in live["channels"]} == {"pub-w0-10"}
        assert pbx.call(live_call)["state"] == "active"
        again = clean_up_after(ari, "pub-w0-1", callers=[pbx.call(dead_call)["channel_id"]])
        assert (again.callers, again.channels, again.bridges) == (0, 0, 0)
        live_events.stop()
        ari.close()


def test_what_is_still_being_retried_at_the_deadline_is_not_counted_as_removed():
    from test_janitor import ScriptedAri

    ari = ScriptedAri({"dead-w0-1-br-1": [500]}, channels=[{"id": "dead-w0-1-em-1"}],
                      bridges=[{"id": "dead-w0-1-br-1"}])
    result = clean_up_after(ari, "dead-w0-1", wait_s=0.1)
    assert (result.channels, result.bridges) == (1, 0)
    assert result.errors == ["bridge dead-w0-1-br-1: still not removed after 0 s"]
