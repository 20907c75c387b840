"""
Shared test helpers.

External tools (twistd subprocesses, tshark, sipp, PostgreSQL) are skipped with
a clear reason when missing, and fail instead when MBMSD_REQUIRE_EXTERNAL=1
(which .ci/run sets), so CI can never pass by skipping.
"""

import os
import shutil

import pytest


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
