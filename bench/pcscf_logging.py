"""
What the P-CSCF's logging costs per call: the in-process P-CSCF (tests'
Harness: memory storage, Clock, no sockets) runs INVITE, 200, ACK, BYE, 200
per call with the node's text observer writing to /dev/null, at
C{log_level} info and at warn, rounds alternated, best of each taken.

    .venv/bin/python -m bench.pcscf_logging [--calls N] [--rounds R]

Prints CPU per call at each level and their ratio (info / warn).
"""

import argparse
import time

from twisted.logger import FileLogObserver, globalLogPublisher

from mbmsd import logs
from tests.unit.roles.pcscf.test_proxy import SCF, Harness, invite_bytes


def scf_answer(h, fwd, status):
    lines = ["SIP/2.0 %d X" % status]
    lines += ["Via: " + v for v in fwd.headers.getAll("Via")]
    lines += ["Record-Route: " + v for v in fwd.headers.getAll("Record-Route")]
    lines += ["From: " + fwd.headers.get("From"),
              "To: %s;tag=scf1" % (fwd.headers.get("To"),),
              "Call-ID: " + fwd.headers.get("Call-ID"),
              "CSeq: " + fwd.headers.get("CSeq"),
              "Contact: <sip:scf@127.0.0.1:5070>"]
    h.receive(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), source=SCF)


def in_dialog(method, cseq, call):
    return (
        "%s sip:scf@127.0.0.1:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-%s-%s\r\n"
        "Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:user1@home1.net>;tag=ue1\r\n"
        "To: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>;tag=scf1\r\n"
        "Call-ID: %s\r\n"
        "CSeq: %d %s\r\n"
        "Content-Length: 0\r\n\r\n" % (method, method.lower(), call, call, cseq, method)).encode()


def calls(h, n, start):
    for i in range(start, start + n):
        call = "call-%d@ue" % (i,)
        h.receive(invite_bytes(branch="z9hG4bK-inv-%d" % (i,)).replace(b"call-1@ue",
                                                                     call.encode()))
        scf_answer(h, h.sentTo(SCF)[-1], 200)
        h.receive(in_dialog("ACK", 1, call))
        h.receive(in_dialog("BYE", 2, call))
        scf_answer(h, h.sentTo(SCF)[-1], 200)
        h.net.udp.sent.clear()
        h.clock.advance(0.2)    # a steady state: ~160 calls' 32 s timers pending


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    h = Harness(maxExpires=86400)
    assert h.register(expires=86400).status == 200
    lines = [0]
    sink = open("/dev/null", "w")
    observer = FileLogObserver(sink, lambda e: (lines.__setitem__(0, lines[0] + 1),
                                                logs.formatText(e))[1])
    globalLogPublisher.addObserver(observer)
    best = {"info": float("inf"), "warn": float("inf")}
    per_call_lines = {}
    done = 0
    calls(h, 200, done)             # warm up
    done += 200
    for _ in range(args.rounds):
        for level in ("info", "warn"):
            logs.setLevel(level)
            lines[0] = 0
            t = time.process_time()
            calls(h, args.calls, done)
            cpu = (time.process_time() - t) / args.calls
            done += args.calls
            best[level] = min(best[level], cpu)
            per_call_lines[level] = lines[0] / args.calls
    globalLogPublisher.removeObserver(observer)
    for level in ("info", "warn"):
        print("pcscf_call_cpu_ms log_level=%s %.3f ms/call, %.2f lines/call"
              % (level, best[level] * 1000, per_call_lines[level]))
    print("pcscf_logging ratio %.3f (CPU per call at info / at warn; the logging share %.1f %%)"
          % (best["info"] / best["warn"], 100 * (1 - best["warn"] / best["info"])))


if __name__ == "__main__":
    main()
