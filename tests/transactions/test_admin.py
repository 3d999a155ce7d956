"""Admin pages render for staff, with the reasons of a verdict readable."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from detection.models import Rule
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from tests.db import sqlite_plan
from transactions.messages import TransactionMessage

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def client_staff(client, staff_user):
    """Return a Django test client logged in as staff."""
    client.force_login(staff_user)
    return client


@pytest.fixture
def impossible_trip():
    """Store London then Sydney one hour later for one user."""
    messages = [
        TransactionMessage(
            transaction_id=tid,
            user_id="traveller",
            amount=Decimal("80.00"),
            timestamp=T0 + timedelta(hours=hours),
            location=city,
        )
        for tid, hours, city in (("t-lon", 0, "London"), ("t-syd", 1, "Sydney"))
    ]
    transaction_batch_score_record(
        messages=messages,
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )


def test_transaction_changelist_filters_by_rule(client_staff, impossible_trip):
    """The list shows reasons and filters by the rule that fired."""
    page = client_staff.get(
        "/admin/transactions/transaction/", {"rule": "geo_velocity"}
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "t-syd" in html and "t-lon" not in html
    assert "geo_velocity" in html
    # A code no rule has (a hand-edited address; a NUL would be a 500 on
    # PostgreSQL) is admin's "incorrect lookup", not a query.
    odd = client_staff.get("/admin/transactions/transaction/", {"rule": "x\x00"})
    assert odd.status_code == 302 and odd["Location"].endswith("?e=1")


def test_transaction_detail_shows_reasons_with_values(client_staff, impossible_trip):
    """The change page shows each reason's label and the values that fired it."""
    from transactions.models import Transaction

    pk = Transaction.objects.get(transaction_id="t-syd").pk
    page = client_staff.get(f"/admin/transactions/transaction/{pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Impossible travel" in html
    assert "km/h &gt; 900 km/h" in html
    assert 'name="risk_score"' not in html  # verdict fields are read-only


def test_amounts_show_their_currency_decimals_in_list_and_detail(client_staff):
    """Admin shows 12.50 USD, 100 JPY and 12.345 KWD, not the column's 3
    decimals (12.500, 100.000), in the list and on the change page."""
    from tests.ledger import transaction_stored

    stored = {
        shown: transaction_stored(f"t-{currency}", amount=shown, currency=currency)
        for shown, currency in (("12.50", "USD"), ("100", "JPY"), ("12.345", "KWD"))
    }
    html = client_staff.get("/admin/transactions/transaction/").content.decode()
    cells = re.findall(r'<td class="field-amount_shown">([^<]*)</td>', html)
    assert sorted(cells) == sorted(stored)
    for shown, txn in stored.items():
        page = client_staff.get(f"/admin/transactions/transaction/{txn.pk}/change/")
        html = page.content.decode()
        assert f'<div class="readonly">{shown}</div>' in html
        assert "12.500" not in html and "100.000" not in html


def test_search_by_user(client_staff, impossible_trip):
    """Search finds transactions by user id."""
    page = client_staff.get("/admin/transactions/transaction/", {"q": "traveller"})
    assert "t-syd" in page.content.decode()


@pytest.mark.parametrize(
    ("url", "table"),
    [
        ("/admin/transactions/transaction/", "transactions_transaction"),
        ("/admin/detection/userprofile/", "detection_userprofile"),
        ("/admin/detection/alertdelivery/", "detection_alertdelivery"),
    ],
)
def test_id_searches_are_exact_and_read_by_index(
    client_staff, impossible_trip, url, table
):
    """Searching an id compares it as written (no LIKE, no UPPER(): admin's
    "=field" is iexact), so the lookup is an index search, not a scan of a
    table of millions (checked in SQLite's query plan)."""
    with CaptureQueriesContext(connection) as queries:
        page = client_staff.get(url, {"q": "t-syd-search"})
    assert page.status_code == 200
    searched = [q["sql"] for q in queries if "t-syd-search" in q["sql"]]
    assert searched
    for sql in searched:
        assert "LIKE" not in sql and "UPPER(" not in sql
        if connection.vendor == "sqlite":
            plan = sqlite_plan(sql)
            assert not any(step.startswith(f"SCAN {table}") for step in plan), plan


def test_search_by_transaction_id_is_exact(client_staff, impossible_trip):
    """An id finds its transaction, and a part of one finds nothing."""
    found = client_staff.get("/admin/transactions/transaction/", {"q": "t-syd"})
    assert "t-syd" in found.content.decode()
    assert "t-lon" not in found.content.decode()
    part = client_staff.get("/admin/transactions/transaction/", {"q": "t-sy"})
    assert "t-syd" not in part.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/admin/detection/rule/",
        "/admin/detection/decisionthresholds/",
        "/admin/detection/modelversion/",
        "/admin/detection/userprofile/",
        "/admin/detection/deadletter/",
        "/admin/detection/exchangerate/",
        "/admin/transactions/verdicttally/",
        "/admin/detection/alertwebhook/",
        "/admin/detection/alertdelivery/",
        "/admin/admin/logentry/",
    ],
)
def test_detection_pages_render(client_staff, impossible_trip, url):
    """Every admin list renders for staff."""
    assert client_staff.get(url).status_code == 200


def test_bad_rule_params_are_refused_in_admin(client_staff):
    """Saving a rule with a bad parameter shows the error and changes nothing."""
    rule = Rule.objects.get(code="geo_velocity")
    page = client_staff.post(
        f"/admin/detection/rule/{rule.pk}/change/",
        {
            "name": rule.name,
            "description": rule.description,
            "enabled": "on",
            "weight": "0.75",
            "params": '{"max_speed_kmh": -3}',
        },
    )
    assert page.status_code == 200
    assert "max_speed_kmh: Must be between 10 and 50000" in page.content.decode()
    rule.refresh_from_db()
    assert rule.params["max_speed_kmh"] == 900.0


def test_the_rule_form_explains_each_parameter(client_staff):
    """A rule's change page says under Params what each key means, its range
    and default; the model's weight says it adds risk continuously."""
    rule = Rule.objects.get(code="geo_velocity")
    page = client_staff.get(f"/admin/detection/rule/{rule.pk}/change/").content
    text = page.decode()
    assert "<code>max_speed_kmh</code>:" in text and "default 900" in text
    model = Rule.objects.get(code="model_anomaly")
    text = client_staff.get(f"/admin/detection/rule/{model.pk}/change/").content
    assert "added continuously" in text.decode()


def test_good_rule_params_are_saved(client_staff):
    """A valid edit is saved with defaults filled in."""
    rule = Rule.objects.get(code="geo_velocity")
    page = client_staff.post(
        f"/admin/detection/rule/{rule.pk}/change/",
        {
            "name": rule.name,
            "description": rule.description,
            "enabled": "on",
            "weight": "0.75",
            "params": '{"max_speed_kmh": 700}',
        },
    )
    assert page.status_code == 302
    rule.refresh_from_db()
    assert rule.params == {"max_speed_kmh": 700.0, "min_distance_km": 100.0}


def test_rule_changes_are_logged_with_old_and_new_values(client_staff):
    """The audit trail of a verdict-deciding setting says what it was and what it
    became, and the admin's change log lists it."""
    from django.contrib.admin.models import LogEntry

    rule = Rule.objects.get(code="geo_velocity")
    page = client_staff.post(
        f"/admin/detection/rule/{rule.pk}/change/",
        {
            "name": rule.name,
            "description": rule.description,
            "enabled": "on",
            "weight": "0.6",
            "params": '{"max_speed_kmh": 700}',
        },
    )
    assert page.status_code == 302
    message = LogEntry.objects.latest("action_time").get_change_message()
    assert "Weight: 0.75 \u2192 0.6" in message
    assert "'max_speed_kmh': 900.0" in message and "'max_speed_kmh': 700" in message
    # The new value as saved, with the default the form left out filled in.
    assert "'min_distance_km': 100.0}." in message
    log = client_staff.get("/admin/admin/logentry/").content.decode()
    assert "0.75 \u2192 0.6" in log


def test_an_existing_rule_shows_its_code_and_none_can_be_added(client_staff):
    """Every rule the code implements has its row: Add could only fail, so it is
    not offered; a rule's page shows its code as reasons spell it."""
    rule = Rule.objects.get(code="geo_velocity")
    page = client_staff.get(f"/admin/detection/rule/{rule.pk}/change/")
    assert "geo_velocity" in page.content.decode()
    assert client_staff.get("/admin/detection/rule/add/").status_code == 403
    Rule.objects.filter(code="huge_amount").delete()
    assert client_staff.get("/admin/detection/rule/add/").status_code == 200


def test_anonymous_is_sent_to_login():
    """Admin pages need a staff login."""
    from django.test import Client

    assert Client().get("/admin/transactions/transaction/").status_code == 302


def test_evidence_cannot_be_deleted_or_relabelled_in_admin(
    client_staff, impossible_trip
):
    """Transactions and tallies offer no delete, and a label cannot be edited or
    deleted (a correction is a new label); the database refuses to drop a
    labelled transaction too."""
    from django.db.models import ProtectedError

    from transactions.models import Label, Transaction, VerdictTally
    from transactions.services import label_create

    stored = Transaction.objects.get(transaction_id="t-syd")
    label = label_create(transaction=stored, is_fraud=True, note="card stolen")
    listing = client_staff.get("/admin/transactions/transaction/").content.decode()
    assert "delete_selected" not in listing
    assert (
        client_staff.post(
            f"/admin/transactions/transaction/{stored.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    tally = VerdictTally.objects.first()
    assert (
        client_staff.post(
            f"/admin/transactions/verdicttally/{tally.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    edit = client_staff.post(
        f"/admin/transactions/label/{label.pk}/change/",
        {"transaction": stored.pk, "is_fraud": "", "source": "chargeback", "note": ""},
    )
    assert edit.status_code == 403
    assert (
        client_staff.post(
            f"/admin/transactions/label/{label.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    label.refresh_from_db()
    assert label.is_fraud is True and label.note == "card stolen"
    with pytest.raises(ProtectedError):
        stored.delete()
    assert Transaction.objects.filter(pk=stored.pk).exists()
    assert Label.objects.count() == 1


def test_profiles_dead_letters_and_models_cannot_be_deleted_in_admin(
    client_staff, impossible_trip
):
    """A user's txn_count is the version consumers check their cache against;
    deleting the profile would restart it at 0. Admin offers no delete."""
    from detection.models import UserProfile

    profile = UserProfile.objects.get(user_id="traveller")
    page = client_staff.post(
        f"/admin/detection/userprofile/{profile.pk}/delete/", {"post": "yes"}
    )
    assert page.status_code == 403
    assert UserProfile.objects.filter(pk=profile.pk).exists()
    listing = client_staff.get("/admin/detection/deadletter/").content.decode()
    assert "delete_selected" not in listing


def test_rules_cannot_be_deleted_in_admin(client_staff):
    """A deleted rule would silently stop scoring and lose its params; admin offers
    "enabled" instead of delete."""
    from detection.models import Rule

    rule = Rule.objects.get(code="geo_velocity")
    page = client_staff.post(
        f"/admin/detection/rule/{rule.pk}/delete/", {"post": "yes"}
    )
    assert page.status_code == 403
    assert Rule.objects.filter(pk=rule.pk).exists()
    listing = client_staff.get("/admin/detection/rule/").content.decode()
    assert "delete_selected" not in listing


def test_threshold_error_reads_as_the_rule_once(client_staff):
    """Saving suspicious above fraud is refused with the rule written out once,
    not with the database constraint's name."""
    from detection.models import DecisionThresholds

    thresholds = DecisionThresholds.objects.get()
    page = client_staff.post(
        f"/admin/detection/decisionthresholds/{thresholds.pk}/change/",
        {"suspicious": "0.9", "fraud": "0.5"},
    )
    text = page.content.decode()
    assert page.status_code == 200
    assert text.count("Need 0 &lt; suspicious &lt; fraud &lt;= 1.") == 1
    assert "thresholds_ordered" not in text
    thresholds.refresh_from_db()
    assert (thresholds.suspicious, thresholds.fraud) == (0.5, 0.8)


def test_rule_list_shows_codes_as_reasons_spell_them(client_staff):
    """The rule list's Code column shows amount_spike, the code filters take."""
    text = client_staff.get("/admin/detection/rule/").content.decode()
    assert ">amount_spike<" in text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"currency": "IRR", "units_per_base": "1e-30"}, "greater than or equal to"),
        ({"currency": "IRR", "units_per_base": "5e9"}, "less than or equal to"),
        ({"currency": "USD", "units_per_base": "2"}, "is the base currency"),
        ({"currency": "EUD", "units_per_base": "0.9"}, "EUD is not the ISO 4217 code"),
    ],
)
def test_implausible_exchange_rates_are_refused_in_admin(client_staff, data, message):
    """A typo like 1e-30 (a 10-unit charge would read as 1e31 and spoil the card's
    profile), a row for the base currency (always 1) and a code no currency has
    ("EUD" for EUR: its rate would never apply) are refused with why."""
    from detection.models import ExchangeRate

    before = ExchangeRate.objects.count()
    page = client_staff.post("/admin/detection/exchangerate/add/", data)
    assert page.status_code == 200
    assert message in page.content.decode()
    assert ExchangeRate.objects.count() == before


def test_a_plausible_exchange_rate_is_stored(client_staff):
    """Dinars per rial and the like stay within the bounds."""
    from detection.models import ExchangeRate

    page = client_staff.post(
        "/admin/detection/exchangerate/add/",
        {"currency": "IRR", "units_per_base": "0.0000071"},
    )
    assert page.status_code == 302
    assert ExchangeRate.objects.get(currency="IRR").units_per_base == 7.1e-6


@pytest.fixture
def count_cap_3(monkeypatch):
    """Cap the large tables' changelist counts at 3 rows, 2 rows a page."""
    from detection.admin import DeadLetterAdmin
    from fraudsite.admin_paging import CappedCountPaginator
    from transactions.admin import TransactionAdmin

    monkeypatch.setattr(CappedCountPaginator, "count_cap", 3)
    for model_admin in (TransactionAdmin, DeadLetterAdmin):
        monkeypatch.setattr(model_admin, "list_per_page", 2)


@pytest.mark.parametrize(
    ("rows", "shown"),
    [(2, "2 transactions"), (3, "3 transactions"), (4, "3+ transactions")],
)
def test_the_ledger_list_counts_its_matches_up_to_a_cap(
    client_staff, count_cap_3, rows, shown
):
    """The transaction list counts the rows a filter matches only up to the cap
    (a LIMIT in the count: a filter matching a million rows costs as much as one
    matching the cap) and says "3+" beyond it; it never counts the whole table
    (show_full_result_count) or each filter's choices (facets, asked for here)."""
    from tests.ledger import transaction_stored

    for n in range(rows):
        transaction_stored(f"t-cap-{n}")
    transaction_stored("t-cap-legit", reason_codes="", reasons=[])
    with CaptureQueriesContext(connection) as queries:
        page = client_staff.get(
            "/admin/transactions/transaction/",
            {"rule": "huge_amount", "q": "u-1", "_facets": ""},
        )
    html = page.content.decode()
    assert page.status_code == 200
    assert f"\n{shown}\n" in html  # the paginator's line
    assert f"{shown.split()[0]} results" in html  # beside the search box
    counts = [
        q["sql"]
        for q in queries
        if "COUNT(" in q["sql"].upper() and "transactions_transaction" in q["sql"]
    ]
    assert counts
    for sql in counts:
        assert "LIMIT 4" in sql and "ORDER BY" not in sql, sql


def test_select_all_says_how_many_at_least(client_staff, count_cap_3):
    """With more dead letters than the cap, the actions bar offers to select
    "all 3+", not a number it did not count."""
    from detection.models import DeadLetter

    for offset in range(5):
        DeadLetter.objects.create(
            raw_value=b"{", error="bad JSON", topic="transactions", offset=offset
        )
    html = client_staff.get("/admin/detection/deadletter/").content.decode()
    assert "Select all 3+ dead letters" in html
    assert "All 3+ selected" in html
    assert "\n3+ dead letters\n" in html


@pytest.mark.parametrize(
    "model",
    [
        "transactions.Transaction",
        "transactions.Label",
        "transactions.VerdictTally",
        "detection.UserProfile",
        "detection.DeadLetter",
        "detection.AlertDelivery",
        "detection.BacktestJob",
        "admin.LogEntry",
    ],
)
def test_tables_that_grow_without_bound_have_capped_lists(model):
    """Every admin list over a table that only grows counts up to the cap."""
    from django.apps import apps
    from django.contrib import admin

    from fraudsite.admin_paging import LargeTableAdmin

    assert isinstance(admin.site._registry[apps.get_model(model)], LargeTableAdmin)


def test_the_search_box_says_what_it_searches(client_staff, impossible_trip):
    """`?q=Sydney` or a part of an id found nothing without a word: the box
    says it takes whole ids, exactly, and not places or merchants."""
    page = client_staff.get("/admin/transactions/transaction/")
    html = page.content.decode()
    assert 'id="searchbar_helptext"' in html
    assert "A whole transaction id or user (card) id, exactly as stored" in html
    assert "places and merchants are not searched" in html


@pytest.fixture
def labelled():
    """Store four transactions: fraud then legit (latest: legit, both at one
    time: the later id wins), legit then fraud, fraud alone, unlabelled."""
    from tests.ledger import transaction_stored
    from transactions.models import Label

    at = datetime.now(UTC)
    for tid, verdicts in (
        ("t-fixed", (True, False)),
        ("t-turned", (False, True)),
        ("t-fraud", (True,)),
        ("t-none", ()),
    ):
        txn = transaction_stored(tid)
        for is_fraud in verdicts:
            Label.objects.create(transaction=txn, is_fraud=is_fraud, created_at=at)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("fraud", {"t-turned", "t-fraud"}),
        ("legit", {"t-fixed"}),
        ("none", {"t-none"}),
    ],
)
def test_the_ledger_list_filters_by_latest_label(client_staff, labelled, value, shown):
    """Admin filters by the latest label as the API's `label` does (the
    review queue: not labelled), the latest by time, then by id."""
    page = client_staff.get("/admin/transactions/transaction/", {"label": value})
    assert page.status_code == 200
    listed = set(
        re.findall(
            r'<th class="field-transaction_id"><a [^>]*>([^<]+)<', page.content.decode()
        )
    )
    assert listed == shown
    odd = client_staff.get("/admin/transactions/transaction/", {"label": "maybe"})
    assert odd.status_code == 302 and odd["Location"].endswith("?e=1")


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plan")
@pytest.mark.parametrize("value", ["fraud", "legit"])
def test_the_label_filter_reads_the_labels_not_the_ledger(
    client_staff, labelled, value
):
    """Labelled transactions are found from the labels (a small table) and
    fetched by primary key: the ledger is not read through (a scan) to find them."""
    with CaptureQueriesContext(connection) as queries:
        page = client_staff.get("/admin/transactions/transaction/", {"label": value})
    assert page.status_code == 200
    filtered = [
        q["sql"]
        for q in queries
        if 'FROM "transactions_transaction"' in q["sql"]
        and "transactions_label" in q["sql"]
        and "is_fraud" in q["sql"]
    ]
    assert filtered
    for sql in filtered:
        plan = sqlite_plan(sql)
        assert not any(s.startswith("SCAN transactions_transaction") for s in plan), (
            plan
        )


def test_an_exchange_rate_code_in_small_letters_is_taken_in_capitals(client_staff):
    """`zwg` was refused ("three capitals") where a message's `usd` is taken:
    the code is put in capitals before it is checked (and then checked as
    typed in capitals: the base currency, a code no currency has)."""
    from detection.models import ExchangeRate

    page = client_staff.post(
        "/admin/detection/exchangerate/add/",
        {"currency": "zwg", "units_per_base": "26.8"},
    )
    assert page.status_code == 302, page.content.decode()
    assert ExchangeRate.objects.get(currency="ZWG").units_per_base == 26.8
    for code, message in (("usd", "is the base currency"), ("eud", "EUD is not")):
        refused = client_staff.post(
            "/admin/detection/exchangerate/add/",
            {"currency": code, "units_per_base": "2"},
        )
        assert refused.status_code == 200
        assert message in refused.content.decode()
    again = client_staff.post(
        "/admin/detection/exchangerate/add/",
        {"currency": "zwg", "units_per_base": "27"},
    )
    assert again.status_code == 200
    assert "already exists" in again.content.decode()
    assert ExchangeRate.objects.get(currency="ZWG").units_per_base == 26.8
