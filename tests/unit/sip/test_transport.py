"""
Tests for mbmsd.sip.transport and the echo UAS, with in-memory transports:
FakeDatagramTransport for UDP, StringTransport for TCP, Clock for time.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mbmsd.interfaces import ISipTransport, ITransactionUser
from mbmsd.sip.echo import EchoUAS
from mbmsd.sip.grammar import SipParseError
from mbmsd.sip.message import Response, SipStreamParser, parse_message
from mbmsd.sip.testing import FakeDatagramTransport, RecordingUser
from mbmsd.sip.transaction import TransactionLayer
from mbmsd.sip.transport import (
    SipDatagramProtocol,
    SipStreamFactory,
    SipStreamProtocol,
    error_response,
)

UE = ("127.0.0.1", 5061)


def invite(method="INVITE", cseq=1, branch="z9hG4bK1", body=b"v=0\r\n",
           transport="UDP", drop=(), version="SIP/2.0"):
    lines = ["%s sip:urn%%3Ambmsd%%3Anews@127.0.0.1:5070 %s" % (method, version),
             "Via: SIP/2.0/%s 127.0.0.1:5061;branch=%s" % (transport, branch),
             "From: sipp <sip:sipp@127.0.0.1:5061>;tag=1",
             "To: <sip:urn%3Ambmsd%3Anews@127.0.0.1:5070>",
             "Call-ID: 1-1@127.0.0.1", "CSeq: %d %s" % (cseq, method),
             "Contact: sip:sipp@127.0.0.1:5061", "Max-Forwards: 70",
             "Content-Type: application/sdp",
             "Content-Length: %5d" % (len(body),)]
    lines = [l for l in lines if l.split(":")[0] not in drop]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class FakeDatagramTransportTests(SynchronousTestCase):

    def test_fake(self):
        t = FakeDatagramTransport()
        self.assertTrue(verifyObject(IUDPTransport, t))
        t.write(b"x", UE)
        self.assertEqual(t.written, [(b"x", UE)])
        self.assertRaises(TypeError, t.write, "x", UE)
        t.fail_write = True
        self.assertRaises(OSError, t.write, b"y", UE)
        self.assertEqual(t.getHost().port, 5060)


class UDPTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.user)
        self.proto = SipDatagramProtocol(self.layer)
        self.udp = FakeDatagramTransport()
        self.proto.makeConnection(self.udp)

    def written(self):
        return [(parse_message(d), a) for d, a in self.udp.written]

    def test_interfaces(self):
        self.assertTrue(verifyObject(ISipTransport, self.proto))

    def test_request_to_layer_and_response_back(self):
        self.proto.datagramReceived(invite(), UE)
        [(_, req, txn)] = self.user.of("request")
        self.assertEqual(req.body, b"v=0\r\n")
        self.assertIs(txn.transport, self.proto)
        from mbmsd.sip.message import make_response
        txn.respond(make_response(req, 486, to_tag=True))
        [(resp, addr)] = self.written()
        self.assertEqual((resp.status, addr), (486, UE))

    def test_keepalive_ignored(self):
        self.proto.datagramReceived(b"\r\n\r\n", UE)
        self.proto.datagramReceived(b"", UE)
        self.assertEqual(self.user.events, [])
        self.assertEqual(self.udp.written, [])

    def test_parse_error_answered(self):
        self.proto.datagramReceived(invite(drop=("Max-Forwards",)), UE)
        [(resp, addr)] = self.written()
        self.assertEqual((resp.status, resp.reason), (400, "Bad Request: missing Max-Forwards"))
        self.assertEqual(addr, UE)
        self.assertTrue(resp.toTag)
        self.assertEqual(self.user.events, [])

    def test_parse_error_answered_and_logged(self):
        from twisted.logger import formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.proto.datagramReceived(invite(drop=("Max-Forwards",)), UE)
        self.assertEqual(len(self.written()), 1)
        self.assertIn("answered a malformed message from ('127.0.0.1', 5061): "
                      "400 Bad Request: missing Max-Forwards", [formatEvent(e) for e in events])

    def test_parse_error_answered_at_the_source_port_with_rport(self):
        # a UE behind NAT (RFC 3581): its Via's port is not where it listens
        natted = ("192.0.2.7", 40001)
        data = invite(drop=("Max-Forwards",)).replace(
            b"127.0.0.1:5061;branch", b"127.0.0.1:5061;rport;branch")
        self.proto.datagramReceived(data, natted)
        [(resp, addr)] = self.written()
        self.assertEqual((resp.status, addr), (400, natted))

    def test_version_answered_505(self):
        self.proto.datagramReceived(invite(version="SIP/3.0"), UE)
        [(resp, _)] = self.written()
        self.assertEqual(resp.status, 505)

    def test_oversized_answered_413(self):
        self.proto.datagramReceived(invite(body=b"x" * 70000), UE)
        [(resp, _)] = self.written()
        self.assertEqual(resp.status, 413)

    def test_unanswerable_dropped(self):
        self.proto.datagramReceived(b"\x00garbage\xff\r\n\r\n", UE)
        self.proto.datagramReceived(invite(drop=("Call-ID", "Max-Forwards")), UE)
        self.proto.datagramReceived(invite(method="ACK", drop=("Max-Forwards",)), UE)
        bad_resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"
        self.proto.datagramReceived(bad_resp, UE)
        self.assertEqual(self.udp.written, [])
        self.assertEqual(self.proto.dropped, 4)

    def test_exceptions_contained(self):
        class Broken:
            def receive(self, message, transport, source):
                raise RuntimeError("boom")
        proto = SipDatagramProtocol(Broken())
        proto.makeConnection(self.udp)
        proto.datagramReceived(invite(), UE)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # a write failure while answering a parse error is contained too
        self.udp.fail_write = True
        self.proto.datagramReceived(invite(drop=("Max-Forwards",)), UE)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_error_response_rules(self):
        try:
            parse_message(invite(drop=("To",)))
        except SipParseError as e:
            self.assertIsNone(error_response(e))
        self.assertIsNone(error_response(SipParseError(400, "Bad Request")))


class TCPTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.user)
        self.factory = SipStreamFactory(self.layer)
        self.proto = self.factory.buildProtocol(IPv4Address("TCP", *UE))
        self.tcp = StringTransport(peerAddress=IPv4Address("TCP", *UE))
        self.proto.makeConnection(self.tcp)

    def written(self):
        out = []
        SipStreamParser(out.append, self.fail).feed(self.tcp.value())
        return out

    def test_interfaces(self):
        self.assertIsInstance(self.proto, SipStreamProtocol)
        self.assertTrue(verifyObject(ISipTransport, self.proto))
        self.assertTrue(self.proto.reliable)

    def test_pipelined_split_and_answered_on_connection(self):
        data = (invite(transport="TCP") + b"\r\n\r\n"
                + invite("OPTIONS", 2, "z9hG4bK2", b"", "TCP"))
        for i in range(0, len(data), 7):
            self.proto.dataReceived(data[i:i + 7])
        reqs = self.user.of("request")
        self.assertEqual([r[1].method for r in reqs], ["INVITE", "OPTIONS"])
        self.assertEqual(self.tcp.value(), b"\r\n")    # pong to the ping
        self.tcp.clear()
        from mbmsd.sip.message import make_response
        reqs[1][2].respond(make_response(reqs[1][1], 200))
        self.assertEqual([m.status for m in self.written()], [200])
        self.assertEqual(reqs[1][2].state, "Terminated")  # Timer J = 0 on TCP

    def test_fatal_error_answers_and_closes(self):
        self.proto.dataReceived(invite(transport="TCP").replace(b"Content-Length", b"X-No"))
        [resp] = self.written()
        self.assertEqual(resp.status, 400)
        self.assertTrue(self.tcp.disconnecting)

    def test_nonfatal_error_keeps_connection(self):
        self.proto.dataReceived(invite(transport="TCP", drop=("Max-Forwards",))
                                + invite(transport="TCP", branch="z9hG4bK9"))
        [resp] = self.written()
        self.assertEqual(resp.status, 400)
        self.assertFalse(self.tcp.disconnecting)
        self.assertEqual(len(self.user.of("request")), 1)

    def test_send_after_close_is_transport_error(self):
        self.proto.dataReceived(invite(transport="TCP"))
        [(_, req, txn)] = self.user.of("request")
        self.proto.connectionLost(None)
        from mbmsd.sip.message import make_response
        txn.respond(make_response(req, 200, to_tag=True))
        self.assertEqual(self.user.of("failed"), [("failed", txn, "transport")])
        self.flushLoggedErrors(ConnectionError)

    def test_exceptions_contained(self):
        def boom(req, txn):
            raise RuntimeError("tu")
        self.user.on_request = boom
        self.proto.dataReceived(invite(transport="TCP"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.proto.dataReceived(invite(transport="TCP", branch="z9hG4bK3", cseq=3))
        self.assertEqual(len(self.user.of("request")), 2)
        self.flushLoggedErrors(RuntimeError)


class EchoUASTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.uas = EchoUAS(self.clock, "sip:echo@127.0.0.1:5070")
        self.proto = SipDatagramProtocol(self.uas.layer)
        self.udp = FakeDatagramTransport()
        self.proto.makeConnection(self.udp)

    def written(self):
        return [parse_message(d) for d, _ in self.udp.written]

    def test_interface(self):
        self.assertTrue(verifyObject(ITransactionUser, self.uas))

    def test_call(self):
        self.proto.datagramReceived(invite(), UE)
        [ok] = self.written()
        self.assertIsInstance(ok, Response)
        self.assertEqual(ok.status, 200)
        self.assertTrue(ok.toTag)
        self.assertEqual(ok.body, b"v=0\r\n")
        self.assertEqual(ok.headers.get("Contact"), "<sip:echo@127.0.0.1:5070>")
        # 2xx retransmitted (T1, 2T1...) until the ACK comes
        self.clock.advance(0.5)
        self.clock.advance(1.0)
        self.assertEqual(len(self.written()), 3)
        ack = invite("ACK", branch="z9hG4bKack", body=b"")
        self.proto.datagramReceived(ack, UE)
        self.clock.advance(10)
        self.assertEqual(len(self.written()), 3)
        self.proto.datagramReceived(invite("BYE", 2, "z9hG4bKbye", b""), UE)
        self.proto.datagramReceived(invite("MESSAGE", 3, "z9hG4bKm", b""), UE)
        self.assertEqual([m.status for m in self.written()[3:]], [200, 501])
        self.assertEqual(self.uas.counts, {"INVITE": 1, "ACK": 1, "BYE": 1,
                                           "MESSAGE": 1})

    def test_2xx_retransmission_gives_up(self):
        self.proto.datagramReceived(invite(), UE)
        self.clock.pump([0.5] * 200)
        n = len(self.written())
        self.assertEqual(self.uas.pending_2xx, {})
        self.clock.pump([1] * 50)
        self.assertEqual(len(self.written()), n)
