"""/metrics keeps its families: a worker's exposition and a fleet's merged one carry exactly the
families (name, type, HELP), TYPE lines and sample names (with their labels) recorded in
tests/metrics_families.json, and both parse with prometheus_client's own parser.

The record was captured from the hand-written exposition relay had before it used
prometheus_client (`RELAY_METRICS_CAPTURE=1` writes it again from the running code: only do that
for a deliberate change of the metrics, and say so in the commit). Sample values are not
recorded (they depend on timing); the labelled counters are given fixed figures first so that
their label sets are known."""

from __future__ import annotations

import json
import os
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from stack import AGENTS_DIR, Stack, wait_for
from test_web_fleet import APPS, System
from web_client import RecordingClient

from relay.config import load_settings
from relay.fleet import status
from relay.fleet.master import Master
from relay.web import WebServer

RECORD = Path(__file__).resolve().parent / "metrics_families.json"
CAPTURE = os.environ.get("RELAY_METRICS_CAPTURE") == "1"


def describe(text: str) -> dict:
    """What a scrape says, less its values: {"families": {name: {type, help, samples}},
    "type_lines": [...]} with each sample as name{label="value",...} (labels sorted)."""
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"two families {family.name}"
        samples = set()
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples.add(sample.name + ("{" + labels + "}" if labels else ""))
        families[family.name] = {"type": family.type, "help": family.documentation,
                                 "samples": sorted(samples)}
    type_lines = sorted(line for line in text.splitlines() if line.startswith("# TYPE "))
    return {"families": dict(sorted(families.items())), "type_lines": type_lines}


def check_against_record(key: str, described: dict) -> None:
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if CAPTURE:
        record[key] = described
        RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return
    expected = record[key]
    missing = sorted(set(expected["families"]) - set(described["families"]))
    added = sorted(set(described["families"]) - set(expected["families"]))
    assert not missing and not added, f"families missing {missing}, added {added}"
    for name, family in expected["families"].items():
        assert described["families"][name] == family, name
    assert described["type_lines"] == expected["type_lines"]


def fix_counters(worker) -> None:
    """Give every labelled counter a known label set (the others are always there)."""
    counters = worker.counters
    counters["model_errors"].update({"rate_limit_exceeded": 1, "server_error": 2})
    counters["tool_calls"].update({"ok": 3, "error": 1})
    counters["fallback_transcriptions"].clear()
    counters["fallback_transcriptions"].update(
        {"openai": {"ok": 2, "failed": 1}, "google": {"skipped": 1}})
    counters["setup_failures"].update({"add_channel": 1})
    counters["watchdog"].update({"retry": 1})


def test_a_workers_metrics_keep_their_families_and_parse(tmp_path):
    stack = Stack(tmp_path, settings={"web.port": 0})
    web = WebServer(stack.worker).start()
    try:
        fix_counters(stack.worker)
        response = requests.get(web.url + "metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        check_against_record("worker", describe(response.text))
    finally:
        web.stop()
        stack.stop()


def test_a_fleets_merged_metrics_keep_their_families_and_parse(tmp_path):
    s = System(tmp_path)
    try:
        for member in s.members:
            fix_counters(member.worker)
        wait_for(lambda: all(m.worker.ready for m in s.members), 10, "the workers to be ready")
        for member in s.members:     # each worker's own scrape parses too
            assert member.get("/metrics").status_code == 200
            describe(member.get("/metrics").text)
        response = RecordingClient(s.fleet.url, "").get("/metrics")
        assert response.status_code == 200
        described = describe(response.text)
        assert sorted(s for s in described["families"]["relay_worker_up"]["samples"]) == [
            f'relay_worker_up{{worker="{app}"}}' for app in APPS]
        check_against_record("fleet", described)
    finally:
        s.stop()


def test_the_masters_own_metrics_keep_their_families_and_parse(tmp_path):
    settings = load_settings(env={}, overrides={
        "agent.configs_dir": str(AGENTS_DIR), "call.transcripts_dir": str(tmp_path)})
    master = Master(settings, 3)
    try:
        master.counters["restarts"][1] = 2
        check_against_record("master", describe(status.master_metrics(master)))
    finally:
        master.ari.close()
        master.poller.stop()
