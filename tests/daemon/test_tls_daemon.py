"""
TLS against twistd as operators run it (etc/mbmsd.toml, all four roles, plus
an overlay on free ports) with a PKI made for the test (tests/support/pki.py):

  - `mbms-ue run --tls`: Ub and Ua over HTTPS, SIP over TLS to the P-CSCF,
    the SCF's authorize over HTTPS with its client certificate, Zn over
    HTTPS with the BM-SC's client certificate; the BM-SC trusts the SCF by
    certificate alone (trusted_scfs empty), the BSF the NAF likewise (no
    addresses);
  - refused: an authorize without a client certificate (403), with a
    certificate of the right CA for a name that is not a trusted SCF (403),
    with one of another CA (handshake failure); Zn without a certificate
    (403); a UE that does not trust the server's CA (bootstrap fails);
  - a TLS file that cannot be used stops `--check` with one line naming the
    key.
"""

import http.client as httpclient
import json
import ssl
import subprocess

import pytest

from tests.support.daemon import Daemon, http, lines_of, run_ue, tool, whole_run
from tests.support.pki import Pki
from tests.support.ports import free_port

pytestmark = pytest.mark.external

IMPU = "sip:user1@home1.net"
AUTHORIZE = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
             b'<mbmsAuthorize xmlns="urn:mbmsd:xml:ns:mbms-authorize:1">'
             b'<serviceId>urn:mbmsd:news</serviceId><ueIPaddress>127.0.0.1</ueIPaddress>'
             b'</mbmsAuthorize>')


def tls_daemon(tmp_path):
    pki = Pki(tmp_path / "pki")
    server = pki.issue("server", ["bsf.home1.net", "bmsc.home1.net", "pcscf.home1.net"],
                       ["127.0.0.1"], client=False)
    # the node's HTTP client: the SCF towards the BM-SC, the NAF towards Zn
    client = pki.issue("client", ["scf.home1.net", "bmsc.home1.net"], server=False)
    files = {"certificate": server.cert, "private_key": server.key, "ca": pki.ca}
    sip_tls = free_port()
    d = Daemon(tmp_path, settings={
        "node.http_client": {"certificate": client.cert, "private_key": client.key,
                             "ca": pki.ca},
        "bsf.tls": files,
        "bmsc.tls": files,
        "pcscf": {"tls_listen": "tcp:%d:interface=127.0.0.1" % sip_tls},
        "pcscf.tls": {"certificate": server.cert, "private_key": server.key},
    }, overlay=(
        # trusted by certificate only: no address lists
        "trusted_scfs = []\n"
        'trusted_scf_names = ["scf.home1.net"]\n'
        'zn_url = "https://127.0.0.1:%d"\n'
        "[[bsf.naf]]\n"
        'fqdn = "bmsc.home1.net"\n'
        "addresses = []\n"
    ))
    # the ports are chosen by Daemon: Zn and the SCF's BM-SC URL over HTTPS
    text = d.overlay.read_text() % (d.ports["zn"],)
    d.overlay.write_text(text.replace('bmsc_url = "http://', 'bmsc_url = "https://'))
    d.pki, d.sipTls = pki, sip_tls
    return d


def metric(daemon, name, **labels):
    from prometheus_client.parser import text_string_to_metric_families

    _, _, body = http("GET", daemon.url("metrics", "/metrics"))
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def https(port, path, body, headers, ca, cert=None, key=None):
    """POST over TLS from 127.0.0.1; @return: (status, body)."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    conn = httpclient.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def authorize(d, **tls):
    return https(d.ports["bmsc"], "/keymanagement?requesttype=authorize", AUTHORIZE,
                 {"X-3GPP-Asserted-Identity": '"%s"' % IMPU,
                  "Content-Type": "application/mbms-authorize+xml"}, **tls)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tls_daemon(tmp_path_factory.mktemp("tls"))
    d.start()
    yield d
    d.stop()


def test_mbms_ue_run_tls(node):
    d = node
    p = run_ue("run", "--tls", "--ca", d.pki.ca,
               "--bsf", "http://127.0.0.1:%d/" % d.ports["ub"],
               "--bmsc", "http://127.0.0.1:%d" % d.ports["bmsc"],
               "--pcscf", "sip:127.0.0.1:%d;transport=tls" % d.sipTls,
               "--mikey-port", str(d.ports["mikey"]), timeout=90)
    report = p.stdout + p.stderr + d.log()[-6000:]
    lines = whole_run(p, report)
    assert lines[3]["services"] == {"urn:mbmsd:news": 200}, report
    # Zn went over HTTPS from the BM-SC (zn_url), trusted by its certificate
    assert metric(d, "mbmsd_bsf_zn_requests_total", result="ok") >= 1, report
    assert metric(d, "mbmsd_bsf_zn_requests_total", result="forbidden") == 0, report
    # the SCF's authorize (and BYE's deauthorize) over HTTPS, by certificate
    assert metric(d, "mbmsd_bmsc_requests_total", requesttype="authorize",
                  status="200") >= 1, report
    assert "BSF bsf.home1.net" in d.log() and "(HTTPS)" in d.log()
    assert "PRIVATE KEY" not in d.log() + p.stdout + p.stderr


def test_sip_tls_register(node):
    # RFC 3261 26.2 / TS 24.229: REGISTER (AKA) over TLS, the P-CSCF verified
    p = run_ue("register", "--ca", node.pki.ca,
               "--pcscf", "sip:127.0.0.1:%d;transport=tls" % node.sipTls, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr + node.log()[-3000:]
    line = lines_of(p)[-1]
    assert line["result"] == "ok" and line["associated"][0] == IMPU, line
    assert line["contact"].endswith(";transport=tls>") or ";transport=tls" in line["contact"]


def test_authorize_trusted_certificate_from_untrusted_address(node):
    # 127.0.0.1 is not in trusted_scfs: the certificate alone is the trust
    client = node.pki.issue("scf2", ["scf.home1.net"], server=False)
    status, body = authorize(node, ca=node.pki.ca, cert=client.cert, key=client.key)
    assert status == 200, body
    assert b'status="200"' in body


def test_authorize_without_certificate_refused(node):
    status, body = authorize(node, ca=node.pki.ca)
    assert status == 403, body


def test_authorize_other_name_refused(node):
    client = node.pki.issue("ue", ["ue.home1.net"], server=False)
    status, body = authorize(node, ca=node.pki.ca, cert=client.cert, key=client.key)
    assert status == 403, body


def test_authorize_certificate_of_another_ca_refused(node, tmp_path):
    other = Pki(tmp_path / "other", "another CA").issue("scf", ["scf.home1.net"], server=False)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        authorize(node, ca=node.pki.ca, cert=other.cert, key=other.key)


def test_zn_without_certificate_refused(node):
    body = json.dumps({"btid": "x@bsf.home1.net",
                       "nafId": (b"bmsc.home1.net" + bytes.fromhex("0100000001")).hex()})
    status, answer = https(node.ports["zn"], "/zn/v1/naf-keys", body.encode(),
                           {"Content-Type": "application/json"}, ca=node.pki.ca)
    assert status == 403, answer


def test_ue_refuses_server_of_unknown_ca(node, tmp_path):
    other = Pki(tmp_path / "other", "another CA")
    p = run_ue("bootstrap", "--tls", "--ca", other.ca,
               "--bsf", "http://127.0.0.1:%d/" % node.ports["ub"], timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    line = lines_of(p)[-1]
    assert line["step"] == "bootstrap" and line["result"] == "failed", line


def test_sip_tls_register_refuses_server_of_unknown_ca(node, tmp_path):
    other = Pki(tmp_path / "other", "another CA")
    p = run_ue("register", "--ca", other.ca, "--timeout", "3",
               "--pcscf", "sip:127.0.0.1:%d;transport=tls" % node.sipTls, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr


def test_check_names_the_bad_tls_key(tmp_path):
    pki = Pki(tmp_path / "pki")
    a, b = pki.issue("a", ["bsf.home1.net"]), pki.issue("b", ["bsf.home1.net"])
    d = Daemon(tmp_path, settings={
        "bsf.tls": {"certificate": a.cert, "private_key": b.key},
        "bmsc.tls": {"certificate": str(tmp_path / "missing.pem"), "private_key": a.key}})
    p = subprocess.run([tool("twistd"), "mbmsd", "--config", str(d.base), "--config",
                        str(d.overlay), "--check"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [x for x in p.stderr.splitlines() if "config error" in x]
    assert any("bmsc.tls.certificate: cannot read" in x for x in lines), p.stderr
    assert "BEGIN" not in p.stderr
