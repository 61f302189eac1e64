"""The digest's links (``mailserver/digest.py``): ``/q/<release|delete>/<id>/<signature>``, without signing in.

A GET only shows what the link would do and a confirm button; the POST of that page acts.  So a mail scanner or a
browser that prefetches every URL of a mail changes nothing.  The POST carries the page's ``confirm`` field (an HMAC
of the link under the same secret, only on the confirm page) and passes the dispatcher's same-origin check, so a
bare POST to the link from elsewhere acts on nothing either.  Refusals (forged, expired, used, no longer held) are a
page saying so; a forged link is the 404 of a missing one.
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.logger import Logger

from mailserver import digest
from mailserver.delivery import envelope as ev
from webmail import web
from webmail.views.quarantine import plain_reason

log = Logger()

_HEADINGS = {"release": "Release this message?", "delete": "Delete this message?"}
_BUTTONS = {"release": "Release to my inbox", "delete": "Delete it"}


async def _secret(ctx) -> bytes:
    if ctx.app.link_secret is None:
        ctx.app.link_secret = await ctx.astore.server_key(digest.LINK_SECRET)
    return ctx.app.link_secret


def _confirm_token(secret: bytes, path: str) -> str:
    return hmac.new(secret, b"confirm\0" + path.encode(), hashlib.sha256).hexdigest()


def _page(ctx, status: int, heading: str, message: str = "", *, item=None, failed: bool = False, **kw):
    return ctx.render("quarantine_link.html", status=status, heading=heading, message=message, item=item,
                      reason=plain_reason(item) if item is not None else "", failed=failed, folders=[],
                      current_id=None, title="Quarantine", **kw)


async def _check(ctx, action: str, qid: str, sig: str):
    """(item, secret) of a valid link, or an error page."""
    secret = await _secret(ctx)
    item = await ctx.astore.quarantined(int(qid))
    why = digest.verify(secret, action, item, sig, ctx.services.reactor.seconds())
    if why == digest.FORGED:
        raise web.NotFoundError(why)
    if why is not None:
        return None, _page(ctx, 410, "This link no longer works", why, failed=True)
    return (item, secret), None


async def link_page(ctx, action: str, qid: str, sig: str) -> web.Response:
    ok, refused = await _check(ctx, action, qid, sig)
    if refused is not None:
        return refused
    item, secret = ok
    path = f"/q/{action}/{qid}/{sig}"
    return _page(ctx, 200, _HEADINGS[action], "Nothing happens until you confirm.", item=item,
                 confirm=_confirm_token(secret, path), action_path=path, button=_BUTTONS[action])


async def link_action(ctx, action: str, qid: str, sig: str) -> web.Response:
    ok, refused = await _check(ctx, action, qid, sig)
    if refused is not None:
        return refused
    item, secret = ok
    path = f"/q/{action}/{qid}/{sig}"
    if not hmac.compare_digest(ctx.form.get("confirm"), _confirm_token(secret, path)):
        raise web.Forbidden("Please confirm on the link's own page.")
    if not await ctx.astore.use_quarantine_token(digest.token_id(action, item.id, sig), item.expires):
        return _page(ctx, 410, "This link no longer works", digest.USED, failed=True)
    by = f"digest-link:{item.account}"
    if action == "release":
        outcome = await ctx.services.pipeline.release(item, by=by)
        if outcome.kind == ev.REFUSED:  # released or deleted meanwhile (another node, the webmail)
            return _page(ctx, 410, "This link no longer works", digest.GONE, failed=True)
        if outcome.kind == ev.DEFERRED:
            return _page(ctx, 507, "Not released", "Your mailbox is full: the message stays in the quarantine. "
                         "Make room, then release it in the webmail.", item=item, failed=True)
        return _page(ctx, 200, "Released", "The message was delivered to your inbox.", item=item)
    removed = await ctx.astore.delete_quarantined([item.id])
    if not removed:
        return _page(ctx, 410, "This link no longer works", digest.GONE, failed=True)
    log.info("quarantine delete {id} {qid} for <{rcpt}> by {by}", id=item.id, qid=item.queue_id,
             rcpt=item.recipient, by=by)
    return _page(ctx, 200, "Deleted", "The message was deleted from the quarantine.", item=item)
