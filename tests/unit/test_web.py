"""
mbmsd/web.py: the access log is the operator's choice (node.http_access_log);
each procedure's outcome is logged by its role either way.
"""

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from mbmsd.nodeconfig import NODE_SECTION
from mbmsd.web import makeSite
from tests.support.webfake import exchange, request_bytes


class _Ok(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"ok"


class AccessLogTests(SynchronousTestCase):
    def logged(self, accessLog):
        events = []
        globalLogPublisher.addObserver(events.append)
        try:
            site = makeSite(_Ok(), Clock(), accessLog=accessLog)
            site.doStart()  # as a listening port does: opens the access log
            try:
                status, _, body = exchange(site, request_bytes("GET", "/probe-path"))
            finally:
                site.doStop()
        finally:
            globalLogPublisher.removeObserver(events.append)
        self.assertEqual((status, body), (200, b"ok"))
        from twisted.logger import formatEvent

        return [e for e in events if "probe-path" in formatEvent(e)]

    def test_off_by_default(self):
        self.assertEqual(self.logged(False), [])
        self.assertIs(NODE_SECTION.fields["http_access_log"].default, False)

    def test_on_when_asked(self):
        self.assertEqual(len(self.logged(True)), 1)
