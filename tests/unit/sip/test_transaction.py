"""
Tests for mbmsd.sip.transaction: the four RFC 3261 17 machines on a Clock.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mbmsd.interfaces import IClientTransactionUser, ISipTransport, ITransactionUser
from mbmsd.sip.grammar import parse_via
from mbmsd.sip.message import Request, make_response, parse_message, serialize
from mbmsd.sip.testing import FakeSipTransport, RecordingUser
from mbmsd.sip.transaction import (
    ClientInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TimerSettings,
    TransactionError,
    TransactionLayer,
    response_address,
    stamp_via,
)

UE = ("192.0.2.10", 5060)
SCF = ("192.0.2.20", 5070)


def request(method="INVITE", branch="z9hG4bKue1", sent_by="192.0.2.10:5060",
            cseq=1, extra=()):
    lines = [
        "%s sip:urn%%3Ambmsd%%3Anews@mbms.home1.net SIP/2.0" % (method,),
        "Via: SIP/2.0/UDP %s;branch=%s" % (sent_by, branch),
        "Max-Forwards: 70",
        "From: <sip:user1@home1.net>;tag=ue",
        "To: <sip:urn%3Ambmsd%3Anews@mbms.home1.net>",
        "Call-ID: call-1@192.0.2.10",
        "CSeq: %d %s" % (cseq, method),
        "Contact: <sip:user1@192.0.2.10>",
    ] + list(extra)
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def wire(message):
    """What a peer would parse: through bytes and back."""
    return parse_message(serialize(message))


class FakesTests(SynchronousTestCase):
    """The fakes prove themselves (docs/design.md 3)."""

    def test_interfaces(self):
        clock = Clock()
        self.assertTrue(verifyObject(ISipTransport, FakeSipTransport(clock)))
        user = RecordingUser()
        self.assertTrue(verifyObject(ITransactionUser, user))
        self.assertTrue(verifyObject(IClientTransactionUser, user))

    def test_fake_transport_records_and_fails(self):
        clock = Clock()
        t = FakeSipTransport(clock, "TCP", reliable=True)
        clock.advance(3)
        t.send(request(), SCF)
        self.assertEqual(t.times(), [3])
        self.assertEqual(t.messages()[0].method, "INVITE")
        self.assertEqual(t.sent[0][2], SCF)
        self.assertIsNot(t.messages()[0], request())
        t.fail = True
        self.assertRaises(ConnectionError, t.send, request(), SCF)

    def test_recording_user_answers(self):
        user = RecordingUser()
        answered = []
        user.on_request = lambda req, txn: answered.append(req)
        user.requestReceived("r", "t")
        user.responseReceived("resp", "t")
        self.assertEqual(user.kinds(), ["request", "response"])
        self.assertEqual(answered, ["r"])
        self.assertEqual(user.of("response"), [("response", "resp", "t")])


class Base(SynchronousTestCase):

    reliable = False

    def setUp(self):
        self.clock = Clock()
        self.user = RecordingUser()
        self.transport = FakeSipTransport(
            self.clock, "TCP" if self.reliable else "UDP", self.reliable)
        self.layer = TransactionLayer(self.clock, self.user)

    def advance_to(self, t):
        """Advance to C{t}, stopping at each due call (so sends see its time)."""
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            nxt = min(due) if due else None
            if nxt is None or nxt > t:
                break
            self.clock.advance(max(0, nxt - self.clock.seconds()))
        self.clock.advance(t - self.clock.seconds())

    def responses(self):
        return [e[1] for e in self.user.of("response")]


class ClientInviteTests(Base):

    def send(self):
        invite = request(branch="z9hG4bKout1", sent_by="192.0.2.20:5070")
        self.txn = self.layer.sendRequest(invite, self.transport, UE, self.user)
        return invite

    def test_retransmits_then_times_out(self):
        self.send()
        self.assertIsInstance(self.txn, ClientInviteTransaction)
        self.assertEqual(self.transport.times(), [0])
        self.advance_to(31.9)
        # Timer A: T1, 2T1, 4T1... uncapped
        self.assertEqual(self.transport.times(), [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        self.assertEqual(self.user.events, [])
        self.advance_to(32)
        [resp] = self.responses()
        self.assertEqual(resp.status, 408)
        self.assertTrue(resp.local)
        self.assertEqual(resp.callId, "call-1@192.0.2.10")
        self.assertEqual(self.txn.state, "Terminated")
        self.assertEqual(self.layer.client_transactions, {})
        self.advance_to(100)
        self.assertEqual(len(self.transport.sent), 7)
        self.assertEqual(len(self.user.events), 1)

    def test_provisional_stops_timers(self):
        invite = self.send()
        self.clock.advance(0.6)
        self.layer.receive(wire(make_response(invite, 180, to_tag="t1")),
                           self.transport, UE)
        self.assertEqual(self.txn.state, "Proceeding")
        self.advance_to(200)
        self.assertEqual(len(self.transport.sent), 2)
        self.assertEqual([r.status for r in self.responses()], [180])

    def test_non_2xx_generates_ack(self):
        invite = self.send()
        busy = wire(make_response(invite, 486, to_tag="t2"))
        self.layer.receive(busy, self.transport, UE)
        self.assertEqual(self.txn.state, "Completed")
        ack = self.transport.messages()[-1]
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.uri, invite.uri)
        self.assertEqual(ack.cseq, (1, "ACK"))
        self.assertEqual(ack.topVia.branch, "z9hG4bKout1")
        self.assertEqual(ack.toTag, "t2")
        self.assertEqual(ack.fromTag, "ue")
        self.assertEqual([r.status for r in self.responses()], [486])
        # a retransmitted 486 is answered with the ACK again, not passed up
        self.clock.advance(1)
        self.layer.receive(busy, self.transport, UE)
        self.assertEqual([m.method for m in self.transport.messages()],
                         ["INVITE", "ACK", "ACK"])
        self.assertEqual(len(self.responses()), 1)
        # Timer D (32 s on UDP)
        self.advance_to(31.9)
        self.assertIn(self.txn.key, self.layer.client_transactions)
        self.advance_to(32)
        self.assertEqual(self.txn.state, "Terminated")
        self.layer.receive(busy, self.transport, UE)
        self.assertEqual(self.user.of("stray")[0][1].status, 486)

    def test_2xx_accepted_state(self):
        invite = self.send()
        ok = wire(make_response(invite, 200, to_tag="t3"))
        self.layer.receive(ok, self.transport, UE)
        self.assertEqual(self.txn.state, "Accepted")
        self.layer.receive(ok, self.transport, UE)
        # RFC 6026: 2xx retransmissions go up; the ACK is the TU's business
        self.assertEqual([r.status for r in self.responses()], [200, 200])
        self.assertEqual([m.method for m in self.transport.messages()], ["INVITE"])
        self.advance_to(32)
        self.assertEqual(self.txn.state, "Terminated")

    def test_transport_error_is_503(self):
        self.transport.fail = True
        self.send()
        self.assertEqual([(r.status, r.local) for r in self.responses()], [(503, True)])
        self.assertEqual(self.layer.client_transactions, {})
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_branch_added_and_duplicates_refused(self):
        invite = request(branch="x")
        invite.headers.set("Via", "SIP/2.0/UDP 192.0.2.20:5070")
        txn = self.layer.sendRequest(invite, self.transport, UE, self.user)
        self.assertTrue(txn.branch.startswith("z9hG4bK"))
        self.assertEqual(self.transport.messages()[0].topVia.branch, txn.branch)
        self.assertRaises(ValueError, self.layer.sendRequest, invite,
                          self.transport, UE, self.user)
        self.assertRaises(ValueError, self.layer.sendRequest,
                          request("ACK", cseq=1), self.transport, UE, self.user)
        novia = request()
        novia.headers.remove("Via")
        self.assertRaises(ValueError, self.layer.sendRequest, novia,
                          self.transport, UE, self.user)


class ClientInviteReliableTests(Base):

    reliable = True

    def test_no_retransmission_timeout_still(self):
        invite = request(branch="z9hG4bKr1")
        txn = self.layer.sendRequest(invite, self.transport, UE, self.user)
        self.advance_to(31.9)
        self.assertEqual(len(self.transport.sent), 1)
        self.advance_to(32)
        self.assertEqual([r.status for r in self.responses()], [408])
        self.assertEqual(txn.state, "Terminated")

    def test_timer_d_zero(self):
        invite = request(branch="z9hG4bKr2")
        txn = self.layer.sendRequest(invite, self.transport, UE, self.user)
        self.layer.receive(wire(make_response(invite, 403, to_tag="x")),
                           self.transport, UE)
        self.assertEqual(txn.state, "Terminated")
        self.assertEqual([m.method for m in self.transport.messages()], ["INVITE", "ACK"])


class ClientNonInviteTests(Base):

    def test_retransmits_capped_at_t2_then_times_out(self):
        req = request("OPTIONS", branch="z9hG4bKo1")
        txn = self.layer.sendRequest(req, self.transport, SCF, self.user)
        self.advance_to(31.99)
        self.assertEqual(self.transport.times(),
                         [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
        self.advance_to(32)
        self.assertEqual([(r.status, r.local) for r in self.responses()], [(408, True)])
        self.assertEqual(txn.state, "Terminated")
        self.assertEqual(self.transport.sent[0][2], SCF)

    def test_provisional_then_final(self):
        req = request("REGISTER", branch="z9hG4bKo2")
        txn = self.layer.sendRequest(req, self.transport, SCF, self.user)
        self.clock.advance(0.2)
        self.layer.receive(wire(make_response(req, 100)), self.transport, SCF)
        self.assertEqual(txn.state, "Proceeding")
        self.advance_to(10)
        # in Proceeding, E keeps firing (first at 0.5, then at T2 intervals)
        self.assertEqual(self.transport.times(), [0, 0.5, 4.5, 8.5])
        final = wire(make_response(req, 200, to_tag="r"))
        self.layer.receive(final, self.transport, SCF)
        self.assertEqual(txn.state, "Completed")
        self.layer.receive(final, self.transport, SCF)
        self.assertEqual([r.status for r in self.responses()], [100, 200])
        self.advance_to(14.9)
        self.assertEqual(txn.state, "Completed")
        self.advance_to(15)     # Timer K = T4
        self.assertEqual(txn.state, "Terminated")
        self.assertEqual(len(self.transport.sent), 4)

    def test_response_matching_uses_method(self):
        invite = request(branch="z9hG4bKsame")
        itxn = self.layer.sendRequest(invite, self.transport, UE, self.user)
        cancel_req = request("CANCEL", branch="z9hG4bKsame")
        ctxn = self.layer.sendRequest(cancel_req, self.transport, UE, self.user)
        self.layer.receive(wire(make_response(cancel_req, 200)), self.transport, UE)
        self.assertEqual(ctxn.state, "Completed")
        self.assertEqual(itxn.state, "Calling")
        self.layer.receive(wire(make_response(invite, 487, to_tag="x")),
                           self.transport, UE)
        self.assertEqual(itxn.state, "Completed")

    def test_user_exception_contained(self):
        class Boom(RecordingUser):
            def responseReceived(self, response, transaction):
                raise RuntimeError("tu bug")
        req = request("OPTIONS", branch="z9hG4bKo3")
        txn = self.layer.sendRequest(req, self.transport, SCF, Boom())
        self.layer.receive(wire(make_response(req, 200)), self.transport, SCF)
        self.assertEqual(txn.state, "Completed")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ClientNonInviteReliableTests(Base):

    reliable = True

    def test_no_retransmissions_no_wait(self):
        req = request("OPTIONS", branch="z9hG4bKo4")
        txn = self.layer.sendRequest(req, self.transport, SCF, self.user)
        self.advance_to(20)
        self.assertEqual(len(self.transport.sent), 1)
        self.layer.receive(wire(make_response(req, 200)), self.transport, SCF)
        self.assertEqual(txn.state, "Terminated")


class ServerInviteTests(Base):

    def receive(self, msg, source=UE):
        self.layer.receive(wire(msg), self.transport, source)

    def the_txn(self):
        [(_, req, txn)] = self.user.of("request")
        return req, txn

    def test_uas_trying_after_200ms(self):
        self.receive(request())
        req, txn = self.the_txn()
        self.assertIsInstance(txn, ServerInviteTransaction)
        self.assertEqual(txn.state, "Proceeding")
        self.assertEqual(self.transport.sent, [])
        self.advance_to(0.2)
        [(t, trying, addr)] = self.transport.sent
        self.assertEqual((t, trying.status, addr), (0.2, 100, UE))
        self.assertIsNone(trying.toTag)

    def test_no_trying_when_tu_answers_quickly(self):
        self.user.on_request = lambda req, txn: txn.respond(
            make_response(req, 180, to_tag="s"))
        self.receive(request())
        self.advance_to(5)
        self.assertEqual([m.status for m in self.transport.messages()], [180])

    def test_proxy_trying_immediately(self):
        self.layer = TransactionLayer(self.clock, self.user,
                                      TimerSettings(trying_delay=0))
        self.receive(request())
        self.assertEqual([m.status for m in self.transport.messages()], [100])
        self.layer = TransactionLayer(self.clock, self.user,
                                      TimerSettings(trying_delay=None))
        self.receive(request(branch="z9hG4bKother"))
        self.advance_to(5)
        self.assertEqual(len(self.transport.sent), 1)

    def test_retransmitted_invite_absorbed(self):
        invite = request()
        self.receive(invite)
        self.receive(invite)        # before any response: nothing to resend
        self.assertEqual(self.transport.sent, [])
        req, txn = self.the_txn()
        txn.respond(make_response(req, 180, to_tag="s"))
        self.receive(invite)
        self.receive(invite)
        self.assertEqual([m.status for m in self.transport.messages()], [180, 180, 180])
        self.assertEqual(len(self.user.of("request")), 1)
        self.assertEqual(len(self.layer.server_transactions), 1)

    def test_non_2xx_retransmitted_until_ack(self):
        invite = request()
        self.receive(invite)
        req, txn = self.the_txn()
        txn.respond(make_response(req, 403, to_tag="s"))
        self.assertEqual(txn.state, "Completed")
        self.advance_to(20)
        # Timer G: T1, 2T1, 4T1, then capped at T2
        self.assertEqual(self.transport.times(), [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5])
        self.receive(invite)        # retransmitted INVITE: last response again
        self.assertEqual(len(self.transport.sent), 9)
        ack = request("ACK", extra=[])
        ack.headers.set("To", self.transport.messages()[0].headers.get("To"))
        self.receive(ack)
        self.assertEqual(txn.state, "Confirmed")
        self.receive(ack)           # absorbed
        self.assertEqual(self.user.of("ack"), [])
        self.advance_to(24.9)
        self.assertEqual(len(self.transport.sent), 9)
        self.assertEqual(txn.state, "Confirmed")
        self.advance_to(25)         # Timer I = T4
        self.assertEqual(txn.state, "Terminated")
        self.assertEqual(self.user.of("failed"), [])

    def test_timer_h(self):
        self.receive(request())
        req, txn = self.the_txn()
        txn.respond(make_response(req, 404, to_tag="s"))
        self.advance_to(31.9)
        self.assertEqual(self.user.of("failed"), [])
        self.advance_to(32)
        self.assertEqual(self.user.of("failed"), [("failed", txn, "timeout")])
        self.assertEqual(txn.state, "Terminated")
        self.assertEqual(self.layer.server_transactions, {})
        self.assertRaises(TransactionError, txn.respond, make_response(req, 500))

    def test_2xx_accepted_and_ack_to_tu(self):
        invite = request()
        self.receive(invite)
        req, txn = self.the_txn()
        ok = make_response(req, 200, to_tag="s")
        txn.respond(ok)
        self.assertEqual(txn.state, "Accepted")
        self.receive(invite)        # absorbed, not resent, not passed up
        self.assertEqual(len(self.transport.sent), 1)
        self.assertEqual(len(self.user.of("request")), 1)
        txn.respond(ok)             # the TU's own 2xx retransmission passes
        self.assertEqual(len(self.transport.sent), 2)
        ack = request("ACK", branch="z9hG4bKack2xx")
        self.receive(ack)
        [(_, got, transport, source)] = self.user.of("ack")
        self.assertEqual((got.method, transport, source), ("ACK", self.transport, UE))
        self.assertEqual(txn.state, "Accepted")
        self.advance_to(32)         # Timer L
        self.assertEqual(txn.state, "Terminated")
        self.assertRaises(TransactionError, txn.respond, make_response(req, 200))

    def test_transport_error_reported(self):
        self.receive(request())
        req, txn = self.the_txn()
        self.transport.fail = True
        txn.respond(make_response(req, 486, to_tag="s"))
        self.assertEqual(self.user.of("failed"), [("failed", txn, "transport")])
        self.assertEqual(txn.state, "Terminated")
        self.flushLoggedErrors(ConnectionError)


class ServerInviteReliableTests(Base):

    reliable = True

    def test_no_retransmission_and_timer_i_zero(self):
        self.layer.receive(wire(request()), self.transport, UE)
        [(_, req, txn)] = self.user.of("request")
        txn.respond(make_response(req, 486, to_tag="s"))
        self.advance_to(31)
        self.assertEqual(len(self.transport.sent), 1)
        self.layer.receive(wire(request("ACK")), self.transport, UE)
        self.assertEqual(txn.state, "Terminated")


class ServerNonInviteTests(Base):

    def test_absorb_then_resend_final(self):
        opt = request("OPTIONS")
        self.layer.receive(wire(opt), self.transport, UE)
        [(_, req, txn)] = self.user.of("request")
        self.assertIsInstance(txn, ServerNonInviteTransaction)
        self.layer.receive(wire(opt), self.transport, UE)     # Trying: absorbed
        self.assertEqual(self.transport.sent, [])
        txn.respond(make_response(req, 100))
        self.assertEqual(txn.state, "Proceeding")
        self.layer.receive(wire(opt), self.transport, UE)
        self.assertEqual([m.status for m in self.transport.messages()], [100, 100])
        txn.respond(make_response(req, 200, to_tag="s"))
        self.assertEqual(txn.state, "Completed")
        self.layer.receive(wire(opt), self.transport, UE)
        self.assertEqual([m.status for m in self.transport.messages()],
                         [100, 100, 200, 200])
        self.assertRaises(TransactionError, txn.respond, make_response(req, 500))
        self.assertEqual(len(self.user.of("request")), 1)
        self.advance_to(31.9)
        self.assertEqual(txn.state, "Completed")
        self.advance_to(32)         # Timer J
        self.assertEqual(txn.state, "Terminated")
        # after J, the same request is new again
        self.layer.receive(wire(opt), self.transport, UE)
        self.assertEqual(len(self.user.of("request")), 2)

    def test_reliable_timer_j_zero(self):
        transport = FakeSipTransport(self.clock, "TCP", reliable=True)
        self.layer.receive(wire(request("BYE", cseq=2)), transport, UE)
        [(_, req, txn)] = self.user.of("request")
        txn.respond(make_response(req, 200))
        self.assertEqual(txn.state, "Terminated")
        self.assertEqual(transport.sent[0][2], UE)


class MatchingTests(Base):

    def test_sent_by_and_method_distinguish(self):
        self.layer.receive(wire(request()), self.transport, UE)
        self.layer.receive(wire(request(sent_by="192.0.2.11:5060")), self.transport,
                           ("192.0.2.11", 5060))
        self.layer.receive(wire(request("CANCEL")), self.transport, UE)
        self.assertEqual(len(self.user.of("request")), 3)
        txns = [e[2] for e in self.user.of("request")]
        cancel_txn = txns[2]
        self.assertIsInstance(cancel_txn, ServerNonInviteTransaction)
        self.assertIs(self.layer.findInvite(cancel_txn.request), txns[0])
        self.assertIsNone(self.layer.findInvite(request("CANCEL", branch="z9hG4bKnone")))

    def test_ack_outside_transaction_goes_to_tu(self):
        self.layer.receive(wire(request("ACK")), self.transport, UE)
        self.assertEqual(self.user.kinds(), ["ack"])
        self.assertEqual(self.layer.server_transactions, {})

    def test_rfc2543_retransmission_matches(self):
        old = request("OPTIONS", branch="1234")
        self.layer.receive(wire(old), self.transport, UE)
        self.layer.receive(wire(old), self.transport, UE)
        self.assertEqual(len(self.user.of("request")), 1)
        other = request("OPTIONS", branch="1234", cseq=2)
        self.layer.receive(wire(other), self.transport, UE)
        self.assertEqual(len(self.user.of("request")), 2)

    def test_stray_response(self):
        resp = wire(make_response(request(branch="z9hG4bKnobody"), 200))
        self.layer.receive(resp, self.transport, SCF)
        [(_, got, transport, source)] = self.user.of("stray")
        self.assertEqual((got.status, transport, source), (200, self.transport, SCF))

    def test_received_and_rport(self):
        natted = ("203.0.113.5", 40000)
        req = request("OPTIONS", extra=[])
        req.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKnat")
        self.layer.receive(wire(req), self.transport, natted)
        [(_, got, txn)] = self.user.of("request")
        via = got.topVia
        self.assertEqual((via.received, via.rport), ("203.0.113.5", 40000))
        txn.respond(make_response(got, 200))
        [(_, resp, addr)] = self.transport.sent
        self.assertEqual(addr, natted)
        self.assertEqual(resp.topVia.received, "203.0.113.5")

    def test_received_without_rport(self):
        req = request("OPTIONS")
        req.headers.set("Via", "SIP/2.0/UDP ue.home1.net:5062;branch=z9hG4bKh")
        via = stamp_via(req, ("192.0.2.99", 1111))
        self.assertEqual(via.received, "192.0.2.99")
        self.assertEqual(response_address(via, self.transport, ("192.0.2.99", 1111)),
                         ("192.0.2.99", 5062))
        tcp = FakeSipTransport(self.clock, "TCP", reliable=True)
        self.assertEqual(response_address(via, tcp, ("192.0.2.99", 1111)),
                         ("192.0.2.99", 1111))
        same = request("OPTIONS")
        stamp_via(same, UE)
        self.assertNotIn("received", same.topVia.params)

    def test_an_empty_rport_means_the_source_port(self):
        # RFC 3581 4, also for a Via nobody stamped (the answer to a malformed request)
        via = parse_via("SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKr")
        self.assertEqual(response_address(via, self.transport, ("192.0.2.99", 1111)),
                         ("192.0.2.99", 1111))

    def test_request_user_exception_contained(self):
        def boom(req, txn):
            raise RuntimeError("tu bug")
        self.user.on_request = boom
        self.layer.receive(wire(request("OPTIONS")), self.transport, UE)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.layer.server_transactions), 1)

    def test_send_stateless(self):
        ack = request("ACK", branch="z9hG4bKst")
        self.layer.sendStateless(ack, self.transport, UE)
        self.assertEqual(self.transport.messages()[0].method, "ACK")
        self.assertIsInstance(ack, Request)


def reachable(root, shared=(), limit=10000):
    """
    The objects reachable from C{root} through gc referents, not looking
    into classes, modules or C{shared} (the transports: one for every call,
    and the fake's records of what it sent).
    """
    import gc
    import types
    seen, todo = {}, [root]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        if not isinstance(obj, (type, types.ModuleType)) and not any(
                obj is s for s in shared):
            todo.extend(gc.get_referents(obj))
    return list(seen.values())


class SlimFinishedTests(Base):
    """
    Finished transactions keep only their key and the serialized answer
    (RFC 3261 17.2.1, 17.2.2, 17.1.1.2) and end in one sweep.
    """

    def finishedRecords(self):
        return [v for table in (self.layer.server_transactions,
                                self.layer.client_transactions)
                for v in table.values()]

    def assertSlim(self):
        import types

        from mbmsd.sip.headers import Headers
        from mbmsd.sip.message import Response
        from mbmsd.sip.transaction import _Transaction
        records = self.finishedRecords()
        self.assertTrue(records)
        for record in records:
            for obj in reachable(record, shared=[self.transport]):
                self.assertNotIsInstance(
                    obj, (Request, Response, Headers, _Transaction,
                          types.MethodType, types.FunctionType))

    def answerOptions(self, count):
        """C{count} OPTIONS answered 200 and dropped by their TU."""
        answered = []
        for i in range(count):
            opt = request("OPTIONS", branch="z9hG4bKo%d" % (i,), cseq=i + 1)
            self.layer.receive(wire(opt), self.transport, UE)
            _, req, txn = self.user.of("request")[-1]
            response = make_response(req, 200, to_tag="s")
            txn.respond(response)
            answered.append(opt)
        del self.user.events[:]      # the TU drops its transactions
        return answered

    def test_non_invite_resent_identically_until_timer_j(self):
        [opt] = self.answerOptions(1)
        first = self.transport.wire[-1]
        self.assertSlim()
        self.advance_to(31.5)
        self.layer.receive(wire(opt), self.transport, UE)
        self.assertEqual(self.transport.wire[-1], first)
        self.assertEqual(len(self.transport.wire), 2)
        self.advance_to(32.5)       # Timer J = 64*T1, at most one sweep late
        self.assertEqual(self.layer.server_transactions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_invite_non_2xx_confirmed_then_swept(self):
        invite = request()
        self.layer.receive(wire(invite), self.transport, UE)
        [(_, req, txn)] = self.user.of("request")
        txn.respond(make_response(req, 486, to_tag="s"))
        busy = self.transport.wire[-1]
        # Completed: a retransmitted INVITE gets the same bytes
        self.layer.receive(wire(invite), self.transport, UE)
        self.assertEqual(self.transport.wire[-1], busy)
        ack = request("ACK")
        self.layer.receive(wire(ack), self.transport, UE)
        self.assertEqual(txn.state, "Confirmed")
        del txn
        self.assertSlim()
        sent = len(self.transport.wire)
        self.layer.receive(wire(invite), self.transport, UE)   # absorbed
        self.assertEqual(len(self.transport.wire), sent)
        self.advance_to(5.6)        # Timer I = T4
        self.assertEqual(self.layer.server_transactions, {})

    def test_invite_2xx_accepted_keeps_nothing_of_the_transaction(self):
        invite = request()
        self.layer.receive(wire(invite), self.transport, UE)
        [(_, req, txn)] = self.user.of("request")
        txn.respond(make_response(req, 200, to_tag="s"))
        del txn, req
        self.assertSlim()
        sent = len(self.transport.wire)
        self.layer.receive(wire(invite), self.transport, UE)   # absorbed
        self.assertEqual(len(self.transport.wire), sent)
        # RFC 6026 7.1: the ACK goes up to the TU
        self.layer.receive(wire(request("ACK")), self.transport, UE)
        self.assertEqual(len(self.user.of("ack")), 1)
        # a CANCEL finds it answered: no effect (RFC 3261 9.2)
        cancel = wire(request("CANCEL"))
        self.assertEqual(self.layer.findInvite(cancel).state, "Accepted")
        self.advance_to(32.5)       # Timer L
        self.assertEqual(self.layer.server_transactions, {})
        self.assertIsNone(self.layer.findInvite(cancel))

    def test_client_invite_completed_resends_the_ack_bytes(self):
        invite = request(branch="z9hG4bKc1")
        self.layer.sendRequest(invite, self.transport, SCF, self.user)
        busy = wire(make_response(invite, 486, to_tag="t"))
        self.layer.receive(busy, self.transport, SCF)
        ack = self.transport.wire[-1]
        self.assertTrue(ack.startswith(b"ACK "))
        self.assertSlim()
        self.advance_to(31)
        self.layer.receive(busy, self.transport, SCF)
        self.assertEqual(self.transport.wire[-1], ack)
        self.advance_to(32.5)       # Timer D
        self.assertEqual(self.layer.client_transactions, {})

    def test_one_sweep_for_many_transactions(self):
        self.answerOptions(200)
        self.clock.advance(0.3)
        invite = request(branch="z9hG4bKi")
        self.layer.receive(wire(invite), self.transport, UE)
        _, req, txn = self.user.of("request")[-1]
        txn.respond(make_response(req, 200, to_tag="s"))
        del txn, req
        self.assertEqual(len(self.layer.server_transactions), 201)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertSlim()
        for _ in range(70):
            self.clock.advance(0.5)
            self.assertLessEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.layer.server_transactions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transport_error_on_resend_ends_the_record(self):
        [opt] = self.answerOptions(1)
        self.transport.fail = True
        self.layer.receive(wire(opt), self.transport, UE)
        self.assertEqual(self.layer.server_transactions, {})
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
