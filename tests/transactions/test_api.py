"""Transactions list and detail: envelope, filters, ordering, cursor pages, limits."""

import base64
import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from transactions.messages import TransactionMessage
from transactions.models import Label, Transaction

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger():
    """Store 30 verdicts: user a (small amounts) and user b (one huge amount)."""
    messages = [
        TransactionMessage(
            transaction_id=f"a-{i:02d}",
            user_id="a",
            amount=Decimal("10.00") + i,
            timestamp=T0 + timedelta(hours=i),
            location="London",
        )
        for i in range(29)
    ]
    messages.append(
        TransactionMessage(
            transaction_id="b-huge",
            user_id="b",
            amount=Decimal("25000.00"),
            timestamp=T0 + timedelta(hours=30),
            location="Paris",
        )
    )
    transaction_batch_score_record(
        messages=messages,
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )


def test_list_has_items_and_meta_like_the_predecessor(api_client, ledger):
    """GET /api/transactions?n=20 returns {items, meta{total, by_status}}."""
    response = api_client.get("/api/transactions?n=20")
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 20
    assert body["meta"]["total"] == 30
    assert sum(body["meta"]["by_status"].values()) == 30
    assert (
        body["meta"]["by_status"]["fraud"] + body["meta"]["by_status"]["suspicious"]
        >= 1
    )
    assert body["items"][0]["transaction_id"] == "b-huge"


def test_trailing_slash_is_optional(api_client, ledger):
    """The list answers at /api/transactions and /api/transactions/."""
    assert api_client.get("/api/transactions/").status_code == 200
    assert api_client.get("/api/transactions/b-huge/").status_code == 200


@pytest.mark.parametrize("n", ["0", "501", "-1", "many"])
def test_n_out_of_range_is_400(api_client, ledger, n):
    """A page size above the documented maximum (500) or invalid is a 400."""
    response = api_client.get(f"/api/transactions?n={n}")
    assert response.status_code == 400
    assert "n" in response.json()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("until=9999-12-31T23:59:59-05:00", "until"),
        ("since=0001-01-01T00:00:00%2B05:00", "since"),
        ("since=yesterday", "since"),
        ("min_amount=abc", "min_amount"),
        ("min_amount=1e400", "min_amount"),
        ("status=maybe", "status"),
        ("rule=bogus", "rule"),
        ("ordering=bogus", "ordering"),
        ("ordering=amount,-nope", "ordering"),
    ],
)
def test_bad_filters_are_400_with_field_errors(api_client, ledger, query, field):
    """A filter value that cannot be applied is a 400 naming it, never a 500,
    nor an empty or unsorted page that looks like an answer."""
    response = api_client.get(f"/api/transactions?{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()


def walk(api_client, url: str, *, most: int) -> list[str]:
    """Return the ids of every page from `url` on, following meta.next; fail
    once more than `most` came back (pages that repeat)."""
    seen: list[str] = []
    while url:
        body = api_client.get(url).json()
        seen.extend(item["transaction_id"] for item in body["items"])
        url = body["meta"]["next"]
        assert len(seen) <= most, "pages repeat"
    return seen


def test_cursor_pages_walk_everything_once(api_client, ledger):
    """Following meta.next visits every transaction exactly once."""
    seen = walk(api_client, "/api/transactions?n=7", most=30)
    assert len(seen) == 30 == len(set(seen))


def test_cursor_pages_sorted_by_a_column_of_equal_values_walk_everything_once(
    api_client,
):
    """Sorted by status, where over 1,000 rows share one value (DRF's default cap
    on a cursor's count of equal values), the pages still visit each row once."""
    from django.core.management import call_command

    call_command("seed_transactions", count=1500, stdout=io.StringIO())
    seen = walk(api_client, "/api/transactions?n=500&ordering=status", most=1500)
    assert len(seen) == 1500 == len(set(seen))
    statuses = Transaction.objects.values_list("status", flat=True)
    assert max(Counter(statuses).values()) > 1000
    # Seeded rows are in the reason tallies too (the rule performance panel).
    from django.db.models import Sum

    from transactions.models import ReasonTally

    codes = Counter(
        code
        for text in Transaction.objects.values_list("reason_codes", flat=True)
        for code in text.split()
    )
    tallied = dict(ReasonTally.objects.values_list("code").annotate(n=Sum("fired")))
    assert codes and tallied == dict(codes)


def _cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


def test_a_forged_cursor_is_refused_before_any_query(
    api_client, ledger, django_assert_max_num_queries
):
    """An unsigned cursor asking to skip 10^12 equal values (seconds of database
    CPU) is a 404 on its signature; the server's own cursors still page."""
    forged = _cursor("o=1000000000000&p=0.0")
    with django_assert_max_num_queries(1):  # the session user, no page query
        response = api_client.get(
            f"/api/transactions?n=1&ordering=risk_score&cursor={forged}"
        )
    assert response.status_code == 404
    following = api_client.get("/api/transactions?n=2").json()["meta"]["next"]
    assert api_client.get(following).status_code == 200


@pytest.mark.parametrize(
    ("query", "ordering"),
    [
        ("p=abc", ""),
        ("p=abc", "&ordering=amount"),
        ("p=2026-99-99", "&ordering=timestamp"),
        ("o=99999999999999999999", ""),
        ("o=99999999999999999999&p=5", "&ordering=amount"),
        ("p=9999-12-31 23:59:59-05:00", "&ordering=timestamp"),
        ("p=1e999999", "&ordering=amount"),
        ("p=1e999", "&ordering=risk_score"),
        ("p=99999999999999999999999", "&ordering=id"),
        ("p=%00", "&ordering=user_id"),
    ],
)
def test_a_tampered_cursor_is_404_not_500(api_client, ledger, query, ordering):
    """A cursor no page could have made (a position the sorted column cannot
    hold, an offset past the database's integers) is refused, on every database."""
    response = api_client.get(f"/api/transactions?cursor={_cursor(query)}{ordering}")
    assert response.status_code == 404, response.content
    assert "cursor" in response.json()["detail"].lower()


def test_a_cursor_reused_under_another_ordering_is_404_not_500(api_client, ledger):
    """A real next link of the timestamp ordering, with the ordering changed to
    amount, would put a date where an amount goes: it is refused, not a 500."""
    following = api_client.get("/api/transactions?n=2&ordering=timestamp").json()
    link = following["meta"]["next"]
    assert api_client.get(link).status_code == 200
    response = api_client.get(link.replace("ordering=timestamp", "ordering=amount"))
    assert response.status_code == 404
    assert "cursor" in response.json()["detail"].lower()


def test_a_nul_in_an_id_path_is_404(api_client, client, staff_user, ledger):
    """/api/transactions/%00 and the dashboard page answer 404 on every database."""
    assert api_client.get("/api/transactions/%00").status_code == 404
    assert api_client.get("/api/transactions/a%00b/label").status_code == 404
    client.force_login(staff_user)
    assert client.get("/transactions/%00/").status_code == 404


def test_filters(api_client, ledger):
    """Filters by status, user, rule, amount range and time range narrow the list."""

    def ids(query):
        return [i["transaction_id"] for i in api_client.get(query).json()["items"]]

    assert ids("/api/transactions?user_id=b") == ["b-huge"]
    assert ids("/api/transactions?rule=huge_amount") == ["b-huge"]
    assert "b-huge" in ids("/api/transactions?status=fraud&status=suspicious")
    assert ids("/api/transactions?status=legit&n=100").count("b-huge") == 0
    assert ids("/api/transactions?min_amount=30&max_amount=35&ordering=amount") == [
        f"a-{i:02d}" for i in range(20, 26)
    ]
    window = ids(
        "/api/transactions?since=2026-03-01T09:00:00Z&until=2026-03-01T12:00:00Z"
    )
    assert sorted(window) == ["a-00", "a-01", "a-02"]


def test_ordering_by_risk(api_client, ledger):
    """ordering=-risk_score puts the riskiest first."""
    items = api_client.get("/api/transactions?ordering=-risk_score").json()["items"]
    scores = [item["risk_score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    assert items[0]["transaction_id"] == "b-huge"


def test_detail_shows_reasons_with_values(api_client, ledger):
    """GET /api/transactions/<id> returns one verdict with its reasons."""
    body = api_client.get("/api/transactions/b-huge").json()
    codes = {r["code"]: r for r in body["reasons"]}
    assert codes["huge_amount"]["values"]["amount"] == 25000.0
    assert api_client.get("/api/transactions/nope").status_code == 404
    # The browsable API's label page offers the label's own fields.
    page = api_client.get("/api/transactions/b-huge/label", HTTP_ACCEPT="text/html")
    assert 'name="is_fraud"' in page.content.decode()
    # The list's filters and ordering do not apply to one transaction by id.
    other_status = "legit" if body["status"] != "legit" else "fraud"
    filtered = api_client.get("/api/transactions/b-huge", {"status": other_status})
    assert filtered.status_code == 200
    assert api_client.get("/api/transactions/b-huge?ordering=x").status_code == 200


@pytest.mark.parametrize(
    "ordering",
    [
        "status",
        "-status",
        "risk_score",
        "-risk_score",
        "-amount",
        "user_id",
        # One batch: every row has the same scored_at, with microseconds.
        "scored_at",
        "-scored_at",
        "timestamp",
        "-timestamp",
        "-id",
        "id",
    ],
)
def test_previous_pages_walk_back_to_the_start(api_client, ledger, ordering):
    """Following meta.next to the end and then meta.previous back gives the same
    pages in reverse, each row once, also sorted by a column of equal values
    (status, a batch's shared scored_at)."""
    url = f"/api/transactions?n=4&ordering={ordering}"
    pages, body = [], api_client.get(url).json()
    pages.append([item["transaction_id"] for item in body["items"]])
    while body["meta"]["next"]:
        body = api_client.get(body["meta"]["next"]).json()
        pages.append([item["transaction_id"] for item in body["items"]])
        assert len(pages) <= 8, "pages repeat"
    assert len(pages) == 8  # 30 rows, 4 a page: no page repeats, none is lost
    back = []
    while body["meta"]["previous"]:
        body = api_client.get(body["meta"]["previous"]).json()
        back.append([item["transaction_id"] for item in body["items"]])
    assert back == pages[-2::-1]
    assert sorted(i for page in pages for i in page) == sorted(
        Transaction.objects.values_list("transaction_id", flat=True)
    )


def test_a_second_ordering_column_is_refused(api_client, ledger):
    """Pages sort by one column, then by id: `ordering=status,amount` was
    answered sorted by status alone, the amount dropped without a word."""
    refused = api_client.get("/api/transactions?n=3&ordering=status,amount")
    assert refused.status_code == 400
    assert "one column" in refused.json()["ordering"][0]
    export = api_client.get("/api/transactions/export?ordering=-id,amount")
    assert export.status_code == 400
    assert api_client.get("/api/transactions?ordering=-amount").status_code == 200


def test_amounts_sort_and_filter_in_the_base_currency(api_client):
    """1,000,000 IDR (about 61 USD at the seeded rate) ranks below 4,000 USD and
    is outside min_amount=1000, as the rules compare them; the list still shows
    each transaction's own amount and currency."""
    messages = [
        TransactionMessage(
            transaction_id=tid,
            user_id=user,
            amount=Decimal(amount),
            currency=currency,
            timestamp=T0,
        )
        for tid, user, amount, currency in [
            ("idr", "u-idr", "1000000.00", "IDR"),
            ("usd", "u-usd", "4000.00", "USD"),
            ("small", "u-small", "20.00", "USD"),
        ]
    ]
    transaction_batch_score_record(
        messages=messages,
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    body = api_client.get("/api/transactions?ordering=-amount").json()
    assert [item["transaction_id"] for item in body["items"]] == ["usd", "idr", "small"]
    assert body["items"][1]["amount"] == "1000000.00"
    assert body["items"][1]["currency"] == "IDR"
    body = api_client.get("/api/transactions?min_amount=1000").json()
    assert [item["transaction_id"] for item in body["items"]] == ["usd"]
    idr = Transaction.objects.get(transaction_id="idr")
    assert idr.amount_base == pytest.approx(1_000_000 / 16300, abs=0.01)


def test_the_review_queue_filters_by_latest_label(api_client, ledger, staff_user):
    """label=none lists what is left to review; fraud and legit follow the
    latest label (a relabel moves a transaction from one to the other)."""
    from transactions.services import label_create

    first, second = Transaction.objects.order_by("id")[:2]
    label_create(transaction=first, is_fraud=True, created_by=staff_user)
    label_create(transaction=second, is_fraud=True, created_by=staff_user)
    label_create(transaction=second, is_fraud=False, created_by=staff_user)

    def ids(query):
        body = api_client.get(f"/api/transactions?n=50&{query}").json()
        return {item["transaction_id"] for item in body["items"]}

    assert ids("label=fraud") == {first.transaction_id}
    assert ids("label=legit") == {second.transaction_id}
    unlabelled = ids("label=none")
    assert len(unlabelled) == 28 and first.transaction_id not in unlabelled
    response = api_client.get("/api/transactions?label=maybe")
    assert response.status_code == 400 and "label" in response.json()


@pytest.mark.parametrize(
    "path, query",
    [
        ("/api/transactions", "labelled=no"),
        ("/api/transactions", "stauts=fraud"),
        ("/api/transactions", "min_amout=5"),
        ("/api/lists", "vaule=card-1"),
        ("/api/models", "active=1"),
    ],
)
def test_an_unknown_parameter_is_a_400_naming_it(api_client, ledger, path, query):
    """A misspelt filter is refused, not ignored (which would list everything:
    "is this card blocked?" answered with the whole block list)."""
    response = api_client.get(f"{path}?{query}")
    assert response.status_code == 400
    (name,) = response.json()
    assert name == query.split("=")[0]
    assert api_client.get(f"{path}?format=json").status_code == 200


def test_count_takes_yes_or_no_and_refuses_anything_else(api_client, ledger):
    """count=1 counts the matching rows; count=0 does not; count=yes was
    silently ignored and is a 400 naming it."""

    def matching(value: str):
        return api_client.get(f"/api/transactions?count={value}").json()["meta"][
            "matching"
        ]

    assert matching("1") == 30
    assert matching("0") is None
    refused = api_client.get("/api/transactions?count=yes")
    assert refused.status_code == 400 and list(refused.json()) == ["count"]


def _csv(response) -> list[list[str]]:
    import csv

    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_export_is_the_filtered_list_as_csv(api_client, ledger):
    """The export takes the list's filters and ordering and holds every matching
    row (not a page), with the rule codes and the latest label."""
    response = api_client.get(
        "/api/transactions/export", {"user_id": "a", "ordering": "-amount"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment; filename=" in response["Content-Disposition"]
    header, *rows = _csv(response)
    assert header[:3] == ["transaction_id", "user_id", "amount"]
    assert header[-1] == "latest_label"
    assert len(rows) == 29
    assert {row[1] for row in rows} == {"a"}
    amounts = [Decimal(row[2]) for row in rows]
    assert amounts == sorted(amounts, reverse=True)

    api_client.post("/api/transactions/b-huge/label", {"is_fraud": True}, format="json")
    (huge,) = _csv(api_client.get("/api/transactions/export", {"user_id": "b"}))[1:]
    assert huge[0] == "b-huge"
    codes = huge[header.index("reason_codes")]
    assert "huge_amount" in codes.split() and codes == codes.strip()
    assert "No active model" in huge[header.index("notes")]
    assert huge[-1] == "fraud"


def test_export_shows_amounts_with_their_currency_decimals(api_client):
    """The column keeps 3 decimals; the export, as the API, shows each amount in
    its currency's minor unit: 12.50 USD, 100 JPY, 12.345 KWD. A yen amount
    stored with a fraction before currencies had their own keeps it (100.5)."""
    from tests.ledger import transaction_stored

    for tid, amount, currency in (
        ("usd", "12.50", "USD"),
        ("jpy", "100", "JPY"),
        ("kwd", "12.345", "KWD"),
        ("jpy-old", "100.50", "JPY"),
    ):
        transaction_stored(tid, amount=amount, currency=currency)
    header, *rows = _csv(api_client.get("/api/transactions/export", {"ordering": "id"}))
    at, currency_at = header.index("amount"), header.index("currency")
    assert [(row[at], row[currency_at]) for row in rows] == [
        ("12.50", "USD"),
        ("100", "JPY"),
        ("12.345", "KWD"),
        ("100.5", "JPY"),
    ]
    items = api_client.get("/api/transactions", {"ordering": "id"}).json()["items"]
    assert [item["amount"] for item in items] == ["12.50", "100", "12.345", "100.5"]


def test_export_under_asgi_streams_chunks_without_collecting_them(
    api_client, ledger, staff_user, monkeypatch, recwarn
):
    """Under ASGI the export is an asynchronous stream, read chunk by chunk on
    Django's thread, with the same lines as under WSGI; a synchronous one would
    be collected into one list first (Django warns when it does)."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    import transactions.views

    expected = _csv(api_client.get("/api/transactions/export", {"ordering": "id"}))
    client = AsyncClient()
    client.force_login(staff_user)
    # Several chunks of the ledger's rows.
    monkeypatch.setattr(transactions.views, "EXPORT_CHUNK_ROWS", 7)

    async def fetch():
        response = await client.get("/api/transactions/export", {"ordering": "id"})
        return response, [part async for part in response.streaming_content]

    response, parts = async_to_sync(fetch)()
    assert response.status_code == 200 and response.is_async
    assert len(expected) > 20 and len(parts) == 1 + -(-(len(expected) - 1) // 7)
    body = b"".join(parts).decode()
    assert list(csv.reader(io.StringIO(body))) == expected

    # HEAD: streamed, with no length (the test client drops a HEAD's body
    # itself, as servers do).
    response = async_to_sync(client.head)("/api/transactions/export")
    assert response.status_code == 200 and response.streaming
    assert not response.has_header("Content-Length")
    assert not [w for w in recwarn if "consume synchronous" in str(w.message)]


def test_export_quotes_cells_a_spreadsheet_would_run(api_client):
    """A merchant id like =HYPERLINK(...) arrives from outside: in the export it
    starts with an apostrophe, so a spreadsheet shows it instead of running it."""
    message = TransactionMessage(
        transaction_id="formula",
        user_id="@card",
        amount=Decimal("10.00"),
        timestamp=T0,
        merchant_id='=HYPERLINK("http://evil.example","x")',
    )
    transaction_batch_score_record(
        messages=[message],
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    header, row = _csv(api_client.get("/api/transactions/export"))
    assert row[header.index("merchant_id")] == '\'=HYPERLINK("http://evil.example","x")'
    assert row[header.index("user_id")] == "'@card"


def test_the_export_reads_back_in_the_backtest_as_stored(api_client, tmp_path):
    """The backtest reads an export as it is: the ids and merchants quoted
    against spreadsheets (and those that start with the quote itself) come
    back as they were stored."""
    from detection.backtest import backtest_read

    ids = ["-neg", "=sum", "+1", "@at", "'quoted", "''two", "plain"]
    transaction_batch_score_record(
        messages=[
            TransactionMessage(
                transaction_id=tid,
                user_id="@card",
                amount=Decimal("10.00"),
                timestamp=T0 + timedelta(minutes=n),
                merchant_id=f"{tid}-shop",
            )
            for n, tid in enumerate(ids)
        ],
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    response = api_client.get("/api/transactions/export", {"ordering": "id"})
    exported = tmp_path / "export.csv"
    exported.write_bytes(b"".join(response.streaming_content))
    messages, rejected = backtest_read(exported)
    assert rejected == []
    assert [m.transaction_id for m in messages] == ids
    assert [m.merchant_id for m in messages] == [f"{tid}-shop" for tid in ids]
    assert {m.user_id for m in messages} == {"@card"}


def test_export_refuses_more_rows_than_its_limit_and_bad_params(
    api_client, ledger, settings
):
    settings.API_EXPORT_MAX_ROWS = 10
    refused = api_client.get("/api/transactions/export")
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("30 transactions match")
    assert api_client.get("/api/transactions/export", {"user_id": "b"}).status_code == (
        200
    )
    assert api_client.get("/api/transactions/export", {"bogus": "5"}).status_code == (
        400
    )


def test_export_takes_a_list_address_and_answers_head_without_a_body(
    api_client, ledger
):
    """A list's address with /export in it works: its paging parameters are
    ignored (an export holds every matching row). HEAD gets the headers alone
    (a body there is read by a keep-alive client as the next response)."""
    whole = _csv(api_client.get("/api/transactions/export", {"ordering": "id"}))
    paged = _csv(
        api_client.get(
            "/api/transactions/export", {"ordering": "id", "n": "2", "count": "1"}
        )
    )
    assert paged == whole and len(whole) == 31  # the header and 30 rows
    # Taken and ignored, unread: values the list would refuse too.
    for junk in ({"count": "abc"}, {"n": "abc"}, {"cursor": "forged"}):
        response = api_client.get(
            "/api/transactions/export", {"ordering": "id", **junk}
        )
        assert response.status_code == 200, junk
        assert _csv(response) == whole
        assert api_client.get("/api/transactions", junk).status_code in (400, 404)
    head = api_client.head("/api/transactions/export", {"user_id": "b"})
    assert head.status_code == 200
    assert head["Content-Type"].startswith("text/csv")
    assert "attachment" in head["Content-Disposition"]
    # As a GET's: streamed, of a length not known until sent (not "0").
    assert not head.has_header("Content-Length")
    assert b"".join(head.streaming_content) == b""
    assert api_client.head("/api/transactions/export", {"x": "1"}).status_code == 400


@pytest.mark.parametrize(
    "query, field, says",
    [
        ({"min_amount": "100", "max_amount": "10"}, "min_amount", "range is empty"),
        ({"min_amount": "-5"}, "min_amount", "greater than or equal to 0"),
        (
            {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
            "since",
            "range is empty",
        ),
        (
            {
                "scored_since": "2026-03-02T00:00:00Z",
                "scored_until": "2026-03-02T00:00:00Z",
            },
            "scored_since",
            "range is empty",
        ),
    ],
)
def test_a_backwards_range_is_a_400_naming_it(api_client, ledger, query, field, says):
    response = api_client.get("/api/transactions", query)
    assert response.status_code == 400
    assert says in response.json()[field][0]


def test_scored_time_filters_select_by_when_the_verdict_was_stored(api_client, ledger):
    """Event times of the ledger are in March; scored_since/until go by scored_at
    (now), as "the last hour of the stream" needs."""
    from django.utils import timezone

    now = timezone.now()
    recent = api_client.get(
        "/api/transactions",
        {"scored_since": (now - timedelta(hours=1)).isoformat(), "n": "50"},
    )
    assert recent.status_code == 200
    assert len(recent.json()["items"]) == 30
    future = api_client.get(
        "/api/transactions", {"scored_since": (now + timedelta(hours=1)).isoformat()}
    )
    assert future.json()["items"] == []


def test_label_history_is_readable_newest_first(api_client, ledger):
    for is_fraud, note in ((True, "chargeback"), (False, "customer confirmed")):
        posted = api_client.post(
            "/api/transactions/b-huge/label",
            {"is_fraud": is_fraud, "note": note},
            format="json",
        )
        assert posted.status_code == 201
    history = api_client.get("/api/transactions/b-huge/labels")
    assert history.status_code == 200
    assert [(item["is_fraud"], item["note"]) for item in history.json()] == [
        (False, "customer confirmed"),
        (True, "chargeback"),
    ]
    assert api_client.get("/api/transactions/nope/labels").status_code == 404
    # The list's filters do not apply here: a 400 naming the parameter, not
    # the history as if filtered.
    filtered = api_client.get("/api/transactions/b-huge/labels", {"status": "legit"})
    assert filtered.status_code == 400
    assert "Unknown parameter" in filtered.json()["status"][0]
    as_json = api_client.get("/api/transactions/b-huge/labels?format=json")
    assert as_json.status_code == 200


def test_merchant_and_country_filters(api_client):
    """Pivot from a merchant block or a merchant_fraud reason to its payments."""
    messages = [
        TransactionMessage(
            transaction_id=f"mc-{n}",
            user_id=f"u-{n}",
            amount=Decimal("10.00"),
            timestamp=T0 + timedelta(minutes=n),
            merchant_id=merchant,
            country=country,
        )
        for n, (merchant, country) in enumerate(
            [("m-a", "FR"), ("m-a", "DE"), ("m-b", "FR")]
        )
    ]
    transaction_batch_score_record(
        messages=messages,
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )

    def ids(**query):
        body = api_client.get("/api/transactions", query).json()
        return sorted(item["transaction_id"] for item in body["items"])

    assert ids(merchant_id="m-a") == ["mc-0", "mc-1"]
    assert ids(country="fr") == ["mc-0", "mc-2"]
    assert ids(merchant_id="m-a", country="FR") == ["mc-0"]


def test_an_export_backtests_with_its_labels(api_client, ledger, staff_user, tmp_path):
    """The export carries coordinates and labels, and `backtest` reads it as it
    is: the labelled rows (latest_label) are its ground truth."""
    from django.core.management import call_command

    from transactions.services import label_create

    label_create(
        transaction=Transaction.objects.get(transaction_id="b-huge"), is_fraud=True
    )
    label_create(
        transaction=Transaction.objects.get(transaction_id="a-28"), is_fraud=False
    )
    rows = _csv(api_client.get("/api/transactions/export"))
    header = rows[0]
    assert {"latitude", "longitude", "latest_label"} <= set(header)
    source = tmp_path / "export.csv"
    with source.open("w", newline="") as handle:
        import csv

        csv.writer(handle).writerows(rows)
    output = tmp_path / "out.jsonl"
    out = io.StringIO()
    call_command(
        "backtest", str(source), "--train-until", "2000-01-01T00:00:00Z",
        "--output", str(output), stdout=out,
    )  # fmt: skip
    # The two labelled rows, the 28 others as legitimate (dated before now:
    # with the default label maturity of 0, their chargebacks are in).
    assert "Outcomes: 2 labelled, 28 unlabelled and old enough to count as " in (
        out.getvalue()
    )
    assert "0 pending; 1 fraud;" in out.getvalue()


def test_inputs_the_api_fuzzing_found_answer_as_documented(api_client, ledger):
    """Found by schemathesis against the OpenAPI schema: a form without
    is_fraud is a 400 (DRF read it as false: "legitimate"); more form fields than
    Django allows is a JSON 400; an empty cursor or status is the first page,
    unfiltered; the export takes the browsable API's `format`; an unrouted /api/
    path is a JSON 404; the id "export" is refused, as it could not be read back."""
    url = "/api/transactions/b-huge/label"
    form = api_client.post(url, {"note": "x"}, format="multipart")
    assert form.status_code == 400
    assert "is_fraud" in form.json()
    encoded = api_client.post(
        url, "note=x", content_type="application/x-www-form-urlencoded"
    )
    assert encoded.status_code == 400 and "is_fraud" in encoded.json()
    assert not Label.objects.exists()

    many = "&".join(f"f{i}=1" for i in range(1500))
    crowded = api_client.post(
        "/api/validate-transaction",
        many,
        content_type="application/x-www-form-urlencoded",
    )
    assert crowded.status_code == 400
    assert crowded["Content-Type"].startswith("application/json")

    for query in ("?cursor=", "?status=", "?status=&user_id=a"):
        assert api_client.get("/api/transactions" + query).status_code == 200, query
    assert api_client.get("/api/transactions/export?format=api").status_code == 200

    missing = api_client.get("/api/nope/")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not found."}

    reserved = api_client.post(
        "/api/validate-transaction",
        {"transaction_id": "export", "user_id": "u", "amount": "5"},
        format="json",
    )
    assert reserved.status_code == 400
    assert "reserved" in reserved.json()["transaction_id"][0]

    # A list entry's blank expiry (a form's empty field) means until removed.
    entry = {"kind": "card", "value": "a", "action": "block", "note": "stolen"}
    added = api_client.post("/api/lists", {**entry, "expires_at": ""}, format="json")
    assert added.status_code == 201, added.content
    assert added.json()["expires_at"] is None


def test_count_gives_the_size_of_what_the_filters_select(
    api_client, ledger, monkeypatch
):
    """With count=1 the page's meta says how many rows the filters select (a
    review queue's size), capped; without it, null (no count is paid for)."""
    body = api_client.get("/api/transactions", {"n": 5, "count": 1, "user_id": "a"})
    meta = body.json()["meta"]
    assert (meta["count"], meta["matching"], meta["matching_capped"]) == (5, 29, False)
    plain = api_client.get("/api/transactions", {"n": 5}).json()["meta"]
    assert plain["matching"] is None

    monkeypatch.setattr("transactions.pagination.MATCHING_COUNT_CAP", 10)
    capped = api_client.get("/api/transactions", {"count": 1}).json()["meta"]
    assert (capped["matching"], capped["matching_capped"]) == (10, True)


def test_request_errors_answer_the_same_with_debug_on(api_client, client, settings):
    """`make run` runs with DEBUG on, where Django's debug pages answered a
    query of over 1,000 parameters with a bare 500 (the page read the query
    again) and an unrouted /api/ path with the HTML list of every URL
    pattern: both answer as with DEBUG off."""
    settings.DEBUG = True
    many = "&".join(f"f{i}=1" for i in range(1500))
    crowded = api_client.get(f"/api/transactions?{many}")
    assert crowded.status_code == 400
    assert "exceeded" in crowded.json()["detail"]
    assert client.get(f"/accounts/login/?{many}").status_code == 400
    missing = api_client.get("/api/nope/")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not found."}
    # A Host not allowed: a plain 400, not the debug page's traceback.
    for path in ("/api/", "/accounts/login/"):
        foreign = client.get(path, headers={"host": "evil.example"})
        assert foreign.status_code == 400
        assert b"Traceback" not in foreign.content
        assert b"evil.example" in foreign.content


@pytest.mark.parametrize("path", ["/api/transactions", "/api/lists"])
def test_an_unknown_format_is_a_400_naming_the_known_ones(api_client, path):
    """`?format=csv` was a 404 "Not found.", as if the address were wrong."""
    response = api_client.get(path, {"format": "csv"})
    assert response.status_code == 400
    assert response.json() == {"format": ["Unknown format 'csv'. Known: json, api."]}
    assert api_client.get(path, {"format": "json"}).status_code == 200


def test_the_export_answers_format_csv_and_refuses_a_format_it_cannot_give(
    api_client, ledger
):
    """`?format=csv` was a 400 ("Known: json, api") and `?format=json` answered
    CSV. The export answers CSV with format csv, api (the browsable API's links
    carry it) or none, and for `Accept: text/csv`; `json`, or any other, is a
    400 naming the ones it takes. Its errors stay JSON."""
    plain = _csv(api_client.get("/api/transactions/export", {"ordering": "id"}))
    for query in ({"format": "csv"}, {"format": "api"}):
        response = api_client.get(
            "/api/transactions/export", {"ordering": "id", **query}
        )
        assert response.status_code == 200, query
        assert response["Content-Type"].startswith("text/csv")
        assert _csv(response) == plain
    accept_csv = api_client.get(
        "/api/transactions/export", {"ordering": "id"}, HTTP_ACCEPT="text/csv"
    )
    assert accept_csv.status_code == 200
    assert _csv(accept_csv) == plain

    for format in ("json", "xml"):
        refused = api_client.get("/api/transactions/export", {"format": format})
        assert refused.status_code == 400, format
        assert refused.json() == {
            "format": [
                f"Unknown format {format!r}: the export answers CSV. "
                "Known: csv, api (or none)."
            ]
        }
    # A bad filter with format=csv, or asking text/csv: a JSON 400, not a 406.
    for headers in ({}, {"HTTP_ACCEPT": "text/csv"}):
        bad = api_client.get(
            "/api/transactions/export", {"format": "csv", "since": "x"}, **headers
        )
        assert bad.status_code == 400, headers
        assert bad["Content-Type"].startswith("application/json")
        assert "since" in bad.json()
