"""
MSK delivery by MIKEY over UDP (TS 33.246 6.3.2.3.1, docs/design.md 7.7).

Each MSK message is protected with the UE's MUK (= Ks_NAF, GBA_ME), carries
V=1 and a COUNTER that never goes back for that MUK (persisted by the store),
and is retransmitted on the profile's schedule until the UE's verification
message arrives from the address it was sent to.
"""

import os
import socket
from collections import deque

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from mbmsd import profile
from mbmsd.interfaces import IMskPush
from mbmsd.logs import Logger
from mbmsd.protocols import mikey

log = Logger(namespace="mbmsd.bmsc.mikey")
# MskPush's lines keep the namespace they had in the BM-SC service
pushLog = Logger(namespace="mbmsd.bmsc")

RECEIVE_BUFFER = 8 << 20  # bytes asked for; Linux grants min(2x this, net.core.rmem_max)

# MSK messages awaiting their verification at once: a rotation to 100 000 UEs
# that sends them all at once buries the verifications under retransmissions
# (each 1 s timer fires before its answer is read) and collapses.
MAX_IN_FLIGHT = 512

TEMPLATES = 16  # MSKs whose message template is kept (a rotation uses one)

RESULTS = ("sent", "retransmitted", "verified", "unverified", "bad_verification", "send_error")


class _Pending:
    """One MSK message in flight: sent, not yet verified nor given up."""

    __slots__ = ("message", "key", "address", "done", "tries", "deadline", "started")

    def __init__(self, message, key, address, done, started):
        self.message = message
        self.key = key  # (UE host, the exact bytes of its verification)
        self.address = address
        self.done = done  # None once verified, given up or stopped
        self.tries = 0
        self.deadline = None
        self.started = started


class MikeyDelivery(DatagramProtocol):
    """
    Push MSK messages and match their verifications, with at most
    L{MAX_IN_FLIGHT} in flight.

    The hot path of a rotation is one message per registered UE, so it uses
    no Deferred, semaphore or timer per message: waiting pushes sit in one
    queue, and the messages awaiting their verification sit in one queue per
    send (every message of a queue waits as long, so each queue is in
    deadline order) swept by a single timer. A verification is matched by
    its exact bytes (L{mikey.ExpectedVerification}.message) and its source
    address in one dict lookup.

    @param counters: C{nextCounter(mukId)} firing with the next COUNTER.
    @param idi: the BM-SC's identity in IDi (its NAF FQDN).
    @param waits: how long each send waits for the verification
        (L{profile.verification_waits}); after the last, it is given up.
    """

    noisy = False

    def __init__(self, clock, counters, idi, uePort, metrics, random=os.urandom, waits=None,
                 streaming=()):
        self.clock = clock
        self.streaming = frozenset(streaming)  # service IDs whose MSKs carry the SRTP policy
        self.counters = counters
        self.idi = idi
        self.uePort = uePort
        self.random = random
        self.waits = tuple(waits if waits is not None else profile.verification_waits())
        if not self.waits:
            raise ValueError("at least one send")
        self._pending = {}  # (host, verification bytes) -> _Pending
        self._queued = deque()  # pushes with their counter, waiting for a place
        self._due = [deque() for _ in self.waits]  # per send number: _Pending by deadline
        self._timer = None
        self._templates = {}
        self._socket = None
        self._family = socket.AF_INET
        self.messages = metrics.counter(
            "mbmsd_bmsc_mikey_messages_total", "MIKEY MSK messages and verifications, by result",
            ["result"], initial=[(r,) for r in RESULTS])
        # the labelled children, looked up once: a rotation counts every message
        self._count = {r: self.messages.labels(r) for r in RESULTS}
        self.deliverySeconds = metrics.histogram(
            "mbmsd_bmsc_mikey_delivery_seconds", "From first send to the UE's verification")

    def startProtocol(self):
        # A rotation sends one MSK message per registered UE in a burst and
        # their verifications all come back to this one socket: with the
        # default receive buffer (~200 datagrams) most are dropped while the
        # reactor is busy building messages, and each drop costs a
        # retransmission a second later. Ask for more (the kernel caps it at
        # net.core.rmem_max).
        sock = getattr(self.transport, "socket", None)
        if sock is not None:
            # sent to directly (_send): Twisted's write checks the address
            # text three times per datagram
            self._socket = sock
            self._family = int(sock.family)  # the property builds an enum per call
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError as e:
                log.warn("MIKEY socket receive buffer left at its default: {e}", e=e)

    def mukId(self, btid, idi=None):
        # MUK ID = IDi || IDr (TS 31.102 4.2.81: the pair of identities)
        return "%s|%s" % ((idi or self.idi).decode("ascii"), btid)

    def deliver(self, ueAddress, btid, muk, msk, idi=None):
        """
        Push C{msk} to the UE. @return: Deferred firing with True once the
        verification arrived, False once the message is given up.

        @param idi: IDi of the message, when not the BM-SC's own (the SCF's
            NAF FQDN in the SIP-based procedure, L{profile}).

        The counter is taken before the message waits for its place in the
        window: a rotation asks for all its counters in the same reactor
        turn, so that they are reserved in a few large transactions
        (L{mbmsd.roles.bmsc.counters}) instead of one per message as the
        window lets them through.
        """
        done = Deferred()
        d = self.counters.nextCounter(self.mukId(btid, idi))
        d.addCallbacks(self._counted, done.errback,
                       callbackArgs=(ueAddress, btid, muk, msk, idi or self.idi, done))
        return done

    def _counted(self, counter, ueAddress, btid, muk, msk, idi, done):
        push = (ueAddress, btid, muk, msk, idi, counter, done)
        if len(self._pending) < MAX_IN_FLIGHT and not self._queued:
            self._start(push)
        else:
            self._queued.append(push)

    def _template(self, msk, idi):
        ident = (msk.keyDomainId, msk.mskId, msk.key, idi)
        template = self._templates.get(ident)
        if template is None:
            if len(self._templates) >= TEMPLATES:
                self._templates.clear()
            template = self._templates[ident] = mikey.MskMessageTemplate(
                msk.keyDomainId, msk.mskId, msk.key, idi, v=True,
                streaming=msk.serviceId in self.streaming)
        return template

    def _start(self, push):
        ueAddress, btid, muk, msk, idi, counter, done = push
        try:
            message, expected = self._template(msk, idi).build(
                muk, counter, self.random(profile.RAND_LEN), btid.encode("utf-8"))
        except Exception:
            done.errback()
            return
        key = (ueAddress, expected.message)
        entry = _Pending(message, key, (ueAddress, self.uePort), done, self.clock.seconds())
        self._pending[key] = entry
        self._send(entry, "sent")

    def _send(self, entry, result):
        wait = self.waits[entry.tries]
        self._due[entry.tries].append(entry)
        entry.tries += 1
        entry.deadline = self.clock.seconds() + wait
        if self._timer is None:
            self._timer = self.clock.callLater(wait, self._sweep)
        elif entry.deadline < self._timer.getTime():
            self._timer.reset(wait)
        try:
            if self._socket is not None:
                # an IP address, never a name to resolve (inet_pton raises OSError)
                socket.inet_pton(self._family, entry.address[0])
                self._socket.sendto(entry.message, entry.address)
            else:
                self.transport.write(entry.message, entry.address)
        except Exception as e:
            self._count["send_error"].inc()
            log.warn("MIKEY send to {host} failed: {e}", host=entry.address[0], e=e)
            return
        self._count[result].inc()

    def _sweep(self):
        """Retransmit or give up every message whose wait is over (one timer for all)."""
        self._timer = None
        now = self.clock.seconds()
        last = len(self.waits) - 1
        for i, due in enumerate(self._due):
            while due and due[0].deadline <= now:
                entry = due.popleft()
                if entry.done is None:
                    continue  # verified meanwhile
                if i < last:
                    self._send(entry, "retransmitted")
                else:
                    self._count["unverified"].inc()
                    log.warn("MIKEY MSK message to {host} not verified after {n} tries",
                             host=entry.address[0], n=entry.tries, procedure="mikey",
                             peer=entry.address[0], result="unverified")
                    self._finish(entry, False)
        # a retransmission above may have set the timer for its own, later
        # deadline: the nearest head of all queues decides
        nearest = min((due[0].deadline for due in self._due if due), default=None)
        if nearest is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif self._timer is None:
            self._timer = self.clock.callLater(max(0.0, nearest - now), self._sweep)
        elif nearest < self._timer.getTime():
            self._timer.reset(max(0.0, nearest - now))

    def _finish(self, entry, verified):
        del self._pending[entry.key]
        done, entry.done = entry.done, None
        # the freed place goes to the next waiting push first
        while self._queued and len(self._pending) < MAX_IN_FLIGHT:
            self._start(self._queued.popleft())
        if not self._pending:
            # nothing in flight: the queues hold only answered entries
            for due in self._due:
                due.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        done.callback(verified)

    def datagramReceived(self, data, addr):
        # the UE's verification message (RFC 3830 5.2): it must be the exact
        # answer to a message in flight to that address. A dict lookup of
        # bytes leaks no prefix through timing: the hash is keyed per process.
        entry = self._pending.get((addr[0], data))
        if entry is None:
            self._count["bad_verification"].inc()
            log.warn("MIKEY: unmatched, forged or replayed verification from {host}", host=addr[0],
                     procedure="mikey", peer=addr[0], result="bad_verification")
            return
        self._count["verified"].inc()
        self.deliverySeconds.observe(self.clock.seconds() - entry.started)
        self._finish(entry, True)

    def stopProtocol(self):
        self._socket = None
        queued, self._queued = self._queued, deque()
        for entry in list(self._pending.values()):
            self._finish(entry, False)
        for push in queued:
            push[-1].callback(False)

    @property
    def pending(self):
        return len(self._pending)


@implementer(IMskPush)
class MskPush:
    """
    An MSK to a registered UE under its MUK, through L{MikeyDelivery}: the
    MUK the SCF handed over (SIP-based procedure), else the Ks_NAF of the
    Ua id the registration was verified with.

    @param delivery: the L{MikeyDelivery}.
    @param ua: the L{mbmsd.roles.bmsc.ua.UaAuthenticator} (C{nafKey}).
    @param clock: IReactorTime.
    """

    def __init__(self, delivery, ua, clock):
        self.delivery = delivery
        self.ua = ua
        self.clock = clock

    def pushMsk(self, registration, msk):
        if registration.muk is not None:
            # SIP-based procedure (TS 26.237 Annex I.2): the SCF's Ks_NAF it
            # handed over, IDi its NAF FQDN (profile.SIP_SECURITY_IDI_IS_NAF_FQDN)
            if registration.mukExpires <= self.clock.seconds():
                pushLog.warn("the MUK of a registration expired: MSK {msk_id} not pushed",
                         msk_id=msk.mskId.hex())
                return succeed(False)
            idi = (registration.nafFqdn.encode("ascii")
                   if profile.SIP_SECURITY_IDI_IS_NAF_FQDN else None)
            return self.delivery.deliver(registration.ueAddress, registration.btid,
                                         registration.muk, msk, idi=idi)
        d = self.ua.nafKey(registration.btid, registration.uaId)

        def send(key):
            if key is None:
                pushLog.warn("no MUK for a registration (B-TID expired): MSK {msk_id} not pushed",
                         msk_id=msk.mskId.hex())
                return False
            return self.delivery.deliver(registration.ueAddress, registration.btid, key.ksNaf, msk)

        return d.addCallback(send)
