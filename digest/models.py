"""The store: typed SQLAlchemy 2 models of the portal's data, the editions and the outbox.

Ids of portal objects are the portal's own strings. Times are stored in UTC (``UtcDateTime``),
so SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC; read back aware (SQLite keeps no offsets)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as the value strings, checked in Python; a new value needs no ALTER TYPE.
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=20,
        values_callable=lambda members: [m.value for m in members],
    )


class GroupKind(enum.StrEnum):
    SCHOOL = "school"
    CLASS = "class"
    COMMITTEE = "committee"


class PostKind(enum.StrEnum):
    MESSAGE = "message"
    PHOTOS = "photos"
    EVENT = "event"
    LINK = "link"
    MEETING = "meeting"
    HELP = "help"


class Preference(enum.StrEnum):
    """How a guardian wants the news: the portal's app, one mail per post, or the newsletter."""

    APP = "app"
    EMAIL = "email"
    NEWSLETTER = "newsletter"


class PhotoConsent(enum.StrEnum):
    NONE = "none"
    PORTAL = "portal"
    EMAIL = "email"
    PUBLIC = "public"


class MediaType(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class EditionStatus(enum.StrEnum):
    PLANNED = "planned"
    AWAITING_APPROVAL = "awaiting_approval"
    SENDING = "sending"
    DONE = "done"
    HELD = "held"
    CANCELLED = "cancelled"
    SKIPPED_HOLIDAY = "skipped_holiday"


class DeliveryStatus(enum.StrEnum):
    """The state of one outbox row (DESIGN.md's one list)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    EXPIRED = "expired"
    SKIPPED = "skipped"


class SkipReason(enum.StrEnum):
    APP = "app"
    PER_POST = "per_post"
    NO_POSTS = "no_posts"
    UNREACHABLE = "unreachable"
    SUPPRESSED = "suppressed"
    OPTED_OUT = "opted_out"


class AlertKind(enum.StrEnum):
    """What needs an administrator's eye (DESIGN.md): each is a row, an ERROR log and a metric."""

    TRANSPORT_PAUSED = "transport_paused"  # the mail server blames us: nothing is sent for now
    MISSED_RUN = "missed_run"  # an edition's run came later than the grace allows
    RUN_FAILED = "run_failed"


class EditionKind(enum.StrEnum):
    REGULAR = "regular"  # the weekly edition at the school's cutoff
    EXTRA = "extra"  # "run now" by an administrator: cutoff at that moment


class DeliveryKind(enum.StrEnum):
    NEWSLETTER = "newsletter"
    POST = "post"


child_groups = Table(
    "child_groups",
    Base.metadata,
    Column("child_id", ForeignKey("children.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_child_groups_group_id", "group_id"),
)

guardian_children = Table(
    "guardian_children",
    Base.metadata,
    Column("guardian_id", ForeignKey("guardians.id", ondelete="CASCADE"), primary_key=True),
    Column("child_id", ForeignKey("children.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_guardian_children_child_id", "child_id"),
)

guardian_groups = Table(
    "guardian_groups",
    Base.metadata,
    Column("guardian_id", ForeignKey("guardians.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_guardian_groups_group_id", "group_id"),
)

media_children = Table(
    "media_children",
    Base.metadata,
    Column("media_id", ForeignKey("media.id", ondelete="CASCADE"), primary_key=True),
    Column("child_id", ForeignKey("children.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_media_children_child_id", "child_id"),
)


class School(Base):
    __tablename__ = "schools"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Amsterdam")
    locale: Mapped[str] = mapped_column(String(35), default="nl")
    digest_weekday: Mapped[int] = mapped_column(Integer, default=4)  # Monday is 0
    digest_time: Mapped[str] = mapped_column(String(5), default="16:00")
    reply_to: Mapped[str | None] = mapped_column(String(320))
    portal_url: Mapped[str | None] = mapped_column(String(2000))
    send_empty: Mapped[bool] = mapped_column(Boolean, default=False)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    holidays: Mapped[list[Any]] = mapped_column(default=list)

    groups: Mapped[list[Group]] = relationship(back_populates="school")


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[GroupKind] = mapped_column(_enum(GroupKind))

    school: Mapped[School] = relationship(back_populates="groups")


class Child(Base):
    __tablename__ = "children"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    first_name: Mapped[str] = mapped_column(String(200))
    photo_consent: Mapped[PhotoConsent] = mapped_column(
        _enum(PhotoConsent), default=PhotoConsent.NONE
    )

    groups: Mapped[list[Group]] = relationship(secondary=child_groups)


class Guardian(Base):
    __tablename__ = "guardians"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    locale: Mapped[str | None] = mapped_column(String(35))
    delivery: Mapped[Preference] = mapped_column(_enum(Preference), default=Preference.NEWSLETTER)
    portal_account: Mapped[bool] = mapped_column(Boolean, default=True)
    preferences_updated_at: Mapped[datetime | None]
    # A choice the parent made through the service itself; wins until the portal sends newer.
    local_delivery: Mapped[Preference | None] = mapped_column(_enum(Preference))
    local_locale: Mapped[str | None] = mapped_column(String(35))
    local_choice_at: Mapped[datetime | None]
    opted_out_at: Mapped[datetime | None]

    children: Mapped[list[Child]] = relationship(secondary=guardian_children)
    groups: Mapped[list[Group]] = relationship(secondary=guardian_groups)


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(200))
    kind: Mapped[PostKind] = mapped_column(_enum(PostKind), default=PostKind.MESSAGE)
    title: Mapped[str] = mapped_column(String(500))
    body_html: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str | None] = mapped_column(String(2000))
    published_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    links: Mapped[list[Any]] = mapped_column(default=list)
    meeting: Mapped[dict[str, Any] | None]
    help: Mapped[dict[str, Any] | None]
    # When we first stored it: a post that arrives after its week was planned is "late".
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)

    media: Mapped[list[Media]] = relationship(
        back_populates="post", order_by="Media.position", cascade="all, delete-orphan"
    )
    event: Mapped[Event | None] = relationship(
        back_populates="post", cascade="all, delete-orphan", uselist=False
    )

    __table_args__ = (Index("ix_posts_school_published", "school_id", "published_at"),)


class Media(Base):
    __tablename__ = "media"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    type: Mapped[MediaType] = mapped_column(_enum(MediaType), default=MediaType.IMAGE)
    url: Mapped[str] = mapped_column(String(2000))
    poster_url: Mapped[str | None] = mapped_column(String(2000))
    alt: Mapped[str | None] = mapped_column(String(500))

    post: Mapped[Post] = relationship(back_populates="media")
    children: Mapped[list[Child]] = relationship(secondary=media_children)


class Event(Base):
    __tablename__ = "events"

    post_id: Mapped[str] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    location: Mapped[str | None] = mapped_column(String(500))

    post: Mapped[Post] = relationship(back_populates="event")


class Edition(Base):
    """One weekly (or extra) newsletter of a school: the period ``(period_start, cutoff]``."""

    __tablename__ = "editions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    cutoff: Mapped[datetime]
    period_start: Mapped[datetime]
    status: Mapped[EditionStatus] = mapped_column(
        _enum(EditionStatus), default=EditionStatus.PLANNED
    )
    planned_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[EditionKind] = mapped_column(
        _enum(EditionKind), default=EditionKind.REGULAR, server_default=EditionKind.REGULAR.value
    )
    # Set when the scheduler ran the edition later than its cutoff (a restart within the grace).
    late_seconds: Mapped[int | None] = mapped_column(Integer)
    # The administrator who approved, held or cancelled it last, and when.
    decided_by: Mapped[int | None] = mapped_column(
        ForeignKey("admins.id", ondelete="SET NULL"), index=True
    )
    decided_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("school_id", "cutoff"),)


class EditionPost(Base):
    """A post belongs to one live edition: the first planned after it appeared."""

    __tablename__ = "edition_posts"

    post_id: Mapped[str] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), index=True
    )


class Delivery(Base):
    """One row of the outbox: one mail to one address, with the post ids it carries frozen."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[DeliveryKind] = mapped_column(_enum(DeliveryKind), default=DeliveryKind.NEWSLETTER)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"), index=True)
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    post_id: Mapped[str | None] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))
    locale: Mapped[str] = mapped_column(String(35))
    post_ids: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus), default=DeliveryStatus.QUEUED
    )
    reason: Mapped[SkipReason | None] = mapped_column(_enum(SkipReason))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Retries stop this long after the first try (not after creation: a replayed week with
    # --at must age the same way).
    first_attempt_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    last_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(300), index=True)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    # A newsletter too large for one mail goes as numbered parts; a retry sends the rest only.
    parts_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("edition_id", "address"),
        UniqueConstraint("post_id", "address", name="uq_deliveries_post_address"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )


class Recipient(Base):
    """What the plan decided for one guardian: a mail (possibly shared), or a skip reason."""

    __tablename__ = "recipients"

    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True
    )
    guardian_id: Mapped[str] = mapped_column(
        ForeignKey("guardians.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    reason: Mapped[SkipReason | None] = mapped_column(_enum(SkipReason))
    preference: Mapped[Preference] = mapped_column(_enum(Preference))


class Suppression(Base):
    """An address we must not mail (a permanent bounce), with why and since when."""

    __tablename__ = "suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """Something the administrators must see; open until ``resolved_at``.

    A transport pause is one open alert whose ``until`` says when sending may try again and whose
    ``count`` doubles the next pause; every worker process honours it before it claims rows.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[AlertKind] = mapped_column(_enum(AlertKind))
    school_id: Mapped[str | None] = mapped_column(
        ForeignKey("schools.id", ondelete="CASCADE"), index=True
    )
    message: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    until: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_alerts_kind_resolved", "kind", "resolved_at"),)


admin_schools = Table(
    "admin_schools",
    Base.metadata,
    Column("admin_id", ForeignKey("admins.id", ondelete="CASCADE"), primary_key=True),
    Column("school_id", ForeignKey("schools.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_admin_schools_school_id", "school_id"),
)


class Admin(Base):
    """A school administrator's account: an argon2 hash, the schools it may see."""

    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]
    # Bumped by a password change or a disable: older session cookies stop working.
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    schools: Mapped[list[School]] = relationship(secondary=admin_schools)


class AuditEvent(Base):
    """Who did what, when: previews of a parent's mail, tests, approvals, lifts, run-now, logins.

    Plain ids, no foreign keys: the log outlives the rows it mentions (until retention).
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    admin_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(40))
    school_id: Mapped[str | None] = mapped_column(String(64), index=True)
    guardian_id: Mapped[str | None] = mapped_column(String(64))
    edition_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)  # never an address, token or post text


class LoginThrottle(Base):
    """Failed logins per key (an account's e-mail hash or a client address), for throttling."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]


class Heartbeat(Base):
    """A running process's last sign of life: ``/healthz`` reads these (scheduler, workers)."""

    __tablename__ = "heartbeats"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # role:host:pid
    role: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)
