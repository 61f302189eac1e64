"""``storage.migrate.upgrade`` in a serving process: Alembic (and the Mako and Pygments it imports, which stay in
memory) is not imported at all when the schema is at every head: each start after the first, every worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from storage import migrate

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import sys
from storage import migrate
from storage.db import make_engine
engine = make_engine(sys.argv[1])
applied = migrate.upgrade(engine)
left = sorted(m for m in sys.modules if m.partition(".")[0] in ("alembic", "mako", "pygments"))
print(len(applied), migrate.pending(engine), left)
"""


def _probe(url: str) -> str:
    return subprocess.run([sys.executable, "-c", _PROBE, url], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def test_the_heads_read_from_the_files_are_alembic_s():
    from alembic.script import ScriptDirectory

    assert migrate.file_heads() == set(ScriptDirectory.from_config(migrate._alembic_config()).get_heads())


def test_a_start_on_a_schema_at_every_head_imports_no_alembic(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    first = _probe(url)
    count, pending, left = first.split(" ", 2)
    assert int(count) > 0 and pending == "False" and "alembic" in left, first
    assert _probe(url) == "0 False []"


def test_a_schema_behind_one_head_is_still_migrated(tmp_path):
    """The head check only skips a schema at every head: one revision missing, Alembic runs and applies it."""
    import sqlalchemy as sa

    from storage.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE id_high_water"))
            conn.execute(sa.text("DELETE FROM alembic_version WHERE version_num = 'mailbox_ids_4c9e2b7d1a36'"))
        assert migrate.pending(engine)
        assert migrate.upgrade(engine) == ["mailbox_ids_4c9e2b7d1a36"]
        assert not migrate.pending(engine)
    finally:
        engine.dispose()
