"""
Listening ports for the daemons, sipp peers and PostgreSQL servers that the
tests and benchmarks start.

Asking the kernel for port 0 and closing the socket is not enough: the
kernel may hand the same number out again (to the next port 0 request of
this process, or as the source port of an outgoing connection) before the
daemon binds it, which once made a UE's MIKEY socket collide with the
SCF's SIP port. So ports come from below the kernel's ephemeral range,
never twice in one process, and only when free for both TCP and UDP (SIP
listens on both under one number).
"""

import itertools
import os
import socket

_handed_out = set()


def _candidates():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = max(ephemeral_low, 11024)
    low = max(1024, high - 10000)
    # a per-process start, so that two runs side by side rarely meet
    start = low + os.getpid() * 7919 % (high - low)
    return itertools.chain(range(start, high), range(low, start))


def _free(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port():
    """A port free for TCP and UDP on 127.0.0.1 and not handed out before."""
    for port in _candidates():
        if port not in _handed_out and _free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def free_ports(count):
    """
    The first of C{count} consecutive ports, each free for TCP and UDP and
    not handed out before (a range such as C{pcscf.worker_ports}).
    """
    for port in _candidates():
        run = range(port, port + count)
        if all(p not in _handed_out and _free(p) for p in run):
            _handed_out.update(run)
            return port
    raise RuntimeError("no %d consecutive free ports below the ephemeral range" % (count,))
