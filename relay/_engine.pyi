"""Stub for relay/_engine.pyx: the worker's media engine in C (Linux)."""

from typing import Any, Callable, Optional

def route_key(host: str, port: int) -> Any:
    """The key RtpRouter files (host, port) under: an IPv4 or IPv6 literal (ValueError else)."""

class RtpRouter:
    on_error: Optional[Callable[[BaseException], None]]
    received: int
    from_strangers: int
    truncated: int
    handler_errors: int
    calls: int
    def __init__(self, fd: int, count: int = 32, size: int = 2048) -> None: ...
    def __len__(self) -> int: ...
    def route(self, host: str, port: int, handler: Any) -> None:
        """Datagrams from (host, port) go to handler: a CallMedia, or handler(data, now)."""
    def unroute(self, host: str, port: int) -> None: ...
    def pump(self, now: float = -1.0) -> int:
        """Datagrams read by one recvmmsg (0: none waiting), each routed to its call."""

def tick_streams(streams: list, now: float) -> Optional[list[tuple[Any, BaseException]]]:
    """Tick every stream of a pacer slot; the (stream, exception) of those that raised."""
