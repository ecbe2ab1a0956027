"""The end-to-end load benchmark's harness (bench/load) at a tiny N, so CI keeps it working:
four calls through relay, through the floor (with each call's model leg) and through the UDP
floor (without it), every process its own, on 127.0.0.1. Checked:
the structure of the results the report and the chart use, zero loss both ways, nothing left
on the PBX, every process stopped cleanly. No timing thresholds: CI's machine is not the
benchmark's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:       # bench/ is a directory of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from bench import bench_load  # noqa: E402
from bench.load import report  # noqa: E402
from bench.load.prom import Scrape  # noqa: E402
from bench.load.runner import Options, run_floor, run_relay  # noqa: E402

CALLS = 4


def _check_common(result: dict, main: str) -> None:
    assert result["calls"] == CALLS and result["target"] == main
    assert result["window_complete"]
    assert result["cpu_share"][main] > 0 and result["cpu_share"]["sim_pbx"] > 0
    assert result["cpu_per_call_pct"] > 0 and result["cpu_per_packet_us"] > 0
    assert result["packets"]["in"] > 0 and result["packets"]["out"] > 0
    assert result["rss_kb"]["idle"] > 0 and result["rss_kb"]["steady"] > 0
    for view in ("interarrival_deviation", "lateness"):
        figures = result["pacing_at_pbx_ms"][view]
        assert figures["count"] > 0
        assert 0 <= figures["p50"] <= figures["p99"] <= figures["max"]
    assert set(result["barge_in_heard_at_pbx_ms"]) >= {"count", "p50", "p99"}
    assert result["window_at_pbx"]["streams"] == CALLS
    assert result["window_at_pbx"]["seq_gaps"] == 0
    assert result["leftovers"] == {"channels": 0, "bridges": 0}
    assert result["pbx"]["calls"] == {"ended": CALLS} and result["pbx"]["calls_left"] == 0
    assert result["pbx"]["totals"]["rx_malformed"] == 0
    assert all(code == 0 for code in result["exit_codes"].values()), result["exit_codes"]
    assert set(result["cpus"]) == set(result["exit_codes"])     # pinned, or None


def test_four_calls_through_relay_and_the_floor(tmp_path: Path):
    opts = Options(rate=20, window_s=3, settle_s=1, idle_s=0.5, slack_s=4, out_dir=tmp_path)
    relay = run_relay(CALLS, opts)
    _check_common(relay, "relay")
    assert set(relay["exit_codes"]) == {"relay", "sim_model", "sim_pbx"}
    assert relay["cpu_share"]["sim_model"] > 0
    figures = relay["relay"]
    assert figures["loss"]["caller_to_relay"] == 0
    assert figures["loss"]["relay_to_caller"] == 0
    assert figures["loss"]["relay_seq_gaps"] == 0
    assert figures["loss"]["relay_socket_overflows"] == 0
    assert figures["loss"]["udp_receive_buffer_errors"] >= 0      # the machine's: any process
    assert figures["calls_total"] == CALLS and figures["calls_failed"] == 0
    assert figures["window"]["pacer_lateness_ms"]["count"] > 0
    assert figures["hangups"]["pacer_lateness_ms"]["count"] > 0     # ticks while they hung up
    assert 0.0 <= figures["hangups"]["pacer_late_over_5ms"] <= 1.0
    assert figures["worker"]["calls_active"] == 0
    assert set(relay["runqueue_wait_share"]) == {"relay", "sim_model", "sim_pbx"}
    assert set(relay["kernel_share_of_cpu"]) == {"relay", "sim_model", "sim_pbx"}
    assert all(0.0 <= share <= 1.0 for share in relay["kernel_share_of_cpu"].values())
    assert figures["gc_in_window"] is not None and len(figures["gc_in_window"]["count"]) == 3

    floor = run_floor(CALLS, opts)
    _check_common(floor, "floor")
    assert set(floor["exit_codes"]) == {"floor", "sim_pbx", "sim_model"}
    assert floor["model_leg"] is True and floor["cpu_share"]["sim_model"] > 0
    legs = floor["model_legs"]      # every call's audio reached the model, its audio came back
    assert (legs["calls"], legs["failed"], legs["write_errors"]) == (CALLS, 0, 0)
    assert legs["appends"] > 0 and legs["audio_deltas"] > 0
    _check_floor_loss(floor)

    udp_floor = run_floor(CALLS, opts, model_leg=False)
    _check_common(udp_floor, "floor")
    assert set(udp_floor["exit_codes"]) == {"floor", "sim_pbx"}
    assert udp_floor["model_leg"] is False and "model_legs" not in udp_floor
    _check_floor_loss(udp_floor)

    combined = report.combine(relay, floor, udp_floor)
    assert combined["ratio"]["cpu_per_call"] > 0
    assert combined["udp_floor_ratio"]["cpu_per_call"] > 0
    document = {"results": [combined], "errors": [], "targets": report.targets([combined])}
    json.dumps(document)
    assert bench_load.problems(document) == []
    judged = {t["target"] for t in document["targets"]}
    assert {"CPU per call / floor's", "caller audio -> append p99, ms",
            "barge-in as heard p99, ms"} <= judged
    assert all(t["calls"] == CALLS for t in document["targets"])
    assert f"{CALLS:>5}" in report.tables([combined])
    assert "targets at 4 calls" in report.verdicts(document["targets"])
    chart = report.chart([combined], tmp_path / "load.png")
    assert chart is None or chart.stat().st_size > 0
    assert (tmp_path / "logs" / "relay-4-relay.log").exists()


def _check_floor_loss(floor: dict) -> None:
    loss = dict(floor["floor"]["loss"])
    assert loss.pop("udp_receive_buffer_errors") >= 0
    assert loss == {"caller_to_floor": 0, "floor_to_caller": 0, "pbx_seq_gaps_in_window": 0}


def test_a_floor_whose_model_leg_failed_is_a_failed_run():
    result = {"leftovers": {"channels": 0, "bridges": 0}, "pbx": {"calls_left": 0},
              "window_complete": True}
    legs = {"calls": 4, "failed": 1, "appends": 9, "write_errors": 0, "audio_deltas": 3}
    floor = dict(result, model_leg=True, model_legs=legs)
    document = {"errors": [], "results": [{"calls": 4, "relay": dict(result), "floor": floor}]}
    assert bench_load.problems(document) == [
        f"floor at 4 calls: the model leg failed ({legs})"]
    floor["model_legs"] = dict(legs, failed=0)
    assert bench_load.problems(document) == []
    del floor["model_legs"]                 # the floor never said what its legs did
    assert bench_load.problems(document) == ["floor at 4 calls: the model leg failed (None)"]


def test_command_line_and_metrics_parsing():
    args = bench_load.parse_args(["--calls", "4,8", "--window", "2", "--no-floor"])
    assert (args.calls, args.window, args.no_floor) == ([4, 8], 2.0, True)
    assert bench_load.parse_args(["--no-udp-floor"]).no_udp_floor is True
    scrape = Scrape.parse(
        "# TYPE relay_x_seconds histogram\n"
        'relay_x_seconds_bucket{le="0.01"} 50\nrelay_x_seconds_bucket{le="0.02"} 100\n'
        'relay_x_seconds_bucket{le="+Inf"} 100\nrelay_x_seconds_sum 1.0\n'
        "relay_x_seconds_count 100\n# TYPE relay_tool_calls_total counter\n")
    hist = scrape.histogram("relay_x_seconds")
    assert hist.quantile(0.5) == 0.01 and abs(hist.quantile(0.75) - 0.015) < 1e-9
    assert hist.share_over(0.01) == 0.5 and hist.share_over(0.02) == 0.0
    assert hist.share_over(0.015) is None                    # not a bucket bound
    assert scrape.value("relay_tool_calls_total") == 0.0     # declared, no samples yet
    assert scrape.value("relay_not_exported") is None        # reported as n/a


def _result(calls: int, cpu: float, pacing: float, floor_pacing: float, turn_p50: float) -> dict:
    relay = {"calls": calls, "cpu_share": {"relay": cpu}, "cpu_per_call_pct": 100 * cpu / calls,
             "cpu_per_packet_us": 10.0, "packets": {"in_per_call_s": 17.0, "out_per_call_s": 25.0},
             "rss_kb": {"per_call": 80.0},
             "pacing_at_pbx_ms": {"lateness": {"p99": pacing}},
             "barge_in_heard_at_pbx_ms": {"p99": 120.0},
             "turn_latency_at_pbx_ms": {"p50": turn_p50},
             "relay": {"loss": {"caller_to_relay": 0, "relay_to_caller": 0, "relay_seq_gaps": 0,
                                "pbx_seq_gaps_in_window": 0},
                       "window": {"caller_audio_latency_ms": {"p99": 25.0}}}}
    floor = {"cpu_share": {"floor": cpu / 1.5}, "cpu_per_call_pct": 100 * cpu / 1.5 / calls,
             "cpu_per_packet_us": 8.0, "pacing_at_pbx_ms": {"lateness": {"p99": floor_pacing}}}
    return report.combine(relay, floor)


def test_the_targets_are_judged_at_every_n_and_the_core_share_at_a_thousand():
    rows = report.targets([_result(1000, 0.55, 3.5, 2.0, 560.0),
                           _result(100, 0.2, 2.5, 2.0, 540.0)])
    by = {(r["calls"], r["target"]): r for r in rows}
    assert [r["calls"] for r in rows] == sorted(r["calls"] for r in rows)    # N by N
    assert by[(1000, "relay CPU (share of one core)")]["ok"] is True
    assert (100, "relay CPU (share of one core)") not in by
    assert by[(100, "CPU per call / floor's")]["ok"] is False                 # 1.5x > 1.3x
    assert by[(100, "pacing p99 at the PBX over the floor's, ms")]["ok"] is True     # +0.5
    assert by[(1000, "pacing p99 at the PBX over the floor's, ms")]["ok"] is False   # +1.5
    turn = "turn latency heard p50 over the model's 500 ms, ms"
    assert by[(100, turn)]["value"] == 40.0 and by[(100, turn)]["ok"] is True
    assert by[(1000, turn)]["ok"] is False
    text = report.verdicts(rows)
    assert text.index("targets at 100 calls") < text.index("targets at 1000 calls")
    assert "MISSED" in text


def test_the_tables_say_where_the_kernel_dropped_packets():
    quiet, lossy = _result(100, 0.2, 2.5, 2.0, 540.0), _result(1000, 0.55, 3.5, 2.0, 560.0)
    lossy["relay"]["relay"]["loss"].update(relay_socket_overflows=453,
                                           udp_receive_buffer_errors=460)
    text = "\n".join(report.kernel_drop_notes([quiet, lossy]))     # under the tables
    assert ("1000 calls: the kernel dropped 453 datagrams for relay's full receive buffer, 460 "
            "for any full UDP receive buffer") in text
    assert "100 calls: the kernel" not in text
