"""Ingest: a portal export document (contract v1) checked whole, then upserted by id.

A document is read in two passes. The first only reads: every object on its own
(:mod:`digest.contract`), then the references between objects, against the document itself and
the store. Any problem refuses the document whole, with every problem listed by JSON path, and
nothing written. The second pass writes with set-based statements (rows loaded by id in chunks,
inserted and updated with executemany), so a board's document of 100,000 guardians stays a matter
of seconds. Values are compared before they are written: a repeated import changes nothing.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Table,
    bindparam,
    delete,
    insert,
    null,
    select,
    update,
)
from sqlalchemy.orm import Session

from digest.contract import KINDS, Entry, ParsedDocument, PostIn, read_document
from digest.errors import ImportRefused, Problem
from digest.models import (
    Child,
    Event,
    Group,
    Guardian,
    Media,
    Post,
    School,
    child_groups,
    guardian_children,
    guardian_groups,
    media_children,
    utcnow,
)

# Ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits.
CHUNK = 500

SCHOOLS = cast(Table, School.__table__)
GROUPS = cast(Table, Group.__table__)
CHILDREN = cast(Table, Child.__table__)
GUARDIANS = cast(Table, Guardian.__table__)
POSTS = cast(Table, Post.__table__)
MEDIA = cast(Table, Media.__table__)
EVENTS = cast(Table, Event.__table__)
TABLES = {
    "schools": SCHOOLS,
    "groups": GROUPS,
    "children": CHILDREN,
    "guardians": GUARDIANS,
    "posts": POSTS,
}
PORTAL_MODELS = (School, Group, Child, Guardian, Post, Media, Event)

L = TypeVar("L", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

# The settings the scheduler's jobs are made of.
SCHEDULE_FIELDS = ("timezone", "digest_weekday", "digest_time", "holidays")
# Post fields stored as JSON that may be absent: SQL NULL then, not a JSON "null".
NULLABLE_JSON = frozenset({"meeting", "help"})


@dataclass(frozen=True)
class ImportSummary:
    """What an import did, per kind; and which schools' schedules the scheduler must redo."""

    counts: dict[str, dict[str, int]]
    schools_changed: frozenset[str]


def parse_document(raw: bytes | str) -> Any:
    """Parse the JSON text of a portal document; bad JSON is refused with its line and column."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except UnicodeDecodeError as exc:
        message = f"not valid JSON: not UTF-8 text at byte {exc.start}"
    except RecursionError:
        message = "not valid JSON: nested too deeply"
    raise ImportRefused([Problem("", message)])


def import_document(
    session: Session, document: Any, *, now: datetime | None = None
) -> ImportSummary:
    """Check a parsed document whole and, only if it has no problem, upsert it into ``session``.

    Raises ImportRefused listing every problem, having written nothing; never commits.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    # The caller's own pending work is part of the store we check against, as autoflush would.
    session.flush()
    parsed = read_document(document)
    problems = list(parsed.problems)
    references = _References(session, parsed)
    problems.extend(references.check())
    if problems:
        raise ImportRefused(sorted(problems, key=_document_order))
    summary = _Writer(session, parsed, references, now or utcnow()).write()
    # Rows changed under the ORM's feet: objects already loaded must not show stale values.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, PORTAL_MODELS):
            session.expire(obj)
    return summary


_INDEXED = re.compile(r"(\w+)\[(\d+)\]")


def _document_order(problem: Problem) -> tuple[int, int]:
    # Stable sort: each object's own problems stay before its reference problems.
    match = _INDEXED.match(problem.path)
    if match is None or match.group(1) not in KINDS:
        return (-1, 0)
    return (KINDS.index(match.group(1)), int(match.group(2)))


def _among(column: ColumnElement[Any], ids: list[str]) -> ColumnElement[bool]:
    """``column IN (ids)`` with the ids written into the SQL text.

    Bound parameters would let PostgreSQL reuse a generic plan made while a table still looked
    empty (before autovacuum's first ANALYZE): a scan comparing each row with 500 parameters one
    by one, minutes for a large board. Written-in constants are hashed and planned each time.
    """
    return column.in_(bindparam("ids", ids, expanding=True, literal_execute=True, unique=True))


def _chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def _schools_of(session: Session, table: Table, ids: Iterable[str]) -> dict[str, str]:
    """The stored school of each of ``ids`` that exists in ``table``."""
    found: dict[str, str] = {}
    for chunk in _chunks(ids):
        query = select(table.c.id, table.c.school_id).where(_among(table.c.id, chunk))
        rows = session.execute(query)
        found.update((row.id, row.school_id) for row in rows)
    return found


def _quoted(ids: Iterable[str], limit: int = 5) -> str:
    shown = sorted(ids)
    text = ", ".join(f'"{i}"' for i in shown[:limit])
    return text + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


# --- the reading pass: references ---------------------------------------------------------------


@dataclass
class _Kind:
    """Where the objects of one kind can be found: in the document, deleted by it, or stored."""

    noun: str
    live: dict[str, str | None]  # in the document, not deleted -> its school (None: unreadable)
    deleted: set[str]
    stored: dict[str, str] = field(default_factory=dict)  # in the store -> its school

    def resolve(self, ref: str, gone_schools: set[str]) -> tuple[str | None, str | None]:
        """``(problem, school)``: what is wrong with a reference, or its object's school."""
        if ref in self.deleted:
            return f'{self.noun} "{ref}" is deleted in this document', None
        if ref in self.live:
            return None, self.live[ref]
        if ref in self.stored:
            school = self.stored[ref]
            if school in gone_schools:
                return f'{self.noun} "{ref}" goes with its school "{school}", deleted here', None
            return None, school
        return f'unknown {self.noun} "{ref}"', None


def _live_ids(entries: list[Entry[Any, Any]]) -> dict[str, str | None]:
    """Ids the document keeps, with their school (a school is its own; None when unreadable)."""
    found: dict[str, str | None] = {}
    for entry in entries:
        if entry.id is not None and not entry.deleted:
            readable = entry.readable
            found[entry.id] = getattr(readable, "school_id", entry.id) if readable else None
    return found


def _deleted_ids(entries: list[Entry[Any, Any]]) -> set[str]:
    return {entry.id for entry in entries if entry.deleted and entry.id is not None}


class _References:
    """Checks what objects refer to, loading from the store only the ids the document names."""

    def __init__(self, session: Session, parsed: ParsedDocument) -> None:
        self.session = session
        self.parsed = parsed
        self.schools = _Kind("school", _live_ids(parsed.schools), _deleted_ids(parsed.schools))
        self.groups = _Kind("group", _live_ids(parsed.groups), _deleted_ids(parsed.groups))
        self.children = _Kind("child", _live_ids(parsed.children), _deleted_ids(parsed.children))
        self.problems: list[Problem] = []
        # The school each group will be in after the import (posts take theirs from it).
        self.group_school: dict[str, str] = {}
        # Groups that the document moves to another school, with their new school.
        self.moved_groups: dict[str, str] = {}

    def check(self) -> list[Problem]:
        """Every duplicate id, dangling reference and cross-school reference of the document."""
        self._duplicates()
        self._load()
        parsed = self.parsed
        for group_entry in parsed.groups:
            if (group := _readable(group_entry)) is not None:
                school = self._school(f"groups[{group_entry.index}].school_id", group.school_id)
                if school is not None:
                    self.group_school[group.id] = school
        for child_entry in parsed.children:
            if (child := _readable(child_entry)) is not None:
                prefix = f"children[{child_entry.index}]"
                school = self._school(f"{prefix}.school_id", child.school_id)
                for i, ref in enumerate(child.group_ids):
                    self._ref(f"{prefix}.group_ids[{i}]", self.groups, ref, school)
        for guardian_entry in parsed.guardians:
            if (guardian := _readable(guardian_entry)) is not None:
                prefix = f"guardians[{guardian_entry.index}]"
                school = self._school(f"{prefix}.school_id", guardian.school_id)
                for i, ref in enumerate(guardian.child_ids):
                    self._ref(f"{prefix}.child_ids[{i}]", self.children, ref, school)
                for i, ref in enumerate(guardian.group_ids):
                    self._ref(f"{prefix}.group_ids[{i}]", self.groups, ref, school)
        for post_entry in parsed.posts:
            if (post := _readable(post_entry)) is not None:
                prefix = f"posts[{post_entry.index}]"
                school = self._ref(f"{prefix}.group_id", self.groups, post.group_id, None)
                if school is not None:
                    self.group_school[post.group_id] = school
                for m, media in enumerate(post.media):
                    for i, ref in enumerate(media.child_ids):
                        self._ref(f"{prefix}.media[{m}].child_ids[{i}]", self.children, ref, None)
        self._moves()
        return self.problems

    def _duplicates(self) -> None:
        # Two objects with one id would make the result depend on their order: refuse.
        for kind in KINDS:
            seen: dict[str, int] = {}
            for entry in getattr(self.parsed, kind):
                if entry.id is None:
                    continue
                if entry.id in seen:
                    self.problems.append(
                        Problem(
                            f"{kind}[{entry.index}].id",
                            f'duplicate id "{entry.id}" (also {kind}[{seen[entry.id]}])',
                        )
                    )
                else:
                    seen[entry.id] = entry.index
        media_seen: dict[str, str] = {}
        for entry in self.parsed.posts:
            post = entry.readable
            for m, media in enumerate(post.media if post is not None else ()):
                path = f"posts[{entry.index}].media[{m}]"
                if media.id in media_seen:
                    also = media_seen[media.id]
                    self.problems.append(
                        Problem(f"{path}.id", f'duplicate media id "{media.id}" (also {also})')
                    )
                else:
                    media_seen[media.id] = path

    def _load(self) -> None:
        parsed = self.parsed
        school_refs: set[str] = set()
        group_refs: set[str] = set(self.groups.live)  # their stored school shows a move
        child_refs: set[str] = set(self.children.live)
        for g in _all_readable(parsed.groups):
            school_refs.add(g.school_id)
        for c in _all_readable(parsed.children):
            school_refs.add(c.school_id)
            group_refs.update(c.group_ids)
        for p in _all_readable(parsed.guardians):
            school_refs.add(p.school_id)
            group_refs.update(p.group_ids)
            child_refs.update(p.child_ids)
        for m in _all_readable(parsed.posts):
            group_refs.add(m.group_id)
            for media in m.media:
                child_refs.update(media.child_ids)
        stored_groups = _schools_of(self.session, GROUPS, group_refs - self.groups.deleted)
        stored_children = _schools_of(self.session, CHILDREN, child_refs - self.children.deleted)
        wanted = school_refs - self.schools.deleted - set(self.schools.live)
        self.schools.stored = {s: s for s in _schools_of_ids(self.session, wanted)}
        self.groups.stored = stored_groups
        self.children.stored = stored_children

    def _school(self, path: str, school_id: str) -> str | None:
        problem, school = self.schools.resolve(school_id, self.schools.deleted)
        if problem is not None:
            self.problems.append(Problem(path, problem))
        return school

    def _ref(self, path: str, kind: _Kind, ref: str, school: str | None) -> str | None:
        problem, ref_school = kind.resolve(ref, self.schools.deleted)
        if problem is not None:
            self.problems.append(Problem(path, problem))
        elif school is not None and ref_school is not None and ref_school != school:
            self.problems.append(
                Problem(
                    path, f'{kind.noun} "{ref}" belongs to school "{ref_school}", not "{school}"'
                )
            )
        return ref_school

    def _moves(self) -> None:
        # A group or child the document moves to another school must not leave stored members
        # of its old school with it (members named in this document are checked as such).
        moved_children = {
            c: s
            for c, s in self.children.live.items()
            if s is not None and self.children.stored.get(c, s) != s
        }
        self.moved_groups = {
            g: s
            for g, s in self.groups.live.items()
            if s is not None and self.groups.stored.get(g, s) != s
        }
        listed_children = set(self.children.live) | self.children.deleted
        listed_guardians = {e.id for e in self.parsed.guardians if e.id is not None}
        strays: dict[tuple[str, str], list[str]] = defaultdict(list)
        for kind, moved, link, member, noun, listed in (
            ("groups", self.moved_groups, child_groups, CHILDREN, "child", listed_children),
            ("groups", self.moved_groups, guardian_groups, GUARDIANS, "guardian", listed_guardians),
            (
                "children",
                moved_children,
                guardian_children,
                GUARDIANS,
                "guardian",
                listed_guardians,
            ),
        ):
            owner_col = link.c.group_id if kind == "groups" else link.c.child_id
            for chunk in _chunks(moved):
                query = (
                    select(owner_col, member.c.id, member.c.school_id)
                    .join(member, member.c.id == link.c[f"{noun}_id"])
                    .where(_among(owner_col, chunk))
                )
                for owner, member_id, school in self.session.execute(query):
                    if (
                        member_id not in listed
                        and school != moved[owner]
                        and school not in self.schools.deleted
                    ):
                        strays[(kind, owner)].append(f'{noun} "{member_id}" (school "{school}")')
        for kind, moved in (("groups", self.moved_groups), ("children", moved_children)):
            for entry in getattr(self.parsed, kind):
                left = strays.get((kind, entry.id)) if entry.id in moved else None
                if left:
                    shown = ", ".join(sorted(left)[:5])
                    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
                    self.problems.append(
                        Problem(
                            f"{kind}[{entry.index}].school_id",
                            f'moves to school "{moved[entry.id]}" but still has members of another '
                            f"school: {shown}{more}",
                        )
                    )


def _schools_of_ids(session: Session, ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(session.scalars(select(SCHOOLS.c.id).where(_among(SCHOOLS.c.id, chunk))))
    return found


def _readable(entry: Entry[L, R]) -> L | R | None:
    return None if entry.deleted else entry.readable


def _all_readable(entries: list[Entry[L, R]]) -> Iterator[L | R]:
    for entry in entries:
        if (readable := _readable(entry)) is not None:
            yield readable


# --- the writing pass ---------------------------------------------------------------------------


@dataclass
class _Upserted:
    created: set[str]
    updated: set[str]
    stored: dict[str, Mapping[str, Any]]  # the rows as they were before


def _load_rows(
    session: Session, table: Table, key: str, fields: Iterable[str], ids: Iterable[str]
) -> dict[str, Mapping[str, Any]]:
    key_col = table.c[key]
    columns = [table.c[f] for f in fields]
    rows: dict[str, Mapping[str, Any]] = {}
    for chunk in _chunks(ids):
        query = select(key_col, *columns).where(_among(key_col, chunk))
        for row in session.execute(query).mappings():
            rows[row[key]] = dict(row)
    return rows


def _execute_many(session: Session, statement: Any, rows: list[dict[str, Any]]) -> None:
    # Absent JSON objects become SQL NULL, which a parameter cannot say: one statement per shape.
    shapes: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        nulls = frozenset(k for k in NULLABLE_JSON if k in row and row[k] is None)
        shapes[nulls].append({k: v for k, v in row.items() if k not in nulls})
    for nulls, batch in shapes.items():
        shaped = statement.values({k: null() for k in nulls}) if nulls else statement
        session.execute(shaped, batch)


def _upsert(
    session: Session,
    table: Table,
    wanted: dict[str, dict[str, Any]],
    *,
    key: str = "id",
    on_create: Mapping[str, Any] | None = None,
) -> _Upserted:
    """Insert the rows that are new, update those that differ, leave the others alone."""
    result = _Upserted(set(), set(), {})
    if not wanted:
        return result
    fields = list(next(iter(wanted.values())))
    result.stored = _load_rows(session, table, key, fields, wanted)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for ident, values in wanted.items():
        old = result.stored.get(ident)
        if old is None:
            inserts.append({key: ident, **values, **(on_create or {})})
            result.created.add(ident)
        elif any(old[f] != v for f, v in values.items()):
            updates.append({"_key": ident, **values})
            result.updated.add(ident)
    if inserts:
        _execute_many(session, insert(table), inserts)
    if updates:
        _execute_many(session, update(table).where(table.c[key] == bindparam("_key")), updates)
    return result


def _sync_pairs(
    session: Session, table: Table, owner: str, other: str, wanted: dict[str, set[str]]
) -> set[str]:
    """Make each owner's links exactly ``wanted[owner]``; returns the owners whose links changed."""
    owner_col, other_col = table.c[owner], table.c[other]
    stored: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(wanted):
        for row in session.execute(select(owner_col, other_col).where(_among(owner_col, chunk))):
            stored[row[0]].add(row[1])
    removals: list[dict[str, str]] = []
    additions: list[dict[str, str]] = []
    changed: set[str] = set()
    for ident, targets in wanted.items():
        have = stored.get(ident, set())
        removals.extend({"_owner": ident, "_other": t} for t in have - targets)
        additions.extend({owner: ident, other: t} for t in targets - have)
        if have != targets:
            changed.add(ident)
    if removals:
        session.execute(
            delete(table).where(owner_col == bindparam("_owner"), other_col == bindparam("_other")),
            removals,
        )
    if additions:
        session.execute(insert(table), additions)
    return changed


def _media_signature(rows: Iterable[Mapping[str, Any]], children: Mapping[str, set[str]]) -> Any:
    return sorted(
        (
            r["position"],
            r["id"],
            r["type"],
            r["url"],
            r["poster_url"],
            r["alt"],
            tuple(sorted(children.get(r["id"], ()))),
        )
        for r in rows
    )


class _Writer:
    """Applies a checked document: deletions first (dependants before parents), then upserts."""

    def __init__(
        self, session: Session, parsed: ParsedDocument, references: _References, now: datetime
    ) -> None:
        self.session = session
        self.parsed = parsed
        self.references = references
        self.now = now
        self.counts = {
            kind: dict.fromkeys(("created", "updated", "deleted", "unchanged"), 0) for kind in KINDS
        }

    def write(self) -> ImportSummary:
        """Write everything; the counts say what each object of the document did to the store."""
        self._delete()
        schools_changed = self._schools()
        self._groups()
        self._children()
        self._guardians()
        self._posts()
        return ImportSummary(self.counts, frozenset(schools_changed))

    def _tally(self, kind: str, live: int, created: set[str], changed: set[str]) -> None:
        counts = self.counts[kind]
        counts["created"] = len(created)
        counts["updated"] = len(changed - created)
        counts["unchanged"] += live - counts["created"] - counts["updated"]

    def _delete(self) -> None:
        # Dependants first, so each deleted object is counted by its own tombstone, not a cascade.
        for kind in reversed(KINDS):
            ids = _deleted_ids(getattr(self.parsed, kind))
            table = TABLES[kind]
            deleted = 0
            for chunk in _chunks(ids):
                result = self.session.execute(delete(table).where(_among(table.c.id, chunk)))
                deleted += cast(CursorResult[Any], result).rowcount
            self.counts[kind]["deleted"] = deleted
            self.counts[kind]["unchanged"] = len(ids) - deleted

    def _schools(self) -> set[str]:
        wanted: dict[str, dict[str, Any]] = {}
        for school in _items(self.parsed.schools):
            wanted[school.id] = {
                "name": school.name,
                "timezone": school.timezone,
                "locale": school.locale,
                "digest_weekday": school.digest_weekday,
                "digest_time": school.digest_time,
                "reply_to": school.reply_to,
                "portal_url": school.portal_url,
                "send_empty": school.send_empty,
                "requires_approval": school.requires_approval,
                "holidays": [
                    {"start": h.start.isoformat(), "end": h.end.isoformat(), "name": h.name}
                    for h in school.holidays
                ],
            }
        result = _upsert(self.session, SCHOOLS, wanted)
        self._tally("schools", len(wanted), result.created, result.updated)
        rescheduled = {
            ident
            for ident in result.updated
            if any(result.stored[ident][f] != wanted[ident][f] for f in SCHEDULE_FIELDS)
        }
        return result.created | rescheduled

    def _groups(self) -> None:
        wanted = {
            group.id: {"school_id": group.school_id, "name": group.name, "kind": group.kind}
            for group in _items(self.parsed.groups)
        }
        result = _upsert(self.session, GROUPS, wanted)
        self._tally("groups", len(wanted), result.created, result.updated)
        moved = self.references.moved_groups
        if moved:
            # A post's school is its group's: stored posts of a moved group follow it.
            self.session.execute(
                update(POSTS)
                .where(POSTS.c.group_id == bindparam("_group"))
                .values(school_id=bindparam("_school")),
                [{"_group": g, "_school": s} for g, s in moved.items()],
            )

    def _children(self) -> None:
        children = list(_items(self.parsed.children))
        wanted = {
            child.id: {
                "school_id": child.school_id,
                "first_name": child.first_name,
                "photo_consent": child.photo_consent,
            }
            for child in children
        }
        result = _upsert(self.session, CHILDREN, wanted)
        regrouped = _sync_pairs(
            self.session,
            child_groups,
            "child_id",
            "group_id",
            {child.id: set(child.group_ids) for child in children},
        )
        self._tally("children", len(wanted), result.created, result.updated | regrouped)

    def _guardians(self) -> None:
        guardians = list(_items(self.parsed.guardians))
        # Only the portal's fields: local choices and opt-outs belong to the service.
        wanted = {
            guardian.id: {
                "school_id": guardian.school_id,
                "name": guardian.name,
                "email": guardian.email,
                "locale": guardian.locale,
                "delivery": guardian.delivery,
                "portal_account": guardian.portal_account,
                "preferences_updated_at": guardian.preferences_updated_at,
            }
            for guardian in guardians
        }
        result = _upsert(self.session, GUARDIANS, wanted)
        with_children = _sync_pairs(
            self.session,
            guardian_children,
            "guardian_id",
            "child_id",
            {guardian.id: set(guardian.child_ids) for guardian in guardians},
        )
        with_groups = _sync_pairs(
            self.session,
            guardian_groups,
            "guardian_id",
            "group_id",
            {guardian.id: set(guardian.group_ids) for guardian in guardians},
        )
        changed = result.updated | with_children | with_groups
        self._tally("guardians", len(wanted), result.created, changed)

    def _posts(self) -> None:
        posts = list(_items(self.parsed.posts))
        group_school = self.references.group_school
        wanted: dict[str, dict[str, Any]] = {}
        for post in posts:
            wanted[post.id] = {
                "school_id": group_school[post.group_id],
                "group_id": post.group_id,
                "author": post.author,
                "kind": post.kind,
                "title": post.title,
                "body_html": post.body_html,
                "url": post.url,
                "published_at": post.published_at,
                "deleted_at": post.deleted_at,
                "links": [{"url": link.url, "title": link.title} for link in post.links],
                "meeting": None
                if post.meeting is None
                else {
                    "signup_url": post.meeting.signup_url,
                    "deadline": _iso(post.meeting.deadline),
                },
                "help": None
                if post.help is None
                else {
                    "signup_url": post.help.signup_url,
                    "needed_at": _iso(post.help.needed_at),
                    "what": post.help.what,
                },
            }
        # Marks late arrivals, so it is set once, when the post is first stored.
        result = _upsert(self.session, POSTS, wanted, on_create={"ingested_at": self.now})
        changed = result.updated | self._events(posts) | self._media(posts)
        self._tally("posts", len(wanted), result.created, changed)

    def _events(self, posts: list[PostIn]) -> set[str]:
        wanted = {
            post.id: {
                "starts_at": post.event.starts_at,
                "ends_at": post.event.ends_at,
                "location": post.event.location,
            }
            for post in posts
            if post.event is not None
        }
        without = [post.id for post in posts if post.event is None]
        dropped = set(_load_rows(self.session, EVENTS, "post_id", (), without))
        for chunk in _chunks(dropped):
            self.session.execute(delete(EVENTS).where(_among(EVENTS.c.post_id, chunk)))
        result = _upsert(self.session, EVENTS, wanted, key="post_id")
        return result.created | result.updated | dropped

    def _media(self, posts: list[PostIn]) -> set[str]:
        fields = ("post_id", "position", "type", "url", "poster_url", "alt")
        stored_rows: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        post_ids = [post.id for post in posts]
        for chunk in _chunks(post_ids):
            query = select(MEDIA.c.id, *(MEDIA.c[f] for f in fields)).where(
                _among(MEDIA.c.post_id, chunk)
            )
            for row in self.session.execute(query).mappings():
                stored_rows[row["post_id"]].append(dict(row))
        stored_children: dict[str, set[str]] = defaultdict(set)
        media_ids = [row["id"] for rows in stored_rows.values() for row in rows]
        for chunk in _chunks(media_ids):
            query = select(media_children.c.media_id, media_children.c.child_id).where(
                _among(media_children.c.media_id, chunk)
            )
            for media_id, child_id in self.session.execute(query):
                stored_children[media_id].add(child_id)

        changed: set[str] = set()
        wanted: dict[str, dict[str, Any]] = {}
        wanted_children: dict[str, set[str]] = {}
        for post in posts:
            media_rows: list[dict[str, Any]] = [
                {
                    "id": m.id,
                    "post_id": post.id,
                    "position": position,
                    "type": m.type,
                    "url": m.url,
                    "poster_url": m.poster_url,
                    "alt": m.alt,
                }
                for position, m in enumerate(post.media)
            ]
            children = {m.id: set(m.child_ids) for m in post.media}
            before = _media_signature(stored_rows.get(post.id, []), stored_children)
            if before == _media_signature(media_rows, children):
                continue
            changed.add(post.id)
            for media_row in media_rows:
                wanted[media_row.pop("id")] = media_row
            wanted_children.update(children)
        # Media that left a changed post, unless they moved to another post of this document.
        stale = {row["id"] for post_id in changed for row in stored_rows.get(post_id, [])} - set(
            wanted
        )
        for chunk in _chunks(stale):
            self.session.execute(delete(MEDIA).where(_among(MEDIA.c.id, chunk)))
        _upsert(self.session, MEDIA, wanted)
        _sync_pairs(self.session, media_children, "media_id", "child_id", wanted_children)
        return changed


def _items(entries: list[Entry[L, Any]]) -> Iterator[L]:
    # After the reading pass every live entry holds a valid object.
    for entry in entries:
        if not entry.deleted:
            assert entry.item is not None
            yield entry.item


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
