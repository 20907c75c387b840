"""
`make run` as an operator stops it (issue 12 item 15): Ctrl-C (SIGINT to the
terminal's whole process group) or SIGTERM to make. twistd stops cleanly and
make prints no `make: *** [run] ...` line: before, twistd's re-raising of
the signal on itself made make report `Terminated` or `Interrupt`.

The node runs etc/mbmsd.toml with the tests' free-port overlay (MBMSD_ARGS),
from this checkout's venv (BIN, and `-o venv`: nothing is reinstalled).
"""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import ROOT
from tests.support.helpers import require_tool
from tests.support.nodeconfig import node_ports, node_tables, overlay_text

pytestmark = pytest.mark.external


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_make_run_stops_without_a_make_error(tmp_path, how):
    make = require_tool("make")
    overlay = tmp_path / "overlay.toml"
    overlay.write_text(overlay_text(node_tables(tmp_path, node_ports())))
    p = subprocess.Popen(
        [make, "-C", str(ROOT), "-o", "venv", "run", "BIN=%s" % (Path(sys.executable).parent,),
         "MBMSD_ARGS=--config %s" % (overlay,)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = ""
    try:
        deadline = time.monotonic() + 30
        while "ready (mbmsd" not in out and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.5)[0]:
                line = p.stdout.readline()
                if not line:
                    break
                out += line
        assert "ready (mbmsd" in out, out
        if how == "ctrl-c":
            os.killpg(p.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        else:
            p.send_signal(signal.SIGTERM)    # make alone; it passes SIGTERM on to its child
        rest, _ = p.communicate(timeout=30)
        out += rest
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert "node mbmsd-1 stopped" in out and "Server Shut Down." in out, out[-3000:]
    assert "make: ***" not in out, out[-3000:]
    assert "Terminated\n" not in out and "Interrupt" not in out, out[-3000:]
