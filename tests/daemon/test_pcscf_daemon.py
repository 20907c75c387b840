"""
The P-CSCF owns its registrations: a node restarted on the same SQLite file
serves the UE registered before the restart (bindings restored from storage
before the SIP listeners open), without a new REGISTER.
"""

import json
import socket

import pytest

from tests.support.daemon import Daemon, run_ue
from tests.support.ports import free_port

pytestmark = pytest.mark.external

IMPU = "sip:user1@home1.net"


def options_from(sock, pcscf_port, tag):
    """An initial OPTIONS from C{sock} (forwarded to the SCF if registered)."""
    host, port = sock.getsockname()
    data = (
        "OPTIONS sip:mbms.home1.net SIP/2.0\r\n"
        "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-%s;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <%s>;tag=%s\r\n"
        "To: <sip:mbms.home1.net>\r\n"
        "Call-ID: %s@restart\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Contact: <sip:user1@%s:%d>\r\n"
        "Content-Length: 0\r\n\r\n" % (host, port, tag, IMPU, tag, tag, host, port)
    ).encode()
    sock.sendto(data, ("127.0.0.1", pcscf_port))
    while True:
        reply = sock.recv(65535).decode("utf-8", "replace")
        status = int(reply.split(" ", 2)[1])
        if status >= 200:
            return status, reply


def test_a_restart_restores_the_bindings(tmp_path):
    d = Daemon(tmp_path)
    ue_port = free_port()
    d.start()
    try:
        p = run_ue("register", "--pcscf", "sip:127.0.0.1:%d" % (d.ports["pcscf"],),
                   "--local-ip", "127.0.0.1", "--local-port", str(ue_port),
                   "--expires", "600")
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads(p.stdout.splitlines()[-1])["result"] == "ok"
    finally:
        d.stop()
    d.start()
    try:
        assert "1 registration bindings restored from storage" in d.log()
        ue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (ue, stranger):
            s.settimeout(10)
        ue.bind(("127.0.0.1", ue_port))
        stranger.bind(("127.0.0.1", 0))
        try:
            # never registered: the P-CSCF itself refuses (TS 24.229 5.2.6.3)
            status, reply = options_from(stranger, d.ports["pcscf"], "s1")
            assert status == 403 and "not registered" in reply, reply
            # registered before the restart: forwarded, the SCF answers it
            status, reply = options_from(ue, d.ports["pcscf"], "u1")
            assert status != 403, reply
            assert "not registered" not in reply
        finally:
            ue.close()
            stranger.close()
    finally:
        d.stop()
