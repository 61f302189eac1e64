"""The parsed-message schema is spelled once (storage/parsed.py); every other spelling is derived or checked here."""

from __future__ import annotations

import dataclasses
import json
import typing

import sqlalchemy as sa

from mailserver.mime import ParsedMessage, parse_message
from storage import migrate
from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.models import Message
from storage.parsed import PARSED_COLUMNS, PARSED_FIELDS, column_values
from storage.records import MessageInfo
from storage.store import Delivery, Store

_SQL = {str: sa.Text, int: sa.Integer, float: sa.Float, bool: sa.Boolean}


def test_columns_are_derived_from_the_fields():
    assert PARSED_COLUMNS == tuple(f.name for f in PARSED_FIELDS)
    assert len(set(PARSED_COLUMNS)) == len(PARSED_COLUMNS)


def test_orm_model_has_each_parsed_column_with_its_type():
    table = Message.__table__
    for f in PARSED_FIELDS:
        column = table.c[f.name]
        assert isinstance(column.type, _SQL[f.type]), f.name
        assert column.default.arg == f.default, f.name


def test_message_info_spells_the_parsed_fields_in_order_with_their_types():
    hints = typing.get_type_hints(MessageInfo)
    names = [f.name for f in dataclasses.fields(MessageInfo)]
    start = names.index(PARSED_COLUMNS[0])
    assert tuple(names[start:start + len(PARSED_COLUMNS)]) == PARSED_COLUMNS
    for f in PARSED_FIELDS:
        assert hints[f.name] is f.type, f.name


def test_parsed_message_has_the_parsed_fields_plus_its_size():
    """mailserver.mime.ParsedMessage holds ENVELOPE and BODYSTRUCTURE decoded; to_json() gives the columns."""
    names = [f.name for f in dataclasses.fields(ParsedMessage)]
    assert sorted(set(names) - {"size"}) == sorted(PARSED_COLUMNS)
    hints = typing.get_type_hints(ParsedMessage)
    decoded = {"envelope": list, "bodystructure": dict}
    for f in PARSED_FIELDS:
        assert hints[f.name] is decoded.get(f.name, f.type), f.name
    stored = parse_message(b"Subject: s\r\nFrom: A <a@example.test>\r\n\r\nbody\r\n").to_json()
    values = column_values(stored)
    assert set(values) == set(PARSED_COLUMNS)
    assert all(type(values[f.name]) is f.type for f in PARSED_FIELDS)
    assert json.loads(values["envelope"])[1] == "s"


def test_column_values_fill_and_coerce_missing_or_loose_values():
    values = column_values({"subject": "x", "header_size": "12", "date_sent": None, "has_attachment": 1})
    assert values["subject"] == "x" and values["envelope"] == "" and values["header_size"] == 12
    assert values["date_sent"] == 0.0 and values["has_attachment"] is True


def test_migrated_database_has_the_parsed_columns(tmp_path, database_url):
    """The Alembic revisions build the columns the schema names (SQLite and PostgreSQL)."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path}/db.sqlite3")
    try:
        migrate.upgrade(engine)
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("messages")}
        for f in PARSED_FIELDS:
            assert f.name in columns, f.name
            assert columns[f.name].python_type is f.type, (f.name, columns[f.name])
    finally:
        engine.dispose()


def test_a_delivered_message_reads_back_every_parsed_value(tmp_path, database_url):
    """Each parsed value goes into its column and comes back in the MessageInfo field of the same name."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path}/db.sqlite3")
    try:
        migrate.upgrade(engine)
        store = Store(engine, FileBlobStore(tmp_path / "blobs"))
        store.add_domain("example.test")
        acct = store.add_account("alice@example.test", "x")
        sample = {str: "v-{}", int: 41, float: 1234.5, bool: True}
        parsed = {f.name: sample[f.type].format(f.name) if f.type is str else sample[f.type] for f in PARSED_FIELDS}
        res = store.deliver_batch([Delivery(acct.id, store.blobs.put(b"Subject: x\r\n\r\nx\r\n"), parsed)]).value[0]
        info = store.get_messages(res.mailbox_id, [res.uid])[0]
        assert {f.name: getattr(info, f.name) for f in PARSED_FIELDS} == parsed
    finally:
        engine.dispose()
