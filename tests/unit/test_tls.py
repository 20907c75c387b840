"""
mbmsd.tls without sockets: real TLS handshakes in memory (twisted.test.iosim)
between L{serverOptions} and L{ClientPolicy}, with certificates made here
(tests/support/pki.py); the config checks (each error names its key, one line, no
key material); and the trust decisions built on L{peerNames}: Zn (NAF by
certificate), the BM-SC's authorize (SCF by certificate), SIP connections
by transport.
"""

import shutil
import tempfile
import textwrap
from pathlib import Path

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import config as c
from mbmsd import profile, tls
from mbmsd.errors import NafNotAuthorized
from mbmsd.nodeconfig import load_config
from mbmsd.protocols import mbms_xml
from mbmsd.sip.listeners import Connections
from tests.support.pki import Pki
from tests.unit.roles.bmsc.test_keymanagement import BTID, IMPU, KS_NAF, NAF_ID, SERVICE, Harness

ROOT = Path(__file__).resolve().parents[2]


class _Recorder(Protocol):
    def __init__(self):
        self.data = b""
        self.lost = None

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason=None):
        self.lost = reason


def handshake(serverOptions, clientCreator, payload=b"hello"):
    """
    Connect a TLS client to a TLS server in memory, send C{payload} from the
    client. @return: (server TLS protocol, server app, client app).
    """
    clock = Clock()  # TLSMemoryBIOProtocol aggregates writes on a clock
    apps = {"server": _Recorder(), "client": _Recorder()}
    server = TLSMemoryBIOFactory(serverOptions, False,
                                 Factory.forProtocol(lambda: apps["server"]), clock=clock)
    client = TLSMemoryBIOFactory(clientCreator, True,
                                 Factory.forProtocol(lambda: apps["client"]), clock=clock)
    c_proto, s_proto, pump = connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: client.buildProtocol(None), clock=clock)
    if apps["client"].lost is None:
        apps["client"].transport.write(payload)
    for _ in range(20):
        pump.pump()
    return s_proto, apps["server"], apps["client"]


class _Pki:
    def setUp(self):
        # under pytest trial's mktemp() lands in the working directory
        self.folder = folder = Path(tempfile.mkdtemp(prefix="mbmsd-tls-"))
        self.addCleanup(shutil.rmtree, folder, True)
        self.pki = Pki(folder / "ca")
        self.other = Pki(folder / "other", "another CA")
        server = self.pki.issue("server", ["bmsc.home1.net"], ["127.0.0.1"], client=False)
        self.server = {"certificate": server.cert, "private_key": server.key, "ca": self.pki.ca}

    def client(self, pki=None, names=("scf.home1.net",), ca=None):
        section = {"ca": ca or self.pki.ca}
        if names:
            issued = (pki or self.pki).issue("client-" + names[0], list(names), server=False)
            section.update(certificate=issued.cert, private_key=issued.key)
        return tls.clientPolicy(section).creatorForNetloc(b"127.0.0.1", 443)


class ReloadTests(_Pki, SynchronousTestCase):
    """
    A reload (SIGHUP) gives a listener new certificate files: the next
    handshakes use them; a bad file or TLS turned on/off refuses the reload
    and the running files stay.
    """

    def renewed(self):
        other = self.other.issue("server", ["bmsc.home1.net"], ["127.0.0.1"], client=False)
        return {"certificate": other.cert, "private_key": other.key, "ca": self.pki.ca}

    def test_new_handshakes_use_the_new_certificate(self):
        running = tls.ServerTls(self.server)
        self.assertEqual(handshake(running, self.client())[1].data, b"hello")
        switch = tls.prepareReload(running, self.renewed(), "bmsc.tls")
        # prepared, not applied: the old certificate still serves
        self.assertEqual(handshake(running, self.client())[1].data, b"hello")
        switch()
        # the renewed certificate is of the other CA: a client trusting the
        # first CA only now refuses the server; one trusting the other accepts it
        _, server, client = handshake(running, self.client())
        self.assertEqual(server.data, b"")
        self.assertIsNotNone(client.lost)
        self.assertEqual(handshake(running, self.client(ca=self.other.ca))[1].data, b"hello")

    def test_a_bad_file_refuses_and_changes_nothing(self):
        running = tls.ServerTls(self.server)
        bad = self.folder / "bad.pem"
        bad.write_text("not a certificate\n")
        e = self.assertRaises(tls.TlsConfigError, tls.prepareReload, running,
                              dict(self.server, certificate=str(bad)), "bmsc.tls")
        self.assertTrue(str(e).startswith("bmsc.tls: no PEM certificate in "), str(e))
        self.assertEqual(handshake(running, self.client())[1].data, b"hello")

    def test_turning_tls_on_or_off_needs_a_restart(self):
        off = {"certificate": None, "private_key": None, "ca": None}
        e = self.assertRaises(tls.TlsConfigError, tls.prepareReload, tls.ServerTls(self.server),
                              off, "bsf.tls")
        self.assertEqual(str(e), "bsf.tls.certificate: turning TLS on or off needs a restart")
        self.assertRaises(tls.TlsConfigError, tls.prepareReload, None, self.server, "bsf.tls")
        tls.prepareReload(None, off, "bsf.tls")()  # off and off: nothing to do

    def test_client_policy_takes_the_new_files(self):
        running = tls.clientPolicy({"ca": self.other.ca})
        creator = running.creatorForNetloc(b"127.0.0.1", 443)
        _, server, client = handshake(tls.serverOptions(self.server), creator)
        self.assertIsNotNone(client.lost)  # the server's CA is not trusted yet
        running.replaceWith(tls.clientPolicy({"ca": self.pki.ca}))
        creator = running.creatorForNetloc(b"127.0.0.1", 443)
        self.assertEqual(handshake(tls.serverOptions(self.server), creator)[1].data, b"hello")


class HandshakeTests(_Pki, SynchronousTestCase):
    def test_client_certificate_names(self):
        s, server, client = handshake(tls.serverOptions(self.server), self.client())
        self.assertEqual(server.data, b"hello")
        self.assertEqual(tls.peerNames(s), frozenset({"scf.home1.net"}))

    def test_no_client_certificate_is_anonymous(self):
        # optional: the peer is then judged by its address
        s, server, client = handshake(tls.serverOptions(self.server), self.client(names=()))
        self.assertEqual(server.data, b"hello")
        self.assertEqual(tls.peerNames(s), frozenset())

    def test_client_certificate_of_another_ca_refused(self):
        s, server, client = handshake(tls.serverOptions(self.server),
                                      self.client(pki=self.other))
        self.assertEqual(server.data, b"")
        self.assertIsNotNone(server.lost)
        self.assertEqual(tls.peerNames(s), frozenset())

    def test_server_of_unknown_ca_refused(self):
        s, server, client = handshake(tls.serverOptions(self.server),
                                      self.client(ca=self.other.ca))
        self.assertEqual(server.data, b"")
        self.assertIsNotNone(client.lost)

    def test_server_name_checked(self):
        # the certificate names 127.0.0.1 and bmsc.home1.net, not this host
        creator = tls.clientPolicy({"ca": self.pki.ca}).creatorForNetloc(b"bsf.home1.net", 443)
        s, server, client = handshake(tls.serverOptions(self.server), creator)
        self.assertEqual(server.data, b"")
        self.assertIsNotNone(client.lost)

    def test_ub_asks_no_client_certificate(self):
        s, server, client = handshake(
            tls.serverOptions(self.server, clientCertificates=False), self.client())
        self.assertEqual(server.data, b"hello")
        self.assertEqual(tls.peerNames(s), frozenset())

    def test_refused_connection_stays_refused(self):
        # a wrapped factory over its bound answers None: so does the TLS one
        class Full(Factory):
            def buildProtocol(self, addr):
                return None

        wrapped = tls.wrapServer(tls.serverOptions(self.server), Full())
        self.assertIsNone(wrapped.buildProtocol(None))
        self.assertIsNotNone(tls.wrapServer(tls.serverOptions(self.server),
                                            Factory.forProtocol(_Recorder)).buildProtocol(None))

    def test_plain_transport_has_no_names(self):
        self.assertEqual(tls.peerNames(object()), frozenset())


class CheckTests(_Pki, SynchronousTestCase):
    def test_usable(self):
        self.assertEqual(tls.check(self.server, "bsf.tls", needCertificate=True), [])
        self.assertEqual(tls.check({"certificate": None, "private_key": None, "ca": None},
                                   "bsf.tls"), [])

    def test_key_of_another_certificate(self):
        other = self.pki.issue("other", ["x.home1.net"])
        errors = tls.check(dict(self.server, private_key=other.key), "bsf.tls")
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith("bsf.tls.private_key: does not match"), errors)

    def test_not_pem(self):
        errors = tls.check(dict(self.server, certificate=self.server["private_key"],
                                ca=self.server["private_key"]), "bmsc.tls")
        self.assertIn("bmsc.tls.certificate: no PEM certificate in %s"
                      % (self.server["private_key"],), errors)
        self.assertTrue(any(e.startswith("bmsc.tls.ca: ") for e in errors), errors)
        self.assertFalse(any("BEGIN" in e for e in errors))

    def test_pair_required(self):
        errors = tls.check({"certificate": self.server["certificate"], "private_key": None,
                            "ca": None}, "pcscf.tls")
        self.assertEqual(errors, ["pcscf.tls.private_key: required with pcscf.tls.certificate"])
        errors = tls.check({"certificate": None, "private_key": None, "ca": None}, "pcscf.tls",
                           needCertificate=True)
        self.assertEqual(errors, ["pcscf.tls.certificate: required (the role listens with TLS)"])
        # a CA for client certificates without TLS would silently trust no one
        ca = {"certificate": None, "private_key": None, "ca": self.pki.ca}
        self.assertEqual(tls.check(ca, "bsf.tls"), [
            "bsf.tls.certificate: required with bsf.tls.ca (client certificates are asked "
            "for over TLS only)"])
        self.assertEqual(tls.check(ca, "node.http_client", server=False), [])


class ConfigTests(_Pki, SynchronousTestCase):
    def load(self, text):
        overlay = Path(tempfile.mkstemp(".toml", dir=self.folder)[1])
        overlay.write_text(textwrap.dedent(text))
        return load_config([str(ROOT / "etc" / "mbmsd.toml"), str(overlay)]), str(overlay)

    def errors(self, text):
        overlay = Path(tempfile.mkstemp(".toml", dir=self.folder)[1])
        overlay.write_text(textwrap.dedent(text))
        with self.assertRaises(c.ConfigError) as e:
            load_config([str(ROOT / "etc" / "mbmsd.toml"), str(overlay)])
        for line in e.exception.lines:
            self.assertNotIn("\n", line)
            self.assertRegex(line, r"\.toml: [a-z_]+[a-z_.\[\]0-9]*: ")
        return [line.split(": ", 1)[1] for line in e.exception.lines]

    def test_every_role_and_the_client(self):
        s = self.server
        config, _ = self.load("""
            [node.http_client]
            certificate = "{certificate}"
            private_key = "{private_key}"
            ca = "{ca}"
            [bsf.tls]
            certificate = "{certificate}"
            private_key = "{private_key}"
            ca = "{ca}"
            [pcscf]
            tls_listen = "tcp:5061:interface=127.0.0.1"
            [pcscf.tls]
            certificate = "{certificate}"
            private_key = "{private_key}"
            [bmsc]
            trusted_scf_names = ["scf.home1.net"]
            [bmsc.tls]
            certificate = "{certificate}"
            private_key = "{private_key}"
            ca = "{ca}"
            """.format(**s))
        self.assertEqual(config["bmsc"]["tls"]["ca"], s["ca"])
        self.assertEqual(config["bmsc"]["trusted_scf_names"], ["scf.home1.net"])
        self.assertEqual(config["pcscf"]["tls_listen"], "tcp:5061:interface=127.0.0.1")
        self.assertEqual(config["node"]["http_client"]["certificate"], s["certificate"])
        # without TLS keys: no TLS, as before
        plain, _ = self.load("")
        self.assertFalse(tls.enabled(plain["bsf"]["tls"]))
        self.assertEqual(plain["pcscf"]["tls_listen"], "")

    def test_unreadable_file_names_the_key(self):
        missing = str(self.folder / "nope.pem")
        errors = self.errors("""
            [bsf.tls]
            certificate = "%s"
            private_key = "%s"
            [node.http_client]
            ca = "%s"
            """ % (missing, self.server["private_key"], missing))
        self.assertIn("bsf.tls.certificate: cannot read the file (No such file or directory), "
                      "got %s" % (c._show(missing),), errors)
        self.assertTrue(any(e.startswith("node.http_client.ca: cannot read") for e in errors))

    def test_unknown_tls_key(self):
        errors = self.errors("""
            [bmsc.tls]
            cert = "x"
            """)
        self.assertTrue(errors[0].startswith("bmsc.tls.cert: unknown key"), errors)

    def test_mismatched_key_named(self):
        other = self.pki.issue("other", ["x.home1.net"])
        errors = self.errors("""
            [bmsc.tls]
            certificate = "%s"
            private_key = "%s"
            """ % (self.server["certificate"], other.key))
        self.assertEqual(len(errors), 1, errors)
        self.assertTrue(errors[0].startswith("bmsc.tls.private_key: does not match"), errors)

    def test_trust_by_certificate_needs_a_ca(self):
        errors = self.errors("""
            [bmsc]
            trusted_scf_names = ["scf.home1.net"]
            """)
        self.assertEqual(errors, ["bmsc.trusted_scf_names: needs bmsc.tls.ca (the CA of the "
                                  "SCFs' client certificates)"])
        errors = self.errors("""
            [[bsf.naf]]
            fqdn = "bmsc.home1.net"
            addresses = []
            """)
        self.assertEqual(len(errors), 1, errors)
        self.assertTrue(errors[0].startswith("bsf.naf[0].addresses: required unless bsf.tls.ca"))

    def test_sip_tls_needs_a_certificate(self):
        errors = self.errors("""
            [pcscf]
            tls_listen = "tcp:5061"
            """)
        self.assertEqual(errors, ["pcscf.tls.certificate: required (the role listens with TLS)"])


class TrustTests(SynchronousTestCase):
    """Who may ask, by address or by the names of a verified certificate."""

    def setUp(self):
        self.h = Harness()

    def test_zn_naf_by_certificate(self):
        from mbmsd.roles.bsf.zn import ZnLookup

        zn = ZnLookup(self.h.storage.bootstrap, self.h.clock, {"bmsc.home1.net": set()})
        key = self.successResultOf(zn.getNafKey(
            BTID, NAF_ID, tls.Peer("10.0.0.7", frozenset({"bmsc.home1.net"}))))
        self.assertEqual(key.ksNaf, KS_NAF)
        for names in (frozenset(), frozenset({"scf.home1.net"})):
            self.failureResultOf(zn.getNafKey(BTID, NAF_ID, tls.Peer("10.0.0.7", names)),
                                 NafNotAuthorized)
        # an address in the list still is enough, bare or as a Peer
        zn.nafs["bmsc.home1.net"].add("10.0.0.7")
        self.successResultOf(zn.getNafKey(BTID, NAF_ID, "10.0.0.7"))
        self.successResultOf(zn.getNafKey(BTID, NAF_ID, tls.Peer("10.0.0.7", frozenset())))

    def authorize(self, names, source="10.0.0.8"):
        body = mbms_xml.build_authorize(mbms_xml.AuthorizeRequest([SERVICE], "127.0.0.5", None))
        return self.successResultOf(self.h.km.scfRequest(
            "authorize", source, '"%s"' % IMPU, profile.CT_AUTHORIZE, body, peerNames=names))

    def test_bmsc_scf_by_certificate(self):
        self.h.km.trustedScfNames = {"scf.home1.net"}
        self.assertEqual(self.authorize(frozenset()).code, 403)
        self.assertEqual(self.authorize(frozenset({"bmsc.home1.net"})).code, 403)
        self.assertIsNone(self.successResultOf(
            self.h.storage.bmsc.getAuthorization(IMPU, SERVICE)))
        answer = self.authorize(frozenset({"scf.home1.net"}))
        self.assertEqual(answer.code, 200)
        stored = self.successResultOf(self.h.storage.bmsc.getAuthorization(IMPU, SERVICE))
        self.assertEqual(stored.ueAddress, "127.0.0.5")


class UeOptionsTests(_Pki, SynchronousTestCase):
    def test_tls_makes_the_urls_https(self):
        from twisted.internet.testing import MemoryReactorClock

        from mbmsd.ue.cli import _requester, build_parser

        args = build_parser().parse_args(["run", "--tls", "--ca", self.pki.ca,
                                          "--bmsc", "http://127.0.0.1:1234"])
        requester = _requester(MemoryReactorClock(), args)
        self.assertEqual(args.bsf, "https://127.0.0.1:8080/")
        self.assertEqual(args.bmsc, "https://127.0.0.1:1234")
        self.assertIsInstance(requester.agent._endpointFactory._policyForHTTPS,
                              tls.ClientPolicy)
        plain = build_parser().parse_args(["bootstrap"])
        _requester(MemoryReactorClock(), plain)
        self.assertEqual(plain.bsf, "http://127.0.0.1:8080/")

    def test_ca_must_be_pem(self):
        from mbmsd.ue.cli import build_parser

        with self.assertRaises(SystemExit):
            build_parser().parse_args(["run", "--ca", self.server["private_key"]])


class _Stream:
    def __init__(self, name):
        self.name = name
        self.open = True
        self.peer = ("127.0.0.5", 40000)


class SipConnectionsTests(SynchronousTestCase):
    def setUp(self):
        from prometheus_client import CollectorRegistry

        from mbmsd.metrics import Metrics

        metrics = Metrics("n", CollectorRegistry()).forRole("pcscf")
        self.connections = Connections(None, None, 65535, metrics, "pcscf")

    def test_tls_only_over_the_peers_connection(self):
        # RFC 3261 18 / RFC 5626: towards a TLS peer we reuse its connection
        self.failureResultOf(self.connections.transportFor("TLS", "127.0.0.5", 40000),
                             ConnectionError)
        stream = _Stream("TLS")
        self.connections._add(stream)
        self.assertIs(self.successResultOf(
            self.connections.transportFor("TLS", "127.0.0.5", 40000)), stream)

    def test_stream_factory_names_the_transport(self):
        protocol = self.connections.streamFactory("TLS").buildProtocol(None)
        self.assertEqual(protocol.name, "TLS")
        self.assertEqual(self.connections.streamFactory().buildProtocol(None).name, "TCP")
