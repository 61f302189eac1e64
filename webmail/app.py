"""The webmail's ``twisted.web`` site: one route table, one dispatcher, security headers and errors in one place.

``build_factory(services, listener_name)`` is what :mod:`mailserver.service` calls for the ``http`` and ``https``
listeners.  On ``https`` (or on ``http`` when no ``https`` listener is configured) it serves the whole webmail; on
``http`` next to an ``https`` listener it serves only the paths mail clients fetch over plain HTTP (autoconfig,
autodiscover) and redirects everything else to ``https``.

Handlers are coroutines ``async def view(ctx, **params) -> Response | Stream``; the dispatcher checks the session and
the CSRF token before any handler runs (the table says which routes need them), maps :class:`webmail.web.HttpError`
to an error page, logs anything unexpected with its traceback and answers 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from mailserver.proxywire import Networks
from webmail import forwarded, web
from webmail.connection import WebConnection, connection_of
from webmail.render import Renderer
from webmail.sessions import SessionDb, SessionInfo, csrf_equal
from webmail.web import BadRequest, Forbidden, Form, HttpError, Response, Stream

log = Logger()

#: Paths mail clients fetch over plain HTTP: never redirected to https (lower-cased, prefix match).
PLAIN_HTTP_PATHS = ("/.well-known/autoconfig/", "/mail/config-v1.1.xml", "/autodiscover/")
SESSION_COOKIE_SECURE = "__Host-wm"
SESSION_COOKIE_PLAIN = "wm"
HSTS = "max-age=31536000"
#: A digest link: /q/<action>/<held copy id>/<signature> (mailserver/digest.py).
LINK_PATH = r"/q/(?P<action>release|delete)/(?P<qid>\d{1,12})/(?P<sig>[A-Za-z0-9_\-]{43})"
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}$|^\[[0-9A-Fa-f:.]{2,45}\]$")


# --------------------------------------------------------------------------------------------- requests


class WebRequest(server.Request):
    """A request whose body is bounded by ``limits.http_max_body`` and is not parsed by Twisted.

    Bytes past the limit are counted and dropped (memory and disk stay bounded); the request is then answered 413.
    """

    max_body = 60 * 1024 * 1024

    def __init__(self, *args, **kwargs):
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)
        self.body_size = 0
        self.too_large = False

    def gotLength(self, length):
        conn = connection_of(self)
        if conn is not None:
            conn.headers_received()  # called once all headers are in (twisted.web's allHeadersReceived)
        if length is not None and length > self.max_body:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def finish(self):
        conn, channel = connection_of(self), self.channel  # finish() detaches the request from its channel
        super().finish()
        if conn is not None and channel is not None and not channel.requests:
            conn.awaiting_request()  # keep-alive: the next request's headers are due in time too

    def handleContentChunk(self, data):
        self.body_size += len(data)
        if self.body_size > self.max_body:
            self.too_large = True
        if not self.too_large:
            super().handleContentChunk(data)


# --------------------------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern
    handler: Any
    #: Needs a signed-in session (anonymous visitors are sent to the sign-in page).
    auth: bool = True
    #: A state-changing request: the session's CSRF token must come with the form.
    csrf: bool = False
    #: Served on the plain-HTTP listener too.
    plain_http: bool = False
    #: Largest body accepted (None = limits.http_max_body).
    max_body: int | None = web.MAX_SMALL_BODY


def _routes() -> list[Route]:
    from webmail.views import (
        auth,
        compose,
        events,
        filters,
        links,
        mailbox,
        message,
        quarantine,
        settings,
        setup,
    )

    def r(method, pattern, handler, **kw):
        return Route(method, re.compile(pattern + r"\Z"), handler, **kw)

    big = None  # uploads may use the whole http_max_body
    return [
        r("GET", r"/", auth.root, auth=False),
        r("GET", r"/login", auth.login_page, auth=False),
        r("POST", r"/login", auth.login, auth=False),
        r("POST", r"/logout", auth.logout, csrf=True),
        r("GET", r"/static/(?P<name>[A-Za-z0-9_\-]+\.(?:css|js|svg|png|ico))", setup.static, auth=False),
        # mailboxes and lists
        r("GET", r"/m/(?P<mb>\d+)", mailbox.message_list),
        r("POST", r"/m/(?P<mb>\d+)/action", mailbox.bulk_action, csrf=True),
        r("GET", r"/search", mailbox.search),
        r("GET", r"/folders", mailbox.folders_page),
        r("POST", r"/folders", mailbox.folder_action, csrf=True),
        r("GET", r"/api/folders", mailbox.folders_json),
        # messages
        r("GET", r"/m/(?P<mb>\d+)/(?P<uid>\d+)", message.read),
        r("GET", r"/m/(?P<mb>\d+)/(?P<uid>\d+)/html/(?P<part>\d+)", message.html_body),
        r("GET", r"/m/(?P<mb>\d+)/(?P<uid>\d+)/part/(?P<part>\d+)", message.download),
        r("GET", r"/m/(?P<mb>\d+)/(?P<uid>\d+)/cid/(?P<cid>[^/]{1,500})", message.cid_image),
        r("GET", r"/m/(?P<mb>\d+)/(?P<uid>\d+)/source", message.source),
        # the quarantine
        r("GET", r"/quarantine", quarantine.quarantine_page),
        r("GET", r"/quarantine/(?P<qid>\d{1,12})", quarantine.held_page),
        r("POST", r"/quarantine/action", quarantine.quarantine_action, csrf=True),
        r("GET", r"/quarantine/(?P<qid>\d{1,12})/part/(?P<part>\d{1,4})", quarantine.held_download),
        # the digest's links: no session; GET shows a confirm page, its POST acts (webmail/views/links.py)
        r("GET", LINK_PATH, links.link_page, auth=False),
        r("POST", LINK_PATH, links.link_action, auth=False, max_body=4096),
        # composing
        r("GET", r"/compose", compose.compose_page),
        r("POST", r"/compose", compose.compose_submit, csrf=True, max_body=big),
        r("GET", r"/api/contacts", compose.contacts_json),
        # live updates
        r("GET", r"/events", events.event_stream),
        # settings and client set-up
        r("GET", r"/settings", settings.settings_page),
        r("POST", r"/settings", settings.settings_submit, csrf=True),
        r("GET", r"/filters", filters.filters_page),
        r("POST", r"/filters", filters.filters_submit, csrf=True),
        r("GET", r"/setup", setup.setup_page),
        r("GET", r"/setup/mail\.mobileconfig", setup.mobileconfig),
        r("GET", r"/\.well-known/autoconfig/mail/config-v1\.1\.xml", setup.autoconfig, auth=False,
          plain_http=True),
        r("GET", r"/mail/config-v1\.1\.xml", setup.autoconfig, auth=False, plain_http=True),
        r("POST", r"/(?i:autodiscover/autodiscover\.xml)", setup.autodiscover, auth=False, plain_http=True),
        r("GET", r"/(?i:autodiscover/autodiscover\.xml)", setup.autodiscover_get, auth=False, plain_http=True),
    ]


# --------------------------------------------------------------------------------------------- context


@dataclass
class Ctx:
    """What a view gets: the request, the app, the session (None when anonymous), the query and the form."""

    request: server.Request
    app: "WebmailApp"
    session: SessionInfo | None
    query: dict[str, list[str]]
    form: Form = field(default_factory=Form)
    cookies_out: list[str] = field(default_factory=list)

    @property
    def services(self):
        return self.app.services

    @property
    def astore(self):
        return self.app.services.astore

    @property
    def account_id(self) -> int:
        assert self.session is not None
        return self.session.account_id

    @property
    def config(self):
        return self.app.services.config

    def arg(self, name: str, default: str = "") -> str:
        v = self.query.get(name)
        return v[0] if v else default

    def int_arg(self, name: str, default: int = 0, lo: int = 0, hi: int = 1 << 31) -> int:
        try:
            return min(hi, max(lo, int(self.arg(name, str(default)))))
        except ValueError:
            return default

    @property
    def client_ip(self) -> str:
        """The client's address: the peer's, or what trusted proxies forwarded (``webmail/forwarded.py``)."""
        return self.app.client_ip(self.request)

    def header(self, name: str) -> str:
        v = self.request.getHeader(name)
        return v.decode("latin-1") if isinstance(v, bytes) else (v or "")

    def render(self, template: str, status: int = 200, **values) -> Response:
        values.setdefault("session", self.session)
        values.setdefault("csrf", self.session.csrf if self.session else "")
        return Response(status, self.app.renderer.render(template, **values).encode("utf-8"))

    def host_name(self) -> str:
        """The Host the client used (without port) when it looks like a host name, else our configured hostname."""
        host = self.header("host").strip()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return host if _HOST.match(host) else self.config.hostname


# --------------------------------------------------------------------------------------------- the app


class WebmailApp:
    """Shared state of one listener's site."""

    def __init__(self, services, listener_name: str):
        self.services = services
        self.listener_name = listener_name
        self.secure = listener_name == "https"
        cfg = services.config
        self.redirect_to_https = listener_name == "http" and bool(cfg.listen.https)
        self.renderer = Renderer(cfg)
        self.sessions = SessionDb(services.store, idle=cfg.webmail.session_idle,
                                  absolute=cfg.webmail.session_absolute)
        self.routes = _routes()
        self.cookie_name = SESSION_COOKIE_SECURE if self.secure else SESSION_COOKIE_PLAIN
        #: Reverse proxies whose Forwarded / X-Forwarded-For name the client (``[proxy] trusted``).
        self.trusted_proxies = Networks(cfg.proxy.trusted)
        #: The digest links' HMAC key (``Store.server_key``), read once (webmail/views/links.py).
        self.link_secret: bytes | None = None

    def client_ip(self, request) -> str:
        peer = request.getClientAddress().host
        if not self.trusted_proxies:
            return peer
        headers = request.requestHeaders

        def values(name: bytes) -> list[str]:
            return [v.decode("latin-1") for v in headers.getRawHeaders(name, [])]

        return forwarded.client_address(peer, self.trusted_proxies, forwarded=values(b"forwarded"),
                                        x_forwarded_for=values(b"x-forwarded-for"))

    # -- database helpers for views

    def read(self, f, *args, **kwargs) -> defer.Deferred:
        from mailserver.threads import run_in

        return run_in(self.services.reactor, self.services.pools.db_read, f, *args, **kwargs)

    def write(self, f, *args, **kwargs) -> defer.Deferred:
        from mailserver.threads import run_in

        return run_in(self.services.reactor, self.services.pools.db_write, f, *args, **kwargs)

    def cpu(self, f, *args, **kwargs) -> defer.Deferred:
        from mailserver.threads import run_in

        return run_in(self.services.reactor, self.services.pools.cpu, f, *args, **kwargs)

    # -- dispatch

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path parameters, path known for another method)."""
        other = False
        for route in self.routes:
            m = route.pattern.match(path)
            if m:
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, m.groupdict(), False
                other = True
        return None, {}, other

    async def handle(self, request: WebRequest) -> Response | Stream:
        method = request.method.decode("ascii", "replace").upper()
        try:
            raw_path = request.path.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("bad path") from None
        from urllib.parse import unquote

        path = unquote(raw_path)
        if self.redirect_to_https and not path.lower().startswith(PLAIN_HTTP_PATHS):
            return self._https_redirect(request)
        route, params, other = self.match(method, path)
        if route is None:
            raise HttpError(405, "Method not allowed") if other else web.NotFoundError()
        if self.redirect_to_https and not route.plain_http:
            return self._https_redirect(request)
        query = parse_qs(urlsplit(request.uri.decode("latin-1")).query, keep_blank_values=True,
                         max_num_fields=web.MAX_FORM_FIELDS)
        ctx = Ctx(request, self, None, query)
        token = (request.received_cookies.get(self.cookie_name.encode()) or b"").decode("ascii", "replace")
        if token:
            ctx.session = await self.read(self.sessions.load, token)
        if route.auth and ctx.session is None:
            if method == "GET" and not path.startswith(("/api/", "/events")):
                from urllib.parse import quote

                return web.redirect("/login?next=" + quote(request.uri.decode("latin-1"), safe=""))
            raise HttpError(401, "Not signed in")
        if method == "POST":
            limit = route.max_body if route.max_body is not None else self.services.config.limits.http_max_body
            if request.too_large or request.body_size > limit:
                raise HttpError(413, "The request is too large")
            self._check_origin(ctx)
            request.content.seek(0)
            body = request.content.read()
            ctype = ctx.header("content-type")
            if len(body) > 1024 * 1024:
                ctx.form = await self.cpu(web.parse_form, body, ctype)
            elif body or ctype:
                ctx.form = web.parse_form(body, ctype) if route.handler.__name__ != "autodiscover" else Form()
            ctx.body = body  # type: ignore[attr-defined]
            if route.csrf:
                if ctx.session is None or not csrf_equal(ctx.session.csrf, ctx.form.get("_csrf")):
                    raise Forbidden("The form has expired or did not come from this site. Please try again.")
        return await route.handler(ctx, **params)

    def _check_origin(self, ctx: Ctx) -> None:
        """A browser's POST must come from our own pages (a second line of defence beside CSRF tokens).

        ``Sec-Fetch-Site`` (Fetch Metadata) must be same-origin or none; an ``Origin`` other than ours is refused.
        With ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` for our own forms, so "null" passes
        here and the CSRF token decides.  Clients that are not browsers send neither header (autodiscover).
        """
        site = ctx.header("sec-fetch-site")
        if site and site not in ("same-origin", "none"):
            raise Forbidden("Cross-site request refused")
        origin = ctx.header("origin")
        if not origin or origin == "null":
            return
        host = ctx.header("host")
        scheme = "https" if self.secure else "http"
        if origin != f"{scheme}://{host}":
            raise Forbidden("Cross-site request refused")

    def _https_redirect(self, request) -> Response:
        """301 to the same path over https on the configured host name, whatever the request's Host says: a
        ``Host: evil.test`` (or any name a client chose) never reaches the Location header, and the certificate
        is the host name's."""
        try:
            https_port = self.services.port("https")
        except KeyError:
            https_port = 443
        port = "" if https_port == 443 else f":{https_port}"
        uri = request.uri.decode("latin-1")
        if not uri.startswith("/") or uri.startswith("//"):
            uri = "/"
        return web.redirect(f"https://{self.services.config.hostname}{port}{uri}", 301)

    # -- writing

    def headers_for(self, request, resp: Response) -> None:
        h = request.setHeader
        h("X-Content-Type-Options", "nosniff")
        h("Referrer-Policy", "no-referrer")
        h("Cross-Origin-Opener-Policy", "same-origin")
        h("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
        if resp.frame_same_origin:
            h("X-Frame-Options", "SAMEORIGIN")
        else:
            h("X-Frame-Options", "DENY")
        h("Content-Security-Policy", resp.csp or web.APP_CSP)
        if self.secure:
            h("Strict-Transport-Security", HSTS)
        h("Cache-Control", "no-store")

    def error_response(self, ctx_session, status: int, message: str) -> Response:
        try:
            body = self.renderer.render("error.html", status=status, message=message, session=ctx_session,
                                        csrf=ctx_session.csrf if ctx_session else "")
        except Exception:
            body = f"<!doctype html><title>{status}</title><p>{status}</p>"
        return Response(status, body.encode("utf-8"))


class WebmailResource(resource.Resource):
    isLeaf = True

    def __init__(self, app: WebmailApp):
        super().__init__()
        self.app = app

    def render(self, request):
        d = defer.ensureDeferred(self._render(request))
        d.addErrback(lambda f: log.failure("webmail response failed", f))
        return server.NOT_DONE_YET

    async def _render(self, request) -> None:
        finished = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        session = None
        try:
            result = await self.app.handle(request)
        except HttpError as e:
            result = self.app.error_response(session, e.status, e.message)
        except Exception:
            log.failure("webmail: unexpected error for {method} {uri}", method=request.method, uri=request.uri)
            result = self.app.error_response(None, 500, "Something went wrong on our side.")
        if finished:
            return
        if isinstance(result, Stream):
            self._stream(request, result)
            return
        resp: Response = result
        request.setResponseCode(resp.status)
        self.app.headers_for(request, resp)
        if resp.body or resp.status not in (204, 301, 302, 303, 304):
            request.setHeader("Content-Type", resp.content_type)
        for name, value in resp.headers:
            request.setHeader(name, value)
        for c in resp.cookies:
            request.responseHeaders.addRawHeader("Set-Cookie", c)
        if request.method != b"HEAD":
            request.write(resp.body)
        request.finish()

    def _stream(self, request, stream: Stream) -> None:
        request.setResponseCode(200)
        self.app.headers_for(request, Response())
        request.setHeader("Content-Type", stream.content_type)
        request.setHeader("X-Accel-Buffering", "no")
        closed = []

        def write(data: bytes) -> None:
            if not closed:
                request.write(data)

        stop = stream.start(write)

        def on_close(_):
            closed.append(True)
            stop()

        request.notifyFinish().addBoth(on_close)
        request.write(b": stream open\n\n")


class WebSite(server.Site):
    def __init__(self, app: WebmailApp, max_body: int):
        # timeout: idle seconds before twisted.web closes a connection; the header deadline (webmail/connection.py)
        # is the tighter bound while no request is being answered.
        super().__init__(WebmailResource(app), timeout=300)
        self.app = app
        limits = app.services.config.limits
        self.limiter = app.services.state.limiter("http", limits.http_max_connections_per_ip)
        self.header_timeout = limits.http_header_timeout
        #: The clock of the header deadlines (tests pass a ``task.Clock``).
        self.clock = app.services.reactor

        class _Req(WebRequest):
            pass

        _Req.max_body = max_body
        self.requestFactory = _Req
        self.displayTracebacks = False

    def buildProtocol(self, addr):
        return WebConnection(super().buildProtocol(addr), limiter=self.limiter, clock=self.clock,
                             header_timeout=self.header_timeout, reactor=self.app.services.reactor,
                             stall_timeout=self.app.services.config.limits.output_stall_timeout)

    def log(self, request):  # one line per request through our logger, not twisted.web's access log
        pass




def build_factory(services, listener_name: str) -> WebSite:
    """The Site for the ``http`` or ``https`` listener."""
    app = WebmailApp(services, listener_name)
    return WebSite(app, services.config.limits.http_max_body)
