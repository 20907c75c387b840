"""
MSK delivery by MIKEY over UDP (TS 33.246 6.3.2.3.1, DESIGN 8.6).

Each MSK message is protected with the UE's MUK (= Ks_NAF, GBA_ME), carries
V=1 and a COUNTER that never goes back for that MUK (persisted by the store),
and is retransmitted on the profile's schedule until the UE's verification
message arrives from the address it was sent to.
"""

import os
import socket

from twisted.internet.defer import Deferred, DeferredSemaphore, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from mbmsd import profile
from mbmsd.protocols import mikey

log = Logger(namespace="mbmsd.bmsc.mikey")

RECEIVE_BUFFER = 8 << 20  # bytes asked for; Linux grants min(2x this, net.core.rmem_max)

# MSK messages awaiting their verification at once: a rotation to 100 000 UEs
# that sends them all at once buries the verifications under retransmissions
# (each 1 s timer fires before its answer is read) and collapses.
MAX_IN_FLIGHT = 512

RESULTS = ("sent", "retransmitted", "verified", "unverified", "bad_verification", "send_error")


class _Pending:
    def __init__(self, message, expected, address, done):
        self.message = message
        self.expected = expected  # mikey.ExpectedVerification: no re-derivation per answer
        self.address = address
        self.done = done
        self.tries = 1
        self.timer = None


class MikeyDelivery(DatagramProtocol):
    """
    @param counters: C{nextCounter(mukId)} firing with the next COUNTER.
    @param idi: the BM-SC's identity in IDi (its NAF FQDN).
    """

    noisy = False

    def __init__(self, clock, counters, idi, uePort, metrics, random=os.urandom,
                 delays=None):
        self.clock = clock
        self.counters = counters
        self.idi = idi
        self.uePort = uePort
        self.random = random
        self.delays = tuple(delays if delays is not None else profile.retransmit_delays())
        self._pending = {}  # (host, counter, MSK ID) -> _Pending
        # host -> {key: _Pending}: a verification is matched against its
        # sender's pending messages only, not against every pending one
        self._byHost = {}
        self._window = DeferredSemaphore(MAX_IN_FLIGHT)
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
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError as e:
                log.warn("MIKEY socket receive buffer left at its default: {e}", e=e)

    def mukId(self, btid):
        # MUK ID = IDi || IDr (TS 31.102 4.2.81: the pair of identities)
        return "%s|%s" % (self.idi.decode("ascii"), btid)

    def deliver(self, ueAddress, btid, muk, msk):
        """
        Push C{msk} to the UE. @return: Deferred firing with True once the
        verification arrived, False after the last retransmission. At most
        L{MAX_IN_FLIGHT} messages wait for their verification at a time.

        The counter is taken before the message waits for its place in the
        window: a rotation asks for all its counters in the same reactor
        turn, so that they are reserved in a few large transactions
        (L{mbmsd.roles.bmsc.counters}) instead of one per message as the
        window lets them through.
        """
        d = self.counters.nextCounter(self.mukId(btid))
        d.addCallback(lambda counter: self._window.run(self._deliver, ueAddress, btid, muk, msk,
                                                       counter))
        return d

    @inlineCallbacks
    def _deliver(self, ueAddress, btid, muk, msk, counter):
        message, expected = mikey.build_msk_message_expecting(
            muk, msk.keyDomainId, msk.mskId, msk.key, counter, self.random(profile.RAND_LEN),
            self.idi, btid.encode("utf-8"), v=True)
        done = Deferred()
        entry = _Pending(message, expected, (ueAddress, self.uePort), done)
        key = (ueAddress, counter, msk.mskId)
        self._pending[key] = entry
        self._byHost.setdefault(ueAddress, {})[key] = entry
        started = self.clock.seconds()
        self._send(entry, "sent")
        self._arm(key, entry)
        verified = yield done
        if verified:
            self.deliverySeconds.observe(self.clock.seconds() - started)
        return verified

    def _send(self, entry, result):
        try:
            self.transport.write(entry.message, entry.address)
        except Exception as e:
            self._count["send_error"].inc()
            log.warn("MIKEY send to {host} failed: {e}", host=entry.address[0], e=e)
            return
        self._count[result].inc()

    def _arm(self, key, entry):
        if entry.tries > len(self.delays):
            entry.timer = None
            self._forget(key)
            self._count["unverified"].inc()
            log.warn("MIKEY MSK message to {host} not verified after {n} tries",
                     host=entry.address[0], n=entry.tries)
            entry.done.callback(False)
            return
        delay = self.delays[entry.tries - 1]
        entry.timer = self.clock.callLater(delay, self._retransmit, key, entry)

    def _retransmit(self, key, entry):
        entry.tries += 1
        self._send(entry, "retransmitted")
        self._arm(key, entry)

    def datagramReceived(self, data, addr):
        # the UE's verification message (RFC 3830 5.2); never let bad input escape
        host = addr[0]
        try:
            for key, entry in list(self._byHost.get(host, {}).items()):
                try:
                    mikey.check_expected_verification(entry.expected, data)
                except mikey.MikeyError:
                    continue
                self._forget(key)
                if entry.timer is not None and entry.timer.active():
                    entry.timer.cancel()
                self._count["verified"].inc()
                entry.done.callback(True)
                return
        except Exception:
            log.failure("verification handling failed")
        self._count["bad_verification"].inc()
        log.warn("MIKEY: unmatched, forged or replayed verification from {host}", host=host)

    def _forget(self, key):
        del self._pending[key]
        byHost = self._byHost[key[0]]
        del byHost[key]
        if not byHost:
            del self._byHost[key[0]]

    def stopProtocol(self):
        for key, entry in list(self._pending.items()):
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            self._forget(key)
            entry.done.callback(False)

    @property
    def pending(self):
        return len(self._pending)
