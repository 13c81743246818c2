"""The mail a guardian got, or would get, in an edition: the same compose and render as sending."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from digest.compose import compose, compose_delivery
from digest.content import MailContent
from digest.errors import UnknownGuardian
from digest.links import Links
from digest.models import Delivery, Edition, EditionPost, Guardian, Preference, Recipient
from digest.periods import latest_cutoff, next_cutoff
from digest.plan import PlanInput, decide, gather, load_school, upcoming_posts
from digest.status import find_edition


@dataclass(frozen=True)
class Preview:
    content: MailContent
    cutoff: datetime
    planned: bool  # False: the edition is not planned yet; this is what planning would do
    warning: str | None = None  # e.g. the guardian receives no newsletter


def preview(
    session: Session,
    links: Links,
    guardian_id: str,
    *,
    at: datetime,
    upcoming: bool = False,
    cutoff: datetime | None = None,
) -> Preview:
    """The newsletter of ``guardian_id`` in the edition ending at or before ``at`` (or the next).

    ``cutoff`` names the edition's end itself (an extra edition is off the weekly schedule).
    """
    guardian = session.get(Guardian, guardian_id)
    if guardian is None:
        raise UnknownGuardian(guardian_id)
    school = load_school(session, guardian.school_id)
    find = next_cutoff if upcoming else latest_cutoff
    if cutoff is None:
        cutoff = find(
            at, weekday=school.digest_weekday, clock=school.digest_time, zone=school.timezone
        )

    edition = None if upcoming else find_edition(session, school.id, cutoff)
    if edition is not None:
        planned = _planned_mail(session, links, edition, guardian)
        if planned is not None:
            return Preview(content=planned, cutoff=cutoff, planned=True)
        period_start = edition.period_start
        data = gather(
            session,
            school,
            post_query=select(EditionPost.post_id).where(EditionPost.edition_id == edition.id),
        )
    else:
        period_start, post_query = upcoming_posts(session, school, min(cutoff, at))
        data = gather(session, school, post_query=post_query)

    facts = next(g for g in data.guardians if g.id == guardian.id)
    warning = None
    if facts.opted_out or facts.preference is not Preference.NEWSLETTER or not facts.email:
        why = (
            "has opted out"
            if facts.opted_out
            else (
                "has no email address" if not facts.email else f"prefers {facts.preference.value}"
            )
        )
        warning = (
            f"guardian {guardian.id} receives no newsletter ({why}); this is what it would hold"
        )
        facts = replace(
            facts,
            preference=Preference.NEWSLETTER,
            opted_out=False,
            email=facts.email or "(no address)",
            suppressed=False,
        )
        sharing = [facts]
    else:
        address = facts.email.lower()
        sharing = [
            g for g in data.guardians if g.email and g.email.lower() == address and g.id != facts.id
        ] + [facts]
    decision = decide(
        PlanInput(
            school_id=school.id,
            school_locale=school.locale,
            send_empty=True,
            posts=data.posts,
            guardians=sharing,
            mailed=data.mailed,
        )
    )
    mail = next(m for m in decision.mails if facts.id in m.guardian_ids)
    content = compose(
        session,
        links,
        school=school,
        post_ids=mail.post_ids,
        guardian_ids=mail.guardian_ids,
        names=mail.names,
        address=mail.address,
        locale=mail.locale,
        period=(period_start, cutoff),
    )
    return Preview(content=content, cutoff=cutoff, planned=False, warning=warning)


def _planned_mail(
    session: Session, links: Links, edition: Edition, guardian: Guardian
) -> MailContent | None:
    """The frozen mail of a planned edition that this guardian is a recipient of."""
    delivery = session.scalars(
        select(Delivery)
        .join(Recipient, Recipient.delivery_id == Delivery.id)
        .where(Recipient.edition_id == edition.id, Recipient.guardian_id == guardian.id)
    ).one_or_none()
    return compose_delivery(session, links, delivery) if delivery else None
