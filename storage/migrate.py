"""Apply the Alembic migrations (``mailserver migrate`` and every ``serve`` start).

Revisions live in ``storage/migrations/versions``.  Independent features may add their own branch off the initial
revision; ``upgrade`` applies every head, so parallel branches need no merge revision.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> list[str]:
    """Bring the schema to every head; returns the revisions applied now."""
    cfg = _alembic_config()
    before = set(current_revisions(engine))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
    after = set(current_revisions(engine))
    return sorted(after - before)


def current_revisions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(MigrationContext.configure(conn).get_current_heads())


def pending(engine: Engine) -> bool:
    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    return set(current_revisions(engine)) != heads
