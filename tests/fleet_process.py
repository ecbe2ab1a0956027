"""`relay serve --workers N` as a process, against the simulated PBX and model of the test
process: start it, read what it says (worker app names, pids, dashboard URL) from its log, send
it signals, stop it. Used by tests/test_fleet_*.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from stack import AGENTS_DIR, wait_for

from relay.sim.model import SimModel
from relay.sim.pbx.server import SimPbx

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-fleet-test"
APP = "pub"
CONGESTION = 34
STARTED = re.compile(r"worker (\S+) started: pid (\d+), web (\S+), RTP port (\d+)")
DASHBOARD = re.compile(r"fleet dashboard on (http://\S+)")


class FleetProcess:
    """The simulators in this process, relay's master and workers as processes."""

    def __init__(self, tmp_path: Path, workers: int, model_script: dict,
                 fleet: Optional[dict] = None, args: tuple[str, ...] = (),
                 agent: str = "default", extra_env: Optional[dict] = None,
                 ari: Optional[dict] = None,
                 ari_proxy: Optional[Callable[[SimPbx], Any]] = None) -> None:
        """ari: settings of the config file's "ari" section; ari_proxy(pbx) -> a started
        proxy in front of the PBX (with .url and .stop()) that relay is given as ARI_URL."""
        self.tmp_path = tmp_path
        self.pbx = SimPbx(recordings_dir=tmp_path / "pbx", keep_audio=False).start()
        self.model = SimModel(api_key=API_KEY, script=model_script).start()
        self.ari_proxy = ari_proxy(self.pbx) if ari_proxy is not None else None
        self.transcripts = tmp_path / "transcripts"
        self.config = tmp_path / "relay.json"
        self.ari_settings = dict(ari or {})
        self.write_config(agent, fleet)
        ari_url = self.ari_proxy.url if self.ari_proxy is not None else \
            f"http://127.0.0.1:{self.pbx.port}"
        env = dict(os.environ,
                   ARI_URL=ari_url, ARI_USERNAME=self.pbx.user,
                   ARI_PASSWORD=self.pbx.password, ARI_APP_NAME=APP,
                   OPENAI_API_KEY=API_KEY, OPENAI_REALTIME_URL=self.model.url,
                   REALTIME_MODEL="gpt-realtime", AGENT_CONFIGS_DIR=str(AGENTS_DIR),
                   RTP_PORT_MIN="0", RTP_PORT_MAX="0", TRANSCRIPTS_DIR=str(self.transcripts),
                   WEB_PORT="0", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
                   HISTORY_SQLITE_PATH=str(tmp_path / "relay.db"),
                   HISTORY_SPOOL_PATH=str(tmp_path / "history-spool.jsonl"))
        for name in ("RELAY_CONFIG", "RELAY_WORKERS", "DRAIN_TIMEOUT_S"):
            env.pop(name, None)
        env.update(extra_env or {})
        self.log_path = tmp_path / "fleet.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--workers", str(workers),
                 "--config", str(self.config), *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.workers = workers

    def write_config(self, agent: str, fleet: Optional[dict] = None) -> None:
        settings = {"agent": {"active": agent},
                    "fleet": {"health_interval_s": 0.1, **(fleet or {})}}
        if self.ari_settings:
            settings["ari"] = self.ari_settings
        self.config.write_text(json.dumps(settings))

    # what it says
    def log(self) -> str:
        return self.log_path.read_text()

    def started(self) -> dict[str, int]:
        """Worker app -> pid, for every worker that reported its start so far."""
        return {m.group(1): int(m.group(2)) for m in STARTED.finditer(self.log())}

    def dashboard(self) -> str:
        match = wait_for(lambda: DASHBOARD.search(self.log()), 30, "the fleet dashboard")
        return match.group(1)

    def wait_dispatching(self, timeout: float = 60.0) -> None:
        """Until the dispatcher holds the public app (every worker is up by then)."""
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"relay exited early:\n{self.log()[-3000:]}")
            return any(a["name"] == APP and a["active"]
                       for a in self.pbx.inspect()["applications"])
        wait_for(ready, timeout, "the dispatcher to hold the public app")

    # calls
    def calls(self, script: dict, count: int = 1, rate: Optional[float] = None) -> list[str]:
        return self.pbx.start_calls(script, count=count, app=APP, rate=rate)

    def worker_of(self, pbx_call_id: str) -> str:
        """The worker app that carried a call: its externalMedia channel's id prefix."""
        externals = list(self.pbx.call(pbx_call_id)["externals"])
        assert len(externals) == 1, externals
        return externals[0].rsplit("-em-", 1)[0]

    def stasis_app(self, pbx_call_id: str) -> Optional[str]:
        channel_id = self.pbx.call(pbx_call_id)["channel_id"]
        for channel in self.pbx.inspect()["channels"]:
            if channel["id"] == channel_id:
                return channel["stasis_app"]
        return None

    def bridged(self, pbx_call_id: str) -> bool:
        channel_id = self.pbx.call(pbx_call_id)["channel_id"]
        return any(c["id"] == channel_id and c["bridge"] for c in self.pbx.inspect()["channels"])

    def transcript(self, result: dict, timeout: float = 10.0) -> list[tuple[str, str]]:
        """The caller and assistant turns of a call's transcript (written by its worker just
        after the call ended)."""
        pattern = f"*_{result['channel_id']}.jsonl"
        [path] = wait_for(lambda: list(self.transcripts.glob(pattern)), timeout,
                          f"the transcript {pattern}")
        return transcript_turns(path)

    def wait_no_leftovers(self, timeout: float = 15.0) -> None:
        def clean() -> bool:
            live = self.pbx.inspect()
            return not live["channels"] and not live["bridges"]
        try:
            wait_for(clean, timeout, "no channel or bridge left on the PBX")
        except AssertionError:
            live = self.pbx.inspect()
            raise AssertionError(f"left on the PBX: {[c['id'] for c in live['channels']]}, "
                                 f"{[b['id'] for b in live['bridges']]}") from None

    # stopping
    def send(self, sig: int) -> None:
        """A signal to the master."""
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def close(self) -> None:
        """Whatever happened: no process left behind, simulators stopped."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            for pid in self.started().values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if self.ari_proxy is not None:
                self.ari_proxy.stop()
            self.model.stop()
            self.pbx.stop()


def transcript_turns(path: Path) -> list[tuple[str, str]]:
    """The (kind, text) of a transcript file's caller and assistant turns."""
    turns = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") in ("caller", "assistant"):
            turns.append((entry["kind"], entry.get("text", "")))
    return turns
