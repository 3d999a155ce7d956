"""Ledger API routes; each answers with or without a trailing slash."""

from rest_framework.routers import SimpleRouter

from transactions.views import TransactionViewSet


class OptionalSlashRouter(SimpleRouter):
    """Route `/x` and `/x/` alike, so a POST never meets a slash redirect."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("transactions", TransactionViewSet, basename="transaction")

urlpatterns = router.urls
