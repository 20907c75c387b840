"""
Shared test helpers.

External tools (twistd subprocesses, tshark, sipp, PostgreSQL) are skipped with
a clear reason when missing, and fail instead when MBMSD_REQUIRE_EXTERNAL=1
(which .ci/run sets), so CI can never pass by skipping.
"""

import base64
import binascii
import contextlib
import hashlib
import os
import re
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


# TS 35.208 test set 1: the demo subscriber of etc/mbmsd.toml, whose K and OP
# the sipp scenarios carry as aka_K and aka_OP
TEST_SET_1_K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
TEST_SET_1_OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")
TEST_SET_1_OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")  # published with them
_CHALLENGE_NONCE = re.compile(r'WWW-Authenticate:[^\r\n]*?nonce="([^"]*)"', re.IGNORECASE)


def sipp_answered_with_truncated_res(message_log):
    """
    True when the last AKA challenge in a sipp message log (-trace_msg) has a
    RES with a zero byte. SIPp 3.6.1 handles RES as a C string, so it answers
    such a challenge (about 3 in 100: RES is 8 random-looking bytes) with a
    truncated password and the P-CSCF rightly refuses it. A test may run its
    scenario again then, and only then: any other failure is a failure.
    """
    from mbmsd.protocols.milenage import Milenage

    nonces = _CHALLENGE_NONCE.findall(message_log)
    if not nonces:
        return False
    try:
        rand = base64.b64decode(nonces[-1], validate=True)[:16]
    except (binascii.Error, ValueError):
        return False
    if len(rand) != 16:
        return False
    res = Milenage(TEST_SET_1_K, TEST_SET_1_OPC).f2345(rand)[0]
    return b"\x00" in res


# Digest as the tests check it, written from RFC 2617 here, apart from
# mbmsd.protocols.digest (the code under test)
_DIGEST_PARAM = re.compile(r'\s*([A-Za-z0-9-]+)=("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


def md5(data):
    return hashlib.md5(data).hexdigest()


def parse_digest(value):
    """The parameters of a Digest header value, names lower-cased, quotes undone."""
    assert value.startswith("Digest "), value
    out = {}
    for name, raw in _DIGEST_PARAM.findall(value[len("Digest "):]):
        out[name.lower()] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
    return out
