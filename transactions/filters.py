"""Filters of the transactions list (API and dashboard)."""

import django_filters

from transactions.models import Transaction


class TransactionFilter(django_filters.FilterSet):
    """Filter by status, user, rule, amount range and event-time range."""

    status = django_filters.MultipleChoiceFilter(choices=Transaction.Status.choices)
    user_id = django_filters.CharFilter()
    rule = django_filters.CharFilter(method="filter_rule", label="Rule code fired")
    min_amount = django_filters.NumberFilter(field_name="amount", lookup_expr="gte")
    max_amount = django_filters.NumberFilter(field_name="amount", lookup_expr="lte")
    since = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")

    class Meta:
        model = Transaction
        fields = ["status", "user_id", "rule", "min_amount", "max_amount"]

    def filter_rule(self, queryset, name, value):
        """Keep transactions whose verdict fired this rule."""
        return queryset.with_rule(value.strip())
