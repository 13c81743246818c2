"""Administrators' accounts: argon2 hashes, the schools each may see, and login throttling.

Everything lives in the database, so several web processes agree on who is locked out. A
throttle key is an HMAC of the account's e-mail address or of the client's address, never the
address itself: the table must not become a list of who tried to log in from where.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from digest.errors import DigestError, UnknownSchool
from digest.models import Admin, AuditEvent, LoginThrottle, School
from digest.suppressions import normalize_address

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
MAX_FAILURES = 5  # failed logins per key within FAILURE_WINDOW …
FAILURE_WINDOW = timedelta(minutes=15)
LOCK_TIME = timedelta(minutes=15)  # … lock that key this long

_hasher = PasswordHasher()
# Verified against when the account does not exist, so a wrong address takes as long as a
# wrong password and the timing tells nobody which addresses have accounts.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class WeakPassword(DigestError, ValueError):
    """The password is refused before hashing (empty or too short); the message says which."""


class AdminExists(DigestError, ValueError):
    """An account with that e-mail address exists already."""


class UnknownAdmin(DigestError, LookupError):
    """No account with that e-mail address."""


class LoginLocked(DigestError, PermissionError):
    """Too many failed logins for this account or from this client; ``until`` says how long."""

    def __init__(self, until: datetime) -> None:
        super().__init__(f"too many failed logins: locked until {until:%H:%M} UTC")
        self.until = until


def check_password(password: str) -> None:
    """WeakPassword naming the problem, for an empty or short password."""
    if not password.strip():
        raise WeakPassword("the password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            f"the password is too short: {len(password)} characters, "
            f"at least {MIN_PASSWORD_LENGTH} are needed"
        )


def create_admin(
    session: Session, email: str, password: str, school_ids: list[str], *, at: datetime
) -> Admin:
    """A new account for ``email`` (lower-cased) that may see ``school_ids``."""
    try:
        address = normalize_address(email)
    except ValueError as exc:
        raise DigestError(str(exc)) from None
    check_password(password)
    if not school_ids:
        raise DigestError("an administrator needs at least one school (--school)")
    schools = []
    for school_id in dict.fromkeys(school_ids):
        school = session.get(School, school_id)
        if school is None:
            raise UnknownSchool(school_id)
        schools.append(school)
    if session.scalar(select(Admin.id).where(Admin.email == address)) is not None:
        raise AdminExists(f"an administrator {address} exists already")
    admin = Admin(
        email=address, password_hash=_hasher.hash(password), created_at=at, schools=schools
    )
    session.add(admin)
    session.flush()
    session.add(AuditEvent(at=at, admin_id=admin.id, action="admin_create"))
    log.info("admin %s created", admin.id)
    return admin


def disable_admin(session: Session, email: str, *, at: datetime) -> Admin:
    """Disable the account: it cannot log in, and its open sessions stop working at once."""
    admin = session.scalars(select(Admin).where(Admin.email == email.strip().lower())).one_or_none()
    if admin is None:
        raise UnknownAdmin(f'no administrator "{email.strip()}"')
    if admin.disabled_at is None:
        admin.disabled_at = at
    admin.session_version += 1
    session.add(AuditEvent(at=at, admin_id=admin.id, action="admin_disable"))
    log.info("admin %s disabled", admin.id)
    return admin


def list_admins(session: Session) -> list[Admin]:
    """Every account, with its schools, by e-mail address."""
    return list(
        session.scalars(select(Admin).options(selectinload(Admin.schools)).order_by(Admin.email))
    )


@dataclass(frozen=True)
class ThrottleKeys:
    """The two keys a login attempt counts against: the account's and the client's."""

    account: str
    client: str

    @classmethod
    def of(cls, email: str, client: str, *, secret: str) -> ThrottleKeys:
        return cls(
            account=_throttle_key("account", email.strip().lower(), secret),
            client=_throttle_key("client", client, secret),
        )


def _throttle_key(kind: str, value: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}:{digest[:48]}"


def authenticate(
    session: Session, email: str, password: str, keys: ThrottleKeys, *, at: datetime
) -> Admin | None:
    """The enabled account whose password this is, or None (a failure, counted).

    LoginLocked, before any password is checked, while either key is locked. A correct
    password clears the account's failures; a hash with outdated parameters is renewed.
    """
    locked = _locked_until(session, keys, at)
    if locked is not None:
        raise LoginLocked(locked)
    admin = session.scalars(select(Admin).where(Admin.email == email.strip().lower())).one_or_none()
    verified = _verify(admin.password_hash if admin else _DUMMY_HASH, password)
    if verified and admin is not None and admin.disabled_at is None:
        if _hasher.check_needs_rehash(admin.password_hash):
            admin.password_hash = _hasher.hash(password)
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys.account))
        return admin
    for key in (keys.account, keys.client):
        _count_failure(session, key, at)
    return None


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _locked_until(session: Session, keys: ThrottleKeys, at: datetime) -> datetime | None:
    ends = session.scalars(
        select(LoginThrottle.locked_until).where(
            LoginThrottle.key.in_((keys.account, keys.client)),
            LoginThrottle.locked_until > at,
        )
    ).all()
    return max((end for end in ends if end is not None), default=None)


def _count_failure(session: Session, key: str, at: datetime) -> None:
    """One more failure for ``key``, in single UPDATE statements so concurrent processes add up."""
    window_start = at - FAILURE_WINDOW
    counted = session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == key, LoginThrottle.first_at > window_start)
        .values(failures=LoginThrottle.failures + 1)
    )
    if counted.rowcount == 0:  # type: ignore[attr-defined]
        # No row, or an old window: start a new one.
        restarted = session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key)
            .values(failures=1, first_at=at, locked_until=None)
        )
        if restarted.rowcount == 0:  # type: ignore[attr-defined]
            try:
                with session.begin_nested():
                    session.add(LoginThrottle(key=key, failures=1, first_at=at))
            except IntegrityError:  # another process inserted it first: count on that row
                _count_failure(session, key, at)
                return
    session.execute(
        update(LoginThrottle)
        .where(
            LoginThrottle.key == key,
            LoginThrottle.failures >= MAX_FAILURES,
            LoginThrottle.locked_until.is_(None),
        )
        .values(locked_until=at + LOCK_TIME)
    )
