"""C declarations of the socket system calls and structures relay's extensions use (Linux):
recvmmsg(2), sendmmsg(2), sendto(2), epoll(7), sockaddr_in/in6, inet_ntop, clock_gettime.
cimported by relay/_udp.pyx (batched UDP I/O, the simulated PBX's SocketSet) and
relay/_engine.pyx (the worker's media engine); recv(2)/send(2) by relay/sim/_ws_reader.pyx (the
simulated model's WebSocket reads and writes)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef extern from "<errno.h>":
    int EWOULDBLOCK


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct iovec:
        void *iov_base
        size_t iov_len

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct timespec:
        long tv_sec
        long tv_nsec

    int recvmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags, timespec *timeout)
    int sendmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags)
    int MSG_DONTWAIT
    int MSG_TRUNC
    int AF_INET
    int AF_INET6


cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct in6_addr:
        uint8_t s6_addr[16]

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    uint16_t ntohs(uint16_t)
    uint16_t htons(uint16_t)


cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)


cdef extern from "<time.h>" nogil:
    int CLOCK_MONOTONIC
    int clock_gettime(int clock_id, timespec *tp)


cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data:
        void *ptr
        int fd
        uint32_t u32

    struct epoll_event:
        uint32_t events
        epoll_data data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CLOEXEC
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLLIN


cdef extern from "<unistd.h>" nogil:
    int close(int fd)


cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t


cdef extern from "<sys/socket.h>" nogil:
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr,
                   socklen_t addr_len)


cdef extern from "<sys/socket.h>" nogil:
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    cmsghdr *CMSG_FIRSTHDR(msghdr *message)
    cmsghdr *CMSG_NXTHDR(msghdr *message, cmsghdr *header)
    unsigned char *CMSG_DATA(cmsghdr *header)
    size_t CMSG_SPACE(size_t length)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length)
    int SOL_SOCKET
    int SO_TIMESTAMPNS          # the kernel's receive time of each datagram (CLOCK_REALTIME)
    int SCM_TIMESTAMPNS


cdef extern from "<time.h>" nogil:
    int CLOCK_REALTIME


cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int MSG_NOSIGNAL


# ---- receive buffers for recvmmsg, shared by relay/_udp.pyx and relay/_engine.pyx ----------

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy, memset


cdef struct ReceiveBuffers:
    unsigned int count           # datagrams per recvmmsg
    size_t size                  # bytes per datagram (a longer one comes truncated: MSG_TRUNC)
    mmsghdr *messages
    iovec *vectors
    sockaddr_storage *names
    char *buffers
    char *control                # per datagram control_size bytes (receive_control_init)
    size_t control_size


cdef inline int receive_buffers_init(ReceiveBuffers *b, unsigned int count,
                                     size_t size) except -1:
    """Allocate `count` datagram buffers of `size` bytes (free them with receive_buffers_free,
    which is safe on a part-allocated or zeroed struct)."""
    if count < 1 or size < 1:
        raise ValueError("count and size must be positive")
    b.count = count
    b.size = size
    b.control = NULL
    b.control_size = 0
    b.messages = <mmsghdr *>PyMem_Malloc(count * sizeof(mmsghdr))
    b.vectors = <iovec *>PyMem_Malloc(count * sizeof(iovec))
    b.names = <sockaddr_storage *>PyMem_Malloc(count * sizeof(sockaddr_storage))
    b.buffers = <char *>PyMem_Malloc(count * size)
    if not (b.messages and b.vectors and b.names and b.buffers):
        raise MemoryError()
    return 0


cdef inline void receive_buffers_free(ReceiveBuffers *b) noexcept:
    PyMem_Free(b.messages)
    PyMem_Free(b.vectors)
    PyMem_Free(b.names)
    PyMem_Free(b.buffers)
    PyMem_Free(b.control)
    b.control = NULL
    b.messages = NULL
    b.vectors = NULL
    b.names = NULL
    b.buffers = NULL


cdef inline int receive_into(ReceiveBuffers *b, int fd, unsigned int count) noexcept nogil:
    """One recvmmsg of up to `count` (<= b.count) datagrams from fd, never waiting: the number
    read, or -1 with errno set (EAGAIN: none waiting)."""
    cdef unsigned int i
    for i in range(count):
        b.vectors[i].iov_base = b.buffers + i * b.size
        b.vectors[i].iov_len = b.size
        memset(&b.messages[i], 0, sizeof(mmsghdr))
        b.messages[i].msg_hdr.msg_name = &b.names[i]
        b.messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
        b.messages[i].msg_hdr.msg_iov = &b.vectors[i]
        b.messages[i].msg_hdr.msg_iovlen = 1
        if b.control != NULL:
            b.messages[i].msg_hdr.msg_control = b.control + i * b.control_size
            b.messages[i].msg_hdr.msg_controllen = b.control_size
    return recvmmsg(fd, b.messages, count, MSG_DONTWAIT, NULL)


cdef inline int receive_control_init(ReceiveBuffers *b, size_t size) except -1:
    """Give each datagram `size` bytes of ancillary data (a kernel timestamp needs
    CMSG_SPACE(sizeof(timespec)))."""
    b.control = <char *>PyMem_Malloc(b.count * size)
    if not b.control:
        raise MemoryError()
    b.control_size = size
    return 0


cdef inline bint kernel_stamp(msghdr *message, timespec *stamp) noexcept nogil:
    """The SCM_TIMESTAMPNS stamp of a datagram received with its control buffer: True and
    `stamp` set (CLOCK_REALTIME), False when it has none."""
    cdef cmsghdr *header = CMSG_FIRSTHDR(message)
    while header != NULL:
        if header.cmsg_level == SOL_SOCKET and header.cmsg_type == SCM_TIMESTAMPNS:
            memcpy(stamp, CMSG_DATA(header), sizeof(timespec))
            return True
        header = CMSG_NXTHDR(message, header)
    return False
