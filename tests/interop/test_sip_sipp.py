"""
Interoperability: sipp's built-in UAC against the echo UAS of mbmsd.sip
(a subprocess on a loopback port), over UDP and TCP. Pass/fail is sipp's
exit code (0: every call successful).
"""

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support.helpers import require_tool

pytestmark = pytest.mark.external

ROOT = str(Path(__file__).resolve().parents[2])
CALLS = 10


class SippTests(SynchronousTestCase):

    def setUp(self):
        self.sipp = require_tool("sipp")
        self.timeout = require_tool("timeout")
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-sipp-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.uas = subprocess.Popen(
            [sys.executable, "-m", "mbmsd.sip.echo", "--host", "127.0.0.1",
             "--port", "0", "--tcp"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=0)  # unbuffered: select() must see every line
        self.addCleanup(self._stop_uas)
        self.port = self._read_port()

    def _read_port(self):
        deadline = time.monotonic() + 20
        lines = []
        while time.monotonic() < deadline and len(lines) < 2:
            ready, _, _ = select.select([self.uas.stdout], [], [], 0.5)
            if ready:
                line = self.uas.stdout.readline().decode()
                if not line:
                    break
                lines.append(line.split())
        if len(lines) < 2:
            self.uas.terminate()
            _, stderr = self.uas.communicate(timeout=10)
            self.fail("echo UAS did not start: %r %r" % (
                lines, stderr.decode(errors="replace")[-2000:]))
        return int(lines[0][3])

    def _stop_uas(self):
        if self.uas.poll() is None:
            self.uas.terminate()
            try:
                self.uas.wait(10)
            except subprocess.TimeoutExpired:
                self.uas.kill()
                self.uas.wait(10)
        for stream in (self.uas.stdout, self.uas.stderr):
            stream.close()

    def run_sipp(self, *extra):
        err = os.path.join(self.tmp, "err.log")
        cmd = [self.timeout, "60", self.sipp, "-sn", "uac",
               "127.0.0.1:%d" % (self.port,), "-i", "127.0.0.1",
               "-m", str(CALLS), "-r", "20", "-nostdin", "-timeout", "40s",
               "-recv_timeout", "5000", "-trace_err", "-error_file", err,
               "-trace_stat", "-stf", os.path.join(self.tmp, "stat.csv")] + list(extra)
        result = subprocess.run(cmd, cwd=self.tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        errors = ""
        if os.path.exists(err):
            with open(err, errors="replace") as f:
                errors = f.read()[-2000:]
        self.assertEqual(result.returncode, 0,
                         "sipp exit %d: %s %s" % (result.returncode,
                                                  result.stderr.decode(errors="replace")[-1000:],
                                                  errors))
        stats = self.last_stats()
        self.assertEqual(int(stats["SuccessfulCall(C)"]), CALLS)
        self.assertEqual(int(stats["FailedCall(C)"]), 0)

    def last_stats(self):
        with open(os.path.join(self.tmp, "stat.csv")) as f:
            rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
        return dict(zip(rows[0], rows[-1]))

    def test_udp_calls(self):
        self.run_sipp()

    def test_tcp_calls(self):
        self.run_sipp("-t", "t1")
        self.assertIsNone(self.uas.poll(), "the UAS must survive")
