"""The ``metrics`` listener's HTTP side (``/metrics``, ``/healthz``), apart from :mod:`mailserver.metrics` so that
twisted.web is loaded only by a server that serves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import pages, resource, server

from mailserver.connections import ConnectionLimiter

if TYPE_CHECKING:
    from mailserver.metrics import Monitor

log = Logger()


class _Endpoint(resource.Resource):
    isLeaf = True

    def __init__(self, monitor: Monitor, kind: str):
        super().__init__()
        self.monitor = monitor
        self.kind = kind

    def render_GET(self, request):
        if request.postpath:
            return pages.notFound().render(request)
        d = defer.ensureDeferred(self._answer(request))
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)

        def failed(f):
            log.failure("{kind} failed", f, kind=self.kind)
            request.setResponseCode(500)
            return b"internal error\n"

        def write(body: bytes):
            if not finished.called:
                request.write(body)
                request.finish()

        d.addErrback(failed).addCallback(write)
        return server.NOT_DONE_YET

    async def _answer(self, request) -> bytes:
        if self.kind == "metrics":
            body = await self.monitor.scrape()
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
            return body
        health = await self.monitor.health()
        request.setResponseCode(200 if health.ok else 503)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return health.text().encode()


class _MetricsSite(server.Site):
    """Each connection gets the webmail's connection wrapper for its flow control (a scraper that pipelines and
    does not read is not read either, and is dropped after ``limits.output_stall_timeout``) and a per-address cap;
    no header deadline: ``timeOut`` ends idle connections."""

    def __init__(self, root, services):
        super().__init__(root)
        limits = services.config.limits
        self.services = services
        self.limiter = ConnectionLimiter(limits.http_max_connections_per_ip)  # not among the counted families

    def buildProtocol(self, addr):
        from webmail.connection import WebConnection

        services = self.services
        return WebConnection(super().buildProtocol(addr), limiter=self.limiter, clock=services.reactor,
                             header_timeout=None, reactor=services.reactor,
                             stall_timeout=services.config.limits.output_stall_timeout)


def build_factory(services, listener_name: str) -> server.Site:
    """The Site of the ``metrics`` listener: ``/metrics`` and ``/healthz``, nothing else."""
    root = resource.Resource()
    root.putChild(b"metrics", _Endpoint(services.monitor, "metrics"))
    root.putChild(b"healthz", _Endpoint(services.monitor, "healthz"))
    site = _MetricsSite(root, services)
    site.timeOut = services.config.limits.http_header_timeout  # an idle scraper connection does not stay for ever
    site.displayTracebacks = False
    site.log = lambda request: None  # scrapes every few seconds: no access log
    return site
