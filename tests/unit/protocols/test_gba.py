"""
TS 33.220 Annex B KDF, NAF_Id, B-TID, Ub nonce and BootstrappingInfo XML.

Expected values come from a worked example of TS 33.220 B.2/B.3 computed by
hand for TS 35.208 test set 1, and the TS 24.109 C.1 XML sample, never from
this code.
"""

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from mbmsd.protocols import gba
from mbmsd.protocols.gba import (
    BSF_CONTENT_TYPE,
    BSF_XML_NS,
    UA_PROTOCOL_26237_HTTP,
    UA_PROTOCOL_26237_SIP,
    UA_PROTOCOL_HTTP_DIGEST,
    UA_PROTOCOL_MBMS,
    bootstrapping_info_xml,
    decode_nonce,
    derive_ks_int_naf,
    derive_ks_naf,
    encode_nonce,
    format_utc,
    kdf,
    make_btid,
    naf_id,
    parse_bootstrapping_info,
    parse_btid,
    parse_utc,
)

h = bytes.fromhex

# computed outside mbmsd by TS 33.220 B.2/B.3 from TS 35.208 4.3 test set 1 CK || IK
KS = h("b40ba9a3c58b2a05bbf0d987b21bf8cb" "f769bcd751044604127672711c6d3441")
RAND = h("23553cbe9637a89d218ae64dae47bf35")
AUTN = h("55f328b43577b9b94a9ffac354dfafb3")
IMPI = "user1_private@home1.net"
NAF_FQDN = "bmsc.home1.net"
KS_NAF_01 = h("9e7f591d867c2c51bcf388beffa209771eed795d08db4a470895468faff293cb")
KS_NAF_01_B64 = "nn9ZHYZ8LFG884i+/6IJdx7teV0I20pHCJVGj6/yk8s="
KS_NAF_02 = h("ae2898c09b51b29493a5a0406339b8a720fcc9297e6269fbc9df0c6beb7de6b9")
BTID = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net"
NONCE = "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M="

# S field by field (TS 33.220 B.2: FC || P0 || L0 || ... || P3 || L3)
S_HEX = (
    "01"
    "6762612d6d65" "0006"
    "23553cbe9637a89d218ae64dae47bf35" "0010"
    "75736572315f7072697661746540686f6d65312e6e6574" "0017"
    "626d73632e686f6d65312e6e6574" "0100000001" "0013"
)

SAMPLE_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<BootstrappingInfo xmlns="uri:3gpp-gba">
  <btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net</btid>
  <lifetime>2004-01-08T20:13:17Z</lifetime>
</BootstrappingInfo>
"""
SAMPLE_LIFETIME = datetime(2004, 1, 8, 20, 13, 17, tzinfo=timezone.utc)


# --- KDF -------------------------------------------------------------------


def test_ua_protocol_ids():
    assert UA_PROTOCOL_MBMS == h("0100000001")
    assert UA_PROTOCOL_HTTP_DIGEST == h("0100000002")
    assert UA_PROTOCOL_26237_HTTP == h("0100000003")
    assert UA_PROTOCOL_26237_SIP == h("0100000004")


def test_naf_id():
    assert naf_id(NAF_FQDN, UA_PROTOCOL_MBMS) == h("626d73632e686f6d65312e6e6574" "0100000001")


@pytest.mark.parametrize("ua", [b"", h("01000000"), h("010000000100")])
def test_naf_id_rejects_bad_ua_id(ua):
    with pytest.raises(ValueError):
        naf_id(NAF_FQDN, ua)


def test_naf_id_rejects_empty_fqdn():
    with pytest.raises(ValueError):
        naf_id("", UA_PROTOCOL_MBMS)


def test_kdf_s_construction_against_hex_s():
    # kdf() must build exactly the S written out above.
    expected = hmac.new(KS, h(S_HEX), hashlib.sha256).digest()
    got = kdf(KS, 0x01, b"gba-me", RAND, IMPI.encode(), naf_id(NAF_FQDN, UA_PROTOCOL_MBMS))
    assert got == expected
    assert got == KS_NAF_01


def test_kdf_str_params_are_utf8():
    assert kdf(KS, 0x01, "gba-me", RAND, IMPI, naf_id(NAF_FQDN, UA_PROTOCOL_MBMS)) == KS_NAF_01


def test_kdf_lengths_two_octets_big_endian():
    p = bytes(300)
    expected = hmac.new(b"k", b"\x07" + p + b"\x01\x2c", hashlib.sha256).digest()
    assert kdf(b"k", 7, p) == expected
    assert kdf(b"k", 7) == hmac.new(b"k", b"\x07", hashlib.sha256).digest()
    # empty parameter still gets L = 0000
    assert kdf(b"k", 7, b"") == hmac.new(b"k", b"\x07\x00\x00", hashlib.sha256).digest()


@pytest.mark.parametrize("fc", [-1, 256, 1.0, True])
def test_kdf_bad_fc(fc):
    with pytest.raises((ValueError, TypeError)):
        kdf(KS, fc, b"x")


def test_kdf_parameter_too_long():
    with pytest.raises(ValueError):
        kdf(KS, 1, bytes(65536))


def test_ks_naf_worked_example_mbms():
    k = derive_ks_naf(KS, RAND, IMPI, naf_id(NAF_FQDN, UA_PROTOCOL_MBMS))
    assert k == KS_NAF_01
    assert base64.b64encode(k).decode() == KS_NAF_01_B64


def test_ks_naf_worked_example_http_digest():
    assert derive_ks_naf(KS, RAND, IMPI, naf_id(NAF_FQDN, UA_PROTOCOL_HTTP_DIGEST)) == KS_NAF_02


def test_ks_int_naf_uses_gba_u_label():
    nid = naf_id(NAF_FQDN, UA_PROTOCOL_MBMS)
    s = (
        "01" "6762612d75" "0005"
        "23553cbe9637a89d218ae64dae47bf35" "0010"
        + IMPI.encode().hex() + "0017"
        + nid.hex() + "0013"
    )
    assert derive_ks_int_naf(KS, RAND, IMPI, nid) == hmac.new(KS, h(s), hashlib.sha256).digest()
    assert derive_ks_int_naf(KS, RAND, IMPI, nid) != KS_NAF_01


@pytest.mark.parametrize(
    "args",
    [
        (KS[:16], RAND, IMPI, b"x.y" + UA_PROTOCOL_MBMS),
        (KS, RAND[:15], IMPI, b"x.y" + UA_PROTOCOL_MBMS),
        (KS, RAND, "", b"x.y" + UA_PROTOCOL_MBMS),
        (KS, RAND, IMPI, UA_PROTOCOL_MBMS),
    ],
)
def test_derive_bad_inputs(args):
    with pytest.raises(ValueError) as e:
        derive_ks_naf(*args)
    assert KS.hex() not in str(e.value)


# --- B-TID -----------------------------------------------------------------


def test_btid_worked_example():
    assert make_btid(RAND, "bsf.home1.net") == BTID
    assert parse_btid(BTID) == (RAND, "bsf.home1.net")


def test_btid_round_trip():
    for i in range(20):
        rand = bytes((i * 37 + j * 11) & 0xFF for j in range(16))
        assert parse_btid(make_btid(rand, "bsf.mnc001.mcc001.pub.3gppnetwork.org")) == (
            rand, "bsf.mnc001.mcc001.pub.3gppnetwork.org")


HUGE = "A" * 100000


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "I1U8vpY3qJ0hiuZNrke/NQ==",  # no @
        "I1U8vpY3qJ0hiuZNrke/NQ==@",  # empty domain
        "@bsf.home1.net",  # empty RAND
        "I1U8vpY3qJ0hiuZNrke/NQ@bsf.home1.net",  # missing padding
        "I1U8vpY3qJ0hiuZNrke_NQ==@bsf.home1.net",  # urlsafe alphabet
        "I1U8vpY3qJ0hiuZNrke/N!==@bsf.home1.net",  # bad char
        "I1U8vpY3qJ0hiuZNrke/NR==@bsf.home1.net",  # non-canonical padding bits
        "I1U8vpY3qJ0hiuZNrke/@bsf.home1.net",  # 15 bytes
        "I1U8vpY3qJ0hiuZNrke/NVXz@bsf.home1.net",  # 18 bytes
        " I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net",
        "I1U8vpY3qJ0hiuZNrke/NQ==@bsf home1.net",
        "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net@x",
        "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net\n",
        "I1U8vpY3qJ0hiuZNrke/NQ==@b\u00e9f.net",
        "I1U8vpY3qJ0hiuZNrke/NQ==@" + "a" * 240,  # 265 chars
        HUGE,
        HUGE + "@x",
    ],
)
def test_parse_btid_malformed(bad):
    with pytest.raises(ValueError) as e:
        parse_btid(bad)
    assert len(str(e.value)) < 100


@pytest.mark.parametrize("bad", [None, b"I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net", 5])
def test_parse_btid_non_str(bad):
    with pytest.raises(ValueError):
        parse_btid(bad)


def test_make_btid_bad_inputs():
    with pytest.raises(ValueError):
        make_btid(RAND[:15], "bsf.home1.net")
    with pytest.raises(ValueError):
        make_btid(RAND, "")
    with pytest.raises(ValueError):
        make_btid(RAND, "a@b")
    with pytest.raises(ValueError):
        make_btid(RAND, "a" * 240)


# --- nonce -----------------------------------------------------------------


def test_nonce_worked_example():
    assert encode_nonce(RAND, AUTN) == NONCE
    assert decode_nonce(NONCE) == (RAND, AUTN)


def test_nonce_ignores_server_specific_data():
    n = base64.b64encode(RAND + AUTN + b"server-specific-data").decode()
    assert decode_nonce(n) == (RAND, AUTN)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        base64.b64encode(RAND + AUTN[:15]).decode(),  # 31 bytes
        base64.b64encode(RAND).decode(),
        NONCE[:-1],  # bad padding
        NONCE.replace("/", "_"),
        NONCE + "\u00e9",
        "not base64 at all!",
        "A" * 100000,
        None,
    ],
)
def test_nonce_malformed(bad):
    with pytest.raises(ValueError) as e:
        decode_nonce(bad)
    assert len(str(e.value)) < 100


def test_encode_nonce_bad_lengths():
    with pytest.raises(ValueError):
        encode_nonce(RAND[:15], AUTN)
    with pytest.raises(ValueError):
        encode_nonce(RAND, AUTN + b"\x00")


# --- UTC times -------------------------------------------------------------


def test_format_parse_utc():
    assert format_utc(SAMPLE_LIFETIME) == "2004-01-08T20:13:17Z"
    assert parse_utc("2004-01-08T20:13:17Z") == SAMPLE_LIFETIME
    assert parse_utc("2004-01-08T20:13:17Z").tzinfo is not None
    # other zones converted; fraction dropped on output
    cet = timezone(timedelta(hours=1))
    assert format_utc(datetime(2004, 1, 8, 21, 13, 17, 999999, tzinfo=cet)) == "2004-01-08T20:13:17Z"
    assert parse_utc("2004-01-08T20:13:17.5Z") == SAMPLE_LIFETIME.replace(microsecond=500000)


def test_format_utc_rejects_naive():
    with pytest.raises(ValueError):
        format_utc(datetime(2004, 1, 8, 20, 13, 17))


@pytest.mark.parametrize(
    "bad",
    [
        "2004-01-08T20:13:17",
        "2004-01-08T20:13:17+00:00",
        "2004-01-08T20:13:17+01:00",
        "2004-01-08 20:13:17Z",
        "2004-01-08t20:13:17z",
        "2004-13-08T20:13:17Z",
        "2004-02-30T20:13:17Z",
        "2004-01-08T25:13:17Z",
        "04-01-08T20:13:17Z",
        "",
        "2004-01-08T20:13:17Z\n",
        "\u0662004-01-08T20:13:17Z",
    ],
)
def test_parse_utc_malformed(bad):
    with pytest.raises(ValueError):
        parse_utc(bad)


# --- BootstrappingInfo XML -------------------------------------------------


def test_constants():
    assert BSF_XML_NS == "uri:3gpp-gba"
    assert BSF_CONTENT_TYPE == "application/vnd.3gpp.bsf+xml"


def test_parse_sample_body():
    assert parse_bootstrapping_info(SAMPLE_XML) == (BTID, SAMPLE_LIFETIME)


def test_xml_round_trip():
    body = bootstrapping_info_xml(BTID, SAMPLE_LIFETIME)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b'xmlns="uri:3gpp-gba"' in body
    assert b"<lifetime>2004-01-08T20:13:17Z</lifetime>" in body
    assert b"<btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net</btid>" in body
    assert parse_bootstrapping_info(body) == (BTID, SAMPLE_LIFETIME)


def test_xml_lifetime_converted_to_utc_seconds():
    cet = timezone(timedelta(hours=1))
    body = bootstrapping_info_xml(BTID, datetime(2004, 1, 8, 21, 13, 17, 123, tzinfo=cet))
    assert b"<lifetime>2004-01-08T20:13:17Z</lifetime>" in body


def test_xml_escapes_btid():
    body = bootstrapping_info_xml("a<b>&c", SAMPLE_LIFETIME)
    assert b"<btid>a&lt;b&gt;&amp;c</btid>" in body


def test_xml_build_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrapping_info_xml(BTID, datetime(2004, 1, 8))
    with pytest.raises(ValueError):
        bootstrapping_info_xml("a\x00b", SAMPLE_LIFETIME)
    with pytest.raises(ValueError):
        bootstrapping_info_xml("", SAMPLE_LIFETIME)


def test_xml_unknown_elements_ignored():
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<BootstrappingInfo xmlns="uri:3gpp-gba" foo="bar">
  <btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net</btid>
  <lifetime>2004-01-08T20:13:17Z</lifetime>
  <Extension><currenttime>2004-01-08T10:13:17Z</currenttime><x:y xmlns:x="urn:x"/></Extension>
</BootstrappingInfo>"""
    assert parse_bootstrapping_info(body) == (BTID, SAMPLE_LIFETIME)


def test_xml_prefixed_namespace_accepted():
    body = (b'<g:BootstrappingInfo xmlns:g="uri:3gpp-gba"><g:btid>' + BTID.encode()
            + b"</g:btid><g:lifetime>2004-01-08T20:13:17Z</g:lifetime></g:BootstrappingInfo>")
    assert parse_bootstrapping_info(body) == (BTID, SAMPLE_LIFETIME)


def _body(btid=BTID, lifetime="2004-01-08T20:13:17Z", ns="uri:3gpp-gba", root="BootstrappingInfo"):
    return ('<%s xmlns="%s"><btid>%s</btid><lifetime>%s</lifetime></%s>'
            % (root, ns, btid, lifetime, root)).encode()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<BootstrappingInfo xmlns="uri:3gpp-gba"><btid>&lol4;</btid>
<lifetime>2004-01-08T20:13:17Z</lifetime></BootstrappingInfo>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<BootstrappingInfo xmlns="uri:3gpp-gba"><btid>&xxe;</btid>
<lifetime>2004-01-08T20:13:17Z</lifetime></BootstrappingInfo>"""

XXE_PARAM = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY % p SYSTEM "http://127.0.0.1:1/x.dtd"> %p; ]>
<BootstrappingInfo xmlns="uri:3gpp-gba"/>"""

DTD_ONLY = b"""<?xml version="1.0"?>
<!DOCTYPE BootstrappingInfo SYSTEM "http://127.0.0.1:1/bsf.dtd">
""" + _body()


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        XXE,
        XXE_PARAM,
        DTD_ONLY,
        b"",
        b"not xml",
        b"<BootstrappingInfo xmlns='uri:3gpp-gba'>",  # unterminated
        b"\xff\xfe<x/>",
        _body(ns="uri:3gpp-gba-other"),
        _body(ns=""),
        _body(root="Bootstrapping"),
        _body(btid="not-a-btid"),
        _body(btid=""),
        _body(lifetime="2004-01-08T20:13:17"),
        _body(lifetime="2004-01-08T20:13:17+00:00"),
        _body(lifetime="yesterday"),
        _body(lifetime=""),
        b'<BootstrappingInfo xmlns="uri:3gpp-gba"><btid>' + BTID.encode() + b"</btid></BootstrappingInfo>",
        b'<BootstrappingInfo xmlns="uri:3gpp-gba"><lifetime>2004-01-08T20:13:17Z</lifetime></BootstrappingInfo>',
        b'<BootstrappingInfo xmlns="uri:3gpp-gba"><btid>' + BTID.encode() + b"</btid><btid>"
        + BTID.encode() + b"</btid><lifetime>2004-01-08T20:13:17Z</lifetime></BootstrappingInfo>",
        # btid in no namespace
        b'<g:BootstrappingInfo xmlns:g="uri:3gpp-gba"><btid>' + BTID.encode()
        + b"</btid><g:lifetime>2004-01-08T20:13:17Z</g:lifetime></g:BootstrappingInfo>",
        # element content instead of text
        _body(btid="<x>" + BTID + "</x>"),
        b"<a>" * 70000,
    ],
)
def test_xml_malformed(body):
    with pytest.raises(ValueError) as e:
        parse_bootstrapping_info(body)
    assert "/etc/passwd" not in str(e.value)
    assert len(str(e.value)) < 100


def test_xml_non_bytes():
    with pytest.raises(ValueError):
        parse_bootstrapping_info(None)


def test_module_exports():
    for name in gba.__all__:
        assert hasattr(gba, name)
