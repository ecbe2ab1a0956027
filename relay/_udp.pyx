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
    AF_INET, AF_INET6, EWOULDBLOCK, MSG_DONTWAIT, MSG_TRUNC, ReceiveBuffers, inet_ntop, iovec,
    mmsghdr, ntohs, receive_buffers_free, receive_buffers_init, receive_into, sendmmsg,
    sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t,
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
    cdef ReceiveBuffers b
    cdef dict _addresses
    cdef public unsigned long long truncated
    cdef public unsigned long long calls

    def __cinit__(self, int fd, unsigned int count=64, size_t size=2048):
        self.fd = fd
        receive_buffers_init(&self.b, count, size)
        self._addresses = {}
        self.truncated = 0
        self.calls = 0

    def __dealloc__(self):
        receive_buffers_free(&self.b)

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
        with nogil:
            n = receive_into(&self.b, self.fd, self.b.count)
        self.calls += 1
        if n < 0:
            if errno == EAGAIN or errno == EWOULDBLOCK or errno == EINTR:
                return []
            _socket_error()
        out = []
        for i in range(<unsigned int>n):
            if self.b.messages[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.truncated += 1
                continue
            out.append((PyBytes_FromStringAndSize(self.b.buffers + i * self.b.size,
                                                  self.b.messages[i].msg_len),
                        self._address(&self.b.names[i], self.b.messages[i].msg_hdr.msg_namelen)))
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


# ---- SocketSet: many sockets, one readiness watch (the simulated PBX's externalMedia channels) --

from relay._sockets cimport (
    CLOCK_MONOTONIC, CLOCK_REALTIME, CMSG_SPACE, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
    EPOLLIN, SO_TIMESTAMPNS, SOL_SOCKET, clock_gettime, close, epoll_create1, epoll_ctl,
    epoll_event, epoll_wait, kernel_stamp, receive_control_init, sendto, setsockopt, sockaddr,
    ssize_t, timespec,
)


def unpack_address(bytes name):
    """(host, port) of sockaddr bytes as SocketSet.receive gives them (IPv4 or IPv6)."""
    cdef char text[TEXT_MAX]
    cdef sockaddr_in sin
    cdef sockaddr_in6 sin6
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    if n >= <Py_ssize_t>sizeof(sockaddr_in) and (<sockaddr *>PyBytes_AS_STRING(name)).sa_family \
            == AF_INET:
        memcpy(&sin, PyBytes_AS_STRING(name), sizeof(sin))
        inet_ntop(AF_INET, &sin.sin_addr, text, TEXT_MAX)
        return text.decode("ascii"), ntohs(sin.sin_port)
    if n >= <Py_ssize_t>sizeof(sockaddr_in6) and (<sockaddr *>PyBytes_AS_STRING(name)).sa_family \
            == AF_INET6:
        memcpy(&sin6, PyBytes_AS_STRING(name), sizeof(sin6))
        inet_ntop(AF_INET6, &sin6.sin6_addr, text, TEXT_MAX)
        return text.decode("ascii"), ntohs(sin6.sin6_port)
    return "", 0


cdef class SocketSet:
    """Many non-blocking datagram sockets behind one epoll descriptor.

    `fileno()` is readable while any member socket has a datagram waiting: one io watcher on it
    replaces one per socket. `receive()` reads what the ready sockets hold, and `send()` writes
    datagrams of many sockets in one call (each its own sendto: a sendmmsg serves one socket).
    The set owns its epoll descriptor (close() or garbage collection releases it), never the
    member sockets: remove a socket before closing it. With kernel_stamps, each datagram's
    arrival is the time the kernel queued it (SO_TIMESTAMPNS), not the time this process got
    round to reading it: a measurement of when the sender's packets arrive that this process's
    own scheduling (a busy CPU shared with other load) does not distort. (The kernel turns its
    stamping on lazily when a first socket asks; datagrams queued before that are stamped when
    read, as without kernel_stamps.)
    """

    cdef int epfd
    cdef int max_ready
    cdef epoll_event *ready
    cdef ReceiveBuffers b                # per_socket datagrams per ready socket
    cdef bint kernel_stamps
    cdef public unsigned long long calls
    cdef public unsigned long long stamped      # datagrams whose arrival is the kernel's

    def __cinit__(self, int max_ready=256, unsigned int per_socket=8, size_t size=2048,
                  bint kernel_stamps=True):
        if max_ready < 1 or per_socket < 1 or size < 1:
            raise ValueError("max_ready, per_socket and size must be positive")
        self.epfd = -1
        self.max_ready = max_ready
        self.ready = <epoll_event *>PyMem_Malloc(max_ready * sizeof(epoll_event))
        if not self.ready:
            raise MemoryError()
        receive_buffers_init(&self.b, per_socket, size)
        self.kernel_stamps = kernel_stamps
        if kernel_stamps:
            receive_control_init(&self.b, CMSG_SPACE(sizeof(timespec)) + 64)
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            _socket_error()
        self.calls = 0
        self.stamped = 0

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        PyMem_Free(self.ready)
        receive_buffers_free(&self.b)

    def fileno(self):
        if self.epfd < 0:
            raise ValueError("the socket set is closed")
        return self.epfd

    def close(self):
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def add(self, int fd):
        """Watch socket `fd` for datagrams (OSError if it is not a valid descriptor)."""
        cdef epoll_event event
        cdef int one = 1
        memset(&event, 0, sizeof(event))
        event.events = EPOLLIN
        event.data.fd = fd
        if self.epfd < 0:
            raise ValueError("the socket set is closed")
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &event) < 0:
            _socket_error()
        if self.kernel_stamps:      # refused: that socket's arrivals are read times instead
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one))

    def remove(self, int fd):
        """Stop watching `fd`; False when it was not watched (or is already closed)."""
        cdef epoll_event event
        memset(&event, 0, sizeof(event))
        if self.epfd < 0:
            return False
        return epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &event) == 0

    def receive(self):
        """[(fd, datagram, sockaddr bytes, arrival), ...] of the sockets ready now; [] if none.

        Up to `per_socket` datagrams per ready socket and `max_ready` sockets per call (level
        triggered: what is left is reported again). `arrival` is CLOCK_MONOTONIC in seconds
        (time.monotonic's clock): the kernel's receive stamp with kernel_stamps (carried over
        from CLOCK_REALTIME once per call), else the clock read right after the recvmmsg.
        A socket in error (or closed under us) is skipped; its error is consumed by the read.
        """
        cdef int nready, k, n, fd
        cdef unsigned int i
        cdef timespec now, wall, stamp
        cdef double arrival, read_at, wall_ahead = 0.0
        if self.epfd < 0:
            return []
        with nogil:
            nready = epoll_wait(self.epfd, self.ready, self.max_ready, 0)
        self.calls += 1
        out = []
        if nready <= 0:
            return out
        if self.kernel_stamps:
            clock_gettime(CLOCK_REALTIME, &wall)
            clock_gettime(CLOCK_MONOTONIC, &now)
            wall_ahead = (wall.tv_sec - now.tv_sec) + (wall.tv_nsec - now.tv_nsec) * 1e-9
        for k in range(nready):
            fd = self.ready[k].data.fd
            with nogil:
                n = receive_into(&self.b, fd, self.b.count)
                clock_gettime(CLOCK_MONOTONIC, &now)
            if n <= 0:
                continue
            read_at = now.tv_sec + now.tv_nsec * 1e-9
            for i in range(<unsigned int>n):
                arrival = read_at
                if self.kernel_stamps and kernel_stamp(&self.b.messages[i].msg_hdr, &stamp):
                    # never after the read (clocks stepped between the two readings)
                    arrival = min(read_at, (stamp.tv_sec + stamp.tv_nsec * 1e-9) - wall_ahead)
                    self.stamped += 1
                out.append((fd,
                            PyBytes_FromStringAndSize(self.b.buffers + i * self.b.size,
                                                      self.b.messages[i].msg_len),
                            PyBytes_FromStringAndSize(<char *>&self.b.names[i],
                                                      self.b.messages[i].msg_hdr.msg_namelen),
                            arrival))
        return out

    def send(self, list datagrams):
        """Send [(fd, datagram bytes, sockaddr bytes from pack_address), ...], each from its
        own socket, without blocking; the indices of those the kernel refused ([] when all
        went). A refused datagram is not retried."""
        cdef Py_ssize_t i, total = len(datagrams)
        cdef int fd
        cdef ssize_t n
        cdef bytes payload, name
        failed = []
        for i in range(total):
            fd, payload, name = datagrams[i]
            while True:
                n = sendto(fd, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                           MSG_DONTWAIT, <sockaddr *>PyBytes_AS_STRING(name),
                           <socklen_t>PyBytes_GET_SIZE(name))
                if n >= 0 or errno != EINTR:
                    break
            if n < 0:
                failed.append(i)
        self.calls += 1
        return failed
