"""Render a mail: MailContent → HTML (MJML, CSS inlined) + plain text + headers, the mail's bytes.

Preview and sending both call ``Renderer.render``, so an administrator sees what a parent gets.

The HTML template is compiled once per language: its MJML is compiled and its CSS inlined at
start-up, with each Jinja statement kept in place as an HTML comment (``<!--{% … %}-->``, inside
``<mj-raw>`` between MJML elements), which MRML and the HTML parser leave where it is; the comments
are then unwrapped into a Jinja template of finished HTML. A mail is one Jinja render of that.
``Renderer.reference_html`` is the per-message pipeline it replaces (Jinja → MJML → css-inline),
kept to prove the two equal (tests/test_render_equality.py) and to measure against. For them to
be equal the template's layout must not depend on data: no element whose styling depends on its
siblings or on a value, and the teacher's HTML, which is data, is styled inside its wrappers once
per post (``.post .body``) with the same CSS.
"""

from __future__ import annotations

import email
import functools
import itertools
import logging
import re
import secrets
import textwrap
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, tzinfo
from email.headerregistry import BaseHeader, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import css_inline
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from markupsafe import Markup, escape
from mjml import mjml2html

from digest import mime
from digest.calendar import attachment_name, mail_calendar
from digest.content import (
    MAX_THUMBNAILS as MAX_THUMBNAILS,  # re-exported: how many photos a post shows in the mail
)
from digest.content import (
    EventInfo,
    GroupSection,
    LinkInfo,
    MailContent,
    Photo,
    PostContent,
    SchoolInfo,
    SignupInfo,
)
from digest.i18n import (
    DEFAULT_LOCALE,
    available_locales,
    format_names,
    format_span,
    format_when,
    resolve_locale,
    translations,
)
from digest.sanitize import teacher_html_to_text
from digest.settings import Settings

# Gmail clips a mail whose decoded HTML is above "102 KB" and hides the rest, footer included.
GMAIL_CLIP_BYTES = 102 * 1024
# Our limit stays below both readings of that KB (102,000 and 104,448 bytes), with room for what
# the wire adds and RenderedMail.size does not count: a CR before every LF once the part is
# encoded for SMTP (a few dozen lines) and the part's final newline.
CLIP_BYTES = 100_000
TEXT_WIDTH = 72
# How many posts' rendered pieces each cache keeps. An edition goes school by school (rows in
# planning order), so a few schools' worth is enough; more would only grow the memory.
_POSTS_CACHED = 512
# How many groups (a heading and its posts, see ``_Section``) the renderer keeps: a school has a
# few dozen, and a batch of rows (DIGEST_SEND_BATCH) holds a few schools.
_SECTIONS_CACHED = 256
# How many pages (the mail of one mix of posts, but for its personal links) the renderer keeps.
# A school's parents share a few dozen mixes (65 at most in a school of 1,500 guardians), and an
# edition goes school by school. A page holds about 60 KB with its encoded parts.
_PAGES_CACHED = 128
_SAFE_SCHEMES = frozenset({"https", "http", "mailto"})
_SAFE_PREFIXES = ("https://", "http://", "mailto:")
# A mail's only personal values in its body: the URL fields of MailContent, filled in per mail.
_PERSONAL = ("preferences_url", "unsubscribe_url")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderedMail:
    """A finished mail and its parts, for sending and for the admin preview."""

    data: bytes  # the mail as sent: CRLF line ends, headers encoded, bodies quoted-printable
    message_id: str
    html: str
    text: str
    subject: str
    size: int  # len(html.encode("utf-8")): what Gmail measures against its 102 KB clip

    @functools.cached_property
    def message(self) -> EmailMessage:
        """The mail parsed back, for whoever wants headers and parts rather than bytes."""
        parsed = email.message_from_bytes(self.data, policy=MAIL_POLICY)
        assert isinstance(parsed, EmailMessage)
        # Parsed headers are kept as source text, which a later flatten with another policy
        # would refold at 78 columns, breaking a long URL: set these two as header objects.
        for name in ("List-Id", "List-Unsubscribe"):
            if name in parsed:
                parsed.replace_header(name, str(parsed[name]))
        return parsed


_PART_ID = re.compile(r"<?([^<>@\s]+)\.p(\d+)@([^<>@\s]+)>?")


def part_message_id(first: str, number: int) -> str:
    """The Message-ID of part ``number`` of a mail whose first part has ``first``."""
    local, _, domain = first.strip().strip("<>").rpartition("@")
    return f"<{local}.p{number}@{domain}>"


def first_part_message_id(message_id: str) -> str | None:
    """Part 1's Message-ID for a later part's (``<x.p2@d>`` → ``<x@d>``); None for others."""
    match = _PART_ID.fullmatch(message_id.strip())
    if match is None or int(match.group(2)) < 2:
        return None
    return f"<{match.group(1)}@{match.group(3)}>"


def templates_path() -> Path:
    """The installed package's ``digest/templates`` if present, else the repo's ``templates/``."""
    installed = Path(__file__).resolve().parent / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class _Html:
    """A mail's HTML part and subject, with what rendering the text part needs."""

    content: MailContent  # with every URL made safe
    locale: str
    now: datetime
    page: _Page | None  # None for the per-message reference pipeline
    subject: str
    html: str
    # ``html`` in pieces (``html`` is their concatenation): the page's, the same for every mail
    # that carries it, and the personal links of this mail.
    segments: tuple[str, ...]
    size: int  # len(html.encode("utf-8")), counted without encoding the page again


@dataclass
class _Page:
    """What every parent whose mail holds the same posts gets, rendered once for all of them.

    The only personal parts of a mail's body are its two links (mail settings, unsubscribe); the
    page holds marks in their place, which each mail fills in (names and address are headers).
    """

    context: dict[str, Any]  # the shared content's, for the text part
    subject: str
    segments: tuple[str, ...]  # the HTML; a piece at an index of ``personal`` is to fill in
    personal: tuple[tuple[int, str], ...]  # (index in segments, the MailContent URL field)
    shared_size: int  # UTF-8 bytes of the segments not in ``personal``
    # The text part, wrapped, once a mail asks for it, in pieces: each post's lines are a piece
    # of their own (the same string in every page that holds the post), and so is each line
    # with a personal link, at the indexes of ``text_personal``, to fill in.
    text: tuple[str, ...] | None = None
    text_personal: tuple[int, ...] = ()
    # ``segments`` and ``text`` quoted-printable (digest.mime.encoded_pieces), once a mail is
    # built: each mail then encodes only its personal pieces, which stay ``str`` here.
    html_wire: list[str | bytes] | None = None
    text_wire: list[str | bytes] | None = None


_K = TypeVar("_K")
_V = TypeVar("_V")


class _Recent(OrderedDict[_K, _V]):
    """At most ``size`` entries, the least recently used dropped first.

    Not cleared all at once: that made the school being sent render its posts again (a third of
    the post renders of an edition).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def recent(self, key: _K) -> _V | None:
        """The entry at ``key``, now the most recently used; None when there is none."""
        found = self.get(key)
        if found is not None:
            self.move_to_end(key)
        return found

    def keep(self, key: _K, value: _V) -> None:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


@dataclass(frozen=True)
class _Section:
    """A group rendered for the page: its heading and posts, as the page's pieces they make."""

    pieces: tuple[str, ...]
    size: int  # their UTF-8 bytes

    @classmethod
    def of(cls, pieces: Iterable[str]) -> _Section:
        kept = tuple(pieces)
        return cls(kept, sum(len(piece.encode("utf-8")) for piece in kept))


@dataclass(frozen=True)
class _Chrome:
    """One language's templates; ``html`` is compiled once (MJML and CSS done), see the top."""

    html: Template
    section: Template  # one group of ``html`` (its heading and posts), compiled with it
    post: Template  # one post of ``html``, compiled with it
    html_source: Template  # the MJML template itself, for the per-message reference pipeline
    styles: str  # the page's <style> elements, to style teacher HTML with
    text: Template
    text_post: Template  # one post of ``text``
    subject: Template
    overview: Template


class Renderer:
    """Turns MailContent into a mail; templates are compiled once per language at start-up."""

    def __init__(
        self,
        settings: Settings,
        templates_dir: Path | None = None,
        *,
        pages_cached: int = _PAGES_CACHED,
    ) -> None:
        """``pages_cached``: how many pages (see ``_page``) to keep; 0 renders each mail whole."""
        self._settings = settings
        self._templates_dir = templates_dir or templates_path()
        self._locale_dir = self._templates_dir / "locale"
        self._inliner = css_inline.CSSInliner(
            load_remote_stylesheets=False,
            keep_link_tags=False,
            keep_style_tags=False,
            keep_at_rules=True,  # the responsive and dark-mode @media rules cannot be inlined
            minify_css=True,
        )
        self._chrome = {
            locale: self._load(locale) for locale in available_locales(self._locale_dir)
        }
        if DEFAULT_LOCALE not in self._chrome:
            raise FileNotFoundError(
                f"no {DEFAULT_LOCALE} catalogue under {self._locale_dir} (the fallback locale)"
            )
        # A post goes to every parent of its group: style its HTML, and format its dates, once.
        self._styled_body = functools.lru_cache(maxsize=_POSTS_CACHED)(self._style_body)
        self._overview = functools.lru_cache(maxsize=_POSTS_CACHED)(self._overview_text)
        self._calendar = functools.lru_cache(maxsize=_POSTS_CACHED)(self._events_calendar)
        # Posts rendered, HTML (Markup) and text, the least recently used dropped first.
        self._posts: _Recent[tuple[object, ...], str | _PostLines] = _Recent(_POSTS_CACHED)
        # Groups rendered (a heading and its posts' HTML), as the page's pieces they make.
        self._sections: _Recent[tuple[object, ...], _Section] = _Recent(_SECTIONS_CACHED)
        self._pages: _Recent[tuple[object, ...], _Page] = _Recent(pages_cached)  # by shared content
        # Marks a post's place in a rendered page; random, so no text in a mail can forge one.
        self._mark = f"\U000f0000{secrets.token_hex(8)}\U000f0000"

    def render(
        self, content: MailContent, *, now: datetime | None = None, message_id: str | None = None
    ) -> RenderedMail:
        """Render ``content`` in its locale (a locale without catalogue falls back to Dutch)."""
        compiled = self._html(content, now)
        subject, html = compiled.subject, compiled.html
        text_segments = self._text_segments(compiled)
        text = "".join(text_segments)
        message_id = message_id or make_msgid(domain=self._settings.mail_domain)
        text_wire, html_wire = self._wire(compiled, text_segments)
        data = self.message_bytes(
            compiled.content,
            compiled.locale,
            subject,
            text_wire,
            html_wire,
            compiled.now,
            message_id,
        )
        return RenderedMail(
            data=data,
            message_id=message_id,
            html=html,
            text=text,
            subject=subject,
            size=compiled.size,
        )

    def html_and_text(
        self, content: MailContent, *, now: datetime | None = None
    ) -> tuple[str, str, str]:
        """(subject, HTML part, text part) of ``content``: ``render`` without the message."""
        compiled = self._html(content, now)
        return compiled.subject, compiled.html, "".join(self._text_segments(compiled))

    def _text_segments(self, compiled: _Html) -> tuple[str, ...]:
        """The text part in pieces: the page's, rendered once, and the lines with personal links."""
        page = compiled.page
        assert page is not None, "the reference pipeline renders no text part"
        if page.text is None:
            template = self._chrome[compiled.locale].text
            text = template.render(
                page.context,
                subject=page.subject,
                plain_sections=_plain_sections(page.context["content"]),
            )
            page.text, page.text_personal = _wrap_page(
                text, self._mark, page.context["rendered_texts"]
            )
        segments = list(page.text)
        for index in page.text_personal:
            segments[index] = self._filled_line(segments[index], compiled.content)
        return tuple(segments)

    @staticmethod
    def _wire(
        compiled: _Html, text_segments: tuple[str, ...]
    ) -> tuple[list[str | bytes], list[str | bytes]]:
        """The text and HTML parts for digest.mime: the page's pieces encoded, once per page."""
        page = compiled.page
        assert page is not None, "the reference pipeline builds no message"
        personal = [index for index, _ in page.personal]
        if page.html_wire is None or page.text_wire is None:
            page.html_wire = mime.encoded_pieces(compiled.segments, personal)
            page.text_wire = mime.encoded_pieces(text_segments, page.text_personal)
        html_wire = page.html_wire.copy()
        for index in personal:
            html_wire[index] = compiled.segments[index]
        text_wire = page.text_wire.copy()
        for index in page.text_personal:
            text_wire[index] = text_segments[index]
        return text_wire, html_wire

    def _filled_line(self, line: str, content: MailContent) -> str:
        """A line of the text part with its personal links in, wrapped as ``_wrap`` would."""
        for name in _PERSONAL:
            line = line.replace(self._personal_mark(name), _printable(getattr(content, name) or ""))
        return "\n".join(_wrapped(line, _wrap_words))  # not cached: the line is this mail's

    def _personal_mark(self, name: str) -> str:
        return f"{self._mark}{name}{self._mark}"

    def _mark_if(self, url: str | None, name: str) -> str | None:
        return self._personal_mark(name) if url else None

    def render_parts(
        self, content: MailContent, *, now: datetime | None = None, limit: int = CLIP_BYTES
    ) -> list[RenderedMail]:
        """The mail as the fewest numbered parts ("deel 1 van 2") whose HTML is at most ``limit``.

        ``[render(content)]`` when that fits. Otherwise whole posts, in order, fill each part
        as far as they fit; each part is a complete mail (masthead, its own overview, footer)
        with its own Message-ID, and a group split over two parts has its heading in both.
        Nothing is cut: a post too large for a part on its own goes alone in one, over the
        limit (Gmail then clips that part behind "View entire message"), with a warning.
        """
        now = now or datetime.now(UTC)  # one Date for every part
        whole = self.render(content, now=now)
        if whole.size <= limit or content.post_count < 2:
            if whole.size > limit:
                _warn_oversized(content, whole.size, limit)
            return [whole]
        posts = [(section, post) for section in content.sections for post in section.posts]
        # A part's size hardly depends on the N of its "deel 1 van N": pack with a guess, and
        # again in the rare case that the guess was wrong.
        parts = max(2, -(-whole.size // limit))
        for _attempt in range(4):
            bounds = self._pack(content, posts, parts, now, limit)
            if len(bounds) == parts:
                break
            parts = len(bounds)
        # Part N's Message-ID is part 1's with ".pN" added, so the outbox row (which keeps part
        # 1's) can be found from a bounce of any part.
        first_id = whole.message_id
        mails = []
        for number, (first, end) in enumerate(bounds, start=1):
            mail = self.render(
                _part_content(content, posts[first:end], number, parts),
                now=now,
                message_id=first_id if number == 1 else part_message_id(first_id, number),
            )
            if mail.size > limit:  # only a part holding a single post can be
                _warn_oversized(content, mail.size, limit, posts[first][1].id)
            mails.append(mail)
        return mails

    def _pack(
        self,
        content: MailContent,
        posts: list[tuple[GroupSection, PostContent]],
        parts: int,
        now: datetime,
        limit: int,
    ) -> list[tuple[int, int]]:
        """Where each part starts and ends in ``posts``, each taking the most posts that fit.

        Greedy filling gives the fewest parts, as a part's size grows with every post it takes;
        bisection keeps the renders (of the HTML only) to a few per part.
        """
        bounds: list[tuple[int, int]] = []
        first = 0
        while first < len(posts):

            def size(end: int, first: int = first) -> int:
                part = _part_content(content, posts[first:end], len(bounds) + 1, parts)
                return self._html(part, now).size

            best = first + 1  # one post always goes, fit or not
            low, high = first + 2, len(posts) if size(best) <= limit else first
            while low <= high:
                middle = (low + high) // 2
                if size(middle) <= limit:
                    best, low = middle, middle + 1
                else:
                    high = middle - 1
            bounds.append((first, best))
            first = best
        return bounds

    def _html(
        self,
        content: MailContent,
        now: datetime | None,
        *,
        reference: Callable[[str], str] | None = None,
    ) -> _Html:
        """The subject and the HTML part, and what the text part needs to follow them.

        ``reference``: the per-message pipeline, with this CSS inliner (see ``reference_html``).
        """
        content, locale, tz, now = self._setting(content, now)
        chrome = self._chrome[locale]
        if reference is not None:
            context = self._context(content, locale, tz, now, reference=True)
            subject = _header_text(chrome.subject.render(context))
            mjml = chrome.html_source.render(context, subject=subject)
            html = reference(_lean_reset(mjml2html(mjml, fonts={}, disable_comments=True)))
            size = len(html.encode("utf-8"))
            return _Html(content, locale, now, None, subject, html, (html,), size)
        page = self._page(content, locale, tz, now)
        segments = list(page.segments)
        size = page.shared_size
        for index, name in page.personal:
            segments[index] = str(escape(_printable(getattr(content, name))))
            size += len(segments[index].encode("utf-8"))
        html = "".join(segments)
        return _Html(content, locale, now, page, page.subject, html, tuple(segments), size)

    def _setting(
        self, content: MailContent, now: datetime | None
    ) -> tuple[MailContent, str, tzinfo, datetime]:
        """``content`` with every URL made safe, its language (with a catalogue), zone and time."""
        if content.kind == "post" and [len(s.posts) for s in content.sections] != [1]:
            raise ValueError("a per-post mail has exactly one group with one post")
        locale = resolve_locale(content.locale, self._locale_dir)
        tz = ZoneInfo(content.school.timezone)
        return _with_safe_urls(content), locale, tz, _aware(now or datetime.now(UTC), tz)

    def _page(self, content: MailContent, locale: str, tz: tzinfo, now: datetime) -> _Page:
        """The page of every mail whose content differs from ``content``'s only in who gets it."""
        shared = replace(
            content,
            recipient_names=(),
            address="",
            extra_headers={},  # headers only
            preferences_url=self._mark_if(content.preferences_url, "preferences_url"),
            unsubscribe_url=self._mark_if(content.unsubscribe_url, "unsubscribe_url"),
        )
        key = (locale, now, *(getattr(shared, name) for name in _SHARED_FIELDS))
        page = self._pages.recent(key)
        if page is not None:
            return page
        chrome = self._chrome[locale]
        context = self._context(shared, locale, tz, now)
        subject = _header_text(chrome.subject.render(context))
        # Each group (its heading and posts) is a mark in the page, replaced by the group's
        # cached pieces; so is each personal link, which each mail fills in.
        pieces = chrome.html.render(context, subject=subject).split(self._mark)
        sections: list[_Section] = context["rendered_sections"]
        segments: list[str] = []
        personal: list[tuple[int, str]] = []
        shared_size = 0
        # The document's head (styles, title) is the same in every page of a school's week: a
        # piece of its own, it is encoded once for all of them (digest.mime.encoded_pieces).
        head, body, rest = pieces[0].partition("<body")
        if body:
            segments.append(head)
            shared_size += len(head.encode("utf-8"))
            pieces[0] = body + rest
        for odd, piece in zip(itertools.cycle((False, True)), pieces, strict=False):
            if not odd:
                segments.append(piece)
                shared_size += len(piece.encode("utf-8"))
            elif piece in _PERSONAL:
                personal.append((len(segments), piece))
                segments.append(piece)
            else:
                section = sections[int(piece)]
                segments.extend(section.pieces)
                shared_size += section.size
        page = _Page(context, subject, tuple(segments), tuple(personal), shared_size)
        self._pages.keep(key, page)
        return page

    def reference_html(
        self,
        content: MailContent,
        *,
        now: datetime | None = None,
        inline: Callable[[str], str] | None = None,
    ) -> str:
        """The HTML part by the per-message pipeline: Jinja → mjml-python → css-inline.

        What ``render`` did before the template was compiled once; the two must be equal (up to
        whitespace and how characters are escaped); the benchmarks measure one against the other
        (``inline`` replaces css-inline, e.g. by premailer).
        """
        return self._html(content, now, reference=inline or self._inliner.inline).html

    def reference_text(self, content: MailContent, *, now: datetime | None = None) -> str:
        """The text part rendered whole, per message: every post in its place, then wrapped.

        ``render`` wraps each post's text once for all the pages that hold it, and a page
        around its posts; the two must be equal (tests/test_render_equality.py).
        """
        content, locale, tz, now = self._setting(content, now)
        chrome = self._chrome[locale]
        context = self._context(content, locale, tz, now, reference=True)
        subject = _header_text(chrome.subject.render(context))
        text = chrome.text.render(context, subject=subject, plain_sections=_plain_sections(content))
        return _wrap(text)

    # --- templates ----------------------------------------------------------------------------

    def _load(self, locale: str) -> _Chrome:
        catalogue = translations(locale, self._locale_dir)
        html_env = _environment(self._templates_dir, autoescape=True)
        text_env = _environment(self._templates_dir, autoescape=False)
        text_env.filters["underline"] = _underline
        for env in (html_env, text_env):
            # Newstyle gettext: %-formatting happens in the call, and with autoescape the
            # variables are escaped while the translator's text is trusted.
            env.install_gettext_translations(catalogue, newstyle=True)  # type: ignore[attr-defined]
        loader = html_env.loader
        assert loader is not None
        source = loader.get_source(html_env, "newsletter.mjml.j2")[0]
        post = loader.get_source(html_env, _POST_TEMPLATE)[0]
        # The post's template goes in whole (so its CSS is inlined in its place), between marks
        # where the compiled page is cut in two: the page, and the post it renders once per post.
        if source.count(_POST_INCLUDE) != 1:
            raise ValueError(f"newsletter.mjml.j2 must hold {_POST_INCLUDE} once")
        source = source.replace(_POST_INCLUDE, f"{_POST_MARK}{post}{_POST_MARK}")
        page = _lean_reset(mjml2html(_statements_as_comments(source), fonts={}))
        before, post, after = _comments_as_statements(self._inliner.inline(page)).split(_POST_MARK)
        html, section = _section_apart(f"{before}{{{{ post_html(post, section) }}}}{after}")
        text = loader.get_source(text_env, "newsletter.txt.j2")[0]
        if text.count(_TEXT_INCLUDE) != 1:
            raise ValueError(f"newsletter.txt.j2 must hold {_TEXT_INCLUDE} once")
        # The include's line end is trimmed (trim_blocks); an expression's would not be.
        text = text.replace(f"{_TEXT_INCLUDE}\n", "{{ post_text(item) }}")
        text_post = loader.get_source(text_env, _TEXT_POST_TEMPLATE)[0]
        return _Chrome(
            html=html_env.from_string(_translated(html, catalogue)),
            section=html_env.from_string(_translated(section, catalogue)),
            post=html_env.from_string(_translated(post, catalogue)),
            html_source=html_env.get_template("newsletter.mjml.j2"),
            styles="".join(_STYLE.findall(_CONDITIONAL.sub("", page))),
            text=text_env.from_string(_translated(text, catalogue)),
            text_post=text_env.from_string(_translated(text_post, catalogue)),
            subject=text_env.get_template("subject.txt.j2"),
            overview=text_env.get_template("overview.txt.j2"),
        )

    def _style_body(self, body_html: str, styles: str) -> Markup:
        """Teacher HTML with the page's CSS inlined as if it sat in ``.post .body``."""
        page = (
            f"<!DOCTYPE html><html><head>{styles}</head><body>"
            f'<div class="post"><div class="body"><!--{_BODY_MARK}-->{body_html}'
            f"<!--{_BODY_MARK}--></div></div></body></html>"
        )
        return Markup(self._inliner.inline(page).split(f"<!--{_BODY_MARK}-->")[1])

    def _events_calendar(
        self, posts: tuple[PostContent, ...], school: SchoolInfo, now: datetime
    ) -> bytes | None:
        """The calendar of these event posts (the same for every parent of their groups)."""
        if not posts:
            return None
        events = MailContent(school, "", (), "", (GroupSection("", "", "", posts),))
        return mail_calendar(events, self._settings, now=now)

    def _overview_text(
        self, locale: str, count: int, groups: tuple[str, ...], part: int | None
    ) -> str:
        names = format_names(groups, locale)
        template = self._chrome[locale].overview
        return template.render(count=count, groups=names, part=part).strip()

    def _context(
        self,
        content: MailContent,
        locale: str,
        tz: tzinfo,
        now: datetime,
        *,
        reference: bool = False,
    ) -> dict[str, Any]:
        posts = [post for section in content.sections for post in section.posts]
        week = content.week or (content.cutoff or now).astimezone(tz).isocalendar().week
        groups = tuple(s.name for s in content.sections if s.posts)
        # Plain text here; the HTML template escapes it like any other value.
        overview = self._overview(locale, len(posts), groups, content.part)
        styles = self._chrome[locale].styles

        def when(moment: datetime) -> str:
            return _format_when(moment, tz, locale, now)

        def span(event: EventInfo) -> str:
            return _format_span(event.starts_at, event.ends_at, tz, locale, now)

        def span_unbroken(event: EventInfo) -> str:
            # Word joiners keep "08:30–10:00" on one line on a phone (HTML only).
            return span(event).replace("–", "\u2060–\u2060")

        is_post = content.kind == "post"
        chrome = self._chrome[locale]

        def post_html(post: PostContent, section: GroupSection) -> Markup:
            # The same for every parent who gets this post in this language this week.
            key = ("html", locale, is_post, section.name, tz, now, post)
            html = self._posts.recent(key)
            if not isinstance(html, str):  # not rendered yet
                html = Markup(chrome.post.render(context, post=post, section=section))
                self._posts.keep(key, html)
            return Markup(html)

        def section_html(section: GroupSection) -> Markup:
            # A group's heading and posts, the same in every page that holds this group with
            # these posts: the page's pieces they make are rendered once for all those pages.
            key = (locale, is_post, tz, now, section)
            rendered = self._sections.recent(key)
            if rendered is None:
                posts_here: list[str] = []

                def post_mark(post: PostContent, section: GroupSection) -> Markup:
                    posts_here.append(post_html(post, section))
                    return Markup(f"{self._mark}{len(posts_here) - 1}{self._mark}")

                cut = chrome.section.render(context, section=section, post_html=post_mark)
                rendered = _Section.of(
                    posts_here[int(piece)] if odd else piece
                    for odd, piece in zip(
                        itertools.cycle((False, True)), cut.split(self._mark), strict=False
                    )
                )
                self._sections.keep(key, rendered)
            rendered_sections.append(rendered)
            return Markup(f"{self._mark}{len(rendered_sections) - 1}{self._mark}")

        rendered_sections: list[_Section] = []

        def post_text(item: _PlainPost) -> str:
            if reference:
                return chrome.text_post.render(context, item=item)
            key = ("text", locale, is_post, tz, now, item.post)
            text = self._posts.recent(key)
            if text is None:
                text = _PostLines.of(chrome.text_post.render(context, item=item))
                self._posts.keep(key, text)
            if isinstance(text, str):
                return text  # goes in as it is, wrapped with the page
            # A line of its own in the page, between the blank lines the post starts and
            # ends with; the page is wrapped around it and the post's lines put in its place.
            rendered_texts.append(text.lines)
            mark = f"{self._mark}{len(rendered_texts) - 1}{self._mark}"
            return "\n" * text.lead + mark + "\n" * text.trail

        rendered_texts: list[str] = []

        def teacher_html(post: PostContent) -> Markup:
            # Sanitised by clean_teacher_html when the content was built.
            body = _printable(Markup(post.body_html))
            return body if reference else self._styled_body(body, styles)

        context = {
            "content": content,
            "lang": locale,
            "is_post": is_post,
            "week": week,
            "posts": posts,
            "overview": overview,
            "preview": _preview(content, overview, posts),
            "when": when,
            "span": span,
            "span_unbroken": span_unbroken,
            "domain": _domain,
            "teacher_html": teacher_html,
            "section_html": section_html,
            "rendered_sections": rendered_sections,
            "post_text": post_text,
            "rendered_texts": rendered_texts,
            "shown_photos": _shown_photos,
            "hidden_photos": _hidden_photos,
        }
        return context

    # --- the message --------------------------------------------------------------------------

    def message_bytes(
        self,
        content: MailContent,
        locale: str,
        subject: str,
        text: str | Sequence[str | bytes],
        html: str | Sequence[str | bytes],
        now: datetime,
        message_id: str,
    ) -> bytes:
        """The mail's bytes around these parts (``content`` already has safe URLs).

        ``text`` and ``html`` may come in pieces, some encoded beforehand (see ``_wire``).
        """
        school = _header_text(content.school.name)
        mail_from = self._settings.mail_from
        headers = [
            ("Subject", mime.unstructured(subject)),
            ("From", mime.address(school, mail_from)),
            (
                "To",
                mime.address(_recipient_display(content.recipient_names, locale), content.address),
            ),
        ]
        if content.school.reply_to:
            headers.append(("Reply-To", mime.address(school, content.school.reply_to)))
        headers += [
            ("Date", _date_header(now)),
            ("Message-ID", message_id),
            ("List-Id", _list_id(school, content.school.id, self._settings.mail_domain)),
        ]
        if content.unsubscribe_url:
            mailbox = content.school.reply_to or mail_from
            headers.append(
                (
                    "List-Unsubscribe",
                    f"<{_header_url(content.unsubscribe_url)}>, "
                    f"<mailto:{quote(mailbox, safe='@')}?subject=unsubscribe>",
                )
            )
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        headers += [("Auto-Submitted", "auto-generated"), ("Content-Language", locale)]
        for name, value in content.extra_headers.items():
            if not _FIELD_NAME.fullmatch(name) or name.lower() in _STRUCTURAL_HEADERS:
                raise ValueError(f"{name!r} cannot be an extra header")
            # The builder's value replaces ours, it does not add a second.
            headers = [(n, v) for n, v in headers if n.lower() != name.lower()]
            headers.append((name, mime.unstructured(_header_text(value))))
        calendar = self._calendar(
            tuple(post for section in content.sections for post in section.posts if post.event),
            content.school,
            now,
        )
        attachment = None
        if calendar is not None:
            name = attachment_name(locale)
            attachment = mime.Attachment(
                calendar, "calendar", name, {"charset": "utf-8", "method": "PUBLISH"}
            )
        return mime.build_mail(headers, text, html, attachment)


class _UnbrokenHeader(UniqueUnstructuredHeader, BaseHeader):
    """A header holding URLs, folded only at RFC 5322's 998-character limit.

    The stdlib turns a token longer than a 78-column line into RFC 2047 encoded words, which
    breaks a long unsubscribe URL. The header object folds itself, so this holds whatever
    policy the message is later written with (deliver uses plain ``email.policy.SMTP``).
    """

    max_count: ClassVar[Literal[1]] = 1  # one List-Id, one List-Unsubscribe

    def fold(self, *, policy: Policy) -> str:
        return super().fold(policy=policy.clone(max_line_length=998))


def _header_registry() -> HeaderRegistry:
    registry = HeaderRegistry()
    for name in ("list-unsubscribe", "list-id"):
        registry.map_to_type(name, _UnbrokenHeader)
    return registry


MAIL_POLICY = SMTP.clone(header_factory=_header_registry())


# --- helpers ----------------------------------------------------------------------------------

# What keys a page: every field of MailContent but the headers-only dict (not hashable).
_SHARED_FIELDS = tuple(f.name for f in fields(MailContent) if f.name != "extra_headers")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII but the colon
_STRUCTURAL_HEADERS = frozenset({"mime-version", "content-type", "content-transfer-encoding"})
_LIST_LABEL = re.compile(r"[^a-z0-9-]+")
_PHRASE_SPECIALS = re.compile(r'["\\<>()\[\],;:@]')


class _FlatGlobals(Environment):
    """An environment whose templates keep their globals in one dict, taken when each is made.

    Jinja keeps a template's globals as a ChainMap over the environment's, and every render
    copies that key by key into the new context: about a tenth of rendering a newsletter. Ours are
    complete once ``_load`` has installed gettext, before it makes any template, and nothing
    changes them after.
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


def _environment(templates_dir: Path, *, autoescape: bool) -> Environment:
    return _FlatGlobals(
        loader=FileSystemLoader(templates_dir),
        autoescape=(
            select_autoescape(
                enabled_extensions=("mjml", "mjml.j2", "html", "html.j2", "txt", "txt.j2"),
                default_for_string=True,
                default=True,
            )
            if autoescape
            else False
        ),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,  # a misspelt name fails the render instead of vanishing
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_printable,
    )


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(value: Any) -> Any:
    """Every value a template prints, without the control characters that break MJML's parser.

    An imported string may carry a stray BEL or vertical tab; it would make the whole mail fail to
    compile. Markup (sanitised teacher HTML) stays Markup.
    """
    return _printable_text(value) if isinstance(value, str) else value


# The same titles, names and post texts are printed in page after page: each is looked through
# once (``typed``: Markup and str stay apart).
@functools.lru_cache(maxsize=_POSTS_CACHED, typed=True)
def _printable_text(value: str) -> str:
    if not _UNPRINTABLE.search(value):
        return value
    cleaned = _UNPRINTABLE.sub("", value)
    return Markup(cleaned) if isinstance(value, Markup) else cleaned


def _aware(moment: datetime, tz: tzinfo) -> datetime:
    # A naive time is read in the school's zone, as everywhere else in the service.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def _header_text(value: str) -> str:
    """One header-safe line: control characters (CR, LF, …) become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


@functools.lru_cache(maxsize=16)  # an edition's mails share their Date
def _date_header(now: datetime) -> str:
    return format_datetime(now)


def _header_url(url: str) -> str:
    # Inside <…> a URL must not carry spaces, brackets or control characters.
    return re.sub(r"[\s<>\x00-\x1f\x7f]", "", url)


def _recipient_display(names: tuple[str, ...], locale: str) -> str:
    """One or two names ("Fatma Yilmaz en Sem de Vries"); more make no good display name."""
    cleaned = [_header_text(name) for name in names if _header_text(name)]
    return format_names(cleaned, locale) if 0 < len(cleaned) <= 2 else ""


def _list_id(school_name: str, school_id: str, domain: str) -> str:
    """RFC 2919: "<school name>" <schoolid.digest.domain>."""
    label = _LIST_LABEL.sub("-", school_id.lower()).strip("-") or "school"
    phrase = " ".join(_PHRASE_SPECIALS.sub(" ", school_name).split())
    # An ASCII phrase is quoted; a non-ASCII one is encoded words.
    shown = f'"{phrase}" ' if phrase.isascii() and phrase else f"{mime.encoded_words(phrase)} "
    return f"{shown if phrase else ''}<{label}.digest.{domain}>"


# --- compiling the HTML template once ---------------------------------------------------------

_STATEMENT = re.compile(r"\{%.*?%\}", re.S)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_MJ_TEXT = re.compile(r"<(/?)mj-text\b")
_WRAPPED = re.compile(r"<!--(\{%.*?%\})-->", re.S)
_CONDITIONAL = re.compile(r"<!--\[if .*?<!\[endif\]-->", re.S)
_STYLE = re.compile(r"<style\b[^>]*>.*?</style>", re.S)
_BODY_MARK = "teacher-html"
_POST_TEMPLATE = "newsletter_post.mjml.j2"
_POST_INCLUDE = '{% include "newsletter_post.mjml.j2" %}'
_POST_MARK = "<!--post-->"
_TEXT_POST_TEMPLATE = "newsletter_post.txt.j2"
_TEXT_INCLUDE = '{% include "newsletter_post.txt.j2" %}'


_SECTION_LOOP = "{% for section in content.sections %}"
_LOOP_TAG = re.compile(r"\{%-?\s*(for|endfor)\b.*?%\}", re.S)


def _section_apart(html: str) -> tuple[str, str]:
    """The compiled page with its loop over the groups calling ``section_html``, and the loop's
    body: one group, rendered once for every page that holds it (``Renderer._context``)."""
    if html.count(_SECTION_LOOP) != 1:
        raise ValueError(f"newsletter.mjml.j2 must hold {_SECTION_LOOP} once")
    start = html.index(_SECTION_LOOP) + len(_SECTION_LOOP)
    depth = 1
    for tag in _LOOP_TAG.finditer(html, start):
        depth += 1 if tag.group(1) == "for" else -1
        if depth == 0:
            page = f"{html[:start]}{{{{ section_html(section) }}}}{html[tag.start() :]}"
            return page, html[start : tag.start()]
    raise ValueError(f"newsletter.mjml.j2: {_SECTION_LOOP} has no {{% endfor %}}")


def _statements_as_comments(source: str) -> str:
    """The MJML template with each Jinja statement an HTML comment that MRML keeps in place.

    Inside an ``<mj-text>`` (HTML) a bare comment; between MJML elements one in ``<mj-raw>``.
    Text between table rows would be moved out of the table by an HTML parser; a comment is not.
    """
    source = _JINJA_COMMENT.sub("", source)
    pieces: list[str] = []
    depth = 0
    position = 0
    for statement in _STATEMENT.finditer(source):
        before = source[position : statement.start()]
        depth += sum(-1 if close else 1 for close in _MJ_TEXT.findall(before))
        tag = statement.group(0)
        if "--" in tag or "<" in tag or ">" in tag:
            raise ValueError(f"{tag!r} cannot sit in an HTML comment")
        pieces += [before, f"<!--{tag}-->" if depth else f"<mj-raw><!--{tag}--></mj-raw>"]
        position = statement.end()
    pieces.append(source[position:])
    return "".join(pieces)


def _comments_as_statements(html: str) -> str:
    """The compiled page with its statement comments turned back into Jinja statements."""
    return _WRAPPED.sub(r"\1", html)


_CONSTANT_GETTEXT = re.compile(r'\{\{ _\("((?:[^"\\{}%]|%%)*)"\) \}\}')


def _translated(source: str, catalogue: Translations) -> str:
    """``{{ _("When") }}`` written out in the catalogue's language: one call fewer per mail.

    Only a call without variables; newstyle gettext still %-formats it (so "%%" is "%").
    """

    def translate(match: re.Match[str]) -> str:
        return str(catalogue.gettext(match.group(1))) % {}

    return _CONSTANT_GETTEXT.sub(translate, source)


def _preview(content: MailContent, overview: str, posts: list[PostContent]) -> str:
    """The inbox preview line: the post's group, author and title, or the overview and titles."""
    if content.kind == "post":
        section = content.sections[0]
        post = section.posts[0]
        return _printable(f"{section.name} · {post.author}: {post.title}")  # type: ignore[no-any-return]
    titles = " · ".join(_printable(post.title) for post in posts[:3])
    return f"{overview} {titles}" if titles else overview


@functools.lru_cache(maxsize=4 * _POSTS_CACHED)
def _format_when(moment: datetime, tz: tzinfo, locale: str, now: datetime) -> str:
    return format_when(moment, tz, locale, now=now)


@functools.lru_cache(maxsize=4 * _POSTS_CACHED)
def _format_span(
    starts: datetime, ends: datetime | None, tz: tzinfo, locale: str, now: datetime
) -> str:
    return format_span(starts, ends, tz, locale, now=now)


def _safe_url(url: str | None) -> str | None:
    if not url:
        return None
    url = url.strip()
    if url[:8].lower().startswith(_SAFE_PREFIXES):  # most URLs: the scheme urlsplit would find
        return url
    return url if urlsplit(url).scheme.lower() in _SAFE_SCHEMES else None


@functools.lru_cache(maxsize=_POSTS_CACHED)  # a post goes to every parent of its group
def _safe_post(item: PostContent) -> PostContent:
    """The post with its every URL http(s) or mailto; a javascript: link or photo goes."""

    def photo(item: Photo) -> Photo | None:
        url = _safe_url(item.url)
        return replace(item, url=url, link=_safe_url(item.link)) if url else None

    def link(item: LinkInfo) -> LinkInfo:
        return replace(item, url=_safe_url(item.url) or "")

    def signup(item: SignupInfo | None) -> SignupInfo | None:
        return replace(item, signup_url=_safe_url(item.signup_url)) if item else None

    photos = tuple(p for p in map(photo, item.photos) if p is not None)
    return replace(
        item,
        url=_safe_url(item.url),
        photos=photos,
        links=tuple(map(link, item.links)),
        signup=signup(item.signup),
        gallery_url=_safe_url(item.gallery_url),
    )


@functools.lru_cache(maxsize=_POSTS_CACHED)  # parents of the same groups share sections
def _safe_sections(sections: tuple[GroupSection, ...]) -> tuple[GroupSection, ...]:
    return tuple(
        replace(section, posts=tuple(map(_safe_post, section.posts))) for section in sections
    )


def _with_safe_urls(content: MailContent) -> MailContent:
    """A copy whose every URL is http(s) or mailto; a javascript: link or photo goes."""
    return replace(
        content,
        sections=_safe_sections(content.sections),
        preferences_url=_safe_url(content.preferences_url),
        unsubscribe_url=_safe_url(content.unsubscribe_url),
    )


def _part_content(
    content: MailContent, posts: list[tuple[GroupSection, PostContent]], part: int, parts: int
) -> MailContent:
    """Part ``part`` of ``parts``: these posts, under their groups' headings, in order."""
    sections: list[GroupSection] = []
    for section, post in posts:
        if sections and sections[-1].id == section.id:
            sections[-1] = replace(sections[-1], posts=(*sections[-1].posts, post))
        else:
            continued = post is not section.posts[0]
            sections.append(replace(section, posts=(post,), continued=continued))
    return replace(content, sections=tuple(sections), part=part, parts=parts)


def _warn_oversized(
    content: MailContent, size: int, limit: int, post_id: str | None = None
) -> None:
    # Sent whole all the same: Gmail shows a clipped mail's rest behind "View entire message",
    # while a cut post would be lost to parents who have no portal to read it in.
    if post_id is None:
        post_id = next((p.id for s in content.sections for p in s.posts), None)
    logger.warning(
        "post %s alone makes %d bytes of HTML, above the %d-byte limit: sent whole in one "
        "mail, which Gmail will clip",
        post_id,
        size,
        limit,
    )


# MJML's reset, which css-inline would copy onto every table cell, image and paragraph.
_MJML_RESET = re.compile(r'<style type="text/css">\s*#outlook a \{.*?</style>', re.S)
# What of it still matters: the body's, inlined once; the image border and height, which our own
# rules set anyway; a paragraph's margin, which ours override. The table spacing and image
# scaling are for Outlook on Windows only, which reads a <style> in a conditional comment, and
# css-inline leaves comments alone. (MJML's "p { display: block }" is every client's default.)
_LEAN_RESET = (
    "<style>body{margin:0;padding:0;-webkit-text-size-adjust:100%;-ms-text-size-adjust:100%}"
    "img{border:0;height:auto}p{margin:13px 0}</style>"
    "<!--[if mso]><style>table,td{border-collapse:collapse;mso-table-lspace:0pt;"
    "mso-table-rspace:0pt}img{line-height:100%;-ms-interpolation-mode:bicubic}</style>"
    "<![endif]-->"
)


def _lean_reset(html: str) -> str:
    """MJML's output with its reset split: what every client needs inlined, Outlook's apart."""
    return _MJML_RESET.sub(lambda _match: _LEAN_RESET, html, count=1)


def _domain(url: str) -> str:
    host = urlsplit(url).hostname or url
    return host.removeprefix("www.")


def _shown_photos(post: PostContent) -> tuple[Photo, ...]:
    return post.photos[:MAX_THUMBNAILS]


def _hidden_photos(post: PostContent) -> int:
    return max(0, len(post.photos) - MAX_THUMBNAILS)


@dataclass(frozen=True)
class _PlainPost:
    """A post for the text part: its body as text and its URLs as numbered references."""

    post: PostContent
    body: str
    links: tuple[tuple[LinkInfo, int | None], ...]
    signup_ref: int | None
    portal_ref: int | None
    references: tuple[str, ...]
    calendar_ref: int | None = None  # the event's "add to calendar" link
    stills: int = 0  # photos shown in the HTML part (a video's still is not counted)
    videos: tuple[tuple[Photo, int | None], ...] = ()  # each with where it plays
    gallery_ref: int | None = None  # the album with every photo consent allows


@functools.lru_cache(maxsize=_POSTS_CACHED)  # a post goes to every parent of its group
def _plain_post(post: PostContent) -> _PlainPost:
    references: list[str] = []
    body = teacher_html_to_text(post.body_html, references)

    def ref(url: str | None) -> int | None:
        if not url:
            return None
        if url in references:  # a video plays at the post's own portal page, for one
            return references.index(url) + 1
        references.append(url)
        return len(references)

    # Numbered in the order the text part shows them: photos, the event, then the links.
    gallery_ref = ref(post.gallery_url)
    videos = tuple((photo, ref(photo.link)) for photo in post.photos if photo.is_video)
    calendar_ref = ref(post.event.ics_url) if post.event else None
    links = tuple((link, ref(link.url)) for link in post.links)
    signup_ref = ref(post.signup.signup_url) if post.signup else None
    portal_ref = ref(post.url)
    # With an album the HTML part shows the first few photos; without one, it shows or counts all.
    shown = _shown_photos(post) if post.gallery_url else post.photos
    return _PlainPost(
        post,
        body,
        links,
        signup_ref,
        portal_ref,
        tuple(references),
        calendar_ref=calendar_ref,
        stills=sum(not photo.is_video for photo in shown),
        videos=videos,
        gallery_ref=gallery_ref,
    )


def _plain_sections(content: MailContent) -> list[tuple[GroupSection, list[_PlainPost]]]:
    """The text template's sections: each post with its text and numbered references."""
    return [
        (section, [_plain_post(post) for post in section.posts]) for section in content.sections
    ]


def _underline(title: str, char: str) -> str:
    return f"{title}\n{char * min(len(title), TEXT_WIDTH)}"


_REFERENCE = re.compile(r"\[\d+\] \S+")
_HANG = re.compile(r"((?:> )*)( *)((?:- |\d+\. )?)")


def _wrap(text: str) -> str:
    """Wrap every line at 72 columns, list items and quotes with a hanging indent.

    A URL is never broken, so only a line holding a single URL (or "[n] URL") runs longer.
    """
    return _squeezed(_wrapped_lines(text))


@dataclass(frozen=True)
class _PostLines:
    """A post's text part, wrapped and squeezed once for every page that holds it.

    ``lines`` without the line ends it starts and ends with, which are counted apart: the page
    squeezes them together with its own blank lines around the post (see ``_wrap_page``).
    """

    lead: int
    lines: str
    trail: int

    @classmethod
    def of(cls, text: str) -> _PostLines | str:
        """``text`` wrapped; the text as it is when it cannot be wrapped apart from its page.

        That takes whole lines (it starts and ends with a line end) broken only at "\\n":
        a text broken elsewhere too is wrapped line by line as ``str.splitlines`` cuts it, and
        those cuts can join with the page's.
        """
        if not (text.startswith("\n") and text.endswith("\n")) or any(
            brk in text for brk in _OTHER_BREAKS
        ):
            return text
        wrapped = _wrapped_lines(text)
        lines = wrapped.strip("\n")
        if not lines:
            return text
        while "\n\n\n" in lines:
            lines = lines.replace("\n\n\n", "\n\n")
        lead = len(wrapped) - len(wrapped.lstrip("\n"))
        return cls(lead, lines, len(wrapped) - len(wrapped.rstrip("\n")))


def _wrap_page(
    text: str, mark: str, posts: Sequence[str] = ()
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``_wrap(text)`` in pieces, with the indexes of the lines holding a personal link.

    A line that is only ``mark``, a number and ``mark`` is where the post of that number in
    ``posts`` goes (``_PostLines.lines``): a piece of its own. Lines wrap one by one, and a run
    of blank lines squeezes to one whatever side of the post its line ends are on, so this is
    ``_wrap`` of the text with the posts in place.

    Any other line holding ``mark`` is left whole, a piece of its own (without its line end) to
    fill in: filled in and wrapped with ``_wrapped``, it gives what ``_wrap`` gives the
    filled-in text. It is not empty either way, so the blank lines squeezed around it are the
    same.
    """
    squeezed = _squeezed(_wrapped_lines(text, keep=mark))
    pieces: list[str] = []
    personal: list[int] = []
    start = 0  # where the current shared piece starts
    found = squeezed.find(mark)
    while found != -1:
        line_start = squeezed.rfind("\n", 0, found) + 1
        line_end = squeezed.find("\n", found)
        line_end = len(squeezed) if line_end == -1 else line_end
        line = squeezed[line_start:line_end]
        pieces.append(squeezed[start:line_start])
        number = line.removeprefix(mark).removesuffix(mark)
        if number.isdecimal() and line == f"{mark}{number}{mark}":
            pieces.append(posts[int(number)])
        else:
            personal.append(len(pieces))
            pieces.append(line)
        start = line_end
        found = squeezed.find(mark, line_end)  # a second mark on the line is in it already
    pieces.append(squeezed[start:])
    return tuple(pieces), tuple(personal)


# What str.splitlines breaks at besides "\n"; a text holding any goes line by line. Looked for
# one by one: nine scans of a page's text cost a fraction of one character-class search.
_OTHER_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _wrapped_lines(text: str, keep: str | None = None) -> str:
    """Every line of ``text`` wrapped (``_wrapped``), but one holding ``keep`` only stripped."""

    def one(line: str) -> str:
        if keep is not None and keep in line:
            return line.rstrip()
        return "\n".join(_wrapped(line))

    if any(brk in text for brk in _OTHER_BREAKS):
        return "\n".join(map(one, text.splitlines()))
    lines = text.split("\n")
    for index, line in enumerate(lines):
        # Only a line longer than the width or ending in blanks changes: most lines do not.
        if len(line) > TEXT_WIDTH or line[-1:].isspace():
            lines[index] = one(line)
    return "\n".join(lines)


def _wrapped(line: str, wrap: Callable[[str], list[str]] | None = None) -> list[str]:
    """``line`` wrapped at ``TEXT_WIDTH`` (by ``wrap``; default: the cached ``_wrap_line``)."""
    line = line if line == "-- " else line.rstrip()  # "-- " is the signature separator
    if len(line) <= TEXT_WIDTH or _REFERENCE.fullmatch(line):
        return [line]
    return (wrap or _wrap_line)(line)


def _squeezed(text: str) -> str:
    """At most one blank line in a row, none at the ends, one line end at the end."""
    while "\n\n\n" in text:  # a run of n line ends shrinks each pass, never below two
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n") + "\n"


def _wrap_words(line: str) -> list[str]:
    """``line`` wrapped at ``TEXT_WIDTH`` as ``textwrap`` (below) would, never breaking a word.

    Words joined by single spaces, without a quote, indent or bullet (a mail's personal links,
    most lines of a post), are filled greedily here: ``textwrap`` takes 3–6 times as long.
    """
    words = line.split(" ")
    if _HANG.match(line).end() or len(line.split()) != len(words):  # type: ignore[union-attr]
        return _textwrap_line(line)
    lines = []
    current = words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) <= TEXT_WIDTH:
            current = f"{current} {word}"
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return lines


# A post's long lines recur in every page that holds the post.
_wrap_line = functools.lru_cache(maxsize=4 * _POSTS_CACHED)(_wrap_words)


def _textwrap_line(line: str) -> list[str]:
    match = _HANG.match(line)
    quote_prefix, indent, bullet = match.groups() if match else ("", "", "")
    return textwrap.wrap(
        line,
        TEXT_WIDTH,
        subsequent_indent=quote_prefix + indent + " " * len(bullet),
        break_long_words=False,
        break_on_hyphens=False,
    )
