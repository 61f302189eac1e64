"""Live updates: the account's change events (store ChangeHub) pushed as Server-Sent Events.

Each event is ``event: change`` with JSON ``{"kind", "mailbox", "uid"}`` (no message content); the page reloads
the parts it shows.  A comment line every :data:`KEEPALIVE` seconds keeps proxies from closing the stream.
"""

from __future__ import annotations

import json

from webmail import web

KEEPALIVE = 25.0
#: Most open event streams per account (older tabs are not closed; new ones are refused).
MAX_STREAMS_PER_ACCOUNT = 20


async def event_stream(ctx) -> web.Stream:
    hub = ctx.services.hub
    account_id = ctx.account_id
    reactor = ctx.services.reactor
    counts = ctx.services.state.webmail_streams
    if counts.get(account_id, 0) >= MAX_STREAMS_PER_ACCOUNT:
        raise web.HttpError(429, "Too many open windows")

    def start(write):
        counts[account_id] = counts.get(account_id, 0) + 1

        def on_changes(changes) -> None:
            batch = [{"kind": c.kind, "mailbox": c.mailbox_id, "uid": c.uid} for c in changes[:200]]
            write(b"event: change\ndata: " + json.dumps(batch).encode() + b"\n\n")

        unsubscribe = hub.subscribe(account_id, on_changes)
        timer = []

        def keepalive():
            write(b": keepalive\n\n")
            timer[:] = [reactor.callLater(KEEPALIVE, keepalive)]

        timer.append(reactor.callLater(KEEPALIVE, keepalive))
        write(b"retry: 3000\n\n")

        def stop():
            unsubscribe()
            counts[account_id] = max(0, counts.get(account_id, 1) - 1)
            for t in timer:
                if t.active():
                    t.cancel()

        return stop

    return web.Stream(start)
