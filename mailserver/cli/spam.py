"""``mailserver spam train ADDRESS --spam PATH... | --ham PATH...`` and ``mailserver spam stats ADDRESS``.

Initial training of an account's built-in classifier from files: each PATH is a message file, an mbox file
(first line "From "), or a maildir (a directory with ``cur``/``new``; every message file in them) or any other
directory (each file in it a message).  A message is trained once: a file trained again the same way is counted
as "already", trained the other way its counts flip (as when a user moves a message out of Junk).  It works on
the database directly, so it also works while the server runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from mailserver.cli.main import CliError

#: Larger files are skipped (a training file is a message or an mbox of them, read whole).
MAX_FILE = 512 * 1024 * 1024


def register(sub) -> None:
    m = sub.add_parser("spam", help="the built-in spam classifier").add_subparsers(dest="action", metavar="ACTION")
    m.required = True
    p = m.add_parser("train", help="train an account's classifier from mbox files, maildirs or message files")
    p.add_argument("address", help="the account")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--spam", nargs="+", metavar="PATH", help="train these messages as spam")
    g.add_argument("--ham", nargs="+", metavar="PATH", help="train these messages as ham (not spam)")
    p.set_defaults(func=spam_train)
    p = m.add_parser("stats", help="what an account's classifier has learnt")
    p.add_argument("address", help="the account")
    p.set_defaults(func=spam_stats)


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        subdirs = [path / d for d in ("cur", "new") if (path / d).is_dir()]
        for d in subdirs or [path]:
            for f in sorted(d.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    yield f
    elif path.is_file():
        yield path
    else:
        raise CliError(f"no such file or directory: {path}")


def sources(paths) -> Iterator[tuple[str, bytes]]:
    """``(label, message)`` of every message in these files, mboxes and maildirs."""
    from mailserver.cli.mail import messages_of

    for p in paths:
        for f in _files(Path(p)):
            if f.stat().st_size > MAX_FILE:
                raise CliError(f"{f}: larger than {MAX_FILE} bytes")
            yield from messages_of(str(f), f.read_bytes())


def spam_train(args) -> int:
    from mailserver.cli.admin import open_store
    from mailserver.inbound.classifier import token_ids

    store = open_store(args)
    acct = store.get_account(args.address)
    if acct is None:
        raise CliError(f"no account {args.address}")
    klass = "spam" if args.spam else "ham"
    outcomes: dict[str, int] = {}
    max_tokens = args.config_obj.antispam.bayes_max_tokens
    for _label, raw in sources(args.spam or args.ham):
        key = hashlib.sha256(raw).hexdigest()
        outcome = store.bayes_learn(acct.id, key, klass, token_ids(raw), max_tokens=max_tokens)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    spam, ham, tokens = store.bayes_stats(acct.id)
    done = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "no messages"
    print(f"{args.address}: {done} as {klass}; now {spam} spam, {ham} ham, {tokens} tokens")
    return 0


def spam_stats(args) -> int:
    from mailserver.cli.admin import open_store

    store = open_store(args)
    acct = store.get_account(args.address)
    if acct is None:
        raise CliError(f"no account {args.address}")
    spam, ham, tokens = store.bayes_stats(acct.id)
    print(f"{args.address}: {spam} spam, {ham} ham, {tokens} tokens")
    return 0
