"""
Many UEs behind one UDP socket, for msk_push: a L{MikeyReceiver} per UE IP
address in 127.0.0.0/8 (all local on Linux: `ip route show table local` has
`local 127.0.0.0/8 dev lo`). One socket bound to 0.0.0.0:<port> learns the
destination address of each MSK message with IP_PKTINFO and answers from
that same address (IP_PKTINFO ipi_spec_dst on sendmsg), so the BM-SC sees the
verification come from the UE IP it pushed to, as with real UEs.

Each UE's MUK is derived from a seed and its IP (L{muk_for}), so the BM-SC
side knows it without any exchange.

    python -m bench.ue_farm <port> <seed hex>  -> "READY <port>"; on stdin EOF
    prints "DONE <accepted> <rejected> <retransmissions> <ues>" and exits.
"""

import hashlib
import os
import socket
import struct
import sys

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Protocol

from mbmsd import logs
from mbmsd.ue.mikey_receiver import MikeyReceiver

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def muk_for(seed, ip):
    """The MUK (Ks_NAF stand-in, 32 bytes) of the UE at C{ip}."""
    return hashlib.sha256(seed + ip.encode("ascii")).digest()


def ue_ip(i):
    """The i-th UE address: 127.1.0.1 upwards (127.0.0.1 is left to the BM-SC)."""
    n = (1 << 16) + 1 + i
    return "127.%d.%d.%d" % ((n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)


class _Reply:
    """The transport a MikeyReceiver writes its verification to."""

    __slots__ = ("farm", "src")

    def __init__(self, farm, src):
        self.farm = farm
        self.src = src

    def write(self, data, addr):
        self.farm.send(data, self.src, addr)


class Farm:
    def __init__(self, seed, port=0):
        self.seed = seed
        self.ues = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt, size in ((getattr(socket, "SO_RCVBUFFORCE", 33), 64 << 20),
                          (getattr(socket, "SO_SNDBUFFORCE", 32), 16 << 20)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, size)
            except OSError:
                pass
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.dropped = 0

    # IReadDescriptor
    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "ue-farm"

    def connectionLost(self, reason):
        pass

    def doRead(self):
        for _ in range(512):
            try:
                data, anc, _, addr = self.sock.recvmsg(4096, 64)
            except BlockingIOError:
                return
            dst = None
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    dst = socket.inet_ntoa(value[8:12])  # ipi_addr: the header destination
            if dst is None or not dst.startswith("127."):
                self.dropped += 1
                continue
            ue = self.ues.get(dst)
            if ue is None:
                ue = self.ues[dst] = MikeyReceiver(muk_for(self.seed, dst), lambda d: None)
                ue.transport = _Reply(self, dst)
            ue.datagramReceived(data, addr)

    def send(self, data, src, addr):
        info = struct.pack("=I4s4s", 0, socket.inet_aton(src), b"\0\0\0\0")
        try:
            self.sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, addr)
        except BlockingIOError:
            self.dropped += 1

    def totals(self):
        accepted = sum(u.accepted for u in self.ues.values())
        rejected = sum(sum(u.rejected.values()) for u in self.ues.values())
        retrans = sum(u.retransmissions for u in self.ues.values())
        return accepted, rejected, retrans, len(self.ues)


class _Control(Protocol):
    def __init__(self, farm):
        self.farm = farm

    def dataReceived(self, data):
        if b"?" in data:  # progress query
            self.transport.write(b"STAT %d %d %d %d\n" % self.farm.totals())

    def connectionLost(self, reason):
        sys.stdout.write("DONE %d %d %d %d\n" % self.farm.totals())
        sys.stdout.flush()
        reactor.callLater(0, _stop)


def _stop():
    if reactor.running:
        reactor.stop()


def main():
    port, seed = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
    # one process for 100 000 UEs: their info line per MSK (mikey_receiver.py)
    # would be a tenth of its work; rejections still log
    logs.setLevel("warn")
    farm = Farm(seed, port)
    reactor.addReader(farm)
    sys.stdout.write("READY %d\n" % (farm.port,))
    sys.stdout.flush()
    stdio.StandardIO(_Control(farm))
    reactor.run()
    os._exit(0)


if __name__ == "__main__":
    main()
