"""relay.janitor against a scripted ARI client: removal that converges however the requests fail,
and the listings a reconciliation reads (leftovers by prefix, callers waiting in the app)."""

from __future__ import annotations

import gevent
import pytest
from stack import wait_for

from relay.ari import AriError
from relay.janitor import Janitor, backoff_delays, in_stasis


class ScriptedAri:
    """Answers each DELETE from a per-id list of outcomes (an int status raises AriError;
    None succeeds); records every request."""

    def __init__(self, outcomes=None, channels=None, bridges=None, apps=None):
        self.outcomes = {k: list(v) for k, v in (outcomes or {}).items()}
        self.channels = channels or []
        self.bridges = bridges or []
        self.apps = apps or {}
        self.requests: list[tuple[str, str]] = []

    def _answer(self, what: str, resource_id: str):
        self.requests.append((what, resource_id))
        queue = self.outcomes.get(resource_id) or [None]
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if outcome is not None:
            raise AriError(outcome, "scripted", "DELETE", resource_id)

    def hangup(self, channel_id, reason="normal"):
        self._answer("hangup", channel_id)

    def destroy_bridge(self, bridge_id):
        self._answer("destroy", bridge_id)

    def list_channels(self):
        return self.channels

    def request(self, method, path, params=None, body=None):
        if path == "/bridges":
            return self.bridges
        name = path.rsplit("/", 1)[-1]
        if name not in self.apps:
            raise AriError(404, "Application does not exist.", method, path)
        return {"name": name, "channel_ids": self.apps[name]}


def quick(ari, **kwargs) -> Janitor:
    kwargs.setdefault("retry_initial_s", 0.001)
    kwargs.setdefault("retry_max_s", 0.004)
    kwargs.setdefault("recheck_s", (0.01, 0.02))
    return Janitor(ari, "relay-", **kwargs)


def test_a_delete_that_succeeds_or_404s_is_done_at_once():
    ari = ScriptedAri({"relay-em-1": [None], "relay-br-1": [404]})
    janitor = quick(ari)
    assert janitor.remove("channel", "relay-em-1") is True
    assert janitor.remove("bridge", "relay-br-1") is True
    assert janitor.pending == set()
    assert ari.requests == [("hangup", "relay-em-1"), ("destroy", "relay-br-1")]
    assert janitor.counters["removed"] == {"bridge": 0, "channel": 1, "caller": 0}


def test_a_5xx_or_a_timeout_is_retried_until_asterisk_confirms():
    ari = ScriptedAri({"relay-br-1": [500, 0, 503, None]})
    janitor = quick(ari)
    assert janitor.remove("bridge", "relay-br-1") is False
    assert janitor.pending == {("bridge", "relay-br-1")}
    wait_for(lambda: not janitor.pending, 5, "the retries")
    assert ari.requests == [("destroy", "relay-br-1")] * 4
    assert janitor.counters["retries"]["bridge"] == 3
    assert janitor.counters["removed"]["bridge"] == 1
    janitor.stop()


def test_retries_are_bounded_and_give_up_for_the_sweep():
    ari = ScriptedAri({"caller-1": [500]})
    janitor = quick(ari, attempts=4)
    janitor.remove("caller", "caller-1")
    wait_for(lambda: not janitor.pending, 5, "the retries to end")
    assert len(ari.requests) == 4
    assert janitor.counters["gave_up"]["caller"] == 1


def test_another_4xx_is_final_and_not_retried():
    ari = ScriptedAri({"relay-em-1": [400]})
    janitor = quick(ari)
    assert janitor.remove("channel", "relay-em-1") is False
    gevent.sleep(0.05)
    assert ari.requests == [("hangup", "relay-em-1")]
    assert janitor.counters["gave_up"]["channel"] == 1


def test_a_404_for_a_creation_that_had_no_answer_is_asked_again_later():
    # the externalMedia request timed out: our DELETE 404s, then the creation lands
    ari = ScriptedAri({"relay-em-1": [404, None]})
    janitor = quick(ari)
    assert janitor.remove("channel", "relay-em-1", uncertain=True) is False
    wait_for(lambda: not janitor.pending, 5, "the recheck")
    assert ari.requests == [("hangup", "relay-em-1")] * 2
    assert janitor.counters["removed"]["channel"] == 1


def test_an_uncertain_resource_that_never_appears_is_checked_a_bounded_number_of_times():
    ari = ScriptedAri({"relay-em-1": [404]})
    janitor = quick(ari)
    janitor.remove("channel", "relay-em-1", uncertain=True)
    wait_for(lambda: not janitor.pending, 5, "the rechecks")
    assert len(ari.requests) == 3       # the DELETE and two rechecks


def test_stop_kills_the_background_work():
    ari = ScriptedAri({"relay-br-1": [500]})
    janitor = quick(ari, retry_initial_s=10, retry_max_s=10)
    janitor.remove("bridge", "relay-br-1")
    assert janitor.pending
    janitor.stop()
    assert janitor.pending == set()
    assert janitor.remove("bridge", "relay-br-1") is False   # no new background work
    assert janitor.pending == set()


def test_leftovers_are_the_prefixed_ids_no_live_call_owns():
    ari = ScriptedAri(
        channels=[{"id": "relay-em-a"}, {"id": "relay-em-b"}, {"id": "caller-1"},
                  {"id": "relayx-em-c"}],
        bridges=[{"id": "relay-br-a"}, {"id": "relay-br-b"}, {"id": "other"}])
    janitor = quick(ari)
    found = janitor.leftovers(lambda: {"relay-em-a", "relay-br-a"})
    assert found.channels == ["relay-em-b"]
    assert found.bridges == ["relay-br-b"]


def test_waiting_callers_are_the_app_s_channels_in_stasis_that_relay_did_not_create():
    stasis = {"app_name": "Stasis", "app_data": "relay,agent=support"}
    channels = [
        {"id": "caller-1", "name": "PJSIP/a", "dialplan": stasis},
        {"id": "caller-2", "name": "Local/100@x;2", "dialplan": {"app_name": "Dial"}},
        {"id": "relay-em-1", "name": "UnicastRTP/127.0.0.1:4000-0x1", "dialplan": stasis},
        {"id": "other-app-caller", "name": "PJSIP/b", "dialplan": stasis},
        {"id": "snoop", "name": "Snoop/caller-1-0001", "dialplan": stasis},
    ]
    ari = ScriptedAri(apps={"relay": ["caller-1", "caller-2", "relay-em-1", "snoop"]})
    janitor = quick(ari)
    assert [c["id"] for c in janitor.waiting_callers("relay", channels)] == ["caller-1"]
    assert janitor.waiting_callers("unknown-app", channels) == []
    assert in_stasis({"dialplan": "garbage"}) is False


def test_backoff_delays_double_up_to_the_cap_with_jitter():
    assert list(backoff_delays(0.25, 1.0, 5, rng=lambda: 0.5)) == [0.25, 0.5, 1.0, 1.0, 1.0]
    low = list(backoff_delays(1.0, 8.0, 4, rng=lambda: 0.0))
    high = list(backoff_delays(1.0, 8.0, 4, rng=lambda: 1.0))
    assert low == pytest.approx([0.8, 1.6, 3.2, 6.4])
    assert high == pytest.approx([1.2, 2.4, 4.8, 9.6])
