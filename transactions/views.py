"""Read endpoints of the ledger: the transactions list and one transaction."""

import csv
import itertools
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Prefetch
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from detection.services import transaction_label
from fraudsite.negotiation import CsvExportNegotiation
from fraudsite.openapi import SIGNED_IN, SIGNED_IN_WRITE, api_operation, request_body
from fraudsite.permissions import permission_required
from transactions.cells import cell_quote
from transactions.filters import (
    StrictOrderingFilter,
    TransactionFilter,
    query_params_check,
)
from transactions.messages import ID_PATH_REGEX, amount_text
from transactions.models import Label, Transaction
from transactions.pagination import (
    DEFAULT_PAGE_SIZE,
    MATCHING_COUNT_CAP,
    TransactionCursorPagination,
)
from transactions.serializers import (
    LabelCreateSerializer,
    LabelSerializer,
    TransactionSerializer,
)


def _params_check(request, extra: set[str]) -> None:
    """Refuse a query parameter that is neither a filter, `ordering` nor `extra`."""
    query_params_check(request, {*TransactionFilter.base_filters, "ordering", *extra})


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


class _Echo:
    """A file-like whose write returns the line, for csv.writer in a generator."""

    def write(self, value: str) -> str:
        return value


_AMOUNT_AT = EXPORT_COLUMNS.index("amount")
_CURRENCY_AT = EXPORT_COLUMNS.index("currency")


def _export_cells(row: tuple) -> list:
    *values, label_fraud = row
    # With its currency's decimals (12.50 USD, 100 JPY), not the column's 3.
    values[_AMOUNT_AT] = amount_text(values[_AMOUNT_AT], values[_CURRENCY_AT])
    cells = []
    for value in values:
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, list):  # notes
            value = "; ".join(str(item) for item in value)
        if isinstance(value, str):
            # reason_codes are stored space-delimited.
            value = cell_quote(value.strip())
        cells.append(value)
    cells.append("" if label_fraud is None else ("fraud" if label_fraud else "legit"))
    return cells


# The list's own errors, beside SIGNED_IN's.
_LIST_ERRORS = {
    400: "A bad filter, ordering or page size, or an unknown parameter, named.",
    404: "A cursor that is not valid (altered, or made for another ordering).",
}
_NOT_FOUND = {404: "No transaction has this transaction_id."}


@extend_schema_view(
    list=api_operation(
        errors=SIGNED_IN,
        error_descriptions=_LIST_ERRORS,
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
        responses={200: TransactionSerializer(many=True)},
    ),
    retrieve=api_operation(
        responses={200: TransactionSerializer},
        errors=SIGNED_IN,
        error_descriptions=_NOT_FOUND,
        description=(
            "One stored verdict by its transaction id: the payment, status, risk, "
            "reasons with their values, notes and labels (newest first)."
        ),
        filters=False,
    ),
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
        count = request.query_params.get("count")
        if count is not None and count not in ("0", "1", "true", "false"):
            raise ValidationError(
                {"count": ["Must be 1 (or true) to count, 0 not to."]}
            )
        return super().list(request, *args, **kwargs)

    @api_operation(
        # The list's filters and ordering, discovered from its filter backends.
        filters=True,
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description=f"One line per transaction: {', '.join(EXPORT_COLUMNS)}.",
            ),
        },
        parameters=[
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                enum=["csv", "api"],
                description=(
                    "Optional: the export answers CSV either way. `api` is the "
                    "browsable API's (its links carry it); another is a 400."
                ),
            ),
        ],
        errors=SIGNED_IN,
        error_descriptions={
            400: "A bad filter or ordering, an unknown parameter or `format`, or "
            "more rows than API_EXPORT_MAX_ROWS (`detail`)."
        },
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="export",
        content_negotiation_class=CsvExportNegotiation,
    )
    def export(self, request):
        """Download the transactions the list's filters select, as CSV.

        The same filters and ordering as the list, every matching row (up to
        API_EXPORT_MAX_ROWS; more is a 400 asking for narrower filters), with
        the rule codes that fired and the latest label. Text cells that a
        spreadsheet would run as a formula (=, +, -, @), or that start with an
        apostrophe, get a leading apostrophe (`transactions.cells`; the
        backtest takes it off again). Rows are read from the database and sent in chunks
        of EXPORT_CHUNK_ROWS, so an export never sits whole in memory: under ASGI
        (daphne, runserver) as an asynchronous stream, each chunk read on the
        thread Django runs this view on (Django would otherwise collect a
        synchronous stream into one list before sending it), under WSGI as a
        synchronous one.
        """
        # `format`: csv, or api (the browsable API's links carry it), checked by
        # CsvExportNegotiation; the list's paging parameters are taken and
        # ignored, unread (an export holds every matching row), so a list's
        # address works with /export in it.
        _params_check(request, {"format", "n", "cursor", "count"})
        queryset = self.filter_queryset(Transaction.objects.with_latest_label())
        maximum = settings.API_EXPORT_MAX_ROWS
        matching = queryset.count()
        if matching > maximum:
            # `detail` a string, as in every other error that has one.
            raise ValidationError(
                {
                    "detail": f"{matching:,} transactions match; an export holds at "
                    f"most {maximum:,} (API_EXPORT_MAX_ROWS). Narrow the filters, "
                    "e.g. scored_since/scored_until or since/until."
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

        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        disposition = f'attachment; filename="transactions-{stamp}.csv"'

        async def nothing_async():
            return
            yield

        asgi = isinstance(request._request, ASGIRequest)
        if request.method == "HEAD":
            # A GET's headers (streamed: no Content-Length, where an empty
            # response would say 0) and no body: a body after HEAD's headers
            # (the ASGI server sends a stream as it is) would be read as the
            # next response.
            body = nothing_async() if asgi else iter(())
        else:
            body = lines_async() if asgi else lines()
        response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = disposition
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

    @api_operation(
        request=request_body(LabelCreateSerializer),
        responses={201: LabelSerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions={
            **_NOT_FOUND,
            403: "Needs the 'add label' permission (or, signed in by session, "
            "the CSRF token).",
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="label",
        permission_classes=permission_required("transactions.add_label"),
        filter_backends=[],
        # The browsable API's form shows the label's fields, not a verdict's.
        serializer_class=LabelCreateSerializer,
    )
    def label(self, request, transaction_id=None):
        """Record the analyst's label (latest wins); the verdict stays unchanged.

        Marking a fraud verdict legitimate also teaches the card's profile, so
        that the cardholder's next purchases are compared with it.
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

    @api_operation(
        responses={200: LabelSerializer(many=True)},
        errors=SIGNED_IN,
        error_descriptions={**_NOT_FOUND, 400: "An unknown query parameter, named."},
        filters=False,
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="labels",
        filter_backends=[],
        pagination_class=None,
    )
    def labels(self, request, transaction_id=None):
        """Return every label of the transaction, newest first (who, when, why)."""
        query_params_check(request, {"format"})
        transaction = self.get_object()
        labels = (
            Label.objects.filter(transaction=transaction)
            .latest_first()
            .select_related("created_by")
        )
        return Response(LabelSerializer(labels, many=True).data)
