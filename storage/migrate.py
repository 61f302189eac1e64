"""Apply the Alembic migrations (``mailserver migrate`` and every ``serve`` start).

Revisions live in ``storage/migrations/versions``.  Independent features may add their own branch off the initial
revision; ``upgrade`` applies every head, so parallel branches need no merge revision.

A serving process needs Alembic only when the schema is behind, and what Alembic imports (Mako, and Pygments where
installed) stays in its memory for good (about 12 MiB of a server process's RSS).  So ``upgrade`` first compares
the database's revisions with the heads read from the revision files' own ``revision`` / ``down_revision`` lines,
without Alembic: a schema at every head (each start after the first, every worker process) imports nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"""^(down_revision|revision)\s*=\s*(?:['"]([^'"]+)['"]|None)""", re.M)


def _alembic_config():
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def file_heads() -> set[str]:
    """The heads of the revision files, read from their ``revision`` and ``down_revision`` lines (no Alembic)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict((m.group(1), m.group(2)) for m in _REVISION.finditer(path.read_text()))
        if found.get("revision"):
            revisions.add(found["revision"])
            if found.get("down_revision"):
                parents.add(found["down_revision"])
    return revisions - parents


def _stored_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return set()
        return {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}


def upgrade(engine: Engine) -> list[str]:
    """Bring the schema to every head; returns the revisions applied now."""
    before = _stored_revisions(engine)
    if before and before == file_heads():
        return []
    from alembic import command

    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
    return sorted(_stored_revisions(engine) - before)


def current_revisions(engine: Engine) -> list[str]:
    return sorted(_stored_revisions(engine))


def pending(engine: Engine) -> bool:
    return _stored_revisions(engine) != file_heads()
