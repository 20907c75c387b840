"""
The one rule for a public identity (mbmsd/protocols/identity.py): its
normal form from a table written here from RFC 3261 10.3 step 5 and 19.1.4
and RFC 3966 4, and every role applying it through its own entry point to
the same table of cases: the P-CSCF's registrar, the SCF's subscription
lookup, the BM-SC's ownership check and the provisioning (admin API, config)
normalisation.
"""

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import provisioning
from mbmsd.admin import api
from mbmsd.metrics import Metrics
from mbmsd.protocols import mbms_xml
from mbmsd.protocols.identity import is_impi, is_impu, normalize_impu, same_impu
from mbmsd.roles.aka import CHALLENGED
from mbmsd.roles.pcscf.registrar import FOREIGN_IMPU
from mbmsd.roles.scf import config as scfconfig
from mbmsd.roles.scf.core import ScfCore
from mbmsd.sip.grammar import parse_uri
from mbmsd.sip.message import parse_message
from mbmsd.sip.testing import FakeSipTransport
from mbmsd.sip.transaction import TimerSettings
from mbmsd.storage.records import Subscriber
from tests.support.fakes import scf_services
from tests.unit.roles.bmsc import test_keymanagement as test_bmsc
from tests.unit.roles.pcscf import test_proxy as test_pcscf
from tests.unit.roles.scf import test_core as test_scf

# (written, normal form): RFC 3261 19.1.4 and 10.3 step 5, RFC 3966 4
NORMAL = [
    ("sip:user1@home1.net", "sip:user1@home1.net"),
    ("SIP:user1@HOME1.Net", "sip:user1@home1.net"),           # scheme, host: any case
    ("sip:User1@home1.net", "sip:User1@home1.net"),           # user: case-sensitive
    ("sips:user1@home1.net", "sips:user1@home1.net"),         # sips stays sips
    ("sip:user1@home1.net:5060", "sip:user1@home1.net:5060"),  # the port counts
    ("sip:user1@home1.net;user=phone;transport=tcp", "sip:user1@home1.net"),
    ("sip:user1@home1.net?Subject=x", "sip:user1@home1.net"),
    ("sip:user1:secret@home1.net", "sip:user1@home1.net"),
    ("sip:user%31@home1.net", "sip:user1@home1.net"),          # %31 is "1", unreserved
    ("sip:a%3bb@home1.net", "sip:a%3Bb@home1.net"),            # ";" reserved: kept escaped
    ("sip:home1.net", "sip:home1.net"),
    ("sip:user1@[2001:DB8::1]:5070", "sip:user1@[2001:db8::1]:5070"),
    ("tel:+358501234567", "tel:+358501234567"),
    ("tel:+358-50-(123).4567;phone-context=x", "tel:+358501234567"),
    ("tel:12ab", "tel:12AB"),
]

# (provisioned, presented, the same identity?)
CASES = [
    ("sip:user1@home1.net", "sip:user1@home1.net", True),
    ("sip:user1@home1.net", "sip:user1@HOME1.NET", True),
    ("sip:user1@home1.net", "SIP:user1@home1.net", True),
    ("sip:user1@home1.net", "sip:user1@home1.net;user=phone", True),
    ("sip:user1@home1.net", "sip:user%31@home1.net", True),
    ("sip:user1@home1.net", "sip:User1@home1.net", False),
    ("sip:user1@home1.net", "sip:user1@home1.net:5060", False),
    ("sip:user1@home1.net:5070", "sip:user1@home1.net:5070", True),
    ("sip:user1@home1.net:5070", "sip:user1@home1.net:5071", False),
    ("sip:user1@home1.net", "sips:user1@home1.net", False),
    ("sip:user1@home1.net", "sip:user2@home1.net", False),
    ("tel:+358501234567", "tel:+358-50-123-4567", True),
    ("tel:+358501234567", "tel:+358501234568", False),
    ("tel:+358501234567", "sip:+358501234567@home1.net", False),
]


class NormalFormTests(SynchronousTestCase):

    def test_table(self):
        for written, normal in NORMAL:
            self.assertEqual((written, normalize_impu(written)), (written, normal))
            self.assertEqual(normalize_impu(parse_uri(written)), normal)
            # the normal form is a fixed point
            self.assertEqual(normalize_impu(normal), normal)

    def test_same(self):
        for a, b, same in CASES:
            self.assertEqual((a, b, same_impu(a, b)), (a, b, same))
            self.assertEqual((b, a, same_impu(b, a)), (b, a, same))

    def test_notAnIdentity(self):
        for bad in ("", "user1@home1.net", "http://home1.net", "sip:", "tel:x y"):
            self.assertRaises(ValueError, normalize_impu, bad)
            self.assertFalse(same_impu(bad, bad))

    def test_patterns(self):
        self.assertTrue(is_impi("user1@home1.net"))
        for bad in ("user1", "user1@", "a b@home1.net", "sip:user1@home1.net@x y", None, 7):
            self.assertFalse(is_impi(bad), bad)
        for good in ("sip:user1@home1.net", "sips:x@y", "tel:+358-50"):
            self.assertTrue(is_impu(good), good)
        for bad in ("user1@home1.net", "sip:a b", "tel:abc x", "mailto:a@b", None):
            self.assertFalse(is_impu(bad), bad)


class RolesAgreeTests(SynchronousTestCase):
    """
    Each role, through its own entry point, on the same table: the
    provisioned identity is the subscriber's (or the subscription's), the
    presented one what the UE or the P-CSCF sent.
    """

    def test_pcscfRegistrar(self):
        # REGISTER with the IMPI and no nonce: a 401 when the To IMPU is
        # one of the subscriber's, else 403 (TS 24.229 5.4.1.2.1)
        for provisioned, presented, same in CASES:
            h = test_pcscf.Harness(impus=(provisioned,))
            auth = ('Digest username="%s", realm="%s", nonce="", uri="sip:home1.net", '
                    'response=""' % (test_pcscf.IMPI, test_pcscf.REALM))
            request = parse_message(test_pcscf.register_bytes(to=presented, authorization=auth))
            answer = self.successResultOf(h.registrar.register(request, "UDP", test_pcscf.UE))
            self.assertEqual((provisioned, presented, answer.outcome),
                             (provisioned, presented, CHALLENGED if same else FOREIGN_IMPU))
            if same:
                # the binding is kept under the subscriber's own IMPU
                self.assertEqual(answer.impu, provisioned)

    def test_scfSubscription(self):
        # the subscription as the config check writes it, then an INVITE
        # whose P-Asserted-Identity is the presented IMPU: 200, else 403
        check = scfconfig.SCF_SECTION
        for provisioned, presented, same in CASES:
            errors = []
            section = check.validate({"subscription": [{"impu": provisioned,
                                                        "services": [test_scf.SERVICE]}]},
                                     ("scf",), errors, lambda p: "test.toml")
            self.assertEqual(errors, [])
            core, transport = self._scf(section["subscription"][0]["impu"])
            core.layer.receive(test_scf.invite(pai="<%s>" % (presented,)), transport,
                               test_scf.PCSCF)
            finals = [m.status for m in transport.messages() if getattr(m, "status", 0) >= 200]
            self.assertEqual((provisioned, presented, finals),
                             (provisioned, presented, [200 if same else 403]))

    def _scf(self, impu):
        clock = Clock()
        clock.advance(1_800_000_000)
        client = test_scf.FakeAuthorizationClient()
        client.auto = 200
        provisioned = scf_services({test_scf.SERVICE: test_scf.service()},
                                   {impu: [test_scf.SERVICE]})
        metrics = Metrics("n1", CollectorRegistry()).forRole("scf")
        core = ScfCore(clock, client, provisioned, provisioned, "mbms.home1.net",
                       [test_scf.PCSCF[0]], test_scf.FakeConnections(clock), test_scf.SCF_IP,
                       {"UDP": 5070}, metrics, sessionExpires=1800, minSe=90,
                       authorizationMargin=60, timers=TimerSettings(trying_delay=0))
        return core, FakeSipTransport(clock)

    def test_bmscOwnership(self):
        # the SCF authorized the provisioned IMPU; the UE registers with
        # X-3GPP-Intended-Identity the presented one: 200 when it is one of
        # the subscriber's IMPUs, else 403 (TS 33.246 6.3.2.4)
        for provisioned, presented, same in CASES:
            h = test_bmsc.Harness()
            h.storage.subscribers.provision(Subscriber(
                impi=test_bmsc.IMPI, impus=(provisioned,), k=bytes(16), opc=bytes(16),
                amf=b"\x80\x00", sqn=0))
            status, _, _ = h.authorize(impu=provisioned)
            self.assertEqual(status, 200)
            status, _, body = h.register(impu=presented)
            self.assertEqual((presented, status), (presented, 200))
            self.assertEqual((provisioned, presented, mbms_xml.parse_register_response(body)),
                             (provisioned, presented,
                              [(test_bmsc.SERVICE, 200 if same else 403)]))

    def test_provisioning(self):
        # the admin API and the SCF config write the same key; the
        # subscriber's fields check takes both forms
        for provisioned, presented, same in CASES:
            a, b = api._impu(provisioned), api._impu(presented)
            self.assertEqual((provisioned, presented, a == b), (provisioned, presented, same))
            self.assertEqual(a, normalize_impu(provisioned))
            self.assertEqual(provisioning.check_impus([presented]), (presented,))
            # the subscriber's IMPUs: one identity listed twice is refused
            if same:
                self.assertRaises(provisioning.FieldError, provisioning.check_impus,
                                  [provisioned, presented])
            else:
                provisioning.check_impus([provisioned, presented])
        self.assertRaises(provisioning.FieldError, api._impu, "user1@home1.net")
