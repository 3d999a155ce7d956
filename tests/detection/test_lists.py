"""Block and allow lists: cards, merchants and countries, applied by the one
scoring core (stream, predict, what-if), managed in the API and admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from detection.lists import lists_current
from detection.models import ListEntry
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from transactions.messages import TransactionMessage
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _message(tid, user="card-1", amount="20.00", merchant="", country=""):
    return TransactionMessage(
        transaction_id=tid,
        user_id=user,
        amount=Decimal(amount),
        timestamp=T0,
        merchant_id=merchant,
        country=country,
    )


def _score(*messages):
    transaction_batch_score_record(
        messages=list(messages),
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    ids = [m.transaction_id for m in messages]
    return {
        t.transaction_id: t for t in Transaction.objects.filter(transaction_id__in=ids)
    }


def test_a_blocked_merchant_makes_the_verdict_fraud_with_the_entry_as_reason():
    ListEntry.objects.create(
        kind="merchant", value="m-skim", action="block", note="skimmer, case 4411"
    )
    stored = _score(
        _message("at-skimmer", merchant="m-skim"),
        _message("elsewhere", user="card-2", merchant="m-ok"),
    )
    blocked = stored["at-skimmer"]
    assert (blocked.status, blocked.risk_score) == ("fraud", 1.0)
    (reason,) = [r for r in blocked.reasons if r["code"] == "blocklist"]
    assert (
        reason["detail"] == "merchant m-skim is on the block list: skimmer, case 4411"
    )
    assert " blocklist " in blocked.reason_codes
    assert not blocked.profile_learned  # a fraud verdict does not teach the card
    assert stored["elsewhere"].status == "legit"


def test_an_allowed_card_is_legit_whatever_the_rules_say_with_a_note():
    ListEntry.objects.create(
        kind="card", value="vip", action="allow", note="known wholesale buyer"
    )
    stored = _score(_message("big", user="vip", amount="25000.00"))
    allowed = stored["big"]
    assert allowed.status == "legit"
    assert allowed.risk_score >= 0.5  # the rules' risk is kept, and explained
    codes = {r["code"] for r in allowed.reasons}
    assert {"large_amount", "huge_amount", "allowlist"} <= codes
    assert any("on the allow list (known wholesale buyer)" in n for n in allowed.notes)
    assert " allowlist " in allowed.reason_codes  # filterable: rule=allowlist


def test_an_allowed_payment_the_rules_flag_does_not_teach_the_card():
    """A card that pays about 25 is allowed for a while, and pays 4,000 twice:
    both legit by the list, but the card's profile does not learn 4,000, so once
    the entry is gone a 4,000 spike is flagged as on a card never allowed."""
    from detection.models import UserProfile

    history = [
        _message(f"h-{card}-{i}", user=card, amount="25.00")
        for card in ("allowed", "control")
        for i in range(6)
    ]
    for n, message in enumerate(history):
        message.timestamp = T0 + timedelta(hours=n)
    _score(*history)
    entry = ListEntry.objects.create(
        kind="card", value="allowed", action="allow", note="trip"
    )
    big = [_message(f"big-{i}", user="allowed", amount="4000.00") for i in (1, 2)]
    for i, message in enumerate(big):
        message.timestamp = T0 + timedelta(days=1, hours=i)
    stored = _score(*big)
    assert {t.status for t in stored.values()} == {"legit"}
    assert not any(t.profile_learned for t in stored.values())
    # Counted (velocity) but not learned: the profile knows the six 25s only.
    profile = UserProfile.objects.get(user_id="allowed")
    assert (profile.txn_count, profile.learned_count) == (8, 6)
    entry.delete()
    probes = []
    for card in ("allowed", "control"):
        probe = _message(f"probe-{card}", user=card, amount="4000.00")
        probe.timestamp = T0 + timedelta(days=2)
        probes.append(probe)
    after = _score(*probes)
    assert after["probe-allowed"].status == after["probe-control"].status != "legit"
    assert "amount_spike" in after["probe-allowed"].reason_codes


def test_block_wins_over_allow_and_countries_match_in_any_case():
    ListEntry.objects.create(kind="card", value="card-9", action="allow", note="vip")
    ListEntry.objects.create(kind="country", value="KP", action="block", note="OFAC")
    stored = _score(_message("sanctioned", user="card-9", country="kp"))
    assert stored["sanctioned"].status == "fraud"
    assert "country KP is on the block list: OFAC" in str(stored["sanctioned"].reasons)


def test_a_country_block_meets_a_payment_known_only_by_its_city():
    """No country field, a location: the scorer's resolved country is matched."""
    ListEntry.objects.create(kind="country", value="NG", action="block", note="test")
    message = TransactionMessage(
        transaction_id="lagos",
        user_id="card-5",
        amount=Decimal("20.00"),
        timestamp=T0,
        location="Lagos",
    )
    assert _score(message)["lagos"].status == "fraud"


def test_a_country_block_does_not_depend_on_how_the_place_was_given(api_client):
    """A block on NG meets a Lagos payment given by its city name and one given
    by Lagos's coordinates alone (the reason says how the country was found);
    an explicit country wins over the coordinates, and a point at sea, with no
    city within geo.NEAREST_CITY_MAX_KM, is in no country."""
    created = api_client.post(
        "/api/lists",
        {"kind": "country", "action": "block", "value": "ng", "note": "x"},
        format="json",
    )
    assert created.status_code == 201, created.content

    def predict(user, **place):
        payment = {"user_id": user, "amount": 10, **place}
        response = api_client.post("/api/predict", payment, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    by_name = predict("u11", location="Lagos")
    by_coordinates = predict("u12", latitude=6.45, longitude=3.39)
    for verdict in (by_name, by_coordinates):
        assert verdict["status"] == "fraud"
        assert [r["code"] for r in verdict["reasons"]] == ["blocklist"]
    assert by_name["reasons"][0]["detail"] == "country NG is on the block list: x"
    assert by_coordinates["reasons"][0]["detail"] == (
        "country NG (from the coordinates: nearest city Lagos, 1 km) is on the "
        "block list: x"
    )
    assert by_coordinates["country"] == ""  # the message is stored as sent

    said_benin = predict("u13", latitude=6.45, longitude=3.39, country="BJ")
    at_sea = predict("u14", latitude=3.0, longitude=2.0)  # Gulf of Guinea
    for verdict in (said_benin, at_sea):
        assert verdict["status"] == "legit" and verdict["reasons"] == []


def test_a_batch_places_each_payment_by_its_own_coordinates():
    """In one batch (as the stream scores), each payment with coordinates and
    no country meets the country block of its own nearest city."""
    ListEntry.objects.create(kind="country", value="NG", action="block", note="x")

    def located(tid, latitude, longitude, country=""):
        return TransactionMessage(
            transaction_id=tid,
            user_id=f"card-{tid}",
            amount=Decimal("20.00"),
            timestamp=T0,
            latitude=latitude,
            longitude=longitude,
            country=country,
        )

    stored = _score(
        located("paris", 48.85, 2.35),
        located("abuja", 9.06, 7.49),
        located("said-fr", 6.45, 3.39, country="FR"),
        located("kano", 12.0, 8.52),
        located("accra", 5.56, -0.2),
    )
    assert {tid: t.status for tid, t in stored.items()} == {
        "paris": "legit",
        "abuja": "fraud",
        "said-fr": "legit",
        "kano": "fraud",
        "accra": "legit",
    }
    assert "nearest city Kano" in stored["kano"].reasons[-1]["detail"]


def test_coordinates_cost_a_lookup_only_while_a_country_is_listed(monkeypatch):
    """Places are looked up once a batch, and only those with coordinates and
    no country while a country entry is in force: a card entry alone, or a
    payment that carries its country, costs no lookup (the stream's hot path)."""
    from types import SimpleNamespace

    from detection import lists as lists_module
    from detection.geo import NearestCity

    asked = []

    def lookup(points):
        asked.append(list(points))
        return [NearestCity("Lagos", "NG", 1.0) for _point in points]

    monkeypatch.setattr(lists_module, "nearest_cities", lookup)
    places = [
        SimpleNamespace(country="", latitude=6.45, longitude=3.39),
        SimpleNamespace(country="BJ", latitude=6.45, longitude=3.39),
        SimpleNamespace(country="", latitude=None, longitude=None),
        SimpleNamespace(country="", latitude=6.46, longitude=3.38),
    ]
    cards = lists_module.Lists({("card", "card-6"): ("block", "stolen", None)})
    assert cards.nearest_cities(places) == [None] * 4
    assert asked == []
    countries = lists_module.Lists({("country", "NG"): ("block", "x", None)})
    lagos = NearestCity("Lagos", "NG", 1.0)
    assert countries.nearest_cities(places) == [lagos, None, None, lagos]
    assert asked == [[(6.45, 3.39), (6.46, 3.38)]]


@pytest.mark.parametrize(
    ("latitude", "longitude", "country"),
    [
        (6.45, 3.39, "NG"),  # Lagos
        (48.85, 2.35, "FR"),  # Paris
        (-33.87, 151.21, "AU"),  # Sydney
        (64.15, -21.94, "IS"),  # Reykjavik
        (-36.85, 174.76, "NZ"),  # Auckland, near the antimeridian
        (40.0, -40.0, None),  # the middle of the Atlantic
    ],
)
def test_coordinates_are_placed_in_the_country_of_the_nearest_city(
    latitude, longitude, country
):
    from detection.geo import nearest_city

    near = nearest_city(latitude, longitude)
    assert (near and near.country) == country


def test_the_nearest_city_is_taken_within_the_distance_given_and_not_beyond():
    """A point at sea 0.5 degrees of latitude south of Lagos: its nearest
    city, about 55 km away (great-circle), is found within 60 km, not 50."""
    from detection.geo import city_coordinates, haversine_km, nearest_city

    near = nearest_city(5.95, 3.39, max_km=200)
    assert near.country == "NG" and 50 < near.distance_km < 60
    city_latitude, city_longitude, _ = city_coordinates(near.name, near.country)
    assert near.distance_km == pytest.approx(
        haversine_km(5.95, 3.39, city_latitude, city_longitude)
    )
    assert nearest_city(5.95, 3.39, max_km=60) == near
    assert nearest_city(5.95, 3.39, max_km=50) is None


def test_several_blocks_are_reasons_of_one_code_counted_once():
    from transactions.models import ReasonTally

    for kind, value in (("card", "card-3"), ("merchant", "m-3"), ("country", "FR")):
        ListEntry.objects.create(kind=kind, value=value, action="block", note=kind)
    stored = _score(
        _message("all-blocked", user="card-3", merchant="m-3", country="FR")
    )
    blocked = stored["all-blocked"]
    assert [r["code"] for r in blocked.reasons].count("blocklist") == 3
    assert blocked.reason_codes.split() == ["blocklist"]
    assert ReasonTally.objects.get(code="blocklist").fired == 1


def test_an_expired_entry_no_longer_applies():
    ListEntry.objects.create(
        kind="card",
        value="card-1",
        action="block",
        note="reported stolen",
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert _score(_message("after-expiry"))["after-expiry"].status == "legit"


def test_the_lists_are_reloaded_only_when_they_change(django_assert_num_queries):
    ListEntry.objects.create(kind="card", value="a", action="block", note="x")
    first = lists_current()
    with django_assert_num_queries(1):  # the version only
        assert lists_current() is first
    ListEntry.objects.create(kind="card", value="b", action="block", note="y")
    assert ("card", "b") in lists_current().entries
    ListEntry.objects.filter(value="a").delete()
    assert ("card", "a") not in lists_current().entries


def test_an_edit_stamped_earlier_than_the_newest_is_still_seen():
    """An edit that commits after a later-stamped one (slow transaction, another
    host's clock) changes no maximum of timestamps; the version counter moves."""
    from datetime import timedelta

    early = ListEntry.objects.create(kind="card", value="a", action="allow", note="x")
    ListEntry.objects.create(kind="card", value="b", action="block", note="y")
    assert lists_current().entries["card", "a"][0] == "allow"
    stamped = early.updated_at - timedelta(hours=1)
    early.action = "block"
    early.save()
    ListEntry.objects.filter(pk=early.pk).update(updated_at=stamped)
    assert lists_current().entries["card", "a"][0] == "block"


def test_what_if_shows_a_block_before_it_happens(api_client):
    ListEntry.objects.create(kind="card", value="c-7", action="block", note="stolen")
    body = api_client.post(
        "/api/validate-transaction",
        {"user_id": "c-7", "amount": "10.00"},
        format="json",
    ).json()
    assert body["status"] == "fraud"
    assert body["reasons"][-1]["code"] == "blocklist"


def test_the_api_manages_entries_with_permissions_and_clear_errors(
    api_client, django_user_model
):
    created = api_client.post(
        "/api/lists",
        {"kind": "country", "value": " fr ", "action": "block", "note": "test"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["value"] == "FR"
    assert created.json()["created_by"] == "analyst"

    # A card no message could carry (the parser refuses such a user_id) is
    # refused, not stored to match nothing.
    for value in ("a/b", "..", "card\u202e1"):
        never = api_client.post(
            "/api/lists",
            {"kind": "card", "value": value, "action": "block", "note": "x"},
            format="json",
        )
        assert never.status_code == 400
        assert never.json()["value"][0].startswith("A card is a user_id")
    again = api_client.post(
        "/api/lists",
        {"kind": "country", "value": "FR", "action": "allow", "note": "oops"},
        format="json",
    )
    assert again.status_code == 400
    assert "already on the block list" in again.json()["value"][0]
    bad = api_client.post(
        "/api/lists",
        {
            "kind": "country",
            "value": "France",
            "action": "ban",
            "note": "",
            "expires_at": "2001-01-01T00:00:00Z",
        },
        format="json",
    )
    assert bad.status_code == 400
    assert {"action", "note"} <= set(bad.json())
    past = api_client.post(
        "/api/lists",
        {
            "kind": "card",
            "value": "x",
            "action": "block",
            "note": "n",
            "expires_at": "2001-01-01T00:00:00Z",
        },
        format="json",
    )
    assert "in the future" in past.json()["expires_at"][0]
    assert [e["value"] for e in api_client.get("/api/lists").json()] == ["FR"]
    # Asked as it would be written: " fr " is FR, the entry stored.
    for asked in ("fr", " fr ", "FR"):
        found = api_client.get("/api/lists", {"kind": "country", "value": asked})
        assert [e["value"] for e in found.json()] == ["FR"], asked
    assert api_client.get("/api/lists", {"value": "fr"}).json()[0]["value"] == "FR"
    assert api_client.get("/api/lists", {"value": "DE"}).json() == []

    viewer = django_user_model.objects.create_user(username="viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_transaction"))
    client = APIClient()
    client.force_authenticate(viewer)
    assert client.get("/api/lists").status_code == 200
    entry = {"kind": "card", "value": "v", "action": "block", "note": "n"}
    assert client.post("/api/lists", entry, format="json").status_code == 403
    viewer.user_permissions.add(Permission.objects.get(codename="add_listentry"))
    client.force_authenticate(type(viewer).objects.get(pk=viewer.pk))
    assert client.post("/api/lists", entry, format="json").status_code == 201
    entry_id = created.json()["id"]
    assert client.delete(f"/api/lists/{entry_id}").status_code == 403
    changed = api_client.patch(
        f"/api/lists/{entry_id}", {"action": "allow"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert api_client.delete(f"/api/lists/{entry_id}").status_code == 204

    # Every change is in the admin's change log, with its author.
    from django.contrib.admin.models import LogEntry

    logged = [
        (e.user.username, e.get_change_message())
        for e in LogEntry.objects.filter(object_id=str(entry_id)).order_by("id")
    ]
    assert logged == [
        ("analyst", "Added through the API."),
        ("analyst", "Changed through the API: action: 'block' \u2192 'allow'"),
        ("analyst", "Deleted through the API."),
    ]


def test_admin_adds_an_entry_with_its_author_and_filters_by_rule(admin_client):
    page = admin_client.post(
        "/admin/detection/listentry/add/",
        {"kind": "merchant", "value": "m-1", "action": "block", "note": "case 9"},
    )
    assert page.status_code == 302, page.content[:2000]
    entry = ListEntry.objects.get()
    assert entry.created_by.username == "admin"
    _score(_message("m1-buy", merchant="m-1"))
    listed = admin_client.get("/api/transactions", {"rule": "blocklist"}).json()
    assert [item["transaction_id"] for item in listed["items"]] == ["m1-buy"]
    # The changelist reads each entry's author with the entries, not one by one.
    for number in range(20):
        ListEntry.objects.create(
            kind="card",
            value=f"card-{number}",
            action="block",
            note="n",
            created_by=entry.created_by,
        )
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get("/admin/detection/listentry/").status_code == 200
    assert not [q for q in queries if 'FROM "auth_user" WHERE' in q["sql"]][1:]


def test_an_expired_entry_is_replaced_by_a_new_decision(api_client, admin_client):
    """Once an entry has expired, the same card can be listed again (the API
    replaces the expired entry, and logs it); admin refuses a past expiry."""
    ListEntry.objects.create(
        kind="card",
        value="card-8",
        action="block",
        note="old case",
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    again = api_client.post(
        "/api/lists",
        {"kind": "card", "value": "card-8", "action": "allow", "note": "new case"},
        format="json",
    )
    assert again.status_code == 201, again.content
    assert list(ListEntry.objects.values_list("action", "note")) == [
        ("allow", "new case")
    ]
    page = admin_client.post(
        "/admin/detection/listentry/add/",
        {
            "kind": "card",
            "value": "card-9",
            "action": "block",
            "note": "n",
            "expires_at_0": "2020-01-01",
            "expires_at_1": "00:00:00",
        },
    )
    assert page.status_code == 200
    assert "Must be in the future" in page.content.decode()
    assert not ListEntry.objects.filter(value="card-9").exists()
