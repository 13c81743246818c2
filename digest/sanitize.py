"""Teacher-written HTML: made safe for the mail (an allowlist) and readable as plain text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

ALLOWED_TAGS = frozenset(
    {"p", "br", "strong", "b", "em", "i", "u", "ul", "ol", "li", "h2", "h3", "h4", "blockquote",
     "a"}
)  # fmt: skip
ALLOWED_URL_SCHEMES = frozenset({"https", "mailto"})

# Editors write lines as <div>s and titles as <h1>: dropping those tags alone would glue
# "Line one" and "Line two" into "Line oneLine two". A first, wider pass keeps them (still
# sanitised) so that _Reshaper can turn them into allowed structure before the strict pass.
_LINE_TAGS = frozenset(
    {"div", "section", "article", "header", "footer", "main", "aside", "nav", "figure",
     "figcaption", "address", "pre", "center", "table", "thead", "tbody", "tfoot", "tr",
     "caption", "dl", "dt", "dd"}
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
_RENAMED = {"h1": "h2", "h5": "h4", "h6": "h4"}
_BLOCK_TAGS = frozenset({"p", "ul", "ol", "li", "h2", "h3", "h4", "blockquote"})
_TRAILING_BREAKS = re.compile(r"(?:<br>\s*)+$")

# Their content is code or a fallback, never text a parent should read.
_CLEAN_CONTENT = frozenset(
    {"script", "style", "iframe", "noscript", "template", "object", "svg", "math"}
)
_LINK_ATTRIBUTES = {"a": {"href"}}

_wide_cleaner = nh3.Cleaner(
    tags=set(ALLOWED_TAGS | _LINE_TAGS | _CELL_TAGS | set(_RENAMED)),
    clean_content_tags=set(_CLEAN_CONTENT),
    attributes=_LINK_ATTRIBUTES,
    url_schemes=set(ALLOWED_URL_SCHEMES),
    url_relative="deny",
    link_rel=None,
)
_strict_cleaner = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(_CLEAN_CONTENT),
    attributes=_LINK_ATTRIBUTES,
    url_schemes=set(ALLOWED_URL_SCHEMES),
    url_relative="deny",  # a relative link means nothing in a mail
    link_rel="noopener noreferrer",
)


def clean_teacher_html(html: str) -> str:
    """Keep only allowlisted tags (links: https/mailto only); other tags go, their text stays."""
    reshaper = _Reshaper()
    reshaper.feed(_wide_cleaner.clean(html))
    reshaper.close()
    # The strict pass is the security boundary: whatever the reshaper wrote, only the
    # allowlist survives it.
    return _strict_cleaner.clean(reshaper.output())


class _Reshaper(HTMLParser):
    """Rewrites nh3-clean HTML: h1 → h2, h5/h6 → h4, a line-ish container ends its line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self._parts: list[str] = []
        self._inline_pending = False  # text since the last block boundary

    def output(self) -> str:
        # A line break that closed the last line would only add an empty one.
        return _TRAILING_BREAKS.sub("", "".join(self._parts))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = _RENAMED.get(tag, tag)
        if tag in _LINE_TAGS or tag in _CELL_TAGS:
            return
        if tag in _BLOCK_TAGS:
            self._inline_pending = False
        href = dict(attrs).get("href")
        # nh3 wrote these attributes, so only the href needs re-escaping.
        quoted = f' href="{_escape_attribute(href)}"' if tag == "a" and href is not None else ""
        self._parts.append(f"<{tag}{quoted}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        tag = _RENAMED.get(tag, tag)
        if tag in _CELL_TAGS:
            self._parts.append(" ")
        elif tag in _LINE_TAGS:
            if self._inline_pending:
                self._parts.append("<br>")
                self._inline_pending = False
        else:
            if tag in _BLOCK_TAGS:
                self._inline_pending = False
            self._parts.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if data.strip():
            self._inline_pending = True
        self._parts.append(data)

    def handle_entityref(self, name: str) -> None:
        self._inline_pending = True
        self._parts.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._inline_pending = True
        self._parts.append(f"&#{name};")


def _escape_attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


# --- plain text -------------------------------------------------------------------------------

_SPACE = re.compile(r"[ \t\n\r\f]+")


def teacher_html_to_text(html: str, references: list[str]) -> str:
    """Sanitised teacher HTML as text lines: a line a paragraph, "- " list items, "> " quotes.

    A link becomes "label [n]" with its URL appended to ``references`` (n counts from 1 there).
    Lines are not wrapped: the renderer wraps the whole text part at once.
    """
    writer = _TextWriter(references)
    writer.feed(html)
    writer.close()
    return writer.text()


class _TextWriter(HTMLParser):
    def __init__(self, references: list[str]) -> None:
        super().__init__(convert_charrefs=True)
        self._references = references
        self._lines: list[str] = []
        self._inline: list[str] = []
        self._lists: list[list[int | str]] = []  # [tag, items so far], innermost last
        self._quote_depth = 0
        self._bullet: str | None = None  # the marker the next line of a list item starts with
        self._hang = ""  # the indent of a list item's later lines
        self._link: tuple[str | None, int] | None = None  # (href, where its label starts)

    def text(self) -> str:
        self._end_line()
        while self._lines and not self._lines[-1]:
            self._lines.pop()
        return "\n".join(self._lines)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("p", "h2", "h3", "h4", "blockquote"):
            self._end_block()
            if tag == "blockquote":
                self._quote_depth += 1
        elif tag == "br":
            if not "".join(self._inline).strip():
                self._blank_line()
            self._end_line()
        elif tag in ("ul", "ol"):
            self._end_block()
            self._lists.append([tag, 0])
        elif tag == "li":
            self._end_line()
            if self._lists:
                current = self._lists[-1]
                current[1] = int(current[1]) + 1
                self._bullet = f"{current[1]}. " if current[0] == "ol" else "- "
        elif tag == "a":
            self._link = (dict(attrs).get("href"), len(self._inline))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "h2", "h3", "h4"):
            self._end_block()
        elif tag == "blockquote":
            self._end_block()
            self._quote_depth = max(0, self._quote_depth - 1)
        elif tag in ("ul", "ol"):
            self._end_line()
            if self._lists:
                self._lists.pop()
            if not self._lists:
                self._blank_line()
        elif tag == "li":
            self._end_line()
        elif tag == "a" and self._link is not None:
            href, start = self._link
            self._link = None
            # A <br> inside the link may have ended a line: then its label starts this one.
            label = _SPACE.sub(" ", "".join(self._inline[min(start, len(self._inline)) :])).strip()
            if not href or label in (href, href.removeprefix("mailto:")):
                return  # the label already says where it goes
            if not label:
                self._inline.append(href)
                return
            self._references.append(href)
            self._inline.append(f" [{len(self._references)}]")

    def handle_data(self, data: str) -> None:
        self._inline.append(data)

    def _end_block(self) -> None:
        # Inside a list item a paragraph is only a new line; elsewhere a blank line separates.
        if self._lists:
            self._end_line()
        else:
            self._blank_line()

    def _blank_line(self) -> None:
        self._end_line()
        if self._lines and self._lines[-1]:
            self._lines.append("")

    def _end_line(self) -> None:
        words = _SPACE.sub(" ", "".join(self._inline)).strip(" ")
        self._inline = []
        if words:
            self._lines.append(self._prefix() + words)

    def _prefix(self) -> str:
        quote = "> " * self._quote_depth
        if not self._lists:
            return quote
        if self._bullet is not None:
            indent = "  " * (len(self._lists) - 1)
            self._hang = indent + " " * len(self._bullet)
            bullet, self._bullet = self._bullet, None
            return quote + indent + bullet
        return quote + self._hang
