"""
The SCF -> BM-SC.UPF authorize in-process (C{scf.bmsc_url = "local"},
issue 16): the same SCF scenarios run over HTTP (the real key management
Site, reached through the SCF's real HTTP client) and over the bmsc role's
L{IServiceAuthorization}; the SIP answers, the BM-SC's storage, its MIKEY
pushes, the metrics of both roles and the BM-SC's log lines must match.

Independent truth: the HTTP path is the reference (its wire format has its
own tests in tests/unit/roles/scf/test_core.py and tests/test_bmsc*.py); beside the
comparison each scenario states the outcome TS 26.237 10.2.3 / Annex I.2
asks for (200 and an authorization stored; 404 at the BM-SC -> SIP 500).
"""

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from mbmsd.httpclient import HttpClient
from mbmsd.interfaces import IServiceAuthorization, IServiceAuthorizationClient
from mbmsd.metrics import Metrics
from mbmsd.protocols import mbms_xml
from mbmsd.roles.bmsc.keymanagement import KmAnswer, LocalServiceAuthorization
from mbmsd.roles.bsf.zn import ZnLookup
from mbmsd.roles.scf.bmsc import (
    BmscRefused,
    BmscUnavailable,
    HttpServiceAuthorizationClient,
    LocalServiceAuthorizationClient,
)
from mbmsd.roles.scf.config import DEFAULT_BMSC_URL, effective_bmsc_url
from mbmsd.roles.scf.core import ScfCore
from mbmsd.roles.scf.plugin import ScfRoleFactory
from mbmsd.sip.testing import FakeSipTransport
from mbmsd.sip.transaction import TimerSettings
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import BootstrapSession, Subscriber
from tests.support.fakes import scf_services
from tests.unit.roles.bmsc.test_keymanagement import BTID, IMPI, KS, RAND, SCF_IP
from tests.unit.roles.bmsc.test_keymanagement_sip_security import MUK, SipHarness
from tests.unit.roles.scf.test_core import (
    IMPU,
    PCSCF,
    SERVICE,
    FakeConnections,
    SiteAgent,
    in_dialog,
    invite,
    service,
)
from tests.unit.roles.scf.test_core_sip_security import SCF_FQDN, sip_invite

SPORTS = "urn:mbmsd:sports"  # the SCF's, unknown to the BM-SC
UE = "127.0.0.5"
CONTACT = "<sip:user1@%s:5062>" % (UE,)


class Run:
    """One SCF core and one BM-SC, joined over C{transport} ('http' or 'local')."""

    def __init__(self, transport):
        self.bmsc = SipHarness()
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        storage = MemoryStorage()
        storage.subscribers.provision(Subscriber(
            impi=IMPI, impus=(IMPU,), k=bytes(16), opc=bytes(16), amf=b"\x80\x00", sqn=0))
        now = self.clock.seconds()
        storage.bootstrap.putSession(BootstrapSession(
            btid=BTID, impi=IMPI, rand=RAND, ks=KS, created=now, expires=now + 3600))
        if transport == "http":
            self.agent = SiteAgent(self.bmsc.site, peer=SCF_IP)
            client = HttpServiceAuthorizationClient(HttpClient(self.clock, agent=self.agent),
                                                    "http://127.0.0.1:1234", 5, 1)
        else:
            self.provider = LocalServiceAuthorization(
                self.bmsc.km, self.bmsc.site.resource.accounting, self.bmsc.clock)
            client = LocalServiceAuthorizationClient(self.provider, self.clock, 5)
        self.registry = CollectorRegistry()
        provisioned = scf_services({SERVICE: service(), SPORTS: service(id=SPORTS)},
                                   {IMPU: [SERVICE, SPORTS]})
        self.transport = FakeSipTransport(self.clock)
        self.core = ScfCore(
            self.clock, client, provisioned, provisioned, "mbms.home1.net", [PCSCF[0]],
            FakeConnections(self.clock), SCF_IP, {"UDP": 5070},
            Metrics("n1", self.registry).forRole("scf"), sessionExpires=1800, minSe=90,
            authorizationMargin=60, timers=TimerSettings(trying_delay=0),
            zn=ZnLookup(storage.bootstrap, self.clock, {}), nafFqdn=SCF_FQDN,
            subscribers=storage.subscribers)

    def close(self):
        self.bmsc.close()

    def receive(self, message):
        self.core.layer.receive(message, self.transport, PCSCF)
        self.bmsc.clock.advance(0)  # the BM-SC's pushes after its answer

    def finals(self):
        return [m for m in self.transport.messages() if getattr(m, "status", 0) >= 200]

    def state(self):
        """Everything the comparison covers, in a form that compares equal."""
        store = self.bmsc.storage.bmsc
        stored = {}
        for sid in (SERVICE, SPORTS):
            stored[sid] = (_result(store.getAuthorization(IMPU, sid)),
                           _result(store.getRegistration(IMPU, sid)))
        lines = [(e["requesttype"], e["code"], e["reason"], e["user"])
                 for e in self.bmsc.logged
                 if e.get("log_format", "").startswith("{requesttype} from {source}: ")]
        return {
            "sip": [m.status for m in self.finals()],
            "stored": stored,
            "mikey": [addr for _, addr in self.bmsc.mikeySent()],
            "bmsc_metrics": _samples(self.bmsc.registry, "mbmsd_bmsc_request"),
            "scf_metrics": _samples(self.registry, "mbmsd_scf_"),
            "bmsc_log": lines,
        }


def _result(d):
    out = []
    d.addBoth(out.append)
    assert out, "storage did not answer at once"
    return out[0]


def _samples(registry, prefix):
    # every sample but the creation timestamps (wall time)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples
            if s.name.startswith(prefix) and not s.name.endswith("_created")}


def scenario_http_based(run):
    run.receive(invite(contact=CONTACT))
    [ok] = run.finals()
    run.afterInvite = run.state()
    run.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))


def scenario_sip_based(run):
    run.receive(sip_invite(contact=CONTACT))
    [ok] = run.finals()
    run.afterInvite = run.state()
    run.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))


def scenario_unknown_at_the_bmsc(run):
    run.receive(invite(ruri="sip:urn%3Ambmsd%3Asports@mbms.home1.net", contact=CONTACT))
    run.afterInvite = run.state()


SCENARIOS = {"http_based": scenario_http_based, "sip_based": scenario_sip_based,
             "unknown_at_the_bmsc": scenario_unknown_at_the_bmsc}


def outcome(name, transport):
    run = Run(transport)
    try:
        SCENARIOS[name](run)
        return run.afterInvite, run.state()
    finally:
        run.close()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_local_gives_what_http_gives(name):
    http, local = outcome(name, "http"), outcome(name, "local")
    for (h, l) in zip(http, local):
        for key in h:
            assert l[key] == h[key], (name, key)
    # and what the specs ask for, whichever the transport
    during, after = local
    if name == "unknown_at_the_bmsc":
        assert during["sip"] == [500]  # 404 for the service at the BM-SC
        assert during["stored"][SPORTS] == (None, None)
        assert during["bmsc_log"][0][:2] == ("authorize", 200)
        return
    authorization, registration = during["stored"][SERVICE]
    assert during["sip"] == [200] and authorization.ueAddress == UE
    assert authorization.expires == 1_800_000_000 + 1800 + 60
    assert during["bmsc_metrics"][("mbmsd_bmsc_requests_total", (
        ("node", "n"), ("requesttype", "authorize"), ("role", "bmsc"), ("status", "200")))] == 1
    if name == "sip_based":
        assert registration.muk == MUK and during["mikey"] == [(UE, 4359)]
    else:
        assert registration is None and during["mikey"] == []
    assert after["stored"][SERVICE] == (None, None)
    assert [line[:2] for line in after["bmsc_log"]] == [("authorize", 200), ("deauthorize", 200)]


def test_untrusted_over_http_trusted_in_process():
    """Over HTTP the SCF's address must be trusted; in-process the trust is implicit."""
    for transport, expected in (("http", [500]), ("local", [200])):
        run = Run(transport)
        try:
            run.bmsc.km.trustedScfs = set()
            run.receive(invite(contact=CONTACT))
            assert [m.status for m in run.finals()] == expected, transport
        finally:
            run.close()


def test_the_local_path_checks_what_the_wire_checks():
    run = Run("local")
    try:
        verifyObject(IServiceAuthorization, run.provider)
        answers = []
        run.provider.authorize("not an impu", [SERVICE], UE, None).addCallback(answers.append)
        run.provider.authorize(IMPU, [SERVICE], "no address", None).addCallback(answers.append)
        run.provider.authorize(IMPU, [SERVICE, SERVICE], UE, None).addCallback(answers.append)
        info = mbms_xml.NafKeyInfo(UE, b"short", 2_000_000_000, BTID, SCF_FQDN)
        run.provider.authorize(IMPU, [SERVICE], UE, None, info).addCallback(answers.append)
        assert [(a.code, a.statuses) for a in answers] == [(400, None)] * 4
        assert _result(run.bmsc.storage.bmsc.getAuthorization(IMPU, SERVICE)) is None
        # the MUK's lifetime in the whole seconds the wire carries
        info = mbms_xml.NafKeyInfo(UE, MUK, 1_800_003_600.75, BTID, SCF_FQDN)
        [ok] = [_result(run.provider.authorize(IMPU, [SERVICE], UE, None, info))]
        assert (ok.code, ok.statuses) == (200, [(SERVICE, 200)])
        stored = _result(run.bmsc.storage.bmsc.getRegistration(IMPU, SERVICE))
        assert stored.mukExpires == 1_800_003_600.0
    finally:
        run.close()


class _Slow:
    """An IServiceAuthorization whose answer the test gives."""

    def __init__(self):
        self.pending = []

    def authorize(self, impu, serviceIds, ueAddress, lifetime, keyInfo=None):
        self.pending.append(Deferred())
        return self.pending[-1]

    def deauthorize(self, impu, serviceIds, ueAddress):
        return self.authorize(impu, serviceIds, ueAddress, None)


def test_client_outcomes_as_over_http():
    clock = Clock()
    bmsc = _Slow()
    client = LocalServiceAuthorizationClient(bmsc, clock, 5)
    verifyObject(IServiceAuthorizationClient, client)
    got = []
    client.authorize(IMPU, [SERVICE], UE, 60).addBoth(got.append)
    bmsc.pending[0].callback(KmAnswer(200, "ok", statuses=[(SERVICE, 200)]))
    assert got == [[(SERVICE, 200)]] and not clock.getDelayedCalls()
    client.authorize(IMPU, [SERVICE], UE, 60).addBoth(got.append)
    bmsc.pending[1].callback(KmAnswer(400, "malformed"))
    assert got[1].check(BmscRefused) and got[1].value.code == 400
    # no answer within scf.bmsc_timeout: 504 at the SCF; the late one is dropped
    client.deauthorize(IMPU, [SERVICE], UE).addBoth(got.append)
    clock.advance(4.9)
    assert len(got) == 2
    clock.advance(0.1)
    assert got[2].check(BmscUnavailable)
    bmsc.pending[2].callback(KmAnswer(200, "late", statuses=[(SERVICE, 200)]))
    assert len(got) == 3 and not clock.getDelayedCalls()


# ---------------------------------------------------------------- config


def test_default_is_local_with_the_bmsc_role_else_the_url():
    section = {"bmsc_url": DEFAULT_BMSC_URL}
    assert effective_bmsc_url(section, ["bmsc", "scf"]) == "local"
    assert effective_bmsc_url(section, ["pcscf", "scf"]) == "http://127.0.0.1:1234"
    # a URL written out is used as written, even beside the bmsc role
    assert effective_bmsc_url({"bmsc_url": "http://127.0.0.1:1234"}, ["bmsc", "scf"]) == \
        "http://127.0.0.1:1234"


def test_local_without_the_bmsc_role_is_a_config_error_naming_the_key():
    factory = ScfRoleFactory()
    config = {"node": {"roles": ["pcscf", "scf"]},
              "scf": {"bmsc_url": "local", "service": [{"id": SERVICE}], "udp_listen": "x"}}
    errors = factory.checkNode(config)
    assert [e for e in errors if e.startswith("scf.bmsc_url: 'local' needs the bmsc role")], errors
    config["node"]["roles"].append("bmsc")
    assert not [e for e in factory.checkNode(config) if e.startswith("scf.bmsc_url")]


def test_load_config_refuses_local_on_an_edge_node(tmp_path):

    from mbmsd import config as c
    from mbmsd.nodeconfig import load_config

    root = Path(__file__).resolve().parents[4]
    edge = tmp_path / "edge.toml"
    edge.write_text((root / "etc" / "nodes" / "edge.toml").read_text().replace(
        'bmsc_url = ["http://10.0.0.11:1234", "http://10.0.0.12:1234"]', 'bmsc_url = "local"'))
    with pytest.raises(c.ConfigError) as e:
        load_config([str(root / "etc" / "mbmsd.toml"), str(edge)])
    assert "scf.bmsc_url: 'local' needs the bmsc role" in "\n".join(e.value.lines)


def test_shipped_configs():
    """etc/mbmsd.toml (all-in-one) runs local; the split edge node keeps its URLs."""

    from mbmsd.node import makeNode
    from mbmsd.nodeconfig import load_config
    from tests.support.fakes import UDPMemoryReactorClock

    root = Path(__file__).resolve().parents[4]
    config = load_config([str(root / "etc" / "mbmsd.toml")])
    assert config["scf"]["bmsc_url"] == "local"
    config["storage"] = {"backend": "memory"}
    service = makeNode(config, UDPMemoryReactorClock())
    [scf] = [s for s in service.roles if s.name == "scf"]
    assert isinstance(scf.client, LocalServiceAuthorizationClient)
    assert scf.client.bmsc is service.node.lookup(IServiceAuthorization)
    edge = load_config([str(root / "etc" / "mbmsd.toml"), str(root / "etc" / "nodes" / "edge.toml")])
    assert edge["scf"]["bmsc_url"] == ["http://10.0.0.11:1234", "http://10.0.0.12:1234"]
