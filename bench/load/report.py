"""What the load benchmark prints and writes: the tables, the verdicts, the JSON and the chart.

Owns: pairing each N's relay run with its floor run (the ratios), the issue's targets and how
each is judged, the two text tables, and the PNG chart (matplotlib, from the `bench` extra; the
chart is skipped, saying so, when it is not installed). No measuring here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from bench.load.scenario import VAD_SILENCE_MS

# The targets (#15); every one is reported beside what limits it (bench/RESULTS.md).
TARGET_CPU_SHARE = 0.60          # 1,000 calls in one worker within 60% of one core
TARGET_CPU_SHARE_AT = 1000
TARGET_FLOOR_RATIO = 1.3         # relay's CPU per call at most 1.3x the floor's, at every N
TARGET_PACING_OVER_FLOOR_MS = 1.0    # pacing p99 at the PBX within 1 ms of the floor's
TARGET_BARGE_IN_HEARD_P99_MS = 150.0
TARGET_TURN_OVER_WAIT_MS = 50.0  # turn latency heard p50 within 50 ms of the model's own wait
TARGET_CALLER_AUDIO_P99_MS = 30.0    # caller audio -> append p99, clean link
TARGET_RSS_KB_PER_CALL = 100.0
TARGET_UP_TO = 1000              # the quality targets hold at every N up to this


def _get(data: Optional[dict], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def combine(relay: dict, floor: Optional[dict], udp_floor: Optional[dict] = None) -> dict:
    """One N: the runs and the ratios relay / floor (and relay / UDP floor, when it ran)."""
    out: dict[str, Any] = {"calls": relay["calls"], "relay": relay, "floor": floor,
                           "udp_floor": udp_floor}
    if udp_floor:
        per_call = udp_floor["cpu_per_call_pct"]
        out["udp_floor_ratio"] = {
            "cpu_per_call": relay["cpu_per_call_pct"] / per_call if per_call else None}
    if floor:
        per_call = floor["cpu_per_call_pct"]
        per_packet = floor["cpu_per_packet_us"]
        # The floor's CPU per call at relay's packet rates, in case the stand-in agent's
        # traffic differed a little from the model's.
        rates = relay["packets"]["in_per_call_s"] + relay["packets"]["out_per_call_s"]
        scaled = per_packet * rates / 1e4
        out["ratio"] = {
            "cpu_per_call": relay["cpu_per_call_pct"] / per_call if per_call else None,
            "cpu_per_packet": relay["cpu_per_packet_us"] / per_packet if per_packet else None,
            "cpu_per_call_at_relay_packet_rate": (relay["cpu_per_call_pct"] / scaled
                                                  if scaled else None),
        }
    return out


def _fmt(value: Any, spec: str = ".1f", none: str = "n/a") -> str:
    if value is None:
        return none
    return format(value, spec)


def _pair(a: Any, b: Any, spec: str = ".1f") -> str:
    return f"{_fmt(a, spec)}/{_fmt(b, spec)}"


def _kernel_pair(relay: dict, floor: dict) -> str:
    def share(result: dict, name: str):
        value = result.get("kernel_share_of_cpu", {}).get(name)
        return None if value is None else 100 * value
    return _pair(share(relay, "relay"), share(floor, "floor"))


def tables(results: list[dict]) -> str:
    """The two tables: cost, then quality. `relay waited %`: the share of the window relay's
    hub thread was runnable but not running (the machine's other processes had the CPUs):
    when it is more than a few percent, pacing and latency figures measure the machine.
    `kernel %`: the part of relay's CPU time (and the floor's) the kernel spent on its behalf.
    `floor`: the floor with each call's model leg (the targets' floor); `UDP floor`: without it.
    `lateness` is measured at the PBX (relay's, then the floor's), `pacer p99` is relay's own
    pacer_lateness_seconds (its histogram ends at 100 ms: 100 reads "100 or more").
    `barge-in`: relay's reaction (speech_started to its last frame); `heard`: at the PBX, the
    caller's start of talking over the agent to the agent's last packet (model VAD included);
    `turn`: at the PBX, the end of the caller's speech to the answer's first packet."""
    lines = []
    head = (f"{'calls':>5}  {'relay %core':>11} {'%/call':>7} {'floor %core':>11} "
            f"{'ratio':>5}  {'UDP floor %core':>15} {'ratio':>5}  "
            f"{'us/pkt relay/floor':>18}  {'RSS KB/call':>11}  "
            f"{'sim-pbx %':>9} {'sim-model %':>11} {'machine cores':>13} "
            f"{'relay waited %':>14} {'kernel % relay/floor':>20}")
    lines += [head, "-" * len(head)]
    for r in results:
        relay, floor = r["relay"], r.get("floor") or {}
        udp = r.get("udp_floor") or {}
        lines.append(
            f"{r['calls']:>5}  {100 * relay['cpu_share']['relay']:>11.1f} "
            f"{relay['cpu_per_call_pct']:>7.3f} "
            f"{_fmt(100 * floor['cpu_share']['floor'] if floor else None):>11} "
            f"{_fmt(_get(r, 'ratio', 'cpu_per_call'), '.2f'):>5}  "
            f"{_fmt(100 * udp['cpu_share']['floor'] if udp else None):>15} "
            f"{_fmt(_get(r, 'udp_floor_ratio', 'cpu_per_call'), '.2f'):>5}  "
            f"{_pair(relay['cpu_per_packet_us'], floor.get('cpu_per_packet_us')):>18}  "
            f"{_fmt(relay['rss_kb']['per_call']):>11}  "
            f"{100 * relay['cpu_share'].get('sim_pbx', 0):>9.1f} "
            f"{100 * relay['cpu_share'].get('sim_model', 0):>11.1f} "
            f"{relay['cpu_share']['machine']:>13.2f} "
            f"{_fmt(100 * relay.get('runqueue_wait_share', {}).get('relay', 0)):>14} "
            f"{_kernel_pair(relay, floor):>20}")
    lines.append("")
    head = (f"{'calls':>5}  {'loss in/out':>11} {'gaps':>4}  {'lateness p99/max ms':>19} "
            f"{'floor':>11}  {'pacer p99':>9}  {'dev p99 ms':>10} {'floor':>5}  "
            f"{'caller audio p50/p99':>20} "
            f"{'model audio p50/p99':>19}  {'barge-in p99 (n)':>16}  {'turn p50/p99 ms':>15}  "
            f"{'heard p50/p99':>13}")
    lines += [head, "-" * len(head)]
    for r in results:
        relay, floor = r["relay"], r.get("floor") or {}
        loss = _get(relay, "relay", "loss") or {}
        window = _get(relay, "relay", "window") or {}
        late = relay["pacing_at_pbx_ms"]["lateness"]
        flate = _get(floor, "pacing_at_pbx_ms", "lateness") or {}
        barge = window.get("barge_in_reaction_ms") or {}
        turn = relay["turn_latency_at_pbx_ms"]
        lines.append(
            f"{r['calls']:>5}  "
            f"{_pair(loss.get('caller_to_relay'), loss.get('relay_to_caller'), 'd'):>11} "
            f"{_fmt((loss.get('relay_seq_gaps') or 0) + (loss.get('pbx_seq_gaps_in_window') or 0), '.0f'):>4}  "  # noqa: E501
            f"{_pair(late['p99'], late['max'], '.2f'):>19} "
            f"{_pair(flate.get('p99'), flate.get('max'), '.2f'):>11}  "
            f"{_fmt(_get(window, 'pacer_lateness_ms', 'p99'), '.2f'):>9}  "
            f"{relay['pacing_at_pbx_ms']['interarrival_deviation']['p99']:>10.2f} "
            f"{_fmt(_get(floor, 'pacing_at_pbx_ms', 'interarrival_deviation', 'p99'), '.2f'):>5}  "  # noqa: E501
            f"{_pair(_get(window, 'caller_audio_latency_ms', 'p50'), _get(window, 'caller_audio_latency_ms', 'p99')):>20} "  # noqa: E501
            f"{_pair(_get(window, 'model_audio_latency_ms', 'p50'), _get(window, 'model_audio_latency_ms', 'p99')):>19}  "  # noqa: E501
            f"{_fmt(barge.get('p99')):>10} ({barge.get('count', 0):>3})  "
            f"{_pair(turn['p50'], turn['p99'], '.0f'):>15}  "
            f"{_pair(_get(relay, 'barge_in_heard_at_pbx_ms', 'p50'), _get(relay, 'barge_in_heard_at_pbx_ms', 'p99'), '.0f'):>13}")  # noqa: E501
    lines += kernel_drop_notes(results)
    return "\n".join(lines)


def kernel_drop_notes(results: list[dict]) -> list[str]:
    """Where lost packets went, for the runs that lost any in a kernel receive buffer."""
    lines = []
    for r in results:
        loss = _get(r["relay"], "relay", "loss") or {}
        at_relay, anywhere = loss.get("relay_socket_overflows"), loss.get(
            "udp_receive_buffer_errors")
        if at_relay or anywhere:
            lines.append(f"{r['calls']} calls: the kernel dropped {_fmt(at_relay, '.0f')} "
                         f"datagrams for relay's full receive buffer, {_fmt(anywhere, '.0f')} "
                         "for any full UDP receive buffer on the machine during the run")
    return [""] + lines if lines else []


def targets(results: list[dict]) -> list[dict]:
    """Every target judged at every N it concerns (1,000 calls in 60% of a core: at 1,000)."""
    rows = []
    for r in sorted(results, key=lambda x: x["calls"]):
        rows += _targets_at(r)
    return rows


def _targets_at(r: dict) -> list[dict]:
    relay, floor, n = r["relay"], r.get("floor") or {}, r["calls"]
    loss = _get(relay, "relay", "loss") or {}
    window = _get(relay, "relay", "window") or {}
    lost = [loss.get(k) for k in ("caller_to_relay", "relay_to_caller", "relay_seq_gaps",
                                  "pbx_seq_gaps_in_window")]
    pacing = relay["pacing_at_pbx_ms"]["lateness"]["p99"]
    floor_pacing = _get(floor, "pacing_at_pbx_ms", "lateness", "p99")
    rows: list[tuple[str, Any, str, Callable[[Any], bool]]] = [
        ("CPU per call / floor's", _get(r, "ratio", "cpu_per_call"),
         f"<= {TARGET_FLOOR_RATIO}", lambda v: v <= TARGET_FLOOR_RATIO),
        ("packet loss (in, out, gaps)", None if None in lost else sum(lost), "== 0",
         lambda v: v == 0),
        ("RSS per call, KB", relay["rss_kb"]["per_call"], f"< {TARGET_RSS_KB_PER_CALL:.0f}",
         lambda v: v < TARGET_RSS_KB_PER_CALL),
    ]
    if n == TARGET_CPU_SHARE_AT:
        rows.insert(0, ("relay CPU (share of one core)", relay["cpu_share"]["relay"],
                        f"<= {TARGET_CPU_SHARE}", lambda v: v <= TARGET_CPU_SHARE))
    if n <= TARGET_UP_TO:
        rows += [
            ("pacing p99 at the PBX over the floor's, ms",
             None if floor_pacing is None else pacing - floor_pacing,
             f"<= {TARGET_PACING_OVER_FLOOR_MS:.0f}",
             lambda v: v <= TARGET_PACING_OVER_FLOOR_MS),
            ("barge-in as heard p99, ms", _get(relay, "barge_in_heard_at_pbx_ms", "p99"),
             f"< {TARGET_BARGE_IN_HEARD_P99_MS:.0f}",
             lambda v: v < TARGET_BARGE_IN_HEARD_P99_MS),
            (f"turn latency heard p50 over the model's {VAD_SILENCE_MS} ms, ms",
             _minus(_get(relay, "turn_latency_at_pbx_ms", "p50"), VAD_SILENCE_MS),
             f"<= {TARGET_TURN_OVER_WAIT_MS:.0f}", lambda v: v <= TARGET_TURN_OVER_WAIT_MS),
            ("caller audio -> append p99, ms", _get(window, "caller_audio_latency_ms", "p99"),
             f"< {TARGET_CALLER_AUDIO_P99_MS:.0f}", lambda v: v < TARGET_CALLER_AUDIO_P99_MS),
        ]
    return [{"calls": n, "target": name, "value": value, "goal": goal,
             "ok": None if value is None else bool(check(value))}
            for name, value, goal, check in rows]


def _minus(value: Any, other: float) -> Any:
    return None if value is None else value - other


def verdicts(rows: list[dict]) -> str:
    """The targets, N by N: the value, the goal, ok / MISSED (n/a: not measured)."""
    lines = []
    for row in rows:
        if not lines or lines[-1][0] != row["calls"]:
            lines.append((row["calls"], f"targets at {row['calls']} calls:"))
        state = "n/a" if row["ok"] is None else ("ok" if row["ok"] else "MISSED")
        value = row["value"]
        shown = _fmt(value, ".3g") if isinstance(value, float) else _fmt(value, "")
        lines.append((row["calls"], f"  {row['target']:50} {shown:>10}  {row['goal']:>8}  {state}"))
    return "\n".join(text for _, text in lines)


def chart(results: list[dict], path: Path) -> Optional[Path]:
    """CPU (share of one core) and p99 pacing lateness against N, relay and floor."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return None
    ns = [r["calls"] for r in results]
    relay = [r["relay"] for r in results]
    floors = [r.get("floor") for r in results]
    fig, (cpu_ax, pace_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    cpu_ax.plot(ns, [100 * x["cpu_share"]["relay"] for x in relay], "o-", label="relay")
    if all(floors):
        cpu_ax.plot(ns, [100 * f["cpu_share"]["floor"] for f in floors], "s-",
                    label="floor (socket work and model leg)")
    udp_floors = [r.get("udp_floor") for r in results]
    if all(udp_floors):
        cpu_ax.plot(ns, [100 * f["cpu_share"]["floor"] for f in udp_floors], "^:",
                    label="UDP floor (RTP alone)")
    cpu_ax.plot(ns, [100 * x["cpu_share"].get("sim_pbx", 0) for x in relay], ":",
                color="grey", label="sim PBX")
    cpu_ax.plot(ns, [100 * x["cpu_share"].get("sim_model", 0) for x in relay], "--",
                color="grey", label="sim model")
    cpu_ax.axhline(100 * TARGET_CPU_SHARE, color="red", lw=0.8, ls="--",
                   label="target at 1,000 calls")
    if all(floors):
        cpu_ax.plot(ns, [TARGET_FLOOR_RATIO * 100 * f["cpu_share"]["floor"] for f in floors],
                    lw=0.8, ls="-.", color="red", label=f"{TARGET_FLOOR_RATIO}x the floor")
    cpu_ax.set(xlabel="concurrent calls", ylabel="CPU, % of one core",
               title="CPU in the steady window")
    cpu_ax.legend(fontsize=8)
    cpu_ax.grid(alpha=0.3)
    pace_ax.plot(ns, [x["pacing_at_pbx_ms"]["lateness"]["p99"] for x in relay], "o-",
                 label="relay, at the PBX")
    if all(floors):
        pace_ax.plot(ns, [f["pacing_at_pbx_ms"]["lateness"]["p99"] for f in floors], "s-",
                     label="floor, at the PBX")
    own = [_get(x, "relay", "window", "pacer_lateness_ms", "p99") for x in relay]
    if all(v is not None for v in own):
        pace_ax.plot(ns, own, "o--", color="C0", alpha=0.5,
                     label="relay's own pacer (capped at 100)")
    if all(floors):
        pace_ax.plot(ns, [f["pacing_at_pbx_ms"]["lateness"]["p99"] + TARGET_PACING_OVER_FLOOR_MS
                          for f in floors], lw=0.8, ls="--", color="red",
                     label="target: the floor's + 1 ms")
    pace_ax.set_yscale("log")
    pace_ax.set(xlabel="concurrent calls", ylabel="ms (log)",
                title="outgoing RTP lateness p99")
    pace_ax.legend(fontsize=8)
    pace_ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
