"""
Streaming services at the BM-SC.

srtp_forward: content packets per second one streaming service takes
through the BM-SC's path (L{StreamingService.packetReceived}: the RTP
check, the rate window, SRTP protection by libsrtp, the metrics, the send
on a real UDP socket to a loopback bearer), against the bare libsrtp
protect loop over the same packets in the same process. CPU per packet of
the BM-SC path beside it.

mtk_fanout: streaming services (each its own content port and bearer) a
twistd node sustains at 25 packets a second each with no drop, MTK messages
every second and MTK rotations included, found by feeding 1/8, 1/4, 1/2
and all of the configured services in turn; against the number of 25 pps
streams the bare protect loop of this machine could carry.

    python -m bench.streaming [--quick] [--packets N] [--services N]
"""

import argparse
import json
import os
import resource
import selectors
import socket
import struct
import tempfile
import time
from pathlib import Path

import pylibsrtp

from bench.common import Daemon, cpu_seconds
from tests.support.ports import free_port

ROUNDS = 5
RATE = 25  # packets per second of one stream (a video at 25 frames a second)
SIZE = 1000  # RTP payload octets


def rtp(seq, ssrc=0x1234ABCD):
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, seq * 3600, ssrc) + bytes(SIZE)


def bare_rate(packets):
    """Bare libsrtp: protect the packets in a loop, as pylibsrtp does it."""
    policy = pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    session = pylibsrtp.Session(policy)
    t0 = time.perf_counter()
    for p in packets:
        session.protect(p)
    return len(packets) / (time.perf_counter() - t0)


def srtp_forward(n):
    from prometheus_client import CollectorRegistry
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    from mbmsd import profile
    from mbmsd.metrics import Metrics
    from mbmsd.roles.bmsc.streaming import StreamingMetrics, StreamingService, UdpBearer
    from mbmsd.storage.records import Msk

    class Msks:
        msk = Msk("s", profile.key_domain_id("001", "01"), b"\x00\x01\x00\x01", os.urandom(16),
                  0.0, 1e9)

        def current(self, serviceId):
            return succeed(self.msk)

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    bearer = UdpBearer("127.0.0.1", sink.getsockname()[1], sink.getsockname()[1], 1, "127.0.0.1")

    class Transport:  # what listenUDP gives, without a reactor loop: the socket's sendto
        def __init__(self):
            self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        def write(self, data, addr):
            try:
                self.socket.sendto(data, addr)
            except BlockingIOError:
                pass

    bearer.transport = Transport()
    bearer.startProtocol()
    clock = Clock()
    metrics = StreamingMetrics(Metrics("bench", CollectorRegistry()).forRole("bmsc"), ["s"])
    stream = StreamingService("s", clock, Msks(), bearer, metrics, 3600.0, 3600.0, 10 ** 9)
    stream.start()
    # the machine is shared: ROUNDS alternating rounds of both, the best of each
    chunk = max(1, n // ROUNDS)
    packets = [rtp(i) for i in range(chunk * ROUNDS)]
    baseline = measured = 0.0
    cpu = float("inf")
    for r in range(ROUNDS):
        part = packets[r * chunk:(r + 1) * chunk]
        baseline = max(baseline, bare_rate(part))
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for p in part:
            stream.packetReceived(p)
        elapsed = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        measured = max(measured, chunk / elapsed)
        cpu = min(cpu, (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime)
                  / chunk)
    stream.stop()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.perf_counter()
    for p in packets[:chunk]:
        sender.sendto(p, sink.getsockname())
    sendto = (time.perf_counter() - t0) / chunk
    sender.close()
    sink.close()  # the kernel dropped what it could not hold: the receiver is not measured
    return dict(name="srtp_forward", ratio=measured / baseline, a=measured, b=baseline,
                unit="packets/s", goal=(">=", 0.5),
                notes="%d RTP packets of %d octets, one service in process, UDP send included, "
                      "best of %d alternating rounds; %.1f us CPU per packet (bare protect: "
                      "%.1f us, a bare UDP sendto: %.1f us)"
                      % (n, SIZE, ROUNDS, cpu * 1e6, 1e6 / baseline, sendto * 1e6)), baseline


def _overlay(services):
    out = ['[[bmsc.service]]\nid = "urn:mbmsd:news"\n']  # the SCF's service of etc/mbmsd.toml
    for i, (source, bearer) in enumerate(services):
        out.append('[[bmsc.service]]\nid = "urn:mbmsd:bench%d"\nmedia_source = "127.0.0.1:%d"\n'
                   'bearer = "127.0.0.1:%d"\nbearer_key_port = %d\nmtk_rotation = 10\n'
                   'mtk_repeat = 1\n' % (i, source, bearer, bearer))  # MTK messages told apart by size
    return "\n".join(out)


def _level(feeds, sinks, seconds, seq):
    """
    Feed C{feeds} [(socket, port)] at RATE each for C{seconds}, sequence
    numbers from C{seq} on (a source goes on numbering).
    @return: (sent, received, the next sequence number).
    """
    sel = selectors.DefaultSelector()
    for s in sinks:
        sel.register(s, selectors.EVENT_READ)
    sent = received = 0
    start = time.monotonic()
    tick = 1.0 / RATE
    nextAt = start
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        if now >= nextAt:
            seq += 1
            for s, port in feeds:
                s.sendto(rtp(seq), ("127.0.0.1", port))
                sent += 1
            nextAt += tick
        for key, _ in sel.select(max(0.0, min(0.005, nextAt - time.monotonic()))):
            received += _drain(key.fileobj)
    deadline = time.monotonic() + 1.0  # what is in flight
    while time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            received += _drain(key.fileobj)
    sel.close()
    return sent, received, seq + 1


def _drain(sock):
    n = 0
    try:
        while True:
            data = sock.recv(4096)
            if len(data) > 200:  # SRTP, not the MTK messages
                n += 1
    except BlockingIOError:
        pass
    return n


def mtk_fanout(count, seconds, baseline):
    services = [(free_port(), free_port()) for _ in range(count)]
    sinks = []
    for _, bearer in services:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", bearer))
        s.setblocking(False)
        sinks.append(s)
    feeder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory(prefix="mbmsd-bench-") as tmp:
        d = Daemon(Path(tmp), overlay=_overlay(services)).start()
        try:
            time.sleep(1.5)  # the first MSKs and MTKs of every service
            sustained = 0
            levels = []
            seq = 1
            cpu0 = cpu_seconds(d.pid)
            for k in sorted({max(1, count // 8), max(1, count // 4), max(1, count // 2), count}):
                feeds = [(feeder, source) for source, _ in services[:k]]
                sent, received, seq = _level(feeds, sinks[:k], seconds, seq)
                levels.append("%d: %d/%d" % (k, received, sent))
                if received < sent:
                    break
                sustained = k
            cpu = cpu_seconds(d.pid) - cpu0
        finally:
            log = d.log()
            d.stop()
    if os.environ.get("MBMSD_BENCH_LOG"):
        print(log[-4000:])
    for s in sinks:
        s.close()
    streams = baseline / RATE
    return dict(name="mtk_fanout", ratio=sustained / streams, a=sustained, b=streams,
                unit="services at 25 pps", goal=None,
                notes="%d services configured (MTK messages every 1 s, MTKs every 10 s); "
                      "received/sent per level %s; node CPU %.1f s"
                      % (count, ", ".join(levels), cpu))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--packets", type=int, default=None)
    ap.add_argument("--services", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    args = ap.parse_args()
    n = args.packets or (2000 if args.quick else 200000)
    forward, baseline = srtp_forward(n)
    fanout = mtk_fanout(args.services or (4 if args.quick else 400),
                        args.seconds or (1.0 if args.quick else 5.0), baseline)
    print("RESULT " + json.dumps([forward, fanout]), flush=True)


if __name__ == "__main__":
    main()
