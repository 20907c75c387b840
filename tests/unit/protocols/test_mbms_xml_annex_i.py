"""
The XML of TS 26.237's SIP-based security procedure (Annex I.1, the B-TID
in the INVITE; Annex I.2, the NAF key information to the BM-SC). The
documents are written here by hand from the published schemas (namespace,
root, child names and order), not produced by the module under test.
"""

import base64

import pytest

from mbmsd import profile
from mbmsd.protocols import mbms_xml as mx
from mbmsd.protocols.mbms_xml import MbmsXmlError, NafKeyInfo

NS_I1 = "urn:3GPP:metadata:2005:MBMS:bootstrappingTransactionIdentifier"
NS_I2 = "urn:3GPP:metadata:2005:MBMS:nafKeyInfo"
BTID = "ZmFrZS1yYW5kLTE2Ynl0ZQ==@bsf.home1.net"
MUK = bytes(range(32))

# Annex I.1: root mbmsAuthorizedSecurityRegister, btid 1..n, then xs:any of
# another namespace
ANNEX_I1 = ("""<?xml version="1.0" encoding="UTF-8"?>
<mbmsAuthorizedSecurityRegister xmlns="%s" xmlns:x="urn:example:other" x:a="1">
  <btid> %s </btid>
  <x:extension>ignored</x:extension>
</mbmsAuthorizedSecurityRegister>
""" % (NS_I1, BTID)).encode()

# Annex I.2: ueIPaddress, muk, mukLifeTime, btid, nafFqdn (xs:base64Binary)
ANNEX_I2 = ("""<?xml version="1.0" encoding="UTF-8"?>
<mbmsAuthorizedSecurityRegister xmlns="%s">
  <ueIPaddress>192.0.2.7</ueIPaddress>
  <muk>%s</muk>
  <mukLifeTime>2026-12-02T10:00:00Z</mukLifeTime>
  <btid>%s</btid>
  <nafFqdn>%s</nafFqdn>
</mbmsAuthorizedSecurityRegister>
""" % (NS_I2, base64.b64encode(MUK).decode(), BTID,
       base64.b64encode(b"scf.home1.net").decode())).encode()

EXPIRES = 1796205600.0  # 2026-12-02T10:00:00Z


def test_profile_names_as_published():
    assert profile.NS_BTID == NS_I1
    assert profile.NS_NAF_KEY_INFO == NS_I2
    assert profile.EL_SECURITY_REGISTER == "mbmsAuthorizedSecurityRegister"
    assert (profile.EL_BTID, profile.EL_UE_ADDRESS, profile.EL_MUK, profile.EL_MUK_LIFETIME,
            profile.EL_NAF_FQDN) == ("btid", "ueIPaddress", "muk", "mukLifeTime", "nafFqdn")


def test_parse_annex_i1_by_hand():
    assert mx.parse_btid_document(ANNEX_I1) == [BTID]


def test_build_annex_i1_reads_back_as_the_schema_says():
    import xml.etree.ElementTree as ET

    root = ET.fromstring(mx.build_btid_document([BTID, "b@bsf.home1.net"]))
    assert root.tag == "{%s}mbmsAuthorizedSecurityRegister" % NS_I1
    assert [(c.tag, c.text) for c in root] == [("{%s}btid" % NS_I1, BTID),
                                               ("{%s}btid" % NS_I1, "b@bsf.home1.net")]


@pytest.mark.parametrize("body", [
    b"<mbmsAuthorizedSecurityRegister xmlns='%s'/>" % NS_I1.encode(),           # no btid
    b"<mbmsAuthorizedSecurityRegister xmlns='urn:other'><btid>x</btid>"
    b"</mbmsAuthorizedSecurityRegister>",                                         # namespace
    b"<mbmsAuthorizedSecurityRegister xmlns='%s'><btid>x" % NS_I1.encode(),      # not well-formed
    b"<!DOCTYPE r [<!ENTITY e 'x'>]><mbmsAuthorizedSecurityRegister xmlns='%s'>"
    b"<btid>&e;</btid></mbmsAuthorizedSecurityRegister>" % NS_I1.encode(),       # entities
])
def test_bad_annex_i1(body):
    with pytest.raises(MbmsXmlError):
        mx.parse_btid_document(body)


def test_parse_annex_i2_by_hand():
    info = mx.parse_naf_key_info(ANNEX_I2)
    assert info == NafKeyInfo("192.0.2.7", MUK, EXPIRES, BTID, "scf.home1.net")
    assert "muk" not in repr(info).replace("mukExpires", "")  # the key stays out of repr


def test_build_annex_i2_is_the_hand_written_document():
    built = mx.build_naf_key_info(NafKeyInfo("192.0.2.7", MUK, EXPIRES, BTID, "scf.home1.net"))
    assert built == ANNEX_I2


@pytest.mark.parametrize("old,new", [
    ("<muk>", "<muk>!!"),                                          # not base64
    (base64.b64encode(MUK).decode(), base64.b64encode(MUK[:16]).decode()),   # short MUK
    ("2026-12-02T10:00:00Z", "tomorrow"),                          # lifetime
    ("<nafFqdn>", "<nafFqdn>*"),                                   # nafFqdn not base64
    ("192.0.2.7", "not-an-address"),
    ("  <btid>", "  <btid>a</btid><btid>"),                        # two B-TIDs, one MUK
])
def test_bad_annex_i2(old, new):
    body = ANNEX_I2.decode().replace(old, new, 1).encode()
    assert body != ANNEX_I2
    with pytest.raises(MbmsXmlError):
        mx.parse_naf_key_info(body)


def test_xml_part_by_namespace_under_any_xml_type():
    other = b"<x xmlns='urn:other'/>"
    for mtype in ("application/xml", "application/vnd.3gpp.mbms-btid+xml"):
        parts = [("application/sdp", b"v=0\r\n"), ("application/xml", other), (mtype, ANNEX_I1)]
        assert mx.xml_part(parts, NS_I1) == ANNEX_I1
    # not an XML type: not looked at
    assert mx.xml_part([("text/plain", ANNEX_I1)], NS_I1) is None
    assert mx.xml_part([("application/xml", other)], NS_I1) is None
    with pytest.raises(MbmsXmlError):
        mx.xml_part([("application/xml", b"<btid")], NS_I1)
