"""
The BM-SC's streaming services on a Clock (mbmsd.roles.bmsc.streaming):
the MTK schedule (first MTK with the first MSK, repeats, rotations, the MSK
switch and its overlap), the SRTP protection of the content packets, and
the drops. The MTK messages are opened with the MIKEY parser (checked
against RFC 4563's layouts in tests/unit/protocols/test_mikey_rfc4563.py) and the SRTP
packets with the test's own RFC 3711 receiver (tests/support/srtp_reference.py).
"""

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mbmsd import profile
from mbmsd.interfaces import IBearer
from mbmsd.metrics import Metrics
from mbmsd.protocols import mikey, srtp
from mbmsd.roles.bmsc.streaming import StreamingMetrics, StreamingService, UdpBearer
from mbmsd.storage.records import Msk
from tests.support import srtp_reference as ref
from tests.unit.protocols.test_srtp import packet

SERVICE = "urn:mbmsd:tv"
KDID = profile.key_domain_id("001", "01")


def msk(number, created=0.0):
    return Msk(serviceId=SERVICE, keyDomainId=KDID, mskId=bytes([0, 7, 0, number]),
               key=bytes([number]) * 16, created=created, expires=created + 86400)


@implementer(IBearer)
class Bearer:
    def __init__(self):
        self.media = []
        self.keys = []
        self.ok = True

    def sendMedia(self, packets):
        self.media.extend(packets)
        return len(packets) if self.ok else 0

    def sendKey(self, message):
        self.keys.append(message)
        return self.ok


class Msks:
    def __init__(self, current=None):
        self.msk = current
        self.waiting = []

    def current(self, serviceId):
        assert serviceId == SERVICE
        if self.msk is None:
            d = Deferred()
            self.waiting.append(d)
            return d
        return succeed(self.msk)


class Harness:
    def __init__(self, current=None, rotation=10.0, repeat=1.0, maxRate=1000):
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.bearer = Bearer()
        self.msks = Msks(current)
        metrics = StreamingMetrics(Metrics("n", self.registry).forRole("bmsc"), [SERVICE])
        self.stream = StreamingService(SERVICE, self.clock, self.msks, self.bearer, metrics,
                                       rotation, repeat, maxRate)

    def receive(self, data):
        """One content packet, then the end of the reactor iteration (the queued packets sent)."""
        self.stream.packetReceived(data)
        self.clock.advance(0)

    def value(self, name, flush=True, **labels):
        if flush:
            self.stream.flushCounts()
        labels.update(node="n", role="bmsc", service=SERVICE)
        return self.registry.get_sample_value(name, labels)

    def dropped(self, reason):
        return self.value("mbmsd_bmsc_srtp_dropped_total", reason=reason)

    def mtks(self, under):
        """The MTK messages sent so far that open under the MSK C{under}."""
        out = []
        for m in self.bearer.keys:
            if mikey.peek_key_id(m).msk_id == under.mskId:
                out.append(mikey.parse_mtk_message(under.key, m))
        return out


def test_bearer_provides_the_contract():
    verifyObject(IBearer, Bearer())
    verifyObject(IBearer, UdpBearer("239.1.1.1", 5000, 5002, 1, "127.0.0.1"))


def test_no_mtk_before_the_first_msk():
    h = Harness()
    h.stream.start()
    h.receive(packet(1))
    assert h.dropped("no_mtk") == 1 and h.bearer.media == [] and h.bearer.keys == []
    first = msk(1)
    h.msks.msk = first
    h.msks.waiting.pop().callback(first)
    [delivery] = h.mtks(first)
    assert delivery.mtk_id == b"\x00\x01" and len(delivery.salt) == 14
    assert h.value("mbmsd_bmsc_mtk_rotations_total") == 1
    assert h.value("mbmsd_bmsc_mtk_messages_total") == 1
    plain = packet(2, b"video" * 30)
    h.receive(plain)
    [protected] = h.bearer.media
    assert protected != plain
    assert ref.unprotect(delivery.mtk, delivery.salt, protected) == plain
    assert h.value("mbmsd_bmsc_srtp_packets_total") == 1


def test_repeats_and_rotations():
    first = msk(1)
    h = Harness(first, rotation=10.0, repeat=1.0)
    h.stream.start()
    for _ in range(9):
        h.clock.advance(1.0)
    sent = h.mtks(first)
    assert len(sent) == 10  # at once, then every second
    assert {d.mtk_id for d in sent} == {b"\x00\x01"}
    counters = [d.counter for d in sent]
    assert counters == sorted(set(counters))  # strictly growing (RFC 3830 6.6)
    h.clock.advance(1.0)  # t = 10: rotation
    after = h.mtks(first)[10:]
    assert [d.mtk_id for d in after] == [b"\x00\x02", b"\x00\x02"]  # the repeat and the rotation
    assert h.value("mbmsd_bmsc_mtk_rotations_total") == 2
    new = after[-1]
    h.receive(packet(4))  # announced, not yet in use (MTK_SWITCH_DELAY)
    assert ref.unprotect(sent[0].mtk, sent[0].salt, h.bearer.media[-1]) == packet(4)
    h.clock.advance(profile.MTK_SWITCH_DELAY)
    plain = packet(5)
    h.receive(plain)
    assert ref.unprotect(new.mtk, new.salt, h.bearer.media[-1]) == plain
    assert ref.unprotect(sent[0].mtk, sent[0].salt, h.bearer.media[-1]) is None
    h.stream.stop()
    n = len(h.bearer.keys)
    h.clock.advance(30)
    assert len(h.bearer.keys) == n


def test_counter_floor_after_a_restart_with_the_same_msk():
    h = Harness(msk(1, created=0.0))
    h.clock.advance(50.0)
    h.stream.start()
    [d] = h.mtks(h.msks.msk)
    assert d.counter >= 50 * profile.MTK_COUNTER_RATE


def test_msk_rotation_sends_under_both_during_the_overlap():
    old, new = msk(1), msk(2, created=5.0)
    h = Harness(old, rotation=1000.0, repeat=1.0)
    h.stream.start()
    h.clock.advance(5.0)
    h.msks.msk = new
    h.clock.advance(1.0)
    [under_new] = h.mtks(new)
    assert under_new.mtk_id == b"\x00\x01"  # the same MTK, now under the new MSK
    assert under_new.mtk == h.mtks(old)[-1].mtk
    assert h.mtks(old)[-1].counter > h.mtks(old)[-2].counter
    h.clock.pump([1.0] * int(profile.MSK_OVERLAP))
    n_old = len(h.mtks(old))
    h.clock.pump([1.0] * 3)
    assert len(h.mtks(old)) == n_old  # the overlap is over
    assert len(h.mtks(new)) == 1 + int(profile.MSK_OVERLAP) + 3


@pytest.mark.parametrize("data,reason", [
    (b"\x80\x60", "malformed"),
    (b"\x00" * 40, "malformed"),
    (packet(1, b"x" * srtp.MAX_RTP_SIZE), "too_large"),
])
def test_bad_content_is_dropped_and_counted(data, reason):
    h = Harness(msk(1))
    h.stream.start()
    h.receive(data)
    assert h.dropped(reason) == 1 and h.bearer.media == []


def test_a_flooding_source_is_bounded_per_second():
    h = Harness(msk(1), maxRate=50)
    h.stream.start()
    for i in range(80):
        h.receive(packet(i))
    assert len(h.bearer.media) == 50 and h.dropped("rate") == 30
    h.clock.advance(1.0)
    h.receive(packet(100))
    assert len(h.bearer.media) == 51


def test_send_errors_are_counted():
    h = Harness(msk(1))
    h.stream.start()
    h.bearer.ok = False
    h.receive(packet(1))
    assert h.dropped("send_error") == 1
    assert h.value("mbmsd_bmsc_srtp_packets_total") == 0


def test_no_packet_under_a_new_mtk_before_its_message():
    """
    The MSK read of a rotation is asynchronous (storage): the new MTK is
    announced when it is done, and used MTK_SWITCH_DELAY after that.
    """
    first = msk(1)
    h = Harness(first, rotation=10.0, repeat=100.0)
    h.stream.start()
    [old] = h.mtks(first)
    h.msks.msk = None  # the next MSK read waits
    h.clock.advance(10.0)
    h.receive(packet(1))
    assert ref.unprotect(old.mtk, old.salt, h.bearer.media[-1]) == packet(1)
    h.msks.msk = first
    h.msks.waiting.pop().callback(first)
    new = h.mtks(first)[-1]
    assert new.mtk_id == b"\x00\x02"
    h.receive(packet(2))
    assert ref.unprotect(old.mtk, old.salt, h.bearer.media[-1]) == packet(2)
    h.clock.advance(profile.MTK_SWITCH_DELAY)
    h.receive(packet(2))
    assert ref.unprotect(new.mtk, new.salt, h.bearer.media[-1]) == packet(2)


# --- the config keys of a streaming [[bmsc.service]] --------------------------


def load(tmp_path, service):
    from mbmsd.nodeconfig import load_config

    path = tmp_path / "node.toml"
    path.write_text('[node]\nhome_domain = "home1.net"\nroles = ["bsf", "bmsc"]\n'
                    '[storage]\nbackend = "memory"\n[bmsc]\n'
                    '[[bmsc.service]]\nid = "urn:mbmsd:tv"\n%s\n' % (service,))
    return str(path), load_config([str(path)])


def config_errors(tmp_path, service):
    from mbmsd.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load(tmp_path, service)
    return str(tmp_path / "node.toml"), e.value.lines


def test_streaming_keys_and_defaults(tmp_path):
    _, config = load(tmp_path, 'media_source = "127.0.0.1:5004"\nbearer = "239.1.2.3:5000"')
    [s] = config["bmsc"]["service"]
    assert (s["media_source"], s["bearer"]) == (("127.0.0.1", 5004), ("239.1.2.3", 5000))
    assert (s["bearer_key_port"], s["bearer_ttl"], s["bearer_interface"]) == (None, 1, None)
    assert (s["mtk_rotation"], s["mtk_repeat"], s["max_packet_rate"]) == (60.0, 1.0, 5000)
    _, config = load(tmp_path, "")
    assert config["bmsc"]["service"][0]["bearer"] is None  # a download service


@pytest.mark.parametrize("service,key,words", [
    ('bearer = "239.1.2.3:5000"', "bmsc.service[0].media_source", "both"),
    ('media_source = "127.0.0.1:5004"', "bmsc.service[0].media_source", "both"),
    ('media_source = "127.0.0.1"\nbearer = "239.1.2.3:5000"', "bmsc.service[0].media_source",
     "port"),
    ('media_source = "127.0.0.1:1"\nbearer = "[::1]:5000"', "bmsc.service[0].bearer", "IPv4"),
    ('media_source = "x:1"\nbearer = "239.1.2.3:5000"', "bmsc.service[0].media_source", "IP"),
    ('media_source = "127.0.0.1:1"\nbearer = "239.1.2.3:5000"\nbearer_ttl = 0',
     "bmsc.service[0].bearer_ttl", ">= 1"),
    ('media_source = "127.0.0.1:1"\nbearer = "239.1.2.3:5000"\nmtk_repeat = 30\n'
     'mtk_rotation = 10', "bmsc.service[0].mtk_repeat", "mtk_rotation"),
])
def test_streaming_key_errors_name_the_key(tmp_path, service, key, words):
    path, lines = config_errors(tmp_path, service)
    mine = [x for x in lines if x.startswith("%s: %s: " % (path, key))]
    assert len(mine) == 1, lines
    assert words in mine[0]


def test_packet_counts_reach_the_metrics_with_each_mtk_message():
    h = Harness(msk(1), repeat=1.0)
    h.stream.start()
    h.receive(packet(1))
    h.receive(b"junk")
    forwarded = "mbmsd_bmsc_srtp_packets_total"
    assert h.value(forwarded, flush=False) == 0
    h.clock.advance(1.0)  # the repeat
    assert h.value(forwarded, flush=False) == 1
    assert h.value("mbmsd_bmsc_srtp_dropped_total", flush=False, reason="malformed") == 1
    h.receive(packet(2))
    h.stream.stop()
    assert h.value(forwarded, flush=False) == 2


def test_a_restarted_source_gets_a_new_mtk_not_the_same_keystream():
    """RFC 3711 9.1: an index is never protected twice under one key."""
    h = Harness(msk(1), rotation=1000.0, repeat=1000.0)
    h.stream.start()
    for seq in (1, 2, 3):
        h.receive(packet(seq))
    h.receive(packet(1, b"another payload"))  # the source starts again
    assert h.dropped("index_reused") == 1 and len(h.bearer.media) == 3
    [_, second] = h.mtks(h.msks.msk)
    assert second.mtk_id == b"\x00\x02"
    h.clock.advance(profile.MTK_SWITCH_DELAY)
    h.receive(packet(1, b"another payload"))
    assert ref.unprotect(second.mtk, second.salt, h.bearer.media[-1]) == packet(1, b"another payload")
