"""
The UE's view of a streaming service on a Clock (mbmsd.ue.watch): MTK
messages opened with the MSK their Key ID names, forged and replayed ones
ignored and counted, SRTP packets decrypted with the current MTK (the
previous one only during profile.MTK_OVERLAP), nothing without the MSK.
"""

import struct

from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mbmsd import profile
from mbmsd.interfaces import IMediaSink
from mbmsd.protocols import mikey, srtp
from mbmsd.ue.watch import MediaReceiver, MtkReceiver, RtpdumpSink, UdpSink
from tests.unit.protocols.test_srtp import packet

KDID = profile.key_domain_id("001", "01")
MSK_ID = bytes.fromhex("00070001")
MSK = bytes(range(16))
RAND = bytes(range(16))


def msks():
    delivery = mikey.MskDelivery(KDID, MSK_ID, MSK, 1, RAND, b"bmsc", b"btid", 0x70001, True)
    return {(KDID, MSK_ID): delivery}


def mtk(n):
    return bytes([n]) * 16, bytes([n + 100]) * 14


def mtk_message(n, counter, msk=MSK):
    key, salt = mtk(n)
    return mikey.build_mtk_message(msk, KDID, MSK_ID, n.to_bytes(2, "big"), key, salt, counter,
                                   RAND)


@implementer(IMediaSink)
class Sink:
    def __init__(self):
        self.packets = []

    def deliver(self, packet):
        self.packets.append(packet)

    def close(self):
        pass


def receivers(keys=None):
    clock = Clock()
    mtks = MtkReceiver(clock, msks() if keys is None else keys)
    sink = Sink()
    return clock, mtks, MediaReceiver(mtks, sink), sink


def test_sinks_provide_the_contract(tmp_path):
    verifyObject(IMediaSink, Sink())
    verifyObject(IMediaSink, UdpSink(("127.0.0.1", 5000)))
    verifyObject(IMediaSink, RtpdumpSink(str(tmp_path / "x"), Clock(), ("127.0.0.1", 5000)))


def test_mtk_then_media():
    clock, mtks, media, sink = receivers()
    media.datagramReceived(srtp.Protector(*mtk(1)).protect(packet(1)), None)
    assert media.authFailed == 1 and sink.packets == []  # no MTK yet
    mtks.datagramReceived(mtk_message(1, 10), None)
    assert mtks.current.mtkId == b"\x00\x01" and mtks.accepted == 1
    p = srtp.Protector(*mtk(1))
    plain = [packet(i, b"frame%d" % i) for i in range(2, 6)]
    for x in plain:
        media.datagramReceived(p.protect(x), None)
    assert sink.packets == plain and media.decrypted == 4
    media.datagramReceived(p.protect(packet(9))[:-1] + b"\x00", None)  # altered tag
    assert media.authFailed == 2


def test_replayed_srtp_packet_is_counted():
    clock, mtks, media, sink = receivers()
    mtks.datagramReceived(mtk_message(1, 10), None)
    protected = srtp.Protector(*mtk(1)).protect(packet(3))
    media.datagramReceived(protected, None)
    media.datagramReceived(protected, None)
    assert (media.decrypted, media.replayed) == (1, 1)


def test_forged_and_replayed_mtk_messages_are_ignored():
    clock, mtks, media, sink = receivers()
    mtks.datagramReceived(mtk_message(1, 10), None)
    forged = mtk_message(2, 11, msk=bytes(16))  # same Key ID, wrong MSK: the MAC fails
    mtks.datagramReceived(forged, None)
    assert mtks.rejected["mac"] == 1 and mtks.current.mtkId == b"\x00\x01"
    flipped = bytearray(mtk_message(2, 12))
    flipped[-1] ^= 1
    mtks.datagramReceived(bytes(flipped), None)
    assert mtks.rejected["mac"] == 2
    mtks.datagramReceived(mtk_message(2, 9), None)  # an old counter
    mtks.datagramReceived(mtk_message(1, 10), None)  # the very message again
    assert mtks.rejected["replay"] == 2 and mtks.current.mtkId == b"\x00\x01"
    mtks.datagramReceived(b"\x01\x00garbage", None)
    assert mtks.rejected["malformed"] == 1


def test_without_the_msk_nothing_is_decrypted():
    clock, mtks, media, sink = receivers(keys={})
    mtks.datagramReceived(mtk_message(1, 10), None)
    media.datagramReceived(srtp.Protector(*mtk(1)).protect(packet(1)), None)
    assert mtks.rejected["unknown_msk"] == 1 and mtks.current is None
    assert (media.decrypted, media.authFailed, sink.packets) == (0, 1, [])


def test_previous_mtk_only_during_the_overlap():
    clock, mtks, media, sink = receivers()
    mtks.datagramReceived(mtk_message(1, 10), None)
    old = srtp.Protector(*mtk(1))
    mtks.datagramReceived(mtk_message(2, 11), None)
    assert mtks.current.mtkId == b"\x00\x02"
    mtks.datagramReceived(mtk_message(2, 12), None)  # a repeat changes nothing
    media.datagramReceived(old.protect(packet(1)), None)
    media.datagramReceived(srtp.Protector(*mtk(2)).protect(packet(2)), None)
    assert media.decrypted == 2
    clock.advance(profile.MTK_OVERLAP)
    media.datagramReceived(old.protect(packet(3)), None)
    assert (media.decrypted, media.authFailed) == (2, 1)


def test_rtpdump_file_layout(tmp_path):
    clock = Clock()
    clock.advance(1000.25)
    path = tmp_path / "out.rtpdump"
    sink = RtpdumpSink(str(path), clock, ("127.0.0.1", 5000))
    clock.advance(0.5)
    sink.deliver(b"\x80" + bytes(11))
    sink.close()
    data = path.read_bytes()
    # rtptools' rtpdump: "#!rtpplay1.0 addr/port\n", RD_hdr_t (16), RD_packet_t (8) + packet
    head = b"#!rtpplay1.0 127.0.0.1/5000\n"
    assert data.startswith(head)
    assert struct.unpack("!IIIHH", data[len(head):len(head) + 16]) == (1000, 250000, 0x7F000001,
                                                                       5000, 0)
    assert struct.unpack("!HHI", data[len(head) + 16:len(head) + 24]) == (20, 12, 500)
