"""
SIPp as the UE of a scenario, against the P-CSCF of a twistd node
(tests/support/daemon.py): wrapped in coreutils timeout (SIPp 3.6.1's -timeout did not
stop a UAC whose calls hung), its error,
log and message files in the test's folder, run again once when, and only
when, sipp's own AKA flaw (a RES with a zero byte) made its REGISTER fail.
"""

import os
import subprocess

from tests.support.daemon import wait_for
from tests.support.helpers import require_tool, sipp_answered_with_truncated_res


class SippUe:
    """
    @param scenario: the scenario file; its 200 to the INVITE logs "200 OK with".
    @param tag: part of every Call-ID, C{<tag>-<pid>-<call number>}.
    @param extra: further sipp arguments (e.g. C{-key name value}).
    """

    def __init__(self, daemon, scenario, folder, port, tag, extra=()):
        self.sipp = require_tool("sipp")
        self.timeout = require_tool("timeout")
        self.daemon = daemon
        self.scenario = scenario
        self.port = port
        self.tag = tag
        self.extra = list(extra)
        self.err, self.logs, self.msgs = (folder / ("%s-%s.log" % (tag, n))
                                          for n in ("err", "logs", "msg"))
        self.proc = None

    @property
    def callId(self):
        """The Call-ID of the first call."""
        return "%s-%d-1" % (self.tag, os.getpid())

    def start(self):
        for path in (self.err, self.logs, self.msgs):
            if path.exists():
                path.unlink()
        self.proc = subprocess.Popen(
            [self.timeout, "90", self.sipp, "-sf", str(self.scenario),
             "127.0.0.1:%d" % self.daemon.ports["pcscf"],
             "-i", "127.0.0.1", "-p", str(self.port), "-m", "1", "-nostdin",
             "-auth_uri", "home1.net", "-cid_str", "%s-%d-%%u" % (self.tag, os.getpid()),
             *self.extra, "-recv_timeout", "20000", "-timeout", "80s",
             "-trace_err", "-error_file", str(self.err), "-trace_logs", "-log_file",
             str(self.logs), "-trace_msg", "-message_file", str(self.msgs)],
            cwd=str(self.scenario.parent), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self.proc

    def read(self, path):
        return path.read_text(errors="replace") if path.exists() else ""

    def report(self):
        return "\n".join([self.daemon.log()[-5000:]] + [
            self.read(path)[-3000:] for path in (self.err, self.logs, self.msgs)])

    def answered(self):
        return "200 OK with" in self.read(self.logs)

    def run(self):
        """Start, and start again once after sipp's AKA flaw. @return: the process."""
        self.start()
        for _ in range(2):
            wait_for(lambda: self.answered() or self.proc.poll() is not None, timeout=30)
            if (self.answered() or self.proc.poll() in (None, 0)
                    or not sipp_answered_with_truncated_res(self.read(self.msgs))):
                break
            self.proc.communicate()
            self.start()
        return self.proc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def go(self):
        send_go(self.port, self.callId)


def send_go(port, callId):
    """A scenario's "go" (it waits for an OPTIONS in its call before its BYE)."""
    import socket

    go = ("OPTIONS sip:user1@127.0.0.1:%d SIP/2.0\r\n"
          "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-go\r\n"
          "Max-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=go\r\n"
          "To: <sip:user1@127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 OPTIONS\r\n"
          "Content-Length: 0\r\n\r\n" % (port, callId))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(go.encode(), ("127.0.0.1", port))
