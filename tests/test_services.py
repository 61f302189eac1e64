"""Protocols get their dependencies as one typed Services object: no dictionary of string keys on the server."""

from __future__ import annotations

import ast
from pathlib import Path

from mailserver.services import ProcessState, Services
from tests.harness import ALL_LISTENERS, running_server

ROOT = Path(__file__).resolve().parents[1]


def _extra_attributes() -> list[str]:
    hits = []
    for top in ("mailserver", "storage", "webmail", "tests", "scripts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            hits.extend(f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                        if isinstance(node, ast.Attribute) and node.attr == "extra")
    return hits


def test_no_module_refers_to_extra():
    """Shared state is typed: nothing reads or writes an ``.extra`` attribute (the old ``server.extra`` keys)."""
    assert _extra_attributes() == []


def test_every_protocol_factory_receives_the_services(tmp_path):
    """Each listener's factory is built from the server's one Services, whose per-process state is typed."""
    with running_server(tmp_path, listeners=ALL_LISTENERS) as srv:
        services = srv.services
        assert isinstance(services, Services) and isinstance(services.state, ProcessState)
        assert not hasattr(srv.server, "extra")
        seen = {}
        for lst in srv.server.listening:
            factory = lst.factory.wrappedFactory
            holder = factory.app if lst.name in ("http", "https") else factory
            seen[lst.name] = holder.services
        assert sorted(seen) == sorted(ALL_LISTENERS)
        assert all(s is services for s in seen.values())
        # One limiter per protocol family, shared by its listeners, kept in the process state.
        assert sorted(services.state.connections) == ["http", "imap", "managesieve", "pop3", "smtp"]
        assert {name: services.port(name) for name in ALL_LISTENERS} == {
            name: srv.port(name) for name in ALL_LISTENERS}
