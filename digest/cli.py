"""``digest``: every stage by hand. A thin face over the stage functions; no logic of its own."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from digest import __version__
from digest.db import (
    make_engine,
    pending_migrations,
    session_factory,
    upgrade,
    warn_without_statistics,
)
from digest.errors import ConfigError, DigestError
from digest.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_ZONE = "Europe/Amsterdam"


class App:
    """What every command needs, made on first use so ``--help`` works without configuration."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on a database whose schema is current (else an error saying what to run)."""
        if self._sessions is None:
            problem = pending_migrations(self.engine)
            if problem:
                raise DigestError(problem)
            self._sessions = session_factory(self.engine)
        return self._sessions

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


pass_app = click.make_pass_decorator(App)


def _check_iso(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # Checked here, before any database work, so a typo is a usage error (exit 2).
    if value is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f'"{value}" is not an ISO-8601 time') from None
    return value


def _at_option(help_text: str) -> Callable[[F], F]:
    return click.option("--at", "at_text", metavar="ISO-8601", help=help_text, callback=_check_iso)


def resolve_at(at_text: str | None, zone: str) -> datetime:
    """``--at`` as an aware UTC instant (read in ``zone`` without an offset); now when absent."""
    from digest.periods import parse_instant

    if at_text is None:
        return datetime.now(UTC)
    try:
        return parse_instant(at_text, zone)
    except ValueError:
        raise click.BadParameter(
            f'"{at_text}" is not an ISO-8601 time', param_hint="--at"
        ) from None


def school_zone(app: App, school_id: str) -> str:
    from digest.plan import load_school

    with app.sessions() as session:
        return load_school(session, school_id).timezone


class DigestGroup(click.Group):
    """Turns the service's own errors into one short line each and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as error:
            for line in str(error).splitlines():
                click.echo(f"error: {line}", err=True)
            sys.exit(1)
        except OperationalError as error:
            # The database is unreachable or locked: say so in one line, without a traceback.
            click.echo(f"error: database: {str(error.orig).strip().splitlines()[0]}", err=True)
            sys.exit(1)


@click.group(cls=DigestGroup)
@click.version_option(__version__, prog_name="digest")
@click.option("-v", "--verbose", is_flag=True, help="Log each step (ids only) to standard error.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """The digest service: a school portal's group news, by email, to the parents who want it."""
    from digest.logs import configure_logging

    app = App()
    try:
        settings: Settings | None = app.settings
    except ConfigError:
        settings = None  # plain text logs; the command that needs the settings says what is wrong
    configure_logging(settings, verbose)
    ctx.obj = app
    ctx.call_on_close(app.close)


@main.group()
def db() -> None:
    """The service's database."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the database, or migrate it to the current schema."""
    upgrade(app.engine)
    click.echo("database is up to date")


@main.command("import")
@click.argument("file", type=click.File("rb"))
@pass_app
def import_(app: App, file: Any) -> None:
    """Import a portal export document (JSON, contract v1); FILE may be - for standard input."""
    from digest.ingest import import_document, parse_document

    document = parse_document(file.read())
    with app.sessions() as session, session.begin():
        summary = import_document(session, document)
    for kind, counts in summary.counts.items():
        shown = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        click.echo(f"{kind}: {shown or 'nothing'}")


def _plan(app: App, school_id: str, at_text: str | None) -> Any:
    from scheduler.jobs import plan_latest

    zone = school_zone(app, school_id)
    result = plan_latest(app.sessions, school_id, resolve_at(at_text, zone))
    edition = result.edition
    local = edition.cutoff.astimezone(_zone(zone))
    verb = "planned" if result.created else "already planned"
    click.echo(
        f"edition {edition.id} of school {school_id} ({local:%Y-%m-%d %H:%M %Z}) {verb}: "
        f"{edition.status.value}"
    )
    for key, count in sorted(result.counts.items()):
        click.echo(f"  {key:<22} {count}")
    return result


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


@main.command()
@click.option("--school", "school_id", required=True, help="The school's portal id.")
@_at_option("Plan the edition whose cutoff is the latest at or before this time (default: now).")
@pass_app
def plan(app: App, school_id: str, at_text: str | None) -> None:
    """Plan a school's weekly edition; planning it again changes nothing."""
    _plan(app, school_id, at_text)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; silence in pipes and logs."""
    if total == 0 or not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("sending", total=total)
        yield lambda n: bar.advance(task, n)


def _send(app: App, school_id: str | None, at: datetime) -> None:
    from digest.deliver import count_due
    from digest.worker import run_loop
    from scheduler.jobs import send_due

    with app.sessions() as session:
        total = count_due(session, at, school_id)
    with _progress(total) as advance:
        report = run_loop(
            send_due(app.sessions, app.settings, at, school_id=school_id, progress=advance),
            app.settings,
        )
    shown = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    click.echo(f"sent through {app.settings.mail_url.split(':', 1)[0]}: {shown or 'nothing due'}")
    if report.paused:
        until = f" until {report.paused_until:%Y-%m-%d %H:%M} UTC" if report.paused_until else ""
        raise DigestError(f"sending is paused{until}: the mail server said: {report.paused}")


@main.command()
@click.option("--school", "school_id", help="Only this school's mail (default: every school).")
@_at_option("Send what is due at this time (default: now).")
@pass_app
def send(app: App, school_id: str | None, at_text: str | None) -> None:
    """Deliver the queued mail that is due."""
    zone = school_zone(app, school_id) if school_id else DEFAULT_ZONE
    _send(app, school_id, resolve_at(at_text, zone))


@main.command()
@click.option("--school", "school_id", required=True, help="The school's portal id.")
@_at_option("The edition whose cutoff is the latest at or before this time (default: now).")
@pass_app
def run(app: App, school_id: str, at_text: str | None) -> None:
    """Plan a school's edition, then send it (what the scheduler does each week)."""
    result = _plan(app, school_id, at_text)
    at = max(resolve_at(at_text, school_zone(app, school_id)), result.edition.cutoff)
    _send(app, school_id, at)


@main.command()
@click.option("--guardian", "guardian_id", required=True, help="The guardian's portal id.")
@_at_option("The edition whose cutoff is the latest at or before this time (default: now).")
@click.option("--upcoming", is_flag=True, help="The next edition, with the posts so far.")
@click.option(
    "--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html", show_default=True
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@pass_app
def preview(
    app: App,
    guardian_id: str,
    at_text: str | None,
    upcoming: bool,
    fmt: str,
    output: Path | None,
) -> None:
    """Show the mail a guardian got (or gets) in an edition; never sends anything."""
    from digest.links import Links
    from digest.models import Guardian
    from digest.preview import preview as build_preview
    from digest.render import Renderer

    if upcoming and at_text:
        raise click.UsageError("use --at or --upcoming, not both")
    with app.sessions() as session:
        guardian = session.get(Guardian, guardian_id)
        zone = school_zone(app, guardian.school_id) if guardian else DEFAULT_ZONE
        at = resolve_at(at_text, zone)
        result = build_preview(session, Links(app.settings), guardian_id, at=at, upcoming=upcoming)
    if result.warning:
        click.echo(f"warning: {result.warning}", err=True)
    rendered = Renderer(app.settings).render(result.content, now=at)
    withheld = result.content.withheld_photos
    if withheld:
        click.echo(
            f"note: {withheld} photo(s) left out of this mail for want of consent "
            "(the mail says they are only in the portal)",
            err=True,
        )
    if fmt == "html":
        data = rendered.html.encode()
    elif fmt == "text":
        data = rendered.text.encode()
    else:
        data = bytes(rendered.message)
    if output:
        output.write_bytes(data)
        click.echo(f"wrote {output} ({len(data)} bytes)", err=True)
    else:
        sys.stdout.buffer.write(data)


@main.command()
@click.option("--school", "school_id", required=True, help="The school's portal id.")
@_at_option("The edition whose cutoff is the latest at or before this time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@pass_app
def status(app: App, school_id: str, at_text: str | None, as_json: bool) -> None:
    """Per guardian of an edition: address, preference, status, reason, posts and mail size."""
    from digest.periods import latest_cutoff
    from digest.plan import load_school
    from digest.status import edition_status, find_edition, post_mail_status, summarize

    with app.sessions() as session:
        school = load_school(session, school_id)
        at = resolve_at(at_text, school.timezone)
        cutoff = latest_cutoff(
            at, weekday=school.digest_weekday, clock=school.digest_time, zone=school.timezone
        )
        edition = find_edition(session, school.id, cutoff)
        if edition is None:
            raise DigestError(f"school {school_id} has no edition ending {cutoff.isoformat()}")
        lines = edition_status(session, edition)
        post_mails = post_mail_status(session, school.id, (edition.period_start, edition.cutoff))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "edition": {
                        "id": edition.id,
                        "school_id": school_id,
                        "cutoff": edition.cutoff.isoformat(),
                        "period_start": edition.period_start.isoformat(),
                        "status": edition.status.value,
                        "kind": edition.kind.value,
                        "late_seconds": edition.late_seconds,
                    },
                    "summary": summarize(lines),
                    "guardians": [line.as_json() for line in lines],
                    "post_mails": [mail.as_json() for mail in post_mails],
                },
                indent=2,
            )
        )
        return
    late = (
        f", ran {edition.late_seconds // 60} min after its cutoff"
        if edition.late_seconds is not None
        else ""
    )
    click.echo(f"edition {edition.id} ({edition.status.value}{late}), {len(lines)} guardians")
    click.echo(
        f"{'guardian':<12} {'address':<34} {'prefers':<10} {'status':<20} {'posts':>5} "
        f"{'size':>9}  {'tries':>5}  next try          last reply"
    )
    for line in lines:
        click.echo(
            f"{line.guardian_id:<12} {line.address or '(no address)':<34} {line.preference:<10} "
            + _outbox_columns(
                line.status,
                line.reason,
                line.posts,
                line.size,
                line.attempts,
                line.next_attempt_at,
                line.last_reply,
            )
        )
    for key, count in summarize(lines).items():
        click.echo(f"  {key:<22} {count}")
    if post_mails:
        click.echo(f"per-post mails of this week's posts: {len(post_mails)}")
        for mail in post_mails:
            click.echo(
                f"{mail.post_id:<12} {mail.address:<34} {'email':<10} "
                + _outbox_columns(
                    mail.status,
                    mail.reason,
                    1,
                    mail.size,
                    mail.attempts,
                    mail.next_attempt_at,
                    mail.last_reply,
                )
            )


def _outbox_columns(
    status: str,
    reason: str | None,
    posts: int,
    size: int | None,
    attempts: int,
    next_attempt_at: datetime | None,
    last_reply: str | None,
) -> str:
    """Status, posts, mail size, attempts, next try and the server's last reply, aligned."""
    outcome = f"{status}:{reason}" if reason else status
    shown_size = f"{size / 1024:.1f} KB" if size else "-"
    next_try = f"{next_attempt_at:%Y-%m-%d %H:%M}Z" if next_attempt_at else "-"
    reply = " ".join((last_reply or "-").split())[:60]
    return f"{outcome:<20} {posts:>5} {shown_size:>9}  {attempts:>5}  {next_try:<17} {reply}"


_BOUNCE_LINES = (
    ("suppressed", "failed, address suppressed"),
    ("failed", "failed"),
    ("expired", "expired at the relay"),
    ("ignored", "ignored (delayed, delivered)"),
    ("already_recorded", "already recorded"),
    ("unmatched", "unmatched"),
    ("not_a_report", "not a report"),
    ("unreadable", "unreadable"),
)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_at_option("Record failures and suppressions at this time (default: now).")
@pass_app
def bounces(app: App, path: Path, at_text: str | None) -> None:
    """Apply delivery status reports (RFC 3464) from a Maildir, a directory of mails or a file.

    In a Maildir only unread mails are read, then marked read.
    """
    from digest.bounces import BounceOutcome, read_bounces

    summary = read_bounces(app.sessions, path, at=resolve_at(at_text, DEFAULT_ZONE))
    click.echo(f"read {summary.mails} mails from {path}")
    always = {"suppressed", "failed", "ignored", "unmatched", "not_a_report"}
    for key, label in _BOUNCE_LINES:
        count = summary.counts.get(BounceOutcome(key), 0)
        if count or key in always:
            click.echo(f"  {label:<30} {count}")


@main.command()
@click.option("--list", "show", is_flag=True, help="List suppressed addresses (the default).")
@click.option("--add", "add", metavar="ADDRESS", help="Suppress this address (needs --reason).")
@click.option("--reason", help="Why the address added with --add is suppressed.")
@click.option("--remove", "remove", metavar="ADDRESS", help="Lift this address's suppression.")
@pass_app
def suppress(app: App, show: bool, add: str | None, reason: str | None, remove: str | None) -> None:
    """The suppression list: addresses that get no mail, with reason and since when."""
    from digest.suppressions import (
        add_suppression,
        list_suppressions,
        normalize_address,
        remove_suppression,
    )

    if sum((show, add is not None, remove is not None)) > 1:
        raise click.UsageError("use one of --list, --add and --remove")
    if reason is not None and add is None:
        raise click.UsageError("--reason goes with --add")
    if add is not None:
        if not reason or not reason.strip():
            raise click.UsageError("--add needs a --reason")
        try:
            address = normalize_address(add)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--add") from None
        with app.sessions() as session, session.begin():
            row, added = add_suppression(session, address, reason.strip())
            since = f"{row.created_at:%Y-%m-%d %H:%M} UTC"
            if added:
                click.echo(f"suppressed {row.address}")
            else:
                click.echo(f"{row.address} was already suppressed since {since}: {row.reason}")
        return
    if remove is not None:
        with app.sessions() as session, session.begin():
            row = remove_suppression(session, remove)
            click.echo(f"{row.address} is no longer suppressed (was: {row.reason})")
        return
    with app.sessions() as session:
        rows = list_suppressions(session)
        if not rows:
            click.echo("no suppressed addresses")
            return
        width = max(len("address"), *(len(r.address) for r in rows))
        click.echo(f"{'address':<{width}}  {'since':<20}  reason")
        for r in rows:
            click.echo(f"{r.address:<{width}}  {r.created_at:%Y-%m-%d %H:%M} UTC  {r.reason}")


@main.group()
def admin() -> None:
    """Administrators' accounts for the web pages at /admin/."""


def _read_password() -> str:
    """Prompted twice without echo on a terminal; else the first line of standard input."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


@admin.command("create")
@click.option("--email", required=True, help="The administrator's e-mail address (the login).")
@click.option(
    "--school", "school_ids", multiple=True, required=True, help="A school it may see (repeat)."
)
@pass_app
def admin_create(app: App, email: str, school_ids: tuple[str, ...]) -> None:
    """Create an account; the password is prompted, or read from standard input's first line."""
    from digest.admins import check_password, create_admin
    from digest.models import utcnow

    password = _read_password()
    check_password(password)  # before touching the database
    with app.sessions() as session, session.begin():
        created = create_admin(session, email, password, list(school_ids), at=utcnow())
        click.echo(f"administrator {created.email} created for {', '.join(sorted(school_ids))}")


@admin.command("disable")
@click.option("--email", required=True, help="The administrator's e-mail address.")
@pass_app
def admin_disable(app: App, email: str) -> None:
    """Disable an account: it cannot log in, and its open sessions end at once."""
    from digest.admins import disable_admin
    from digest.models import utcnow

    with app.sessions() as session, session.begin():
        disabled = disable_admin(session, email, at=utcnow())
        click.echo(f"administrator {disabled.email} is disabled")


@admin.command("list")
@pass_app
def admin_list(app: App) -> None:
    """Every account: e-mail address, schools, created, disabled."""
    from digest.admins import list_admins

    with app.sessions() as session:
        rows = list_admins(session)
        if not rows:
            click.echo("no administrators: create one with `digest admin create`")
            return
        width = max(len("email"), *(len(row.email) for row in rows))
        click.echo(f"{'email':<{width}}  {'created':<16}  {'state':<27}  schools")
        for row in rows:
            state = (
                f"disabled {row.disabled_at:%Y-%m-%d %H:%M} UTC" if row.disabled_at else "active"
            )
            schools = ", ".join(sorted(school.id for school in row.schools))
            click.echo(
                f"{row.email:<{width}}  {row.created_at:%Y-%m-%d %H:%M}  {state:<27}  {schools}"
            )


@main.command()
@_at_option("Make the demo week the one ending at or before this time (default: now).")
@pass_app
def demo(app: App, at_text: str | None) -> None:
    """Load a Dutch demo school, run its edition into the outbox and say where to look."""
    from digest.demo import run_demo

    at = resolve_at(at_text, DEFAULT_ZONE)
    run_demo(app.engine, app.settings, at, echo=click.echo)


@main.command()
@click.option("--once", is_flag=True, help="Drain what is due, then exit.")
@_at_option("With --once: send what is due at this time (default: now).")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between looks at an empty outbox.",
)
@click.option("--school", "school_id", help="Only this school's mail (default: every school).")
@pass_app
def worker(app: App, once: bool, at_text: str | None, poll: float, school_id: str | None) -> None:
    """Deliver the outbox until stopped (SIGTERM finishes the sends in flight, then exits).

    Start as many as you like on PostgreSQL, on any number of machines: each claims its own rows.
    """
    from digest.worker import run_loop, run_worker

    if at_text and not once:
        raise click.UsageError("--at needs --once (a running worker sends at the current time)")
    at = resolve_at(at_text, DEFAULT_ZONE) if at_text else None
    sessions = app.sessions  # the schema check, before the loop starts
    warn_without_statistics(app.engine)
    report = run_loop(
        run_worker(sessions, app.settings, once=once, at=at, poll=poll, school_id=school_id),
        app.settings,
    )
    shown = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    click.echo(f"worker done after {report.passes} pass(es): {shown or 'nothing sent'}")
    if report.paused and once:
        raise DigestError(f"sending is paused: the mail server said: {report.paused}")


@main.command()
@click.option("--school", "school_id", help="Only this school (default: every school).")
@_at_option("Plan the per-post mails due at this time (default: now).")
@click.option("--no-send", is_flag=True, help="Only queue the mails; a worker sends them.")
@pass_app
def notify(app: App, school_id: str | None, at_text: str | None, no_send: bool) -> None:
    """Queue one mail per new post for the guardians who chose email per post, then send."""
    from datetime import timedelta

    from digest.notify import plan_notifications, school_ids

    zone = school_zone(app, school_id) if school_id else DEFAULT_ZONE
    at = resolve_at(at_text, zone)
    settle = timedelta(minutes=app.settings.notify_settle_minutes)
    with app.sessions() as session:
        schools = [school_id] if school_id else school_ids(session)
    for sid in schools:
        with app.sessions() as session, session.begin():
            result = plan_notifications(session, sid, at, settle=settle)
        click.echo(
            f"school {sid}: {result.posts} recent post(s), {result.queued} mail(s) queued"
            + (f", {result.skipped} skipped (suppressed)" if result.skipped else "")
        )
    if not no_send:
        _send(app, school_id, at)


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Also the resolved alerts.")
@pass_app
def alerts(app: App, show_all: bool) -> None:
    """What needs an administrator: a paused transport, a missed or failed run."""
    from sqlalchemy import select

    from digest.models import Alert

    query = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc())
    if not show_all:
        query = query.where(Alert.resolved_at.is_(None))
    with app.sessions() as session:
        rows = list(session.scalars(query))
    if not rows:
        click.echo("no open alerts" if not show_all else "no alerts")
        return
    for alert in rows:
        state = f"resolved {alert.resolved_at:%Y-%m-%d %H:%M}" if alert.resolved_at else "open"
        until = f" until {alert.until:%Y-%m-%d %H:%M} UTC" if alert.until else ""
        school = f" school {alert.school_id}" if alert.school_id else ""
        click.echo(
            f"#{alert.id} {alert.kind.value}{school} since {alert.created_at:%Y-%m-%d %H:%M} UTC"
            f" ({state}{until}, x{alert.count}): {alert.message}"
        )


@main.command()
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="Purge what is older than this many days (default: DIGEST_RETENTION_DAYS).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be purged; change nothing.")
@_at_option("Purge as if it were this time (default: now).")
@pass_app
def purge(app: App, days: int | None, dry_run: bool, at_text: str | None) -> None:
    """Forget old mail rows, audit entries and cached images; keep what once-only needs."""
    from digest.retention import TABLES, run_retention

    at = resolve_at(at_text, DEFAULT_ZONE)
    report = run_retention(app.sessions, app.settings, at, days=days, dry_run=dry_run)
    verb = "would purge" if dry_run else "purged"
    click.echo(
        f"{verb} what is older than {days or app.settings.retention_days} days "
        f"(before {report.before:%Y-%m-%d %H:%M} UTC):"
    )
    for table in TABLES:
        click.echo(f"  {table:<16} {report.counts.get(table, 0)}")


@main.command()
@click.option(
    "--role",
    type=click.Choice(["web", "scheduler", "worker"]),
    default="web",
    show_default=True,
    help="web: ask /healthz; scheduler, worker: this host's heartbeat in the database.",
)
@click.option(
    "--url", default="http://127.0.0.1:8000/healthz", show_default=True, help="The web's /healthz."
)
@pass_app
def healthcheck(app: App, role: str, url: str) -> None:
    """Exit 0 when this machine's (container's) role is healthy, else 1 with the reason."""
    import socket

    if role == "web":
        _check_web(url)
        return
    from digest.heartbeat import last_beat

    host = socket.gethostname()
    with app.sessions() as session:
        latest = last_beat(session, role, host=host)
    if latest is None:
        raise DigestError(f"no {role} heartbeat from {host}: is `digest {role}` running here?")
    age = (datetime.now(UTC) - latest).total_seconds()
    stale = app.settings.heartbeat_stale_seconds
    if age > stale:
        raise DigestError(
            f"{role} on {host}: last heartbeat {age:.0f} s ago (stale after {stale:g} s)"
        )
    click.echo(f"{role} on {host}: heartbeat {age:.0f} s ago")


def _check_web(url: str) -> None:
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    try:
        with urlopen(url, timeout=10) as response:
            body = response.read(2000).decode(errors="replace")
    except HTTPError as error:
        detail = error.read(2000).decode(errors="replace")
        raise DigestError(f"{url} answered {error.code}: {detail}") from None
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DigestError(f"{url} did not answer: {reason}") from None
    click.echo(f"{url}: {body}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Serve the web face: /admin/, the parents' links from the mails, /api/v1/, /healthz."""
    import uvicorn

    from digest.web import create_app

    web = create_app(app.settings, app.sessions)
    # uvicorn's "auto" is uvloop where installed, as the delivering processes run.
    loop = "asyncio" if app.settings.event_loop == "asyncio" else "auto"
    uvicorn.run(web, host=host, port=port, log_config=None, proxy_headers=True, loop=loop)


@main.command("scheduler")
@click.option("--list", "show", is_flag=True, help="Print each school's next run, then exit.")
@click.option(
    "--no-worker", is_flag=True, help="Only plan; `digest worker` processes send the mail."
)
@pass_app
def scheduler_(app: App, show: bool, no_worker: bool) -> None:
    """Run every school's weekly edition at its cutoff, per-post mails, and (unless --no-worker)
    the delivery of what is due. SIGTERM finishes the sends in flight and plans the weekly runs
    that fired, then exits."""
    from digest.worker import run_loop
    from scheduler.service import format_run, next_runs, serve

    sessions = app.sessions  # the schema check, before anything starts
    if show:
        runs = next_runs(app.engine, sessions)
        if not runs:
            click.echo("no schools yet: import the portal's data with `digest import`")
        for run in runs:
            click.echo(format_run(run))
        return
    warn_without_statistics(app.engine)
    run_loop(serve(app.engine, sessions, app.settings, worker=not no_worker), app.settings)
    click.echo("scheduler stopped")


@main.command("edition")
@click.argument("decision", type=click.Choice(["approve", "hold", "cancel"]))
@click.argument("edition_id", type=int)
@pass_app
def edition_(app: App, decision: str, edition_id: int) -> None:
    """Approve, hold or cancel an edition (a cancelled edition's posts go with the next one)."""
    from digest.editions import Decision, decide

    with app.sessions() as session, session.begin():
        edition = decide(session, edition_id, Decision(decision), at=datetime.now(UTC))
        status = edition.status.value
    click.echo(f"edition {edition_id}: {status}")
