"""
The test helper that tells sipp's known AKA flaw from a real failure.
"""

import base64
import itertools

from mbmsd.protocols.milenage import Milenage, compute_opc
from tests.support.helpers import (
    TEST_SET_1_K,
    TEST_SET_1_OP,
    TEST_SET_1_OPC,
    sipp_answered_with_truncated_res,
)


def test_the_published_opc_is_the_one_computed():
    assert compute_opc(TEST_SET_1_K, TEST_SET_1_OP) == TEST_SET_1_OPC


def _rand_whose_res(has_zero):
    m = Milenage(TEST_SET_1_K, TEST_SET_1_OPC)
    for i in itertools.count():
        rand = i.to_bytes(16, "big")
        if (b"\x00" in m.f2345(rand)[0]) == has_zero:
            return rand


def _log(*rands):
    return "".join(
        "SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"home1.net\", "
        "nonce=\"%s\", algorithm=AKAv1-MD5\r\n\r\n" % base64.b64encode(r + bytes(16)).decode()
        for r in rands)


def test_a_res_with_a_zero_byte_is_recognised():
    bad, good = _rand_whose_res(True), _rand_whose_res(False)
    assert sipp_answered_with_truncated_res(_log(good, bad))
    assert not sipp_answered_with_truncated_res(_log(bad, good))  # the last challenge counts
    assert not sipp_answered_with_truncated_res("")
    assert not sipp_answered_with_truncated_res('WWW-Authenticate: Digest nonce="%%%"')
