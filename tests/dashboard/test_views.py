"""Dashboard pages: login required, figures from the tallies, detail context."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.selectors import CHART_MINUTES, overview_summary
from tests.dashboard.conftest import message
from transactions.models import Transaction

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "name,args",
    [
        ("dashboard:overview", []),
        ("dashboard:overview-data", []),
        ("dashboard:transactions", []),
        ("dashboard:transaction-detail", ["t-1"]),
    ],
)
def test_pages_require_login(client, name, args):
    """Given no session, every dashboard page redirects to our login page."""
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_page_uses_project_template(client):
    """The login page is the project's own template and its stylesheet is served."""
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'id="id_username"' in response.content
    assert b"/static/dashboard/dashboard.css" in response.content
    assert b"cdn" not in response.content.lower()


def test_overview_shows_totals_from_tallies(client, staff_user, score):
    """Given scored transactions, the overview's totals equal the stored counts."""
    score(
        message(user_id="a", amount="10.00"),
        message(user_id="b", amount="15000.00"),
        message(user_id="c", amount="3000.00"),
    )
    client.force_login(staff_user)
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    totals = response.context["summary"]["totals"]
    assert totals["total"] == Transaction.objects.count() == 3
    for status in ("legit", "suspicious", "fraud"):
        assert (
            totals["by_status"][status]
            == Transaction.objects.filter(status=status).count()
        )
    assert b'id="donut"' in response.content
    assert b'id="per-minute"' in response.content


def test_overview_series_covers_the_last_hour(score):
    """The per-minute series has one entry per minute, this minute's holding the
    transactions just scored and the rest zero."""
    score(message(amount="5.00"), message(amount="15000.00", user_id="u-2"))
    summary = overview_summary(now=datetime.now(UTC))
    series = summary["per_minute"]
    assert len(series) == CHART_MINUTES
    assert sum(row["total"] for row in series) == 2
    assert (
        sum(row["flagged"] for row in series) == Transaction.objects.flagged().count()
    )
    later = overview_summary(now=datetime.now(UTC) + timedelta(hours=2))
    assert sum(row["total"] for row in later["per_minute"]) == 0


def test_overview_does_not_count_the_transactions_table(client, staff_user, score):
    """The overview reads tallies, never COUNT(*) over the transactions table."""
    score(message())
    client.force_login(staff_user)
    with CaptureQueriesContext(connection) as queries:
        client.get(reverse("dashboard:overview"))
    table = Transaction._meta.db_table
    assert not [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"]]


def test_overview_data_is_json(client, staff_user, score):
    """The catch-up endpoint returns the same figures as the page."""
    score(message())
    client.force_login(staff_user)
    body = client.get(reverse("dashboard:overview-data")).json()
    assert body["totals"]["total"] == 1
    assert len(body["per_minute"]) == CHART_MINUTES


def test_transactions_page_offers_filters_and_validation(client, staff_user):
    """The table page has every filter, sortable headers and the validation panel."""
    client.force_login(staff_user)
    content = client.get(reverse("dashboard:transactions")).content.decode()
    for field in ("status", "user_id", "rule", "min_amount", "max_amount", "since"):
        assert f'name="{field}"' in content
    assert 'data-sort="amount"' in content
    assert 'id="v-sync"' in content and "Sync table results" in content
    assert '<option value="geo_velocity">Impossible travel</option>' in content


def test_travel_is_measured_from_where_the_profile_knows_the_card_to_be(
    client, staff_user, score
):
    """After a fraudster's charge in Lagos (judged fraud, not learned), the
    cardholder's purchase back in New York is measured from New York, as the
    geo_velocity rule measured it: no impossible travel shown on a legit verdict."""
    start = datetime.now(UTC) - timedelta(hours=10)
    score(
        *[
            message(
                user_id="commuter",
                amount="20.00",
                location="New York",
                timestamp=(start + timedelta(hours=i)).isoformat(),
            )
            for i in range(6)
        ]
    )
    (lagos,) = score(
        message(
            user_id="commuter",
            amount="3000.00",
            location="Lagos",
            timestamp=(start + timedelta(hours=7)).isoformat(),
        )
    )
    assert lagos.status == "fraud" and not lagos.profile_learned
    (home,) = score(
        message(
            user_id="commuter",
            amount="20.00",
            location="New York",
            timestamp=(start + timedelta(hours=8)).isoformat(),
        )
    )
    assert home.status == "legit"
    client.force_login(staff_user)
    response = client.get(
        reverse("dashboard:transaction-detail", args=[home.transaction_id])
    )
    travel = response.context["travel"]
    assert travel.previous_location == "New York"
    assert travel.distance_km == 0.0
    assert travel.hours == 3.0


def test_detail_shows_verdict_reasons_travel_and_history(client, staff_user, score):
    """The detail page shows reasons with values, travel and the user's history."""
    start = datetime.now(UTC) - timedelta(hours=1)
    score(
        message(
            user_id="traveller",
            amount="20.00",
            location="London",
            timestamp=start.isoformat(),
        ),
    )
    (txn,) = score(
        message(
            user_id="traveller",
            amount="20.00",
            location="Tokyo",
            timestamp=(start + timedelta(minutes=30)).isoformat(),
        ),
    )
    client.force_login(staff_user)
    response = client.get(
        reverse("dashboard:transaction-detail", args=[txn.transaction_id])
    )
    assert response.status_code == 200
    content = response.content.decode()
    assert "Impossible travel" in content and "speed_kmh" in content
    travel = response.context["travel"]
    assert travel.previous_location == "London"
    assert 9000 < travel.distance_km < 10000
    assert travel.speed_kmh > 900
    # Read as a person would: grouped kilometres, minutes.
    assert re.search(r"<dd>9,5\d\d km</dd>", content)
    assert "<dd>30 min</dd>" in content
    assert len(response.context["recent"]) == 2
    # The recent list names the rules, as the reasons do, not their codes.
    assert '<span class="reason rule-name">Impossible travel</span>' in content
    assert response.context["profile"]["transaction_count"] == 2
    assert "Confirm fraud" in content and "Mark legitimate" in content


def test_detail_shows_amounts_with_their_currency_decimals(client, staff_user, score):
    """The detail page and its history show 100 JPY and 20.00 USD, not the
    ledger column's 3 decimals (100.000, 20.000)."""
    score(message(user_id="shopper", amount="20.00"))
    (txn,) = score(message(user_id="shopper", amount="100.00", currency="JPY"))
    client.force_login(staff_user)
    response = client.get(
        reverse("dashboard:transaction-detail", args=[txn.transaction_id])
    )
    content = response.content.decode()
    assert "<dt>Amount</dt><dd>100 JPY</dd>" in content
    assert '<td class="num">100 JPY</td>' in content
    assert '<td class="num">20.00 USD</td>' in content
    assert "100.000" not in content and "20.000" not in content


@pytest.mark.parametrize(
    ("base", "shown"), [("USD", "<dd>30.75 USD</dd>"), ("JPY", "<dd>31 JPY</dd>")]
)
def test_the_profiles_typical_amount_has_the_base_currencys_decimals(
    client, staff_user, score, settings, base, shown
):
    """The card's typical amount is in the base currency: no decimals when it
    is the yen; and the what-if panel is told the base's decimals."""
    settings.BASE_CURRENCY = base
    score(message(user_id="base", amount="30.75"))
    (txn,) = score(message(user_id="base", amount="30.75"))
    client.force_login(staff_user)
    detail = client.get(
        reverse("dashboard:transaction-detail", args=[txn.transaction_id])
    )
    assert f"<dt>Typical amount</dt>{shown}" in detail.content.decode()
    page = client.get(reverse("dashboard:transactions")).content.decode()
    decimals = {"USD": 2, "JPY": 0}[base]
    assert f'data-base-decimals="{decimals}"' in page


@pytest.mark.parametrize(
    ("fields", "latitude", "country", "source"),
    [
        ({"location": "London"}, 51.51, "GB", "no country given: the most populous"),
        ({"location": "London", "country": "CA"}, 42.98, "CA", "in that country"),
        ({"location": "London, CA"}, 42.98, "CA", "in that country"),
        ({"location": "London, Mars"}, None, "", "no city of that name"),
        ({"location": "Qwertyville"}, None, "", "no city of that name: travel not"),
        (
            {"location": "Cafe", "latitude": 48.86, "longitude": 2.35},
            48.86,
            "",
            "coordinates given in the message",
        ),
    ],
)
def test_detail_says_where_the_payment_was_placed_and_from_what(
    client, staff_user, score, fields, latitude, country, source
):
    """An analyst sees the coordinates the travel checks used and how they were
    found: "London" without a country is London, GB (the most populous namesake),
    and the page says so; with CA it is London, Ontario; an unknown name says
    travel was not checked."""
    (txn,) = score(message(user_id="placed", amount="20.00", **fields))
    client.force_login(staff_user)
    response = client.get(
        reverse("dashboard:transaction-detail", args=[txn.transaction_id])
    )
    place = response.context["place"]
    if latitude is None:
        assert not place.known
    else:
        assert round(place.latitude, 2) == latitude
    assert place.country == country
    assert source in place.source
    assert source in response.content.decode()


def test_detail_of_unknown_transaction_is_404(client, staff_user):
    """An unknown id answers 404."""
    client.force_login(staff_user)
    response = client.get(reverse("dashboard:transaction-detail", args=["missing"]))
    assert response.status_code == 404


def test_static_files_are_served_by_the_project(client):
    """The scripts the pages load are served by the project (works offline)."""
    for name in (
        "common.js",
        "live.js",
        "overview.js",
        "transactions.js",
        "detail.js",
        "dashboard.css",
    ):
        response = client.get(f"/static/dashboard/{name}")
        assert response.status_code == 200, name
    # So is an icon, where browsers look for one (the admin has no icon link).
    icon = client.get("/favicon.ico", follow=True)
    assert icon.status_code == 200
    assert icon.redirect_chain[-1][0].endswith("favicon.svg")


def test_rule_performance_counts_firings_and_what_labels_said(
    client, staff_user, score
):
    """The overview's rule table: how often each rule fired in the window and in
    flagged verdicts (from the per-minute tallies), the labels on those
    verdicts, the precision they make, and confirmed fraud that nothing caught."""
    from detection.models import ListEntry
    from detection.services import transaction_label
    from transactions.models import ReasonTally

    big = score(
        *(message(user_id=f"big-{i}", amount="25000.00") for i in range(3)),
        message(user_id="small", amount="12.00"),
    )
    stored = {t.user_id: t for t in big}
    assert (
        sum(
            ReasonTally.objects.filter(code="huge_amount").values_list(
                "fired", flat=True
            )
        )
        == 3
    )
    transaction_label(record=stored["big-0"], is_fraud=True)
    transaction_label(record=stored["big-1"], is_fraud=False)
    transaction_label(record=stored["small"], is_fraud=True)  # missed by the rules
    # A rule that fired on a verdict that stayed legit did not flag it: its
    # label counts as missed fraud, not for the rule's precision.
    (quiet,) = score(message(user_id="quiet", amount="3000.00"))
    assert quiet.status == "legit" and "large_amount" in quiet.reason_codes
    transaction_label(record=quiet, is_fraud=True)
    # The allow list decides legit verdicts: their labels are its record.
    ListEntry.objects.create(kind="card", value="vip", action="allow", note="buyer")
    (allowed,) = score(message(user_id="vip", amount="12.00"))
    assert allowed.status == "legit" and "allowlist" in allowed.reason_codes
    transaction_label(record=allowed, is_fraud=True)

    client.force_login(staff_user)
    page = client.get(reverse("dashboard:overview"))
    assert page.status_code == 200
    performance = page.context["performance"]
    huge = next(r for r in performance["rules"] if r["code"] == "huge_amount")
    assert (huge["fired"], huge["flagged"]) == (3, 3)
    assert (huge["confirmed_fraud"], huge["marked_legit"]) == (1, 1)
    # Confirmed fraud among all 3 it flagged, not among the 2 labelled: with
    # chargebacks (fraud only) that would read near 100%.
    assert huge["precision"] == pytest.approx(1 / 3)
    large = next(r for r in performance["rules"] if r["code"] == "large_amount")
    # It was a reason of the two flagged labelled ones too; not of "quiet"'s.
    assert (large["confirmed_fraud"], large["marked_legit"]) == (1, 1)
    allow = next(r for r in performance["rules"] if r["code"] == "allowlist")
    assert (allow["confirmed_fraud"], allow["precision"]) == (1, 1.0)
    assert performance["missed"] == 3
    content = page.content.decode()
    assert "Rule performance, last 24h" in content and "33%" in content
    # Its links open the transactions of the same window (by scoring time).
    since = performance["since"].strftime("%Y-%m-%dT%H:%M:%S")
    assert f"?rule=huge_amount&amp;time=scored&amp;since={since}" in content
    assert f"label=fraud&amp;time=scored&amp;since={since}" in content

    week = client.get(reverse("dashboard:overview"), {"rules": "7d"})
    assert week.context["performance"]["window"] == "7d"
    odd = client.get(reverse("dashboard:overview"), {"rules": "forever"})
    assert odd.context["performance"]["window"] == "24h"

    # The panel alone, as overview.js reloads it: the same table, its window kept.
    panel = client.get(reverse("dashboard:overview-rules"), {"rules": "7d"})
    assert panel.status_code == 200
    assert panel.context["performance"]["window"] == "7d"
    text = panel.content.decode()
    assert "Rule performance, last 7d" in text and "33%" in text
    assert "<html" not in text and 'id="missed-fraud">3<' in text
    client.logout()
    assert client.get(reverse("dashboard:overview-rules")).status_code == 302


def test_the_header_search_opens_a_transaction_by_id(client, staff_user, score):
    """Typing a stored id in the header's box opens its page; an unknown one
    shows the list with a message naming it (404)."""
    (txn,) = score(message(user_id="findme", amount="12.00"))
    client.force_login(staff_user)
    found = client.get("/transactions/find", {"id": f" {txn.transaction_id} "})
    assert found.status_code == 302
    assert found["Location"] == f"/transactions/{txn.transaction_id}/"
    missing = client.get("/transactions/find", {"id": "t-nowhere"})
    assert missing.status_code == 404
    assert "No transaction has the id “t-nowhere”" in missing.content.decode()
    # The last characters the pages show (any case) open it too, when only
    # one id ends with them.
    tail = client.get(
        "/transactions/find", {"id": "…" + txn.transaction_id[-8:].upper()}
    )
    assert tail.status_code == 302
    assert tail["Location"] == f"/transactions/{txn.transaction_id}/"
    # A card's id opens that card's payments.
    card = client.get("/transactions/find", {"id": "findme"})
    assert card.status_code == 302
    assert card["Location"] == "/transactions/?user_id=findme"
    # A NUL (PostgreSQL refuses one in a query) is found nowhere, not a 500.
    assert client.get("/transactions/find", {"id": "t-\x00"}).status_code == 404
    page = client.get("/").content.decode()
    assert 'action="/transactions/find"' in page


def test_the_overview_points_at_unresolved_dead_letters(client, staff_user):
    """With records the stream could not score, the overview says how many and
    links staff to them in admin (unresolved only); with none, it says nothing."""
    from detection.models import DeadLetter

    client.force_login(staff_user)
    assert 'id="dead-letters"' not in client.get("/").content.decode()
    for offset in range(2):
        DeadLetter.objects.create(
            raw_value=b"junk", error="Not JSON", topic="t", partition=0, offset=offset
        )
    page = client.get("/").content.decode()
    assert "2 records the consumers could not process are waiting" in page
    link = "/admin/detection/deadletter/?resolved=no"
    assert link in page
    assert client.get(link).status_code == 200


def test_the_dashboard_benchmark_reads_its_pages(capsys):
    """bench_dashboard's user reads the pages it times (a 403 would stop it)."""
    from django.core.management import call_command

    call_command("bench_dashboard", "--repeat", "1")
    assert "Stored transactions" in capsys.readouterr().out
