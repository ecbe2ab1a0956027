"""The whole system on 127.0.0.1 for integration tests: simulated PBX, simulated model, relay.

`Stack` starts the three in this process (gevent), points relay at the simulators through its
ordinary settings, and checks on stop that nothing leaked: no channel or bridge left in the PBX,
no call, route or pacer slot left in the worker, no greenlet left behind.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any, Callable, Optional

import gevent

from relay.config import load_settings
from relay.sim.model import SimModel
from relay.sim.pbx.server import SimPbx
from relay.worker import Worker

API_KEY = "sk-relay-test"
APP = "relay-test"
AGENTS_DIR = Path(__file__).resolve().parent / "agents"


def greenlets_alive() -> list:
    """Spawned greenlets still alive (gevent's own hub and resolver-thread greenlets, which
    come and go by themselves, are not counted)."""
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, gevent.Greenlet) and not o.dead]


def live_greenlets() -> int:
    return len(greenlets_alive())


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll predicate every 10 ms until it is truthy; AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        gevent.sleep(0.01)


class _RememberingDict(dict):
    """The worker's call table, remembering every call ever added (tests look calls up after
    they ended)."""

    def __init__(self, seen: dict) -> None:
        super().__init__()
        self._seen = seen

    def __setitem__(self, key, value) -> None:
        self._seen[key] = value
        super().__setitem__(key, value)


class Stack:
    """PBX + model + one relay worker, started together, stopped with leak checks."""

    def __init__(self, tmp_path: Path, model_script: Optional[dict] = None,
                 settings: Optional[dict] = None, session_limit_s: float = 3600.0,
                 model_auth: str = "bearer") -> None:
        self.tmp_path = tmp_path
        self.baseline_greenlets = live_greenlets()
        self.pbx = SimPbx(recordings_dir=tmp_path / "pbx").start()
        self.model = SimModel(api_key=API_KEY, script=model_script,
                              session_limit_s=session_limit_s, auth=model_auth).start()
        overrides = {
            "ari.url": f"http://127.0.0.1:{self.pbx.port}",
            "ari.username": self.pbx.user, "ari.password": self.pbx.password, "ari.app": APP,
            "ari.reconnect_initial_s": 0.05,
            "openai.realtime_url": self.model.url, "openai.api_key": API_KEY,
            "openai.model": "gpt-realtime",
            "agent.configs_dir": str(AGENTS_DIR), "agent.active": "default",
            "rtp.port_min": 0, "rtp.port_max": 0,
            "call.transcripts_dir": str(tmp_path / "transcripts"),
            "history.sqlite_path": str(tmp_path / "relay.db"),
            "history.spool_path": str(tmp_path / "history-spool.jsonl"),
        }
        overrides.update(settings or {})
        self.settings = load_settings(env={}, overrides=overrides)
        self.worker = Worker(self.settings)
        self.seen_calls: dict = {}
        self.worker.calls = _RememberingDict(self.seen_calls)
        self.worker.start()
        wait_for(lambda: self.worker.ready, 5, "relay's ARI events connection")

    def call(self, script: Any, app: str = APP) -> str:
        return self.pbx.start_call(script, app=app)

    def wait_calls(self, call_ids: list[str], timeout: float = 30.0) -> list[dict]:
        results = self.pbx.wait_calls(call_ids, timeout)
        wait_for(lambda: not self.worker.calls, timeout, "relay to end its calls")
        return results

    def relay_call(self, pbx_call_id: str, timeout: float = 10.0):
        """relay's Call for a PBX call (the caller channel id is the PBX call's channel)."""
        def find():
            for call in list(self.seen_calls.values()):
                if call.id == pbx_call_id or call.id in self._channels_of(pbx_call_id):
                    return call
            return None
        return wait_for(find, timeout, f"relay to pick up {pbx_call_id}")

    def _channels_of(self, pbx_call_id: str) -> set[str]:
        result = self.pbx.call(pbx_call_id)
        return {result.get("channel_id", ""), result.get("id", "")}

    def finished(self, pbx_call_id: str) -> dict:
        ids = self._channels_of(pbx_call_id)
        return next(s for s in self.worker.finished if s["id"] in ids)

    def assert_no_leftovers(self) -> None:
        live = self.pbx.inspect()
        assert live["channels"] == [], f"channels left in the PBX: {live['channels']}"
        assert live["bridges"] == [], f"bridges left in the PBX: {live['bridges']}"
        assert self.worker.calls == {}
        assert self.worker.media.routes == 0
        assert len(self.worker.pacer) == 0
        assert self.worker.owned == {}

    def stop(self, check: bool = True) -> None:
        try:
            if check:
                wait_for(lambda: not self.worker.calls, 10, "relay to end its calls")
                wait_for(lambda: not self.pbx.inspect()["channels"], 10, "PBX channels to go")
                self.assert_no_leftovers()
        finally:
            self.worker.stop(5)
            self.model.stop()
            self.pbx.stop()
        if check:
            try:
                wait_for(lambda: live_greenlets() <= self.baseline_greenlets, 5,
                         f"greenlets to end (baseline {self.baseline_greenlets})")
            except AssertionError as error:
                left = [(getattr(g, "_run", g), g.args) for g in greenlets_alive()]
                raise AssertionError(f"{error}; alive: {left}") from None
