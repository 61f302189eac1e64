"""Small SQL helpers the aggregate modules share."""

from __future__ import annotations

from typing import Iterator, Sequence

from sqlalchemy.engine import Connection

#: Ids per ``IN (...)`` clause (SQLite limits bound parameters per statement).
CHUNK = 500


def chunks(seq: Sequence, n: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape character ``\\``) matching names that start with ``prefix``."""
    return escape_like(prefix) + "%"


def like_substring(text: str) -> str:
    """A LIKE pattern (escape character ``\\``) matching values that contain ``text``."""
    return "%" + escape_like(text) + "%"


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def on_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"
