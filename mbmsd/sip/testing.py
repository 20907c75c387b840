"""
Fakes for testing code built on the SIP layer (the way
C{twisted.internet.testing} serves Twisted). Each is checked against its
interface and has its own tests (tests/test_sip_transaction.py,
tests/test_sip_transport.py).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorTime, IUDPTransport
from zope.interface import implementer

from mbmsd.interfaces import IClientTransactionUser, ISipTransport, ITransactionUser
from mbmsd.sip.message import BytesLike, Message, Request, Response, parse_message, serialize

# (host, port); None from a source-less hop
_Address = tuple[str, int] | None

__all__ = ["FakeSipTransport", "RecordingUser", "FakeDatagramTransport"]


@implementer(ISipTransport)
class FakeSipTransport:
    """
    Records what is sent: C{sent} is a list of C{(time, message, address)}.
    Messages go through serialize + parse so that what is recorded is what a
    peer would see. Set C{fail} to make C{send} raise (a transport error).
    """

    def __init__(self, clock: IReactorTime, name: str = "UDP", reliable: bool = False) -> None:
        self.clock = clock
        self.name = name
        self.reliable = reliable
        self.fail = False
        self.sent: list[tuple[float, Message, _Address]] = []
        self.wire: list[bytes] = []          # the bytes of each send, in order

    def send(self, message: Message, address: _Address) -> None:
        if self.fail:
            raise ConnectionError("fake transport failure")
        copy = parse_message(serialize(message))
        self.sent.append((self.clock.seconds(), copy, address))
        self.wire.append(serialize(message))

    def sendBytes(self, data: BytesLike, address: _Address) -> None:
        """A kept retransmission: C{wire} records the exact bytes."""
        if self.fail:
            raise ConnectionError("fake transport failure")
        self.sent.append((self.clock.seconds(), parse_message(data), address))
        self.wire.append(bytes(data))

    def messages(self) -> list[Message]:
        return [m for _, m, _ in self.sent]

    def times(self) -> list[float]:
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

    def __init__(self) -> None:
        # ("request", request, txn) and the other kinds above
        self.events: list[tuple[object, ...]] = []
        self.on_request: Callable[[Request, object], object] | None = None

    def requestReceived(self, request: Request, transaction: object) -> None:
        self.events.append(("request", request, transaction))
        if self.on_request is not None:
            self.on_request(request, transaction)

    def ackReceived(self, request: Request, transport: ISipTransport, source: _Address) -> None:
        self.events.append(("ack", request, transport, source))

    def strayResponseReceived(
        self, response: Response, transport: ISipTransport, source: _Address,
    ) -> None:
        self.events.append(("stray", response, transport, source))

    def transactionFailed(self, transaction: object, reason: str) -> None:
        self.events.append(("failed", transaction, reason))

    def responseReceived(self, response: Response, transaction: object) -> None:
        self.events.append(("response", response, transaction))

    def kinds(self) -> list[object]:
        return [e[0] for e in self.events]

    def of(self, kind: str) -> list[tuple[object, ...]]:
        return [e for e in self.events if e[0] == kind]


@implementer(IUDPTransport)
class FakeDatagramTransport:
    """
    An in-memory UDP port: C{written} holds C{(bytes, addr)}. Set
    C{fail_write} to make C{write} raise like a socket error would.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5060) -> None:
        self.host = host
        self.port = port
        self.written: list[tuple[bytes, tuple[str, int] | None]] = []
        self.fail_write = False
        self.connected: tuple[str, int] | None = None
        self.stopped = False

    def write(self, packet: bytes, addr: tuple[str, int] | None = None) -> None:
        if self.fail_write:
            raise OSError("fake sendto failure")
        if not isinstance(packet, bytes):
            raise TypeError("datagrams are bytes")
        self.written.append((packet, addr))

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self) -> None:
        self.stopped = True

    loseConnection = stopListening

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self._broadcast = bool(enabled)

    def getBroadcastAllowed(self) -> bool:
        allowed: bool = getattr(self, "_broadcast", False)
        return allowed
