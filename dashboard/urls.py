"""Dashboard routes (all login-protected; see dashboard.views)."""

from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/data", views.overview_data, name="overview-data"),
    path("transactions/", views.transaction_list, name="transactions"),
    path(
        "transactions/<str:transaction_id>/",
        views.transaction_detail,
        name="transaction-detail",
    ),
]
