from django.apps import AppConfig


class DetectionConfig(AppConfig):
    name = "detection"
    verbose_name = "Detection (rules, model, user state)"

    def ready(self):
        """Tell the ledger's `rule` filter which codes exist (it cannot import us)."""
        from detection.lists import LIST_ALLOW_CODE, LIST_BLOCK_CODE
        from detection.rules import RULE_TYPES
        from transactions.filters import TransactionFilter

        TransactionFilter.rule_codes = frozenset(
            [*RULE_TYPES, LIST_BLOCK_CODE, LIST_ALLOW_CODE]
        )
