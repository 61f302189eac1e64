"""Reading a message: headers, text bodies, the sanitised HTML frame, attachments, cid: images, source."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from mailserver.access import Rights
from mailserver.mime.parse import parse_structure
from storage.models import FLAG_SEEN
from webmail import message_view as mv
from webmail import web
from webmail.sanitize import document, frame_csp, sanitize_html
from webmail.verdict import MAX_HEADER as MAX_VERDICT_HEADER
from webmail.verdict import explain
from webmail.views.common import folder_tree, mailboxes, open_message, open_message_listed, rights

#: Types sent with their own Content-Type on download (always as an attachment, never rendered by us).
SAFE_DOWNLOAD_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain",
                       "text/csv", "application/zip", "audio/mpeg", "video/mp4", "message/rfc822"}
DOWNLOAD_CSP = "default-src 'none'; sandbox"
_REMOTE_IMG = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", re.I)


def _structure(msg, raw: bytes | None = None) -> dict:
    if msg.bodystructure:
        try:
            return json.loads(msg.bodystructure)
        except ValueError:
            pass
    return parse_structure(raw or b"")


def _node(bs: dict, part: str) -> dict:
    nodes = mv.numbered(bs)
    i = int(part)
    if i >= len(nodes):
        raise web.NotFoundError()
    return nodes[i]


async def read(ctx, mb: str, uid: str) -> web.Response:
    box, msg, mbs = await open_message_listed(ctx, mb, uid, Rights.READ)
    raw = await ctx.astore.read_blob(msg.blob_id)
    bs = _structure(msg, raw)
    prefer_text = ctx.arg("view") == "text"
    view = await ctx.app.cpu(mv.analyze, raw, bs, prefer_text)
    allow_remote = ctx.arg("remote") == "1"
    remote_blocked = False
    if not allow_remote:
        nodes = mv.numbered(bs)
        for b in view.bodies:
            if b.kind == "html" and _REMOTE_IMG.search(mv.decode_part_text(raw, nodes[b.part])):
                remote_blocked = True
    # Opening a message marks it read (RFC 4314 4: only with "s"), but only when the browser says the GET came from
    # our own pages or a typed address (Fetch Metadata): a SameSite=Lax cookie rides along on a cross-site link, and
    # a page elsewhere must not be able to mark our user's mail as read. A browser that sends no Sec-Fetch-Site
    # cannot tell us: the page it shows marks the message read itself, by a same-origin POST from our script (a
    # cross-site <img> or hidden frame runs no script of ours; framing by another site is refused).
    site = ctx.header("sec-fetch-site") or ""
    mark_by_script = False
    if not msg.flags & FLAG_SEEN and Rights.SEEN in rights(ctx, box):
        if site in ("same-origin", "none"):
            await ctx.astore.set_flags(box.id, [msg.uid], "add", FLAG_SEEN, reader=ctx.account_id)
            mbs = await mailboxes(ctx)  # the folder tree's unread counts after this one was read
        elif not site:
            mark_by_script = True
    # "Why is this junk?": the verdict our delivery stored on the copy (webmail/verdict.py), for mail in Junk.
    junk = explain(raw[:MAX_VERDICT_HEADER], ctx.config.hostname) if box.special_use == "\\Junk" else None
    thread = await ctx.astore.conversation(ctx.account_id, msg)
    names = {m.id: m.name for m in mbs}
    tree = folder_tree(mbs)
    has_html_body = any(b.kind == "html" for b in view.bodies)
    attachments = [a for a in view.attachments
                   if not (has_html_body and a.inline_cid and a.content_type in mv.INLINE_IMAGE_TYPES)]
    envelope = json.loads(msg.envelope) if msg.envelope else [None] * 10
    reply_to = ", ".join(_addresses(envelope[4])) if envelope[4] != envelope[2] else ""
    return ctx.render("read.html", mailbox=box, msg=msg, view=view, attachments=attachments,
                      allow_remote=allow_remote, remote_blocked=remote_blocked, prefer_text=prefer_text,
                      thread=thread if len(thread) > 1 else [], mailbox_names=names, reply_to=reply_to,
                      folders=tree, current_id=box.id, mark_by_script=mark_by_script,
                      junk=junk, move_targets=[r for r in tree if r.mailbox.id != box.id],
                      title=msg.subject or "(no subject)")


def _addresses(addrs) -> list[str]:
    from mailserver.mime.text import decode_header_text, format_address

    out = []
    for name, _adl, mailbox, host in addrs or ():
        if host is None:
            continue
        out.append(format_address(decode_header_text(name or ""), f"{mailbox}@{host}" if host else mailbox or ""))
    return out


async def html_body(ctx, mb: str, uid: str, part: str) -> web.Response:
    """The sanitised HTML of one part as its own document (for the sandboxed iframe)."""
    box, msg = await open_message(ctx, mb, uid, Rights.READ)
    raw = await ctx.astore.read_blob(msg.blob_id)
    bs = _structure(msg, raw)
    node = _node(bs, part)
    if mv.ctype(node) != "text/html" or "children" in node:
        raise web.NotFoundError()
    cids = {}
    for i, n in enumerate(mv.numbered(bs)):
        c = mv._cid(n)
        if c and mv.ctype(n) in mv.INLINE_IMAGE_TYPES:
            cids[c] = i
    allow_remote = ctx.arg("remote") == "1"
    prefix = f"/m/{box.id}/{msg.uid}/cid/"

    def cid_url(cid: str) -> str | None:
        from urllib.parse import unquote

        cid = unquote(cid.strip())
        return prefix + quote(cid, safe="") if cid in cids else None

    text = mv.decode_part_text(raw, node)
    clean = await ctx.app.cpu(sanitize_html, text, cid_url=cid_url, allow_remote=allow_remote)
    return web.Response(200, document(clean.html).encode("utf-8"), csp=frame_csp(allow_remote),
                        frame_same_origin=True)


async def download(ctx, mb: str, uid: str, part: str) -> web.Response:
    """An attachment, always as a download (safe Content-Disposition, nosniff, sandbox CSP)."""
    box, msg = await open_message(ctx, mb, uid, Rights.READ)
    bs = _structure(msg)
    node = _node(bs, part)
    if "children" in node:
        raise web.NotFoundError()
    data = await ctx.astore.read_blob(msg.blob_id, node["body_start"], node["body_end"])
    name = mv.attachment_name(node, int(part))  # as the reader lists it
    if "body" in node:
        ctype = "message/rfc822"
    else:
        data = mv.decode_transfer(data, node.get("encoding"))
        ctype = mv.ctype(node)
    sent_type = ctype if ctype in SAFE_DOWNLOAD_TYPES else "application/octet-stream"
    return web.Response(200, data, sent_type, csp=DOWNLOAD_CSP,
                        headers=[("Content-Disposition", web.content_disposition("attachment", name))])


async def cid_image(ctx, mb: str, uid: str, cid: str) -> web.Response:
    """An image an HTML body refers to by cid: (raster types only, never SVG)."""
    box, msg = await open_message(ctx, mb, uid, Rights.READ)
    bs = _structure(msg)
    for n in mv.numbered(bs):
        if mv._cid(n) == cid and "children" not in n and "body" not in n:
            ctype = mv.ctype(n)
            if ctype not in mv.INLINE_IMAGE_TYPES:
                break
            data = await ctx.astore.read_blob(msg.blob_id, n["body_start"], n["body_end"])
            resp = web.Response(200, mv.decode_transfer(data, n.get("encoding")), ctype, csp=DOWNLOAD_CSP)
            resp.headers.append(("Cache-Control", "private, max-age=3600"))
            return resp
    raise web.NotFoundError()


async def source(ctx, mb: str, uid: str) -> web.Response:
    """The message exactly as stored: shown as text, or downloaded as .eml with ?download=1."""
    box, msg = await open_message(ctx, mb, uid, Rights.READ)
    raw = await ctx.astore.read_blob(msg.blob_id)
    if ctx.arg("download") == "1":
        name = (mv.display_filename((msg.subject or "")[:80]) or "message") + ".eml"
        return web.Response(200, raw, "message/rfc822", csp=DOWNLOAD_CSP,
                            headers=[("Content-Disposition", web.content_disposition("attachment", name))])
    return web.Response(200, raw, "text/plain; charset=utf-8", csp=DOWNLOAD_CSP)
