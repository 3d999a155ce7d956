"""Output serializers of the ledger API."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from fraudsite.serializers import UnknownFieldsRefused
from transactions.messages import SCORING_INPUT_FIELDS, amount_text
from transactions.models import LABEL_SHOWN_FIELDS, Label, Transaction


class LabelSerializer(serializers.ModelSerializer):
    """One label of a transaction, with the username of who gave it."""

    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Label
        fields = list(LABEL_SHOWN_FIELDS)
        read_only_fields = fields


class RequiredBooleanField(serializers.BooleanField):
    """A boolean that a form must send too.

    DRF reads a boolean missing from form data as false (an unticked checkbox):
    a form body without `is_fraud` would mark a fraud "legitimate" and teach the
    card's profile. Missing is missing, whatever the content type.
    """

    default_empty_html = empty


class LabelCreateSerializer(UnknownFieldsRefused, serializers.Serializer):
    """Input of POST /api/transactions/<id>/label: the analyst's judgement."""

    is_fraud = RequiredBooleanField(
        help_text="true = confirmed fraud, false = legitimate."
    )
    note = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default=""
    )


class ReasonSerializer(serializers.Serializer):
    """One rule that fired, with the values that made it fire."""

    code = serializers.CharField(
        help_text="The rule's code (the `rule` filter of the transactions list)."
    )
    label = serializers.CharField(help_text="The rule's name.")
    weight = serializers.FloatField(help_text="The rule's weight in the risk.")
    detail = serializers.CharField(help_text="Why it fired, in words.")
    values = serializers.DictField(
        help_text="The figures it fired on, by name (amounts in the base currency)."
    )


@extend_schema_field(ReasonSerializer(many=True))
class ReasonsField(serializers.JSONField):
    """The stored reasons as they are (a list of Reason objects)."""


@extend_schema_field(serializers.ListField(child=serializers.CharField()))
class NotesField(serializers.JSONField):
    """The stored notes as they are (a list of strings)."""


# A stored amount as the API shows it (`amount_text`): up to 13 digits, and as
# many decimals as its currency has (none for JPY, 3 for KWD).
AMOUNT_SHOWN_PATTERN = r"^\d{1,13}(\.\d{1,3})?$"


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": AMOUNT_SHOWN_PATTERN,
        "example": "25.00",
    }
)
class AmountShownField(serializers.Field):
    """A stored transaction's amount with its currency's decimals: "12.50" USD,
    "12.345" KWD, "100" JPY (the ledger's column keeps 3 for every currency)."""

    def __init__(self, **kwargs):
        kwargs.update(source="*", read_only=True)
        super().__init__(**kwargs)

    def to_representation(self, value: Transaction) -> str:
        return amount_text(value.amount, value.currency)


class TransactionSerializer(serializers.ModelSerializer):
    """A stored transaction with its verdict at the top level.

    `label` is the latest label, or null; list views prefetch it (see
    `TransactionViewSet.get_queryset`) so a page costs one extra query, not one per
    row.
    """

    label = serializers.SerializerMethodField()
    # Declared: as a read-only model field it would lose allow_blank, and the
    # schema's enum would leave out "" (no channel given).
    channel = serializers.ChoiceField(
        choices=Transaction.Channel.choices, allow_blank=True, read_only=True
    )
    amount = AmountShownField(
        help_text="In its currency's minor unit: as many decimals as it has "
        '(ISO 4217: "12.50" USD, "12.345" KWD, "100" JPY).'
    )
    # Stored JSON, shown as it is; declared for their types in the schema.
    reasons = ReasonsField(
        read_only=True, help_text=Transaction._meta.get_field("reasons").help_text
    )
    notes = NotesField(
        read_only=True, help_text=Transaction._meta.get_field("notes").help_text
    )

    class Meta:
        model = Transaction
        fields = [
            *SCORING_INPUT_FIELDS,
            "amount_base",
            "status",
            "risk_score",
            "reasons",
            "notes",
            "model_score",
            "model_version",
            "scored_at",
            "received_at",
            "is_fraud",
            "label",
        ]
        read_only_fields = fields

    @extend_schema_field(LabelSerializer(allow_null=True))
    def get_label(self, obj: Transaction) -> dict | None:
        """Return the latest label, or None when the transaction has none."""
        if obj.pk is None:
            return None
        labels = getattr(obj, "labels_latest_first", None)
        if labels is None:
            latest = obj.labels.latest_first().select_related("created_by").first()
        else:
            latest = labels[0] if labels else None
        return LabelSerializer(latest).data if latest else None
