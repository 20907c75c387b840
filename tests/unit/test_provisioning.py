"""
The config's provisioning tables as a seed in storage (mbmsd/provisioning.py),
and the one reading of a subscriber's hex fields that the admin API and the
CSV import share.
"""

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.protocols.milenage import compute_opc
from mbmsd.provisioning import FieldError, seedFromConfig, subscriber_from_fields
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import MbmsService, Subscriber

# TS 35.208 test set 1
K = "465b5ce8b199b49faa5f0a2ee238a6bc"
OP = "cdc202d5123e20f62b6d676ac72cb318"
OPC = "cd63cb71954a9f4e48a5994e37a02baf"


def config(**sections):
    out = {"subscriber": [], "node": {"roles": []}}
    out.update(sections)
    return out


class SeedTests(SynchronousTestCase):
    def setUp(self):
        self.storage = MemoryStorage()

    def seed(self, cfg):
        return self.successResultOf(seedFromConfig(cfg, self.storage))

    def test_servicesMergeTheRolesTablesAndKeepWhatIsNotNamed(self):
        p = self.storage.provisioning
        self.successResultOf(p.putService(MbmsService("urn:api", 9, {"port": 6000})))
        self.successResultOf(p.putService(MbmsService("urn:both", 5, {"port": 7000})))
        cfg = config(
            bmsc={"service": [{"id": "urn:both", "key_group": 3},
                              {"id": "urn:bmsc-only", "key_group": None}]},
            scf={"service": [{"id": "urn:both", "port": 5002, "name": None}],
                 "subscription": []})
        self.assertEqual(self.seed(cfg), (0, 2, 0))
        got = {s.serviceId: s for s in self.successResultOf(p.services())}
        self.assertEqual(got["urn:api"], MbmsService("urn:api", 9, {"port": 6000}))
        self.assertEqual(got["urn:both"], MbmsService("urn:both", 3, {"port": 5002}))
        self.assertEqual(got["urn:bmsc-only"], MbmsService("urn:bmsc-only", None, None))

    def test_scfOnlyNodeKeepsTheStoredKeyGroup(self):
        p = self.storage.provisioning
        self.successResultOf(p.putService(MbmsService("urn:s", 42, None)))
        self.seed(config(scf={"service": [{"id": "urn:s", "port": 5004}], "subscription": []}))
        self.assertEqual(self.successResultOf(p.getService("urn:s")),
                         MbmsService("urn:s", 42, {"port": 5004}))

    def test_subscriptionsOfNamedImpusReplacedOthersKept(self):
        p = self.storage.provisioning
        self.successResultOf(p.setSubscriptions("sip:a@h", ["urn:old"]))
        self.successResultOf(p.setSubscriptions("sip:api@h", ["urn:x"]))
        self.seed(config(scf={"service": [], "subscription": [
            {"impu": "sip:a@h", "services": ["urn:1"]},
            {"impu": "sip:a@h", "services": ["urn:2"]}]}))
        self.assertEqual(self.successResultOf(p.subscriptions("sip:a@h")), ["urn:1", "urn:2"])
        self.assertEqual(self.successResultOf(p.subscriptions("sip:api@h")), ["urn:x"])

    def test_subscribersProvisionedKeepingSqnAhead(self):
        sub = {"impi": "u@h", "impus": ["sip:u@h"], "k": bytes.fromhex(K), "op": None,
               "opc": bytes.fromhex(OPC), "amf": b"\x80\x00", "sqn": bytes(6)}
        self.successResultOf(self.storage.subscribers.provision(Subscriber(
            "u@h", ("sip:u@h",), bytes(16), bytes(16), b"\x80\x00", 99)))
        self.assertEqual(self.seed(config(subscriber=[sub])), (1, 0, 0))
        got = self.successResultOf(self.storage.subscribers.get("u@h"))
        self.assertEqual((got.k, got.sqn), (bytes.fromhex(K), 99))

    def test_seedingAgainChangesNothing(self):
        cfg = config(bmsc={"service": [{"id": "urn:s", "key_group": 1}]},
                     scf={"service": [{"id": "urn:s"}],
                          "subscription": [{"impu": "sip:a@h", "services": ["urn:s"]}]})
        self.seed(cfg)
        before = self.successResultOf(self.storage.provisioning.services())
        self.seed(cfg)
        self.assertEqual(self.successResultOf(self.storage.provisioning.services()), before)

    def test_stopsWhenTheNodeStops(self):
        cfg = config(bmsc={"service": [{"id": "urn:s", "key_group": 1}]})
        self.assertEqual(self.successResultOf(
            seedFromConfig(cfg, self.storage, lambda: False)), (0, 0, 0))
        self.assertEqual(self.successResultOf(self.storage.provisioning.services()), [])


class FieldTests(SynchronousTestCase):
    def test_opcDerivedFromOp(self):
        # TS 35.208 test set 1: OPc from K and OP
        s = subscriber_from_fields({"impi": "u@h", "impus": ["sip:u@h"], "k": K, "op": OP})
        self.assertEqual(s.opc, bytes.fromhex(OPC))
        self.assertEqual(compute_opc(bytes.fromhex(K), bytes.fromhex(OP)), s.opc)
        self.assertEqual((s.amf, s.sqn), (b"\x80\x00", 0))

    def test_fieldsNamed(self):
        good = {"impi": "u@h", "impus": ["sip:u@h"], "k": K, "opc": OPC, "amf": "8000",
                "sqn": "000000000020"}
        self.assertEqual(subscriber_from_fields(good).sqn, 0x20)
        for change, field in (({"impi": "nobody"}, "impi"), ({"impus": []}, "impus"),
                              ({"impus": ["mailto:x"]}, "impus"), ({"k": "00"}, "k"),
                              ({"k": "zz" * 16}, "k"), ({"opc": None}, "opc"),
                              ({"op": OP}, "opc"), ({"amf": "800"}, "amf"),
                              ({"sqn": "00" * 7}, "sqn")):
            with self.assertRaises(FieldError) as e:
                subscriber_from_fields(dict(good, **change))
            self.assertEqual(e.exception.field, field, change)
            self.assertNotIn(K, str(e.exception))

    def test_updateKeepsWhatIsLeftOut(self):
        old = subscriber_from_fields({"impi": "u@h", "impus": ["sip:u@h"], "k": K, "opc": OPC})
        new = subscriber_from_fields({"impus": ["sip:v@h"]}, old)
        self.assertEqual((new.impi, new.impus, new.k, new.opc), ("u@h", ("sip:v@h",), old.k,
                                                                 old.opc))
        with self.assertRaises(FieldError) as e:
            subscriber_from_fields({"k": K}, old)
        self.assertEqual(e.exception.field, "opc")
