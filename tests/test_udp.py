"""relay/_udp.pyx (recvmmsg/sendmmsg) and MediaSocket's batched and one-at-a-time paths."""

import socket
import time

import gevent
import pytest

from relay import media as media_module
from relay.media import MediaSocket

udp = pytest.importorskip("relay._udp")


def _pair(family=socket.AF_INET, host="127.0.0.1"):
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind((host, 0))
        s.setblocking(False)
    return a, b


def test_a_batch_goes_out_in_order_and_comes_back_with_its_sender():
    a, b = _pair()
    try:
        receiver, sender = udp.BatchReceiver(a.fileno(), 8, 2048), udp.BatchSender(b.fileno(), 3)
        assert receiver.receive() == []                        # nothing waits: no blocking
        to_a = udp.pack_address(*a.getsockname())
        datagrams = [(bytes([i]) * (i + 1), to_a) for i in range(10)]
        assert sender.send(datagrams) == (10, 0)
        assert sender.calls == 4                               # 3 + 3 + 3 + 1
        got = receiver.receive() + receiver.receive()
        assert [d for d, _ in got] == [d for d, _ in datagrams]
        assert {addr for _, addr in got} == {b.getsockname()}
        assert receiver.receive() == []
    finally:
        a.close()
        b.close()


def test_ipv6_addresses_both_ways():
    try:
        a, b = _pair(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        udp.BatchSender(b.fileno()).send([(b"hi", udp.pack_address("::1", a.getsockname()[1]))])
        assert udp.BatchReceiver(a.fileno()).receive() == [(b"hi", b.getsockname()[:2])]
    finally:
        a.close()
        b.close()


def test_an_oversized_datagram_is_counted_and_dropped_not_cut():
    a, b = _pair()
    try:
        receiver = udp.BatchReceiver(a.fileno(), 4, 100)
        b.sendto(b"x" * 101, a.getsockname())
        b.sendto(b"y" * 100, a.getsockname())
        assert [d for d, _ in receiver.receive()] == [b"y" * 100]
        assert receiver.truncated == 1
    finally:
        a.close()
        b.close()


def test_a_refused_datagram_is_counted_and_the_rest_still_go():
    a, b = _pair()
    try:
        good = udp.pack_address(*a.getsockname())
        too_big = b"z" * 70000                                 # over the UDP maximum
        next_index, failed = udp.BatchSender(b.fileno()).send(
            [(b"1", good), (too_big, good), (b"2", good)])
        assert (next_index, failed) == (3, 1)
        assert [d for d, _ in udp.BatchReceiver(a.fileno()).receive()] == [b"1", b"2"]
    finally:
        a.close()
        b.close()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        udp.BatchReceiver(0, 0)
    with pytest.raises(OSError):
        udp.pack_address("not an address", 1)
    with pytest.raises(OverflowError):
        udp.pack_address("127.0.0.1", 70000)


@pytest.mark.parametrize("batched", [True, False])
def test_media_socket_routes_and_sends_in_both_modes(batched):
    media = MediaSocket("127.0.0.1", 0, 0, batched=batched)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2.0)
    got: list = []
    try:
        assert media.batched is batched
        media.route(peer.getsockname(), lambda data, now: got.append(data))
        media.start()
        for i in range(5):
            peer.sendto(bytes([i]) * 20, (media.host, media.port))
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.sendto(b"who", (media.host, media.port))
        stranger.close()
        with gevent.Timeout(5):
            while len(got) < 5 or media.from_strangers < 1:
                gevent.sleep(0.005)
        assert got == [bytes([i]) * 20 for i in range(5)]
        for i in range(3):
            media.sendto(bytes([i]), peer.getsockname())       # batched: queued until we yield
        gevent.sleep(0)
        assert [peer.recvfrom(100)[0] for _ in range(3)] == [b"\x00", b"\x01", b"\x02"]
        assert media.sent == 3 and media.send_errors == 0
        media.sendto(b"x", ("not-an-ip", 1))                   # counted, nothing raised
        gevent.sleep(0)
        assert media.send_errors == 1
    finally:
        media.close()
        peer.close()



def test_media_socket_counts_the_datagrams_the_kernel_dropped_for_a_full_buffer(monkeypatch):
    """A worker that does not read in time loses caller audio in the kernel, where relay cannot
    see the sequence numbers: the kernel's own count is relay_rtp_socket_overflows, and what
    the buffer kept is still read and routed."""
    monkeypatch.setattr(media_module, "SOCKET_BUFFER", 4096)     # room for a few datagrams
    media = MediaSocket("127.0.0.1", 0, 0)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    got: list = []
    try:
        assert media.overflows == 0
        media.route(peer.getsockname(), lambda data, now: got.append(data))
        for i in range(100):                                     # nobody reads yet
            peer.sendto(bytes([i]) * 172, (media.host, media.port))
        dropped = media.overflows
        assert 0 < dropped < 100
        media.start()
        with gevent.Timeout(5):
            while len(got) < 100 - dropped:
                gevent.sleep(0.005)
        gevent.sleep(0.05)
        assert len(got) == 100 - dropped and media.overflows == dropped
        assert got[0] == bytes([0]) * 172                        # the earliest were kept
    finally:
        media.close()
        peer.close()
    assert media.overflows is None


def _limits() -> int:
    with open("/proc/sys/net/core/rmem_max") as r, open("/proc/sys/net/core/wmem_max") as w:
        return max(int(r.read()), int(w.read()))


def test_a_buffer_capped_by_the_kernel_limit_is_reported_with_the_setting_to_raise(
        monkeypatch, caplog):
    """An unprivileged worker gets at most net.core.rmem_max: it says so at start rather than
    losing caller audio silently at the first pause."""
    monkeypatch.setattr(media_module, "SOCKET_BUFFER", 4 * _limits())
    monkeypatch.setattr(media_module, "_SO_RCVBUFFORCE", -1)     # forcing refused, as it is
    monkeypatch.setattr(media_module, "_SO_SNDBUFFORCE", -1)     # without CAP_NET_ADMIN
    with caplog.at_level("WARNING", logger="relay.media"):
        media = MediaSocket("127.0.0.1", 0, 0)
    media.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("receive buffer" in m and "raise net.core.rmem_max" in m for m in messages)
    assert any("send buffer" in m and "raise net.core.wmem_max" in m for m in messages)


def test_a_privileged_worker_forces_its_buffers_past_the_limit(monkeypatch, caplog):
    asked = 4 * _limits()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, media_module._SO_RCVBUFFORCE, asked)
    except PermissionError:
        pytest.skip("this process may not force socket buffers (no CAP_NET_ADMIN)")
    finally:
        probe.close()
    monkeypatch.setattr(media_module, "SOCKET_BUFFER", asked)
    with caplog.at_level("WARNING", logger="relay.media"):
        media = MediaSocket("127.0.0.1", 0, 0)
    media.close()
    assert not [r for r in caplog.records if "buffer" in r.getMessage()]


# ---- SocketSet (the simulated PBX's sockets) ----------------------------------------------------

def test_socket_set_reads_many_sockets_with_sender_and_arrival():
    import time

    socks = [_pair()[0] for _ in range(3)]
    peer = _pair()[0]
    sset = udp.SocketSet(max_ready=2, per_socket=2)
    try:
        for s in socks:
            sset.add(s.fileno())
        assert sset.receive() == []
        before = time.monotonic()
        for i, s in enumerate(socks):
            for j in range(3):                     # more than per_socket: read over two calls
                peer.sendto(bytes([i, j]), s.getsockname())
        got = []
        for _ in range(10):
            got += sset.receive()
        after = time.monotonic()
        by_fd = {s.fileno(): i for i, s in enumerate(socks)}
        assert sorted((by_fd[fd], data) for fd, data, _, _ in got) == \
            [(i, bytes([i, j])) for i in range(3) for j in range(3)]
        assert {name for _, _, name, _ in got} == {udp.pack_address(*peer.getsockname())}
        assert udp.unpack_address(got[0][2]) == peer.getsockname()
        assert all(before <= t <= after for _, _, _, t in got)
        assert sset.remove(socks[0].fileno()) is True
        assert sset.remove(socks[0].fileno()) is False          # not watched any more
        peer.sendto(b"x", socks[0].getsockname())
        assert sset.receive() == []
    finally:
        sset.close()
        for s in socks + [peer]:
            s.close()


def test_socket_set_sends_from_each_socket_and_reports_refusals():
    a, b = _pair()
    sink = _pair()[0]
    sset = udp.SocketSet()
    try:
        to_sink = udp.pack_address(*sink.getsockname())
        bad = udp.pack_address("0.0.0.0", 0)                    # port 0: refused
        failed = sset.send([(a.fileno(), b"from a", to_sink), (b.fileno(), b"nope", bad),
                            (9999, b"no such fd", to_sink), (b.fileno(), b"from b", to_sink)])
        assert failed == [1, 2]
        got = {sink.recvfrom(100) for _ in range(2)}
        assert got == {(b"from a", a.getsockname()), (b"from b", b.getsockname())}
        assert sset.send([]) == []
    finally:
        sset.close()
        for s in (a, b, sink):
            s.close()


def test_socket_set_errors_and_closing():
    sset = udp.SocketSet()
    with pytest.raises(OSError):
        sset.add(9999)                                          # not a descriptor
    with pytest.raises(ValueError):
        udp.SocketSet(max_ready=0)
    assert sset.fileno() >= 0
    sset.close()
    sset.close()                                                # twice is fine
    assert sset.receive() == [] and sset.remove(1) is False
    with pytest.raises(ValueError):
        sset.fileno()
    with pytest.raises(ValueError):
        sset.add(0)
    assert udp.unpack_address(b"\x00") == ("", 0)


def test_socket_set_ipv6_sender():
    a, b = _pair(socket.AF_INET6, "::1")
    sset = udp.SocketSet()
    try:
        sset.add(a.fileno())
        b.sendto(b"six", a.getsockname()[:2])
        got = []
        for _ in range(10):
            got += sset.receive()
            if got:
                break
            gevent.sleep(0.01)
        assert [(d, udp.unpack_address(n)) for _, d, n, _ in got] == \
            [(b"six", b.getsockname()[:2])]
    finally:
        sset.close()
        a.close()
        b.close()


def _until_the_kernel_stamps_on_arrival(sset, a, b):
    """The kernel turns receive stamping on for the whole machine lazily (in a work queue)
    when the first socket asks: until then a datagram is stamped when it is read. Probe until
    a datagram read 20 ms after it was sent carries an earlier stamp (at most 2 s)."""
    import time

    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        b.sendto(b"probe", a.getsockname())
        time.sleep(0.02)
        read_from = time.monotonic()
        got = sset.receive()
        if got and got[0][3] < read_from:
            return
    pytest.fail("the kernel never stamped a datagram on arrival")


@pytest.mark.parametrize("kernel_stamps", [True, False])
def test_socket_set_arrival_is_the_kernels_queueing_time_not_the_read(kernel_stamps):
    """With kernel stamps a datagram read late still carries the time it arrived (between
    its send and the read); without, the time of the read. Several in one recvmmsg each
    carry their own."""
    import time

    a, b = _pair()
    sset = udp.SocketSet(kernel_stamps=kernel_stamps)
    try:
        sset.add(a.fileno())
        if kernel_stamps:
            _until_the_kernel_stamps_on_arrival(sset, a, b)
        sent = []
        for k in range(3):
            sent.append(time.monotonic())
            b.sendto(b"p%d" % k, a.getsockname())
            time.sleep(0.01)
        time.sleep(0.05)                # read well after they all arrived
        read_from = time.monotonic()
        got = sset.receive()
        assert [d for _, d, _, _ in got] == [b"p0", b"p1", b"p2"]
        arrivals = [arrival for _, _, _, arrival in got]
        if kernel_stamps:
            assert sset.stamped >= 3
            for k in range(3):      # 1 ms: the realtime clock may be slewed against monotonic
                assert sent[k] - 0.001 <= arrivals[k] < (sent[k + 1] if k < 2 else read_from)
        else:
            assert sset.stamped == 0 and all(t >= read_from for t in arrivals)
    finally:
        sset.close()
        a.close()
        b.close()


def test_a_backed_up_socket_is_read_in_slices_not_one_batch_per_turn_of_a_busy_hub():
    """Hundreds of calls ending at once make each turn of the hub long: one recvmmsg batch per
    turn then reads less than the callers send, and the kernel drops their packets for the full
    buffer. A backed-up socket is read in slices of at least two batches per turn."""
    media = MediaSocket("127.0.0.1", 0, 0)
    if not media.batched:
        media.close()
        pytest.skip("recvmmsg is Linux's")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    got: list = []
    turns = [0]
    queued = 20 * media_module.RECEIVE_BATCH

    def busy_neighbour():           # a greenlet with long turns (ARI requests, cleanup...)
        while len(got) < queued:
            turns[0] += 1
            until = time.monotonic() + 0.002
            while time.monotonic() < until:
                pass
            gevent.sleep(0.00001)

    try:
        media.route(peer.getsockname(), lambda data, now: got.append(data))
        for i in range(queued):                                  # nobody reads yet
            peer.sendto(i.to_bytes(2, "big") * 86, (media.host, media.port))
        assert media.overflows == 0
        neighbour = gevent.spawn(busy_neighbour)
        media.start()
        neighbour.join(timeout=10)
        assert len(got) == queued and got[0] == bytes(2) * 86
        assert turns[0] <= queued // (2 * media_module.RECEIVE_BATCH)  # one batch a turn: 20
    finally:
        media.close()
        peer.close()
