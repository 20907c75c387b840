"""
Streaming services at the BM-SC (RFC 4563 2 and 7, RFC 3711): per service,
the MTKs (generated, rotated, announced in MTK messages under the current
MSK, repeated for late joiners) and the protection of the content
provider's RTP packets with SRTP under the current MTK, forwarded to the
MBMS bearer.

L{StreamingService} is the logic, with an injected clock and an
L{mbmsd.interfaces.IBearer}; L{MediaPort} and L{UdpBearer} are the UDP
adapters. No MTK or MSK reaches a log line or a metric.

The protected packets of one reactor iteration leave together: the service
queues them and hands them to the bearer when 64 are queued (or 64 KB) and
at the end of the iteration (C{callLater(0)}); the bearer sends each run of
equal-size packets with one C{sendmsg} and UDP GSO (Linux udp(7)
C{UDP_SEGMENT}), the kernel cutting it into the same datagrams, in order,
that one C{sendto} each would give, for a seventh of the CPU.
"""

import errno
import os
import socket
import struct

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

# udp(7) UDP_SEGMENT (linux/udp.h), at most UDP_MAX_SEGMENTS segments of one
# send, all one size but the last, within one IPv4 datagram's UDP payload
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 0xFFFF - 20 - 8
# errors meaning this kernel or device does not segment (udp(7); udp_send_skb:
# EIO without checksum offload): plain sends from then on
GSO_UNSUPPORTED = frozenset((errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP))


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
        self._callLater = clock.callLater
        self._sendMedia = bearer.sendMedia
        # the protected packets of this reactor iteration, in order
        self._batch, self._batchBytes, self._flushCall = [], 0, None
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
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        self.flushMedia()
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
        size = len(packet)
        if self._batchBytes + size > GSO_MAX_BYTES:
            self.flushMedia()
        batch = self._batch
        batch.append(packet)
        self._batchBytes += size
        if len(batch) >= GSO_MAX_SEGMENTS:
            self.flushMedia()
        elif self._flushCall is None:
            self._flushCall = self._callLater(0, self._iterationEnd)

    def _iterationEnd(self):
        self._flushCall = None
        self.flushMedia()

    def flushMedia(self):
        """Hand the queued packets to the bearer, in order, and count the outcome."""
        batch = self._batch
        if not batch:
            return
        self._batch, self._batchBytes = [], 0
        sent = self._sendMedia(batch)
        pending = self._pending
        pending["forwarded"] += sent
        if sent < len(batch):
            pending["send_error"] += len(batch) - sent


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

    Media go out in runs of equal-size packets (the last of a run may be
    shorter), each run one C{sendmsg} with UDP GSO. A packet alone is a
    plain C{sendto}; so is every packet once the kernel refused GSO
    (L{GSO_UNSUPPORTED}: for good; EINVAL, a segment larger than the path
    MTU allows: for that size and larger), the refused run sent again that
    way, so nothing is lost by the batching.

    @ivar errors: datagrams whose send failed.
    """

    noisy = False

    def __init__(self, group, port, keyPort, ttl, interface):
        self.media = (group, port)
        self.keys = (group, keyPort)
        self.ttl = ttl
        self.interface = interface
        self.errors = 0
        self.gso = False
        self._gsoBelow = GSO_MAX_BYTES + 1  # segment sizes GSO takes: smaller than this
        self._cmsgs = {}  # size -> the ancillary data of its runs

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
            self.useSocket(sock)

    def useSocket(self, sock):
        """
        Send media with C{sock}'s C{sendmsg} and GSO when the kernel knows
        C{UDP_SEGMENT} (a kernel before Linux 4.18 answers ENOPROTOOPT).
        """
        try:
            sock.getsockopt(SOL_UDP, UDP_SEGMENT)
        except OSError as e:
            log.info("bearer {address!r}: no UDP GSO ({e}): one send per packet",
                     address=self.media, e=e)
            self.gso = False
            return
        self._sendmsg = sock.sendmsg
        self.gso = True

    def stopProtocol(self):
        self._sendto = None
        self._sendmsg = None
        self.gso = False

    _sendto = _sendmsg = None

    def _failed(self, n, address, e):
        before = self.errors
        self.errors += n
        if before == 0 or before // 1000 != self.errors // 1000:
            log.warn("bearer {address!r}: send failed ({n} so far): {e}", address=address,
                     n=self.errors, e=e)

    def _send(self, data, address):
        if self._sendto is None:
            return False
        try:
            self._sendto(data, address)
        except OSError as e:
            self._failed(1, address, e)
            return False
        return True

    def sendMedia(self, packets):
        address = self.media
        n = len(packets)
        if not self.gso:
            return sum([self._send(p, address) for p in packets])
        sent = i = 0
        while i < n:
            size = len(packets[i])
            end = i + 1
            if size < self._gsoBelow:
                limit = min(n, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while end < limit and len(packets[end]) == size:
                    end += 1
                if end < limit and len(packets[end]) < size:
                    end += 1  # the last segment may be shorter
            if end - i == 1:
                sent += self._send(packets[i], address)
            else:
                sent += self._sendRun(packets[i:end], size, address)
            i = end
        return sent

    def _sendRun(self, run, size, address):
        cmsg = self._cmsgs.get(size)
        if cmsg is None:
            cmsg = self._cmsgs[size] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        try:
            self._sendmsg(run, cmsg, 0, address)
        except OSError as e:
            if e.errno in GSO_UNSUPPORTED:
                self.gso = False
                log.warn("bearer {address!r}: UDP GSO refused ({e}): one send per packet",
                         address=address, e=e)
            elif e.errno == errno.EINVAL:
                self._gsoBelow = size
                log.warn("bearer {address!r}: UDP GSO refused {size}-octet segments ({e}): "
                         "one send per packet of that size or larger", address=address,
                         size=size, e=e)
            else:
                self._failed(len(run), address, e)
                return 0
            return sum([self._send(p, address) for p in run])
        return len(run)

    def sendKey(self, message):
        return self._send(message, self.keys)
