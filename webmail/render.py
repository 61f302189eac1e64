"""Jinja2 templates (autoescape on) and the display filters they use."""

from __future__ import annotations

import re
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"

# URLs in plain text: http(s), www. and mailto:, stopping before trailing punctuation.
_URL = re.compile(r"\b((?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]}]|mailto:[^\s<>\"']+@[^\s<>\"'.,;:!?)]+)",
                  re.I)

SPECIAL_ICONS = {
    "inbox": "\U0001F4E5", "\\Drafts": "\U0001F4DD", "\\Sent": "\U0001F4E4", "\\Trash": "\U0001F5D1",
    "\\Junk": "\u26A0", "\\Archive": "\U0001F5C4", "": "\U0001F4C1",
}


def linkify(text: str) -> Markup:
    """Escape ``text`` and make its URLs clickable (opening in a new tab, without a referrer)."""
    out = []
    pos = 0
    for m in _URL.finditer(text):
        out.append(escape(text[pos:m.start()]))
        url = m.group(1)
        href = url if not url.lower().startswith("www.") else "https://" + url
        out.append(Markup('<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>').format(href, url))
        pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def human_size(n: int | float) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def short_date(ts: float, now: float | None = None) -> str:
    if not ts:
        return ""
    now = now or time.time()
    t = time.localtime(ts)
    n = time.localtime(now)
    if t.tm_year == n.tm_year and t.tm_yday == n.tm_yday:
        return time.strftime("%H:%M", t)
    if t.tm_year == n.tm_year:
        return time.strftime("%d %b", t)
    return time.strftime("%d %b %Y", t)


def long_date(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M", time.localtime(ts)) if ts else ""


def folder_label(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def folder_icon(mb) -> str:
    if mb.name == "INBOX":
        return SPECIAL_ICONS["inbox"]
    return SPECIAL_ICONS.get(mb.special_use, SPECIAL_ICONS[""])


class Renderer:
    def __init__(self, config):
        self.env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                               autoescape=select_autoescape(["html", "xml"], default=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(linkify=linkify, size=human_size, short_date=short_date, long_date=long_date,
                                folder_label=folder_label, folder_icon=folder_icon)
        self.env.globals.update(hostname=config.hostname, max_upload=config.webmail.max_upload)

    def render(self, name: str, **values) -> str:
        return self.env.get_template(name).render(**values)
