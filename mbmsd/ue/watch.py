"""
The UE views a streaming MBMS user service (RFC 4563 2 and 7, RFC 3711):
it listens on the bearer, opens the MTK messages with the MSKs it holds,
decrypts the SRTP packets with the MTK and hands the plain RTP packets to a
sink (a local UDP port for a player, or an rtpdump file).

L{MtkReceiver} and L{MediaReceiver} are the logic (clock injected); the
sockets are the caller's. No key reaches a log line; C{--show-keys} prints
the MTK on stdout only.
"""

import base64
import ipaddress
import signal
import struct
from collections import Counter

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from mbmsd import profile
from mbmsd.interfaces import IMediaSink
from mbmsd.logs import Logger
from mbmsd.protocols import mikey, srtp

__all__ = ["MtkReceiver", "MediaReceiver", "UdpSink", "RtpdumpSink", "watch", "add_parser"]

log = Logger(namespace="mbmsd.ue.watch")


class _Key:
    __slots__ = ("mtkId", "mskId", "ident", "unprotector", "until")

    def __init__(self, delivery):
        self.mtkId = delivery.mtk_id
        self.mskId = delivery.msk_id
        self.ident = (delivery.mtk_id, delivery.mtk, delivery.salt)
        self.unprotector = srtp.Unprotector(delivery.mtk, delivery.salt)
        self.until = None  # while previous: the end of its overlap


class MtkReceiver(DatagramProtocol):
    """
    The bearer's key port: MTK messages, each opened with the MSK its Key
    ID names (L{mikey.peek_key_id}) and a COUNTER larger than the last one
    under that MSK (RFC 3830 6.6). A new MTK becomes current; the previous
    one stays usable for L{profile.MTK_OVERLAP} seconds.

    @param msks: {(Key Domain ID, MSK ID): L{mikey.MskDelivery}}, kept up to
        date by the MSK receiver.
    @param onMtk: called with each new L{mikey.MtkDelivery} (not repeats).

    Counters: C{accepted} (every valid message, repeats included) and
    C{rejected} by reason: C{unknown_msk}, C{mac} (forged or for another
    MSK), C{replay}, C{malformed}.
    """

    noisy = False

    def __init__(self, clock, msks, onMtk=None):
        self.clock = clock
        self.msks = msks
        self.onMtk = onMtk
        self.current = None
        self.previous = None
        self.lastCounter = {}  # MSK ID -> last accepted COUNTER
        self.accepted = 0
        self.rejected = Counter()

    def datagramReceived(self, data, addr):
        try:
            self._received(bytes(data))
        except Exception:
            self.rejected["error"] += 1
            log.failure("MTK message from {addr!r} not handled", addr=addr)

    def _received(self, data):
        try:
            keyId = mikey.peek_key_id(data)
        except mikey.MikeyError:
            self.rejected["malformed"] += 1
            return
        msk = self.msks.get((keyId.key_domain_id, keyId.msk_id))
        if msk is None:
            self.rejected["unknown_msk"] += 1
            return
        try:
            delivery = mikey.parse_mtk_message(msk.msk, data, self.lastCounter.get(msk.msk_id))
        except mikey.ReplayError:
            self.rejected["replay"] += 1
            return
        except mikey.MacError:
            self.rejected["mac"] += 1
            return
        except mikey.MikeyError:
            self.rejected["malformed"] += 1
            return
        self.lastCounter[msk.msk_id] = delivery.counter
        self.accepted += 1
        if delivery.salt is None:
            self.rejected["malformed"] += 1  # SRTP needs the master salt
            return
        key = _Key(delivery)
        if self.current is not None and self.current.ident == key.ident:
            self.current.mskId = delivery.msk_id  # the same MTK, under a newer MSK
            return
        if self.previous is not None and self.previous.ident == key.ident:
            return  # the old MTK, sent under the old MSK during its overlap
        if self.current is not None:
            self.current.until = self.clock.seconds() + profile.MTK_OVERLAP
        self.previous, self.current = self.current, key
        log.info("MTK {mtk_id} under MSK {msk_id}", mtk_id=key.mtkId.hex(),
                 msk_id=key.mskId.hex())
        if self.onMtk is not None:
            self.onMtk(delivery)

    def keys(self):
        """The keys to try, current first, then the previous while in its overlap."""
        out = [self.current] if self.current is not None else []
        if self.previous is not None:
            if self.previous.until is not None and self.clock.seconds() < self.previous.until:
                out.append(self.previous)
            else:
                self.previous = None
        return out


class MediaReceiver(DatagramProtocol):
    """
    The bearer's media port: each SRTP packet authenticated and decrypted
    with the current MTK (or the previous one during its overlap), the
    RTP packet handed to C{sink} (an L{IMediaSink}).

    Counters: C{received}, C{decrypted}, C{authFailed} (no key verified
    the tag: no MTK, a wrong one, or altered), C{replayed}, C{malformed}.
    """

    noisy = False

    def __init__(self, mtks, sink):
        self.mtks = mtks
        self.sink = sink
        self.received = 0
        self.decrypted = 0
        self.authFailed = 0
        self.replayed = 0
        self.malformed = 0

    def datagramReceived(self, data, addr):
        self.received += 1
        try:
            self._received(bytes(data))
        except Exception:
            self.malformed += 1
            log.failure("bearer packet from {addr!r} not handled", addr=addr)

    def _received(self, data):
        for key in self.mtks.keys():
            try:
                packet = key.unprotector.unprotect(data)
            except srtp.AuthError:
                continue
            except srtp.ReplayError:
                self.replayed += 1
                return
            except srtp.SrtpError:
                self.malformed += 1
                return
            self.decrypted += 1
            self.sink.deliver(packet)
            return
        self.authFailed += 1


@implementer(IMediaSink)
class UdpSink(DatagramProtocol):
    """Re-emit the plain RTP packets to a local UDP address (a player's)."""

    noisy = False

    def __init__(self, address):
        self.address = address

    def deliver(self, packet):
        if self.transport is not None:
            self.transport.write(packet, self.address)

    def close(self):
        pass


@implementer(IMediaSink)
class RtpdumpSink:
    """
    Write the plain RTP packets to an rtpdump file ("#!rtpplay1.0", the
    format of rtptools, read by Wireshark): a text line, RD_hdr_t, then per
    packet RD_packet_t (length + 8, packet length, milliseconds since the
    start) and the packet.
    """

    def __init__(self, path, clock, source):
        self.file = open(path, "wb")
        self.clock = clock
        self.start = clock.seconds()
        host, port = source
        self.file.write(b"#!rtpplay1.0 %s/%d\n" % (host.encode("ascii"), port))
        sec = int(self.start)
        self.file.write(struct.pack("!IIIHH", sec, int((self.start - sec) * 1e6),
                                    int(ipaddress.IPv4Address(host)), port, 0))

    def deliver(self, packet):
        offset = int((self.clock.seconds() - self.start) * 1000) & 0xFFFFFFFF
        self.file.write(struct.pack("!HHI", len(packet) + 8, len(packet), offset) + packet)

    def close(self):
        self.file.close()


def add_parser(sub, run):
    """
    The C{watch} command: every option of C{run} (the procedure it runs
    first, whichever security procedure C{run} is told to use), and its own.
    """
    w = sub.add_parser("watch", parents=[run], add_help=False,
                       help="the whole procedure, then view the service: MTKs from the bearer, "
                            "SRTP decrypted, plain RTP re-emitted or written")
    w.add_argument("--bearer", default=None,
                   help="IP:PORT of the bearer (default: the c= address and m= port of the "
                        "INVITE's SDP answer)")
    w.add_argument("--key-port", type=int, default=profile.MTK_UDP_PORT,
                   help="UDP port of the MTK messages on the bearer (default %d)"
                        % (profile.MTK_UDP_PORT,))
    w.add_argument("--play", default=None, help="udp:IP:PORT to re-emit the plain RTP to")
    w.add_argument("--out", default=None, help="an rtpdump file to write the plain RTP to")
    w.add_argument("--seconds", type=float, default=None,
                   help="watch this long, then BYE (default: until Ctrl-C)")
    return w


def _address(text, what):
    host, sep, port = text.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        if not sep or not 1 <= int(port) <= 65535:
            raise ValueError(text)
    except ValueError:
        raise ValueError("%s must be IPv4:PORT, got %r" % (what, text)) from None
    return host, int(port)


def _bearer_from_answer(sessions, serviceId):
    from mbmsd.ue.sip import sdp_summary

    for session in sessions:
        if session.serviceId != serviceId or session.answer is None:
            continue
        summary = sdp_summary(session.answer.sdp)
        for m in summary["media"]:
            address = m.get("connection") or summary["connection"]
            if m.get("port") and address:
                return address, int(m["port"])
    return None


def _listen(reactor, address, protocol, interface):
    host, port = address
    if ipaddress.IPv4Address(host).is_multicast:
        p = reactor.listenMulticast(port, protocol, listenMultiple=True)
        p.joinGroup(host, interface)
        return p
    return reactor.listenUDP(port, protocol, interface=host)


@inlineCallbacks
def watch(reactor, args, sessions, msks, emit):
    """
    Listen on the bearer of C{args.service[0]} for C{args.seconds} (or until
    SIGINT) with the MSKs in C{msks} (updated as MSK messages arrive).

    @param emit: writes one JSON record.
    @return: Deferred of the exit status: 0 when at least one packet was
        decrypted.
    """
    serviceId = (args.service or ["urn:mbmsd:news"])[0]
    try:
        if args.bearer:
            bearer = _address(args.bearer, "--bearer")
        else:
            bearer = _bearer_from_answer(sessions, serviceId)
            if bearer is None:
                raise ValueError("no bearer: the SDP answer names none; give --bearer")
        play = None
        if args.play:
            if not args.play.startswith("udp:"):
                raise ValueError("--play must be udp:IP:PORT")
            play = _address(args.play[4:], "--play")
    except ValueError as e:
        emit({"step": "watch", "result": "failed", "error": str(e)})
        return 1

    def onMtk(delivery):
        record = {"step": "mtk", "result": "ok", "mtkId": delivery.mtk_id.hex(),
                  "mskId": delivery.msk_id.hex(), "counter": delivery.counter}
        if args.show_keys:
            record["mtk"] = delivery.mtk.hex()
            record["salt"] = delivery.salt.hex()
            # ffmpeg's -srtp_in_params / SDES inline form: master key || salt
            record["srtpParams"] = base64.b64encode(delivery.mtk + delivery.salt).decode("ascii")
        emit(record)

    mtks = MtkReceiver(reactor, msks, onMtk)
    sinks = []
    if play is not None:
        sinks.append(UdpSink(play))
    if args.out:
        sinks.append(RtpdumpSink(args.out, reactor, bearer))
    sink = _Tee(sinks)
    media = MediaReceiver(mtks, sink)
    ports = []
    try:
        for s in sinks:
            if isinstance(s, UdpSink):
                ports.append(reactor.listenUDP(0, s, interface="127.0.0.1"))
        ports.append(_listen(reactor, (bearer[0], args.key_port), mtks, args.local_ip))
        ports.append(_listen(reactor, bearer, media, args.local_ip))
    except Exception as e:
        for p in ports:
            p.stopListening()
        sink.close()
        emit({"step": "watch", "result": "failed", "error": "cannot listen on the bearer %s:%d: %s"
              % (bearer[0], bearer[1], e)})
        return 1

    def line(final=False):
        current = mtks.current
        record = {"step": "watch", "service": serviceId, "received": media.received,
                  "decrypted": media.decrypted, "authFailed": media.authFailed,
                  "replayed": media.replayed, "mtkId": current.mtkId.hex() if current else None,
                  "mskId": current.mskId.hex() if current else None,
                  "mtkMessages": mtks.accepted, "mtkRejected": dict(mtks.rejected)}
        if final:
            record["result"] = "ok" if media.decrypted else "failed"
        emit(record)

    done = Deferred()
    stats = LoopingCall(line)
    stats.clock = reactor
    stats.start(1.0, now=False)
    timer = reactor.callLater(args.seconds, done.callback, None) if args.seconds else None
    previous = _on_sigint(reactor, done)
    try:
        yield done
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if timer is not None and timer.active():
            timer.cancel()
        stats.stop()
        for p in ports:
            yield p.stopListening()
        sink.close()
    line(final=True)
    return 0 if media.decrypted else 1


def _on_sigint(reactor, done):
    """Ctrl-C ends the watch (then the BYE), instead of stopping the reactor."""
    try:
        def handler(signum, frame):
            reactor.callFromThread(lambda: done.called or done.callback(None))

        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests)
        return None


@implementer(IMediaSink)
class _Tee:
    def __init__(self, sinks):
        self.sinks = sinks

    def deliver(self, packet):
        for s in self.sinks:
            s.deliver(packet)

    def close(self):
        for s in self.sinks:
            s.close()
