# cython: language_level=3
"""The worker's media engine in C: caller datagrams to their call, and the pacer's slot ticks.

Owns the two per-packet and per-frame loops of a worker (Linux):

- `RtpRouter`: the route table from a source address (the call's UNICASTRTP address) to its
  CallMedia, and one recvmmsg(2) whose datagrams go, still in the receive buffers, straight to
  `CallMedia.on_datagram` (into the call's jitter buffer): no bytes object, tuple or Python call
  per packet. A route to anything else than a CallMedia (a test's or a tool's callable) is called
  as handler(data, now).
- `tick_streams`: every stream of one pacer slot ticked in one C loop (`CallMedia.tick` in C;
  its frame goes onto the socket's SendQueue, sent by one sendmmsg per slot).

Python runs only for events: the receive loop's waiting (relay/media.py, through gevent), a
call's events (relay/_media.pyx, CallMedia.tick), a handler that raised.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.long cimport PyLong_FromUnsignedLongLong
from cpython.object cimport PyObject
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from relay._media cimport CallMedia
from relay._clock cimport monotonic
from relay._sockets cimport (
    AF_INET, AF_INET6, EWOULDBLOCK, MSG_TRUNC, ReceiveBuffers, htons, receive_buffers_free,
    receive_buffers_init, receive_into, sockaddr_in, sockaddr_in6, sockaddr_storage,
)

import socket as _socket


cdef object _ipv4_key(uint32_t address, uint16_t port):
    """A route key: both halves as they are in a sockaddr_in (network order)."""
    return PyLong_FromUnsignedLongLong((<uint64_t>address << 16) | port)


cdef object _ipv6_key(const uint8_t* address, uint16_t port):
    cdef char key[18]
    memcpy(key, address, 16)
    memcpy(key + 16, &port, 2)
    return PyBytes_FromStringAndSize(key, 18)


def route_key(host, int port):
    """The key RtpRouter files (host, port) under: an IPv4 or IPv6 literal (ValueError else)."""
    cdef uint32_t address
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    if ":" in host:
        packed = _socket.inet_pton(_socket.AF_INET6, host.partition("%")[0])
        return _ipv6_key(<const uint8_t*>PyBytes_AS_STRING(packed), htons(port))
    try:
        packed = _socket.inet_pton(_socket.AF_INET, host)
    except OSError:
        raise ValueError(f"not an IP address: {host!r}") from None
    memcpy(&address, PyBytes_AS_STRING(packed), 4)
    return _ipv4_key(address, htons(port))


cdef class RtpRouter:
    """pump(now=-1) -> datagrams read by one recvmmsg (0: none waiting), each routed to its call.

    Datagrams from a source without a route are counted (`from_strangers`) and dropped; a
    handler that raises is counted (`handler_errors`) and reported to on_error(exc), and the
    other datagrams of the batch still go to their calls. Buffers are allocated once: `count`
    datagrams of at most `size` bytes (a longer one is truncated by the kernel, counted in
    `truncated` and dropped).
    """

    cdef int fd
    cdef ReceiveBuffers b
    cdef dict _routes                    # route key -> CallMedia or handler(data, now)
    cdef public object on_error
    cdef public unsigned long long received
    cdef public unsigned long long from_strangers
    cdef public unsigned long long truncated
    cdef public unsigned long long handler_errors
    cdef public unsigned long long calls

    def __cinit__(self, int fd, unsigned int count=32, size_t size=2048):
        self.fd = fd
        receive_buffers_init(&self.b, count, size)
        self._routes = {}

    def __dealloc__(self):
        receive_buffers_free(&self.b)

    def route(self, host, int port, handler):
        """Datagrams from (host, port) go to handler: a CallMedia, or handler(data, now)."""
        self._routes[route_key(host, port)] = handler

    def unroute(self, host, int port):
        try:
            self._routes.pop(route_key(host, port), None)
        except ValueError:
            pass

    def __len__(self):
        return len(self._routes)

    cdef object _key(self, sockaddr_storage* name):
        cdef sockaddr_in* sin
        cdef sockaddr_in6* sin6
        if name.ss_family == AF_INET:
            sin = <sockaddr_in*>name
            return _ipv4_key(sin.sin_addr.s_addr, sin.sin_port)
        if name.ss_family == AF_INET6:
            sin6 = <sockaddr_in6*>name
            return _ipv6_key(sin6.sin6_addr.s6_addr, sin6.sin6_port)
        return None

    def pump(self, double now=-1.0):
        """now: the arrival time to give the batch's datagrams (tests); by default the
        monotonic clock read right after recvmmsg."""
        cdef unsigned int i
        cdef int n
        cdef double clock
        cdef PyObject* found
        cdef object handler
        cdef const uint8_t* data
        cdef Py_ssize_t length
        with nogil:
            n = receive_into(&self.b, self.fd, self.b.count)
            clock = monotonic()
        if now < 0:
            now = clock
        self.calls += 1
        if n < 0:
            if errno == EAGAIN or errno == EWOULDBLOCK or errno == EINTR:
                return 0
            import os
            raise OSError(errno, os.strerror(errno))
        self.received += n
        for i in range(<unsigned int>n):
            if self.b.messages[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.truncated += 1
                continue
            found = PyDict_GetItem(self._routes, self._key(&self.b.names[i]))
            if found is NULL:
                self.from_strangers += 1
                continue
            handler = <object>found
            data = <const uint8_t*>(self.b.buffers + i * self.b.size)
            length = self.b.messages[i].msg_len
            try:
                if type(handler) is CallMedia:
                    (<CallMedia>handler).on_datagram(data, length, now)
                else:
                    handler(PyBytes_FromStringAndSize(<const char*>data, length), now)
            except Exception as exc:
                self.handler_errors += 1
                if self.on_error is not None:
                    self.on_error(exc)
        return n


def tick_streams(list streams, double now):
    """Tick every stream of a pacer slot: a CallMedia in C, anything else by its tick(now).

    Returns None, or the [(stream, exception)] of the streams whose tick raised (the others
    were ticked all the same). The list may change during the loop (a call that ends removes
    its stream): a snapshot is ticked.
    """
    cdef tuple snapshot = tuple(streams)
    cdef object stream
    cdef list failed = None
    for stream in snapshot:
        try:
            if type(stream) is CallMedia:
                (<CallMedia>stream).tick(now)
            else:
                stream.tick(now)
        except Exception as exc:
            if failed is None:
                failed = []
            failed.append((stream, exc))
    return failed
