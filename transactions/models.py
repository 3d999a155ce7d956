"""The ledger: every scored transaction with its verdict, and maintained tallies."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from transactions.messages import amount_text


def reason_codes_text(codes: Iterable[str]) -> str:
    """Return the `reason_codes` column for these rule codes (see `with_rule`)."""
    codes = list(codes)
    return f" {' '.join(codes)} " if codes else ""


class TransactionQuerySet(models.QuerySet):
    """Chainable filters used by the API, the admin and the dashboard."""

    def with_rule(self, code: str) -> TransactionQuerySet:
        """Return transactions whose verdict fired the rule `code`."""
        # reason_codes is space-delimited with a leading and trailing space, so a
        # substring match on " code " cannot hit a longer code that contains it.
        return self.filter(reason_codes__contains=f" {code} ")

    def flagged(self) -> TransactionQuerySet:
        """Return suspicious and fraud verdicts."""
        return self.exclude(status=Transaction.Status.LEGIT)

    def for_user(self, user_id: str) -> TransactionQuerySet:
        """Return one user's transactions."""
        return self.filter(user_id=user_id)

    def with_latest_label(self) -> TransactionQuerySet:
        """Annotate `latest_label_fraud`: the latest label's is_fraud, or None."""
        latest = (
            Label.objects.filter(transaction=models.OuterRef("pk"))
            .latest_first()
            .values("is_fraud")[:1]
        )
        return self.annotate(latest_label_fraud=models.Subquery(latest))


class Transaction(models.Model):
    """One card transaction and the verdict it received when it was scored."""

    class Status(models.TextChoices):
        LEGIT = "legit", "Legit"
        SUSPICIOUS = "suspicious", "Suspicious"
        FRAUD = "fraud", "Fraud"

    class Channel(models.TextChoices):
        POS = "pos", "Point of sale"
        ECOM = "ecom", "E-commerce"
        ATM = "atm", "ATM"

    transaction_id = models.CharField(max_length=64, unique=True)
    user_id = models.CharField(max_length=64)
    # Up to transactions.messages.MAX_AMOUNT (10^12), in the currency's minor
    # unit: 3 decimals for KWD's fils (LEDGER_DECIMAL_PLACES), so 12.50 USD is
    # stored 12.500; shown with its currency's decimals (`amount_shown`).
    amount = models.DecimalField(max_digits=16, decimal_places=3)
    # The amount in BASE_CURRENCY at the rate it was scored with: what the rules
    # compared, and what the list sorts and filters by, so that 1,000,000 IDR
    # (about 60 USD) does not rank above 4,000 USD.
    amount_base = models.FloatField(
        help_text="The amount in BASE_CURRENCY at the rate it was scored with."
    )
    currency = models.CharField(max_length=3, default="USD")
    timestamp = models.DateTimeField(help_text="Event time of the payment (UTC).")
    merchant_id = models.CharField(max_length=64, blank=True)
    merchant_category = models.CharField(max_length=64, blank=True)
    channel = models.CharField(max_length=8, choices=Channel.choices, blank=True)
    location = models.CharField(max_length=128, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    country = models.CharField(max_length=2, blank=True)
    is_fraud = models.BooleanField(
        null=True,
        blank=True,
        help_text="Ground truth from the simulator or a labelled file; never scored.",
    )

    risk_score = models.FloatField()
    status = models.CharField(max_length=10, choices=Status.choices)
    reasons = models.JSONField(
        default=list,
        blank=True,
        help_text="Rules that fired, each with the values that made it fire.",
    )
    reason_codes = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="Space-delimited rule codes, for filtering by rule.",
    )
    notes = models.JSONField(
        default=list,
        blank=True,
        help_text="Caveats of the verdict, e.g. rules only (no model) or unknown city.",
    )
    model_score = models.FloatField(null=True, blank=True)
    model_version = models.CharField(max_length=64, blank=True)
    scored_at = models.DateTimeField()
    received_at = models.DateTimeField(
        null=True, blank=True, help_text="Kafka record timestamp (or API receipt)."
    )
    ingest_source = models.CharField(max_length=16, default="stream")
    profile_learned = models.BooleanField(
        default=True,
        help_text=(
            "False while the card's profile has not learned from it: judged "
            "fraud, it only counted toward velocity. The first label marking it "
            "legitimate teaches the profile and sets this (once)."
        ),
    )

    features = models.BinaryField(
        null=True,
        blank=True,
        editable=False,
        help_text=(
            "The model's input as scoring computed it (little-endian float32, "
            "detection.state.FEATURE_NAMES order): retrains fit these, so the "
            "model learns exactly what it is later asked. Null for rows stored "
            "without scoring (seed_transactions) or before this column existed."
        ),
    )

    objects = TransactionQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="transaction_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(risk_score__gte=0) & Q(risk_score__lte=1),
                name="transaction_risk_score_range",
            ),
        ]
        indexes = [
            # API list and dashboard table filtered by status, newest first.
            models.Index(fields=["status", "-id"], name="txn_status_recent"),
            # User history: validate-transaction context, detail page, user filter.
            models.Index(fields=["user_id", "-timestamp"], name="txn_user_time"),
            # API and dashboard time-range filters on event time.
            models.Index(fields=["timestamp"], name="txn_timestamp"),
            # Dashboard per-minute chart and stream latency reports.
            models.Index(fields=["scored_at"], name="txn_scored_at"),
        ]

    def __str__(self) -> str:
        return f"{self.transaction_id} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("transaction-detail", args=[self.transaction_id])

    @property
    def amount_shown(self) -> str:
        """Return the amount with its currency's decimals (12.50 USD, 100 JPY)."""
        return amount_text(self.amount, self.currency)


class VerdictTally(models.Model):
    """Counts of verdicts per minute of scoring time, maintained on every write.

    The dashboard and the API read totals and the per-minute chart from here instead
    of running COUNT(*) over millions of transactions per request.
    """

    minute = models.DateTimeField(unique=True)
    total = models.PositiveIntegerField(default=0)
    legit = models.PositiveIntegerField(default=0)
    suspicious = models.PositiveIntegerField(default=0)
    fraud = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-minute"]
        verbose_name_plural = "verdict tallies"

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} total={self.total}"


class ReasonTally(models.Model):
    """How often each reason (rule code) fired per minute of scoring time, and how
    often in a flagged verdict; kept on every write, as VerdictTally, so the rule
    performance panel never scans the ledger."""

    minute = models.DateTimeField()
    code = models.CharField(max_length=32)
    fired = models.PositiveIntegerField(default=0)
    flagged = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-minute", "code"]
        verbose_name_plural = "reason tallies"
        constraints = [
            models.UniqueConstraint(fields=["minute", "code"], name="reason_tally_key")
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.code}={self.fired}"


class LabelQuerySet(models.QuerySet):
    """Chainable reads of analyst and chargeback labels."""

    def latest_first(self) -> LabelQuerySet:
        """Return labels newest first (the first one of a transaction wins)."""
        return self.order_by("-created_at", "-id")


# A label as analysts read it (the API's and the admin's label history).
LABEL_SHOWN_FIELDS = (
    "is_fraud",
    "source",
    "note",
    "reference",
    "created_by",
    "created_at",
    "reported_at",
)


class Label(models.Model):
    """Ground truth about one transaction, given after the fact.

    Labels are history: a new label never edits an old one, and the latest label of
    a transaction wins. A label never changes the stored verdict; it feeds training.
    """

    class Source(models.TextChoices):
        ANALYST = "analyst", "Analyst"
        CHARGEBACK = "chargeback", "Chargeback"

    transaction = models.ForeignKey(
        Transaction, on_delete=models.PROTECT, related_name="labels"
    )
    is_fraud = models.BooleanField()
    source = models.CharField(
        max_length=16, choices=Source.choices, default=Source.ANALYST
    )
    note = models.TextField(blank=True, max_length=1000)
    reference = models.CharField(
        max_length=160,
        blank=True,
        help_text=(
            "The report's own id (a chargeback's dispute id, or the Kafka position "
            "it came from); one source stores a reference once."
        ),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    reported_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=(
            "When the network issued the report (chargebacks that say so): a "
            "dispute's stages apply in this order, whatever order they arrive in."
        ),
    )

    objects = LabelQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # "Latest label of a transaction": the API and dashboard prefetch, admin.
            models.Index(
                fields=["transaction", "-created_at", "-id"], name="label_txn_latest"
            ),
        ]
        constraints = [
            # A chargeback feed replayed (at-least-once delivery) labels once:
            # detection.chargebacks skips stored references, and this catches races.
            models.UniqueConstraint(
                fields=["source", "reference"],
                condition=~models.Q(reference=""),
                name="label_source_reference",
            ),
        ]

    def __str__(self) -> str:
        verdict = "fraud" if self.is_fraud else "legit"
        return f"{self.transaction_id}: {verdict} ({self.source})"
