"""The Quarantine view: each user's held copies (a domain admin's: the domain's too), their reason in plain words,
the headers and a text-only preview, and the actions release / release and always allow / delete / block sender,
one or many at a time.

A held copy is reached only through :func:`open_held`: one the signed-in account may not see is a 404, exactly as
a missing one.  The preview is the text the delivery's one parse kept (``preview``): never the HTML, never a remote
load; attachments are listed by name and downloaded only when no virus was found in the copy (:func:`held_download`,
always as a download, as the reader's).  Every action is
logged with who did it (``mailserver/delivery/pipeline.py`` logs releases, this module deletions and rules).
"""

from __future__ import annotations

import json

from twisted.logger import Logger

from mailserver.delivery import envelope as ev
from mailserver.mime.parse import part_filename
from storage.errors import Invalid
from storage.quarantine import ALLOW, BLOCK, MAX_SEARCH, QuarantineItem, check_sender_pattern
from webmail import message_view as mv
from webmail import web
from webmail.views.common import folder_tree, mailboxes
from webmail.views.message import DOWNLOAD_CSP, SAFE_DOWNLOAD_TYPES

log = Logger()

PAGE_SIZE = 25
#: Most ids one bulk action takes.
MAX_BULK = 200
#: The longest header block the detail page shows.
MAX_HEADER_SHOWN = 64 * 1024

#: A reason code in plain words (the check's own text follows it).
REASONS = {
    "spam": "It looks like spam.",
    "virus": "A virus was found in it. Its attachments cannot be downloaded.",
    "dmarc": "The sender's domain asks for mail that fails its checks (DMARC) to be held.",
}


def plain_reason(item: QuarantineItem) -> str:
    """The reason in plain words; for DMARC, with the checks that failed ("... and this message failed SPF and
    DKIM")."""
    words = REASONS.get(item.reason, "A check held it.")
    if item.reason == "dmarc":
        results = {}
        for f in item.facts:
            if f.get("check") in ("spf", "dkim") and f.get("result") != "pass":
                results.setdefault(f["check"].upper(), True)
            elif f.get("check") in ("spf", "dkim"):
                results[f["check"].upper()] = False
        failed = [name for name, bad in results.items() if bad]
        if failed:
            words = words.rstrip(".") + ", and this message failed " + " and ".join(failed) + "."
    return words


async def _scope(ctx) -> tuple[list[int] | None, list[int] | None]:
    """The account ids and domain ids whose held copies the signed-in account may see."""
    domains = await ctx.astore.admin_domains(ctx.account_id)
    return [ctx.account_id], domains


async def open_held(ctx, item_id) -> QuarantineItem:
    """The held copy ``item_id`` if it is the account's own or in a domain it administers; 404 otherwise."""
    try:
        n = int(str(item_id), 10)
    except ValueError:
        raise web.NotFoundError() from None
    item = await ctx.astore.quarantined(n)
    if item is None:
        raise web.NotFoundError()
    if item.account_id != ctx.account_id:
        domains = await ctx.astore.admin_domains(ctx.account_id)
        acct = await ctx.astore.get_account_by_id(item.account_id) if domains else None
        if acct is None or acct.domain_id not in domains:
            raise web.NotFoundError()
    return item


async def quarantine_page(ctx, notice: str = "") -> web.Response:
    text = ctx.arg("q")[:MAX_SEARCH]
    page = ctx.int_arg("page", 1, 1, 100_000)
    accounts, domains = await _scope(ctx)
    # A domain admin sees its own held copies and those of the domains it administers.
    total, items = await ctx.astore.list_quarantined(account_ids=accounts, domain_ids=domains or None, text=text, offset=(page - 1) * PAGE_SIZE,
                                                     limit=PAGE_SIZE)
    mbs = await mailboxes(ctx)
    notice = notice or {"released": "Released to your inbox.", "deleted": "Deleted.",
                        "blocked": "Sender blocked.", "allowed": "Released; the sender is always allowed."
                        }.get(ctx.arg("notice"), "")
    return ctx.render("quarantine.html", items=items, total=total, page=page, pages=max(1, -(-total // PAGE_SIZE)),
                      q=text, notice=notice, reasons=REASONS, folders=folder_tree(mbs), current_id=None,
                      admin=bool(domains), title="Quarantine")


def virus_found(item: QuarantineItem) -> bool:
    """A virus scanner named a virus in this copy (it was held for it, or for something else with one found)."""
    return item.reason == "virus" or any(f.get("name") == "virus" and f.get("result") for f in item.facts)


def _tree(item: QuarantineItem) -> dict | None:
    try:
        tree = json.loads(item.parsed.get("bodystructure") or "null")
    except ValueError:
        return None
    return tree if isinstance(tree, dict) else None


def _attachments(item: QuarantineItem) -> list[tuple[int, str]]:
    """(part number, file name) of the held copy's attachments (from the stored BODYSTRUCTURE; nothing is read)."""
    tree = _tree(item)
    if tree is None:
        return []
    out = []
    for i, node in enumerate(mv.numbered(tree)):
        if "children" not in node and part_filename(node):
            out.append((i, mv.attachment_name(node, i)[:200]))
    return out[:100]


async def held_download(ctx, qid: str, part: str) -> web.Response:
    """An attachment of a held copy, always as a download (as the reader's); a 404 when a virus was found in it."""
    item = await open_held(ctx, qid)
    if virus_found(item):
        raise web.NotFoundError()
    n = int(part)
    if n not in dict(_attachments(item)):
        raise web.NotFoundError()
    node = mv.numbered(_tree(item))[n]
    data = await ctx.astore.read_blob(item.blob_id, node["body_start"], node["body_end"])
    if "body" in node:
        ctype = "message/rfc822"
    else:
        data = mv.decode_transfer(data, node.get("encoding"))
        ctype = mv.ctype(node)
    sent_type = ctype if ctype in SAFE_DOWNLOAD_TYPES else "application/octet-stream"
    log.info("quarantine download {id} part {part} for <{rcpt}> by webmail:{by}", id=item.id, part=n,
             rcpt=item.recipient, by=ctx.session.address)
    return web.Response(200, data, sent_type, csp=DOWNLOAD_CSP,
                        headers=[("Content-Disposition", web.content_disposition("attachment", mv.attachment_name(
                            node, n)))])


async def held_page(ctx, qid: str) -> web.Response:
    item = await open_held(ctx, qid)
    header_size = int(item.parsed.get("header_size") or 0) or MAX_HEADER_SHOWN
    head = await ctx.astore.read_blob(item.blob_id, 0, min(header_size, MAX_HEADER_SHOWN))
    mbs = await mailboxes(ctx)
    return ctx.render("quarantine_item.html", item=item, reason=plain_reason(item),
                      headers=head.decode("utf-8", "replace"), preview=item.parsed.get("preview") or "",
                      attachments=_attachments(item), virus=virus_found(item), folders=folder_tree(mbs), current_id=None,
                      title=item.subject or "Quarantined message")


def _rule_address(sender: str) -> bool:
    """A sender a rule can name (the null sender and odd quoted local parts cannot be)."""
    try:
        check_sender_pattern(sender)
    except Invalid:
        return False
    return not sender.startswith("@")


async def act(ctx, items: list[QuarantineItem], op: str, by: str) -> str:
    """Carry out ``op`` on held copies the caller may act on; the notice key for the page."""
    pipeline = ctx.services.pipeline
    if op in ("release", "allow"):
        for item in items:
            outcome = await pipeline.release(item, by=by)
            if outcome.kind == ev.DEFERRED:
                raise web.HttpError(507, "The mailbox is full: nothing was released.")
            if op == "allow" and _rule_address(item.sender):
                await ctx.astore.set_sender_rule(item.account_id, item.sender, ALLOW)
                log.info("quarantine allow sender <{sender}> for account {acct} by {by}", sender=item.sender,
                         acct=item.account, by=by)
        return "allowed" if op == "allow" else "released"
    if op in ("delete", "block"):
        removed = await ctx.astore.delete_quarantined([i.id for i in items])
        for item in removed:
            log.info("quarantine delete {id} {qid} for <{rcpt}> by {by}", id=item.id, qid=item.queue_id,
                     rcpt=item.recipient, by=by)
        if op == "block":
            for item in items:
                if _rule_address(item.sender):
                    await ctx.astore.set_sender_rule(item.account_id, item.sender, BLOCK)
                    log.info("quarantine block sender <{sender}> for account {acct} by {by}", sender=item.sender,
                             acct=item.account, by=by)
            return "blocked"
        return "deleted"
    raise web.BadRequest("unknown quarantine action")


async def quarantine_action(ctx) -> web.Response:
    ids = ctx.form.getlist("id")
    if not ids or len(ids) > MAX_BULK:
        raise web.BadRequest("choose between 1 and %d messages" % MAX_BULK)
    items = [await open_held(ctx, i) for i in dict.fromkeys(ids)]
    notice = await act(ctx, items, ctx.form.get("op"), f"webmail:{ctx.session.address}")
    return web.redirect(f"/quarantine?notice={notice}")
