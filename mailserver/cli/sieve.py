"""``mailserver sieve …``: an account's Sieve scripts, and running a script over a message file.

``put ADDRESS NAME FILE [--activate]``, ``get ADDRESS NAME``, ``list ADDRESS``, ``activate ADDRESS NAME|--none``,
``delete ADDRESS NAME``, ``check ADDRESS FILE`` (compile as a put would, store nothing); ``--domain`` instead of
an address manages a domain's global scripts ("before", "after", and those ``include :global`` names).
``test SCRIPT MESSAGE [--envelope-from A] [--envelope-to B]`` prints the actions the way Pigeonhole's sieve-test
does (``--brief``: one normalised line per action, what the differential tests compare).
"""

from __future__ import annotations

import sys
import time

from mailserver.cli.main import CliError


def register(sub) -> None:
    s = sub.add_parser("sieve", help="Sieve filters").add_subparsers(dest="action", metavar="ACTION")
    s.required = True

    def owner(p):
        p.add_argument("owner", metavar="ADDRESS", help="the account (or, with --domain, the domain)")
        p.add_argument("--domain", action="store_true", help="the owner is a domain: its global scripts")

    p = s.add_parser("put", help="store a script (compiled first: an invalid one is refused)")
    owner(p)
    p.add_argument("name")
    p.add_argument("file", help="the script file, or - for standard input")
    p.add_argument("--activate", action="store_true", help="make it the active script")
    p.set_defaults(func=sieve_put)
    p = s.add_parser("get", help="print a script")
    owner(p)
    p.add_argument("name")
    p.set_defaults(func=sieve_get)
    p = s.add_parser("list", help="list the scripts (the active one marked)")
    owner(p)
    p.set_defaults(func=sieve_list)
    p = s.add_parser("activate", help="make a script the active one")
    owner(p)
    p.add_argument("name", nargs="?")
    p.add_argument("--none", action="store_true", help="no script active (no filtering)")
    p.set_defaults(func=sieve_activate)
    p = s.add_parser("delete", help="delete a script (not the active one)")
    owner(p)
    p.add_argument("name")
    p.set_defaults(func=sieve_delete)
    p = s.add_parser("rename", help="rename a script")
    owner(p)
    p.add_argument("old")
    p.add_argument("new")
    p.set_defaults(func=sieve_rename)
    p = s.add_parser("check", help="compile a script as put would, against the owner's scripts (includes)")
    owner(p)
    p.add_argument("file")
    p.set_defaults(func=sieve_check)
    p = s.add_parser("test", help="run a script over a message file and print the actions (like sieve-test)")
    p.add_argument("script")
    p.add_argument("message")
    p.add_argument("--envelope-from", "-f", default="", help="the envelope sender (default: none, <>)")
    p.add_argument("--envelope-to", "-r", default="", help="the envelope recipient")
    p.add_argument("--include-dir", help="where :personal includes are found (default: the script's directory)")
    p.add_argument("--global-dir", help="where :global includes are found")
    p.add_argument("--brief", action="store_true", help="one normalised line per action")
    p.add_argument("--now", type=float, help="the current time (UNIX seconds) for currentdate")
    p.set_defaults(func=sieve_test, needs_config=False)


def _read(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 (RFC 5228 1: scripts are UTF-8)") from None


def _owner(args, store):
    from storage.sieve import ACCOUNT, DOMAIN

    if args.domain:
        d = store.get_domain(args.owner)
        if d is None:
            raise CliError(f"no domain {args.owner}")
        return DOMAIN, d.id
    acct = store.get_account(args.owner)
    if acct is None:
        raise CliError(f"no account {args.owner}")
    return ACCOUNT, acct.id


def _store(args):
    from mailserver.cli.admin import open_store

    return open_store(args)


def _call(f, *a, **kw):
    from storage.store import StoreError

    try:
        return f(*a, **kw)
    except StoreError as e:
        raise CliError(str(e)) from None


def _compile(args, store, scope, owner_id, text: str, name: str):
    from mailserver.delivery.sieve_stage import limits_of, store_loader
    from mailserver.sieve import SieveCompileError, compile_script

    cfg = args.config_obj.sieve
    domain_id = owner_id if scope == "domain" else _domain_id(store, args.owner)
    loader = store_loader(store, owner_id if scope == "account" else None, domain_id)
    try:
        return compile_script(text, name, loader=loader, limits=limits_of(cfg))
    except SieveCompileError as e:
        raise CliError(str(e)) from None


def _domain_id(store, address: str) -> int | None:
    d = store.get_domain(address.rpartition("@")[2])
    return d.id if d else None


def sieve_put(args) -> int:
    store = _store(args)
    scope, owner_id = _owner(args, store)
    text = _read(args.file)
    _compile(args, store, scope, owner_id, text, args.name)
    cfg = args.config_obj.sieve
    _call(store.put_sieve_script, owner_id, args.name, text, max_scripts=cfg.max_scripts,
          max_storage=cfg.max_storage, scope=scope)
    if args.activate:
        _call(store.activate_sieve_script, owner_id, args.name, scope=scope)
    print(f"stored {args.name}" + (" (active)" if args.activate else ""))
    return 0


def sieve_get(args) -> int:
    store = _store(args)
    scope, owner_id = _owner(args, store)
    s = store.get_sieve_script(owner_id, args.name, scope=scope)
    if s is None:
        raise CliError(f"no script {args.name}")
    sys.stdout.write(s.content)
    return 0


def sieve_list(args) -> int:
    store = _store(args)
    scope, owner_id = _owner(args, store)
    for s in store.list_sieve_scripts(owner_id, scope=scope):
        print(f"{s.name}\t{s.size}\t{'ACTIVE' if s.active else ''}".rstrip())
    return 0


def sieve_activate(args) -> int:
    store = _store(args)
    scope, owner_id = _owner(args, store)
    if args.none == bool(args.name):
        raise CliError("give a script name or --none")
    _call(store.activate_sieve_script, owner_id, None if args.none else args.name, scope=scope)
    return 0


def sieve_delete(args) -> int:
    store = _store(args)
    scope, owner_id = _owner(args, store)
    _call(store.delete_sieve_script, owner_id, args.name, scope=scope)
    return 0


def sieve_rename(args) -> int:
    store = _store(args)
    scope, owner_id = _owner(args, store)
    _call(store.rename_sieve_script, owner_id, args.old, args.new, scope=scope)
    return 0


def sieve_check(args) -> int:
    store = _store(args)
    scope, owner_id = _owner(args, store)
    _compile(args, store, scope, owner_id, _read(args.file), args.file)
    print("ok")
    return 0


# --------------------------------------------------------------------------------------------- test


def dir_loader(personal: str | None, global_dir: str | None):
    """``include`` from files: ``NAME.sieve`` in the personal or global directory."""
    import os

    def load(location: str, name: str):
        base = personal if location == "personal" else global_dir
        if base is None:
            return None
        path = os.path.join(base, name + ".sieve")
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    return load


def run_test(script_text: str, raw: bytes, *, envelope_from: str = "", envelope_to: str = "", loader=None,
             now: float | None = None, name: str = "script"):
    """Compile and run a script over one message as ``sieve test`` does (shared with the differential tests)."""
    from mailserver.delivery.sieve_stage import header_spam_percent, header_spam_score, header_virus_score
    from mailserver.sieve import Env, MessageFacts, compile_script, evaluate

    script = compile_script(script_text, name, loader=loader)
    facts = MessageFacts.from_bytes(raw, envelope_from=envelope_from, envelope_to=envelope_to)
    env = Env(now=time.time() if now is None else now,
              mailbox_exists=lambda n: True,
              spam_score=header_spam_score, spam_percent=header_spam_percent, virus_score=header_virus_score,
              environment={"name": "mailserver", "location": "MDA", "phase": "during"})
    return evaluate(script, facts, env)


def sieve_test(args) -> int:
    import os

    from mailserver.sieve import SieveCompileError, describe

    text = _read(args.script)
    try:
        raw = open(args.message, "rb").read() if args.message != "-" else sys.stdin.buffer.read()
    except OSError as e:
        raise CliError(f"cannot read {args.message}: {e.strerror}") from None
    loader = dir_loader(args.include_dir or os.path.dirname(os.path.abspath(args.script)), args.global_dir)
    name = os.path.basename(args.script).removesuffix(".sieve")
    try:
        result = run_test(text, raw, envelope_from=args.envelope_from, envelope_to=args.envelope_to,
                          loader=loader, now=args.now, name=name)
    except SieveCompileError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.brief:
            print("error: compile")
        return 1
    if args.brief:
        for line in describe(result):
            print(line)
        return 0
    sys.stdout.write(format_result(result))
    return 0


def format_result(result) -> str:
    """The actions as Pigeonhole's sieve-test words them."""
    from mailserver.sieve import Discard, FileInto, Keep, Redirect, Reject, Vacation

    out = ["", "Performed actions:", ""]
    if result.error:
        out.append(f"  (none: the script failed: {result.error})")
    if not result.actions and not result.error:
        out.append("  (none)")
    for a in result.actions:
        if isinstance(a, (Keep, FileInto)):
            out.append(f" * store message in folder: {'INBOX' if isinstance(a, Keep) else a.mailbox}")
            if a.flags:
                out.append(f"        + add IMAP flags: {' '.join(a.flags)}")
            if isinstance(a, FileInto) and a.create:
                out.append("        + create mailbox if it does not exist")
            if isinstance(a, FileInto) and a.copy:
                out.append("        + preserve implicit keep")
        elif isinstance(a, Redirect):
            out.append(f" * redirect message to: <{a.address}>")
            if a.copy:
                out.append("        + preserve implicit keep")
        elif isinstance(a, Reject):
            out.append(f" * reject message with reason: {a.reason}")
        elif isinstance(a, Discard):
            out.append(" * discard")
        elif isinstance(a, Vacation):
            out.append(" * send vacation message:")
            out.append(f"    => seconds : {a.seconds}")
            if a.subject:
                out.append(f"    => subject : {a.subject}")
            if a.from_:
                out.append(f"    => from    : {a.from_}")
            out += ["", "START MESSAGE", a.reason.rstrip("\r\n"), "END MESSAGE"]
    out += ["", "Implicit keep:", ""]
    if result.implicit_keep:
        out.append(" * store message in folder: INBOX")
        if result.keep_flags:
            out.append(f"        + add IMAP flags: {' '.join(result.keep_flags)}")
    else:
        out.append("  (none)")
    for key, value in (result.header_fields and [("edited header", len(result.header_fields))] or []):
        out += ["", f"({key}: {value} fields)"]
    return "\n".join(out) + "\n"
