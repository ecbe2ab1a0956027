"""The simulated PBX as a load generator: CPU per call-frame with N concurrent RTP calls.

N scripted calls (a continuous tone, so RTP never pauses) each bridged with an externalMedia
channel whose RTP goes to an echo process (a separate process, so its CPU is not counted) that
sends every packet straight back: per 20 ms frame and call the PBX sends one packet, receives
one, and records it. Measured: this process's CPU time (user + system: on loopback the kernel
work of delivering a datagram is charged to its sender) per packet sent or received.
Reference, in the same run: a bare gevent loop doing the same socket work with nothing else
(one pacing greenlet sending N streams over a 1 ms wheel, one io watcher per socket receiving
and parsing). Also printed: the share of one core the N calls take.

BENCH_SIM_PBX_CALLS (default 1000) and BENCH_SIM_PBX_SECONDS (default 4) tune it.
"""

from __future__ import annotations

import _socket
import os
import subprocess
import sys
import time

from bench.harness import Row

CALLS = int(os.environ.get("BENCH_SIM_PBX_CALLS", "1000"))
SECONDS = float(os.environ.get("BENCH_SIM_PBX_SECONDS", "4"))
MAX_ECHO_LIFETIME_S = 300

ECHO = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(1.0)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    try:
        s.sendto(data, addr)
    except OSError:
        pass
"""


class _NoEvents:
    """Stands for an events WebSocket that drops everything."""

    def send_event(self, app: str, event: dict) -> None:
        pass

    def replaced(self, app: str, event: dict) -> None:
        pass


def _echo() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO, str(MAX_ECHO_LIFETIME_S)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def _cpu_during(seconds: float) -> float:
    import gevent

    start_cpu, start = time.process_time(), time.monotonic()
    gevent.sleep(seconds)
    return (time.process_time() - start_cpu) / (time.monotonic() - start)


def _measure_pbx(calls: int, echo_port: int) -> tuple[float, int, int]:
    """(CPU seconds per second, packets sent, packets received) of the PBX with `calls`."""
    import gevent

    from relay.sim.pbx import SimPbx

    with SimPbx(seed=1) as pbx:
        # An app must be registered for calls to enter Stasis: one whose events go nowhere.
        pbx.model.register_app("bench", _NoEvents())
        ids = pbx.start_calls({"answer": True, "steps": [{"tone": 440}],
                               "end": "wait", "max_duration_ms": 600000},
                              count=calls, app="bench")
        deadline = time.monotonic() + 30
        while any(pbx.scenario.calls[c].channel is None for c in ids):
            assert time.monotonic() < deadline, "calls did not start"
            gevent.sleep(0.05)
        pbx._op()
        for i in range(len(ids)):
            pbx.model.external_media(app="bench", external_host=f"127.0.0.1:{echo_port}",
                                     channel_id=f"em{i}")
            pbx.model.create_bridge(f"b{i}")
            if i % 100 == 99:
                gevent.sleep(0)
        pbx._after_op()
        # As in Asterisk, an externalMedia channel enters Stasis a moment after its answer:
        # bridge each once it has.
        ems = [pbx.model.channels[f"em{i}"] for i in range(len(ids))]
        while any(em.stasis_app is None for em in ems):
            assert time.monotonic() < deadline, "externalMedia channels did not enter Stasis"
            gevent.sleep(0.01)
        pbx._op()
        for i, cid in enumerate(ids):
            ch = pbx.scenario.calls[cid].channel
            pbx.model.add_channels(f"b{i}", [ch.id, f"em{i}"])
            if i % 100 == 99:
                gevent.sleep(0)
        pbx._after_op()
        pbx.model.outbox.clear()
        gevent.sleep(1.0)                       # settle: every stream running
        eps = list(pbx.media.endpoints.values())
        sent0 = sum(e.packets_sent for e in eps)
        recv0 = sum(e.received for e in eps)
        share = _cpu_during(SECONDS)
        sent = sum(e.packets_sent for e in eps) - sent0
        recv = sum(e.received for e in eps) - recv0
        return share, sent, recv


def _measure_bare(streams: int, echo_port: int) -> tuple[float, int, int]:
    """The floor: the same sockets and packets, nothing else."""
    import gevent

    from relay._rtp import build_rtp, parse_rtp_header

    hub = gevent.get_hub()
    socks, watchers = [], []
    received = [0]
    buf = bytearray(2048)
    mv = memoryview(buf)

    def make_reader(sock):
        def on_readable():
            try:
                n, _ = sock.recvfrom_into(buf)
            except OSError:
                return
            parse_rtp_header(mv[:n])
            received[0] += 1
        return on_readable

    for _ in range(streams):
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        w = hub.loop.io(s.fileno(), 1)
        w.start(make_reader(s))
        socks.append(s)
        watchers.append(w)
    wheel = [socks[i::20] for i in range(20)]
    payload = b"\xff" * 160
    sent = [0]
    running = [True]

    def pace():
        t0 = time.monotonic()
        tick = 0
        seq = 0
        dest = ("127.0.0.1", echo_port)
        while running[0]:
            due = t0 + tick / 1000.0
            now = time.monotonic()
            if now < due:
                gevent.sleep(due - now)
                continue
            seq = (seq + 1) & 0xFFFF
            for s in wheel[tick % 20]:
                try:
                    s.sendto(build_rtp(0, False, seq, tick * 8, 1, payload), dest)
                    sent[0] += 1
                except OSError:
                    pass
            tick += 1

    g = gevent.spawn(pace)
    try:
        gevent.sleep(1.0)
        s0, r0 = sent[0], received[0]
        share = _cpu_during(SECONDS)
        return share, sent[0] - s0, received[0] - r0
    finally:
        running[0] = False
        g.kill()
        for w in watchers:
            w.stop()
            w.close()
        for s in socks:
            s.close()


def run() -> list[Row]:
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    proc, port = _echo()
    try:
        bare_share, bare_sent, bare_recv = _measure_bare(CALLS, port)
        pbx_share, pbx_sent, pbx_recv = _measure_pbx(CALLS, port)
    finally:
        proc.kill()
        proc.wait()
    frames = CALLS * 50 * SECONDS
    # Per packet handled (sent or received): the echo process may not keep up on a busy
    # machine, and fewer echoes mean less work, so count what was actually done.
    pbx_ns = pbx_share * SECONDS * 1e9 / max(pbx_sent + pbx_recv, 1)
    bare_ns = bare_share * SECONDS * 1e9 / max(bare_sent + bare_recv, 1)
    print(f"sim-pbx: {CALLS} calls, {pbx_sent / frames:.1%} of frames sent, "
          f"{pbx_recv / max(pbx_sent, 1):.1%} echoed back, {pbx_share:.0%} of a core "
          f"(bare loop: {bare_share:.0%}, {bare_sent / frames:.1%} sent, "
          f"{bare_recv / max(bare_sent, 1):.1%} echoed back)")
    # Target: the simulator's own work costs at most 2.5x the bare socket work it does.
    return [Row(f"sim_pbx {CALLS} calls cpu/packet", pbx_ns, 172, "bare gevent udp loop",
                bare_ns, min_speedup=0.4)]


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
