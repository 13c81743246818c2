"""The ingest stage: the v1 contract of DESIGN.md, each test named for the rule it checks."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import child, document, group, guardian, post, school
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from digest.errors import ImportRefused
from digest.ingest import ImportSummary, import_document, parse_document
from digest.models import (
    Base,
    Child,
    Event,
    Group,
    GroupKind,
    Guardian,
    Media,
    PhotoConsent,
    Post,
    Preference,
    School,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def load(
    sessions: sessionmaker[Session], doc: dict[str, Any], now: datetime = NOW
) -> ImportSummary:
    with sessions() as session, session.begin():
        return import_document(session, doc, now=now)


def refused(sessions: sessionmaker[Session], doc: Any) -> list[str]:
    """The problems of a refused document, as ``path: message`` lines."""
    with sessions() as session, session.begin(), pytest.raises(ImportRefused) as caught:
        import_document(session, doc, now=NOW)
    return [str(problem) for problem in caught.value.problems]


def dump(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: two equal dumps are two equal stores."""
    with sessions() as session:
        return {
            table.name: sorted((tuple(row) for row in session.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }


def row_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def rich_school() -> dict[str, Any]:
    """One school using every optional field of the contract."""
    return document(
        schools=[
            school(
                portal_url="https://portal.example/s1",
                send_empty=True,
                requires_approval=True,
                holidays=[{"start": "2026-12-19", "end": "2027-01-04", "name": "Kerstvakantie"}],
            )
        ],
        groups=[group("gs", kind="school", name="De Schakel"), group("g5", name="Groep 5")],
        children=[child("c1", ["g5", "gs"], consent="portal"), child("c2", ["g5"])],
        guardians=[
            guardian(
                "p1",
                ["c1"],
                portal_account=False,
                preferences_updated_at="2026-11-01T08:00:00+01:00",
            ),
            guardian("p2", ["c1", "c2"], email=None, delivery="app", group_ids=["gs"]),
        ],
        posts=[
            post(
                "m1",
                "g5",
                "2026-11-24T10:15:00+01:00",
                kind="event",
                title="Excursie naar het bos",
                url="https://portal.example/posts/m1",
                media=[
                    {
                        "id": "f1",
                        "type": "image",
                        "url": "https://portal.example/f1.jpg",
                        "alt": "Kinderen in het bos",
                        "child_ids": ["c1"],
                    },
                    {
                        "id": "f2",
                        "type": "video",
                        "url": "https://portal.example/f2.mp4",
                        "poster_url": "https://portal.example/f2.jpg",
                        "child_ids": ["c1", "c2"],
                    },
                ],
                event={
                    "starts_at": "2026-12-02T09:00:00+01:00",
                    "ends_at": "2026-12-02T12:00:00+01:00",
                    "location": "Kagerbos",
                },
                links=[{"url": "https://www.kagerbos.example/", "title": "Het bos"}],
                meeting={
                    "signup_url": "https://portal.example/meet",
                    "deadline": "2026-11-30T17:00:00+01:00",
                },
            )
        ],
    )


# --- a valid document lands ------------------------------------------------------------------


def test_a_full_valid_document_lands(sessions):
    summary = load(sessions, rich_school())

    assert summary.counts["posts"] == {"created": 1, "updated": 0, "deleted": 0, "unchanged": 0}
    assert summary.counts["guardians"]["created"] == 2
    assert summary.schools_changed == {"s1"}
    with sessions() as session:
        s1 = session.get_one(School, "s1")
        assert (s1.name, s1.timezone, s1.locale, s1.digest_weekday, s1.digest_time) == (
            "De Schakel",
            "Europe/Amsterdam",
            "nl",
            4,
            "16:00",
        )
        assert (s1.reply_to, s1.portal_url, s1.send_empty, s1.requires_approval) == (
            "info@schakel.example",
            "https://portal.example/s1",
            True,
            True,
        )
        assert s1.holidays == [
            {"start": "2026-12-19", "end": "2027-01-04", "name": "Kerstvakantie"}
        ]
        assert session.get_one(Group, "gs").kind is GroupKind.SCHOOL
        c1 = session.get_one(Child, "c1")
        assert sorted(g.id for g in c1.groups) == ["g5", "gs"]
        assert c1.photo_consent is PhotoConsent.PORTAL
        p1 = session.get_one(Guardian, "p1")
        assert (p1.email, p1.portal_account, p1.delivery) == (
            "p1@ouders.example",
            False,
            Preference.NEWSLETTER,
        )
        assert p1.preferences_updated_at == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
        p2 = session.get_one(Guardian, "p2")
        assert p2.email is None  # unreachable, kept to be listed
        assert sorted(c.id for c in p2.children) == ["c1", "c2"]
        assert [g.id for g in p2.groups] == ["gs"]
        m1 = session.get_one(Post, "m1")
        assert m1.school_id == "s1"  # from its group
        assert m1.published_at == datetime(2026, 11, 24, 9, 15, tzinfo=UTC)
        assert m1.ingested_at == NOW
        assert [(m.id, m.position, m.type.value) for m in m1.media] == [
            ("f1", 0, "image"),
            ("f2", 1, "video"),
        ]
        assert sorted(c.id for c in m1.media[1].children) == ["c1", "c2"]
        assert m1.media[1].poster_url == "https://portal.example/f2.jpg"
        assert m1.event is not None
        assert m1.event.starts_at == datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
        assert m1.event.location == "Kagerbos"
        assert m1.links == [{"url": "https://www.kagerbos.example/", "title": "Het bos"}]
        assert m1.meeting == {
            "signup_url": "https://portal.example/meet",
            "deadline": "2026-11-30T16:00:00+00:00",
        }
        assert m1.help is None


def test_the_small_school_fixture_lands(sessions, small_school):
    summary = load(sessions, small_school)

    assert {kind: c["created"] for kind, c in summary.counts.items()} == {
        "schools": 1,
        "groups": 4,
        "children": 3,
        "guardians": 5,
        "posts": 4,
    }
    with sessions() as session:
        assert session.get_one(Post, "m4").school_id == "s1"
        assert session.get_one(Guardian, "p5").email is None


def test_absent_fields_take_the_documented_defaults(sessions):
    bare_school = {"id": "s1", "name": "De Schakel"}
    bare_guardian = {"id": "p1", "school_id": "s1", "name": "Ouder"}
    bare_child = {"id": "c1", "school_id": "s1", "first_name": "Sem"}
    load(
        sessions, document(schools=[bare_school], children=[bare_child], guardians=[bare_guardian])
    )

    with sessions() as session:
        s1 = session.get_one(School, "s1")
        assert (s1.timezone, s1.locale, s1.digest_weekday, s1.digest_time) == (
            "Europe/Amsterdam",
            "nl",
            4,
            "16:00",
        )
        assert (s1.send_empty, s1.requires_approval, s1.holidays, s1.reply_to) == (
            False,
            False,
            [],
            None,
        )
        p1 = session.get_one(Guardian, "p1")
        assert (p1.delivery, p1.portal_account, p1.email, p1.locale) == (
            Preference.NEWSLETTER,
            True,
            None,
            None,
        )
        assert session.get_one(Child, "c1").photo_consent is PhotoConsent.NONE


def test_weekday_is_stored_as_a_number_and_locales_as_given(sessions):
    load(
        sessions,
        document(
            schools=[school(digest_weekday="monday", digest_time="08:30", locale="nl-BE")],
            guardians=[guardian("p1", [], locale="ar"), guardian("p2", [], locale="zh-Hant-TW")],
        ),
    )

    with sessions() as session:
        s1 = session.get_one(School, "s1")
        assert (s1.digest_weekday, s1.digest_time, s1.locale) == (0, "08:30", "nl-BE")
        assert session.get_one(Guardian, "p2").locale == "zh-Hant-TW"


def test_unknown_fields_and_keys_are_ignored(sessions):
    doc = document(schools=[school(colour="blue")], groups=[group("g5", capacity=30)])
    doc["teachers"] = [{"id": "t1"}]
    doc["exported_by"] = "portal 7.2"

    summary = load(sessions, doc)

    assert summary.counts["groups"]["created"] == 1


def test_guardian_email_is_stored_stripped_and_blank_means_unreachable(sessions):
    load(
        sessions,
        document(
            schools=[school()],
            guardians=[
                guardian("p1", [], email="  F.Yilmaz@Example.org "),
                guardian("p2", [], email="  "),  # the factory reads "" as "make one up"
            ],
        ),
    )

    with sessions() as session:
        assert session.get_one(Guardian, "p1").email == "F.Yilmaz@Example.org"
        assert session.get_one(Guardian, "p2").email is None


# --- idempotence and replacement -------------------------------------------------------------


def test_importing_the_same_document_twice_changes_nothing(sessions, small_school):
    doc = rich_school()
    doc["posts"].append(post("m2", "gs", None, deleted_at="2026-11-20T10:00:00+01:00"))
    doc["groups"].append({"id": "gone", "deleted": True})
    load(sessions, doc)
    before = dump(sessions)

    summary = load(sessions, doc, now=datetime(2026, 11, 25, tzinfo=UTC))

    assert dump(sessions) == before
    assert summary.schools_changed == frozenset()
    for kind, counts in summary.counts.items():
        assert counts["created"] == counts["updated"] == counts["deleted"] == 0, kind
    assert summary.counts["posts"]["unchanged"] == 2
    assert summary.counts["groups"]["unchanged"] == 3


def test_an_update_replaces_scalars_and_associations(sessions):
    load(sessions, rich_school())
    doc = rich_school()
    doc["schools"][0]["name"] = "De Schakel (Leiden)"
    doc["children"][0]["group_ids"] = ["g5"]
    doc["guardians"][1].update(child_ids=["c2"], group_ids=[])
    doc["posts"][0].update(
        title="Excursie gaat niet door",
        media=[
            {
                "id": "f2",
                "type": "video",
                "url": "https://portal.example/f2.mp4",
                "child_ids": ["c2"],
            },
            {"id": "f3", "url": "https://portal.example/f3.jpg"},
        ],
        event=None,
        links=[],
        meeting=None,
    )

    summary = load(sessions, doc)

    assert summary.counts["schools"]["updated"] == 1
    assert summary.schools_changed == frozenset()  # the name is not a schedule setting
    assert summary.counts["children"] == {"created": 0, "updated": 1, "deleted": 0, "unchanged": 1}
    assert summary.counts["guardians"] == {"created": 0, "updated": 1, "deleted": 0, "unchanged": 1}
    assert summary.counts["posts"]["updated"] == 1
    with sessions() as session:
        assert session.get_one(School, "s1").name == "De Schakel (Leiden)"
        assert [g.id for g in session.get_one(Child, "c1").groups] == ["g5"]
        p2 = session.get_one(Guardian, "p2")
        assert ([c.id for c in p2.children], p2.groups) == (["c2"], [])
        m1 = session.scalars(
            select(Post)
            .where(Post.id == "m1")
            .options(selectinload(Post.media).selectinload(Media.children))
        ).one()
        assert m1.title == "Excursie gaat niet door"
        assert [(m.id, m.position, [c.id for c in m.children]) for m in m1.media] == [
            ("f2", 0, ["c2"]),
            ("f3", 1, []),
        ]
        assert m1.media[0].poster_url is None
        assert session.get(Media, "f1") is None
        assert m1.event is None
        assert session.scalar(select(func.count()).select_from(Event)) == 0
        assert (m1.links, m1.meeting) == ([], None)


def test_schedule_changes_name_the_school_for_the_scheduler(sessions):
    load(sessions, document(schools=[school(), school("s2", name="De Regenboog")]))

    summary = load(
        sessions,
        document(
            schools=[
                school(holidays=[{"start": "2027-02-15", "end": "2027-02-19", "name": "Voorjaar"}]),
                school("s2", name="De Regenboog", reply_to="nieuw@regenboog.example"),
            ]
        ),
    )

    assert summary.schools_changed == {"s1"}
    assert summary.counts["schools"]["updated"] == 2


def test_ingested_at_is_set_once_and_never_changed_by_reimports(sessions):
    doc = document(
        schools=[school()],
        groups=[group("g5")],
        posts=[post("m1", "g5", "2026-11-24T10:15:00+01:00")],
    )
    load(sessions, doc, now=NOW)
    doc["posts"][0]["title"] = "Nieuwe titel"

    load(sessions, doc, now=datetime(2026, 12, 1, tzinfo=UTC))

    with sessions() as session:
        m1 = session.get_one(Post, "m1")
        assert (m1.title, m1.ingested_at) == ("Nieuwe titel", NOW)


def test_the_services_own_guardian_fields_are_never_touched(sessions):
    doc = document(schools=[school()], guardians=[guardian("p1", [], delivery="email")])
    load(sessions, doc)
    chosen = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with sessions() as session, session.begin():
        p1 = session.get_one(Guardian, "p1")
        p1.local_delivery = Preference.NEWSLETTER
        p1.local_locale = "en"
        p1.local_choice_at = chosen
        p1.opted_out_at = chosen
    doc["guardians"][0]["delivery"] = "app"

    load(sessions, doc)

    with sessions() as session:
        p1 = session.get_one(Guardian, "p1")
        assert p1.delivery is Preference.APP
        assert (p1.local_delivery, p1.local_locale, p1.local_choice_at, p1.opted_out_at) == (
            Preference.NEWSLETTER,
            "en",
            chosen,
            chosen,
        )


def test_a_group_moved_to_another_school_takes_its_posts_along(sessions):
    load(
        sessions,
        document(
            schools=[school(), school("s2", name="De Regenboog")],
            groups=[group("mr", kind="committee")],
            posts=[post("m1", "mr", "2026-11-24T10:15:00+01:00")],
        ),
    )

    load(sessions, document(groups=[group("mr", school_id="s2", kind="committee")]))

    with sessions() as session:
        assert session.get_one(Post, "m1").school_id == "s2"


# --- deletion ----------------------------------------------------------------------------------


def test_deleted_true_removes_the_stored_row_and_its_dependants(sessions, small_school):
    load(sessions, small_school)

    summary = load(
        sessions,
        document(
            groups=[{"id": "g7", "deleted": True}],
            guardians=[{"id": "p1", "deleted": True}, {"id": "nobody", "deleted": True}],
            posts=[{"id": "m1", "deleted": True}],
        ),
    )

    assert summary.counts["groups"]["deleted"] == 1
    assert summary.counts["guardians"] == {"created": 0, "updated": 0, "deleted": 1, "unchanged": 1}
    with sessions() as session:
        assert session.get(Group, "g7") is None
        assert session.get(Guardian, "p1") is None
        assert session.get(Post, "m1") is None
        assert session.get(Post, "m2") is None  # it was in g7
        assert session.get_one(Child, "c2").groups == []
        assert session.get(Guardian, "p2") is not None


def test_deleting_a_school_cascades_and_unknown_ids_are_no_error(sessions, small_school):
    load(sessions, small_school)

    load(sessions, document(schools=[{"id": "s1", "deleted": True}, {"id": "s9", "deleted": True}]))

    assert {name: n for name, n in row_counts(sessions).items() if n} == {}


def test_a_post_with_deleted_at_is_kept_with_it(sessions, small_school):
    load(sessions, small_school)
    doc = copy.deepcopy(small_school)
    doc["posts"][0]["deleted_at"] = "2026-11-25T08:00:00+01:00"

    summary = load(sessions, doc)

    assert summary.counts["posts"]["updated"] == 1
    with sessions() as session:
        m1 = session.get_one(Post, "m1")
        assert m1.deleted_at == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


# --- references --------------------------------------------------------------------------------


def test_references_may_be_satisfied_by_an_earlier_import(sessions, small_school):
    load(sessions, small_school)

    summary = load(
        sessions,
        document(
            children=[child("c9", ["g5", "gs"])],
            guardians=[guardian("p9", ["c9", "c1"], group_ids=["mr"])],
            posts=[
                post(
                    "m9",
                    "g7",
                    "2026-11-26T08:00:00+01:00",
                    media=[
                        {"id": "f9", "url": "https://portal.example/f9.jpg", "child_ids": ["c2"]}
                    ],
                )
            ],
        ),
    )

    assert summary.counts["guardians"]["created"] == 1
    with sessions() as session:
        assert sorted(c.id for c in session.get_one(Guardian, "p9").children) == ["c1", "c9"]
        assert session.get_one(Post, "m9").school_id == "s1"


def test_unknown_group_reference_is_named_by_its_path(sessions):
    problems = refused(sessions, document(schools=[school()], posts=[post("m1", "g9", None)]))

    assert problems == ['posts[0].group_id: unknown group "g9"']


def test_a_guardian_cannot_have_a_child_of_another_school(sessions):
    problems = refused(
        sessions,
        document(
            schools=[school(), school("s2", name="De Regenboog")],
            groups=[group("g5"), group("r1", school_id="s2")],
            children=[child("c1", ["g5"]), child("c2", ["r1"], school_id="s2")],
            guardians=[guardian("p1", ["c1", "c2"], group_ids=["r1"])],
        ),
    )

    assert problems == [
        'guardians[0].child_ids[1]: child "c2" belongs to school "s2", not "s1"',
        'guardians[0].group_ids[0]: group "r1" belongs to school "s2", not "s1"',
    ]


def test_a_child_cannot_be_in_a_group_of_another_stored_school(sessions):
    load(
        sessions,
        document(
            schools=[school(), school("s2", name="De Regenboog")],
            groups=[group("r1", school_id="s2")],
        ),
    )

    problems = refused(sessions, document(children=[child("c1", ["r1"])]))

    assert problems == ['children[0].group_ids[0]: group "r1" belongs to school "s2", not "s1"']


def test_a_reference_to_an_object_deleted_in_the_same_document_is_refused(sessions, small_school):
    load(sessions, small_school)

    problems = refused(
        sessions,
        document(
            groups=[{"id": "g5", "deleted": True}],
            children=[child("c9", ["g5"])],
        ),
    )

    assert problems == ['children[0].group_ids[0]: group "g5" is deleted in this document']


def test_a_group_cannot_move_away_from_its_stored_members(sessions, small_school):
    small_school["guardians"][1]["group_ids"] = ["mr"]
    load(sessions, small_school)

    problems = refused(
        sessions,
        document(
            schools=[school("s2", name="De Regenboog")],
            groups=[group("g7", school_id="s2"), group("mr", school_id="s2", kind="committee")],
            guardians=[guardian("p9", [], school_id="s2", group_ids=["mr"])],
        ),
    )

    assert problems == [
        'groups[0].school_id: moves to school "s2" but still has members of another school: '
        'child "c2" (school "s1")',
        'groups[1].school_id: moves to school "s2" but still has members of another school: '
        'guardian "p2" (school "s1")',
    ]


def test_duplicate_ids_are_refused(sessions):
    problems = refused(
        sessions,
        document(
            schools=[school()],
            groups=[group("g5"), group("g5", name="Groep 5b")],
            posts=[
                post("m1", "g5", None, media=[{"id": "f1", "url": "https://p.example/1.jpg"}]),
                post("m2", "g5", None, media=[{"id": "f1", "url": "https://p.example/2.jpg"}]),
            ],
        ),
    )

    assert problems == [
        'groups[1].id: duplicate id "g5" (also groups[0])',
        'posts[1].media[0].id: duplicate media id "f1" (also posts[0].media[0])',
    ]


# --- a bad document is refused whole -----------------------------------------------------------


def test_a_bad_document_lists_every_problem_by_path_and_writes_nothing(sessions, small_school):
    load(sessions, small_school)
    before = dump(sessions)
    doc = copy.deepcopy(small_school)
    doc["schools"][0]["timezone"] = "Europe/Amsterdm"
    doc["groups"].append(group("g8", kind="club"))
    doc["children"].append(child("c4", ["g5", "g6"]))
    doc["guardians"][3]["email"] = "p4 at ouders.example"
    doc["guardians"].append(guardian("p6", ["c9"], delivery="post"))
    doc["posts"][2]["media"] = [{"id": "f1", "url": "javascript:alert(1)", "child_ids": ["c7"]}]
    doc["posts"].append(post("m5", "g9", "2026-11-26T13:00:00"))

    problems = refused(sessions, doc)

    assert problems == [
        'schools[0].timezone: unknown time zone "Europe/Amsterdm"',
        'groups[4].kind: unknown group kind "club"; allowed: school, class, committee',
        'children[3].group_ids[1]: unknown group "g6"',
        "guardians[3].email: not a valid email address",
        'guardians[5].delivery: unknown delivery "post"; allowed: app, email, newsletter',
        'guardians[5].child_ids[0]: unknown child "c9"',
        "posts[2].media[0].url: must be an http or https URL",
        'posts[2].media[0].child_ids[0]: unknown child "c7"',
        "posts[4].published_at: needs a UTC offset",
        'posts[4].group_id: unknown group "g9"',
    ]
    assert dump(sessions) == before


def test_a_refused_first_import_leaves_the_store_empty(sessions, small_school):
    doc = copy.deepcopy(small_school)
    doc["posts"][3]["group_id"] = "g9"

    problems = refused(sessions, doc)

    assert problems == ['posts[3].group_id: unknown group "g9"']
    assert set(row_counts(sessions).values()) == {0}


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("schools", "name", "De Schakel\r\nBcc: iedereen@example.org"),
        ("groups", "name", "Groep 5\n"),
        ("children", "first_name", "Sem\x07"),
        ("guardians", "name", "Fatma\rYilmaz"),
        ("posts", "title", "Excursie\nSubject: gratis"),
        ("posts", "author", "Juf\u2028Anne"),
    ],
)
def test_a_line_break_or_control_character_in_a_header_string_is_refused(
    sessions, small_school, where, field, value
):
    doc = copy.deepcopy(small_school)
    doc[where][0][field] = value

    problems = refused(sessions, doc)

    assert problems == [f"{where}[0].{field}: must not contain line breaks or control characters"]


def test_a_line_break_in_the_reply_to_address_is_refused(sessions):
    problems = refused(
        sessions, document(schools=[school(reply_to="info@schakel.example\r\nBcc: x@example.org")])
    )

    assert problems == ["schools[0].reply_to: not a valid email address"]


@pytest.mark.parametrize(
    "address", ["f.yilmaz", "f.yilmaz@", "Fatma <f@example.org>", "a b@example.org", "f@@x.nl"]
)
def test_a_malformed_email_is_refused(sessions, address):
    problems = refused(
        sessions, document(schools=[school()], guardians=[guardian("p1", [], email=address)])
    )

    assert problems == ["guardians[0].email: not a valid email address"]


@pytest.mark.parametrize(
    ("where", "field", "value", "message"),
    [
        (
            "groups",
            "kind",
            "Class",
            'unknown group kind "Class"; allowed: school, class, committee',
        ),
        (
            "posts",
            "kind",
            "poll",
            'unknown post kind "poll"; allowed: message, photos, event, link, meeting, help',
        ),
        ("guardians", "delivery", "sms", 'unknown delivery "sms"; allowed: app, email, newsletter'),
        (
            "children",
            "photo_consent",
            "yes",
            'unknown photo consent "yes"; allowed: none, portal, email, public',
        ),
        (
            "schools",
            "digest_weekday",
            "vrijdag",
            'unknown day "vrijdag"; allowed: monday, tuesday, wednesday, thursday, friday, '
            "saturday, sunday",
        ),
    ],
)
def test_an_unknown_enum_value_names_the_field_and_the_allowed_values(
    sessions, small_school, where, field, value, message
):
    doc = copy.deepcopy(small_school)
    doc[where][0][field] = value

    assert refused(sessions, doc) == [f"{where}[0].{field}: {message}"]


def test_an_unknown_media_type_is_refused(sessions, small_school):
    doc = copy.deepcopy(small_school)
    doc["posts"][0]["media"] = [{"id": "f1", "type": "audio", "url": "https://p.example/a"}]

    assert refused(sessions, doc) == [
        'posts[0].media[0].type: unknown media type "audio"; allowed: image, video'
    ]


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "europe/amsterdam", "", "../etc/passwd"])
def test_a_bad_timezone_is_refused(sessions, zone):
    problems = refused(sessions, document(schools=[school(timezone=zone)]))

    assert problems == [f'schools[0].timezone: unknown time zone "{zone}"']


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("locale", "nl_BE", 'not a BCP 47 language tag: "nl_BE"'),
        ("digest_time", "4pm", 'must be a 24-hour time "HH:MM", not "4pm"'),
        ("digest_time", "24:00", 'must be a 24-hour time "HH:MM", not "24:00"'),
        ("send_empty", "yes", "must be true or false"),
    ],
)
def test_bad_school_settings_are_refused(sessions, field, value, message):
    assert refused(sessions, document(schools=[school(**{field: value})])) == [
        f"schools[0].{field}: {message}"
    ]


def test_a_holiday_ending_before_it_starts_is_refused(sessions):
    problems = refused(
        sessions,
        document(
            schools=[
                school(
                    holidays=[
                        {"start": "2027-01-04", "end": "2026-12-19", "name": "Kerst"},
                        {"start": "2027-02-15", "name": "Voorjaar"},
                    ]
                )
            ]
        ),
    )

    assert problems == [
        "schools[0].holidays[0].end: is before start",
        "schools[0].holidays[1].end: is required",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("published_at", "2026-11-24T10:15:00"),
        ("deleted_at", "2026-11-24"),
        ("event", {"starts_at": "2026-12-02T09:00:00"}),
        ("meeting", {"deadline": "2026-11-30T17:00"}),
        ("help", {"needed_at": "2026-12-05T10:00:00", "what": "Rijders"}),
    ],
)
def test_a_naive_datetime_needs_a_utc_offset(sessions, small_school, field, value):
    doc = copy.deepcopy(small_school)
    doc["posts"][0][field] = value

    path = {"event": ".starts_at", "meeting": ".deadline", "help": ".needed_at"}.get(field, "")
    assert refused(sessions, doc) == [f"posts[0].{field}{path}: needs a UTC offset"]


def test_a_guardians_preferences_time_needs_a_utc_offset(sessions, small_school):
    doc = copy.deepcopy(small_school)
    doc["guardians"][4]["preferences_updated_at"] = "2026-11-01T08:00:00"

    assert refused(sessions, doc) == ["guardians[4].preferences_updated_at: needs a UTC offset"]


def test_an_event_ending_before_it_starts_is_refused(sessions, small_school):
    doc = copy.deepcopy(small_school)
    doc["posts"][0]["event"] = {
        "starts_at": "2026-12-02T09:00:00+01:00",
        "ends_at": "2026-12-02T08:59:00+01:00",
    }

    assert refused(sessions, doc) == ["posts[0].event.ends_at: is before starts_at"]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("url", "javascript:alert(document.cookie)", "url"),
        ("links", [{"url": "JavaScript:alert(1)", "title": "Klik"}], "links[0].url"),
        ("media", [{"id": "f1", "url": "data:image/png;base64,AAAA"}], "media[0].url"),
        (
            "media",
            [
                {
                    "id": "f1",
                    "type": "video",
                    "url": "https://p.example/v.mp4",
                    "poster_url": "file:///etc/passwd",
                }
            ],
            "media[0].poster_url",
        ),
        ("meeting", {"signup_url": "ftp://portal.example/signup"}, "meeting.signup_url"),
        ("help", {"signup_url": "https://"}, "help.signup_url"),
    ],
)
def test_a_javascript_or_other_non_http_url_is_refused(sessions, small_school, field, value, path):
    doc = copy.deepcopy(small_school)
    doc["posts"][0][field] = value

    assert refused(sessions, doc) == [f"posts[0].{path}: must be an http or https URL"]


def test_a_school_portal_url_must_be_http(sessions):
    assert refused(sessions, document(schools=[school(portal_url="javascript:void(0)")])) == [
        "schools[0].portal_url: must be an http or https URL"
    ]


def test_the_version_must_be_1(sessions, small_school):
    doc = copy.deepcopy(small_school)
    doc["version"] = 2
    doc["posts"][0]["group_id"] = "g9"  # another version's other rules are not judged

    assert refused(sessions, doc) == ["version: unsupported version 2; this service reads 1"]
    assert refused(sessions, {"schools": []}) == ["version: is required"]


def test_the_document_and_its_arrays_must_have_the_right_shape(sessions):
    assert refused(sessions, [1, 2]) == ["the document must be a JSON object"]
    assert refused(sessions, {"version": 1, "posts": {"id": "m1"}, "groups": ["g5"]}) == [
        "posts: must be a list",
        "groups[0]: must be an object",
    ]


def test_missing_and_mistyped_fields_are_named(sessions):
    problems = refused(
        sessions,
        document(
            schools=[{"id": "s1"}],
            groups=[{"id": 5, "school_id": "s1", "name": "Groep 5", "kind": "class"}],
            guardians=[guardian("p1", "c1", portal_account="no")],
        ),
    )

    assert problems == [
        "schools[0].name: is required",
        "groups[0].id: must be a string",
        "guardians[0].child_ids: must be a list",
        "guardians[0].portal_account: must be true or false",
    ]


def test_a_nul_character_anywhere_is_refused(sessions, small_school):
    doc = copy.deepcopy(small_school)
    doc["posts"][0]["body_html"] = "<p>a\x00b</p>"

    assert refused(sessions, doc) == ["posts[0].body_html: must not contain NUL characters"]


# --- parsing and scale -------------------------------------------------------------------------


def test_bad_json_is_refused_with_its_line_and_column():
    with pytest.raises(ImportRefused) as caught:
        parse_document(b"{bad")

    [problem] = caught.value.problems
    assert problem.path == ""
    assert problem.message.startswith("not valid JSON: ")
    assert problem.message.endswith("at line 1 column 2")


def test_bad_json_on_a_later_line_names_that_line():
    with pytest.raises(ImportRefused, match=r"at line 3 column 15"):
        parse_document('{\n  "version": 1,\n  "schools": [,]\n}')
    with pytest.raises(ImportRefused, match="not UTF-8"):
        parse_document(b'{"version": 1, "x": "\xff"}')


def test_valid_json_parses_to_the_document():
    assert parse_document(b'{"version": 1, "schools": []}') == {"version": 1, "schools": []}


def test_a_large_document_is_imported_with_a_bounded_number_of_statements(sessions, engine):
    guardians = [guardian(f"p{i}", [f"c{i}"], group_ids=["mr"]) for i in range(1200)]
    doc = document(
        schools=[school()],
        groups=[group("g5"), group("mr", kind="committee")],
        children=[child(f"c{i}", ["g5"]) for i in range(1200)],
        guardians=guardians,
    )
    statements = count_statements(engine)

    load(sessions, doc)
    first = statements()
    load(sessions, doc)
    again = statements() - first

    # Set-based: a few statements per 500 ids, never one per object.
    assert first < 60, first
    assert again < 40, again
    assert row_counts(sessions)["guardian_children"] == 1200


def count_statements(engine: Engine) -> Any:
    seen = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        seen[0] += 1

    return lambda: seen[0]
