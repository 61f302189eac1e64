"""Sign-in and sign-out.

Sign-in uses the shared authenticator (same throttling as IMAP/SMTP/POP3).  A login form carries a pre-session
token that must match a cookie set with the form (login CSRF); a successful sign-in always creates a new session
id, whatever cookie the browser brought (session fixation), and sign-out deletes the session row.
"""

from __future__ import annotations

import secrets

from mailserver.login import classify
from webmail import web
from webmail.sessions import csrf_equal
from webmail.views.common import inbox, mailboxes
from webmail.web import PRELOGIN_COOKIE

#: Longest user name and password accepted by the form (the authenticator has its own limits as well).
MAX_LOGIN_FIELD = 1024


def safe_next(target: str) -> str:
    """Where to go after signing in: a local path (web.local_path), never back to the login or logout page."""
    target = web.local_path(target)
    return "/" if target.startswith(("/login", "/logout")) else target


async def root(ctx) -> web.Response:
    if ctx.session is None:
        return web.redirect("/login")
    mb = inbox(await mailboxes(ctx))
    return web.redirect(f"/m/{mb.id}" if mb else "/folders")


async def login_page(ctx, error: str = "", status: int = 200, username: str = "") -> web.Response:
    if ctx.session is not None and not error:
        return web.redirect(safe_next(ctx.arg("next", "/")))
    pre = (ctx.request.received_cookies.get(PRELOGIN_COOKIE.encode()) or b"").decode("ascii", "replace")
    if not pre or len(pre) > 64 or not pre.replace("-", "").replace("_", "").isalnum():
        pre = secrets.token_urlsafe(24)
    resp = ctx.render("login.html", status=status, pre=pre, error=error, username=username,
                      next=safe_next(ctx.arg("next", "/") or ctx.form.get("next", "/")))
    resp.cookies.append(web.set_cookie(PRELOGIN_COOKIE, pre, secure=ctx.app.secure, max_age=3600,
                                       same_site="Strict"))
    return resp


async def login(ctx) -> web.Response:
    form = ctx.form
    pre_cookie = (ctx.request.received_cookies.get(PRELOGIN_COOKIE.encode()) or b"").decode("ascii", "replace")
    if not csrf_equal(pre_cookie, form.get("_pre")):
        raise web.Forbidden("The sign-in form has expired. Please try again.")
    username = form.get("username").strip()
    password = form.get("password")
    if not username or not password or len(username) > MAX_LOGIN_FIELD or len(password) > MAX_LOGIN_FIELD:
        return await login_page(ctx, "Enter your address and password.", 400, username[:320])
    result = await ctx.services.auth.authenticate(username, password, ctx.client_ip)
    if ctx.services.auth.observer is not None:
        ctx.services.auth.observer("webmail", classify(result), result.reason)
    if not result.ok:
        msg = {"throttled": "Too many failed attempts. Please wait a while and try again.",
               "disabled": "This account is disabled."}.get(result.reason, "Wrong address or password.")
        return await login_page(ctx, msg, 429 if result.reason == "throttled" else 403, username[:320])
    # A new id at every sign-in; an old session presented with this request is ended.
    if ctx.session is not None:
        await ctx.app.write(ctx.app.sessions.delete, ctx.session.key)
    token, _info = await ctx.app.write(ctx.app.sessions.create, result.account_id, ctx.client_ip,
                                       ctx.header("user-agent"))
    resp = web.redirect(safe_next(form.get("next", "/")))
    resp.cookies.append(web.set_cookie(ctx.app.cookie_name, token, secure=ctx.app.secure))
    resp.cookies.append(web.set_cookie(PRELOGIN_COOKIE, "", secure=ctx.app.secure, max_age=0, same_site="Strict"))
    return resp


async def logout(ctx) -> web.Response:
    await ctx.app.write(ctx.app.sessions.delete, ctx.session.key)
    resp = web.redirect("/login")
    resp.cookies.append(web.set_cookie(ctx.app.cookie_name, "", secure=ctx.app.secure, max_age=0))
    resp.headers.append(("Clear-Site-Data", '"cache", "storage"'))
    return resp
