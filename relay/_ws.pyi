"""Stub for relay/_ws.pyx: RFC 6455 client framing."""

from typing import Union

OP_CONTINUATION: int
OP_TEXT: int
OP_BINARY: int
OP_CLOSE: int
OP_PING: int
OP_PONG: int

class WebSocketProtocolError(ValueError):
    close_code: int
    def __init__(self, message: str, close_code: int = 1002) -> None: ...

def client_frame(payload: Union[bytes, str, bytearray, memoryview], opcode: int = 1) -> bytes: ...

class FrameReader:
    max_message: int
    def __init__(self, max_message: int = ...) -> None: ...
    @property
    def buffered(self) -> int: ...
    def feed(self, data: bytes) -> list[tuple[int, bytes]]: ...
