"""
Streaming services at the BM-SC (RFC 4563 2 and 7, RFC 3711): per service,
the MTKs (generated, rotated, announced in MTK messages under the current
MSK, repeated for late joiners) and the protection of the content
provider's RTP packets with SRTP under the current MTK, forwarded to the
MBMS bearer.

L{StreamingService} is the logic, with an injected clock and an
L{mbmsd.interfaces.IBearer}; L{MediaPort} and L{UdpBearer} are the UDP
adapters. No MTK or MSK reaches a log line or a metric.
"""

import os
import socket

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from mbmsd import profile
from mbmsd.interfaces import IBearer
from mbmsd.logs import Logger
from mbmsd.protocols import mikey, rtp, srtp

log = Logger(namespace="mbmsd.bmsc.streaming")

DROP_REASONS = ("malformed", "too_large", "no_mtk", "rate", "index_reused", "send_error")

MTK_LEN = profile.SRTP_MASTER_KEY_LEN
COUNTER_MAX = 0xFFFFFFFF


class Mtk:
    """One MTK: its ID (2 octets), the SRTP master key and salt, when made."""

    __slots__ = ("mtkId", "key", "salt", "created", "protectFast")

    def __init__(self, mtkId, key, salt, created):
        self.mtkId = mtkId
        self.key = key
        self.salt = salt
        self.created = created
        self.protectFast = srtp.Protector(key, salt).protectFast

    def __repr__(self):
        return "<Mtk %s>" % (self.mtkId.hex(),)


class StreamingMetrics:
    """The counters of every streaming service of a BM-SC, labelled by service."""

    def __init__(self, metrics, serviceIds):
        self.forwarded = metrics.counter(
            "mbmsd_bmsc_srtp_packets_total", "RTP packets protected with SRTP and forwarded to "
            "the bearer", ["service"], initial=[(s,) for s in serviceIds])
        self.dropped = metrics.counter(
            "mbmsd_bmsc_srtp_dropped_total", "Content packets not forwarded, by reason",
            ["service", "reason"], initial=[(s, r) for s in serviceIds for r in DROP_REASONS])
        self.mtkMessages = metrics.counter(
            "mbmsd_bmsc_mtk_messages_total", "MTK messages sent to the bearer's key port",
            ["service"], initial=[(s,) for s in serviceIds])
        self.rotations = metrics.counter(
            "mbmsd_bmsc_mtk_rotations_total", "New MTKs (the first and each rotation)",
            ["service"], initial=[(s,) for s in serviceIds])


class StreamingService:
    """
    The MTKs and the SRTP protection of one streaming service.

    @param msks: C{current(serviceId)} firing with the service's valid
        L{mbmsd.storage.records.Msk} (the MSK manager).
    @param bearer: an L{IBearer}.
    @param rotation: seconds between MTKs (C{mtk_rotation}).
    @param repeat: seconds between MTK messages of the current MTK
        (C{mtk_repeat}): a UE that joins late has it within one repeat.
    @param maxRate: content packets per second forwarded at most; more are
        dropped (reason C{rate}), nothing is queued.
    """

    def __init__(self, serviceId, clock, msks, bearer, metrics, rotation, repeat, maxRate,
                 random=os.urandom):
        self.serviceId = serviceId
        self.clock = clock
        self.msks = msks
        self.bearer = bearer
        self.rotation = rotation
        self.repeat = repeat
        self.maxRate = maxRate
        self.random = random
        self.current = None  # Mtk
        self._next = None  # the Mtk announced, in use after MTK_SWITCH_DELAY
        self._switch = None
        self._nextId = 1
        self._msk = None  # the MSK of the last MTK message
        self._previousMsk = None  # (Msk, until) during the MSK_OVERLAP
        self._counters = {}  # MSK ID -> last COUNTER sent under it
        self._second, self._inSecond = None, 0  # the rate window: this second, its packets
        self._seconds = clock.seconds
        self._sendMedia = bearer.sendMedia
        # packet counts, moved to the metrics at each MTK message (the per-packet
        # path does not take the metric's lock)
        self._pending = dict.fromkeys(("forwarded",) + DROP_REASONS, 0)
        self._loops = []
        self._rekeying = False
        m = metrics
        self._forwarded = m.forwarded.labels(serviceId)
        self._dropped = {r: m.dropped.labels(serviceId, r) for r in DROP_REASONS}
        self._mtkMessages = m.mtkMessages.labels(serviceId)
        self._rotations = m.rotations.labels(serviceId)

    # -- the MTK schedule

    def start(self):
        """Announce at once (the first MTK is made with the first MSK), then every repeat."""
        repeat = LoopingCall(self.announce)
        repeat.clock = self.clock
        rotate = LoopingCall(self.rotate)
        rotate.clock = self.clock
        self._loops = [repeat, rotate]
        for loop, every in ((repeat, self.repeat), (rotate, self.rotation)):
            loop.start(every, now=False).addErrback(
                lambda f: log.failure("MTK schedule of {service} stopped", f,
                                      service=self.serviceId))
        self.announce()

    def stop(self):
        self.flushCounts()
        if self._switch is not None and self._switch.active():
            self._switch.cancel()
        self._switch = None
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []

    def rotate(self):
        """
        A new MTK (MTK ID + 1): announced at once, used for the packets
        L{profile.MTK_SWITCH_DELAY} later, so that a UE has its MTK message
        before the first packet under it (the UE reads two sockets).
        """
        return self.announce(rotate=True)

    def _rekey(self):
        if self._next is None and not self._rekeying:
            self._rekeying = True
            log.info("content of {service} reuses packet indexes: new MTK",
                     service=self.serviceId)
            d = self.rotate()
            d.addBoth(lambda _: setattr(self, "_rekeying", False))

    def _switchMtk(self):
        self._switch = None
        if self._next is not None:
            self.current, self._next = self._next, None

    def _newMtk(self):
        mtkId = self._nextId.to_bytes(profile.MTK_ID_LEN, "big")
        self._nextId = self._nextId % ((1 << (8 * profile.MTK_ID_LEN)) - 1) + 1  # never 0
        self._rotations.inc()
        log.info("MTK {mtk_id} of {service}", mtk_id=mtkId.hex(), service=self.serviceId)
        return Mtk(mtkId, self.random(MTK_LEN), self.random(profile.SRTP_MASTER_SALT_LEN),
                   self.clock.seconds())

    def announce(self, rotate=False):
        """
        Send the current MTK (a new one first, with C{rotate}) in an MTK
        message under the current MSK (and, during the MSK overlap, under
        the previous one too).
        @return: Deferred firing when sent (never failing).
        """
        d = self.msks.current(self.serviceId)
        d.addCallback(self._announce, rotate)
        d.addErrback(lambda f: log.warn("MTK message of {service} not sent: no MSK ({e})",
                                        service=self.serviceId, e=f.getErrorMessage()))
        return d

    def flushCounts(self):
        """Move the packet counts to the metrics (done at each MTK message, and at stop)."""
        pending = self._pending
        if pending["forwarded"]:
            self._forwarded.inc(pending["forwarded"])
        for reason in DROP_REASONS:
            if pending[reason]:
                self._dropped[reason].inc(pending[reason])
        self._pending = dict.fromkeys(pending, 0)

    def _announce(self, msk, rotate=False):
        self.flushCounts()
        now = self.clock.seconds()
        if self._msk is not None and msk.mskId != self._msk.mskId:
            # MSK rotated: the old one keeps the MTKs coming for MSK_OVERLAP
            self._previousMsk = (self._msk, now + profile.MSK_OVERLAP)
            self._counters = {k: v for k, v in self._counters.items()
                              if k in (msk.mskId, self._msk.mskId)}
            log.info("MTK messages of {service} now under MSK {msk_id}", service=self.serviceId,
                     msk_id=msk.mskId.hex())
        self._msk = msk
        if self.current is None:
            self.current = self._newMtk()  # the first: nobody could decrypt before anyway
        elif rotate and self._next is None:
            self._next = self._newMtk()
            self._switch = self.clock.callLater(profile.MTK_SWITCH_DELAY, self._switchMtk)
        mtk = self._next or self.current
        under = [msk]
        if self._previousMsk is not None:
            old, until = self._previousMsk
            if now < until:
                under.append(old)
            else:
                self._previousMsk = None
        for m in under:
            self._sendMtkMessage(m, now, mtk)

    def _counter(self, msk, now):
        # RFC 3830 6.6 COUNTER, one per MSK; see profile.MTK_COUNTER_RATE
        floor = int(max(0.0, now - msk.created) * profile.MTK_COUNTER_RATE)
        counter = max(self._counters.get(msk.mskId, 0) + 1, floor)
        if counter > COUNTER_MAX:
            return None
        self._counters[msk.mskId] = counter
        return counter

    def _sendMtkMessage(self, msk, now, mtk):
        counter = self._counter(msk, now)
        if counter is None:
            log.warn("MTK messages of {service} under MSK {msk_id}: counter exhausted",
                     service=self.serviceId, msk_id=msk.mskId.hex())
            return
        message = mikey.build_mtk_message(msk.key, msk.keyDomainId, msk.mskId, mtk.mtkId, mtk.key,
                                          mtk.salt, counter, self.random(profile.RAND_LEN))
        if self.bearer.sendKey(message):
            self._mtkMessages.inc()

    # -- the media

    def packetReceived(self, data):
        """
        One datagram from the content provider: checked as RTP, protected
        with the current MTK and forwarded; otherwise dropped and counted.
        """
        pending = self._pending
        if len(data) > srtp.MAX_RTP_SIZE:
            pending["too_large"] += 1
            return
        if not rtp.is_plain(data):
            try:
                rtp.parse_header(data)
            except rtp.RtpError:
                pending["malformed"] += 1
                return
        second = int(self._seconds())
        if second == self._second:
            self._inSecond += 1
            if self._inSecond > self.maxRate:
                pending["rate"] += 1
                return
        else:
            self._second, self._inSecond = second, 1
        mtk = self.current
        if mtk is None:
            pending["no_mtk"] += 1
            return
        try:
            packet = mtk.protectFast(data)
        except srtp.PROTECT_ERRORS as e:
            if str(e).startswith("replay"):
                # a sequence number again under this MTK (the source restarted): never
                # the same keystream twice (RFC 3711 9.1); a new MTK at once instead
                pending["index_reused"] += 1
                self._rekey()
            else:
                pending["malformed"] += 1
            return
        if self._sendMedia(packet):
            pending["forwarded"] += 1
        else:
            pending["send_error"] += 1


class MediaPort(DatagramProtocol):
    """The UDP socket the content provider's RTP packets arrive at."""

    noisy = False

    def __init__(self, service):
        self.service = service

    def datagramReceived(self, data, addr):
        try:
            self.service.packetReceived(data)
        except Exception:
            log.failure("content packet of {service} from {addr!r} not handled",
                        service=self.service.serviceId, addr=addr)


@implementer(IBearer)
class UdpBearer(DatagramProtocol):
    """
    The sending socket of one bearer: SRTP to (group, port), MTK messages to
    (group, key port), with the multicast TTL and interface set.
    """

    noisy = False

    def __init__(self, group, port, keyPort, ttl, interface):
        self.media = (group, port)
        self.keys = (group, keyPort)
        self.ttl = ttl
        self.interface = interface
        self.errors = 0

    def startProtocol(self):
        sock = getattr(self.transport, "socket", None)
        self._sendto = self.transport.write
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            socket.inet_aton(self.interface))
            # the socket's own sendto: the addresses are checked once, at start, and a
            # full send buffer is a counted drop (nothing is queued)
            self._sendto = sock.sendto

    def stopProtocol(self):
        self._sendto = None

    _sendto = None

    def _send(self, data, address):
        if self._sendto is None:
            return False
        try:
            self._sendto(data, address)
        except OSError as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warn("bearer {address!r}: send failed ({n} so far): {e}", address=address,
                         n=self.errors, e=e)
            return False
        return True

    def sendMedia(self, packet):
        return self._send(packet, self.media)

    def sendKey(self, message):
        return self._send(message, self.keys)
