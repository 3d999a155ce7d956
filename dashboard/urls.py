"""Dashboard routes (all login-protected; see dashboard.views)."""

from django.urls import path, register_converter
from django.urls.converters import StringConverter

from dashboard import views
from transactions.messages import ID_PATH_REGEX


class TransactionIdConverter(StringConverter):
    """A transaction id in a path (see ID_PATH_REGEX)."""

    regex = ID_PATH_REGEX


register_converter(TransactionIdConverter, "transaction_id")

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/data", views.overview_data, name="overview-data"),
    path("overview/rules", views.overview_rules, name="overview-rules"),
    path("transactions/", views.transaction_list, name="transactions"),
    path("transactions/find", views.transaction_find, name="transaction-find"),
    path(
        "transactions/<transaction_id:transaction_id>/",
        views.transaction_detail,
        name="transaction-detail",
    ),
]
