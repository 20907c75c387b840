"""
The C{prometheus} exporter: C{GET /metrics} in the text exposition format on
its own listener, which also serves the node's health probes
(L{mbmsd.health}: C{GET /healthz}, C{GET /readyz}).

It renders on the reactor thread rather than through
C{prometheus_client.twisted.MetricsResource} (which imports the global
reactor and renders in the thread pool): a scrape of our registry takes well
under a millisecond, and the reactor stays the only thread touching metrics.
"""

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from zope.interface import implementer

from mbmsd import config as c
from mbmsd.health import HealthzResource, ReadyzResource
from mbmsd.interfaces import IHealthExporterFactory
from mbmsd.web import listener, makeSite


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry):
        Resource.__init__(self)
        self.registry = registry

    def render_GET(self, request):
        if request.postpath not in ([b""], []):
            request.setResponseCode(404)
            return b"not found\n"
        body = generate_latest(self.registry)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        return body


class _Root(Resource):
    def __init__(self, registry, health=None):
        Resource.__init__(self)
        self.putChild(b"metrics", MetricsResource(registry))
        if health is not None:
            # the node's probes (mbmsd.health) share the metrics listener
            self.putChild(b"healthz", HealthzResource(health))
            self.putChild(b"readyz", ReadyzResource(health))

    def getChild(self, path, request):
        # "/" is this index page (without this, Resource answers 404 for it)
        return self if path == b"" else notFound()

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        return b"mbmsd metrics: GET /metrics, GET /healthz, GET /readyz\n"


@implementer(IHealthExporterFactory)
class PrometheusExporterFactory:
    name = "prometheus"
    configSchema = c.Section(
        fields={
            "listen": c.Field(c.endpoint(), "tcp:9102:interface=127.0.0.1",
                              "Twisted endpoint for GET /metrics, /healthz and /readyz"),
        }
    )

    def makeService(self, config, registry, reactor, health=None):
        from mbmsd.workerid import worker_number
        from mbmsd.workers import worker_description

        # each worker exports its own metrics, on the node's port + its number
        return listener(reactor, worker_description(config["listen"], worker_number()),
                        makeSite(_Root(registry, health), reactor),
                        "prometheus", key="metrics.prometheus.listen")
