"""
Shared test helpers.

External tools (twistd subprocesses, tshark, sipp, PostgreSQL) are skipped with
a clear reason when missing, and fail instead when MBMSD_REQUIRE_EXTERNAL=1
(which .ci/run sets), so CI can never pass by skipping.
"""

import contextlib
import os
import shutil

import pytest
from twisted.logger import globalLogPublisher


def external_required():
    return os.environ.get("MBMSD_REQUIRE_EXTERNAL") == "1"


def missing_external(reason):
    """Skip the current test, or fail it when externals are required."""
    if external_required():
        pytest.fail("MBMSD_REQUIRE_EXTERNAL=1 but " + reason)
    pytest.skip(reason)


def require_tool(name):
    """Return the path of executable C{name}, or skip/fail when absent."""
    path = shutil.which(name)
    if path is None:
        missing_external("%s is not installed (apt-get install it, see .ci/run)" % (name,))
    return path


@contextlib.contextmanager
def no_failure_logged():
    """Fail when anything logs a failure (an exception caught at the edge)."""
    failures = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == [], [f.getTraceback() for f in failures]
