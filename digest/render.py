"""Render a mail: MailContent → HTML (MJML, CSS inlined) + plain text + headers, one EmailMessage.

Preview and sending both call ``Renderer.render``, so an administrator sees what a parent gets.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from markupsafe import Markup
from mjml import mjml2html

from digest.content import EventInfo, LinkInfo, MailContent, Photo, PostContent, SignupInfo
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

MAX_THUMBNAILS = 6  # two rows of three: enough to see what happened, small enough to load
TEXT_WIDTH = 72
_SAFE_SCHEMES = frozenset({"https", "http", "mailto"})


@dataclass(frozen=True)
class RenderedMail:
    """A finished mail and its parts, for sending and for the admin preview."""

    message: EmailMessage
    html: str
    text: str
    subject: str
    size: int  # len(html.encode("utf-8")): what Gmail measures against its 102 KB clip


def templates_path() -> Path:
    """The installed package's ``digest/templates`` if present, else the repo's ``templates/``."""
    installed = Path(__file__).resolve().parent / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class _Chrome:
    """One language's compiled templates."""

    html: Template
    text: Template
    subject: Template
    overview: Template


class Renderer:
    """Turns MailContent into an EmailMessage; templates and catalogues are loaded once."""

    def __init__(self, settings: Settings, templates_dir: Path | None = None) -> None:
        self._settings = settings
        self._templates_dir = templates_dir or templates_path()
        self._locale_dir = self._templates_dir / "locale"
        self._chrome = {
            locale: self._load(locale) for locale in available_locales(self._locale_dir)
        }
        if DEFAULT_LOCALE not in self._chrome:
            raise FileNotFoundError(
                f"no {DEFAULT_LOCALE} catalogue under {self._locale_dir} (the fallback locale)"
            )
        self._inliner = css_inline.CSSInliner(
            load_remote_stylesheets=False,
            keep_link_tags=False,
            keep_style_tags=False,
            keep_at_rules=True,  # the responsive and dark-mode @media rules cannot be inlined
            minify_css=True,
        )

    def render(self, content: MailContent, *, now: datetime | None = None) -> RenderedMail:
        """Render ``content`` in its locale (a locale without catalogue falls back to Dutch)."""
        if content.kind == "post" and [len(s.posts) for s in content.sections] != [1]:
            raise ValueError("a per-post mail has exactly one group with one post")
        locale = resolve_locale(content.locale, self._locale_dir)
        chrome = self._chrome[locale]
        tz = ZoneInfo(content.school.timezone)
        now = _aware(now or datetime.now(UTC), tz)
        content = _with_safe_urls(content)
        context = self._context(content, locale, tz, now)

        subject = _header_text(chrome.subject.render(context))
        mjml = chrome.html.render(context, subject=subject)
        html = self._inliner.inline(mjml2html(mjml, fonts={}, disable_comments=True))
        text = _wrap(chrome.text.render(context, subject=subject))
        message = self._message(content, locale, subject, text, html, now)
        return RenderedMail(
            message=message, html=html, text=text, subject=subject, size=len(html.encode("utf-8"))
        )

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
        return _Chrome(
            html=html_env.get_template("newsletter.mjml.j2"),
            text=text_env.get_template("newsletter.txt.j2"),
            subject=text_env.get_template("subject.txt.j2"),
            overview=text_env.get_template("overview.txt.j2"),
        )

    def _context(
        self, content: MailContent, locale: str, tz: tzinfo, now: datetime
    ) -> dict[str, Any]:
        posts = [post for section in content.sections for post in section.posts]
        week = content.week or (content.cutoff or now).astimezone(tz).isocalendar().week
        groups = format_names([s.name for s in content.sections if s.posts], locale)
        # Plain text here; the HTML template escapes it like any other value.
        overview = self._chrome[locale].overview.render(count=len(posts), groups=groups).strip()

        def when(moment: datetime) -> str:
            return format_when(moment, tz, locale, now=now)

        def span(event: EventInfo) -> str:
            return format_span(event.starts_at, event.ends_at, tz, locale, now=now)

        return {
            "content": content,
            "lang": locale,
            "is_post": content.kind == "post",
            "week": week,
            "posts": posts,
            "overview": overview,
            "when": when,
            "span": span,
            "domain": _domain,
            "markup": Markup,  # post bodies were sanitised by clean_teacher_html when built
            "shown_photos": _shown_photos,
            "hidden_photos": _hidden_photos,
            "plain_sections": [
                (section, [_plain_post(post) for post in section.posts])
                for section in content.sections
            ],
        }

    # --- the message --------------------------------------------------------------------------

    def _message(
        self,
        content: MailContent,
        locale: str,
        subject: str,
        text: str,
        html: str,
        now: datetime,
    ) -> EmailMessage:
        school = _header_text(content.school.name)
        message = EmailMessage(policy=MAIL_POLICY)
        message["Subject"] = subject
        message["From"] = Address(display_name=school, addr_spec=self._settings.mail_from)
        message["To"] = Address(
            display_name=_recipient_display(content.recipient_names, locale),
            addr_spec=content.address,
        )
        if content.school.reply_to:
            message["Reply-To"] = Address(display_name=school, addr_spec=content.school.reply_to)
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid(domain=self._settings.mail_domain)
        message["List-Id"] = _list_id(school, content.school.id, self._settings.mail_domain)
        if content.unsubscribe_url:
            mailbox = content.school.reply_to or self._settings.mail_from
            message["List-Unsubscribe"] = (
                f"<{_header_url(content.unsubscribe_url)}>, "
                f"<mailto:{quote(mailbox, safe='@')}?subject=unsubscribe>"
            )
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["Auto-Submitted"] = "auto-generated"
        message["MIME-Version"] = "1.0"
        # Made multipart before any Content-* header is set: making it multipart later would
        # move those headers (Content-Language too) into the first part.
        message.make_alternative()
        message["Content-Language"] = locale
        for name, value in content.extra_headers.items():
            if not _FIELD_NAME.fullmatch(name) or name.lower() in _STRUCTURAL_HEADERS:
                raise ValueError(f"{name!r} cannot be an extra header")
            del message[name]  # the builder's value replaces ours, it does not add a second
            message[name] = _header_text(value)
        for body, subtype in ((text, "plain"), (html, "html")):
            part = EmailMessage(policy=MAIL_POLICY)
            # Quoted-printable survives any relay (no 8BITMIME needed) and stays readable.
            part.set_content(body, subtype=subtype, charset="utf-8", cte="quoted-printable")
            del part["MIME-Version"]  # set_content adds it; it belongs on the message only
            message.attach(part)
        return message


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

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII but the colon
_STRUCTURAL_HEADERS = frozenset({"mime-version", "content-type", "content-transfer-encoding"})
_LIST_LABEL = re.compile(r"[^a-z0-9-]+")
_PHRASE_SPECIALS = re.compile(r'["\\<>()\[\],;:@]')


def _environment(templates_dir: Path, *, autoescape: bool) -> Environment:
    return Environment(
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
    )


def _aware(moment: datetime, tz: tzinfo) -> datetime:
    # A naive time is read in the school's zone, as everywhere else in the service.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def _header_text(value: str) -> str:
    """One header-safe line: control characters (CR, LF, …) become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


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
    # An ASCII phrase is quoted; a non-ASCII one is left bare for the policy to encode.
    shown = f'"{phrase}" ' if phrase.isascii() and phrase else f"{phrase} " if phrase else ""
    return f"{shown}<{label}.digest.{domain}>"


def _safe_url(url: str | None) -> str | None:
    if not url:
        return None
    url = url.strip()
    return url if urlsplit(url).scheme.lower() in _SAFE_SCHEMES else None


def _with_safe_urls(content: MailContent) -> MailContent:
    """A copy whose every URL is http(s) or mailto; a javascript: link or photo goes."""

    def photo(item: Photo) -> Photo | None:
        url = _safe_url(item.url)
        return replace(item, url=url, link=_safe_url(item.link)) if url else None

    def link(item: LinkInfo) -> LinkInfo:
        return replace(item, url=_safe_url(item.url) or "")

    def signup(item: SignupInfo | None) -> SignupInfo | None:
        return replace(item, signup_url=_safe_url(item.signup_url)) if item else None

    def post(item: PostContent) -> PostContent:
        photos = tuple(p for p in map(photo, item.photos) if p is not None)
        return replace(
            item,
            url=_safe_url(item.url),
            photos=photos,
            links=tuple(map(link, item.links)),
            signup=signup(item.signup),
        )

    return replace(
        content,
        sections=tuple(
            replace(section, posts=tuple(map(post, section.posts))) for section in content.sections
        ),
        preferences_url=_safe_url(content.preferences_url),
        unsubscribe_url=_safe_url(content.unsubscribe_url),
    )


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


def _plain_post(post: PostContent) -> _PlainPost:
    references: list[str] = []
    body = teacher_html_to_text(post.body_html, references)

    def ref(url: str | None) -> int | None:
        if not url:
            return None
        references.append(url)
        return len(references)

    links = tuple((link, ref(link.url)) for link in post.links)
    signup_ref = ref(post.signup.signup_url) if post.signup else None
    portal_ref = ref(post.url)
    return _PlainPost(post, body, links, signup_ref, portal_ref, tuple(references))


def _underline(title: str, char: str) -> str:
    return f"{title}\n{char * min(len(title), TEXT_WIDTH)}"


_REFERENCE = re.compile(r"\[\d+\] \S+")
_HANG = re.compile(r"((?:> )*)( *)((?:- |\d+\. )?)")


def _wrap(text: str) -> str:
    """Wrap every line at 72 columns, list items and quotes with a hanging indent.

    A URL is never broken, so only a line holding a single URL (or "[n] URL") runs longer.
    """
    lines: list[str] = []
    for line in text.splitlines():
        line = line if line == "-- " else line.rstrip()  # "-- " is the signature separator
        if len(line) <= TEXT_WIDTH or _REFERENCE.fullmatch(line):
            lines.append(line)
            continue
        match = _HANG.match(line)
        quote_prefix, indent, bullet = match.groups() if match else ("", "", "")
        lines.extend(
            textwrap.wrap(
                line,
                TEXT_WIDTH,
                subsequent_indent=quote_prefix + indent + " " * len(bullet),
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    squeezed = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return squeezed.strip("\n") + "\n"
