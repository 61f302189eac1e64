"""LIST/LSUB mailbox matching and attributes (RFC 9051 6.3.9, RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE,
RFC 3348 CHILDREN), without I/O.

- ``canonical_pattern(reference, pattern) -> str``: RFC 9051 6.3.9: the reference and the pattern joined into one
  pattern (a pattern starting with the separator is absolute).
- ``pattern_regex(pattern) -> re.Pattern``: ``*`` matches anything, ``%`` anything but the separator; INBOX is
  matched case-insensitively (RFC 9051 5.1).
- ``list_entries(mailboxes, patterns, *, selection, return_options) -> list[ListEntry]``: the LIST responses for
  the account's mailboxes (``MailboxInfo`` or anything with ``name``, ``special_use``, ``subscribed``), with
  ``\\HasChildren`` / ``\\HasNoChildren``, ``\\Subscribed``, special-use attributes, and RECURSIVEMATCH
  ``CHILDINFO``; parents that only exist as a level of a matching child are shown ``\\Noselect``
  (``\\NonExistent`` with SUBSCRIBED selection).
- ``lsub_entries(mailboxes, reference, pattern)``: RFC 3501 6.3.9 LSUB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SEPARATOR = "/"


@dataclass
class ListEntry:
    name: str
    attributes: list[str] = field(default_factory=list)
    childinfo: bool = False  # RFC 5258 3.5: ("CHILDINFO" ("SUBSCRIBED"))
    selectable: bool = True


def canonical_pattern(reference: str, pattern: str) -> str:
    """RFC 9051 6.3.9: the reference names a context; a pattern beginning with the separator is absolute."""
    if not reference or pattern.startswith(SEPARATOR):
        return pattern
    if reference.endswith(SEPARATOR):
        return reference + pattern
    return reference + SEPARATOR + pattern if pattern else reference


def pattern_regex(pattern: str) -> re.Pattern:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(SEPARATOR) + "]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _matches(rx: re.Pattern, name: str) -> bool:
    if rx.match(name):
        return True
    # RFC 9051 5.1: INBOX is case-insensitive, so "inb%" names it too.
    if name == "INBOX" or name.startswith("INBOX" + SEPARATOR):
        return re.compile(rx.pattern, re.DOTALL | re.IGNORECASE).match(name) is not None
    return False


def _norm(pattern: str) -> str:
    if pattern[:5].upper() == "INBOX" and (len(pattern) == 5 or pattern[5] == SEPARATOR):
        return "INBOX" + pattern[5:]
    return pattern


def _children(names: set[str], name: str) -> bool:
    prefix = name + SEPARATOR
    return any(n.startswith(prefix) for n in names)


def list_entries(mailboxes, patterns: tuple[str, ...] | list[str], *, reference: str = "",
                 selection: frozenset[str] = frozenset(), return_options: frozenset[str] = frozenset(),
                 subscriptions: set[str] | None = None) -> list[ListEntry]:
    """``subscriptions``: every subscribed name (the mailbox may no longer exist); default: the mailboxes' flags."""
    regexes = [pattern_regex(_norm(canonical_pattern(reference, p))) for p in patterns]
    by_name = {m.name: m for m in mailboxes}
    subs = subscriptions if subscriptions is not None else {m.name for m in mailboxes if m.subscribed}
    subscribed_only = "SUBSCRIBED" in selection
    special_only = "SPECIAL-USE" in selection
    recursive = "RECURSIVEMATCH" in selection
    want_subscribed = subscribed_only or "SUBSCRIBED" in return_options
    names = set(by_name) | (subs if subscribed_only else set())
    # Every level of every mailbox: a level without a row is a \Noselect (or \NonExistent) placeholder.
    all_names = set(names)
    for n in names:
        parts = n.split(SEPARATOR)
        for i in range(1, len(parts)):
            all_names.add(SEPARATOR.join(parts[:i]))
    out: list[ListEntry] = []
    for name in sorted(all_names, key=lambda n: (n != "INBOX", n)):
        if not any(_matches(rx, name) for rx in regexes):
            continue
        m = by_name.get(name)
        entry = ListEntry(name)
        if m is None:
            entry.selectable = False
        if subscribed_only:
            sub = name in subs
            if not sub:
                # RFC 5258 3 / 3.5: RECURSIVEMATCH lists a parent with CHILDINFO when it has a subscribed
                # descendant that the patterns do not match (a matched one is listed on its own).
                prefix = name + SEPARATOR
                if recursive and any(c in subs and not any(_matches(rx, c) for rx in regexes)
                                     for c in names if c.startswith(prefix)):
                    entry.childinfo = True
                else:
                    continue
        if special_only and (m is None or not m.special_use):
            continue
        attrs = entry.attributes
        if m is None:
            attrs.append("\\NonExistent" if subscribed_only else "\\Noselect")
        # RFC 3348 / RFC 5258 CHILDREN: always told, it is cheap here.
        attrs.append("\\HasChildren" if _children(all_names, name) else "\\HasNoChildren")
        if want_subscribed and name in subs:
            attrs.append("\\Subscribed")
        if m is not None and m.special_use:
            # RFC 6154 2: special-use attributes are returned in LIST responses.
            attrs.append(m.special_use)
        out.append(entry)
    return out


def lsub_entries(mailboxes, reference: str, pattern: str, subscriptions: set[str] | None = None
                 ) -> list[ListEntry]:
    """RFC 3501 6.3.9: subscribed names matching; a non-subscribed parent hidden by "%" is \\Noselect."""
    rx = pattern_regex(_norm(canonical_pattern(reference, pattern)))
    if subscriptions is None:
        subscriptions = {m.name for m in mailboxes if m.subscribed}
    subscribed = sorted(subscriptions)
    out: dict[str, ListEntry] = {}
    for name in subscribed:
        if _matches(rx, name):
            out[name] = ListEntry(name)
            continue
        parts = name.split(SEPARATOR)
        for i in range(len(parts) - 1, 0, -1):
            parent = SEPARATOR.join(parts[:i])
            if _matches(rx, parent):
                if parent not in out:
                    out[parent] = ListEntry(parent, ["\\Noselect"], selectable=False)
                break
    return [out[k] for k in sorted(out, key=lambda n: (n != "INBOX", n))]
