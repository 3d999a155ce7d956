"""Read endpoints of the ledger: the transactions list and one transaction."""

import csv
import itertools
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.handlers.asgi import ASGIRequest
from django.core.signing import BadSignature, Signer
from django.db.models import Prefetch, Q
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import filters, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from detection.services import transaction_label
from fraudsite.permissions import permission_required
from transactions.filters import TransactionFilter
from transactions.messages import ID_PATH_REGEX
from transactions.models import Label, Transaction
from transactions.selectors import verdict_totals
from transactions.serializers import (
    LabelCreateSerializer,
    LabelSerializer,
    TransactionSerializer,
)

DEFAULT_PAGE_SIZE = 20


class StrictOrderingFilter(filters.OrderingFilter):
    """OrderingFilter that answers an unknown sort field with a 400, not silence.

    `amount` sorts by the amount in the base currency (`amount_base`), as the
    rules compare amounts: 1,000,000 IDR is about 60 USD, not the largest.
    """

    aliases = {"amount": "amount_base"}

    def get_ordering(self, request, queryset, view):
        """Return the valid ordering, with aliases resolved to their columns."""
        ordering = super().get_ordering(request, queryset, view)
        if not ordering:
            return ordering
        return [
            ("-" if name.startswith("-") else "")
            + self.aliases.get(name.lstrip("-"), name.lstrip("-"))
            for name in ordering
        ]

    def remove_invalid_fields(self, queryset, fields, view, request):
        """Return the valid fields; raise ValidationError naming the allowed ones."""
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        if len(valid) != len([field for field in fields if field]):
            allowed = [
                name
                for name, _label in self.get_valid_fields(
                    queryset, view, {"request": request}
                )
            ]
            raise ValidationError(
                {
                    "ordering": [
                        f"Sort by one of: {', '.join(allowed)} (- for descending)."
                    ]
                }
            )
        return valid


def _field(name: str):
    return Transaction._meta.get_field(name.lstrip("-"))


def _cursor_value(value):
    """Return a sort value as JSON that gives it back exactly (`to_python`).

    Datetimes keep their microseconds (DjangoJSONEncoder cuts them to
    milliseconds, and rows scored in one batch share one `scored_at`: the next
    page would start inside them); Decimals go as text; floats as JSON numbers,
    which round-trip exactly.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _flip(name: str) -> str:
    return name[1:] if name.startswith("-") else f"-{name}"


def _after(order: Sequence[str], key: Sequence) -> Q:
    """Return the condition for rows strictly after `key` in `order`.

    For (a, -id) and key (v, i): a > v, or a = v and id < i.
    """
    condition = Q()
    equal = Q()
    for name, value in zip(order, key, strict=True):
        column = name.lstrip("-")
        beyond = Q(**{f"{column}__{'lt' if name.startswith('-') else 'gt'}": value})
        condition |= equal & beyond
        equal &= Q(**{column: value})
    return condition


# Most rows `count=1` counts: "10,000+" is size enough for a review queue.
MATCHING_COUNT_CAP = 10_000


class TransactionCursorPagination(CursorPagination):
    """Keyset pages sized by `n`: stable under inserts, cheap at any depth.

    A cursor holds the sort value and the id of the row a page ended (or, going
    back, began) at, and the next page is the rows strictly after that pair in
    (sort column, id) order: `WHERE col > v OR (col = v AND id < i)`. DRF's own
    cursor keeps only the sort value and counts the equal values already shown,
    which pages back wrongly through a column of equal values (`ordering=-status`
    went back to the wrong rows, or none) and lets a cursor ask to skip any
    number of rows.
    """

    ordering = "-id"
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "n"

    def get_ordering(self, request, queryset, view):
        """Return the requested column with `id` after it, so equal values keep
        one order from page to page. Only the first column requested counts
        (the id is unique: nothing after it could matter)."""
        first = super().get_ordering(request, queryset, view)[0]
        if first.lstrip("-") == "id":
            return (first,)
        return (first, "-id")

    # Cursors are signed, for the ordering they were made for: a position made
    # for one column (a date) would not fit another (an amount) and fail as a
    # 500, and a forged one is refused before any query.
    def _signer(self) -> Signer:
        return Signer(salt=f"transactions.cursor:{','.join(self.ordering)}")

    def paginate_queryset(self, queryset, request, view=None):
        """Return the page of rows after (or, going back, before) the cursor.

        With `count=1`, also count the rows the filters select, up to
        MATCHING_COUNT_CAP (a review queue's size; counting a million rows
        for every page would cost more than the page).
        """
        self.matching = None
        if request.query_params.get("count") in ("1", "true"):
            self.matching = queryset.order_by()[: MATCHING_COUNT_CAP + 1].count()
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        self.cursor = self._cursor_read(request)
        reverse = bool(self.cursor and self.cursor["reverse"])
        order = [_flip(f) for f in self.ordering] if reverse else list(self.ordering)
        queryset = queryset.order_by(*order)
        if self.cursor is not None:
            queryset = queryset.filter(_after(order, self.cursor["key"]))
        rows = list(queryset[: self.page_size + 1])
        more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if reverse:
            rows.reverse()
            self.has_previous, self.has_next = more, True
        else:
            self.has_previous, self.has_next = self.cursor is not None, more
        self.page = rows
        return rows

    def _cursor_read(self, request) -> dict | None:
        signed = request.query_params.get(self.cursor_query_param)
        if not signed:
            # Absent or empty (a form's blank field): the first page.
            return None
        try:
            data = json.loads(self._signer().unsign(signed))
            key = [
                _field(name).to_python(value)
                for name, value in zip(self.ordering, data["k"], strict=True)
            ]
            return {"key": key, "reverse": bool(data["r"])}
        except (BadSignature, KeyError, TypeError, ValueError, DjangoValidationError):
            raise NotFound(self.invalid_cursor_message) from None

    def _link(self, row, *, reverse: bool) -> str:
        key = [_cursor_value(getattr(row, name.lstrip("-"))) for name in self.ordering]
        payload = json.dumps({"k": key, "r": int(reverse)})
        return replace_query_param(
            self.base_url, self.cursor_query_param, self._signer().sign(payload)
        )

    def get_next_link(self):
        """Return the URL of the page after this one, or None at the end."""
        if not self.has_next or not self.page:
            return None
        return self._link(self.page[-1], reverse=False)

    def get_previous_link(self):
        """Return the URL of the page before this one, or None at the start."""
        if not self.has_previous or not self.page:
            return None
        return self._link(self.page[0], reverse=True)

    def get_page_size(self, request):
        """Return `n`, refusing values outside 1..API_TRANSACTIONS_MAX_PAGE_SIZE."""
        raw = request.query_params.get("n")
        if raw in (None, ""):
            return self.page_size
        maximum = settings.API_TRANSACTIONS_MAX_PAGE_SIZE
        try:
            size = int(raw)
        except ValueError:
            raise ValidationError({"n": ["A whole number is required."]}) from None
        if not 1 <= size <= maximum:
            raise ValidationError({"n": [f"Must be between 1 and {maximum}."]})
        return size

    def get_paginated_response(self, data):
        """Return the predecessor's {items, meta} shape, with cursor links."""
        return Response(
            {
                "items": data,
                "meta": {
                    **verdict_totals(),
                    "count": len(data),
                    # With count=1: rows the filters select (capped; see
                    # paginate_queryset), else null.
                    "matching": (
                        None
                        if self.matching is None
                        else min(self.matching, MATCHING_COUNT_CAP)
                    ),
                    "matching_capped": bool(
                        self.matching and self.matching > MATCHING_COUNT_CAP
                    ),
                    "next": self.get_next_link(),
                    "previous": self.get_previous_link(),
                },
            }
        )

    def get_paginated_response_schema(self, schema):
        """Describe the {items, meta} envelope in the OpenAPI schema."""
        return {
            "type": "object",
            "properties": {
                "items": schema,
                "meta": {"type": "object", "additionalProperties": True},
            },
        }


def _params_check(request, extra: set[str]) -> None:
    """Refuse a query parameter that is neither a filter, `ordering` nor `extra`."""
    known = {*TransactionFilter.base_filters, "ordering", *extra}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ValidationError(
            {
                name: [f"Unknown parameter. Known: {', '.join(sorted(known))}."]
                for name in unknown
            }
        )


# Rows read from the database, and sent, at a time.
EXPORT_CHUNK_ROWS = 2000

EXPORT_COLUMNS = (
    "transaction_id",
    "user_id",
    "amount",
    "currency",
    "amount_base",
    "timestamp",
    "merchant_id",
    "merchant_category",
    "channel",
    "location",
    "country",
    "latitude",
    "longitude",
    "status",
    "risk_score",
    "reason_codes",
    "notes",
    "model_score",
    "model_version",
    "received_at",
    "scored_at",
    "latest_label",
)
# Cells a spreadsheet would evaluate as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """A file-like whose write returns the line, for csv.writer in a generator."""

    def write(self, value: str) -> str:
        return value


def _export_cells(row: tuple) -> list:
    *values, label_fraud = row
    cells = []
    for value in values:
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, list):  # notes
            value = "; ".join(str(item) for item in value)
        if isinstance(value, str):
            value = value.strip()  # reason_codes are stored space-delimited
            if value.startswith(_FORMULA_START):
                value = "'" + value
        cells.append(value)
    cells.append("" if label_fraud is None else ("fraud" if label_fraud else "legit"))
    return cells


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "n",
                OpenApiTypes.INT,
                description=(
                    f"Page size, 1..API_TRANSACTIONS_MAX_PAGE_SIZE (setting, "
                    f"default 500); default {DEFAULT_PAGE_SIZE}. Outside: a 400."
                ),
            ),
            OpenApiParameter(
                "count",
                OpenApiTypes.BOOL,
                description=(
                    "1: also count the rows the filters select, in meta.matching "
                    f"(up to {MATCHING_COUNT_CAP:,}; meta.matching_capped says "
                    "when there are more)."
                ),
            ),
        ],
        responses={
            200: TransactionSerializer(many=True),
            400: OpenApiResponse(
                description="A bad filter, ordering or page size, named."
            ),
        },
    )
)
class TransactionViewSet(viewsets.ReadOnlyModelViewSet):
    """Stored verdicts: newest first, filterable, with cursor pagination."""

    queryset = Transaction.objects.all()
    serializer_class = TransactionSerializer
    lookup_field = "transaction_id"
    lookup_value_regex = ID_PATH_REGEX
    pagination_class = TransactionCursorPagination
    filterset_class = TransactionFilter
    filter_backends = [
        *viewsets.ReadOnlyModelViewSet.filter_backends,
        StrictOrderingFilter,
    ]
    # Every column of the dashboard table sorts; only newest-first (-id) is the
    # indexed fast path that the 1M-row budget covers.
    ordering_fields = [
        "id",
        "transaction_id",
        "user_id",
        "timestamp",
        "amount",
        "location",
        "status",
        "risk_score",
        "scored_at",
    ]
    ordering = ["-id"]

    def list(self, request, *args, **kwargs):
        """Return a page of verdicts; an unknown query parameter is a 400 (a
        misspelt filter would otherwise return everything as if it applied)."""
        _params_check(request, {"n", "cursor", "format", "count"})
        return super().list(request, *args, **kwargs)

    @extend_schema(
        # The list's filters and ordering, discovered from its filter backends.
        filters=True,
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description=f"One line per transaction: {', '.join(EXPORT_COLUMNS)}.",
            ),
            400: OpenApiResponse(
                description="A bad filter, or more rows than API_EXPORT_MAX_ROWS."
            ),
        },
    )
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request):
        """Download the transactions the list's filters select, as CSV.

        The same filters and ordering as the list, every matching row (up to
        API_EXPORT_MAX_ROWS; more is a 400 asking for narrower filters), with
        the rule codes that fired and the latest label. Text cells that a
        spreadsheet would run as a formula (=, +, -, @) are quoted with a
        leading apostrophe. Rows are read from the database and sent in chunks
        of EXPORT_CHUNK_ROWS, so an export never sits whole in memory: under ASGI
        (daphne, runserver) as an asynchronous stream, each chunk read on the
        thread Django runs this view on (Django would otherwise collect a
        synchronous stream into one list before sending it), under WSGI as a
        synchronous one.
        """
        # `format` as on the list: the browsable API's links carry it.
        _params_check(request, {"format"})
        queryset = self.filter_queryset(Transaction.objects.with_latest_label())
        maximum = settings.API_EXPORT_MAX_ROWS
        matching = queryset.count()
        if matching > maximum:
            raise ValidationError(
                {
                    "detail": [
                        f"{matching:,} transactions match; an export holds at most "
                        f"{maximum:,} (API_EXPORT_MAX_ROWS). Narrow the filters, "
                        "e.g. scored_since/scored_until or since/until."
                    ]
                }
            )
        rows = queryset.values_list(
            *EXPORT_COLUMNS[:-1], "latest_label_fraud"
        ).iterator(chunk_size=EXPORT_CHUNK_ROWS)
        writer = csv.writer(_Echo())

        def chunk() -> str:
            return "".join(
                writer.writerow(_export_cells(row))
                for row in itertools.islice(rows, EXPORT_CHUNK_ROWS)
            )

        def lines():
            yield writer.writerow(EXPORT_COLUMNS)
            while text := chunk():
                yield text

        async def lines_async():
            yield writer.writerow(EXPORT_COLUMNS)
            while text := await sync_to_async(chunk)():
                yield text

        asgi = isinstance(request._request, ASGIRequest)
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = StreamingHttpResponse(
            lines_async() if asgi else lines(),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = (
            f'attachment; filename="transactions-{stamp}.csv"'
        )
        return response

    def filter_queryset(self, queryset):
        """Apply the list's filters and ordering to lists, not to one transaction
        found by its id (`?status=fraud` on a legit one is not a 404)."""
        if self.action == "retrieve":
            return queryset
        return super().filter_queryset(queryset)

    def get_queryset(self):
        """Return transactions with their labels prefetched, newest label first."""
        # Prefetching runs after pagination slices the page: one query per page.
        return Transaction.objects.prefetch_related(
            Prefetch(
                "labels",
                queryset=Label.objects.latest_first().select_related("created_by"),
                to_attr="labels_latest_first",
            )
        )

    @extend_schema(
        request=LabelCreateSerializer,
        responses={
            201: LabelSerializer,
            400: OpenApiResponse(description="Field errors, by field."),
            403: OpenApiResponse(description="Needs 'add label'."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="label",
        permission_classes=permission_required("transactions.add_label"),
        filter_backends=[],
    )
    def label(self, request, transaction_id=None):
        """Record the analyst's label (latest wins); the verdict stays unchanged.

        Marking a fraud verdict legitimate teaches the card's profile
        (`detection.services.transaction_label`).
        """
        transaction = self.get_object()
        serializer = LabelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        label = transaction_label(
            record=transaction,
            is_fraud=serializer.validated_data["is_fraud"],
            note=serializer.validated_data["note"],
            created_by=request.user,
        )
        return Response(LabelSerializer(label).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: LabelSerializer(many=True)}, filters=False)
    @action(
        detail=True,
        methods=["get"],
        url_path="labels",
        filter_backends=[],
        pagination_class=None,
    )
    def labels(self, request, transaction_id=None):
        """Return every label of the transaction, newest first (who, when, why)."""
        transaction = self.get_object()
        labels = (
            Label.objects.filter(transaction=transaction)
            .latest_first()
            .select_related("created_by")
        )
        return Response(LabelSerializer(labels, many=True).data)
