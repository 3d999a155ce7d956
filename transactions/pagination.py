"""Keyset pagination of the ledger: stable under inserts, cheap at any depth."""

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.signing import BadSignature, Signer
from django.db.models import Q
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from transactions.models import Transaction
from transactions.selectors import verdict_totals

DEFAULT_PAGE_SIZE = 20


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
        one order from page to page (StrictOrderingFilter refuses a second
        column with a 400)."""
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
        count = {"type": "integer", "minimum": 0}
        link = {"type": "string", "format": "uri", "nullable": True}
        by_status = {
            "type": "object",
            "description": "Stored verdicts by status (all of them, not filtered).",
            "properties": dict.fromkeys(Transaction.Status.values, count),
            "required": list(Transaction.Status.values),
        }
        meta = {
            "type": "object",
            "description": "About the page and the ledger.",
            "properties": {
                "total": {
                    **count,
                    "description": "Stored verdicts (all of them, not filtered).",
                },
                "by_status": by_status,
                "flagged": {**count, "description": "Suspicious and fraud verdicts."},
                "flagged_rate": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "flagged / total (0 when there are none).",
                },
                "count": {**count, "description": "Items on this page."},
                "matching": {
                    **count,
                    "nullable": True,
                    "description": "With count=1: the rows the filters select, "
                    f"up to {MATCHING_COUNT_CAP:,}; else null.",
                },
                "matching_capped": {
                    "type": "boolean",
                    "description": "Whether more rows than `matching` match.",
                },
                "next": {**link, "description": "The next page, or null at the end."},
                "previous": {
                    **link,
                    "description": "The page before, or null on the first.",
                },
            },
        }
        meta["required"] = list(meta["properties"])
        return {
            "type": "object",
            "properties": {"items": schema, "meta": meta},
            "required": ["items", "meta"],
        }
