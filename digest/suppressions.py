"""The suppression list: addresses no mail goes to, each with a reason and the time it began.

An address is suppressed when mail to it failed permanently because the address does not exist
(5.1.x, 5.2.1: at RCPT time or in a late bounce), or when an administrator adds it. The plan
skips a suppressed address as ``skipped: suppressed``; an administrator can lift it. Addresses
are stored and compared lower-cased, like everywhere in the store.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from digest.errors import NotSuppressed
from digest.models import Suppression, utcnow

# local@domain without quoting, comments, brackets or spaces: what the store keeps as an address.
_ATOMS = r'[^\s\x00-\x1f\x7f<>()\[\],;:\\"@]+'
_BARE_ADDRESS = re.compile(f"{_ATOMS}@{_ATOMS}")


def normalize_address(address: str) -> str:
    """``address`` lower-cased and stripped; ValueError if it is not a bare ``local@domain``."""
    text = address.strip()
    if not _BARE_ADDRESS.fullmatch(text):
        raise ValueError(f'"{address}" is not an email address')
    return text.lower()


def add_suppression(
    session: Session, address: str, reason: str, *, at: datetime | None = None
) -> tuple[Suppression, bool]:
    """Suppress ``address``; returns its row and whether it is new (an existing one is kept)."""
    key = address.lower()
    existing = session.get(Suppression, key)
    if existing is not None:
        return existing, False
    row = Suppression(address=key, reason=reason, created_at=at or utcnow())
    session.add(row)
    session.flush()
    return row, True


def remove_suppression(session: Session, address: str) -> Suppression:
    """Lift the suppression of ``address`` (NotSuppressed if there is none); returns the row."""
    row = session.get(Suppression, address.strip().lower())
    if row is None:
        raise NotSuppressed(address.strip())
    session.delete(row)
    session.flush()
    return row


def list_suppressions(session: Session) -> list[Suppression]:
    """Every suppressed address, oldest first."""
    return list(
        session.scalars(select(Suppression).order_by(Suppression.created_at, Suppression.address))
    )
