"""A call's recording over HTTP: one file, whole or a byte range of it, streamed from disk.

Owns: reading a `Range` header (RFC 9110 §14: `bytes=a-b`, `bytes=a-`, `bytes=-n`; anything
else, several ranges included, is ignored and the whole file sent, as the RFC allows), the 206 /
416 / 200 answers with Content-Range and Accept-Ranges, and the file read in chunks in gevent's
thread pool (never on the hub, never whole into memory), closed on every path. The path comes
from the caller (the store's record of the call), never from the request; only a regular
`.wav` file is served. Knows nothing of the store.
"""

from __future__ import annotations

import os
import re
import stat
from typing import BinaryIO, Iterator, Optional

import gevent

from relay.web.http import HttpError, Response

CHUNK = 64 * 1024
RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
WAV_TYPE = "audio/wav"


def byte_range(header: str, size: int) -> Optional[tuple[int, int]]:
    """The (first, last) bytes asked by a Range header, inclusive; None for the whole file
    (no header, or one this server ignores). HttpError(416) when nothing of it is in the file."""
    match = RANGE.match(header) if header else None
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:                      # bytes=-n: the last n bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None                         # invalid: ignored
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(int(last_text), size - 1) if last_text else size - 1


def _unsatisfiable(size: int) -> HttpError:
    return HttpError(416, f"the range asked is not in the recording ({size} bytes)",
                     [("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes")])


class FileChunks:
    """Bytes first..last of an open file, read CHUNK at a time in the thread pool; `close()`
    closes the file (also when never iterated)."""

    def __init__(self, file: BinaryIO, first: int, last: int) -> None:
        self.file = file
        self.first = first
        self.remaining = last - first + 1

    def __iter__(self) -> Iterator[bytes]:
        pool = gevent.get_hub().threadpool
        try:
            pool.apply(self.file.seek, (self.first,))
            while self.remaining > 0:
                data = pool.apply(self.file.read, (min(CHUNK, self.remaining),))
                if not data:        # the file shrank under us: end short (length mismatch)
                    raise OSError("the recording ended before its announced length")
                self.remaining -= len(data)
                yield data
        finally:
            self.close()

    def close(self) -> None:
        self.file.close()


def _open_wav(path: str) -> tuple[BinaryIO, int]:
    """The file open for reading and its size (runs in the thread pool)."""
    file = open(path, "rb")     # noqa: SIM115 - handed to FileChunks, which closes it
    try:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(path)
        return file, info.st_size
    except BaseException:
        file.close()
        raise


def recording_response(path: str, range_header: str, what: str) -> Response:
    """The WAV at path (the store's, never the request's), whole or the range asked; `what`
    names the recording in the 404s ("the recording of call X")."""
    if not path.lower().endswith(".wav"):
        raise HttpError(404, f"{what} is not a WAV file")
    try:
        file, size = gevent.get_hub().threadpool.apply(_open_wav, (path,))
    except FileNotFoundError:
        raise HttpError(404, f"{what} is gone (its file was removed)") from None
    except OSError as exc:
        raise HttpError(404, f"{what} cannot be read ({type(exc).__name__})") from None
    try:
        span = byte_range(range_header, size)
    except HttpError:
        file.close()
        raise
    headers = [("Accept-Ranges", "bytes")]
    if span is None:
        return Response(200, b"", WAV_TYPE, headers, stream=FileChunks(file, 0, size - 1),
                        stream_length=size)
    first, last = span
    headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    return Response(206, b"", WAV_TYPE, headers, stream=FileChunks(file, first, last),
                    stream_length=last - first + 1)
