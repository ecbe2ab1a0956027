"""The load benchmark's floor (bench/load/floor.py): its model leg against the simulated model
on 127.0.0.1. Its appends reach the model whole and in order even when a write takes only
part of a frame; the model's audio is read back; a dead model counts as a write error."""

from __future__ import annotations

import sys
from pathlib import Path

import gevent

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:       # bench/ is a directory of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from bench.load import floor as floor_module  # noqa: E402
from bench.load.floor import APPEND_BYTES, ModelLeg  # noqa: E402
from relay._ws import append_frame  # noqa: E402
from relay.sim.model.server import SimModel  # noqa: E402

KEY = "sk-floor-test"
SESSION = {"type": "realtime", "output_modalities": ["audio"], "instructions": "Help.",
           "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                     "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}


def _leg(model: SimModel, greeting: str | None = None) -> ModelLeg:
    return ModelLeg(f"{model.url}?model=gpt-realtime", [f"Authorization: Bearer {KEY}"],
                    SESSION, greeting, timeout=5.0)


def _wait(predicate, timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.01)


def test_short_writes_leave_the_rest_to_the_flusher_in_order(monkeypatch):
    real_write, calls = floor_module.os.write, []

    def short_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:7])        # part of the first frame
        if len(calls) == 2:
            raise BlockingIOError                  # never reached: the flusher has the rest
        return real_write(fd, data)

    monkeypatch.setattr(floor_module.os, "write", short_write)
    with SimModel(api_key=KEY) as model:
        leg = _leg(model)
        try:
            session = model.wait_for_sessions(1)[0]
            for k in range(20):                    # 20 appends of 40 ms, while one is partial
                leg.add(bytes([k]) * (APPEND_BYTES // 2), append_frame)
                leg.add(bytes([k]) * (APPEND_BYTES // 2), append_frame)
            _wait(lambda: session.appends == 20)
            assert calls == [len(append_frame(b"\0" * APPEND_BYTES))]    # one os.write only
            assert (leg.appended, leg.write_errors, leg.flushing) == (20, 0, False)
            assert list(session.errors_sent) == []     # every frame whole: no protocol error
            assert session.buffer.take() == b"".join(bytes([k]) * APPEND_BYTES
                                                     for k in range(20))     # in order
            gevent.sleep(0.05)
            assert model.connection_count == 1     # the model kept the connection
        finally:
            leg.close()


def test_the_greeting_comes_back_as_decoded_audio():
    with SimModel(api_key=KEY) as model:
        leg = _leg(model, greeting="Greet the caller.")
        try:
            _wait(lambda: leg.deltas > 0)
            assert leg.audio_bytes > 0
        finally:
            leg.close()


def test_a_dead_model_is_a_write_error_not_a_crash():
    with SimModel(api_key=KEY) as model:
        leg = _leg(model)
        model.wait_for_sessions(1)
    # the model is gone: its socket reset or closed; appends fail, counted, nothing raised
    with gevent.Timeout(5.0):
        while not leg.write_errors:
            leg.add(b"\xff" * APPEND_BYTES, append_frame)
            gevent.sleep(0.01)
    leg.close()
    assert leg.write_errors >= 1
