"""IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) server.

The wire layer is sans-IO and imports neither Twisted nor the store:

- :mod:`mailserver.imap.wire`: :class:`ImapReader` (bytes -> command frames, literal framing, limits) and the
  :class:`Tokenizer` the parsers use; :class:`ParserLimits`, :class:`ParseError`.
- :mod:`mailserver.imap.parser`: ``parse_command(frame) -> Command``.
- :mod:`mailserver.imap.commands`: frozen dataclasses for every command and its arguments.
- :mod:`mailserver.imap.searchkeys`: the SEARCH key tree.
- :mod:`mailserver.imap.seqset`: sequence sets.
- :mod:`mailserver.imap.response`: response encoding and modified UTF-7 mailbox names.
"""
