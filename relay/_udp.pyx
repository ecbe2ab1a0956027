# cython: language_level=3
"""Batched UDP datagram I/O on a non-blocking socket: recvmmsg(2) and sendmmsg(2) (Linux).

This module owns the system calls of the worker's RTP socket: one recvmmsg reads every
datagram waiting (up to a batch) and one sendmmsg sends every frame of a pacer slot, instead
of one system call, one gevent wrapper call and one Python tuple dance per packet. It never
blocks and never waits: "would block" is an answer (an empty batch, or the index of the first
datagram not sent), and the caller (relay/media.py) does the waiting through gevent.

Addresses are Python tuples (host, port) as the socket module gives them; the packed sockaddr of
a peer is computed once with `pack_address` and passed back in with every datagram sent.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from relay._sockets cimport (
    AF_INET, AF_INET6, EWOULDBLOCK, MSG_DONTWAIT, MSG_TRUNC, inet_ntop, iovec, mmsghdr, ntohs,
    recvmmsg, sendmmsg, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t,
)

import socket as _socket


cdef enum:
    ADDRESS_CACHE_MAX = 4096
    TEXT_MAX = 64


def pack_address(host, int port):
    """The sockaddr bytes of (host, port), for BatchSender.send (IPv4 or IPv6 literal)."""
    cdef sockaddr_in sin
    cdef sockaddr_in6 sin6
    if ":" in host:
        memset(&sin6, 0, sizeof(sin6))
        sin6.sin6_family = AF_INET6
        packed = _socket.inet_pton(_socket.AF_INET6, host)
        memcpy(&sin6.sin6_addr, PyBytes_AS_STRING(packed), 16)
        sin6.sin6_port = _socket.htons(port)
        return PyBytes_FromStringAndSize(<char *>&sin6, sizeof(sin6))
    memset(&sin, 0, sizeof(sin))
    sin.sin_family = AF_INET
    packed = _socket.inet_pton(_socket.AF_INET, host)
    memcpy(&sin.sin_addr, PyBytes_AS_STRING(packed), 4)
    sin.sin_port = _socket.htons(port)
    return PyBytes_FromStringAndSize(<char *>&sin, sizeof(sin))


cdef class BatchReceiver:
    """receive() -> list of (datagram, (host, port)) read by one recvmmsg; [] when none wait.

    Buffers are allocated once: `count` datagrams of at most `size` bytes per call (a longer
    datagram is truncated by the kernel and counted in `truncated`, then dropped).
    """

    cdef int fd
    cdef unsigned int count
    cdef size_t size
    cdef mmsghdr *messages
    cdef iovec *vectors
    cdef sockaddr_storage *names
    cdef char *buffers
    cdef dict _addresses
    cdef public unsigned long long truncated
    cdef public unsigned long long calls

    def __cinit__(self, int fd, unsigned int count=64, size_t size=2048):
        if count < 1 or size < 1:
            raise ValueError("count and size must be positive")
        self.fd = fd
        self.count = count
        self.size = size
        self.messages = <mmsghdr *>PyMem_Malloc(count * sizeof(mmsghdr))
        self.vectors = <iovec *>PyMem_Malloc(count * sizeof(iovec))
        self.names = <sockaddr_storage *>PyMem_Malloc(count * sizeof(sockaddr_storage))
        self.buffers = <char *>PyMem_Malloc(count * size)
        if not (self.messages and self.vectors and self.names and self.buffers):
            raise MemoryError()
        self._addresses = {}
        self.truncated = 0
        self.calls = 0

    def __dealloc__(self):
        PyMem_Free(self.messages)
        PyMem_Free(self.vectors)
        PyMem_Free(self.names)
        PyMem_Free(self.buffers)

    cdef object _address(self, sockaddr_storage *name, socklen_t length):
        """(host, port) of a peer, from a cache keyed by its raw sockaddr bytes."""
        key = PyBytes_FromStringAndSize(<char *>name, length)
        address = self._addresses.get(key)
        if address is not None:
            return address
        cdef char text[TEXT_MAX]
        cdef sockaddr_in *sin
        cdef sockaddr_in6 *sin6
        if name.ss_family == AF_INET:
            sin = <sockaddr_in *>name
            inet_ntop(AF_INET, &sin.sin_addr, text, TEXT_MAX)
            address = (text.decode("ascii"), ntohs(sin.sin_port))
        elif name.ss_family == AF_INET6:
            sin6 = <sockaddr_in6 *>name
            inet_ntop(AF_INET6, &sin6.sin6_addr, text, TEXT_MAX)
            address = (text.decode("ascii"), ntohs(sin6.sin6_port))
        else:
            address = ("", 0)
        if len(self._addresses) >= ADDRESS_CACHE_MAX:
            self._addresses.clear()
        self._addresses[key] = address
        return address

    def receive(self):
        cdef unsigned int i
        cdef int n
        for i in range(self.count):
            self.vectors[i].iov_base = self.buffers + i * self.size
            self.vectors[i].iov_len = self.size
            memset(&self.messages[i], 0, sizeof(mmsghdr))
            self.messages[i].msg_hdr.msg_name = &self.names[i]
            self.messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self.messages[i].msg_hdr.msg_iov = &self.vectors[i]
            self.messages[i].msg_hdr.msg_iovlen = 1
        with nogil:
            n = recvmmsg(self.fd, self.messages, self.count, MSG_DONTWAIT, NULL)
        self.calls += 1
        if n < 0:
            if errno == EAGAIN or errno == EWOULDBLOCK or errno == EINTR:
                return []
            _socket_error()
        out = []
        for i in range(<unsigned int>n):
            if self.messages[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.truncated += 1
                continue
            out.append((PyBytes_FromStringAndSize(self.buffers + i * self.size,
                                                  self.messages[i].msg_len),
                        self._address(&self.names[i], self.messages[i].msg_hdr.msg_namelen)))
        return out


cdef class BatchSender:
    """send(datagrams, start=0) -> (next, failed): one sendmmsg per `count` datagrams.

    datagrams is a list of (payload bytes, packed sockaddr bytes from pack_address). It sends
    from index `start` on and returns the index of the first datagram not handled (len() when
    all were: less means the socket would block, wait until it is writable and call again from
    there) and how many were dropped because the kernel refused them (counted, not retried).
    """

    cdef int fd
    cdef unsigned int count
    cdef mmsghdr *messages
    cdef iovec *vectors
    cdef public unsigned long long calls

    def __cinit__(self, int fd, unsigned int count=256):
        if count < 1:
            raise ValueError("count must be positive")
        self.fd = fd
        self.count = count
        self.messages = <mmsghdr *>PyMem_Malloc(count * sizeof(mmsghdr))
        self.vectors = <iovec *>PyMem_Malloc(count * sizeof(iovec))
        if not (self.messages and self.vectors):
            raise MemoryError()
        self.calls = 0

    def __dealloc__(self):
        PyMem_Free(self.messages)
        PyMem_Free(self.vectors)

    def send(self, list datagrams, Py_ssize_t start=0):
        cdef Py_ssize_t total = len(datagrams)
        cdef Py_ssize_t index = start
        cdef Py_ssize_t failed = 0
        cdef unsigned int batch, i
        cdef int n
        cdef bytes payload, name
        while index < total:
            batch = <unsigned int>min(total - index, <Py_ssize_t>self.count)
            for i in range(batch):
                payload, name = datagrams[index + i]
                self.vectors[i].iov_base = PyBytes_AS_STRING(payload)
                self.vectors[i].iov_len = PyBytes_GET_SIZE(payload)
                memset(&self.messages[i], 0, sizeof(mmsghdr))
                self.messages[i].msg_hdr.msg_name = PyBytes_AS_STRING(name)
                self.messages[i].msg_hdr.msg_namelen = <socklen_t>PyBytes_GET_SIZE(name)
                self.messages[i].msg_hdr.msg_iov = &self.vectors[i]
                self.messages[i].msg_hdr.msg_iovlen = 1
            # the list (and so every bytes object it holds) stays alive during the call
            with nogil:
                n = sendmmsg(self.fd, self.messages, batch, MSG_DONTWAIT)
            self.calls += 1
            if n < 0:
                if errno == EAGAIN or errno == EWOULDBLOCK:
                    return index, failed
                if errno == EINTR:
                    continue
                # the first datagram of the batch was refused (bad address, too large...):
                # count it and go on with the next
                failed += 1
                index += 1
                continue
            index += n
        return index, failed


cdef void _socket_error() except *:
    import os
    raise OSError(errno, os.strerror(errno))
