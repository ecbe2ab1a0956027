"""Dashboard clients in a process of their own, for tests/test_web_load.py: N threads, each an
event-WebSocket client that reads and counts everything (without parsing JSON), so that what the
clients cost lands on another process, as a browser's would, not on the relay measured.

Usage: python tests/dashboard_readers.py WS_URL N CALLS. Prints "connected" once all N are
connected; on SIGTERM, waits (up to 10 s) until every reader has seen CALLS calls end, then
prints one line per reader: "reader {"messages", "ended_calls", "transcripts"}" and exits.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import websocket


class Reader(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.ws = websocket.create_connection(url, timeout=120, skip_utf8_validation=True)
        self.messages = 0
        self.ended_calls = 0
        self.transcripts = 0

    def run(self) -> None:
        try:
            while True:
                text = self.ws.recv()
                self.messages += 1
                head = text[:40]
                if head.startswith('{"type":"transcript"'):
                    self.transcripts += 1
                elif head.startswith('{"type":"call"') and '"state":"ended"' in text:
                    self.ended_calls += 1
        except (websocket.WebSocketException, OSError):
            pass

    def figures(self) -> dict:
        return {"messages": self.messages, "ended_calls": self.ended_calls,
                "transcripts": self.transcripts}


def main(url: str, count: int, calls: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    readers = [Reader(url) for _ in range(count)]
    for reader in readers:
        reader.start()
    print("connected", flush=True)
    while not stop.wait(0.2):
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(r.ended_calls < calls for r in readers):
        time.sleep(0.05)
    for reader in readers:
        print("reader", json.dumps(reader.figures()), flush=True)
        reader.ws.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
