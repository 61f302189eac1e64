"""Compose, reply, reply-all, forward (inline or as attachment), drafts and sending."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from twisted.logger import Logger

from mailserver.access import Rights
from mailserver.delivery.envelope import DRAFT, SENT_COPY
from mailserver.ingest import deliver_raw
from mailserver.mime.text import address_list, decode_header_text, format_address
from storage.models import FLAG_ANSWERED, FLAG_DRAFT, FLAG_SEEN
from storage.sendgrants import OWN, SEND_ON_BEHALF
from webmail import compose as cm
from webmail import message_view as mv
from webmail import web
from webmail.views.common import (
    folder_tree,
    mailboxes,
    open_mailbox,
    open_message,
    parse_ref,
    rights,
    special,
)
from webmail.views.filters import refresh_vacation_contacts

log = Logger()

MODES = ("new", "reply", "all", "forward", "forward_att")


@dataclass
class ComposeState:
    from_addr: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    reply_ref: str = ""
    draft_ref: str = ""
    keep: list[tuple[str, str, int]] = field(default_factory=list)  # (ref, filename, size)


def _join(pairs) -> str:
    return ", ".join(format_address(n, a) for n, a in pairs)


async def _original(ctx, ref: str):
    r = parse_ref(ref)
    if r is None:
        raise web.NotFoundError()
    box, msg = await open_message(ctx, r[0], r[1], Rights.READ)
    raw = await ctx.astore.read_blob(msg.blob_id)
    bs = json.loads(msg.bodystructure) if msg.bodystructure else mv.parse_structure(raw)
    return box, msg, raw, bs


def _header(raw: bytes, header_size: int, name: str) -> str:
    """First ``name`` field of the header block, unfolded and still encoded."""
    import re

    block = raw[:header_size].decode("utf-8", "replace")
    m = re.search(r"(?im)^" + re.escape(name) + r"[ \t]*:(.*(?:\r?\n[ \t].*)*)", block)
    return re.sub(r"\r?\n", "", m.group(1)).strip() if m else ""


def _main_text(raw: bytes, bs: dict) -> str:
    view = mv.analyze(raw, bs, prefer_text=True)
    texts = [b.text for b in view.bodies if b.kind == "text"]
    if texts:
        return "\n".join(texts)
    from mailserver.mime.text import html_to_text

    nodes = mv.numbered(bs)
    return "\n".join(html_to_text(mv.decode_part_text(raw, nodes[b.part])) for b in view.bodies)


async def compose_page(ctx, state: ComposeState | None = None, error: str = "", status: int = 200) -> web.Response:
    idents = await ctx.astore.identities(ctx.account_id)
    own = {i.address.lower() for i in idents}
    notice = ""
    if state is None:
        state = ComposeState(from_addr=idents[0].address if idents else ctx.session.address)
        mode = ctx.arg("mode", "new")
        signature = next((i.signature for i in idents if i.address == state.from_addr), "")
        if ctx.arg("draft"):
            await _load_draft(ctx, state, ctx.arg("draft"))
            notice = "Draft saved." if ctx.arg("saved") == "1" else ""
        elif ctx.arg("reply") and mode in MODES:
            await _load_reply(ctx, state, ctx.arg("reply"), mode, own)
            signature = next((i.signature for i in idents if i.address == state.from_addr), "")
            if signature:
                state.body = "\n\n-- \n" + signature + state.body
        else:
            to = ctx.arg("to")
            state.to = to if not any(c in to for c in "\r\n") else ""
            state.subject = ctx.arg("subject")[:cm.MAX_SUBJECT].replace("\r", "").replace("\n", " ")
            if signature:
                state.body = "\n\n-- \n" + signature
    contacts = await ctx.astore.suggest_contacts(ctx.account_id, "", 200)
    mbs = await mailboxes(ctx)
    return ctx.render("compose.html", status=status, state=state, identities=idents, error=error, notice=notice,
                      contacts=contacts, folders=folder_tree(mbs), current_id=None,
                      max_upload=ctx.config.webmail.max_upload, title="Compose")


async def _load_reply(ctx, state: ComposeState, ref: str, mode: str, own: set[str]) -> None:
    box, msg, raw, bs = await _original(ctx, ref)
    env = json.loads(msg.envelope) if msg.envelope else [None] * 10
    text = _main_text(raw, bs)
    from_pairs = address_list(_header(raw, msg.header_size, "From"))
    reply_to = address_list(_header(raw, msg.header_size, "Reply-To")) or from_pairs
    to_pairs = address_list(_header(raw, msg.header_size, "To"))
    cc_pairs = address_list(_header(raw, msg.header_size, "Cc"))
    # Reply from the identity the message was sent to.
    for _n, a in to_pairs + cc_pairs:
        if a.lower() in own:
            state.from_addr = a.lower()
            break
    if box.account_id != ctx.account_id:
        # A reply inside a shared mailbox (or another user's) is from that mailbox's address when the account
        # may send as it or on its behalf (a grant makes it one of the identities).
        owner = await ctx.astore.get_account_by_id(box.account_id)
        if owner is not None and owner.address.lower() in own:
            state.from_addr = owner.address.lower()
    author = _join(from_pairs) or "someone"
    if mode in ("reply", "all"):
        state.reply_ref = f"{box.id}:{msg.uid}"
        state.subject = cm.reply_subject(msg.subject)
        irt, refs = cm.threading_headers(msg.message_id, _header(raw, msg.header_size, "References"),
                                         _header(raw, msg.header_size, "In-Reply-To"))
        state.in_reply_to, state.references = irt, refs
        state.to = _join(reply_to)
        if mode == "all":
            seen = {a.lower() for _n, a in reply_to} | own
            others = []
            for n, a in to_pairs + cc_pairs:
                if a.lower() not in seen:
                    seen.add(a.lower())
                    others.append((n, a))
            state.cc = _join(others)
        state.body = cm.quote_body(text, author, msg.date_sent or msg.internal_date)
    else:
        state.subject = cm.forward_subject(msg.subject)
        if mode == "forward_att":
            name = mv.display_filename((msg.subject or "")[:80]) or "message"  # no bidi controls in a file name
            state.keep.append((f"{box.id}:{msg.uid}:msg", name + ".eml", msg.size))
            state.body = ""
        else:
            headers = [("From", author), ("Date", decode_header_text(env[0] or "")),
                       ("Subject", msg.subject), ("To", _join(to_pairs)), ("Cc", _join(cc_pairs))]
            state.body = cm.forward_body(text, headers)
            view = mv.analyze(raw, bs)
            for a in view.attachments:
                state.keep.append((f"{box.id}:{msg.uid}:{a.part}", a.filename, a.size))


async def _load_draft(ctx, state: ComposeState, ref: str) -> None:
    box, msg, raw, bs = await _original(ctx, ref)
    h = msg.header_size

    def addrs(name):
        return _join(address_list(_header(raw, h, name)))

    from_pairs = address_list(_header(raw, h, "From"))
    if from_pairs:
        state.from_addr = from_pairs[0][1]
    state.to, state.cc, state.bcc = addrs("To"), addrs("Cc"), addrs("Bcc")
    state.subject = msg.subject
    state.in_reply_to = " ".join(mv_ids(_header(raw, h, "In-Reply-To")))
    state.references = " ".join(mv_ids(_header(raw, h, "References")))
    state.reply_ref = _header(raw, h, "X-Webmail-Reply-Ref")
    state.draft_ref = f"{box.id}:{msg.uid}"
    view = mv.analyze(raw, bs, prefer_text=True)
    state.body = "\n".join(b.text for b in view.bodies if b.kind == "text").rstrip("\n")
    for a in view.attachments:
        state.keep.append((f"{box.id}:{msg.uid}:{a.part}", a.filename, a.size))


def mv_ids(text: str) -> list[str]:
    import re

    return re.findall(r"<[^<>\s]+>", text or "")


async def _resolve_keep(ctx, refs: list[str]) -> list[cm.FileAttachment | cm.MessageAttachment]:
    out: list[cm.FileAttachment | cm.MessageAttachment] = []
    for ref in refs[:100]:
        parts = ref.split(":")
        if len(parts) != 3:
            raise web.BadRequest("bad attachment reference")
        box, msg = await open_message(ctx, parts[0], parts[1], Rights.READ)
        raw = await ctx.astore.read_blob(msg.blob_id)
        if parts[2] == "msg":
            out.append(cm.MessageAttachment((mv.display_filename((msg.subject or "")[:80]) or "message") + ".eml",
                                            raw))
            continue
        bs = json.loads(msg.bodystructure) if msg.bodystructure else mv.parse_structure(raw)
        nodes = mv.numbered(bs)
        try:
            node = nodes[int(parts[2])]
        except (ValueError, IndexError):
            raise web.NotFoundError() from None
        if "children" in node:
            raise web.NotFoundError()
        if "body" in node:
            out.append(cm.MessageAttachment(mv.part_filename(node) or "message.eml",
                                            raw[node["body_start"]:node["body_end"]]))
        else:
            out.append(cm.FileAttachment(mv.part_filename(node) or f"part-{parts[2]}", mv.ctype(node),
                                         mv.part_bytes(raw, node)))
    return out


def _state_from_form(form) -> ComposeState:
    return ComposeState(from_addr=form.get("from"), to=form.get("to"), cc=form.get("cc"), bcc=form.get("bcc"),
                        subject=form.get("subject"), body=form.get("body").replace("\r\n", "\n"),
                        in_reply_to=form.get("in_reply_to"), references=form.get("references"),
                        reply_ref=form.get("reply_ref"), draft_ref=form.get("draft_ref"),
                        keep=[(r, r.rsplit(":", 1)[-1], 0) for r in form.getlist("keep")])


async def compose_submit(ctx) -> web.Response:
    form = ctx.form
    action = form.get("action", "send")
    state = _state_from_form(form)
    try:
        idents = await ctx.astore.identities(ctx.account_id)
        ident = next((i for i in idents if i.address.lower() == state.from_addr.lower()), None)
        if ident is None:
            raise cm.ComposeError("you may not send as this address")
        uploads = [cm.FileAttachment(f.filename, f.content_type, f.data) for f in form.files if f.field == "attach"]
        total = sum(len(u.data) for u in uploads)
        if total > ctx.config.webmail.max_upload:
            raise cm.ComposeError(f"attachments are larger than the limit of {ctx.config.webmail.max_upload} bytes")
        kept = await _resolve_keep(ctx, form.getlist("keep"))
        for what in ("in_reply_to", "references"):
            cm.check_header_text(getattr(state, what), what)
        in_reply_to = " ".join(mv_ids(state.in_reply_to)[:1])
        references = " ".join(mv_ids(state.references)[-50:])
        draft = cm.Draft(from_addr=ident.address, from_name=ident.name,
                         to=cm.parse_recipients(state.to, "To"), cc=cm.parse_recipients(state.cc, "Cc"),
                         bcc=cm.parse_recipients(state.bcc, "Bcc"), subject=cm.check_header_text(state.subject,
                                                                                                   "Subject"),
                         body=state.body, in_reply_to=in_reply_to, references=references,
                         attachments=tuple(kept + uploads))
        # Send-on-behalf (storage/sendgrants.py): From is the granted address, Sender and the envelope sender the
        # account's own (RFC 5322 3.6.2); the submission check requires exactly that.
        own_ident = idents[0] if idents else None
        on_behalf = ident.kind == SEND_ON_BEHALF and own_ident is not None
        envelope_from = own_ident.address if on_behalf else ident.address
        extra = (("Sender", format_address(own_ident.name, own_ident.address)),) if on_behalf else ()
        message_id = cm.make_message_id(ident.address)
        mbs = await mailboxes(ctx)
        if action == "save":
            if parse_ref(state.reply_ref):
                extra += (("X-Webmail-Reply-Ref", state.reply_ref),)
            raw = await ctx.app.cpu(cm.build, draft, message_id=message_id, include_bcc=True, extra_headers=extra)
            drafts = special([mb for mb in mbs if mb.account_id == ctx.account_id], "\\Drafts")
            res = await deliver_raw(ctx.services, ctx.account_id, raw, mailbox=drafts.name if drafts else "Drafts",
                                    flags=FLAG_SEEN | FLAG_DRAFT, check_quota=True, producer=DRAFT)
            if not res.ok:
                raise cm.ComposeError(f"the draft could not be saved ({res.reason})")
            await _drop_draft(ctx, state.draft_ref)
            return web.redirect(f"/compose?draft={res.mailbox_id}:{res.uid}&saved=1")
        if not draft.recipients():
            raise cm.ComposeError("add at least one recipient")
        wire = await ctx.app.cpu(cm.build, draft, message_id=message_id, extra_headers=extra)
        copy = await ctx.app.cpu(cm.build, draft, message_id=message_id, include_bcc=True, extra_headers=extra)
        # The copy in Sent counts against the quota like any message: a full mailbox refuses the send before
        # anything leaves, rather than sending and losing the copy (or storing it past the quota).
        sent_account, sent_name = await _sent_target(ctx, mbs, ident)
        used, limit = await ctx.astore.quota(sent_account)
        if limit and used + len(copy) > limit:
            raise cm.ComposeError("your mailbox is full: delete some messages so the copy in Sent fits, then send")
        await cm.send(ctx.services, ctx.account_id, envelope_from, draft.recipients(), wire, client_ip=ctx.client_ip)
    except cm.ComposeError as e:
        return await compose_page(ctx, state, str(e), 400)
    res = await deliver_raw(ctx.services, sent_account, copy, mailbox=sent_name, flags=FLAG_SEEN,
                            producer=SENT_COPY)
    if not res.ok:  # filled up between the check and now: the message went out, only its copy is missing
        log.warn("sent copy for account {a} not stored: {r}", a=sent_account, r=res.reason)
    ref = parse_ref(state.reply_ref)
    if ref is not None:
        try:
            box = await open_mailbox(ctx, ref[0], Rights.WRITE)  # \Answered (RFC 4314 4)
            await ctx.astore.set_flags(box.id, [ref[1]], "add", FLAG_ANSWERED)
        except web.HttpError:
            pass
    await _drop_draft(ctx, state.draft_ref)
    await ctx.astore.record_contacts(ctx.account_id, list(draft.to + draft.cc + draft.bcc))
    await refresh_vacation_contacts(ctx)  # "only reply to my contacts" knows the new ones
    inbox_box = next((m for m in mbs if m.name == "INBOX"), None)
    return web.redirect(f"/m/{inbox_box.id if inbox_box else ''}?notice=sent")


async def _sent_target(ctx, mbs, ident) -> tuple[int, str]:
    """(account, its own name of the mailbox) for the copy of a sent message: sent as a granted address whose
    account (a shared mailbox) has a Sent folder the user may insert into (RFC 4314 "i"), that one; else the
    user's own Sent."""
    if ident.kind != OWN:
        acct = await ctx.astore.get_account(ident.address)
        if acct is not None and acct.id != ctx.account_id:
            for mb in mbs:
                if mb.account_id == acct.id and mb.special_use == "\\Sent" and Rights.INSERT in rights(ctx, mb):
                    return acct.id, mb.stored_name or mb.name
    sent = special([mb for mb in mbs if mb.account_id == ctx.account_id], "\\Sent")
    return ctx.account_id, sent.name if sent else "Sent"


async def _drop_draft(ctx, draft_ref: str) -> None:
    ref = parse_ref(draft_ref)
    if ref is None:
        return
    try:
        box = await open_mailbox(ctx, ref[0], Rights.DELETE_MESSAGES | Rights.EXPUNGE)
    except web.HttpError:
        return
    if box.special_use == "\\Drafts":
        await ctx.astore.delete_messages(box.id, [ref[1]])


async def contacts_json(ctx) -> web.Response:
    rows = await ctx.astore.suggest_contacts(ctx.account_id, ctx.arg("q"), 20)
    data = [{"name": n, "address": a, "label": format_address(n, a)} for n, a in rows]
    return web.Response(200, json.dumps(data).encode(), "application/json")
