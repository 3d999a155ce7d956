"""Filters of the transactions list (API and dashboard)."""

from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import ValidationError as RequestError
from rest_framework.filters import OrderingFilter

from transactions.models import Label, Transaction


def query_params_check(request, known: set[str]) -> None:
    """Refuse a query parameter not in `known` with a 400 naming it: a misspelt
    filter would otherwise answer everything as if it applied."""
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestError(
            {
                name: [f"Unknown parameter. Known: {', '.join(sorted(known))}."]
                for name in unknown
            }
        )


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date/time that must also exist in UTC (the stored zone)."""

    def clean(self, value):
        """Reject times that overflow when moved to UTC (9999-12-31T23:59-05:00)."""
        moment = super().clean(value)
        if moment is not None:
            try:
                moment.astimezone(UTC)
            except OverflowError:
                raise ValidationError(
                    "Enter a date/time within years 1 to 9999 in UTC.", code="invalid"
                ) from None
        return moment


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """IsoDateTimeFilter with a 400, not a 500, for times out of UTC's range."""

    field_class = UtcIsoDateTimeField


class TransactionFilterForm(forms.Form):
    """Refuse ranges that can match nothing because they are written backwards."""

    RANGES = (
        ("min_amount", "max_amount", "greater than max_amount"),
        ("since", "until", "at or after until"),
        ("scored_since", "scored_until", "at or after scored_until"),
    )

    def clean(self):
        data = super().clean()
        for low, high, wording in self.RANGES:
            start, end = data.get(low), data.get(high)
            if start is None or end is None:
                continue
            backwards = start > end if low == "min_amount" else start >= end
            if backwards:
                self.add_error(low, f"Must not be {wording} (the range is empty).")
        return data


class TransactionFilter(django_filters.FilterSet):
    """Filter by status, user, rule, label, amount range, event-time range and
    scoring-time range."""

    status = django_filters.MultipleChoiceFilter(choices=Transaction.Status.choices)
    user_id = django_filters.CharFilter()

    def __init__(self, data=None, *args, **kwargs):
        """Read a parameter given empty (`?status=`, a form's blank field) as
        absent, as every filter's own empty value already is."""
        if data is not None and hasattr(data, "lists"):
            data = data.copy()
            for key in [k for k, values in data.lists() if not any(values)]:
                del data[key]
        super().__init__(data, *args, **kwargs)

    merchant_id = django_filters.CharFilter()
    country = django_filters.CharFilter(method="filter_country")
    rule = django_filters.CharFilter(method="filter_rule", label="Rule code fired")
    # In BASE_CURRENCY, as the rules compare amounts (Transaction.amount_base).
    min_amount = django_filters.NumberFilter(
        field_name="amount_base",
        lookup_expr="gte",
        label="Min amount (base currency)",
        min_value=0,
    )
    max_amount = django_filters.NumberFilter(
        field_name="amount_base",
        lookup_expr="lte",
        label="Max amount (base currency)",
        min_value=0,
    )
    # The review queue: `label=none` with status=suspicious is what is left to do.
    label = django_filters.ChoiceFilter(
        method="filter_label",
        choices=[
            ("none", "Not labelled"),
            ("fraud", "Confirmed fraud"),
            ("legit", "Legitimate"),
        ],
        label="Latest label",
    )
    since = UtcIsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")
    # When the verdict was stored: "the last hour of the stream", whatever the
    # event times say (a delayed or simulated feed can be hours off the clock).
    scored_since = UtcIsoDateTimeFilter(field_name="scored_at", lookup_expr="gte")
    scored_until = UtcIsoDateTimeFilter(field_name="scored_at", lookup_expr="lt")

    # The rule codes that exist, set by the detection app when it loads (the
    # ledger never imports detection); None accepts any code.
    rule_codes: frozenset[str] | None = None

    class Meta:
        model = Transaction
        fields = ["status", "user_id", "rule", "label", "min_amount", "max_amount"]
        form = TransactionFilterForm

    def filter_country(self, queryset, name, value):
        """Keep transactions of this ISO 3166 country (any letter case)."""
        return queryset.filter(country=value.strip().upper())

    def filter_label(self, queryset, name, value):
        """Keep transactions by their latest label (`none`: not labelled yet)."""
        if value == "none":
            return queryset.exclude(
                Exists(Label.objects.filter(transaction=OuterRef("pk")))
            )
        return queryset.with_latest_label().filter(
            latest_label_fraud=(value == "fraud")
        )

    def filter_rule(self, queryset, name, value):
        """Keep transactions whose verdict fired this rule; an unknown code is a 400."""
        code = value.strip()
        if self.rule_codes is not None and code not in self.rule_codes:
            known = ", ".join(sorted(self.rule_codes))
            raise RequestError({"rule": [f"Unknown rule code. One of: {known}."]})
        return queryset.with_rule(code)


class StrictOrderingFilter(OrderingFilter):
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

    def get_schema_operation_parameters(self, view):
        """Describe `ordering` with the columns it accepts (and their `-`)."""
        names = [name for name, _label in self.get_valid_fields(None, view)]
        aliased = ", ".join(
            f"`{alias}` sorts by {column}" for alias, column in self.aliases.items()
        )
        (parameter,) = super().get_schema_operation_parameters(view)
        parameter["description"] = (
            "The column to sort by, ascending, or descending with a leading `-` "
            f"(default {view.ordering[0]}: newest first). One column only: a "
            f"second (`amount,id`) is a 400; the list's pages break ties newest "
            f"first. {aliased} (the amount in the base currency)."
        )
        parameter["schema"] = {
            "type": "string",
            "enum": [variant for name in names for variant in (name, f"-{name}")],
        }
        return [parameter]

    def remove_invalid_fields(self, queryset, fields, view, request):
        """Return the valid fields; raise ValidationError naming the allowed ones.

        One column only: the keyset pages sort by it, then by id (a second
        column would be dropped without a word, `TransactionCursorPagination`).
        """
        if len([field for field in fields if field]) > 1:
            raise RequestError(
                {
                    "ordering": [
                        "Sort by one column (ties keep the newest first); "
                        f"got {len(fields)}: {','.join(fields)}."
                    ]
                }
            )
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        if len(valid) != len([field for field in fields if field]):
            allowed = [
                name
                for name, _label in self.get_valid_fields(
                    queryset, view, {"request": request}
                )
            ]
            raise RequestError(
                {
                    "ordering": [
                        f"Sort by one of: {', '.join(allowed)} (- for descending)."
                    ]
                }
            )
        return valid
