"""Ledger API routes; each answers with or without a trailing slash."""

from rest_framework.routers import SimpleRouter

from transactions.views import TransactionViewSet

router = SimpleRouter(trailing_slash="/?")
router.register("transactions", TransactionViewSet, basename="transaction")

urlpatterns = router.urls
