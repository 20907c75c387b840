"""
Tests for mbmsd.gctune: thresholds in one place, the freeze after start-up,
and the debug pause recorder (gc.callbacks).
"""

import gc
import json
import os
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import gctune


class Service:
    def __init__(self):
        self.ready = Deferred()


class FreezeTests(SynchronousTestCase):

    def setUp(self):
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        self.path = os.path.join(tempfile.mkdtemp(), "gc.json")

    def test_thresholds_then_freeze_when_ready(self):
        reactor = MemoryReactorClock()
        service = Service()
        gctune.freezeAfterStartup(reactor, service, environ={})
        self.assertEqual(gc.get_threshold(), gctune.THRESHOLDS)
        self.assertEqual(gc.get_freeze_count(), 0)      # not before start-up ends
        service.ready.callback(None)
        self.assertGreater(gc.get_freeze_count(), 1000)
        self.assertFalse(os.path.exists(self.path))

    def test_pause_log_records_collections(self):
        reactor = MemoryReactorClock()
        service = Service()
        gctune.freezeAfterStartup(reactor, service,
                                  environ={gctune.PAUSE_LOG_ENV: self.path})
        service.ready.callback(None)
        recorder = [cb for cb in gc.callbacks
                    if getattr(cb, "__self__", None).__class__ is gctune.PauseRecorder][-1]
        self.addCleanup(recorder.__self__.uninstall)
        gc.collect(0)
        gc.collect()                    # a full one rewrites the file
        summary = json.load(open(self.path))
        self.assertGreaterEqual(summary["collections"][0], 1)
        self.assertGreaterEqual(summary["collections"][2], 1)
        self.assertGreater(summary["max_ms"], 0)
        self.assertGreater(summary["frozen"], 0)


class RecorderTests(SynchronousTestCase):

    def test_longest_pause_per_generation(self):
        times = iter([1.0, 1.004, 2.0, 2.030, 3.0, 3.001])
        recorder = gctune.PauseRecorder(os.path.join(tempfile.mkdtemp(), "p.json"),
                                        clock=lambda: next(times))
        recorder.callback("start", {"generation": 0})
        recorder.callback("stop", {"generation": 0})
        recorder.callback("start", {"generation": 2})
        recorder.callback("stop", {"generation": 2})
        recorder.callback("start", {"generation": 0})
        recorder.callback("stop", {"generation": 0})
        summary = json.load(open(recorder.path))       # written after the full one
        self.assertEqual(summary["collections"], [1, 0, 1])
        self.assertAlmostEqual(summary["max_ms"], 30.0, places=6)
        self.assertAlmostEqual(recorder.summary()["max_ms_by_generation"][0], 4.0, places=6)
        self.assertEqual(recorder.summary()["collections"], [2, 0, 1])
