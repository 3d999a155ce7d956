"""Output serializers of the ledger API."""

from rest_framework import serializers

from transactions.models import Transaction


class TransactionSerializer(serializers.ModelSerializer):
    """A stored transaction with its verdict at the top level."""

    class Meta:
        model = Transaction
        fields = [
            "transaction_id",
            "user_id",
            "amount",
            "currency",
            "timestamp",
            "merchant_id",
            "merchant_category",
            "channel",
            "location",
            "latitude",
            "longitude",
            "country",
            "status",
            "risk_score",
            "reasons",
            "notes",
            "model_score",
            "model_version",
            "scored_at",
            "received_at",
            "is_fraud",
        ]
        read_only_fields = fields
