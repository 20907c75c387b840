"""
Untrusted XML goes through defusedxml, with DTDs, entities and external
references refused (issue "Hardening" 3):

  - the source: no module of mbmsd parses XML with the standard library's
    parsers (or lxml), and every defusedxml call forbids DTDs, entities and
    external references explicitly;
  - every parser of a body we receive (the BM-SC's six, the BSF's
    BootstrappingInfo that the UE reads) refuses XXE, billion laughs, an
    external DTD and an external parameter entity, without ever reaching the
    external resource: a TCP port and a file named in them stay untouched;
  - at the BM-SC's key management listener, past a valid Digest, register,
    deregister and msk-request bodies with entities get 400 and change
    nothing (the authorize case is in tests/unit/roles/bmsc/test_keymanagement.py); the SCF takes an
    acknowledgement with entities as a refusal.
"""

import ast
import socket
from pathlib import Path

import pytest

from mbmsd import profile
from mbmsd.protocols import gba
from mbmsd.protocols import mbms_xml as mx
from mbmsd.roles.scf.bmsc import BmscRefused, HttpServiceAuthorizationClient
from tests.unit.roles.bmsc import test_keymanagement as test_bmsc

PACKAGE = Path(__file__).resolve().parents[3] / "mbmsd"

# ---------------------------------------------------------------- the source

# what may be imported from the standard library's XML packages: no parser
ALLOWED = {("xml.etree.ElementTree", "ParseError"), ("xml.sax.saxutils", "escape")}
UNSAFE_MODULES = ("xml.etree", "xml.dom", "xml.sax", "xml.parsers", "lxml")
DEFUSED_PARSE = {"fromstring", "parse", "XML", "iterparse", "XMLParser", "parseString"}


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_stdlib_xml_parser_in_mbmsd():
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(path, a.name) for a in node.names if a.name.startswith(UNSAFE_MODULES)]
            elif isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith(UNSAFE_MODULES):
                found += [(path, node.module, a.name) for a in node.names
                          if (node.module, a.name) not in ALLOWED]
    assert found == []


def test_every_defusedxml_parse_forbids_dtds_entities_and_external_references():
    calls = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                   for a in n.names if a.name.startswith("defusedxml")}
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("defusedxml"):
                aliases |= {a.asname or a.name for a in n.names}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            base = node.func.value
            if isinstance(base, ast.Name) and base.id in aliases and node.func.attr in DEFUSED_PARSE:
                kw = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                calls.append((path.name, kw.get("forbid_dtd"), kw.get("forbid_entities"),
                              kw.get("forbid_external")))
    assert sorted(name for name, *_ in calls) == ["gba.py", "mbms_xml.py"]
    assert all(flags == [True, True, True] for _, *flags in calls), calls


# ---------------------------------------------------------------- the parsers

PARSERS = [
    (mx.parse_authorize, mx.MbmsXmlError), (mx.parse_authorize_response, mx.MbmsXmlError),
    (mx.parse_register, mx.MbmsXmlError), (mx.parse_deregister, mx.MbmsXmlError),
    (mx.parse_register_response, mx.MbmsXmlError), (mx.parse_msk_request, mx.MbmsXmlError),
    (mx.parse_msk_response, mx.MbmsXmlError), (gba.parse_bootstrapping_info, ValueError),
]

LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE r [\n <!ENTITY l0 "lol">\n'
          + b"".join(b' <!ENTITY l%d "%s">\n' % (i, (b"&l%d;" % (i - 1)) * 10) for i in range(1, 10))
          + b"]>\n<r>&l9;</r>")


@pytest.fixture
def trap(tmp_path):
    """
    A TCP port that listens and a file with a marker: what an external
    reference would reach. Yields (url, file path, marker, touched()).
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    marker = "mbmsd-xxe-marker-%d" % (server.getsockname()[1],)
    secret = tmp_path / "secret.txt"
    secret.write_text(marker)

    def touched():
        try:
            server.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    yield "http://127.0.0.1:%d/x.dtd" % (server.getsockname()[1],), secret, marker, touched
    server.close()


def hostile(root, ns, url, secret):
    """(name, body) of each attack, on the parser's own root and namespace."""
    open_root = b'<%s xmlns="%s">' % (root, ns)
    close_root = b"</%s>" % (root,)
    return [
        ("xxe-file", b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://%s">]>'
         % (str(secret).encode(),) + open_root + b"<serviceId>&x;</serviceId>" + close_root),
        ("xxe-http", b'<!DOCTYPE r [<!ENTITY x SYSTEM "%s">]>' % (url.encode(),)
         + open_root + b"&x;" + close_root),
        ("external-dtd", b'<!DOCTYPE r SYSTEM "%s">' % (url.encode(),) + open_root + close_root),
        ("parameter-entity", b'<!DOCTYPE r [<!ENTITY %% p SYSTEM "%s"> %%p;]>' % (url.encode(),)
         + open_root + close_root),
        ("billion-laughs", LAUGHS.replace(b"<r>&l9;</r>", open_root + b"&l9;" + close_root)),
        ("internal-entity", b'<!DOCTYPE r [<!ENTITY x "urn:mbmsd:news">]>'
         + open_root + b"<serviceId>&x;</serviceId>" + close_root),
    ]


ROOTS = {
    mx.parse_authorize: (profile.EL_AUTHORIZE, profile.NS_AUTHORIZE),
    mx.parse_authorize_response: (profile.EL_AUTHORIZE_RESPONSE, profile.NS_AUTHORIZE),
    mx.parse_register: (profile.EL_REGISTER, profile.NS_REGISTER),
    mx.parse_deregister: (profile.EL_DEREGISTER, profile.NS_REGISTER),
    mx.parse_register_response: (profile.EL_REGISTER_RESPONSE, profile.NS_REGISTER),
    mx.parse_msk_request: (profile.EL_MSK_REQUEST, profile.NS_REGISTER),
    mx.parse_msk_response: (profile.EL_MSK_RESPONSE, profile.NS_MSK_RESPONSE),
    gba.parse_bootstrapping_info: ("BootstrappingInfo", gba.BSF_XML_NS),
}


@pytest.mark.parametrize("parse,error", PARSERS, ids=lambda p: getattr(p, "__name__", ""))
def test_parsers_refuse_entities_and_reach_nothing(parse, error, trap):
    url, secret, marker, touched = trap
    root, ns = ROOTS[parse]
    for name, body in hostile(root.encode(), ns.encode(), url, secret):
        with pytest.raises(error) as e:
            parse(body)
        assert marker not in str(e.value), name
        assert "DTD" in str(e.value) or "entit" in str(e.value), (name, str(e.value))
    assert not touched()


# ---------------------------------------------------------------- the listeners


@pytest.mark.parametrize("requesttype,contentType", [
    ("register", profile.CT_REGISTER), ("deregister", profile.CT_DEREGISTER),
    ("msk-request", profile.CT_MSK_REQUEST)])
def test_bmsc_refuses_entities_past_digest(requesttype, contentType, trap):
    url, secret, marker, touched = trap
    h = test_bmsc.Harness()
    assert h.authorize()[0] == 200
    root = {"register": profile.EL_REGISTER, "deregister": profile.EL_DEREGISTER,
            "msk-request": profile.EL_MSK_REQUEST}[requesttype]
    for name, body in hostile(root.encode(), profile.NS_REGISTER.encode(), url, secret):
        (status, _, answer), _ = h.ue(requesttype, body, contentType)
        assert status == 400, (name, status, answer)
        assert marker.encode() not in answer
    assert h.mikeySent() == []  # nothing registered, no MSK pushed
    assert h.metric("mbmsd_bmsc_requests_total", requesttype=requesttype, status="400") == 6
    assert not touched()
    # and a plain register is served
    assert h.register()[0] == 200


class _Headers:
    def __init__(self, contentType):
        self.contentType = contentType

    def getRawHeaders(self, name):
        return [self.contentType.encode()] if name == b"content-type" else None


def test_scf_takes_an_acknowledgement_with_entities_as_a_refusal(trap):
    url, secret, marker, touched = trap
    client = HttpServiceAuthorizationClient(None, "http://127.0.0.1:1234", 5, 0)
    for name, body in hostile(profile.EL_AUTHORIZE_RESPONSE.encode(),
                              profile.NS_AUTHORIZE.encode(), url, secret):
        with pytest.raises(BmscRefused) as e:
            client._answer((200, _Headers(profile.CT_AUTHORIZE_RESPONSE), body))
        assert marker not in str(e.value), name
    assert not touched()
