"""
The garbage collector tuned for a long-running server.

Python's defaults (700, 10, 10) run a full collection every ~100 young ones;
under the call load each walked every live object, the node's start-up state
included (modules, config, role objects). Here, in one place:
  - thresholds that make full collections rare (THRESHOLDS);
  - after start-up: one collection, then C{gc.freeze()}, so the objects that
    live as long as the process are never walked again.

Debug only: with MBMSD_GC_PAUSE_LOG=<file> the node times every collection
(C{gc.callbacks}) and writes, as JSON, the longest pause and the counts per
generation to that file after each full collection and at shutdown (the
benchmark reads it).
"""

import gc
import json
import os
import time

from mbmsd.logs import Logger

__all__ = ["THRESHOLDS", "PAUSE_LOG_ENV", "tuneThresholds", "freezeAfterStartup",
           "PauseRecorder"]

log = Logger(namespace="mbmsd.gctune")

# young, middle, old: a young collection per 700 allocations, a full one per
# 10 * 200 young ones (issue 16's A/B: full collections from ~5 s to 0.6 s)
THRESHOLDS = (700, 10, 200)
PAUSE_LOG_ENV = "MBMSD_GC_PAUSE_LOG"


def tuneThresholds(thresholds=THRESHOLDS):
    gc.set_threshold(*thresholds)


class PauseRecorder:
    """Times each collection through C{gc.callbacks}; C{write} dumps JSON."""

    def __init__(self, path, clock=time.perf_counter):
        self.path = path
        self.clock = clock
        self.started = None
        self.maxSeconds = [0.0, 0.0, 0.0]
        self.totalSeconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]

    def install(self):
        gc.callbacks.append(self.callback)

    def uninstall(self):
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    def callback(self, phase, info):
        if phase == "start":
            self.started = self.clock()
            return
        if self.started is None:
            return
        pause = self.clock() - self.started
        self.started = None
        generation = info.get("generation", 0)
        self.counts[generation] += 1
        self.totalSeconds[generation] += pause
        self.maxSeconds[generation] = max(self.maxSeconds[generation], pause)
        if generation == 2:
            self.write()

    def summary(self):
        return {"max_ms": 1000 * max(self.maxSeconds),
                "max_ms_by_generation": [1000 * s for s in self.maxSeconds],
                "total_ms_by_generation": [1000 * s for s in self.totalSeconds],
                "collections": list(self.counts),
                "frozen": gc.get_freeze_count()}

    def write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.summary(), f)
        os.replace(tmp, self.path)


def _freeze(result=None, recorderPath=None, reactor=None):
    gc.collect()
    gc.freeze()
    log.debug("collector: {n} start-up objects frozen, thresholds {t}",
              n=gc.get_freeze_count(), t=gc.get_threshold())
    if recorderPath:
        recorder = PauseRecorder(recorderPath)
        recorder.install()
        recorder.write()
        if reactor is not None:
            reactor.addSystemEventTrigger("before", "shutdown", recorder.write)
    return result


def freezeAfterStartup(reactor, service, environ=os.environ):
    """
    Set the thresholds now and freeze once C{service} is ready (its
    C{ready} Deferred, set by startService), or at once without one.
    Call with C{reactor.callWhenRunning}.
    """
    tuneThresholds()
    path = environ.get(PAUSE_LOG_ENV) or None
    ready = getattr(service, "ready", None)
    if ready is None:
        _freeze(recorderPath=path, reactor=reactor)
    else:
        ready.addCallback(_freeze, recorderPath=path, reactor=reactor)
