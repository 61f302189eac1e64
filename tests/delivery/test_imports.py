"""The import arrow between delivery and the protocols points one way: nothing under mailserver/delivery/ imports
mailserver.smtp (or any other protocol package); the protocols import delivery."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ("mailserver.smtp", "mailserver.imap", "mailserver.pop3", "webmail")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_delivery_imports_no_protocol():
    """Every module of mailserver/delivery/, including imports inside functions."""
    files = sorted((ROOT / "mailserver" / "delivery").glob("*.py"))
    assert files
    bad = {f.name: sorted(m for m in _imports(f) if m.startswith(PROTOCOLS)) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_address_module_is_protocol_neutral():
    """mailserver/address.py, shared by SMTP and delivery, imports no protocol either."""
    assert not [m for m in _imports(ROOT / "mailserver" / "address.py") if m.startswith(PROTOCOLS)]
