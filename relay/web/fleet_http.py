"""The fleet web server's requests to the workers' internal APIs.

Owns: one pooled HTTP session (relay.http; no retries, no redirects, and no proxy from the
environment: the workers are on 127.0.0.1) carrying the internal token; each request bounded
twice, by the socket timeouts and by a deadline on the whole exchange, and its answer by
MAX_ANSWER_BYTES; asking several workers at once (one greenlet each, all joined or killed by
the deadline). A worker that does not answer in time, or answers with a refusal of the internal
token, is `WorkerUnreachable` with the reason; any other answer, error statuses included, is
the worker's answer. Knows nothing of what the routes mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import gevent
import requests

from relay.http import pooled_session

if TYPE_CHECKING:
    from relay.fleet.endpoints import WorkerEndpoint

MAX_ANSWER_BYTES = 32 << 20
CONNECT_TIMEOUT_S = 1.0


@dataclass
class WorkerAnswer:
    """What a worker answered: status, body and its content type."""

    status: int
    body: bytes
    content_type: str


class WorkerUnreachable(Exception):
    """The worker gave no usable answer (refused, timed out, too large, refused our token)."""

    def __init__(self, worker: str, reason: str) -> None:
        super().__init__(f"worker {worker} did not answer: {reason}")
        self.worker = worker
        self.reason = reason


class WorkerHttp:
    """request(endpoint, method, path) -> WorkerAnswer; gather(endpoints, method, path)."""

    def __init__(self, token: str, timeout_s: float, pool_size: int = 8) -> None:
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = pooled_session(pool_size, hosts=64)
        self._session.trust_env = False     # never through a proxy named in the environment

    def close(self) -> None:
        self._session.close()

    def request(self, endpoint: "WorkerEndpoint", method: str, path: str,
                body: Optional[bytes] = None, content_type: str = "",
                timeout_s: Optional[float] = None) -> WorkerAnswer:
        """One request to a worker's internal API (path from the root, e.g. /api/calls)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        url = endpoint.web_url.rstrip("/") + path
        response: Optional[requests.Response] = None
        try:
            with gevent.Timeout(timeout):
                response = self._session.request(
                    method, url, data=body, headers=headers, allow_redirects=False,
                    stream=True, timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout))
                data = self._read(endpoint, response)
        except gevent.Timeout:
            raise WorkerUnreachable(endpoint.name, f"no answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            raise WorkerUnreachable(endpoint.name, _reason(exc)) from None
        finally:
            if response is not None:
                response.close()
        if response.status_code == 401:
            raise WorkerUnreachable(endpoint.name, "it refused the fleet's internal token")
        return WorkerAnswer(response.status_code, data,
                            response.headers.get("Content-Type", "application/json"))

    @staticmethod
    def _read(endpoint: "WorkerEndpoint", response: requests.Response) -> bytes:
        chunks, size = [], 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise WorkerUnreachable(endpoint.name,
                                        f"its answer is larger than {MAX_ANSWER_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def gather(self, endpoints: list["WorkerEndpoint"], method: str, path: str
               ) -> dict[str, Union[WorkerAnswer, WorkerUnreachable]]:
        """Ask every endpoint at once; by name, its answer or why there is none. Returns
        within the timeout (plus a little), every greenlet it started ended."""
        def ask(endpoint: "WorkerEndpoint") -> Union[WorkerAnswer, WorkerUnreachable]:
            try:
                return self.request(endpoint, method, path)
            except WorkerUnreachable as exc:
                return exc

        jobs = {ep.name: gevent.spawn(ask, ep) for ep in endpoints}
        gevent.joinall(list(jobs.values()), timeout=self.timeout_s + 0.5)
        results: dict[str, Union[WorkerAnswer, WorkerUnreachable]] = {}
        for name, job in jobs.items():
            if job.dead and job.successful():
                results[name] = job.value
            else:
                job.kill(block=True, timeout=1.0)
                results[name] = WorkerUnreachable(name, "no answer in time")
        return results


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or lost"
    return type(exc).__name__
