"""Settings: password (current one required), display name, signature, identities (per sending address), the
account's own allow and block lists of senders and domains (``Store.sender_rules``, honoured by the spam policy),
and its quarantine digest (on/off, hour)."""

from __future__ import annotations

from twisted.logger import Logger

from mailserver.access import Rights
from storage.errors import Invalid, NotFound
from storage.quarantine import ALLOW, BLOCK, MAX_PATTERN, check_sender_pattern
from webmail import compose as cm
from webmail import web
from webmail.views.common import folder_tree, mailboxes, open_mailbox, rights

#: The delegation levels the settings page offers (RFC 4314 letters); "remove" deletes the entry.
SHARE_LEVELS = {"read": "lrs", "write": "lrswipkxte"}
MAX_SHARE_ADDRESS = 320

#: Shortest new password accepted.
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_SIGNATURE = 10_000
MAX_NAME = 200

log = Logger()


async def settings_page(ctx, error: str = "", notice: str = "", status: int = 200) -> web.Response:
    acct = await ctx.astore.get_account_by_id(ctx.account_id)
    idents = await ctx.astore.identities(ctx.account_id)
    mbs = await mailboxes(ctx)
    notice = notice or {"saved": "Settings saved.", "password": "Password changed.", "rule": "Sender rules saved.",
                        "digest": "Digest setting saved.",
                        "share": "Sharing saved."}.get(ctx.arg("notice"), "")
    rules = await ctx.astore.sender_rules(ctx.account_id)
    setting = (await ctx.astore.digest_settings([ctx.account_id]))[ctx.account_id]
    default_on, default_hour = ctx.config.quarantine.digest_for(acct.address.rpartition("@")[2])
    shareable = [mb for mb in mbs if Rights.ADMIN in rights(ctx, mb)]  # own folders, and those with "a"
    shares = [(mb, ident, letters) for mb in shareable for ident, letters in await ctx.astore.get_acl(mb.id)]
    return ctx.render("settings.html", status=status, account=acct, identities=idents, error=error, notice=notice,
                      rules=sorted(rules.items(), key=lambda kv: (kv[0].lstrip("@").rpartition("@")[2], kv[0])),
                      digest=setting, digest_default=(default_on, default_hour), folders=folder_tree(mbs),
                      shareable=shareable, shares=shares, share_levels=SHARE_LEVELS,
                      current_id=None, title="Settings")


def _text(value: str, limit: int, what: str) -> str:
    if what != "signature":
        # A name becomes a From: display name: whatever the header writer refuses (VT, U+2028, ...) is refused
        # here, not at every later send.
        try:
            cm.check_header_text(value, what)
        except cm.ComposeError as e:
            raise web.BadRequest(str(e)) from None
    if len(value) > limit:
        raise web.BadRequest(f"{what} is too long")
    return value.replace("\0", "")


async def settings_submit(ctx) -> web.Response:
    form = ctx.form
    op = form.get("op")
    if op == "profile":
        name = _text(form.get("display_name").strip(), MAX_NAME, "display name")
        signature = _text(form.get("signature").replace("\r\n", "\n"), MAX_SIGNATURE, "signature")
        await ctx.astore.update_account(ctx.account_id, display_name=name, signature=signature)
        acct = await ctx.astore.get_account_by_id(ctx.account_id)
        await ctx.astore.save_identity(ctx.account_id, acct.address, name, signature)
        return web.redirect("/settings?notice=saved")
    if op == "identity":
        address = form.get("address").strip().lower()
        allowed = {i.address for i in await ctx.astore.identities(ctx.account_id)}  # own, aliases, grants
        if address not in allowed:
            raise web.NotFoundError()
        name = _text(form.get("name").strip(), MAX_NAME, "name")
        signature = _text(form.get("signature").replace("\r\n", "\n"), MAX_SIGNATURE, "signature")
        await ctx.astore.save_identity(ctx.account_id, address, name, signature)
        return web.redirect("/settings?notice=saved")
    if op == "rule_add":
        rule = form.get("rule")
        if rule not in (ALLOW, BLOCK):
            raise web.BadRequest("unknown sender rule")
        try:
            pattern = check_sender_pattern(form.get("pattern"))
        except Invalid as e:
            return await settings_page(ctx, str(e), status=400)
        await ctx.astore.set_sender_rule(ctx.account_id, pattern, rule)
        log.info("sender rule {rule} <{pattern}> for {acct} by webmail:{acct}", rule=rule, pattern=pattern,
                 acct=ctx.session.address)
        return web.redirect("/settings?notice=rule#sender-rules")
    if op == "rule_remove":
        pattern = form.get("pattern").strip().lower()[:MAX_PATTERN]
        await ctx.astore.set_sender_rule(ctx.account_id, pattern, None)
        log.info("sender rule removed <{pattern}> for {acct} by webmail:{acct}", pattern=pattern,
                 acct=ctx.session.address)
        return web.redirect("/settings?notice=rule#sender-rules")
    if op == "digest":
        enabled = {"": None, "on": True, "off": False}.get(form.get("enabled"), "bad")
        hour_text = form.get("hour")
        if enabled == "bad" or not (hour_text == "" or (hour_text.isdigit() and 0 <= int(hour_text) <= 23)):
            raise web.BadRequest("bad digest setting")
        await ctx.astore.set_digest_setting(ctx.account_id, enabled, int(hour_text) if hour_text else None)
        return web.redirect("/settings?notice=digest#digest")
    if op in ("share", "unshare"):
        return await _share(ctx, op)
    if op == "password":
        current, new, again = form.get("current"), form.get("new"), form.get("again")
        if new != again:
            return await settings_page(ctx, "The new passwords do not match.", status=400)
        if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
            return await settings_page(ctx, f"Use at least {MIN_PASSWORD} characters.", status=400)
        result = await ctx.services.auth.authenticate(ctx.session.address, current, ctx.client_ip)
        if not result.ok or result.account_id != ctx.account_id:
            return await settings_page(ctx, "The current password is wrong.", status=403)
        from mailserver.auth import PasswordHasher

        hasher = PasswordHasher(ctx.config.auth.default_scheme)
        from mailserver.threads import run_in

        new_hash = await run_in(ctx.services.reactor, ctx.services.pools.hash, hasher.hash, new)
        await ctx.astore.update_account(ctx.account_id, password_hash=new_hash)
        ctx.services.auth.forget(ctx.session.address)
        # Every other signed-in browser of this account is signed out.
        await ctx.app.write(ctx.app.sessions.delete_others, ctx.account_id, ctx.session.key)
        return web.redirect("/settings?notice=password")
    raise web.BadRequest("unknown settings operation")


async def _share(ctx, op: str) -> web.Response:
    """Delegation: give another account read-only or read-write access to a folder, or take it away.  The folder
    goes through the one access check with RFC 4314 "a" (its owner has it; a folder the account may not administer
    is the 404 of a missing one); the entry is written by the store's ACL functions, as IMAP SETACL does."""
    form = ctx.form
    box = await open_mailbox(ctx, form.get("mb"), Rights.ADMIN)
    who = form.get("who").strip().lower()
    if not who or len(who) > MAX_SHARE_ADDRESS or who == "anyone" or who.startswith(("$", "-")):
        return await settings_page(ctx, "Share with an account's address.", status=400)
    if who == ctx.session.address.lower() and box.account_id == ctx.account_id:
        return await settings_page(ctx, "You own this folder already.", status=400)
    if op == "unshare":
        await ctx.astore.delete_acl(box.id, who)
        log.info("share removed {mb} for <{who}> by webmail:{acct}", mb=box.id, who=who, acct=ctx.session.address)
        return web.redirect("/settings?notice=share#sharing")
    letters = SHARE_LEVELS.get(form.get("level"))
    if letters is None:
        raise web.BadRequest("unknown share level")
    try:
        # existing=False, as IMAP: the form does not tell which addresses have accounts.
        await ctx.astore.set_acl(box.id, who, letters, existing=False)
    except (Invalid, NotFound) as e:
        return await settings_page(ctx, str(e), status=400)
    log.info("share {mb} {letters} for <{who}> by webmail:{acct}", mb=box.id, letters=letters, who=who,
             acct=ctx.session.address)
    return web.redirect("/settings?notice=share#sharing")
