"""Settings: password (current one required), display name, signature, identities (per sending address)."""

from __future__ import annotations

from webmail import compose as cm
from webmail import web
from webmail.views.common import folder_tree, mailboxes

#: Shortest new password accepted.
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_SIGNATURE = 10_000
MAX_NAME = 200


async def settings_page(ctx, error: str = "", notice: str = "", status: int = 200) -> web.Response:
    acct = await ctx.astore.get_account_by_id(ctx.account_id)
    idents = await ctx.astore.identities(ctx.account_id)
    mbs = await mailboxes(ctx)
    notice = notice or {"saved": "Settings saved.", "password": "Password changed."}.get(ctx.arg("notice"), "")
    return ctx.render("settings.html", status=status, account=acct, identities=idents, error=error, notice=notice,
                      folders=folder_tree(mbs), current_id=None, title="Settings")


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
