"""HTML mail made safe to show: CSS inlined (css-inline), then an allow-list clean (nh3).

Defence in depth, each layer enough on its own for scripts:

1. ``<style>`` blocks are inlined into ``style`` attributes with remote stylesheets never loaded, then nh3 keeps only
   an allow-list of tags and attributes (no script, form, iframe, object, svg, math, meta, link, base, style), only
   ``http``/``https``/``mailto`` links (``cid:`` for images), and CSS declarations from an allow-list of properties
   whose values hold no ``url(``, ``expression(``, ``@import`` or backslash escapes.
2. Remote images are dropped unless the reader asked for them; ``cid:`` images point at our own URL.
3. The result is served as its own document (:func:`document`) under a CSP with ``script-src`` absent
   (``default-src 'none'``) and ``sandbox`` without ``allow-scripts``, inside a sandboxed iframe.

nh3 raises ``PanicException`` (a BaseException) on a bad configuration; :func:`sanitize_html` turns any failure into
an escaped text rendering rather than letting hostile input take the page down.
"""

from __future__ import annotations

import html as html_mod
import re
from dataclasses import dataclass
from typing import Callable

import css_inline
import nh3

#: Largest HTML body cleaned (larger bodies are cut: the reader can still download the part).
MAX_HTML = 5 * 1024 * 1024

TAGS = {
    "a", "abbr", "acronym", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center", "cite",
    "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span",
    "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
    "wbr", "figure", "figcaption", "article", "section", "header", "footer", "main", "nav", "aside", "time",
}
_COMMON = {"id", "style", "align", "valign", "dir", "lang", "title", "width", "height", "bgcolor", "class"}
ATTRIBUTES = {
    "*": _COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "nowrap", "abbr", "scope"},
    "th": {"colspan", "rowspan", "nowrap", "abbr", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "li": {"value"},
    "hr": {"noshade", "size"},
    "q": {"cite"},
    "blockquote": {"cite"},
    "time": {"datetime"},
}
URL_SCHEMES = {"http", "https", "mailto", "cid"}
STYLE_PROPERTIES = {
    "background-color", "border", "border-bottom", "border-bottom-color", "border-bottom-style",
    "border-bottom-width", "border-collapse", "border-color", "border-left", "border-left-color", "border-left-style",
    "border-left-width", "border-radius", "border-right", "border-right-color", "border-right-style",
    "border-right-width", "border-spacing", "border-style", "border-top", "border-top-color", "border-top-style",
    "border-top-width", "border-width", "clear", "color", "direction", "display", "float", "font", "font-family",
    "font-size", "font-style", "font-variant", "font-weight", "height", "letter-spacing", "line-height",
    "list-style-type", "margin", "margin-bottom", "margin-left", "margin-right", "margin-top", "max-height",
    "max-width", "min-height", "min-width", "padding", "padding-bottom", "padding-left", "padding-right",
    "padding-top", "table-layout", "text-align", "text-decoration", "text-indent", "text-transform",
    "vertical-align", "white-space", "width", "word-break", "word-spacing", "word-wrap", "overflow-wrap",
    "background",
}
_BAD_CSS = re.compile(r"url\s*\(|expression\s*\(|@import|javascript:|behavior\s*:|-moz-binding|\\|image-set|"
                      r"image\s*\(|element\s*\(|var\s*\(|attr\s*\(|src\s*\(", re.I)


@dataclass(frozen=True)
class CleanHtml:
    html: str
    blocked_images: int
    truncated: bool = False


def clean_style(value: str) -> str | None:
    """Keep only declarations without anything that loads, runs or escapes (checked after nh3's property list)."""
    kept = []
    for decl in value.split(";"):
        decl = decl.strip()
        if not decl or ":" not in decl:
            continue
        if _BAD_CSS.search(decl) or "/*" in decl or "<" in decl:
            continue
        prop = decl.split(":", 1)[0].strip().lower()
        if prop == "position":
            continue
        kept.append(decl)
    return "; ".join(kept) or None


def sanitize_html(markup: str, *, cid_url: Callable[[str], str | None], allow_remote: bool) -> CleanHtml:
    """Clean an HTML part for display; see the module docstring."""
    truncated = len(markup) > MAX_HTML
    if truncated:
        markup = markup[:MAX_HTML]
    blocked = 0
    try:
        inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False, keep_link_tags=False)
        inlined = inliner.inline(markup)
    except BaseException:  # noqa: B036 - a CSS parse failure (or panic) must not stop the message from showing
        inlined = markup

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        if attr == "style":
            return clean_style(value)
        if tag == "img" and attr == "src":
            v = value.strip()
            low = v.lower()
            if low.startswith("cid:"):
                return cid_url(v[4:])
            if low.startswith(("http://", "https://", "//")):
                if allow_remote and not low.startswith("//"):
                    return v
                blocked += 1
                return None
            return None  # data:, relative and unknown sources never load
        if attr == "href":
            low = value.strip().lower()
            if low.startswith("cid:"):
                return None
        return value

    try:
        cleaned = nh3.clean(
            inlined,
            tags=TAGS,
            clean_content_tags={"script", "style", "title", "head", "template", "noscript", "textarea", "select",
                                "svg", "math", "iframe", "object", "embed", "frameset", "noembed", "xmp"},
            attributes=ATTRIBUTES,
            attribute_filter=attribute_filter,
            url_schemes=URL_SCHEMES,
            strip_comments=True,
            link_rel="noopener noreferrer",
            set_tag_attribute_values={"a": {"target": "_blank"}},
            filter_style_properties=STYLE_PROPERTIES,
        )
    except BaseException:  # noqa: B036 - PanicException is a BaseException
        cleaned = "<pre>" + html_mod.escape(markup) + "</pre>"
    return CleanHtml(cleaned, blocked, truncated)


FRAME_STYLE = ("body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;padding:16px;"
               "color:#1d2330;background:#fff;overflow-wrap:anywhere}img{max-width:100%;height:auto}"
               "table{max-width:100%}pre{white-space:pre-wrap}blockquote{margin-left:.5em;padding-left:.8em;"
               "border-left:3px solid #c7cfdd;color:#4a5366}")


def document(body_html: str) -> str:
    """A whole document around cleaned HTML (served under :func:`frame_csp`)."""
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><base target=\"_blank\">"
            f"<style>{FRAME_STYLE}</style></head><body>{body_html}</body></html>")


def frame_csp(allow_remote: bool) -> str:
    """CSP of a message body document: nothing runs; images from us (and the web only when asked)."""
    img = "'self' https: http:" if allow_remote else "'self'"
    return (f"default-src 'none'; img-src {img}; style-src 'unsafe-inline'; font-src 'none'; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
            "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox")
