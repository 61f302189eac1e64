"""The webmail's queries live behind the store (``storage/webmail.py``, ``Store.search_messages`` and the other
webmail methods); this module keeps the limits the views check and the one piece the store cannot do itself: reading
a message's text for a body search (MIME is parsed here, never in ``storage``)."""

from __future__ import annotations

import json

from storage.webmail import MAX_BODY_SCAN, MAX_QUERY, MAX_THREAD, SEARCH_FIELDS, Identity, SearchResult

#: Most characters of one message's text that a body search looks at.
MAX_BODY_TEXT = 2_000_000


def body_text(raw: bytes, bodystructure: str) -> str:
    """The readable text of a stored message (``Store.search_messages``'s ``body_text``)."""
    from mailserver.mime import extract_text

    return extract_text(raw, MAX_BODY_TEXT, json.loads(bodystructure) if bodystructure else None)


__all__ = ["MAX_BODY_SCAN", "MAX_QUERY", "MAX_THREAD", "SEARCH_FIELDS", "Identity", "SearchResult", "body_text"]
