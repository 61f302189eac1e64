"""The import graph, read from the source with ``ast``: arrows point one way and nothing imports in a circle.

Layers (docs/architecture.md): wire -> session -> protocol glue -> services (auth, delivery, queue) -> storage.
Nothing in ``storage/`` imports ``mailserver`` or ``webmail``; nothing in ``mailserver/delivery/`` imports a protocol
package; no wire module imports Twisted. Imports inside functions count as much as top-level ones: a function-level
import is how a circle hides.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mailserver", "storage", "webmail")
PROTOCOLS = ("mailserver.smtp", "mailserver.imap", "mailserver.pop3", "mailserver.managesieve", "webmail")
WIRE_MODULES = ("mailserver.smtp.wire", "mailserver.imap.wire", "mailserver.imap.parser", "mailserver.pop3.wire",
                "mailserver.managesieve.wire", "mailserver.managesieve.session", "webmail.filters")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``module`` imports (absolute names; ``from x import y`` counts y when it is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


def _walk_runtime(node):
    """``ast.walk`` without ``if TYPE_CHECKING:`` blocks (imports for annotations only never run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for stmt in child.orelse for n in [stmt, *_walk_runtime(stmt)])
            continue
        yield child
        yield from _walk_runtime(child)


def graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if "migrations" not in p.parts}
    edges = {}
    for name, path in modules.items():
        edges[name] = {t for t in _imports(path, name) if t in modules and t != name}
    return edges


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_storage_imports_no_upper_layer():
    bad = sorted((m, t) for m, ts in graph().items() if _under(m, "storage")
                 for t in ts if not _under(t, "storage"))
    assert bad == []


def test_delivery_imports_no_protocol_package():
    """Nothing under mailserver/delivery/, nor the neutral address module they share, imports a protocol: the
    protocols import delivery, and map its outcomes to their own replies."""
    bad = sorted((m, t) for m, ts in graph().items() if _under(m, "mailserver.delivery") or m == "mailserver.address"
                 for t in ts if any(_under(t, p) for p in PROTOCOLS))
    assert bad == []


def test_wire_modules_do_not_import_twisted():
    for name in WIRE_MODULES:
        path = ROOT / (name.replace(".", "/") + ".py")
        assert not any(_under(t, "twisted") for t in _imports(path, name)), name


def test_no_import_cycles():
    """Strongly connected components of the module graph (Tarjan): each must be a single module. A package's
    ``__init__`` importing its own submodules is not a circle (Python imports the package first)."""
    edges = graph()
    edges = {m: {t for t in ts if not _under(m, t)} for m, ts in edges.items()}  # child -> own package: fine
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []


def test_sieve_is_sans_io():
    """mailserver/sieve/ (parser, validation, evaluator) imports neither Twisted nor a protocol, nor the delivery
    stage that carries its actions out: scripts and messages in, actions out."""
    bad = []
    for path in (ROOT / "mailserver" / "sieve").rglob("*.py"):
        name = _module_name(path)
        for t in _imports(path, name):
            if _under(t, "twisted") or _under(t, "mailserver.delivery") or any(_under(t, p) for p in PROTOCOLS):
                bad.append((name, t))
    assert bad == []
