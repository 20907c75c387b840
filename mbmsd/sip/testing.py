"""
Fakes for testing code built on the SIP layer (the way
C{twisted.internet.testing} serves Twisted). Each is checked against its
interface and has its own tests (tests/test_sip_transaction.py,
tests/test_sip_transport.py).
"""

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IUDPTransport
from zope.interface import implementer

from mbmsd.interfaces import IClientTransactionUser, ISipTransport, ITransactionUser
from mbmsd.sip.message import parse_message, serialize

__all__ = ["FakeSipTransport", "RecordingUser", "FakeDatagramTransport"]


@implementer(ISipTransport)
class FakeSipTransport:
    """
    Records what is sent: C{sent} is a list of C{(time, message, address)}.
    Messages go through serialize + parse so that what is recorded is what a
    peer would see. Set C{fail} to make C{send} raise (a transport error).
    """

    def __init__(self, clock, name="UDP", reliable=False):
        self.clock = clock
        self.name = name
        self.reliable = reliable
        self.fail = False
        self.sent = []
        self.wire = []          # the bytes of each send, in order

    def send(self, message, address):
        if self.fail:
            raise ConnectionError("fake transport failure")
        copy = parse_message(serialize(message))
        self.sent.append((self.clock.seconds(), copy, address))
        self.wire.append(serialize(message))

    def sendBytes(self, data, address):
        """A kept retransmission: C{wire} records the exact bytes."""
        if self.fail:
            raise ConnectionError("fake transport failure")
        self.sent.append((self.clock.seconds(), parse_message(data), address))
        self.wire.append(bytes(data))

    def messages(self):
        return [m for _, m, _ in self.sent]

    def times(self):
        return [t for t, _, _ in self.sent]


@implementer(ITransactionUser, IClientTransactionUser)
class RecordingUser:
    """
    A transaction user that records every call in C{events} as tuples
    (C{("request", request, txn)}, C{("ack", request, transport, source)},
    C{("stray", response, transport, source)}, C{("failed", txn, reason)},
    C{("response", response, txn)}). C{on_request}, when set, is called with
    (request, txn) to answer.
    """

    def __init__(self):
        self.events = []
        self.on_request = None

    def requestReceived(self, request, transaction):
        self.events.append(("request", request, transaction))
        if self.on_request is not None:
            self.on_request(request, transaction)

    def ackReceived(self, request, transport, source):
        self.events.append(("ack", request, transport, source))

    def strayResponseReceived(self, response, transport, source):
        self.events.append(("stray", response, transport, source))

    def transactionFailed(self, transaction, reason):
        self.events.append(("failed", transaction, reason))

    def responseReceived(self, response, transaction):
        self.events.append(("response", response, transaction))

    def kinds(self):
        return [e[0] for e in self.events]

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


@implementer(IUDPTransport)
class FakeDatagramTransport:
    """
    An in-memory UDP port: C{written} holds C{(bytes, addr)}. Set
    C{fail_write} to make C{write} raise like a socket error would.
    """

    def __init__(self, host="127.0.0.1", port=5060):
        self.host = host
        self.port = port
        self.written = []
        self.fail_write = False
        self.connected = None
        self.stopped = False

    def write(self, packet, addr=None):
        if self.fail_write:
            raise OSError("fake sendto failure")
        if not isinstance(packet, bytes):
            raise TypeError("datagrams are bytes")
        self.written.append((packet, addr))

    def connect(self, host, port):
        self.connected = (host, port)

    def getHost(self):
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self):
        self.stopped = True

    loseConnection = stopListening

    def setBroadcastAllowed(self, enabled):
        self._broadcast = bool(enabled)

    def getBroadcastAllowed(self):
        return getattr(self, "_broadcast", False)
