"""Client set-up: Mozilla autoconfig, Outlook Autodiscover, the Apple profile, the set-up page; static files."""

from __future__ import annotations

from webmail import autoconfig as ac
from webmail import web
from webmail.views.common import folder_tree, mailboxes

STATIC_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml",
                "png": "image/png", "ico": "image/x-icon"}
_static_cache: dict[str, bytes] = {}


def server_entries(services) -> list[ac.ServerEntry]:
    """The client listeners this server really runs (bound ports), else as configured.  Proxied listeners are left
    out: clients reach them on the load balancer's ports, which this server does not know."""
    ports: dict[str, list[int]] = {}
    for lst in services.listeners():
        if not lst.proxied:
            ports.setdefault(lst.name, []).append(lst.port)
    if not ports:
        for name, addr in services.config.listen.items():
            ports.setdefault(name, []).append(addr.port)
    return ac.entries(services.config.hostname, ports)


async def _local_domain(ctx, domain: str) -> bool:
    d = await ctx.astore.get_domain(domain)
    return d is not None and d.mode == "local"


async def static(ctx, name: str) -> web.Response:
    from webmail.web import STATIC_DIR

    data = _static_cache.get(name)
    if data is None:
        path = STATIC_DIR / name
        if not path.is_file():
            raise web.NotFoundError()
        data = path.read_bytes()
        _static_cache[name] = data
    resp = web.Response(200, data, STATIC_TYPES[name.rsplit(".", 1)[1]])
    resp.headers.append(("Cache-Control", "public, max-age=3600"))
    return resp


async def autoconfig(ctx) -> web.Response:
    """Mozilla autoconfig for ``?emailaddress=`` (or the domain of the Host, as autoconfig.<domain>)."""
    address = ctx.arg("emailaddress")
    try:
        if address:
            _local, domain = ac.split_address(address)
        else:
            host = ctx.host_name().lower()
            domain = host[len("autoconfig."):] if host.startswith("autoconfig.") else host
    except ac.AutoconfigError as e:
        raise web.BadRequest(str(e)) from None
    if not await _local_domain(ctx, domain):
        raise web.NotFoundError("Unknown domain")
    body = ac.mozilla_autoconfig(domain, server_entries(ctx.services))
    return web.Response(200, body, "application/xml; charset=utf-8")


async def autodiscover(ctx) -> web.Response:
    try:
        address = ac.parse_autodiscover_request(getattr(ctx, "body", b""))
        _local, domain = ac.split_address(address)
    except ac.AutoconfigError:
        return web.Response(200, ac.autodiscover_error("600", "Invalid Request"), "application/xml; charset=utf-8")
    if not await _local_domain(ctx, domain):
        return web.Response(200, ac.autodiscover_error("600", "Invalid Request"), "application/xml; charset=utf-8")
    acct = await ctx.astore.get_account(address)
    name = acct.display_name if acct else ""
    body = ac.autodiscover_response(address.lower(), name, server_entries(ctx.services))
    return web.Response(200, body, "application/xml; charset=utf-8")


async def autodiscover_get(ctx) -> web.Response:
    raise web.HttpError(405, "Autodiscover expects a POST")


async def setup_page(ctx) -> web.Response:
    mbs = await mailboxes(ctx)
    return ctx.render("setup.html", servers=server_entries(ctx.services), address=ctx.session.address,
                      folders=folder_tree(mbs), current_id=None, title="Set up your mail app")


async def mobileconfig(ctx) -> web.Response:
    try:
        body = ac.mobileconfig(ctx.session.address, ctx.session.display_name, server_entries(ctx.services),
                               ctx.config.hostname)
    except ac.AutoconfigError as e:
        raise web.NotFoundError(str(e)) from None
    return web.Response(200, body, "application/x-apple-aspen-config",
                        headers=[("Content-Disposition", web.content_disposition("attachment", "mail.mobileconfig"))],
                        csp="default-src 'none'; sandbox")
