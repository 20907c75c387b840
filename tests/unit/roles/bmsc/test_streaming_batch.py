"""
The BM-SC's streaming send path (mbmsd.roles.bmsc.streaming): the packets of
one reactor iteration queued and sent together, each run of equal-size
packets in one sendmsg with UDP GSO (udp(7) UDP_SEGMENT), alone or refused
by the kernel a plain sendto. The datagrams are received on real loopback
sockets and opened with the test's own RFC 3711 receiver
(tests/support/srtp_reference.py) under the MTK of the MTK message, which the MIKEY
parser opens with the MSK.
"""

import errno
import socket
import struct

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from mbmsd import profile
from mbmsd.metrics import Metrics
from mbmsd.protocols import mikey
from mbmsd.roles.bmsc import streaming
from mbmsd.roles.bmsc.streaming import StreamingMetrics, StreamingService, UdpBearer
from mbmsd.storage.records import Msk
from tests.support import srtp_reference as ref
from tests.unit.protocols.test_srtp import packet

SERVICE = "urn:mbmsd:tv"
MSK = Msk(serviceId=SERVICE, keyDomainId=profile.key_domain_id("001", "01"),
          mskId=b"\x00\x07\x00\x01", key=b"\x01" * 16, created=0.0, expires=86400.0)
TAG = ref.TAG_LEN


def kernel_has_gso():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.getsockopt(streaming.SOL_UDP, streaming.UDP_SEGMENT)
        except OSError:
            return False
    return True


class Msks:
    def current(self, serviceId):
        return succeed(MSK)


class Recording:
    """
    A socket that records each send (the sizes its datagrams would have)
    and does it on a real socket, or raises the errors it is told to.
    """

    def __init__(self, real, sendmsgErrors=(), sendtoErrors=(), getsockoptError=None):
        self.real = real
        self.calls = []  # ("sendmsg", segment size, [sizes]) or ("sendto", size)
        self.sendmsgErrors = list(sendmsgErrors)
        self.sendtoErrors = list(sendtoErrors)
        self.getsockoptError = getsockoptError

    def setsockopt(self, *args):
        self.real.setsockopt(*args)

    def getsockopt(self, *args):
        if self.getsockoptError is not None:
            raise OSError(self.getsockoptError, "refused by the test")
        return self.real.getsockopt(*args)

    def sendmsg(self, buffers, ancdata, flags, address):
        [(level, kind, data)] = ancdata
        assert (level, kind) == (socket.SOL_UDP, 103)
        segment = struct.unpack("=H", data)[0]
        self.calls.append(("sendmsg", segment, [len(b) for b in buffers]))
        if self.sendmsgErrors:
            raise OSError(self.sendmsgErrors.pop(0), "refused by the test")
        return self.real.sendmsg(buffers, ancdata, flags, address)

    def sendto(self, data, address):
        self.calls.append(("sendto", len(data)))
        if self.sendtoErrors:
            raise OSError(self.sendtoErrors.pop(0), "refused by the test")
        return self.real.sendto(data, address)


class Transport:
    """What listenUDP hands a DatagramProtocol: here only its socket matters."""

    def __init__(self, sock):
        self.socket = sock

    def write(self, data, address):
        raise AssertionError("the bearer sends with its socket")


class Node:
    """One streaming service with a real UdpBearer sending to loopback sinks."""

    def __init__(self, **recording):
        self.clock = Clock()
        self.media = self._sink()
        self.keys = self._sink()
        self.bearer = UdpBearer("127.0.0.1", self.media.getsockname()[1],
                                self.keys.getsockname()[1], 1, "127.0.0.1")
        self.real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.real.setblocking(False)  # as listenUDP's
        self.sock = Recording(self.real, **recording)
        self.bearer.transport = Transport(self.sock)
        self.bearer.startProtocol()
        self.registry = CollectorRegistry()
        metrics = StreamingMetrics(Metrics("n", self.registry).forRole("bmsc"), [SERVICE])
        self.stream = StreamingService(SERVICE, self.clock, Msks(), self.bearer, metrics,
                                       1000.0, 1000.0, 10 ** 6)
        self.stream.start()
        [message] = self.receive(self.keys, 1)
        delivery = mikey.parse_mtk_message(MSK.key, message)
        self.mtk, self.salt = delivery.mtk, delivery.salt

    @staticmethod
    def _sink():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(10.0)
        return s

    @staticmethod
    def receive(sink, n):
        """C{n} datagrams, waiting for each (loopback delivers them in order)."""
        return [sink.recv(65536) for _ in range(n)]

    def nothingMore(self):
        self.media.setblocking(False)
        try:
            extra = self.media.recv(65536)
        except BlockingIOError:
            extra = None
        self.media.settimeout(10.0)
        return extra is None

    def opened(self, datagrams):
        return [ref.unprotect(self.mtk, self.salt, d) for d in datagrams]

    def value(self, name, **labels):
        self.stream.flushCounts()
        labels.update(node="n", role="bmsc", service=SERVICE)
        return self.registry.get_sample_value(name, labels)

    def close(self):
        self.stream.stop()
        for s in (self.media, self.keys, self.real):
            s.close()


@pytest.fixture
def node():
    nodes = []

    def make(**recording):
        n = Node(**recording)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.close()


def frames(seq, sizes):
    """RTP packets with payloads of C{sizes} octets, distinct bytes each, from C{seq} on."""
    out = []
    for i, size in enumerate(sizes):
        s = seq + i
        out.append(packet(s, bytes((s * 7 + j) & 0xFF for j in range(size))))
    return out


# a video's iterations: frames cut into full packets and a shorter last one, a
# lone packet, shorter ones of equal size, and a run longer than one send takes
ITERATIONS = [
    [1188] * 5 + [377],
    [1188],
    [60, 60, 60, 1188, 1188, 200, 200],
    [900] * 70,
    [100, 1188, 100, 1188, 50],
]


def test_batching_keeps_order_and_bytes(node):
    n = node()
    seq = 1
    for sizes in ITERATIONS:
        plain = frames(seq, sizes)
        seq += len(sizes)
        for p in plain:
            n.stream.packetReceived(p)
        n.clock.advance(0)  # the iteration ends: what is left of the batch is sent
        got = n.receive(n.media, len(plain))
        assert [len(d) for d in got] == [len(p) + TAG for p in plain]
        assert n.opened(got) == plain  # in order, byte for byte
        assert n.nothingMore()
    assert n.value("mbmsd_bmsc_srtp_packets_total") == sum(map(len, ITERATIONS))
    assert n.value("mbmsd_bmsc_srtp_dropped_total", reason="send_error") == 0


def test_packets_wait_for_the_end_of_the_iteration(node):
    n = node()
    plain = frames(1, [500] * 10)
    for p in plain:
        n.stream.packetReceived(p)
    assert len(n.clock.getDelayedCalls()) == 3  # the two MTK loops and one flush
    assert n.nothingMore()
    n.clock.advance(0)
    assert n.opened(n.receive(n.media, 10)) == plain
    assert len(n.clock.getDelayedCalls()) == 2
    n.clock.advance(0)
    assert n.nothingMore()


def test_a_full_batch_leaves_at_once(node):
    n = node()
    plain = frames(1, [400] * 64 + [400])
    for p in plain[:64]:
        n.stream.packetReceived(p)
    assert n.opened(n.receive(n.media, 64)) == plain[:64]  # 64: no wait
    n.stream.packetReceived(plain[64])
    assert n.nothingMore()
    n.clock.advance(0)
    assert n.opened(n.receive(n.media, 1)) == plain[64:]


def test_a_batch_stays_within_one_datagram_of_payload(node):
    n = node()
    plain = frames(1, [1300] * 60)  # 1322 octets each protected: 49 fit in 65 507
    for p in plain:
        n.stream.packetReceived(p)
    assert n.opened(n.receive(n.media, 49)) == plain[:49]
    assert n.nothingMore()
    n.clock.advance(0)
    assert n.opened(n.receive(n.media, 11)) == plain[49:]


def test_stop_sends_what_is_queued(node):
    n = node()
    plain = frames(1, [300, 300, 120])
    for p in plain:
        n.stream.packetReceived(p)
    n.stream.stop()
    assert n.opened(n.receive(n.media, 3)) == plain
    assert n.value("mbmsd_bmsc_srtp_packets_total") == 3
    assert n.clock.getDelayedCalls() == []


@pytest.mark.skipif(not kernel_has_gso(), reason="this kernel has no UDP GSO (Linux 4.18 on)")
def test_runs_of_equal_size_are_one_gso_send(node):
    n = node()
    assert n.bearer.gso
    t = 12 + TAG  # the header and the tag
    first = [1188] * 5 + [377] + [200] + [900] * 60
    second = [1188, 60, 60, 1188]
    for p in frames(1, first):
        n.stream.packetReceived(p)
    n.clock.advance(0)
    for p in frames(100, second):
        n.stream.packetReceived(p)
    n.clock.advance(0)
    assert n.opened(n.receive(n.media, len(first) + len(second))) == frames(1, first) + frames(
        100, second)
    assert n.sock.calls[1:] == [  # the first is the MTK message
        ("sendmsg", 1188 + t, [1188 + t] * 5 + [377 + t]),  # the last may be shorter
        ("sendto", 200 + t),  # alone: a larger one follows
        ("sendmsg", 900 + t, [900 + t] * 57),  # the batch is full at 64 packets
        ("sendmsg", 900 + t, [900 + t] * 3),  # the rest at the end of the iteration
        ("sendmsg", 1188 + t, [1188 + t, 60 + t]),
        ("sendto", 60 + t),
        ("sendto", 1188 + t),
    ]


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP])
def test_gso_refused_for_good_falls_back_to_plain_sends(node, code):
    n = node()
    n.sock.sendmsgErrors = [code]
    n.bearer.gso = True  # as the probe says on a kernel that knows the option
    n.bearer._sendmsg = n.sock.sendmsg
    seq = 1
    for sizes in ([700] * 6, [700] * 6):
        plain = frames(seq, sizes)
        seq += len(sizes)
        for p in plain:
            n.stream.packetReceived(p)
        n.clock.advance(0)
        assert n.opened(n.receive(n.media, 6)) == plain  # nothing lost
    assert not n.bearer.gso
    assert [c[0] for c in n.sock.calls[1:]] == ["sendmsg"] + ["sendto"] * 12  # not retried
    assert n.value("mbmsd_bmsc_srtp_packets_total") == 12
    assert n.value("mbmsd_bmsc_srtp_dropped_total", reason="send_error") == 0


def test_einval_refuses_that_segment_size_and_larger_only(node):
    n = node()
    n.sock.sendmsgErrors = [errno.EINVAL]
    n.bearer.gso = True
    n.bearer._sendmsg = n.sock.sendmsg
    plain = frames(1, [1000] * 3 + [1000] * 3 + [1200] * 2 + [400] * 3)
    for p in plain:
        n.stream.packetReceived(p)
    n.clock.advance(0)
    assert n.opened(n.receive(n.media, len(plain))) == plain
    big = 1000 + TAG + 12
    assert n.sock.calls[1:] == (
        [("sendmsg", big, [big] * 6)] + [("sendto", big)] * 6
        + [("sendto", 1200 + TAG + 12)] * 2 + [("sendmsg", 400 + TAG + 12, [400 + TAG + 12] * 3)])
    assert n.bearer.gso


def test_no_udp_segment_option_means_plain_sends(node):
    n = node(getsockoptError=errno.ENOPROTOOPT)
    assert not n.bearer.gso
    plain = frames(1, [800] * 5)
    for p in plain:
        n.stream.packetReceived(p)
    n.clock.advance(0)
    assert n.opened(n.receive(n.media, 5)) == plain
    assert [c[0] for c in n.sock.calls[1:]] == ["sendto"] * 5


def test_send_errors_are_counted_and_logged_rate_limited(node):
    if not kernel_has_gso():
        pytest.skip("this kernel has no UDP GSO (Linux 4.18 on)")
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        n = node()
        n.sock.sendmsgErrors = [errno.ENOBUFS, errno.ENOBUFS]
        n.sock.sendtoErrors = [errno.EAGAIN]
        plain = frames(1, [600] * 4 + [800] + [900] * 4)
        for p in plain:
            n.stream.packetReceived(p)
        n.clock.advance(0)  # the run of 4 fails, the lone 800 too, then the next run
        assert n.nothingMore()
        assert n.bearer.gso  # a full buffer says nothing of GSO
        assert n.value("mbmsd_bmsc_srtp_dropped_total", reason="send_error") == 9
        assert n.value("mbmsd_bmsc_srtp_packets_total") == 0
        more = frames(10, [600] * 4)
        for p in more:
            n.stream.packetReceived(p)
        n.clock.advance(0)
        assert n.opened(n.receive(n.media, 4)) == more
        assert n.value("mbmsd_bmsc_srtp_packets_total") == 4
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if "send failed" in e.get("log_format", "")]
    assert len(warnings) == 1 and n.bearer.errors == 9
    assert not [e for e in events if "log_failure" in e]  # never a traceback


def test_a_stopped_bearer_counts_send_errors(node):
    n = node()
    n.bearer.stopProtocol()
    for p in frames(1, [100] * 3):
        n.stream.packetReceived(p)
    n.clock.advance(0)
    assert n.value("mbmsd_bmsc_srtp_dropped_total", reason="send_error") == 3
    assert n.nothingMore()
