"""The dashboard in a real browser against a live ASGI server and real Redis.

Debian's Chromium is driven by Playwright; the server is daphne in a subprocess on
the file-backed test database, with the channel layer on Redis. Waits are
Playwright's auto-waiting assertions, each with an explicit deadline.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from detection.events import verdicts_event_build, verdicts_publish
from tests.dashboard.conftest import message, publish_verdicts
from transactions.models import Label, Transaction
from transactions.selectors import verdict_totals

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE_DEADLINE_MS = 2_000


def _rows(page):
    return page.locator("#txn-rows tr[data-id]")


def test_login_then_totals_and_donut_match_the_database(logged_in_page, score):
    """Given scored transactions, when the analyst logs in, then the overview's
    totals and donut slices equal the stored counts."""
    score(
        message(user_id="p1", amount="12.00"),
        message(user_id="p2", amount="3000.00"),
        message(user_id="p3", amount="15000.00"),
        message(user_id="p4", amount="20.00"),
    )
    page = logged_in_page
    page.goto("/")
    totals = verdict_totals()
    expect(page.locator("#total-all")).to_have_attribute("data-value", "4")
    for status, count in totals["by_status"].items():
        expect(page.locator(f"#total-{status}")).to_have_attribute(
            "data-value", str(count)
        )
        legend = page.locator(f"#donut-legend li[data-status={status}] .legend-count")
        expect(legend).to_have_text(str(count))
        slice_ = page.locator(f"#donut .donut-slice[data-status={status}]")
        if count:
            expect(slice_).to_have_attribute("data-count", str(count))
        else:
            expect(slice_).to_have_count(0)
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")


def test_a_backfill_minute_does_not_flatten_the_chart(logged_in_page):
    """10,000 verdicts in one minute (make run's first-run history) beside
    minutes of 20: the chart scales to the 20s and draws that minute clipped,
    its figure in its tooltip."""
    from transactions.models import VerdictTally

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    VerdictTally.objects.create(
        minute=now - timedelta(minutes=30), total=10_000, legit=10_000
    )
    for ago in range(1, 11):
        VerdictTally.objects.create(
            minute=now - timedelta(minutes=ago), total=20, legit=18, fraud=2
        )
    page = logged_in_page
    page.goto("/")
    expect(page.locator("#per-minute rect.bar-total.clipped")).to_have_count(1)
    expect(page.locator("#per-minute rect.bar-total.clipped title")).to_contain_text(
        "10,000 transactions"
    )
    expect(page.locator("#per-minute text.axis-label.end").last).to_have_text("25")


def test_make_runs_first_minutes_do_not_flatten_the_chart(logged_in_page):
    """make run's first look: the history's minute (10,000 rows) and the live
    minute filling, no settled minute yet to compare with: the history's bar is
    drawn clipped and the live one is not a sliver."""
    from transactions.models import VerdictTally

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    VerdictTally.objects.create(
        minute=now - timedelta(minutes=2), total=10_000, legit=10_000
    )
    VerdictTally.objects.create(minute=now, total=100, legit=100)
    page = logged_in_page
    page.goto("/")
    expect(page.locator("#per-minute rect.bar-total.clipped")).to_have_count(1)
    expect(page.locator("#per-minute rect.bar-total.clipped title")).to_contain_text(
        "10,000 transactions"
    )
    expect(page.locator("#per-minute text.axis-label.end").last).to_have_text("125")


def test_a_stream_that_just_started_is_not_drawn_clipped(logged_in_page):
    """A few full minutes after quiet ones, and the current minute still
    filling: no minute is an outlier, nothing is clipped."""
    from transactions.models import VerdictTally

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    VerdictTally.objects.create(minute=now, total=150, legit=150)
    for ago, total in [(1, 1200), (2, 1200), (3, 1150), (20, 20), (21, 25)]:
        VerdictTally.objects.create(
            minute=now - timedelta(minutes=ago), total=total, legit=total
        )
    page = logged_in_page
    page.goto("/")
    expect(page.locator("#per-minute rect.bar-total")).not_to_have_count(0)
    expect(page.locator("#per-minute rect.bar-total.clipped")).to_have_count(0)
    expect(page.locator("#per-minute text.axis-label.end").last).to_have_text("1,200")


def test_transaction_scored_after_page_load_appears_within_two_seconds(
    logged_in_page, score, channel_layer_redis
):
    """Given the table is open, when a transaction is scored through the API (which
    pushes its verdict to the dashboard group), then the row appears on top
    without reload."""
    score(message(user_id="old", amount="10.00"))
    page = logged_in_page
    page.goto("/transactions/")
    expect(_rows(page)).to_have_count(1)
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    page.evaluate("window.__marker = 'same page'")
    token = page.context.cookies()
    csrf = next(c["value"] for c in token if c["name"] == "csrftoken")
    payload = message(user_id="fresh-user", amount="15000.00")
    response = page.request.post(
        "/api/predict", data=payload, headers={"X-CSRFToken": csrf}
    )
    assert response.status == 201, response.text()
    first = _rows(page).first
    expect(first).to_have_attribute(
        "data-id", payload["transaction_id"], timeout=LIVE_DEADLINE_MS
    )
    expect(first.locator(".reason[data-code=huge_amount]")).to_have_text("Huge amount")
    assert page.evaluate("window.__marker") == "same page"


def test_hovering_pauses_live_rows_and_counts_them(
    logged_in_page, score, channel_layer_redis
):
    """While the pointer is over the table, new verdicts wait behind an "N new"
    counter; leaving the table shows them."""
    score(message(user_id="old", amount="10.00"))
    page = logged_in_page
    page.goto("/transactions/")
    expect(_rows(page)).to_have_count(1)
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    page.hover("#txn-rows tr[data-id]")
    expect(page.locator("#table-state")).to_contain_text("paused")
    created = score(message(user_id="n1"), message(user_id="n2"))
    publish_verdicts(created, channel_layer=channel_layer_redis)
    expect(page.locator("#new-count")).to_have_text("2 new")
    expect(_rows(page)).to_have_count(1)
    page.mouse.move(5, 5)
    expect(_rows(page)).to_have_count(3)
    expect(page.locator("#new-count")).to_be_hidden()


def test_a_merchant_filter_takes_that_merchants_new_verdicts_live(
    logged_in_page, score, channel_layer_redis
):
    """Given the list filtered on a merchant (the detail page's merchant link),
    a pushed batch adds that merchant's new verdicts and not the others'."""
    score(message(user_id="old", merchant_id="m-watched"))
    page = logged_in_page
    page.goto("/transactions/?merchant_id=m-watched")
    expect(_rows(page)).to_have_count(1)
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    page.mouse.move(5, 5)
    watched, other = score(
        message(user_id="n1", merchant_id="m-watched"),
        message(user_id="n2", merchant_id="m-other"),
    )
    publish_verdicts([watched, other], channel_layer=channel_layer_redis)
    expect(_rows(page)).to_have_count(2)
    expect(_rows(page).first).to_have_attribute("data-id", watched.transaction_id)
    expect(page.locator(f'tr[data-id="{other.transaction_id}"]')).to_have_count(0)


def test_amounts_show_their_currency_decimals_loaded_and_pushed(
    logged_in_page, score, channel_layer_redis
):
    """The table shows each amount with its currency's decimals, grouped: the
    rows it loads (1,234.50 USD, 150,000 JPY) and a pushed one (1,234.567 KWD),
    never 2 decimals for every currency."""
    from detection.models import ExchangeRate

    # Seeded (detection 0024), but a transactional test empties the tables.
    ExchangeRate.objects.update_or_create(
        currency="KWD", defaults={"units_per_base": 0.307}
    )
    score(
        message(user_id="usd", amount="1234.50"),
        message(user_id="yen", amount="150000", currency="JPY"),
    )
    page = logged_in_page
    page.goto("/transactions/")
    amounts = page.locator("#txn-rows td[data-amount]")
    expect(amounts).to_have_text(["150,000 JPY", "1,234.50 USD"])
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    page.mouse.move(5, 5)
    pushed = score(message(user_id="kwd", amount="1234.567", currency="KWD"))
    publish_verdicts(pushed, channel_layer=channel_layer_redis)
    expect(amounts).to_have_text(["1,234.567 KWD", "150,000 JPY", "1,234.50 USD"])


@pytest.mark.parametrize("query", ["min_amount=abc", "since=garbage"])
def test_a_filter_the_api_refuses_is_shown_and_takes_no_live_rows(
    logged_in_page, score, channel_layer_redis, query
):
    """Given an address with a filter the API refuses (a hand-edited link), the
    table says why instead of staying blank, and pushed verdicts (which the
    bad filter cannot be checked against) do not fill it as if unfiltered."""
    score(message(user_id="old"))
    page = logged_in_page
    page.goto(f"/transactions/?{query}")
    error = page.locator("#txn-rows td.error")
    field = query.split("=")[0]
    expect(error).to_contain_text(f"Could not load: {field}")
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    page.mouse.move(5, 5)
    created = score(message(user_id="n1"))
    result = publish_verdicts(created, channel_layer=channel_layer_redis)
    assert result["verdicts"]
    # Another page on the same push gets the row: this one kept its error.
    other = page.context.new_page()
    other.goto("/transactions/")
    expect(other.locator("#txn-rows tr[data-id]")).to_have_count(2)
    publish_verdicts(score(message(user_id="n2")), channel_layer=channel_layer_redis)
    expect(other.locator("#txn-rows tr[data-id]")).to_have_count(3)
    other.close()
    expect(error).to_contain_text(f"Could not load: {field}")
    expect(_rows(page)).to_have_count(0)
    expect(page.locator("#match-count")).to_have_text("")


def _unsaved_verdicts(batch: int, size: int) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {
            "transaction_id": f"flood-{batch:03d}-{index:03d}",
            "user_id": f"flood-user-{index % 37}",
            "amount": Decimal("12.34"),
            "currency": "EUR",
            "timestamp": now,
            "location": "Paris",
            "country": "FR",
            "merchant_id": "m-flood",
            "status": "legit" if index % 10 else "suspicious",
            "risk_score": 0.1,
            "model_score": None,
            "reasons": [],
            "scored_at": now,
        }
        for index in reversed(range(size))
    ]


def test_table_stays_bounded_and_responsive_under_a_flood(
    logged_in_page, channel_layer_redis
):
    """Given 20 full events (4,000 verdicts, what 5,000/s sends in a second),
    the table keeps one page of the newest rows and the page still answers."""
    page = logged_in_page
    page.goto("/transactions/")
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    page.mouse.move(5, 5)
    for batch in range(20):
        verdicts = _unsaved_verdicts(batch, 200)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(
                verdicts_publish,
                verdicts_event_build(
                    rows=verdicts,
                    counts={"legit": 180, "suspicious": 20},
                    throughput=5000.0,
                ),
                channel_layer=channel_layer_redis,
            ).result(10)
    expect(_rows(page).first).to_have_attribute("data-id", "flood-019-199")
    expect(_rows(page)).to_have_count(50)
    expect(page.locator("#live-status .live-detail")).to_contain_text("5,000 tx/s")
    # Still answering the analyst: pointing at the table pauses it at once.
    page.hover("#txn-rows tr[data-id]")
    expect(page.locator("#table-state")).to_contain_text("paused")


def test_the_live_rate_adds_up_every_consumer(logged_in_page, channel_layer_redis):
    """Given events from two consumer processes, the indicator shows the sum of
    their latest rates; a newer event of one replaces that one's rate only."""
    page = logged_in_page
    page.goto("/transactions/")
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    detail = page.locator("#live-status .live-detail")
    sent = [("consumer-a", 3000.0), ("consumer-b", 2000.0), ("consumer-a", 1000.0)]
    expected = ["3,000 tx/s", "5,000 tx/s", "3,000 tx/s"]
    for number, ((source, rate), shown) in enumerate(zip(sent, expected, strict=True)):
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(
                verdicts_publish,
                verdicts_event_build(
                    rows=_unsaved_verdicts(100 + number, 1),
                    counts={"legit": 1},
                    throughput=rate,
                    source=source,
                ),
                channel_layer=channel_layer_redis,
            ).result(10)
        expect(detail).to_contain_text(shown)


def test_a_later_page_is_in_the_address_for_back_reload_and_the_detail_link(
    logged_in_page, score
):
    """Older → puts the page in the address bar: Back returns to the first
    page, Forward and a reload to the later one, and a transaction opened from
    it links back to that page."""
    score(*(message(user_id=f"p{n}", amount="12.00") for n in range(57)))
    page = logged_in_page
    page.goto("/transactions/?user_id=")
    expect(_rows(page)).to_have_count(50)
    first_page_top = _rows(page).first.get_attribute("data-id")
    page.get_by_role("button", name="Older →").click()
    expect(_rows(page)).to_have_count(7)
    expect(page).to_have_url(re.compile(r"page=2&cursor="))
    later_top = _rows(page).first.get_attribute("data-id")

    page.go_back()
    expect(_rows(page)).to_have_count(50)
    expect(_rows(page).first).to_have_attribute("data-id", first_page_top)
    assert "cursor=" not in page.url
    page.go_forward()
    expect(_rows(page)).to_have_count(7)
    page.reload()
    expect(_rows(page)).to_have_count(7)
    expect(_rows(page).first).to_have_attribute("data-id", later_top)
    expect(page.locator("#match-count")).to_have_text("57 transactions")

    _rows(page).first.locator("a").first.click()
    expect(page.locator("#back-to-list")).to_have_attribute(
        "href", re.compile(r"page=2&cursor=")
    )
    page.locator("#back-to-list").click()
    expect(_rows(page)).to_have_count(7)


def test_sorting_and_filtering(logged_in_page, score):
    """Column headers sort through the API; filters narrow the rows."""
    score(
        message(user_id="s1", amount="500.00"),
        message(user_id="s2", amount="15000.00"),
        message(user_id="s3", amount="7.25"),
        message(user_id="s1", amount="60.00"),
    )
    page = logged_in_page
    page.goto("/transactions/")
    expect(_rows(page)).to_have_count(4)
    amounts = page.locator("#txn-rows td[data-amount]")

    page.get_by_role("button", name="Amount").click()
    expect(page.locator("th[data-sort=amount]")).to_have_attribute(
        "aria-sort", "descending"
    )
    descending = ["15,000.00 USD", "500.00 USD", "60.00 USD", "7.25 USD"]
    expect(amounts).to_have_text(descending)
    page.get_by_role("button", name="Amount").click()
    expect(amounts).to_have_text(list(reversed(descending)))
    page.get_by_role("button", name="User").click()
    expect(page.locator("#txn-rows td:nth-child(3)")).to_have_text(
        ["s1", "s1", "s2", "s3"]
    )
    expect(page.locator("#table-state")).to_contain_text("paused")

    page.get_by_label("User", exact=True).fill("s1")
    page.get_by_role("button", name="Apply").click()
    expect(_rows(page)).to_have_count(2)
    expect(page.locator("#txn-rows td:nth-child(3)")).to_have_text(["s1", "s1"])

    page.get_by_role("button", name="Reset").click()
    expect(_rows(page)).to_have_count(4)
    # Reset is the live view again: no filter, no sort, newest first.
    expect(page.get_by_label("User", exact=True)).to_have_value("")
    expect(page.locator("#table-state")).to_have_text("Live: newest first")
    expect(page.locator("th[data-sort=user_id]")).not_to_have_attribute(
        "aria-sort", "ascending"
    )
    assert "ordering" not in page.url and "user_id" not in page.url
    page.get_by_label("Status").select_option("flagged")
    page.get_by_label("Min amount").fill("1000")
    page.keyboard.press("Enter")
    expect(_rows(page)).to_have_count(1)
    expect(_rows(page).first.locator("td[data-amount]")).to_have_attribute(
        "data-amount", "15000.00"
    )
    assert "status=flagged" in page.url
    # Export CSV downloads what the table selects: the same filters, every row.
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == 2 and lines[1].split(",")[2] == "15000.00"


@pytest.mark.parametrize("width", [1024, 390])
def test_pages_fit_narrow_screens_without_sideways_scrolling(
    logged_in_page, score, width
):
    """At 1024 px (a laptop) and 390 px (a phone) no page is wider than the
    screen: the table scrolls inside its frame, and its last column stays
    reachable there."""
    stored = score(*(message(user_id=f"n{i}", amount="15000.00") for i in range(3)))
    detail = f"/transactions/{stored[0].transaction_id}/"
    page = logged_in_page
    page.set_viewport_size({"width": width, "height": 768})
    for path in ("/", "/transactions/", detail):
        page.goto(path)
        if path == "/transactions/":
            expect(_rows(page)).to_have_count(3)
        elif path == detail:
            expect(page.locator("#history-title")).to_be_visible()
        else:
            expect(page.locator("#total-all")).to_have_text("3")
        overflow = page.evaluate(
            "document.scrollingElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"{path} is {overflow}px wider than {width}px"


def test_rule_performance_fits_a_tablet_without_hiding_columns(logged_in_page, score):
    """At 768 px (a tablet) the rule performance table's headings wrap, so the
    precision column is in view without scrolling its frame sideways."""
    score(message(user_id="t1", amount="15000.00"))
    page = logged_in_page
    page.set_viewport_size({"width": 768, "height": 900})
    page.goto("/")
    frame = page.locator("#rule-performance .table-scroll")
    expect(frame.locator("th", has_text="Confirmed precision")).to_be_visible()
    hidden = frame.evaluate("f => f.scrollWidth - f.clientWidth")
    assert hidden <= 0, f"{hidden}px of the rule table are scrolled out of view"


def test_validation_panel_returns_a_verdict_with_reasons(logged_in_page, score):
    """The what-if lookup shows the verdict, its reasons and the user's history;
    with "Sync table results" on, the table follows the looked-up user."""
    start = datetime.now(UTC) - timedelta(hours=2)
    score(
        message(
            user_id="v-user",
            amount="30.00",
            location="London",
            timestamp=start.isoformat(),
        ),
        message(user_id="other", amount="40.00"),
    )
    page = logged_in_page
    page.goto("/transactions/")
    expect(_rows(page)).to_have_count(2)
    page.get_by_label("User id").fill("v-user")
    page.get_by_label("Amount", exact=True).fill("15000")
    page.get_by_label("Location (optional)").fill("Tokyo")
    page.get_by_label("Sync table results").check()
    page.get_by_role("button", name="Check").click()
    result = page.locator("#validate-result")
    expect(result.locator(".badge").first).to_contain_text(
        re.compile("Fraud|Suspicious")
    )
    expect(result.locator("li[data-code=huge_amount]")).to_contain_text("Huge amount")
    expect(result.locator("li[data-code=geo_velocity]")).to_contain_text("km/h")
    expect(result).to_contain_text("History of v-user")
    expect(page.locator("#f-user")).to_have_value("v-user")
    expect(_rows(page)).to_have_count(1)
    assert Transaction.objects.count() == 2  # what-if stores nothing


def test_the_validation_panel_checks_an_amount_in_its_currency(logged_in_page):
    """The what-if sends the currency given: 15,000 JPY (about 100 USD) is no
    huge amount, and 100.5 JPY is refused (the yen has no decimals)."""
    from detection.models import ExchangeRate

    # Seeded (detection 0008), but a transactional test empties the tables.
    ExchangeRate.objects.update_or_create(
        currency="JPY", defaults={"units_per_base": 147.0}
    )
    page = logged_in_page
    page.goto("/transactions/")
    page.get_by_label("User id").fill("yen-card")
    page.get_by_label("Currency (optional)").fill("jpy")
    page.get_by_label("Amount", exact=True).fill("100.5")
    result = page.locator("#validate-result")
    # The server re-reads the rates every 2 s: until it has the yen's, the
    # answer is "No exchange rate for JPY".
    deadline = time.monotonic() + 10
    while True:
        page.get_by_role("button", name="Check").click()
        error = result.locator(".error")
        expect(error).to_be_visible()
        if "No exchange rate" not in error.inner_text():
            break
        assert time.monotonic() < deadline, "the server never took the yen's rate"
        time.sleep(0.2)
    expect(error).to_contain_text("JPY amounts have no decimal")
    page.get_by_label("Amount", exact=True).fill("15000")
    page.get_by_role("button", name="Check").click()
    expect(result.locator(".badge").first).to_be_visible()
    expect(result.locator("li[data-code=huge_amount]")).to_have_count(0)
    assert Transaction.objects.count() == 0  # what-if stores nothing


def test_labelling_a_transaction_shows_the_label(logged_in_page, score, staff_user):
    """Confirm fraud with a note: the detail page and the table show the label,
    it is stored with the analyst, and the verdict is unchanged."""
    (txn,) = score(message(user_id="lab", amount="15000.00"))
    page = logged_in_page
    page.goto(f"/transactions/{txn.transaction_id}/")
    expect(page.locator("#label-current")).to_have_text("Not labelled yet.")
    page.get_by_label("Note (optional)").fill("customer confirmed")
    page.get_by_role("button", name="Confirm fraud").click()
    expect(page.locator("#label-current")).to_contain_text("Confirmed fraud")
    expect(page.locator("#label-current")).to_contain_text("customer confirmed")
    label = Label.objects.get(transaction=txn)
    assert label.is_fraud and label.created_by == staff_user
    assert Transaction.objects.get(pk=txn.pk).status == txn.status

    page.get_by_role("button", name="Mark legitimate").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#label-current")).to_contain_text("Legitimate")
    expect(page.locator("#label-history li")).to_have_count(2)

    page.goto("/transactions/")
    row = page.locator(f"#txn-rows tr[data-id='{txn.transaction_id}']")
    expect(row.locator(".label-cell")).to_have_text("Legitimate")

    # The review queue: not labelled leaves it out, legitimate keeps it.
    page.goto("/transactions/?label=none")
    expect(page.locator("#f-label")).to_have_value("none")
    expect(page.locator("#txn-rows tr[data-id]")).to_have_count(0)
    page.select_option("#f-label", "legit")
    page.get_by_role("button", name="Apply").click()
    expect(row).to_have_count(1)


def test_marking_a_fraud_verdict_legitimate_updates_the_profile_panel(
    logged_in_page, score
):
    """London, then Sydney for 5,000 an hour later: fraud, and the card's last
    place stays London. "Mark legitimate" teaches the profile, and the detail
    page's profile panel shows Sydney without a reload."""
    start = datetime.now(UTC) - timedelta(hours=2)
    _, trip = score(
        message(user_id="trip", location="London", timestamp=start.isoformat()),
        message(
            user_id="trip",
            location="Sydney",
            amount="5000.00",
            timestamp=(start + timedelta(hours=1)).isoformat(),
        ),
    )
    assert trip.status == "fraud"
    page = logged_in_page
    page.goto(f"/transactions/{trip.transaction_id}/")
    panel = page.locator("[aria-labelledby='profile-title']")
    expect(panel).to_contain_text("London")
    page.get_by_role("button", name="Mark legitimate").click()
    expect(page.locator("#label-current")).to_contain_text("Legitimate")
    expect(panel.locator("dd").nth(3)).to_have_text("Sydney")


def test_long_ids_keep_the_part_that_tells_rows_apart(logged_in_page, score):
    """Streamed ids share their start: the table shows their end, whole (not cut
    by the column), and the full id is the link's title and accessible name."""
    (txn,) = score(message(transaction_id="st-1-1796000000-0000012345"))
    page = logged_in_page
    page.goto("/transactions/")
    link = page.locator(f"#txn-rows tr[data-id='{txn.transaction_id}'] td a").first
    expect(link).to_have_text("\u20260000012345")
    assert link.evaluate("a => a.scrollWidth <= a.parentElement.clientWidth")
    expect(link).to_have_attribute("title", txn.transaction_id)
    expect(page.get_by_role("link", name=txn.transaction_id)).to_have_count(1)


def test_connection_indicator_goes_offline_and_recovers(
    logged_in_page, live_server_asgi
):
    """When the server stops, the indicator says Offline; when it is back, the
    page reconnects by itself and says Connected."""
    page = logged_in_page
    page.goto("/")
    status = page.locator("#live-status .live-text")
    expect(status).to_have_text("Connected")
    live_server_asgi.stop()
    try:
        expect(status).to_have_text("Offline", timeout=10_000)
        expect(page.locator("#live-status")).to_have_attribute("data-state", "offline")
    finally:
        live_server_asgi.start()
    expect(status).to_have_text("Connected", timeout=20_000)


def test_overview_screenshot(logged_in_page, score, channel_layer_redis, tmp_path):
    """Save the overview at 1440x900, after live verdicts have updated the totals
    and the flagged feed. `make screenshot` sets SCREENSHOT_PATH to
    docs/dashboard.png (the README image); a plain test run leaves docs/ alone."""
    call_command("seed_transactions", count=4000, days=1 / 24, users=500, seed=3)
    page = logged_in_page
    page.goto("/")
    expect(page.locator("#total-all")).to_have_attribute("data-value", "4000")
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    created = score(
        message(user_id="shot-1", amount="18.40"),
        message(user_id="shot-2", amount="15000.00", location="Lagos"),
        message(user_id="shot-3", amount="2400.00", location="Paris"),
    )
    publish_verdicts(created, channel_layer=channel_layer_redis)
    expect(page.locator("#total-all")).to_have_attribute("data-value", "4003")
    expect(page.locator("#flagged-rows tr").first).to_have_attribute(
        "data-id", created[1].transaction_id
    )
    target = Path(os.environ.get("SCREENSHOT_PATH") or tmp_path / "dashboard.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
    assert not page.js_errors


def test_an_analyst_blocks_a_merchant_from_a_transaction(logged_in_page, score):
    """From a transaction's page the analyst blocks its merchant with a reason,
    after confirming (a merchant is everyone's payments there): the entry shows
    at once with its Remove button, and the merchant's next transaction is fraud.
    Declining the confirmation blocks nothing."""
    from detection.models import ListEntry

    (txn,) = score(message(user_id="shopper", merchant_id="m-skimmer"))
    page = logged_in_page
    page.goto(f"/transactions/{txn.transaction_id}/")
    section = page.locator("#lists-section")
    expect(section).to_contain_text("on no list")
    page.get_by_label("Put on a list").select_option("merchant:m-skimmer")
    page.get_by_label("Why").fill("skimmer found, case 77")
    # Enter in the reason box decides nothing (it would press Block, the form's
    # first button, and a card gets no confirmation): a list entry takes a button.
    assert page.get_by_label("Why").evaluate(
        "(box) => { const enter = new KeyboardEvent('keydown', {key: 'Enter',"
        " bubbles: true, cancelable: true}); box.dispatchEvent(enter);"
        " return enter.defaultPrevented; }"
    )
    questions = []

    def decline(dialog):
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    section.get_by_role("button", name="Block").click()
    expect(page.locator("#list-entries")).to_contain_text("on no list")
    assert "Block every payment at merchant m-skimmer?" in questions[0]
    assert not ListEntry.objects.exists()

    page.once("dialog", lambda dialog: dialog.accept())
    section.get_by_role("button", name="Block").click()
    expect(page.locator("#list-entries li").first).to_contain_text(
        "Blocked merchant m-skimmer · “skimmer found, case 77” · by analyst"
    )
    (later,) = score(message(user_id="someone-else", merchant_id="m-skimmer"))
    assert later.status == "fraud"
    # And removes it again from the same page, without a reload.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#list-entries").get_by_role("button", name="Remove").click()
    expect(page.locator("#list-entries")).to_contain_text("on no list")
    (after,) = score(message(user_id="a-third", merchant_id="m-skimmer"))
    assert after.status == "legit"
    # Allowing a merchant (every payment there judged legitimate) asks too.
    page.get_by_label("Put on a list").select_option("merchant:m-skimmer")
    page.get_by_label("Why").fill("trusted")
    page.once("dialog", decline)
    section.get_by_role("button", name="Allow").click()
    expect(page.locator("#list-entries")).to_contain_text("on no list")
    assert "Allow every payment at merchant m-skimmer?" in questions[-1]
    assert not ListEntry.objects.exists()
    # The admin's change log says where it was done, and by whom.
    from django.contrib.admin.models import LogEntry

    logged = [
        (entry.user.username, entry.get_change_message())
        for entry in LogEntry.objects.filter(content_type__model="listentry").order_by(
            "id"
        )
    ]
    assert logged == [
        ("analyst", "Added in the dashboard."),
        ("analyst", "Deleted in the dashboard."),
    ]


def test_the_time_range_applies_to_payment_or_verdict_time(logged_in_page, score):
    """Payments dated two days ago, scored just now: "the last hour" by payment
    time holds none of them, by verdict time all of them."""
    old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    score(*(message(user_id=f"late-{i}", timestamp=old) for i in range(2)))
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page = logged_in_page
    page.goto("/transactions/")
    expect(_rows(page)).to_have_count(2)
    page.get_by_label("From (UTC)").fill(hour_ago)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#txn-rows tr.empty")).to_have_text("No transactions match.")
    expect(_rows(page)).to_have_count(0)
    page.get_by_label("Time of").select_option("scored")
    page.get_by_role("button", name="Apply").click()
    expect(_rows(page)).to_have_count(2)
    assert "time=scored" in page.url


def test_every_column_fits_a_1400px_screen(logged_in_page, score):
    """At 1400 px beside the what-if panel, the table shows all its columns,
    Label included, without scrolling sideways (reason chips stack instead)."""
    start = datetime.now(UTC) - timedelta(hours=12)
    card = "user-7-000435"
    score(
        *(
            message(
                transaction_id=f"st-7-1796004973-000001{i:04d}",
                user_id=card,
                amount="20.00",
                location="London",
                timestamp=(start + timedelta(hours=i)).isoformat(),
            )
            for i in range(6)
        )
    )
    (trip,) = score(
        message(
            transaction_id="st-7-1796004973-0000029999",
            user_id=card,
            amount="5000.00",
            location="Tokyo",
            timestamp=(start + timedelta(hours=5, minutes=30)).isoformat(),
        )
    )
    assert len(trip.reasons) >= 3  # three chips in one cell
    page = logged_in_page
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto("/transactions/")
    expect(_rows(page)).to_have_count(7)
    overflow = page.evaluate(
        "(() => { const w = document.getElementById('table-wrap');"
        " return w.scrollWidth - w.clientWidth; })()"
    )
    assert overflow <= 0, f"the table is {overflow}px wider than its frame"


def test_a_label_given_elsewhere_marks_the_row_in_a_review_list(
    logged_in_page, score, channel_layer_redis, staff_user
):
    """Given the "not labelled" review list open, when another analyst labels
    one of its rows (the API, in another session), then the row shows the label
    and is marked done without a reload; its detail page's back link returns to
    this filtered list."""
    from detection.services import transaction_label

    first, second = score(
        message(user_id="queue-a", amount="15000.00"),
        message(user_id="queue-b", amount="15000.00"),
    )
    page = logged_in_page
    page.goto("/transactions/?status=flagged&label=none")
    expect(_rows(page)).to_have_count(2)
    expect(page.locator("#match-count")).to_have_text("2 transactions")
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")

    transaction_label(record=first, is_fraud=True, created_by=staff_user)

    row = page.locator(f"#txn-rows tr[data-id='{first.transaction_id}']")
    expect(row.locator(".label-cell")).to_have_text(
        "Confirmed fraud", timeout=LIVE_DEADLINE_MS
    )
    expect(row).to_have_class(re.compile(r"\bdone\b"))
    expect(page.locator("#match-count")).to_have_text("1 transaction")
    other = page.locator(f"#txn-rows tr[data-id='{second.transaction_id}']")
    expect(other).not_to_have_class(re.compile(r"\bdone\b"))

    other.get_by_role("link").click()
    back = page.locator("#back-to-list")
    expect(back).to_have_text("← Back to the list")
    back.click()
    expect(page).to_have_url(re.compile(r"/transactions/\?status=flagged&label=none$"))
    expect(page.locator("#f-label")).to_have_value("none")


def test_the_rule_performance_panel_follows_labels_live(
    logged_in_page, score, channel_layer_redis, staff_user
):
    """Given the overview open, when a chargeback (or another analyst) confirms a
    flagged verdict as fraud, the rule performance panel shows it without a
    reload: one confirmed fraud and 100% precision for the rule that fired."""
    from detection.services import transaction_label

    (txn,) = score(message(user_id="perf-a", amount="15000.00"))
    page = logged_in_page
    page.goto("/")
    expect(page.locator("#live-status .live-text")).to_have_text("Connected")
    row = page.locator(
        "#rule-performance tr", has=page.locator("code", has_text="huge_amount")
    )
    expect(row.locator("td").nth(3)).to_have_text("0")

    transaction_label(record=txn, is_fraud=True, created_by=staff_user)

    # The panel reloads at most every 3 s (overview.js): within that and the
    # live deadline, whatever refresh came just before.
    expect(row.locator("td").nth(3)).to_have_text("1", timeout=3_000 + LIVE_DEADLINE_MS)
    expect(row.locator("td").nth(5)).to_have_text("100%")
    # The window links still work in the reloaded panel.
    page.locator("#rule-performance .window-links a", has_text="7d").click()
    expect(page.locator("#rules-title")).to_contain_text("last 7d")


def _luminance(rgb: str) -> float:
    """Return the WCAG relative luminance of a computed `rgb(r, g, b)` color."""
    channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
    linear = [
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_the_top_bar_links_meet_wcag_aa_contrast(logged_in_page):
    """Every link and button on the dark top bar (Log out included) reads at
    4.5:1 or more against it (WCAG AA for normal text)."""
    page = logged_in_page
    page.goto("/")
    background = page.evaluate(
        "getComputedStyle(document.querySelector('.topbar')).backgroundColor"
    )
    colors = page.evaluate(
        "[...document.querySelectorAll('.topbar a, .topbar button')]"
        ".map((el) => [el.textContent.trim(), getComputedStyle(el).color])"
    )
    assert any(text == "Log out" for text, _ in colors)
    back = _luminance(background)
    for text, color in colors:
        fore = _luminance(color)
        ratio = (max(fore, back) + 0.05) / (min(fore, back) + 0.05)
        assert ratio >= 4.5, (text, color, background, round(ratio, 2))
