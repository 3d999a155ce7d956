"""Read endpoints of the ledger: the transactions list and one transaction."""

from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.signing import BadSignature, Signer
from django.db.models import Prefetch
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
    """OrderingFilter that answers an unknown sort field with a 400, not silence."""

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


class TransactionCursorPagination(CursorPagination):
    """Cursor pages (stable under inserts, cheap at any depth) sized by `n`."""

    ordering = "-id"
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "n"
    # Sorted by a column with many equal values (status, risk_score 0), a cursor
    # is the last value plus how many rows of that value were already shown.
    # DRF caps that count at 1,000 by default, and beyond it pages repeat forever.
    offset_cutoff = None

    def get_ordering(self, request, queryset, view):
        """Return the requested ordering with `id` last, so equal values keep
        one order from page to page."""
        ordering = super().get_ordering(request, queryset, view)
        if any(field.lstrip("-") == "id" for field in ordering):
            return ordering
        return (*ordering, "-id")

    # Cursors are signed, for the ordering they were made for: a forged one could
    # ask the database to skip 10^12 equal values (seconds of CPU per request),
    # and a position reused under another ordering may not fit the new column
    # (a date where an amount goes), which would fail as a 500.
    def _signer(self) -> Signer:
        return Signer(salt=f"transactions.cursor:{','.join(self.ordering)}")

    def encode_cursor(self, cursor):
        """Return the page URL with DRF's cursor, signed."""
        url = super().encode_cursor(cursor)
        value = parse_qs(urlsplit(url).query)[self.cursor_query_param][0]
        signed = self._signer().sign(value)
        return replace_query_param(url, self.cursor_query_param, signed)

    def decode_cursor(self, request):
        """Return the cursor; one that no page of this ordering made is a 404."""
        signed = request.query_params.get(self.cursor_query_param)
        if signed is None:
            return None
        try:
            value = self._signer().unsign(signed)
        except BadSignature:
            raise NotFound(self.invalid_cursor_message) from None
        params = request.query_params.copy()
        params[self.cursor_query_param] = value
        return super().decode_cursor(SimpleNamespace(query_params=params))

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
            )
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
