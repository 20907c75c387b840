"""
The UE's MIKEY port (docs/design.md 7.7): receives MSK messages pushed by the
BM-SC over UDP, opens them with the MUK, enforces the per-MUK counter and
answers those with V set with the verification message, sent back to the
address the datagram came from.
"""

from collections import Counter

from twisted.internet.protocol import DatagramProtocol

from mbmsd.logs import Logger
from mbmsd.protocols import mikey

__all__ = ["MikeyReceiver"]


class MikeyReceiver(DatagramProtocol):
    """
    @param muk: the MBMS User Key (docs/design.md 7.7: Ks_NAF for GBA_ME).
    @param onDelivery: called with each accepted L{mikey.MskDelivery},
        after its verification message (if V was set) has been written.
    @param lastCounter: the highest MSK-message counter already accepted
        for this MUK (None: accept any counter first).
    @param reanswerRetransmissions: answer a datagram that is byte for byte
        the last accepted MSK message again with its verification (the
        BM-SC retransmits until it gets one, and ours may have been lost),
        without delivering the MSK a second time. Any other counter that is
        not larger than the last one is a replay: rejected, not answered.

    Counters: C{accepted}; C{retransmissions} (re-answered duplicates);
    C{rejected}, a L{Counter} by reason: C{"replay"}, C{"mac"},
    C{"malformed"}, C{"error"} (anything unexpected, including an
    exception raised by C{onDelivery}). No exception escapes
    L{datagramReceived}.
    """

    log = Logger()

    def __init__(self, muk, onDelivery, lastCounter=None, reanswerRetransmissions=True):
        self.muk = bytes(muk)
        self.onDelivery = onDelivery
        self.lastCounter = lastCounter
        self.reanswerRetransmissions = reanswerRetransmissions
        self.accepted = 0
        self.retransmissions = 0
        self.rejected = Counter()
        self._lastMessage = None
        self._lastVerification = None

    def datagramReceived(self, data, addr):
        try:
            self._received(bytes(data), addr)
        except Exception:
            self.rejected["error"] += 1
            self.log.failure("MIKEY datagram from {addr!r} could not be handled", addr=addr)

    def _received(self, data, addr):
        if (self.reanswerRetransmissions and self._lastMessage is not None
                and data == self._lastMessage):
            self.retransmissions += 1
            if self._lastVerification is not None:
                self.transport.write(self._lastVerification, addr)
            return
        try:
            delivery, verification = mikey.answer_msk_message(self.muk, data, self.lastCounter)
        except mikey.ReplayError as e:
            self._reject("replay", e, addr)
            return
        except mikey.MacError as e:
            self._reject("mac", e, addr)
            return
        except mikey.MikeyError as e:
            self._reject("malformed", e, addr)
            return
        self.lastCounter = delivery.counter
        self.accepted += 1
        if verification is not None:
            self.transport.write(verification, addr)
        self._lastMessage = data
        self._lastVerification = verification
        self.log.info(
            "MSK {msk_id} of key domain {kd} accepted from {addr!r} (counter {counter}, "
            "verification {sent})",
            msk_id=delivery.msk_id.hex(), kd=delivery.key_domain_id.hex(), addr=addr,
            counter=delivery.counter, sent="sent" if verification else "not asked",
        )
        self.onDelivery(delivery)

    def _reject(self, reason, error, addr):
        self.rejected[reason] += 1
        # MikeyError messages name the problem, never a key.
        self.log.warn("MIKEY datagram from {addr!r} rejected ({reason}): {error}",
                      addr=addr, reason=reason, error=str(error))
