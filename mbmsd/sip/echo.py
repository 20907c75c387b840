"""
A tiny echo UAS built from the SIP layer, for interoperability tests (sipp)
and as the smallest example of a transaction user.

INVITE -> 200 OK with a To tag, a Contact and the offer's body echoed (2xx
retransmitted until the ACK, RFC 3261 13.3.1.4); BYE, CANCEL, OPTIONS,
REGISTER -> 200 OK; anything else -> 501.

    python -m mbmsd.sip.echo --port 5070 [--host 127.0.0.1] [--tcp]

prints C{listening udp HOST PORT} (and tcp) once bound; port 0 picks one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from mbmsd.interfaces import ISipTransport, ITransactionUser
from mbmsd.logs import Logger
from mbmsd.sip.message import Request, Response, make_response
from mbmsd.sip.transaction import (
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TimerSettings,
    TransactionError,
    TransactionLayer,
)

log = Logger(namespace="mbmsd.sip.echo")


@implementer(ITransactionUser)
class EchoUAS:
    """The echo transaction user. C{clock} drives 2xx retransmissions."""

    def __init__(
        self, clock: IReactorTime, contact: str = "sip:echo@127.0.0.1",
        timers: TimerSettings | None = None,
    ) -> None:
        self.clock = clock
        self.contact = contact
        self.layer = TransactionLayer(clock, self, timers)
        self.timers = self.layer.timers
        # (Call-ID, CSeq number) -> DelayedCall
        self.pending_2xx: dict[tuple[str | None, int], IDelayedCall] = {}
        self.counts: dict[str, int] = {}

    def requestReceived(
        self, request: Request,
        transaction: ServerInviteTransaction | ServerNonInviteTransaction,
    ) -> None:
        method = request.method
        self.counts[method] = self.counts.get(method, 0) + 1
        if method == "INVITE":
            response = make_response(request, 200, to_tag=True)
            response.headers.add("Contact", "<%s>" % (self.contact,))
            if request.body:
                response.headers.add(
                    "Content-Type",
                    request.headers.get("Content-Type", "application/sdp"))
                response.body = request.body
            transaction.respond(response)
            if not transaction.reliable:
                key = (request.callId, request.cseq[0])
                self._retransmit(key, transaction, response, self.timers.t1,
                                 self.clock.seconds() + self.timers.timer_h)
            return
        if method in ("BYE", "CANCEL", "OPTIONS", "REGISTER"):
            transaction.respond(make_response(request, 200, to_tag=True))
            return
        transaction.respond(make_response(request, 501, to_tag=True))

    def _retransmit(
        self, key: tuple[str | None, int],
        transaction: ServerInviteTransaction | ServerNonInviteTransaction,
        response: Response, interval: float, deadline: float,
    ) -> None:
        def again() -> None:
            if self.clock.seconds() >= deadline:
                self.pending_2xx.pop(key, None)
                return
            try:
                transaction.respond(response)
            except TransactionError:        # Timer L ended it: give up
                self.pending_2xx.pop(key, None)
                return
            self._retransmit(key, transaction, response,
                             min(2 * interval, self.timers.t2), deadline)
        self.pending_2xx[key] = self.clock.callLater(interval, again)

    def ackReceived(
        self, request: Request, transport: ISipTransport, source: tuple[str, int] | None,
    ) -> None:
        self.counts["ACK"] = self.counts.get("ACK", 0) + 1
        call = self.pending_2xx.pop((request.callId, request.cseq[0]), None)
        if call is not None and call.active():
            call.cancel()

    def strayResponseReceived(
        self, response: Response, transport: ISipTransport, source: tuple[str, int] | None,
    ) -> None:
        pass

    def transactionFailed(self, transaction: object, reason: str) -> None:
        log.info("transaction {txn!r} failed: {reason}", txn=transaction,
                 reason=reason)


def main(argv: Sequence[str] | None = None, reactor: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mbmsd.sip.echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5070)
    parser.add_argument("--tcp", action="store_true",
                        help="listen on TCP too (same port number)")
    args = parser.parse_args(argv)
    if reactor is None:
        from twisted.internet import reactor as _reactor
        reactor = _reactor
    from mbmsd.sip.transport import SipDatagramProtocol, SipStreamFactory

    uas = EchoUAS(reactor)
    udp = reactor.listenUDP(args.port, SipDatagramProtocol(uas.layer),
                            interface=args.host)
    port = udp.getHost().port
    uas.contact = "sip:echo@%s:%d" % (args.host, port)
    print("listening udp %s %d" % (args.host, port), flush=True)
    if args.tcp:
        tcp = reactor.listenTCP(port, SipStreamFactory(uas.layer),
                                interface=args.host)
        print("listening tcp %s %d" % (args.host, tcp.getHost().port),
              flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
