"""
End-to-end fuzz of the HTTP listeners that face UEs and peers, in-process
(the real twisted.web Site over a StringTransport, memory storage, a Clock;
the harnesses of tests/unit/roles/bsf/test_bootstrap.py and tests/unit/roles/bmsc/test_keymanagement.py): Ub, Zn and the
BM-SC's key management.

Property: a garbage request (any method, path, Authorization, identity
headers, content type and body) gets an answer below 500 (4xx, or 200 for
the rare well-formed one), no failure is logged, and the listener then
serves a good request as before.
"""

import json

from hypothesis import example, given
from hypothesis import strategies as st

from mbmsd import profile
from mbmsd.protocols import mbms_xml
from tests.conftest import budget
from tests.support.helpers import no_failure_logged
from tests.support.webfake import exchange, request_bytes
from tests.unit.protocols.test_digest_fuzz import untrusted as digest_garbage
from tests.unit.protocols.test_mbms_xml_fuzz import untrusted as xml_garbage
from tests.unit.roles.bmsc import test_keymanagement as test_bmsc
from tests.unit.roles.bsf import test_bootstrap as test_bsf


def header_value(value):
    """What a header line can carry (no line breaks), as latin-1 text."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.replace("\r", "").replace("\n", "").encode("latin-1", "replace").decode("latin-1")


methods = st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "X"])
targets = st.sampled_from(["/", "/keymanagement", "/zn/v1/naf-keys", "/x", "/?a=b", "//",
                           "/keymanagement?requesttype=register&requesttype=authorize", "*"])
peers = st.sampled_from(["127.0.0.1", test_bmsc.SCF_IP, test_bmsc.UE_IP, "10.0.0.1"])
authorizations = st.none() | digest_garbage.map(header_value) | st.just(
    test_bsf.initial()[1])


def check(answer):
    assert answer is not None, "no answer"
    status = answer[0]
    assert status < 500, answer


@budget(0.3)
@given(methods, targets, st.lists(authorizations, max_size=2), st.binary(max_size=64))
@example("GET", "/", [test_bsf.initial()[1], test_bsf.initial()[1]], b"")
def test_ub(method, target, auths, body):
    h = test_bsf.Harness()
    headers = [("Authorization", a) for a in auths if a is not None]
    with no_failure_logged():
        check(exchange(h.ub, request_bytes(method, target, headers, body)))
        # and it still serves: the first step of a bootstrap
        assert h.get(test_bsf.initial())[0] == 401


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3), max_leaves=8)
zn_bodies = st.one_of(
    st.binary(max_size=100),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"btid": json_values | st.just(test_bsf.BTID),
                           "nafId": json_values | st.just(test_bsf.NAF_ID.hex())}).map(
        lambda v: json.dumps(v).encode()))


@budget(0.3)
@given(methods, targets, zn_bodies, peers)
# regression: JSON nested deeper than json's recursion limit was answered 500
@example("POST", "/zn/v1/naf-keys", b"[" * 4000, "127.0.0.1")
def test_zn(method, target, body, peer):
    h = test_bsf.Harness()
    with no_failure_logged():
        check(exchange(h.znSite, request_bytes(method, target, (), body), peer))
        ok = json.dumps({"btid": test_bsf.BTID, "nafId": test_bsf.NAF_ID.hex()}).encode()
        # unknown B-TID (nothing bootstrapped here): 404, served as usual
        assert exchange(h.znSite, request_bytes("POST", "/zn/v1/naf-keys", (), ok))[0] == 404


requesttypes = st.sampled_from(["authorize", "deauthorize", "register", "deregister",
                                "msk-request", "", "AUTHORIZE", "x"])
content_types = st.none() | st.sampled_from([
    profile.CT_AUTHORIZE, profile.CT_REGISTER, profile.CT_DEREGISTER, profile.CT_MSK_REQUEST,
    "text/xml", "application/mbms-register+xml; charset=utf-8", ";", ""])
identities = st.none() | st.sampled_from(['"sip:user1@home1.net"', "sip:user1@home1.net", '"',
                                          '"tel:+358501234567"', "", '"sip:x@y", "sip:z@w"'])
bodies = xml_garbage | st.builds(
    lambda ids, ue: mbms_xml.build_authorize(mbms_xml.AuthorizeRequest(ids, ue, None)),
    st.lists(st.sampled_from([test_bmsc.SERVICE, "urn:other", "urn:x"]), min_size=1, max_size=3,
             unique=True), st.sampled_from([test_bmsc.UE_IP, "::1"]))


@budget(0.3)
@given(st.sampled_from(["POST", "GET", "PUT"]), requesttypes, content_types, identities,
       identities, st.lists(authorizations, max_size=2), bodies, peers)
def test_bmsc_key_management(method, requesttype, contentType, asserted, intended, auths, body,
                             peer):
    h = test_bmsc.Harness()
    headers = [("Authorization", a) for a in auths if a is not None]
    if contentType is not None:
        headers.append(("Content-Type", contentType))
    if asserted is not None:
        headers.append(("X-3GPP-Asserted-Identity", asserted))
    if intended is not None:
        headers.append(("X-3GPP-Intended-Identity", intended))
    with no_failure_logged():
        check(exchange(h.site, request_bytes(
            method, "/keymanagement?requesttype=" + requesttype, headers, body), peer))
        # and it still serves: the SCF's authorize, then the UE's register
        assert h.authorize()[0] == 200
        assert h.register()[0] == 200


@budget(0.3)
@given(st.sampled_from(["register", "deregister", "msk-request"]), xml_garbage)
def test_bmsc_authenticated_garbage(requesttype, body):
    """Past a valid Digest: the XML is the only thing wrong."""
    h = test_bmsc.Harness()
    contentType = {"register": profile.CT_REGISTER, "deregister": profile.CT_DEREGISTER,
                   "msk-request": profile.CT_MSK_REQUEST}[requesttype]
    with no_failure_logged():
        (status, _, _), _ = h.ue(requesttype, body, contentType)
        assert status < 500
        assert h.authorize()[0] == 200
        assert h.register()[0] == 200
