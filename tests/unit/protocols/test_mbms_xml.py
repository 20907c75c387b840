"""
The BM-SC XML bodies (docs/design.md 7.4 and 7.5, "mbmsd profile 1"). The
expected documents and values are written by hand from docs/design.md, not
produced by the module under test; hostile inputs (XXE, billion laughs,
DTDs, oversize, garbage) may only ever raise MbmsXmlError.
"""

import random

import pytest

from mbmsd import profile
from mbmsd.protocols import mbms_xml as mx
from mbmsd.protocols.mbms_xml import AuthorizeRequest, MbmsXmlError

NS_AUTH = "urn:mbmsd:xml:ns:mbms-authorize:1"
NS_REG = "urn:mbmsd:xml:ns:mbms-register:1"
# TS 26.346 Annex C.12: the namespace of the MSK request's response
NS_MSK_RESPONSE = "urn:3GPP:metadata:2005:MBMS:mskResponse"

# docs/design.md 7.4, the example body (annotations removed)
DESIGN_AUTHORIZE = b"""<?xml version="1.0" encoding="UTF-8"?>
<mbmsAuthorize xmlns="urn:mbmsd:xml:ns:mbms-authorize:1">
  <serviceId>urn:mbmsd:news</serviceId>
  <ueIPaddress>127.0.0.1</ueIPaddress>
  <lifetime>3600</lifetime>
</mbmsAuthorize>
"""

# docs/design.md 7.4, the acknowledgement
DESIGN_AUTHORIZE_RESPONSE = (
    b'<mbmsAuthorizeResponse xmlns="urn:mbmsd:xml:ns:mbms-authorize:1">'
    b'<serviceId status="200">urn:mbmsd:news</serviceId></mbmsAuthorizeResponse>'
)


# ---------------------------------------------------------------------------
# profile constants, written out by hand from docs/design.md 7.4, 7.5


def test_profile_names():
    assert profile.CT_AUTHORIZE == "application/mbms-authorize+xml"
    assert profile.CT_REGISTER == "application/mbms-register+xml"
    assert profile.CT_REGISTER_RESPONSE == "application/mbms-register-response+xml"
    assert profile.CT_DEREGISTER == "application/mbms-deregister+xml"
    assert profile.CT_MSK_REQUEST == "application/mbms-msk+xml"
    assert profile.CT_MSK_RESPONSE == "application/mbms-msk-response+xml"
    assert profile.NS_AUTHORIZE == NS_AUTH
    assert profile.NS_REGISTER == NS_REG
    assert profile.NS_MSK_RESPONSE == NS_MSK_RESPONSE
    assert profile.UA_REALM_PREFIX == "3GPP-bootstrapping@"


# ---------------------------------------------------------------------------
# the documents of docs/design.md 7.4


def test_parse_design_authorize_example():
    req = mx.parse_authorize(DESIGN_AUTHORIZE)
    assert req == AuthorizeRequest(["urn:mbmsd:news"], "127.0.0.1", 3600)


def test_build_authorize_is_the_design_example():
    assert mx.build_authorize(AuthorizeRequest(["urn:mbmsd:news"], "127.0.0.1", 3600)) \
        == DESIGN_AUTHORIZE


def test_parse_design_authorize_response():
    assert mx.parse_authorize_response(DESIGN_AUTHORIZE_RESPONSE) == [("urn:mbmsd:news", 200)]


def test_build_authorize_response_bytes():
    assert mx.build_authorize_response([("urn:mbmsd:news", 200), ("urn:x", 404)]) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<mbmsAuthorizeResponse xmlns="urn:mbmsd:xml:ns:mbms-authorize:1">\n'
        b'  <serviceId status="200">urn:mbmsd:news</serviceId>\n'
        b'  <serviceId status="404">urn:x</serviceId>\n'
        b"</mbmsAuthorizeResponse>\n"
    )


def test_build_register_bytes():
    assert mx.build_register(["urn:mbmsd:news", "urn:mbmsd:sport"]) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<mbmsRegister xmlns="urn:mbmsd:xml:ns:mbms-register:1">\n'
        b"  <serviceId>urn:mbmsd:news</serviceId>\n"
        b"  <serviceId>urn:mbmsd:sport</serviceId>\n"
        b"</mbmsRegister>\n"
    )


def test_build_deregister_bytes():
    assert mx.build_deregister(["urn:mbmsd:news"]) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<mbmsDeregister xmlns="urn:mbmsd:xml:ns:mbms-register:1">\n'
        b"  <serviceId>urn:mbmsd:news</serviceId>\n"
        b"</mbmsDeregister>\n"
    )


def test_build_register_response_bytes():
    assert mx.build_register_response([("urn:mbmsd:news", 200), ("urn:b", 403)]) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<mbmsRegisterResponse xmlns="urn:mbmsd:xml:ns:mbms-register:1">\n'
        b'  <serviceId status="200">urn:mbmsd:news</serviceId>\n'
        b'  <serviceId status="403">urn:b</serviceId>\n'
        b"</mbmsRegisterResponse>\n"
    )


def test_build_msk_request_bytes():
    assert mx.build_msk_request(bytes.fromhex("32f410"), [bytes.fromhex("0001000a"),
                                                          bytes.fromhex("ABCDEF01")]) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<mbmsMskRequest xmlns="urn:mbmsd:xml:ns:mbms-register:1">\n'
        b"  <keyDomainId>32f410</keyDomainId>\n"
        b"  <mskId>0001000a</mskId>\n"
        b"  <mskId>abcdef01</mskId>\n"
        b"</mbmsMskRequest>\n"
    )


def test_build_msk_response_bytes():
    assert mx.build_msk_response([(bytes.fromhex("0001000a"), 200)]) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<mbmsMskResponse xmlns="urn:3GPP:metadata:2005:MBMS:mskResponse">\n'
        b'  <mskId status="200">0001000a</mskId>\n'
        b"</mbmsMskResponse>\n"
    )


def test_parse_hand_written_documents():
    """Prefixed namespaces, whitespace, unknown elements, upper-case hex."""
    assert mx.parse_register(
        b"<r:mbmsRegister xmlns:r='urn:mbmsd:xml:ns:mbms-register:1' xmlns:o='urn:other'>"
        b"<r:serviceId>\n  urn:a \t</r:serviceId><o:serviceId>urn:ignored</o:serviceId>"
        b"<r:extension><r:serviceId>urn:nested-ignored</r:serviceId></r:extension>"
        b"<r:serviceId>urn:b</r:serviceId></r:mbmsRegister>") == ["urn:a", "urn:b"]
    assert mx.parse_deregister(
        b'<mbmsDeregister xmlns="urn:mbmsd:xml:ns:mbms-register:1"><serviceId>urn:a'
        b"</serviceId></mbmsDeregister>") == ["urn:a"]
    assert mx.parse_msk_request(
        b'<mbmsMskRequest xmlns="urn:mbmsd:xml:ns:mbms-register:1"><mskId>0000FFFF</mskId>'
        b"<keyDomainId> 32F410 </keyDomainId></mbmsMskRequest>") == (
        b"\x32\xf4\x10", [b"\x00\x00\xff\xff"])
    assert mx.parse_msk_response(
        b'<mbmsMskResponse xmlns="urn:3GPP:metadata:2005:MBMS:mskResponse">'
        b'<mskId status=" 404 ">01020304</mskId><mskId status="200">01020305</mskId>'
        b"</mbmsMskResponse>") == [(b"\x01\x02\x03\x04", 404), (b"\x01\x02\x03\x05", 200)]
    assert mx.parse_msk_response(
        b"<m:mbmsMskResponse xmlns:m='urn:3GPP:metadata:2005:MBMS:mskResponse'>"
        b'<m:mskId status="200">01020305</m:mskId></m:mbmsMskResponse>') == [
        (b"\x01\x02\x03\x05", 200)]


def test_msk_response_in_our_old_namespace_is_refused():
    with pytest.raises(mx.MbmsXmlError, match="mskResponse"):
        mx.parse_msk_response(
            b'<mbmsMskResponse xmlns="urn:mbmsd:xml:ns:mbms-register:1">'
            b'<mskId status="200">01020305</mskId></mbmsMskResponse>')
    assert mx.parse_register_response(
        b'<mbmsRegisterResponse xmlns="urn:mbmsd:xml:ns:mbms-register:1">'
        b'<serviceId status="403">urn:a</serviceId></mbmsRegisterResponse>') == [("urn:a", 403)]
    # authorize without lifetime, IPv6 normalised, the deauthorize use
    req = mx.parse_authorize(
        b'<mbmsAuthorize xmlns="urn:mbmsd:xml:ns:mbms-authorize:1"><serviceId>urn:a</serviceId>'
        b"<ueIPaddress>2001:DB8:0:0::1</ueIPaddress><foo/></mbmsAuthorize>")
    assert req == AuthorizeRequest(["urn:a"], "2001:db8::1", None)


# ---------------------------------------------------------------------------
# round trips


def test_round_trips():
    ids = ["urn:mbmsd:news", "urn:a&b<c>'\"", "x" * 256]
    assert mx.parse_register(mx.build_register(ids)) == ids
    assert mx.parse_deregister(mx.build_deregister(ids)) == ids
    st = [(ids[0], 200), (ids[1], 403), (ids[2], 404)]
    assert mx.parse_register_response(mx.build_register_response(st)) == st
    assert mx.parse_authorize_response(mx.build_authorize_response(st)) == st
    assert mx.parse_register_response(mx.build_register_response([])) == []
    req = AuthorizeRequest(ids, "2001:db8::5", 86400 * 7)
    assert mx.parse_authorize(mx.build_authorize(req)) == req
    req = AuthorizeRequest(ids[:1], "10.1.2.3")
    assert mx.parse_authorize(mx.build_authorize(req)) == req
    kd, msk = b"\x00\x01\x02", [bytes([i, 0, 0, i]) for i in range(64)]
    assert mx.parse_msk_request(mx.build_msk_request(kd, msk)) == (kd, msk)
    mst = [(m, 200 + i) for i, m in enumerate(msk)]
    assert mx.parse_msk_response(mx.build_msk_response(mst)) == mst


def test_builders_validate():
    bad = [
        lambda: mx.build_register([]),
        lambda: mx.build_register(["has space"]),
        lambda: mx.build_register(["x" * 257]),
        lambda: mx.build_register([""]),
        lambda: mx.build_register(["caf\u00e9"]),
        lambda: mx.build_register("urn:a"),
        lambda: mx.build_register(["urn:a", "urn:a"]),
        lambda: mx.build_register(["urn:%d" % i for i in range(65)]),
        lambda: mx.build_register([b"urn:a"]),
        lambda: mx.build_register_response([("urn:a", 99)]),
        lambda: mx.build_register_response([("urn:a", True)]),
        lambda: mx.build_register_response([("urn:a",)]),
        lambda: mx.build_authorize(AuthorizeRequest(["urn:a"], "not-an-ip")),
        lambda: mx.build_authorize(AuthorizeRequest(["urn:a"], "fe80::1%eth0")),
        lambda: mx.build_authorize(AuthorizeRequest(["urn:a"], "127.0.0.1", 0)),
        lambda: mx.build_authorize(AuthorizeRequest(["urn:a"], "127.0.0.1", 86400 * 7 + 1)),
        lambda: mx.build_msk_request(b"\x00\x01", [b"\x00" * 4]),
        lambda: mx.build_msk_request(b"\x00\x01\x02", []),
        lambda: mx.build_msk_request(b"\x00\x01\x02", [b"\x00" * 5]),
        lambda: mx.build_msk_response([(b"\x00" * 3, 200)]),
    ]
    for f in bad:
        with pytest.raises(MbmsXmlError):
            f()


# ---------------------------------------------------------------------------
# hostile and malformed input


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE mbmsRegister [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<mbmsRegister xmlns="urn:mbmsd:xml:ns:mbms-register:1"><serviceId>&xxe;</serviceId></mbmsRegister>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<mbmsRegister xmlns="urn:mbmsd:xml:ns:mbms-register:1"><serviceId>&lol9;</serviceId></mbmsRegister>
"""

PLAIN_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE mbmsRegister SYSTEM "http://example.invalid/mbms.dtd">
<mbmsRegister xmlns="urn:mbmsd:xml:ns:mbms-register:1"><serviceId>urn:a</serviceId></mbmsRegister>
"""

EXTERNAL_PARAM_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % ext SYSTEM "http://example.invalid/x.dtd"> %ext;]>
<mbmsRegister xmlns="urn:mbmsd:xml:ns:mbms-register:1"><serviceId>urn:a</serviceId></mbmsRegister>
"""


@pytest.mark.parametrize("body", [XXE, BILLION_LAUGHS, PLAIN_DTD, EXTERNAL_PARAM_ENTITY],
                         ids=["xxe", "billion-laughs", "dtd", "external-parameter-entity"])
def test_dtds_and_entities_refused(body):
    with pytest.raises(MbmsXmlError) as e:
        mx.parse_register(body)
    assert "passwd" not in str(e.value)


def test_xxe_in_authorize_refused():
    body = XXE.replace(b"mbmsRegister", b"mbmsAuthorize").replace(NS_REG.encode(), NS_AUTH.encode())
    with pytest.raises(MbmsXmlError):
        mx.parse_authorize(body)


def _reg(inner, root=b"mbmsRegister", ns=NS_REG.encode()):
    return b'<%s xmlns="%s">%s</%s>' % (root, ns, inner, root)


@pytest.mark.parametrize("body", [
    _reg(b"<serviceId>urn:a</serviceId>", ns=b"urn:wrong"),
    b"<mbmsRegister><serviceId>urn:a</serviceId></mbmsRegister>",
    _reg(b"<serviceId>urn:a</serviceId>", root=b"mbmsDeregister"),
    _reg(b"<serviceId>urn:a</serviceId>", ns=NS_AUTH.encode()),
    _reg(b""),
    _reg(b"<serviceId>   </serviceId>"),
    _reg(b"<serviceId>urn: a</serviceId>"),
    _reg(b"<serviceId>" + b"x" * 257 + b"</serviceId>"),
    _reg(b"<serviceId>urn:a<b/></serviceId>"),
    _reg(b"<serviceId>urn:a</serviceId><serviceId>urn:a</serviceId>"),
    _reg(b"".join(b"<serviceId>urn:%d</serviceId>" % i for i in range(65))),
    _reg(b"<serviceId>caf\xc3\xa9</serviceId>"),
    _reg(b"<serviceId>urn:a</serviceId>" + b" " * (64 * 1024)),
    b"",
    b"not xml",
    b"<mbmsRegister xmlns='urn:mbmsd:xml:ns:mbms-register:1'><serviceId>urn:a</serviceId>",
    b"\xff\xfe<\x00",
    "<mbmsRegister/>",
    None,
], ids=["wrong-ns", "no-ns", "wrong-root", "other-profile-ns", "empty", "blank-id",
        "space-in-id", "long-id", "element-in-id", "duplicate", "too-many", "non-ascii-id",
        "oversized", "nothing", "not-xml", "unclosed", "bad-encoding", "str", "none"])
def test_parse_register_rejects(body):
    with pytest.raises(MbmsXmlError):
        mx.parse_register(body)


def test_64_items_and_64_kib_are_accepted():
    ids = ["urn:%d" % i for i in range(64)]
    body = mx.build_register(ids)
    body = body + b" " * (64 * 1024 - len(body))
    assert len(body) == 64 * 1024
    assert mx.parse_register(body) == ids


def _auth(inner):
    return b'<mbmsAuthorize xmlns="%s">%s</mbmsAuthorize>' % (NS_AUTH.encode(), inner)


@pytest.mark.parametrize("inner", [
    b"<serviceId>urn:a</serviceId><ueIPaddress>999.1.1.1</ueIPaddress>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>host.example</ueIPaddress>",
    b"<serviceId>urn:a</serviceId><ueIPaddress></ueIPaddress>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>fe80::1%eth0</ueIPaddress>",
    b"<serviceId>urn:a</serviceId>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>1.2.3.4</ueIPaddress>"
    b"<ueIPaddress>1.2.3.5</ueIPaddress>",
    b"<ueIPaddress>1.2.3.4</ueIPaddress>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>1.2.3.4</ueIPaddress><lifetime>0</lifetime>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>1.2.3.4</ueIPaddress><lifetime>-5</lifetime>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>1.2.3.4</ueIPaddress><lifetime>604801</lifetime>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>1.2.3.4</ueIPaddress><lifetime>1e3</lifetime>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>1.2.3.4</ueIPaddress>"
    b"<lifetime>99999999999999999999</lifetime>",
    b"<serviceId>urn:a</serviceId><ueIPaddress>1.2.3.4</ueIPaddress>"
    b"<lifetime>1</lifetime><lifetime>2</lifetime>",
], ids=["bad-ip", "hostname", "empty-ip", "scoped-ip", "no-ip", "two-ips", "no-service",
        "lifetime-0", "lifetime-negative", "lifetime-too-long", "lifetime-float",
        "lifetime-huge", "two-lifetimes"])
def test_parse_authorize_rejects(inner):
    with pytest.raises(MbmsXmlError):
        mx.parse_authorize(_auth(inner))


@pytest.mark.parametrize("parse, body", [
    (mx.parse_msk_request, _reg(b"<mskId>00000001</mskId>", root=b"mbmsMskRequest")),
    (mx.parse_msk_request, _reg(b"<keyDomainId>0001</keyDomainId><mskId>00000001</mskId>",
                                root=b"mbmsMskRequest")),
    (mx.parse_msk_request, _reg(b"<keyDomainId>000102</keyDomainId>", root=b"mbmsMskRequest")),
    (mx.parse_msk_request, _reg(b"<keyDomainId>000102</keyDomainId><mskId>0000000g</mskId>",
                                root=b"mbmsMskRequest")),
    (mx.parse_msk_request, _reg(b"<keyDomainId>000102</keyDomainId><mskId>+0000001</mskId>",
                                root=b"mbmsMskRequest")),
    (mx.parse_msk_request, _reg(b"<keyDomainId>000102</keyDomainId><keyDomainId>000102"
                                b"</keyDomainId><mskId>00000001</mskId>",
                                root=b"mbmsMskRequest")),
    (mx.parse_msk_response, _reg(b"<mskId>00000001</mskId>", root=b"mbmsMskResponse",
                                 ns=NS_MSK_RESPONSE.encode())),
    (mx.parse_msk_response, _reg(b'<mskId status="2000">00000001</mskId>',
                                 root=b"mbmsMskResponse",
                                 ns=NS_MSK_RESPONSE.encode())),
    (mx.parse_msk_response, _reg(b'<mskId status="ok">00000001</mskId>',
                                 root=b"mbmsMskResponse",
                                 ns=NS_MSK_RESPONSE.encode())),
    (mx.parse_register_response, _reg(b"<serviceId>urn:a</serviceId>",
                                      root=b"mbmsRegisterResponse")),
    (mx.parse_register_response, _reg(b'<serviceId status="-200">urn:a</serviceId>',
                                      root=b"mbmsRegisterResponse")),
    (mx.parse_authorize_response, _reg(b'<serviceId status="200">urn:a</serviceId>',
                                       root=b"mbmsAuthorizeResponse")),
])
def test_other_parsers_reject(parse, body):
    with pytest.raises(MbmsXmlError):
        parse(body)


PARSERS = [mx.parse_authorize, mx.parse_authorize_response, mx.parse_register,
           mx.parse_deregister, mx.parse_register_response, mx.parse_msk_request,
           mx.parse_msk_response]


def _mutations(rng, seeds):
    alphabet = b"<>/=\"' &;:!?[]%#xmlnsDOCTYPEENTITYserviceIdmskId0123456789\x00\xff\n"
    for _ in range(1500):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            pos = rng.randrange(len(base) + 1)
            if op == 0 and base:
                del base[pos:pos + rng.randint(1, 10)]
            elif op == 1:
                base[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            elif op == 2 and base:
                base[min(pos, len(base) - 1)] = rng.randrange(256)
            else:
                base[pos:pos] = rng.choice(seeds)[: rng.randint(0, 40)]
        yield bytes(base)
    for _ in range(300):
        yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))


def test_garbage_raises_only_mbms_xml_error():
    rng = random.Random(20240601)
    seeds = [DESIGN_AUTHORIZE, DESIGN_AUTHORIZE_RESPONSE, XXE, BILLION_LAUGHS,
             mx.build_register(["urn:a", "urn:b"]),
             mx.build_msk_request(b"\x01\x02\x03", [b"\x00\x00\x00\x01"]),
             mx.build_msk_response([(b"\x00\x00\x00\x01", 200)]),
             mx.build_register_response([("urn:a", 200)])]
    parsed = 0
    for body in _mutations(rng, seeds):
        for parse in PARSERS:
            try:
                parse(body)
                parsed += 1
            except MbmsXmlError:
                pass
    assert parsed > 0  # some mutations stay valid: the loop is not vacuous
