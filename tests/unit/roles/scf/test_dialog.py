"""
The SCF's dialogs (mbmsd.roles.scf.dialog) and their one timer
(mbmsd.roles.scf.sweep): the 2xx retransmitted until the ACK or 64*T1
(RFC 3261 13.3.1.4), a late ACK of an ended session matched, nothing kept
once the sweep passed, one DelayedCall for all the SCF's timers.
"""

import gc
import weakref

from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import logs
from mbmsd.roles.scf.sweep import Sweep
from mbmsd.sip.message import Request, Response, serialize
from tests.unit.roles.scf.test_core import Harness, in_dialog, invite
from tests.unit.test_reload import capturedLog

T1, T2 = 0.5, 4.0


def ours(clock):
    """The DelayedCalls the SCF's own modules scheduled (not the transactions')."""
    return [c for c in clock.getDelayedCalls()
            if getattr(getattr(c.func, "__self__", None), "__module__", "").startswith(
                "mbmsd.roles.scf")]


def reachable(roots, stop):
    """Every object reachable from C{roots}, not walking through C{stop}."""
    stop = {id(o) for o in stop}
    seen, todo, out = set(), list(roots), []
    while todo:
        o = todo.pop()
        if id(o) in seen or id(o) in stop:
            continue
        seen.add(id(o))
        out.append(o)
        todo.extend(gc.get_referents(o))
    return out


class RetransmissionTests(Harness):

    def twoHundreds(self):
        return [m for m in self.sent() if getattr(m, "status", 0) == 200]

    def test_2xxRetransmittedUntil64T1(self):
        ok = self.established()
        # RFC 3261 13.3.1.4: T1, doubling up to T2, until 64*T1 after the 2xx
        expected, t, interval = [], T1, T1
        while t < 64 * T1:
            expected.append(t)
            interval, t = min(2 * interval, T2), t + min(2 * interval, T2)
        start, at = self.clock.seconds(), []
        count = len(self.twoHundreds())
        for _ in range(int(40 / 0.25)):
            self.clock.advance(0.25)
            n = len(self.twoHundreds())
            at += [self.clock.seconds() - start] * (n - count)
            count = n
        self.assertEqual(at, expected)
        # each one the same bytes as the first
        self.assertEqual({serialize(m) for m in self.twoHundreds()}, {serialize(ok)})
        # then no ACK: the session ends, a BYE goes to the UE
        self.assertEqual(self.metric("mbmsd_scf_sessions_ended_total", reason="no_ack"), 1)
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])

    def test_ackStopsTheRetransmissions(self):
        ok = self.established()
        self.clock.advance(T1)
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        self.clock.pump([1.0] * 40)
        self.assertEqual(len(self.twoHundreds()), 2)
        self.assertEqual(self.metric("mbmsd_scf_sessions"), 1)
        self.assertEqual(self.metric("mbmsd_scf_sessions_ended_total", reason="no_ack"), 0)

    def test_ackAfterTheSessionEndedIsMatched(self):
        ok = self.established()
        # the BYE overtakes the ACK (UDP): the session ends, its 2xx stops
        self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))
        key = ("c1", ok.toTag, "ue1")
        self.assertEqual(self.core.dialogs, {})
        self.assertEqual(self.core.dialog.ended, {key: 1})
        sent = len(self.sent())
        previous = logs.level()
        logs.setLevel("debug")
        self.addCleanup(logs.setLevel, previous)
        with capturedLog() as events:
            self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
            # an ACK of another CSeq is not this 2xx's
            self.receive(in_dialog("ACK", ok, 7, "z9hG4bK-ack7"))
        matched = [e for e in events if e.get("log_namespace") == "mbmsd.scf"
                   and "ACK of an ended session" in e.get("log_format", "")]
        self.assertEqual(len(matched), 1)
        self.assertEqual(matched[0]["log_level"], LogLevel.debug)
        self.assertEqual(len(self.sent()), sent)      # an ACK gets no answer
        self.clock.pump([1.0] * 40)
        self.assertEqual(len(self.twoHundreds()), 2)  # the 2xx and the BYE's 200
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])

    def test_nothingKeptAfterTheSweep(self):
        sessions = []
        for i in range(6):
            self.receive(invite(callid="c%d" % i, branch="z9hG4bK-%d" % i))
            ok = self.finals()[-1]
            sessions.append(weakref.ref(self.core.dialogs[("c%d" % i, ok.toTag, "ue1")]))
            if i % 3 == 0:
                self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-b%d" % i, callid="c%d" % i))
            elif i % 3 == 1:
                self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-a%d" % i, callid="c%d" % i))
                self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-b%d" % i, callid="c%d" % i))
            # else: no ACK, ended by the 64*T1 deadline
        self.assertEqual(len(self.core.dialog.ended), 4)
        # 64*T1 for the 2xx, then 64*T1 for our BYEs to the UEs that sent no ACK
        self.clock.pump([1.0] * 70)
        self.assertEqual(self.core.dialogs, {})
        self.assertEqual(self.core.dialog.ended, {})
        self.assertEqual(self.metric("mbmsd_scf_sessions_ended_total", reason="no_ack"), 2)
        # what the dialog table keeps holds no message
        dialog = self.core.dialog
        kept = reachable([dialog.sessions, dialog.initial, dialog.ended, dialog.sweep._heap],
                         stop=[dialog, self.core, self.clock])
        self.assertEqual([o for o in kept if isinstance(o, (Request, Response))], [])
        # and no ended session survives (their transactions ended too)
        self.client.calls = []
        gc.collect()
        self.assertEqual([r for r in sessions if r() is not None], [])

    def test_stopLeavesNoTimer(self):
        ok = self.established()
        self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))    # ended, before its ACK
        self.assertEqual(len(self.core.dialog.ended), 1)
        self.receive(invite(callid="c2", branch="z9hG4bK-2"))
        self.assertEqual(len(self.core.dialogs), 1)
        self.core.stop()
        self.assertEqual((self.core.dialogs, self.core.dialog.ended), ({}, {}))
        self.assertEqual(ours(self.clock), [])

    def test_oneDelayedCallForAllSessions(self):
        for i in range(20):
            self.receive(invite(callid="c%d" % i, branch="z9hG4bK-%d" % i,
                                extra=["Supported: timer"] if i % 2 else []))
        self.assertEqual(len(self.core.dialogs), 20)
        # retransmissions, 64*T1 ends and session timers of 20 sessions: one call
        self.assertEqual(ours(self.clock), [self.core.dialog.sweep.call])
        for i, ok in enumerate(self.finals()):
            self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-a%d" % i, callid="c%d" % i))
        self.clock.advance(100)
        self.assertEqual(ours(self.clock), [self.core.dialog.sweep.call])
        self.assertEqual(len(self.core.dialogs), 20)
        self.core.stop()
        self.assertEqual(self.core.dialogs, {})
        self.assertEqual(ours(self.clock), [])


class SweepTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.sweep = Sweep(self.clock)
        self.fired = []

    def at(self, name):
        return lambda: self.fired.append((name, self.clock.seconds()))

    def test_eachAtItsTimeInOrder(self):
        self.sweep.callLater(5, self.at("e"))
        self.sweep.callLater(3, self.at("c1"))
        self.sweep.callLater(3, self.at("c2"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2.999)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.001)
        self.assertEqual([n for n, _ in self.fired], ["c1", "c2"])
        self.clock.advance(2)
        self.assertEqual(self.fired, [("c1", 3), ("c2", 3), ("e", 5)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled(self):
        a = self.sweep.callLater(1, self.at("a"))
        self.sweep.callLater(2, self.at("b"))
        a.cancel()
        self.assertFalse(a.active())
        self.clock.advance(1)
        self.assertEqual(self.fired, [])
        # the one call moved to the next live timer
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [2])
        self.clock.advance(1)
        self.assertEqual(self.fired, [("b", 2)])

    def test_laterTimerScheduledFromAFiringOne(self):
        self.sweep.callLater(1, lambda: self.sweep.callLater(0, self.at("now")))
        self.clock.advance(1)
        self.assertEqual(self.fired, [("now", 1)])

    def test_cancelAll(self):
        self.sweep.callLater(1, self.at("a"))
        self.sweep.callLater(2, self.at("b"))
        self.sweep.cancelAll()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.sweep), 0)
        self.clock.advance(3)
        self.assertEqual(self.fired, [])

    def test_compaction(self):
        timers = [self.sweep.callLater(1000 + i, self.at(i)) for i in range(200)]
        for t in timers[:150]:
            t.cancel()
        self.assertLess(len(self.sweep._heap), 200)
        self.assertEqual(len(self.sweep), 50)
        self.clock.advance(2000)
        self.assertEqual([n for n, _ in self.fired], list(range(150, 200)))


class OutcomeLineTests(Harness):
    """One info line per procedure outcome on the SCF path, the rest debug."""

    def lines(self, events):
        return [(e["log_level"], e["log_format"]) for e in events
                if e.get("log_namespace") == "mbmsd.scf"
                and e["log_level"] >= LogLevel.info]

    def test_acceptedThenEnded(self):
        with capturedLog() as events:
            ok = self.established()
            self.clock.advance(T1)          # one 2xx retransmission: debug at most
            self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
            self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))
        lines = self.lines(events)
        self.assertEqual([level for level, _ in lines], [LogLevel.info, LogLevel.info])
        self.assertIn("authorized for", lines[0][1])
        self.assertIn("ended ({reason})", lines[1][1])

    def test_noAckEndsWithOneLine(self):
        with capturedLog() as events:
            self.established()
            self.clock.pump([1.0] * 70)
        lines = self.lines(events)
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("ended ({reason})", lines[1][1])

    def test_refusedWithTheBmscDetail(self):
        from mbmsd.roles.scf.bmsc import BmscUnavailable
        self.client.auto = BmscUnavailable("no answer within 5s")
        with capturedLog() as events:
            self.receive(invite())
        [(level, _)] = self.lines(events)
        [event] = [e for e in events if e.get("result") == "bmsc_timeout"]
        self.assertEqual(level, LogLevel.warn)      # the BM-SC failed us
        self.assertEqual(event["detail"], ": the BM-SC did not answer: no answer within 5s")
        self.assertEqual([m.status for m in self.finals()], [504])

    def test_userRefusedIsInfo(self):
        with capturedLog() as events:
            self.receive(invite(pai=None))
        [(level, fmt)] = self.lines(events)
        self.assertEqual(level, LogLevel.info)
        [event] = [e for e in events if e.get("result") == "no_identity"]
        self.assertEqual(event["status"], 403)
