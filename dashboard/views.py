"""Dashboard pages (login required): parse the request, call a selector, render."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from dashboard.selectors import (
    RULE_WINDOWS,
    dead_letters_unresolved_count,
    overview_summary,
    rule_choices,
    rule_performance,
    transaction_detail_context,
)
from fraudsite.permissions import READ_PERMISSION
from transactions.messages import amount_places
from transactions.models import Transaction
from transactions.selectors import (
    card_has_transactions,
    transaction_get,
    transaction_ids_ending,
)


def reader_required(view):
    """Sign in first, then hold READ_PERMISSION (a 403 page otherwise: a
    gateway's Scoring client login reads nothing)."""
    return login_required(
        permission_required(READ_PERMISSION, raise_exception=True)(view)
    )


def _rules_window(request) -> str:
    window = request.GET.get("rules", "24h")
    return window if window in RULE_WINDOWS else "24h"


@reader_required
@require_GET
def overview(request):
    """Render totals, the status donut, the per-minute chart, live status and
    the rule performance table (window ?rules=24h|7d|30d)."""
    return render(
        request,
        "dashboard/overview.html",
        {
            "summary": overview_summary(),
            "performance": rule_performance(window=_rules_window(request)),
            "dead_letters": dead_letters_unresolved_count(),
            "windows": list(RULE_WINDOWS),
        },
    )


@reader_required
@require_GET
def overview_rules(request):
    """Render the rule performance panel alone (overview.js reloads it as labels
    and verdicts arrive, at most every few seconds)."""
    return render(
        request,
        "dashboard/_rule_performance.html",
        {
            "performance": rule_performance(window=_rules_window(request)),
            "windows": list(RULE_WINDOWS),
        },
    )


@reader_required
@require_GET
def overview_data(request):
    """Return the overview figures as JSON (the page catches up after reconnects)."""
    return JsonResponse(overview_summary())


@reader_required
@require_GET
def transaction_list(request):
    """Render the live transactions table, its filters and the validation panel."""
    return render(request, "dashboard/transactions.html", _list_context())


def _list_context() -> dict:
    """Return what the transactions page renders its filters and table with."""
    return {
        "rules": rule_choices(),
        "statuses": Transaction.Status.choices,
        "page_size": 50,
        "base_currency": settings.BASE_CURRENCY,
        "base_decimals": amount_places(settings.BASE_CURRENCY),
    }


@reader_required
@require_GET
def transaction_detail(request, transaction_id: str):
    """Render one verdict with its reasons, the user's context and the labels."""
    transaction = transaction_get(transaction_id=transaction_id)
    if transaction is None:
        raise Http404("No such transaction.")
    context = transaction_detail_context(transaction=transaction)
    return render(
        request,
        "dashboard/transaction_detail.html",
        {
            "transaction": transaction,
            "base_currency": settings.BASE_CURRENCY,
            "base_decimals": amount_places(settings.BASE_CURRENCY),
            **context,
        },
    )


@reader_required
@require_GET
def transaction_find(request):
    """Open the transaction whose id was typed in the header's search box.

    A card's id (user_id) opens the list filtered on that card; an id nothing
    has shows the list with a message saying so (404).
    """
    wanted = request.GET.get("id", "").strip().lstrip("…")
    if "\x00" in wanted:
        # No id holds a NUL (the ledger refuses them), and PostgreSQL refuses
        # one in a query: found nowhere, without asking.
        return render(
            request,
            "dashboard/transactions.html",
            {
                **_list_context(),
                "not_found": wanted.replace("\x00", ""),
                "ambiguous": False,
            },
            status=404,
        )
    if wanted and transaction_get(transaction_id=wanted) is not None:
        return redirect("dashboard:transaction-detail", transaction_id=wanted)
    if wanted and card_has_transactions(user_id=wanted):
        # A card id pasted in the box: that card's payments.
        query = urlencode({"user_id": wanted})
        return redirect(reverse("dashboard:transactions") + "?" + query)
    # The pages show long ids by their last characters ("…0000005777"): an id
    # that only one stored id ends with opens that one.
    endings = transaction_ids_ending(ending=wanted, limit=2) if wanted else []
    if len(endings) == 1:
        return redirect("dashboard:transaction-detail", transaction_id=endings[0])
    return render(
        request,
        "dashboard/transactions.html",
        {**_list_context(), "not_found": wanted, "ambiguous": len(endings) > 1},
        status=404 if wanted else 200,
    )
