"""A simulated model with one raw WebSocket client past its session.created (the frame tests)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import ujson
import websocket

from relay.sim.model import SimModel


@contextlib.contextmanager
def sim_model_socket(key: str) -> Iterator[tuple[SimModel, websocket.WebSocket]]:
    """(the model, a connected websocket-client socket that has read session.created)."""
    with SimModel(api_key=key) as model:
        conn = websocket.create_connection(f"{model.url}?model=gpt-realtime", timeout=10,
                                           header=[f"Authorization: Bearer {key}"])
        try:
            assert ujson.loads(conn.recv())["type"] == "session.created"
            yield model, conn
        finally:
            conn.close()
