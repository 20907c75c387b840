"""
MikeyDelivery's queueing and timing on a Clock: the window of messages in
flight, each message's own retransmission times under the one sweep timer,
the wait after the last send, and shutdown. The UE side is the MIKEY
library's own parser and verification builder (tests/unit/protocols/test_mikey.py checks
those against independent layouts and tshark).
"""

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from mbmsd import profile
from mbmsd.metrics import Metrics
from mbmsd.protocols import mikey
from mbmsd.roles.bmsc import delivery as delivery_module
from mbmsd.roles.bmsc.delivery import MikeyDelivery
from mbmsd.sip.testing import FakeDatagramTransport
from mbmsd.storage.records import Msk

IDI = b"bmsc.home1.net"
KEY_DOMAIN = profile.key_domain_id("001", "01")
MSK = Msk(serviceId="urn:mbmsd:news", keyDomainId=KEY_DOMAIN, mskId=bytes.fromhex("00070001"),
          key=bytes(range(16)), created=0, expires=86400)


def muk(i):
    return bytes([i % 256]) * 32


def btid(i):
    return "ue%d@bsf.home1.net" % (i,)


def host(i):
    return "127.0.1.%d" % (i,)


class Counters:
    def __init__(self):
        self.last = {}

    def nextCounter(self, mukId):
        self.last[mukId] = self.last.get(mukId, 0) + 1
        return succeed(self.last[mukId])


class TimedTransport(FakeDatagramTransport):
    """Records when each datagram went out."""

    def __init__(self, clock):
        super().__init__(port=5000)
        self.clock = clock
        self.times = []

    def write(self, packet, addr=None):
        super().write(packet, addr)
        self.times.append((self.clock.seconds(), addr[0]))


class Rig:
    def __init__(self, counters=None):
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.delivery = MikeyDelivery(self.clock, counters or Counters(), IDI, 4359,
                                      Metrics("n", self.registry).forRole("bmsc"))
        self.udp = TimedTransport(self.clock)
        self.delivery.makeConnection(self.udp)
        self.results = {}

    def push(self, i):
        d = self.delivery.deliver(host(i), btid(i), muk(i), MSK)
        d.addBoth(lambda r, i=i: self.results.__setitem__(i, r))
        return d

    def answer(self, i, n=-1):
        """The UE at host(i) verifies the n-th message sent to it."""
        data = [d for d, addr in self.udp.written if addr[0] == host(i)][n]
        self.delivery.datagramReceived(mikey.build_verification(muk(i), data), (host(i), 4359))

    def sends(self, i):
        return [t for t, h in self.udp.times if h == host(i)]

    def count(self, result):
        return self.registry.get_sample_value(
            "mbmsd_bmsc_mikey_messages_total", {"node": "n", "role": "bmsc", "result": result})


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(delivery_module, "MAX_IN_FLIGHT", 3)


def test_window_holds_pushes_until_a_place_frees(small_window):
    r = Rig()
    for i in range(1, 8):
        r.push(i)
    assert [h for _, h in r.udp.times] == [host(1), host(2), host(3)]
    assert r.delivery.pending == 3
    r.answer(2)
    assert r.results == {2: True}
    assert r.udp.times[-1][1] == host(4)  # first come, first served
    # give-ups free places too: 1, 3 and 4 are never answered
    r.clock.pump([1.0] * 31)
    assert r.results == {1: False, 2: True, 3: False, 4: False}
    assert [h for _, h in r.udp.times[-3:]] == [host(5), host(6), host(7)]
    for i in (5, 6, 7):
        r.answer(i)
    assert r.results == {1: False, 2: True, 3: False, 4: False, 5: True, 6: True, 7: True}
    assert r.delivery.pending == 0
    assert r.clock.getDelayedCalls() == []


def test_each_message_keeps_its_own_schedule_under_one_timer():
    r = Rig()
    starts = {1: 0.0, 2: 0.5, 3: 1.75}  # binary fractions: exact sums on the Clock
    for i, at in starts.items():
        while r.clock.seconds() < at:
            r.clock.advance(0.25)
        r.push(i)
    r.clock.advance(0.75)  # 2.5
    r.answer(3)            # verified before its first retransmission
    r.clock.pump([0.25] * 200)
    offsets = [0.0]
    for wait in profile.verification_waits()[:-1]:
        offsets.append(offsets[-1] + wait)
    for i in (1, 2):
        assert r.sends(i) == [starts[i] + o for o in offsets]
    assert r.sends(3) == [starts[3]]
    assert r.results == {1: False, 2: False, 3: True}
    assert len(r.clock.getDelayedCalls()) == 0


def test_the_last_send_is_awaited_before_giving_up():
    r = Rig()
    r.push(1)
    r.clock.pump(profile.verification_waits()[:-1])
    assert len(r.sends(1)) == profile.RETRANSMIT_MAX_TRIES
    r.clock.advance(profile.verification_waits()[-1] - 0.01)
    r.answer(1)
    assert r.results == {1: True}
    assert r.count("unverified") == 0
    assert r.count("retransmitted") == profile.RETRANSMIT_MAX_TRIES - 1


def test_given_up_after_the_last_wait_and_a_late_answer_is_unmatched():
    r = Rig()
    r.push(1)
    r.clock.pump(profile.verification_waits())
    assert r.results == {1: False}
    assert r.count("unverified") == 1
    r.answer(1)
    assert r.count("verified") == 0 and r.count("bad_verification") == 1


def test_answer_must_come_from_the_address_and_match_exactly():
    r = Rig()
    r.push(1)
    data = r.udp.written[0][0]
    good = mikey.build_verification(muk(1), data)
    r.delivery.datagramReceived(good, ("127.0.9.9", 4359))
    r.delivery.datagramReceived(good[:-1] + bytes([good[-1] ^ 1]), (host(1), 4359))
    r.delivery.datagramReceived(good + b"\x00", (host(1), 4359))
    assert r.count("bad_verification") == 3 and r.results == {}
    r.delivery.datagramReceived(good, (host(1), 4359))
    assert r.results == {1: True}
    # replayed
    r.delivery.datagramReceived(good, (host(1), 4359))
    assert r.count("verified") == 1 and r.count("bad_verification") == 4


def test_retransmissions_are_the_same_message_and_any_send_may_be_answered():
    r = Rig()
    r.push(1)
    r.clock.advance(1.0)
    first, second = [d for d, _ in r.udp.written]
    assert first == second
    r.answer(1, n=0)
    assert r.results == {1: True}


def test_a_message_that_cannot_be_built_fails_alone(small_window):
    r = Rig()
    errors = []
    r.delivery.deliver(host(1), btid(1), b"", MSK).addErrback(errors.append)  # no MUK
    assert errors and errors[0].check(mikey.MikeyError)
    for i in range(2, 5):
        r.push(i)
    assert r.delivery.pending == 3  # the failed one took no place


def test_a_counter_failure_fails_the_push():
    class Broken:
        def nextCounter(self, mukId):
            return fail(RuntimeError("database down"))

    r = Rig(Broken())
    errors = []
    r.delivery.deliver(host(1), btid(1), muk(1), MSK).addErrback(errors.append)
    assert errors[0].check(RuntimeError) and r.udp.written == []


def test_send_errors_are_counted_and_retried():
    r = Rig()
    r.udp.fail_write = True
    r.push(1)
    assert r.count("send_error") == 1 and r.count("sent") == 0
    r.udp.fail_write = False
    r.clock.advance(1.0)
    assert r.count("retransmitted") == 1
    r.answer(1)
    assert r.results == {1: True}


def test_stop_ends_every_push_in_flight_and_waiting(small_window):
    r = Rig()
    for i in range(1, 6):
        r.push(i)
    r.delivery.stopProtocol()
    assert r.results == {i: False for i in range(1, 6)}
    assert r.delivery.pending == 0
    assert r.clock.getDelayedCalls() == []
    r.clock.advance(100)
    assert len(r.udp.written) == 3


def test_one_template_per_msk_is_kept():
    r = Rig()
    other = Msk(serviceId=MSK.serviceId, keyDomainId=KEY_DOMAIN, mskId=bytes.fromhex("00070002"),
                key=bytes(16), created=0, expires=86400)
    r.push(1)
    r.delivery.deliver(host(2), btid(2), muk(2), other)
    one, two = [mikey.parse_msk_message(muk(i), r.udp.written[i - 1][0]) for i in (1, 2)]
    assert (one.msk_id, one.msk) == (MSK.mskId, MSK.key)
    assert (two.msk_id, two.msk) == (other.mskId, other.key)
    assert len(r.delivery._templates) == 2


class SocketTransport(FakeDatagramTransport):
    """A transport with a real UDP socket, as Twisted's udp.Port has (C{.socket})."""

    def __init__(self, sock):
        super().__init__(port=sock.getsockname()[1])
        self.socket = sock


def test_a_real_socket_is_sent_to_directly_and_a_name_is_refused():
    """
    With a real socket the delivery sends on it itself (no Twisted address
    checks per datagram), to an IP address only: a host name is a
    send_error, never a name lookup.
    """
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ue, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ue.bind(("127.0.0.1", 0))
        ue.settimeout(5)
        sock.bind(("127.0.0.1", 0))
        clock = Clock()
        registry = CollectorRegistry()
        delivery = MikeyDelivery(clock, Counters(), IDI, ue.getsockname()[1],
                                 Metrics("n", registry).forRole("bmsc"))
        transport = SocketTransport(sock)
        delivery.makeConnection(transport)
        results = []
        delivery.deliver("127.0.0.1", btid(1), muk(1), MSK).addBoth(results.append)
        data, source = ue.recvfrom(65535)
        assert transport.written == []  # not through the transport's write
        assert mikey.parse_msk_message(muk(1), data).counter == 1
        delivery.datagramReceived(mikey.build_verification(muk(1), data), ("127.0.0.1", 4359))
        assert results == [True]
        delivery.deliver("localhost", btid(2), muk(2), MSK)

        def count(result):
            return registry.get_sample_value("mbmsd_bmsc_mikey_messages_total",
                                             {"node": "n", "role": "bmsc", "result": result})

        assert (count("sent"), count("send_error")) == (1, 1)
        delivery.stopProtocol()
