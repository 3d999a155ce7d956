"""Admin changelists of tables that grow without bound, at a bounded cost.

Django's changelist counts every row its filters match (`COUNT(*)`) to number
its pages, and with `show_full_result_count` the whole table too: on the ledger
at a million rows that count, not the page, was the page's time.
"""

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property

from transactions.pagination import MATCHING_COUNT_CAP


class CountAtLeast(int):
    """A count that stopped at its cap: compares and pages as the cap, and
    shows as "10,000+" wherever admin writes a count (the paginator's
    "10,000+ transactions", the search's "10,000+ results", the actions'
    "Select all 10,000+" and "All 10,000+ selected").

    Admin's templates render an int through `localize()`, which without
    USE_THOUSAND_SEPARATOR (off here) writes it with `str()`; `%s` and
    `{}` formatting use `str()` too.
    """

    def __str__(self) -> str:
        return f"{int(self):,}+"


class CappedCountPaginator(Paginator):
    """Count the matching rows up to `count_cap` (10,000) only.

    The count is `SELECT COUNT(*) FROM (... LIMIT cap + 1)`, unordered, so it
    stops at cap + 1 matching rows however many match (a filter that matches
    few still looks through the rows no index skips, as its page does). When
    more match, `count` is the cap as a `CountAtLeast` ("10,000+") and the
    pages go up to the cap: filters, search and ordering still apply to every
    page, and rows beyond the cap are reached by narrowing the filter or search
    (or by date), or by reversing the order. 10,000 rows are 200 pages of 50;
    the API's `count=1` stops at 10,000 too.

    Keep the cap above the admin's `list_max_show_all` (200): a capped count
    below it would offer "Show all", which lists every matching row.
    """

    # The API's `count=1` stops at the same number.
    count_cap = MATCHING_COUNT_CAP

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not hasattr(rows, "order_by"):  # a list: its length costs nothing
            return super().count
        counted = rows.order_by()[: self.count_cap + 1].count()
        if counted > self.count_cap:
            return CountAtLeast(self.count_cap)
        return counted


class LargeTableAdmin(admin.ModelAdmin):
    """A ModelAdmin whose list page costs the same at any table size: counts
    capped (`CappedCountPaginator`), no count of the whole table
    (`show_full_result_count`), and no per-filter counts (facets)."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
