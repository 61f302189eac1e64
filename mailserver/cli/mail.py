"""``mailserver mail import``: put messages into an account through the ingest pipeline.

Each PATH is one message (RFC 5322, any line ends), an mbox file (first line "From "; mboxrd ">From " quoting
undone), or "-" for one message on standard input.  Without ``--mailbox`` every message is delivered like incoming
mail to ADDRESS (routing, aliases, the checks, the recipient's filter, quota, INBOX); with ``--mailbox NAME`` it is
placed into that mailbox of the account ADDRESS (created when missing), as IMAP APPEND would.  Runs beside a
serving server: the store is shared, each message is committed on its own.
"""

from __future__ import annotations

import re
import sys
from typing import Iterator

from mailserver.cli.main import CliError


def register(sub) -> None:
    m = sub.add_parser("mail", help="messages").add_subparsers(dest="action", metavar="ACTION")
    m.required = True
    p = m.add_parser("import", help="import message files or mbox files into an account")
    p.add_argument("address", help="the recipient (an account, or an alias without --mailbox)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a message file, an mbox file, or - (standard input)")
    p.add_argument("--mailbox", help="place into this mailbox exactly (skips the filters), created when missing")
    p.set_defaults(func=mail_import)


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


_MBOX_SEPARATOR = re.compile(rb"^From [^\n]*\n", re.M)
_MBOXRD_QUOTED = re.compile(rb"^>(>*From )", re.M)


def messages_of(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``(label, message)`` for each message of one file: an mbox is split at its "From " lines."""
    if not data.startswith(b"From "):
        yield name, crlf(data)
        return
    data = data.replace(b"\r\n", b"\n")
    starts = [m.start() for m in _MBOX_SEPARATOR.finditer(data)]  # body lines "From " are quoted ">From "
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(data)
        body = data[data.index(b"\n", start) + 1:end]
        if body.endswith(b"\n\n"):
            body = body[:-1]  # the empty line before the next separator belongs to the mbox
        yield f"{name}#{n + 1}", crlf(_MBOXRD_QUOTED.sub(rb"\1", body))


def cli_pipeline(config, store):
    """The ingest pipeline with an inline runner: each message is stored and committed in this thread."""
    from twisted.internet import defer

    from mailserver.delivery.pipeline import Pipeline
    from mailserver.delivery.router import build_router
    from mailserver.delivery.runner import InlineRunner
    from mailserver.delivery.sieve_stage import InlineStore, SieveFilter

    pipeline = Pipeline(InlineRunner(store), config, build_router(config, store), store.blobs)
    pipeline.filter = SieveFilter(config, store, InlineStore(store), defer.execute)  # the recipients' Sieve
    pipeline.filter.pipeline = pipeline
    return pipeline


def import_messages(pipeline, store, address: str, sources, mailbox: str | None = None) -> list[tuple[str, object]]:
    """Hand each ``(label, raw)`` of ``sources`` to ``pipeline``; returns ``(label, outcome)`` per message."""
    from mailserver.address import AddressError, parse_mailbox
    from mailserver.delivery.envelope import IMPORT, Envelope, Placement, Recipient, Request
    from mailserver.delivery.runner import result_now

    if mailbox is not None:
        acct = store.get_account(address)
        if acct is None:
            raise CliError(f"no account {address}")
        box = store.get_mailbox(acct.id, mailbox)
        if box is None:
            box = store.create_mailbox(acct.id, mailbox).value
        placement = Placement(acct.id, box.name, box.id)

        def request():
            return Request(IMPORT, placement=placement)
    else:
        try:
            rcpt = Recipient(parse_mailbox(address))
        except AddressError as e:
            raise CliError(f"bad address {address!r}: {e}") from None

        def request():
            return Request(IMPORT, envelope=Envelope(None, (rcpt,)))
    done = []
    for label, raw in sources:
        result = result_now(pipeline.ingest(request(), raw))
        done += [(label, o) for o in result.outcomes]
    return done


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None


def mail_import(args) -> int:
    from mailserver.cli.admin import open_store

    store = open_store(args)
    pipeline = cli_pipeline(args.config_obj, store)
    sources = (m for path in args.paths for m in messages_of(path, _read(path)))
    ok = failed = 0
    for label, outcome in import_messages(pipeline, store, args.address, sources, args.mailbox):
        if outcome.ok:
            ok += 1
        else:
            failed += 1
            print(f"error: {label}: {outcome.address or args.address}: {outcome.status} {outcome.text}",
                  file=sys.stderr)
    print(f"imported {ok} message(s) for {args.address}" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0
