"""Live updates: the account's change events (store ChangeHub) pushed as Server-Sent Events.

Each event is ``event: change`` with JSON ``{"kind", "mailbox", "uid"}`` (no message content); the page reloads
the parts it shows.  A comment line every :data:`KEEPALIVE` seconds keeps proxies from closing the stream.

Mailboxes of other accounts (``Shared/...``, ``Other Users/...``) that the account may read when the stream opens
are followed too, through the hub's per-mailbox listeners; before each of their batches is written the reader's
rights are read again, so a share taken away stops its events (a share given later shows from the next stream:
the browser reconnects on its next page load).
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.access import Rights
from webmail import web
from webmail.views.common import access, mailboxes, principal

KEEPALIVE = 25.0
#: Most open event streams per account (older tabs are not closed; new ones are refused).
MAX_STREAMS_PER_ACCOUNT = 20
#: Most mailboxes of other accounts one stream follows.
MAX_SHARED_FOLLOWED = 200

log = Logger()


async def event_stream(ctx) -> web.Stream:
    hub = ctx.services.hub
    account_id = ctx.account_id
    reactor = ctx.services.reactor
    counts = ctx.services.state.webmail_streams
    if counts.get(account_id, 0) >= MAX_STREAMS_PER_ACCOUNT:
        raise web.HttpError(429, "Too many open windows")
    who = principal(ctx)
    check = access(ctx)
    shared = [m.id for m in await mailboxes(ctx)
              if m.account_id != account_id and Rights.READ in check.rights(who, m)][:MAX_SHARED_FOLLOWED]

    def start(write):
        counts[account_id] = counts.get(account_id, 0) + 1

        def on_changes(changes) -> None:
            batch = [{"kind": c.kind, "mailbox": c.mailbox_id, "uid": c.uid} for c in changes[:200]]
            write(b"event: change\ndata: " + json.dumps(batch).encode() + b"\n\n")

        unsubscribe = hub.subscribe(account_id, on_changes)
        followed: dict[int, object] = {}

        async def still_readable(mailbox_id: int) -> bool:
            mailbox = await ctx.astore.mailbox_for_reader(mailbox_id, account_id)
            return mailbox is not None and Rights.READ in check.rights(who, mailbox)

        def on_shared(mailbox_id: int):
            def listener(changes) -> None:
                def written(ok) -> None:
                    if ok and mailbox_id in followed:
                        on_changes(changes)
                    elif not ok and mailbox_id in followed:
                        followed.pop(mailbox_id)()

                d = defer.ensureDeferred(still_readable(mailbox_id))
                d.addCallback(written)
                # The stream stays open; the next batch asks again.
                d.addErrback(lambda f: log.failure("shared mailbox check for the event stream", f))
            return listener

        for mailbox_id in shared:
            followed[mailbox_id] = hub.subscribe_mailbox(mailbox_id, on_shared(mailbox_id))
        timer = []

        def keepalive():
            write(b": keepalive\n\n")
            timer[:] = [reactor.callLater(KEEPALIVE, keepalive)]

        timer.append(reactor.callLater(KEEPALIVE, keepalive))
        write(b"retry: 3000\n\n")

        def stop():
            unsubscribe()
            for off in list(followed.values()):
                off()
            followed.clear()
            counts[account_id] = max(0, counts.get(account_id, 1) - 1)
            for t in timer:
                if t.active():
                    t.cancel()

        return stop

    return web.Stream(start)
