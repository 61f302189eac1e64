"""The IMAP command handlers reach the session through its public members only (issue 11: a public context
instead of the session's privates), so the session can change inside without breaking a handler."""

import ast
import pathlib

import mailserver.imap

IMAP = pathlib.Path(mailserver.imap.__file__).parent
HANDLER_MODULES = sorted(p for p in IMAP.glob("*.py") if p.name != "session.py")


def _session_names(fn: ast.AST) -> set[str]:
    """The parameters of a handler that are a session: annotated ImapSession, or named ``s``/``session``."""
    names = set()
    args = getattr(fn, "args", None)
    if args is None:
        return names
    for a in args.posonlyargs + args.args + args.kwonlyargs:
        ann = ast.unparse(a.annotation) if a.annotation is not None else ""
        if a.arg in ("s", "session") or "ImapSession" in ann:
            names.add(a.arg)
    return names


def private_uses(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        names = _session_names(fn)
        for node in ast.walk(fn):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return sorted(set(found))


def test_handlers_use_no_private_session_member():
    offenders = [use for p in HANDLER_MODULES if p.name.startswith(("cmd_", "fetch", "search", "context", "sort",
                                                                      "thread", "resync", "mailboxes", "snapshot"))
                 for use in private_uses(p)]
    assert offenders == []


def test_the_check_finds_a_private_use(tmp_path):
    sample = tmp_path / "cmd_sample.py"
    sample.write_text("async def h(s, cmd):\n    s._append = None\n    s.send(b'')\n")
    assert private_uses(sample) == ["cmd_sample.py:2: s._append"]
