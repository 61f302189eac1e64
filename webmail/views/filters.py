"""Filters, vacation and forwarding (``/filters``): the account's active Sieve script, edited as rules or as raw Sieve.

The page shows the active script through :func:`webmail.filters.parse`: a script the editor wrote (and nobody
changed) opens in the rule editor; any other script opens in the raw editor, and the rule editor is not offered for
it, so it is never rewritten.  Saving compiles first (with the account's scripts for ``include``, in the cpu pool)
and refuses a broken script with its line and column; what is saved becomes the active script (named
:data:`SCRIPT_NAME` when none was active) and the delivery filter's cache of the account is dropped, so the next
message follows it.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.logger import Logger

from mailserver.delivery.sieve_stage import compile_error_text, compile_for_account
from mailserver.sieve import SieveCompileError
from mailserver.threads import run_in
from storage.errors import StoreError
from webmail import filters as F
from webmail import web
from webmail.views.common import folder_tree, mailboxes

log = Logger()

SCRIPT_NAME = "webmail"
#: Rule blocks, conditions and actions read from one form (a form has at most a few hundred fields).
MAX_RULES = 50
MAX_ROWS = 10
MAX_CONTACTS = 500
MAX_TEXT = 10_000


async def _active(ctx):
    return await ctx.astore.active_sieve_script(ctx.account_id)


async def filters_page(ctx, *, error: str = "", error_line: int = 0, raw_text: str | None = None,
                       draft: F.Filters | None = None, status: int = 200) -> web.Response:
    active = await _active(ctx)
    content = active.content if active else F.render(F.Filters())
    parsed = F.parse(content)
    mode = ctx.arg("mode") or ("rules" if parsed is not None else "raw")
    if parsed is None or raw_text is not None:
        mode = "raw"
    mbs = await mailboxes(ctx)
    notice = {"saved": "Filters saved."}.get(ctx.arg("notice"), "")
    shown = draft or parsed or F.Filters()
    raw = raw_text if raw_text is not None else content
    return ctx.render("filters.html", status=status, mode=mode, editable=parsed is not None, filters=shown,
                      rules=list(shown.rules) + [F.Rule("")], raw=raw, raw_lines=raw.split("\n"),
                      error=error, error_line=error_line, notice=notice, script_name=active.name if active else "",
                      folders=folder_tree(mbs), folder_names=sorted(m.name for m in mbs), current_id=None,
                      fields=F.FIELDS, text_ops=F.TEXT_OPS, size_ops=F.SIZE_OPS, actions=F.ACTIONS,
                      max_rows=MAX_ROWS, title="Filters")


def _size(value: str) -> str:
    v = value.strip().upper().replace(" ", "")
    mult = 1
    if v.endswith(("K", "M")):
        mult = 1024 if v[-1] == "K" else 1024 * 1024
        v = v[:-1]
    if not v.isdigit():
        raise F.FilterError("a size is a number, with K or M")
    return str(int(v) * mult)


def _limited(value: str, what: str) -> str:
    if len(value) > MAX_TEXT:
        raise F.FilterError(f"{what} is too long")
    return value.replace("\r\n", "\n").replace("\0", "")


def rules_from_form(form: web.Form) -> tuple[F.Rule, ...]:
    rules = []
    for i in range(MAX_RULES + 1):
        p = f"r{i}_"
        name = form.get(p + "name").strip()
        if form.get(p + "delete") or not name:
            continue
        conditions = []
        for j in range(MAX_ROWS):
            q = f"{p}c{j}_"
            fld, value = form.get(q + "field"), form.get(q + "value")
            if not fld or not value.strip():
                continue
            op = form.get(q + "op")
            if fld == "size":
                op = op if op in F.SIZE_OPS else "over"
                value = _size(value)
            conditions.append(F.Condition(fld, op, _limited(value, "a value"), form.get(q + "header").strip()))
        actions = []
        for j in range(MAX_ROWS):
            q = f"{p}a{j}_"
            kind = form.get(q + "kind")
            if kind:
                actions.append(F.Action(kind, _limited(form.get(q + "arg"), "a value")))
        rules.append(F.check_rule(F.Rule(name, tuple(conditions), tuple(actions), form.get(p + "match"))))
    return tuple(rules)


async def _contacts(ctx) -> tuple[str, ...]:
    people = await ctx.astore.suggest_contacts(ctx.account_id, "", MAX_CONTACTS)
    return tuple(sorted({address.lower() for _name, address in people if address}))  # (name, address) pairs


async def filters_from_form(ctx) -> F.Filters:
    form = ctx.form
    contacts_only = bool(form.get("v_contacts"))
    vacation = F.check_vacation(F.Vacation(
        enabled=bool(form.get("v_enabled")), subject=_limited(form.get("v_subject").strip(), "the subject"),
        text=_limited(form.get("v_text"), "the text"), start=form.get("v_start").strip(),
        end=form.get("v_end").strip(), contacts_only=contacts_only,
        contacts=await _contacts(ctx) if contacts_only else ()))
    addresses = tuple(a.strip() for a in form.get("fwd_addresses").replace(",", "\n").split("\n") if a.strip())
    for a in addresses:
        if "@" not in a or any(ch.isspace() for ch in a) or len(a) > 320:
            raise F.FilterError(f"forward to an address, not {a!r}")
    return F.Filters(rules_from_form(form), vacation, F.Forwarding(addresses, keep=bool(form.get("fwd_keep"))))


async def _save(ctx, text: str) -> None:
    """Compile, store as the active script, drop the delivery filter's cache: SieveCompileError if it cannot run."""
    services = ctx.services
    active = await _active(ctx)
    name = active.name if active else SCRIPT_NAME
    await run_in(services.reactor, services.pools.cpu, compile_for_account, services.store,
                 services.config.sieve, ctx.account_id, name, text)
    cfg = services.config.sieve
    await ctx.astore.put_sieve_script(ctx.account_id, name, text, max_scripts=cfg.max_scripts,
                                      max_storage=cfg.max_storage)
    if active is None:
        await ctx.astore.activate_sieve_script(ctx.account_id, name)
    flt = services.pipeline.filter
    if flt is not None:
        flt.invalidate(ctx.account_id)


async def refresh_vacation_contacts(ctx) -> bool:
    """"Only reply to my contacts" compares the sender with the contacts written into the script; after the webmail
    recorded new contacts (a message sent), a script the editor wrote is written again with them (a hand-written
    script is never touched).  True when it was rewritten."""
    active = await _active(ctx)
    parsed = F.parse(active.content) if active is not None else None
    if parsed is None or not parsed.vacation.contacts_only:
        return False
    contacts = await _contacts(ctx)
    if contacts == parsed.vacation.contacts:
        return False
    try:
        await _save(ctx, F.render(replace(parsed, vacation=replace(parsed.vacation, contacts=contacts))))
    except (SieveCompileError, StoreError) as e:  # e.g. the script quota: the message went out all the same
        log.warn("vacation contacts of account {a} not refreshed: {e}", a=ctx.account_id, e=str(e))
        return False
    return True


async def filters_submit(ctx) -> web.Response:
    op = ctx.form.get("op")
    if op == "rules":
        active = await _active(ctx)
        if active is not None and F.parse(active.content) is None:
            # The active script was written by hand: the rule editor never overwrites it.
            return await filters_page(ctx, error="This script was written by hand: edit it as raw Sieve.",
                                      status=409)
        try:
            filters = await filters_from_form(ctx)
        except F.FilterError as e:
            return await filters_page(ctx, error=str(e), status=400)
        text = F.render(filters)
        try:
            await _save(ctx, text)
        except SieveCompileError as e:  # e.g. a folder name the editor wrote is refused by a limit
            return await filters_page(ctx, error=compile_error_text(e), draft=filters, status=400)
        except StoreError as e:
            return await filters_page(ctx, error=str(e), draft=filters, status=400)
        return web.redirect("/filters?notice=saved")
    if op == "raw":
        text = ctx.form.get("script")
        if len(text.encode("utf-8")) > ctx.config.sieve.max_script_size:
            return await filters_page(ctx, error="The script is too large.", raw_text=text, status=400)
        active = await _active(ctx)
        # Browsers send a textarea's line ends as CRLF: an unchanged script is kept exactly as it was stored.
        if active is not None and text.replace("\r\n", "\n") == active.content.replace("\r\n", "\n"):
            return web.redirect("/filters?notice=saved&mode=raw")
        text = text.replace("\r\n", "\n")
        try:
            await _save(ctx, text)
        except SieveCompileError as e:
            return await filters_page(ctx, error=compile_error_text(e), error_line=e.line, raw_text=text,
                                      status=400)
        except StoreError as e:
            return await filters_page(ctx, error=str(e), raw_text=text, status=400)
        return web.redirect("/filters?notice=saved&mode=raw")
    raise web.BadRequest("unknown filters operation")
