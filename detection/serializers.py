"""Input and output serializers of the scoring endpoints (predict, validate)."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from detection.models import (
    BacktestJob,
    DecisionThresholds,
    ListEntry,
    ModelVersion,
    Rule,
)
from detection.records import timestamp_not_after
from detection.rules import RULE_TYPES
from detection.scoring import scoring_config_current
from fraudsite.serializers import UnknownFieldsRefused
from transactions.messages import (
    LEDGER_DECIMAL_PLACES,
    MAX_AMOUNT,
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    MessageError,
    transaction_message_parse,
)
from transactions.models import Transaction
from transactions.serializers import ReasonSerializer

# A plain decimal string as `transaction_message_parse` reads it (spaces around
# it trimmed), with at most three decimals that are not zeros ("12.500" is
# 12.50). How many a currency may have (2 for USD, 0 for JPY) a pattern on this
# field alone cannot say: the description does.
AMOUNT_STRING_PATTERN = r"^\s*\+?(\d+(\.\d{0,3}0*)?|\.\d{1,3}0*)\s*$"


@extend_schema_field(
    {
        "oneOf": [
            {
                "type": "string",
                "format": "decimal",
                "pattern": AMOUNT_STRING_PATTERN,
                "example": "25.00",
            },
            {
                "type": "number",
                "minimum": 0.001,
                "maximum": float(MAX_AMOUNT),
                "example": 25.0,
            },
        ]
    }
)
class AmountField(serializers.DecimalField):
    """An amount as the message schema takes it: a decimal string or a number."""


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "date-time"},
            {
                "type": "number",
                "description": "Epoch seconds.",
                "minimum": TIMESTAMP_MIN.timestamp(),
                "maximum": TIMESTAMP_MAX.timestamp(),
                "exclusiveMaximum": True,
            },
        ]
    }
)
class TimestampField(serializers.DateTimeField):
    """An event time as the message schema takes it: ISO 8601 or epoch seconds."""


class TransactionIdConflictSerializer(serializers.Serializer):
    """The 409 of predict: the transaction_id is stored for another payment."""

    transaction_id = serializers.ListField(child=serializers.CharField())


class TransactionMessageSerializer(UnknownFieldsRefused, serializers.Serializer):
    """A transaction in the message schema.

    The declared fields document the schema (browsable API, OpenAPI); validation
    itself is `transaction_message_parse`, the same function the stream uses, so
    the API can never accept what the stream refuses or the reverse.
    """

    transaction_id = serializers.CharField(
        max_length=MAX_ID_LENGTH, required=False, help_text="Generated when absent."
    )
    user_id = serializers.CharField(max_length=MAX_ID_LENGTH)
    amount = AmountField(
        max_digits=16,
        decimal_places=LEDGER_DECIMAL_PLACES,
        coerce_to_string=False,
        min_value=Decimal("0.001"),
        max_value=MAX_AMOUNT,
        help_text=(
            f"> 0 and at most {MAX_AMOUNT}, in the currency's minor unit: at "
            "most as many decimals as it has (ISO 4217: none for JPY or KRW, 2 "
            "for USD, 3 for KWD or BHD; 3 for CLF and UYW, whose 4th the ledger "
            "does not keep; 2 for a code ISO 4217 gives none). A plain decimal "
            'string ("25.00") or a JSON number.'
        ),
    )
    currency = serializers.CharField(max_length=3, required=False, default="USD")
    timestamp = TimestampField(
        required=False,
        help_text=(
            f"ISO 8601 or epoch seconds, from {TIMESTAMP_MIN:%Y-%m-%d} and before "
            f"{TIMESTAMP_MAX:%Y-%m-%d}. Default: when the request arrived."
        ),
    )
    merchant_id = serializers.CharField(max_length=MAX_ID_LENGTH, required=False)
    merchant_category = serializers.CharField(max_length=MAX_ID_LENGTH, required=False)
    channel = serializers.ChoiceField(
        choices=Transaction.Channel.choices, required=False
    )
    location = serializers.CharField(
        max_length=MAX_TEXT_LENGTH, required=False, help_text="City name."
    )
    latitude = serializers.FloatField(min_value=-90, max_value=90, required=False)
    longitude = serializers.FloatField(min_value=-180, max_value=180, required=False)
    country = serializers.CharField(max_length=2, required=False)

    id_prefix = "api"
    # Of the message schema, not a scoring input: checked (a boolean), then
    # dropped (ground truth never comes from the API).
    extra_known_fields = frozenset({"is_fraud"})

    def to_internal_value(self, data):
        """Return a TransactionMessage, or raise field errors (an unknown field
        is one here; the stream's parser ignores unknown keys)."""
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Expected a JSON object."]}
            )
        self.unknown_fields_check(data)
        payload = dict(data.items())
        try:
            message = transaction_message_parse(
                payload,
                require_transaction_id=False,
                not_after=timestamp_not_after(),
                currencies=scoring_config_current().currencies,
            )
        except MessageError as exc:
            raise serializers.ValidationError(exc.errors) from exc
        # Ground truth is never a scoring input from the API.
        message.is_fraud = None
        if not message.transaction_id:
            message.transaction_id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        return message


class WhatIfSerializer(TransactionMessageSerializer):
    """A hypothetical transaction: {user_id, amount, location?, ...}."""

    id_prefix = "what-if"


class VerdictSerializer(serializers.Serializer):
    """The verdict's fields, at the top level of the response."""

    transaction_id = serializers.CharField()
    status = serializers.ChoiceField(choices=Transaction.Status.choices)
    risk_score = serializers.FloatField()
    reasons = ReasonSerializer(many=True)
    model_score = serializers.FloatField(allow_null=True)
    model_version = serializers.CharField(allow_blank=True)
    notes = serializers.ListField(child=serializers.CharField())


class HistorySerializer(serializers.Serializer):
    """The user's history context returned by validate-transaction."""

    user_id = serializers.CharField()
    transaction_count = serializers.IntegerField()
    typical_amount = serializers.FloatField()
    last_location = serializers.CharField(allow_blank=True)
    last_transaction_at = serializers.DateTimeField(allow_null=True)
    home_location = serializers.CharField(allow_blank=True)
    base_currency = serializers.CharField(help_text="Of typical_amount, amount_24h.")
    count_10m = serializers.IntegerField()
    count_1h = serializers.IntegerField()
    count_24h = serializers.IntegerField()
    amount_24h = serializers.FloatField()
    recent_transactions = serializers.ListField(child=serializers.DictField())


class WhatIfVerdictSerializer(VerdictSerializer):
    """A what-if verdict with the history it was judged against."""

    features = serializers.DictField()
    history = HistorySerializer()


class RuleParamSerializer(serializers.Serializer):
    """What one rule parameter means, its inclusive range and its default."""

    help = serializers.CharField()
    minimum = serializers.FloatField()
    maximum = serializers.FloatField()
    default = serializers.FloatField()
    whole_number = serializers.BooleanField()


class RuleSerializer(UnknownFieldsRefused, serializers.ModelSerializer):
    """A rule's settings; its logic is in the code, which `code` names.

    Validated as admin validates them (`Rule.clean`): a weight in 0..1, every
    parameter known, a number in its range. On PATCH the `params` given are
    merged into the current ones; on PUT they replace them, and keys left out
    take their defaults.
    """

    params_schema = serializers.SerializerMethodField()

    class Meta:
        model = Rule
        fields = [
            "code",
            "name",
            "description",
            "enabled",
            "weight",
            "params",
            "params_schema",
            "updated_at",
        ]
        read_only_fields = ["code", "updated_at"]

    @extend_schema_field(serializers.DictField(child=RuleParamSerializer()))
    def get_params_schema(self, rule: Rule) -> dict:
        rule_type = RULE_TYPES.get(rule.code)
        if rule_type is None:
            return {}
        return {
            key: {
                "help": spec.help,
                "minimum": spec.minimum,
                "maximum": spec.maximum,
                "default": spec.default,
                "whole_number": spec.kind is int,
            }
            for key, spec in rule_type.params.items()
        }

    def validate(self, attrs):
        rule = self.instance
        params = attrs.get("params", rule.params)
        if "params" in attrs and self.partial and isinstance(params, dict):
            params = {**rule.params, **params}
        probe = Rule(
            code=rule.code, weight=attrs.get("weight", rule.weight), params=params
        )
        try:
            probe.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        if "params" in attrs:
            attrs["params"] = probe.params
        return attrs


class DecisionThresholdsSerializer(UnknownFieldsRefused, serializers.ModelSerializer):
    """The risk cut-offs: `suspicious` from the first, `fraud` from the second."""

    class Meta:
        model = DecisionThresholds
        fields = ["suspicious", "fraud", "updated_at"]
        read_only_fields = ["updated_at"]

    def validate(self, attrs):
        current = self.instance
        suspicious = attrs.get("suspicious", getattr(current, "suspicious", None))
        fraud = attrs.get("fraud", getattr(current, "fraud", None))
        if not DecisionThresholds.ordered(suspicious, fraud):
            raise serializers.ValidationError(
                {"non_field_errors": [f"Need {DecisionThresholds.RULE}."]}
            )
        return attrs


# Ten years: a label maturity beyond it is a typo (and days * 86400 overflows
# long before a float does).
LABEL_MATURITY_MAX_DAYS = 3650.0


class BacktestRequestSerializer(UnknownFieldsRefused, serializers.Serializer):
    """A backtest of the stored ledger: what to replay, where training stops,
    and optionally a draft rule set to compare with the live one."""

    since = serializers.DateTimeField(
        help_text="Event time from which stored transactions are replayed."
    )
    train_until = serializers.DateTimeField(
        help_text="The model is trained on what is before it; the rest is scored."
    )
    until = serializers.DateTimeField(
        required=False, help_text="Event time the replay stops before (default: now)."
    )
    draft = serializers.JSONField(
        required=False,
        help_text='Changes to the live rules and thresholds: {"rules": {"amount_spike"'
        ': {"weight": 0.3}}, "thresholds": {"suspicious": 0.45}}, checked as admin '
        "checks them.",
    )
    label_maturity_days = serializers.FloatField(
        required=False,
        default=lambda: settings.MODEL_LABEL_MATURITY_SECONDS / 86400,
        min_value=0.0,
        max_value=LABEL_MATURITY_MAX_DAYS,
        help_text="As a retrain: the classifier learns only from payments this "
        "old at train_until, those without a label as legitimate; and a scored "
        "payment without a label counts as legitimate in the figures once this "
        "old, pending before (0 to "
        f"{LABEL_MATURITY_MAX_DAYS:g} days; default MODEL_LABEL_MATURITY_SECONDS).",
    )

    def validate_label_maturity_days(self, value: float) -> float:
        if not math.isfinite(value):  # "NaN" is a float, and passes both bounds
            raise serializers.ValidationError("A finite number of days is required.")
        return value

    def validate(self, attrs):
        defaulted = "until" not in attrs
        attrs.setdefault("until", timezone.now())
        if not attrs["since"] < attrs["train_until"] < attrs["until"]:
            message = "Need since < train_until < until."
            if defaulted:
                message += (
                    f" until was not given, so it is now "
                    f"({attrs['until']:%Y-%m-%dT%H:%M:%SZ}); give it to replay "
                    "payments dated later."
                )
            raise serializers.ValidationError({"train_until": [message]})
        return attrs


class BacktestMetricsSerializer(serializers.Serializer):
    """One rule set's figures over the scored part: precision and the rest over
    the payments of known outcome, labelled or presumed legitimate (absent
    without any)."""

    scored = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    rule_hits = serializers.DictField(child=serializers.IntegerField())
    labelled = serializers.IntegerField(
        required=False, help_text="Scored payments with a label."
    )
    fraud = serializers.IntegerField(
        required=False, help_text="Of them, labelled fraud."
    )
    presumed_legit = serializers.IntegerField(
        required=False,
        help_text="Scored payments without a label, older than label_maturity_days "
        "(their chargeback would have come): counted as legitimate.",
    )
    pending = serializers.IntegerField(
        required=False,
        help_text="Scored payments without a label, younger than that: left out "
        "of precision, recall and the rest.",
    )
    precision = serializers.FloatField(required=False, allow_null=True)
    recall = serializers.FloatField(required=False, allow_null=True)
    average_precision = serializers.FloatField(required=False)
    roc_auc = serializers.FloatField(required=False)


class BacktestResultSerializer(serializers.Serializer):
    """What a backtest trained on and the figures of each rule set."""

    replayed = serializers.IntegerField()
    trained_on = serializers.IntegerField()
    model_version = serializers.CharField(allow_blank=True)
    classifier = serializers.CharField(allow_blank=True)
    live = BacktestMetricsSerializer()
    draft = BacktestMetricsSerializer(allow_null=True)


class BacktestJobSerializer(serializers.ModelSerializer):
    """A backtest job: what it replays, how far it is, and its answer when done."""

    url = serializers.HyperlinkedIdentityField(
        view_name="backtest-job-detail",
        help_text="This job's address (GET it until `status` is done or failed).",
    )
    requested_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who started it (null: a user deleted since).",
    )
    error = serializers.CharField(
        read_only=True, help_text="Why it failed (empty unless failed)."
    )
    stale = serializers.BooleanField(
        source="is_stale",
        read_only=True,
        help_text="Queued or running without a progress write for "
        "API_BACKTEST_JOB_STALE_SECONDS: its worker died or none took it; it "
        "will not finish (start it again).",
    )
    draft = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The draft's changes, as sent."
    )
    result = BacktestResultSerializer(
        read_only=True,
        allow_null=True,
        help_text="When done: what POST /api/backtest answers; null before.",
    )

    class Meta:
        model = BacktestJob
        fields = [
            "id",
            "url",
            "status",
            "stale",
            "rows_done",
            "rows_total",
            "since",
            "train_until",
            "until",
            "draft",
            "label_maturity_days",
            "requested_by",
            "result",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields


class ListEntrySerializer(UnknownFieldsRefused, serializers.ModelSerializer):
    """A block or allow list entry; the value is normalised as the model does."""

    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = ListEntry
        fields = [
            "id",
            "kind",
            "value",
            "action",
            "note",
            "expires_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_by", "created_at", "updated_at"]
        # Uniqueness is checked in validate(), with a message naming the entry.
        validators: list = []

    def to_internal_value(self, data):
        """Read an empty `expires_at` (a form's blank field) as "until removed"."""
        if hasattr(data, "get") and data.get("expires_at") == "":
            data = {**dict(data.items()), "expires_at": None}
        return super().to_internal_value(data)

    def validate(self, attrs):
        kind = attrs.get("kind", getattr(self.instance, "kind", None))
        value = attrs.get("value", getattr(self.instance, "value", ""))
        probe = ListEntry(kind=kind, value=value)
        try:
            probe.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        attrs["value"] = probe.value
        expires = attrs.get("expires_at")
        if expires is not None and expires <= timezone.now():
            raise serializers.ValidationError(
                {"expires_at": ["Must be in the future (empty: until removed)."]}
            )
        taken = ListEntry.objects.filter(kind=kind, value=probe.value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        existing = taken.first()
        self.replaces = None
        if (
            existing is not None
            and self.instance is None
            and existing.expires_at is not None
            and existing.expires_at <= timezone.now()
        ):
            # An expired entry no longer decides anything: a new one replaces it.
            self.replaces = existing
            existing = None
        if existing is not None:
            raise serializers.ValidationError(
                {
                    "value": [
                        f"{kind} {probe.value} is already on the {existing.action} "
                        f"list (entry {existing.pk}); change or delete that entry."
                    ]
                }
            )
        return attrs


class ModelVersionSerializer(serializers.ModelSerializer):
    """A stored model version: its training window, the retrain's activation
    decision and what its classifier learned from (never the artifacts)."""

    has_classifier = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "version",
            "algorithm",
            "is_active",
            "trained_at",
            "trained_from",
            "trained_until",
            "sample_count",
            "params",
            "evaluation",
            "has_classifier",
            "classifier_info",
        ]
        read_only_fields = fields

    def get_has_classifier(self, obj: ModelVersion) -> bool:
        """Return whether the version scores with a classifier on labels."""
        return bool(obj.classifier_sha256)
