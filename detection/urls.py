"""Detection API routes; each answers with or without a trailing slash.

A POST must never meet a slash redirect (the body would be lost), so the routes
accept both spellings instead of relying on APPEND_SLASH.
"""

from django.urls import re_path

from detection.views import (
    BacktestJobViewSet,
    BacktestView,
    DecisionThresholdsView,
    HealthView,
    ListEntryViewSet,
    ModelVersionViewSet,
    PredictView,
    RuleViewSet,
    ValidateTransactionView,
)
from transactions.urls import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("backtest/jobs", BacktestJobViewSet, basename="backtest-job")
router.register("lists", ListEntryViewSet, basename="list-entry")
router.register("models", ModelVersionViewSet, basename="model-version")
router.register("rules", RuleViewSet, basename="rule")

urlpatterns = [
    re_path(r"^$", HealthView.as_view(), name="api-health"),
    re_path(r"^predict/?$", PredictView.as_view(), name="api-predict"),
    re_path(r"^backtest/?$", BacktestView.as_view(), name="api-backtest"),
    re_path(r"^thresholds/?$", DecisionThresholdsView.as_view(), name="api-thresholds"),
    re_path(
        r"^validate-transaction/?$",
        ValidateTransactionView.as_view(),
        name="api-validate-transaction",
    ),
    *router.urls,
]
