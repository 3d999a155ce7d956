from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DetectionConfig(AppConfig):
    name = "detection"
    verbose_name = "Detection (rules, model, user state)"

    def ready(self):
        """Tell the ledger's `rule` filter which codes exist (it cannot import us),
        and keep the role groups current after every migrate.

        The roles hook listens for this app's post_migrate: by then auth has made
        the permissions of the ledger and of this app (both come earlier in
        INSTALLED_APPS' order, which is the signal's).
        """
        from detection.lists import LIST_ALLOW_CODE, LIST_BLOCK_CODE
        from detection.roles import roles_sync_after_migrate
        from detection.rules import RULE_TYPES
        from transactions.filters import TransactionFilter

        TransactionFilter.rule_codes = frozenset(
            [*RULE_TYPES, LIST_BLOCK_CODE, LIST_ALLOW_CODE]
        )
        post_migrate.connect(
            roles_sync_after_migrate, sender=self, dispatch_uid="detection.roles_sync"
        )
