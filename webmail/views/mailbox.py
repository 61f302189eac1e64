"""Folder tree, message lists (one page at a time: never a whole mailbox), search and actions on many messages."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from mailserver.access import Rights, flag_rights
from storage.models import FLAG_DELETED, FLAG_FLAGGED, FLAG_SEEN
from storage.store import StoreError
from webmail import queries, web
from webmail.views.common import (
    authorize,
    create_target,
    folder_tree,
    inbox,
    mailboxes,
    open_mailbox,
    open_mailbox_listed,
    special,
)

SORTS = ("date", "from", "subject", "size")
#: Most messages one bulk action may name.
MAX_BULK = 5000
#: RFC 4314 4: the rights each bulk action needs on the mailbox it acts on; moving out is MOVE ("t" and "e"), and the
#: target needs "i".
_MOVE_OUT = Rights.DELETE_MESSAGES | Rights.EXPUNGE
ACTION_RIGHTS = {
    "read": flag_rights(FLAG_SEEN), "unread": flag_rights(FLAG_SEEN),
    "flag": flag_rights(FLAG_FLAGGED), "unflag": flag_rights(FLAG_FLAGGED),
    "delete": _MOVE_OUT, "move": _MOVE_OUT, "archive": _MOVE_OUT,
    "junk": Rights.WRITE | _MOVE_OUT, "notjunk": Rights.WRITE | _MOVE_OUT,
}
ACTIONS = tuple(ACTION_RIGHTS)


def _sidebar(mbs, current_id: int | None):
    return {"folders": folder_tree(mbs), "current_id": current_id}


async def message_list(ctx, mb: str) -> web.Response:
    box, mbs = await open_mailbox_listed(ctx, mb, Rights.READ)
    sort = ctx.arg("sort", "date")
    if sort not in SORTS:
        sort = "date"
    descending = ctx.arg("dir", "desc") != "asc"
    size = ctx.config.webmail.page_size or 50
    page = ctx.int_arg("page", 1, 1, 1_000_000)
    # reader: in a shared mailbox \Seen is the reader's own (storage/shared.py); the mailbox says whether it is one
    total, msgs = await ctx.astore.page_messages(box.id, offset=(page - 1) * size, limit=size, order=sort,
                                                 descending=descending,
                                                 reader=ctx.account_id if box.seen_per_reader else 0)
    pages = max(1, (total + size - 1) // size)
    tree = folder_tree(mbs)

    def url(**kw):
        q = {"sort": sort, "dir": "desc" if descending else "asc", "page": page}
        q.update(kw)
        return f"/m/{box.id}?" + urlencode(q)

    return ctx.render("list.html", mailbox=box, messages=msgs, total=total, page=page, pages=pages, sort=sort,
                      descending=descending, url=url, title=box.name, is_search=False,
                      is_trash=box.special_use in ("\\Trash", "\\Junk"), is_drafts=box.special_use == "\\Drafts",
                      move_targets=[r for r in tree if r.mailbox.id != box.id],
                      flags={"seen": FLAG_SEEN, "flagged": FLAG_FLAGGED, "deleted": FLAG_DELETED},
                      request_notice={"sent": "Message sent."}.get(ctx.arg("notice"), ""),
                      folders=tree, current_id=box.id)


async def search(ctx) -> web.Response:
    text = ctx.arg("q").strip()[:queries.MAX_QUERY]
    field = ctx.arg("in", "all")
    if field not in queries.SEARCH_FIELDS:
        field = "all"
    scope = ctx.arg("mb", "")
    box = None
    if scope and scope != "all":
        box, mbs = await open_mailbox_listed(ctx, scope, Rights.READ)
    else:
        mbs = await mailboxes(ctx)
    size = ctx.config.webmail.page_size or 50
    page = ctx.int_arg("page", 1, 1, 10_000)
    result = queries.SearchResult([], False)
    if text:
        result = await ctx.astore.search_messages(ctx.account_id, [box.id] if box else None, text, field,
                                                  (page - 1) * size, size, body_text=queries.body_text)
    names = {m.id: m.name for m in mbs}
    tree = folder_tree(mbs)

    def url(**kw):
        q = {"q": text, "in": field, "mb": box.id if box else "all", "page": page}
        q.update(kw)
        return "/search?" + urlencode(q)

    return ctx.render("list.html", mailbox=box, messages=result.messages, total=None, page=page,
                      pages=page + (1 if result.more else 0), sort="date", descending=True, url=url,
                      title=f"Search: {text}", is_search=True, query=text, search_field=field,
                      mailbox_names=names, scanned_all=result.scanned_all, is_trash=False, is_drafts=False,
                      move_targets=tree, flags={"seen": FLAG_SEEN, "flagged": FLAG_FLAGGED, "deleted": FLAG_DELETED},
                      folders=tree, current_id=box.id if box else None)


async def bulk_action(ctx, mb: str) -> web.Response:
    """Move, delete, mark read/unread, flag, junk/not junk many messages of one mailbox."""
    action = ctx.form.get("action")
    box, mbs = await open_mailbox_listed(ctx, mb, ACTION_RIGHTS.get(action, Rights.READ))
    if action not in ACTIONS:
        raise web.BadRequest("unknown action")
    uids = []
    for v in ctx.form.getlist("uid")[:MAX_BULK]:
        try:
            uids.append(int(v))
        except ValueError:
            raise web.BadRequest("bad message id") from None
    back = web.local_path(ctx.form.get("back") or "", f"/m/{box.id}")
    if not uids:
        return web.redirect(back)
    a = ctx.astore

    def target(mailbox):  # a special folder the messages go to: "i" (RFC 4314 4)
        return authorize(ctx, mailbox, Rights.INSERT) if mailbox is not None else None

    try:
        if action in ("read", "unread"):
            # reader: in a shared mailbox \Seen is the reader's own (storage/shared.py)
            await a.set_flags(box.id, uids, "add" if action == "read" else "remove", FLAG_SEEN,
                              reader=ctx.account_id)
        elif action in ("flag", "unflag"):
            await a.set_flags(box.id, uids, "add" if action == "flag" else "remove", FLAG_FLAGGED)
        elif action == "delete":
            trash = target(special(mbs, "\\Trash"))
            if trash is None or box.special_use in ("\\Trash", "\\Junk") or box.id == trash.id:
                await a.delete_messages(box.id, uids)
            else:
                await a.copy(box.id, uids, trash.id, move=True)
        elif action == "move":
            dest = await open_mailbox(ctx, ctx.form.get("to"), Rights.INSERT)
            if dest.id != box.id:
                await a.copy(box.id, uids, dest.id, move=True)
        elif action == "archive":
            dest = target(special(mbs, "\\Archive"))
            if dest is None:
                raise web.BadRequest("no Archive folder")
            if dest.id != box.id:
                await a.copy(box.id, uids, dest.id, move=True)
        elif action == "junk":
            junk = target(special(mbs, "\\Junk"))
            await a.set_flags(box.id, uids, "add", 0, ["$Junk"])
            await a.set_flags(box.id, uids, "remove", 0, ["$NotJunk"])
            if junk is not None and junk.id != box.id:
                await a.copy(box.id, uids, junk.id, move=True)
        elif action == "notjunk":
            dest = target(inbox(mbs))
            await a.set_flags(box.id, uids, "add", 0, ["$NotJunk"])
            await a.set_flags(box.id, uids, "remove", 0, ["$Junk"])
            if dest is not None and dest.id != box.id:
                await a.copy(box.id, uids, dest.id, move=True)
    except StoreError as e:
        raise web.HttpError(409, str(e)) from None
    if ctx.header("accept").startswith("application/json"):
        return web.Response(200, b'{"ok":true}', "application/json")
    return web.redirect(back)


# --------------------------------------------------------------------------------------------- folders


async def folders_page(ctx, error: str = "", status: int = 200) -> web.Response:
    mbs = await mailboxes(ctx)
    return ctx.render("folders.html", status=status, error=error, title="Folders", **_sidebar(mbs, None))


async def folder_action(ctx) -> web.Response:
    """create / rename / delete a folder; empty Trash or Junk."""
    op = ctx.form.get("op")
    a = ctx.astore
    try:
        if op == "create":
            name = ctx.form.get("name").strip()
            parent = ctx.form.get("parent").strip()
            if parent:  # RFC 4314 4: CREATE needs "k" on the parent
                pbox = await open_mailbox(ctx, parent, Rights.CREATE)
                name, owner = f"{pbox.name}/{name}", pbox.account_id
            else:
                owner = await create_target(ctx, name)
            await a.create_mailbox(owner, name)
        elif op == "rename":  # "x" on the mailbox, "k" where the new name goes
            box = await open_mailbox(ctx, ctx.form.get("mb"), Rights.DELETE_MAILBOX)
            new = ctx.form.get("name").strip()
            parent = box.name.rsplit("/", 1)[0] + "/" if "/" in box.name else ""
            if "/" not in new:
                new = parent + new
            if await create_target(ctx, new) != box.account_id:
                raise web.NotFoundError()
            await a.rename_mailbox(box.account_id, box.name, new)
        elif op == "delete":
            box = await open_mailbox(ctx, ctx.form.get("mb"), Rights.DELETE_MAILBOX)
            if box.special_use or box.name == "INBOX":
                raise web.BadRequest("special folders cannot be deleted")
            await a.delete_mailbox(box.account_id, box.name)
        elif op == "empty":
            box = await open_mailbox(ctx, ctx.form.get("mb"), Rights.DELETE_MESSAGES | Rights.EXPUNGE)
            if box.special_use not in ("\\Trash", "\\Junk"):
                raise web.BadRequest("only Trash and Junk can be emptied")
            metas = await a.list_messages(box.id)
            if metas:
                await a.delete_messages(box.id, [m.uid for m in metas])
            return web.redirect(f"/m/{box.id}")
        else:
            raise web.BadRequest("unknown folder operation")
    except StoreError as e:
        return await folders_page(ctx, str(e), 409)
    return web.redirect("/folders")


async def folders_json(ctx) -> web.Response:
    mbs = await mailboxes(ctx)
    data = [{"id": m.id, "name": m.name, "unseen": m.unseen_count, "total": m.message_count,
             "special_use": m.special_use} for m in mbs]
    return web.Response(200, json.dumps(data).encode(), "application/json")
