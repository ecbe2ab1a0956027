# cython: language_level=3
"""The simulated model's WebSocket socket I/O after the upgrade, in C (Linux).

Owns: reading the client frames of many TCP connections through one epoll descriptor
(`StreamSet`: one io watcher and one greenlet serve every connection, instead of one reader
greenlet woken per message), splitting each connection's bytes into frames (RFC 6455 section
5.2: 7-, 16- and 64-bit lengths, masked or not, partial frames kept until complete), unmasking
them, and recognising an append in the compact shape (relay.sim._sim_audio.append_audio) so its
audio is handed over already decoded; and writing a server text frame without blocking
(`send_text`). Message assembly (fragments, pings, close frames, UTF-8) is the caller's:
relay/sim/model/reader.py.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset

from relay._sockets cimport (
    EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLIN, EWOULDBLOCK, MSG_DONTWAIT, MSG_NOSIGNAL,
    close, epoll_create1, epoll_ctl, epoll_event, epoll_wait, recv, send, ssize_t,
)

from relay.sim._sim_audio import append_audio

import os as _os

# what a frame tuple's second item says, besides a frame's opcode (0..15)
APPEND = -1        # a whole text frame that is an append in the compact shape: data is its audio
END = -2           # the connection ended (EOF, reset, read error); it is no longer watched
TOO_LARGE = -3     # a frame longer than the limit: nothing of it was read; no longer watched
RESERVED = -4      # a frame with reserved bits set; no longer watched

cdef enum:
    READS_PER_SOCKET = 16       # reads of one ready socket per poll (fairness; level triggered)


cdef class _Stream:
    cdef object key
    cdef bytearray buf
    cdef unsigned long long max_frame


cdef class StreamSet:
    """Many non-blocking TCP sockets behind one epoll descriptor, read as WebSocket frames.

    `fileno()` is readable while any member has bytes waiting. `poll()` reads every ready
    member and returns its complete frames as (key, kind, fin, data) tuples, in order: kind is
    the frame's opcode with data its unmasked payload (bytes), or APPEND with data the decoded
    audio, or END / TOO_LARGE / RESERVED with data None, after which the member is dropped.
    The set owns its epoll descriptor, never the sockets: remove a socket before closing it.
    """

    cdef int epfd
    cdef int max_ready
    cdef size_t read_size
    cdef epoll_event *ready
    cdef char *scratch
    cdef dict streams

    def __cinit__(self, int max_ready=256, size_t read_size=65536):
        if max_ready < 1 or read_size < 16:
            raise ValueError("max_ready must be positive and read_size at least 16")
        self.epfd = -1
        self.max_ready = max_ready
        self.read_size = read_size
        self.streams = {}
        self.ready = <epoll_event *>PyMem_Malloc(max_ready * sizeof(epoll_event))
        self.scratch = <char *>PyMem_Malloc(read_size)
        if not (self.ready and self.scratch):
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, _os.strerror(errno))

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        PyMem_Free(self.ready)
        PyMem_Free(self.scratch)

    def fileno(self):
        if self.epfd < 0:
            raise ValueError("the stream set is closed")
        return self.epfd

    def close(self):
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        self.streams.clear()

    def __len__(self):
        return len(self.streams)

    def add(self, int fd, key, initial=b"", unsigned long long max_frame=1 << 20):
        """Watch socket `fd` (non-blocking) for the frames of `key`; `initial`: bytes already
        read from it (after the HTTP upgrade). Returns the frames complete in `initial`."""
        cdef epoll_event event
        cdef _Stream stream
        if self.epfd < 0:
            raise ValueError("the stream set is closed")
        if fd in self.streams:
            raise ValueError(f"socket {fd} is watched already")
        stream = _Stream()
        stream.key = key
        stream.buf = bytearray(initial)
        stream.max_frame = max_frame
        out = []
        if _split(stream, out):
            return out      # the initial bytes hold a bad frame: never watched
        memset(&event, 0, sizeof(event))
        event.events = EPOLLIN
        event.data.fd = fd
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &event) < 0:
            raise OSError(errno, _os.strerror(errno))
        self.streams[fd] = stream
        return out

    def remove(self, int fd):
        """Stop watching `fd`; False when it was not watched."""
        cdef epoll_event event
        if self.streams.pop(fd, None) is None:
            return False
        memset(&event, 0, sizeof(event))
        if self.epfd >= 0:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &event)
        return True

    def poll(self):
        """The frames of every member ready now ([] when none): see the class docstring."""
        cdef int nready, k, fd, reads
        cdef ssize_t n
        cdef _Stream stream
        cdef Py_ssize_t size
        cdef bint ended
        out = []
        if self.epfd < 0:
            return out
        with nogil:
            nready = epoll_wait(self.epfd, self.ready, self.max_ready, 0)
        for k in range(nready):
            fd = self.ready[k].data.fd
            stream = self.streams.get(fd)
            if stream is None:
                continue
            ended = False
            for reads in range(READS_PER_SOCKET):
                with nogil:
                    n = recv(fd, self.scratch, self.read_size, MSG_DONTWAIT)
                if n < 0:
                    if errno == EINTR:
                        continue
                    ended = errno != EAGAIN and errno != EWOULDBLOCK
                    break
                if n == 0:
                    ended = True
                    break
                size = PyByteArray_GET_SIZE(stream.buf)
                PyByteArray_Resize(stream.buf, size + n)
                memcpy(PyByteArray_AS_STRING(stream.buf) + size, self.scratch, n)
                if <size_t>n < self.read_size:
                    break
            if _split(stream, out):
                self.remove(fd)
            elif ended:
                out.append((stream.key, END, 0, None))
                self.remove(fd)
        return out


cdef bint _split(_Stream stream, list out) except -1:
    """Append the complete frames of stream.buf to out and drop their bytes; True when a bad
    frame ended the stream (its tuple appended)."""
    cdef const uint8_t *p = <const uint8_t *>PyByteArray_AS_STRING(stream.buf)
    cdef Py_ssize_t n = PyByteArray_GET_SIZE(stream.buf), off = 0, header, i
    cdef uint64_t length
    cdef int opcode, fin, masked, short_len
    cdef const uint8_t *key
    cdef uint8_t *dst
    cdef const uint8_t *src
    cdef bint bad = False
    while n - off >= 2:
        if p[off] & 0x70:
            out.append((stream.key, RESERVED, 0, None))
            bad = True
            break
        opcode = p[off] & 0x0F
        fin = p[off] >> 7
        masked = p[off + 1] & 0x80
        short_len = p[off + 1] & 0x7F
        if short_len == 126:
            header = 4
            if n - off < header:
                break
            length = (<uint64_t>p[off + 2] << 8) | p[off + 3]
        elif short_len == 127:
            header = 10
            if n - off < header:
                break
            length = 0
            for i in range(8):
                length = (length << 8) | p[off + 2 + i]
        else:
            header = 2
            length = short_len
        if length > stream.max_frame:
            out.append((stream.key, TOO_LARGE, 0, None))
            bad = True
            break
        if masked:
            header += 4
        if <uint64_t>(n - off) < header + length:
            break
        payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
        dst = <uint8_t *>PyBytes_AS_STRING(payload)
        src = p + off + header
        if masked:
            key = src - 4
            for i in range(<Py_ssize_t>length):
                dst[i] = src[i] ^ key[i & 3]
        else:
            memcpy(dst, src, <size_t>length)
        off += header + <Py_ssize_t>length
        if opcode == 1 and fin:
            audio = append_audio(payload)
            if audio is not None:
                out.append((stream.key, APPEND, 1, audio))
                continue
        out.append((stream.key, opcode, fin, payload))
    if off:
        del stream.buf[:off]
    return bad


def text_frame(payload):
    """A server's unfragmented, unmasked text frame carrying `payload` (bytes or str)."""
    cdef bytes raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), header = 2 if n < 126 else (4 if n < 65536 else 10)
    cdef Py_ssize_t i
    frame = PyBytes_FromStringAndSize(NULL, header + n)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(frame)
    dst[0] = 0x81
    if n < 126:
        dst[1] = <uint8_t>n
    elif n < 65536:
        dst[1] = 126
        dst[2] = <uint8_t>(n >> 8)
        dst[3] = <uint8_t>n
    else:
        dst[1] = 127
        for i in range(8):
            dst[2 + i] = <uint8_t>((<uint64_t>n) >> (8 * (7 - i)))
    memcpy(dst + header, PyBytes_AS_STRING(raw), n)
    return frame


def send_nowait(int fd, bytes data):
    """Write `data` to socket `fd` without blocking: the bytes not written (b"" when all were,
    all of them when the socket would block). OSError when the connection is broken."""
    cdef Py_ssize_t total = PyBytes_GET_SIZE(data), done = 0
    cdef ssize_t n
    cdef const char *p = PyBytes_AS_STRING(data)
    while done < total:
        with nogil:
            n = send(fd, p + done, total - done, MSG_DONTWAIT | MSG_NOSIGNAL)
        if n < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN or errno == EWOULDBLOCK:
                break
            raise OSError(errno, _os.strerror(errno))
        done += n
    if done == 0:
        return data
    return data[done:]
