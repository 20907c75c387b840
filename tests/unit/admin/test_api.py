"""
The admin API's HTTP edge in-process (twisted.web's own parser, the memory
store, a fake clock): the answers a script relies on besides the daemon
tests' (tests/daemon/test_admin_daemon.py): 405 with Allow, an oversized body, an
IMPI that differs from the URL's, percent-encoded identities, and a store
failure answered 503 without a traceback.
"""

import json

from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.admin.api import MAX_BODY, AdminOperations, AdminResource
from mbmsd.storage.memory import MemoryStorage
from tests.support.webfake import exchange, make_site, request_bytes

TOKEN = "unit-test-token-0123456789"
K = "465b5ce8b199b49faa5f0a2ee238a6bc"
OPC = "cd63cb71954a9f4e48a5994e37a02baf"


class AdminResourceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.storage = MemoryStorage()
        self.site = make_site(AdminResource(AdminOperations(self.storage, self.clock), TOKEN),
                              self.clock)

    def call(self, method, target, body=None, token=TOKEN):
        headers = [("Authorization", "Bearer " + token)] if token else []
        raw = body if isinstance(body, bytes) else \
            (json.dumps(body).encode() if body is not None else b"")
        if raw:
            headers.append(("Content-Type", "application/json"))
        status, headers, data = exchange(self.site, request_bytes(method, target, headers, raw))
        return status, headers, json.loads(data) if data else None

    def create(self, impi="u@home1.net"):
        return self.call("POST", "/admin/v1/subscribers",
                         {"impi": impi, "impus": ["sip:" + impi], "k": K, "opc": OPC})

    def test_methodNotAllowedNamesTheAllowedOnes(self):
        status, headers, _ = self.call("PATCH", "/admin/v1/subscribers/u@home1.net")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], ["DELETE, GET, PUT"])

    def test_bodyTooLarge(self):
        status, _, got = self.call("POST", "/admin/v1/subscribers", b"{" + b" " * MAX_BODY + b"}")
        self.assertEqual((status, got["field"]), (400, "body"))

    def test_impiOfBodyMustBeTheUrls(self):
        self.create()
        status, _, got = self.call("PUT", "/admin/v1/subscribers/u@home1.net",
                                   {"impi": "other@home1.net"})
        self.assertEqual((status, got["field"]), (400, "impi"))

    def test_percentEncodedIdentities(self):
        self.assertEqual(self.create("a+b@home1.net")[0], 201)
        status, _, got = self.call("GET", "/admin/v1/subscribers/a%2Bb%40home1.net")
        self.assertEqual((status, got["impi"]), (200, "a+b@home1.net"))
        self.call("POST", "/admin/v1/services", {"id": "urn:mbmsd:news"})
        status, _, got = self.call("PUT", "/admin/v1/subscriptions/sip%3Aa%2Bb%40Home1.net",
                                   {"services": ["urn:mbmsd:news"]})
        # stored under the SCF's normalized IMPU (host in lower case)
        self.assertEqual((status, got["impu"]), (200, "sip:a+b@home1.net"))
        self.assertTrue(self.successResultOf(self.storage.provisioning.isSubscribed(
            "sip:a+b@home1.net", "urn:mbmsd:news")))

    def test_sdpCheckedAsTheConfigChecksIt(self):
        status, _, got = self.call("POST", "/admin/v1/services",
                                   {"id": "urn:x", "sdp": {"port": 0}})
        self.assertEqual((status, got["field"]), (400, "sdp.port"))
        status, _, got = self.call("POST", "/admin/v1/services",
                                   {"id": "urn:x", "sdp": {"media": "audio"}})
        # stored with the [[scf.service]] defaults filled in
        self.assertEqual((status, got["sdp"]["media"], got["sdp"]["port"]), (201, "audio", 5000))

    def test_pageNextOnlyWhenFull(self):
        for i in range(3):
            self.create("u%d@home1.net" % (i,))
        _, _, got = self.call("GET", "/admin/v1/subscribers?limit=3")
        self.assertEqual(got["next"], "u2@home1.net")
        _, _, got = self.call("GET", "/admin/v1/subscribers?limit=3&after=u2%40home1.net")
        self.assertEqual(got, {"subscribers": [], "next": None})

    def test_storeFailureIs503AndLogged(self):
        self.storage.subscribers.get = lambda impi: fail(RuntimeError("database down"))
        status, _, got = self.call("GET", "/admin/v1/subscribers/u@home1.net")
        self.assertEqual(status, 503)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_noTokenNoStoreAccess(self):
        self.storage.subscribers.get = lambda impi: self.fail("read without a token")
        status, headers, _ = self.call("GET", "/admin/v1/subscribers/u@home1.net", token=None)
        self.assertEqual(status, 401)
        self.assertEqual(headers["www-authenticate"], ['Bearer realm="mbmsd-admin"'])
