"""Detection data: rules, thresholds, user profiles, model versions, dead letters."""

from __future__ import annotations

import math
import secrets
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
    URLValidator,
)
from django.db import models
from django.db.models import Q

from detection.rules import RULE_TYPES, RuleParamsError, rule_params_validate
from transactions.messages import country_codes, currency_codes, id_problem


def currency_in_use_validate(value: str) -> None:
    """Refuse three capitals that name no currency in use ("EUD" for EUR): a rate
    stored for them would never convert a real payment."""
    if len(value) == 3 and value.isupper() and value not in currency_codes():
        raise ValidationError(
            "%(value)s is not the ISO 4217 code of a currency in use (e.g. EUR, GBP).",
            params={"value": value},
        )


class Rule(models.Model):
    """A detection rule's parameters; its logic lives in `detection.rules`."""

    code = models.CharField(
        max_length=32,
        unique=True,
        choices=[(code, rule.name) for code, rule in RULE_TYPES.items()],
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    weight = models.FloatField(
        help_text="Contribution to the risk score when the rule fires (0..1)."
    )
    params = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(weight__gte=0) & Q(weight__lte=1), name="rule_weight_0_1"
            ),
        ]

    def __str__(self) -> str:
        return self.code

    def clean(self) -> None:
        """Refuse parameters that do not fit the rule type, naming the bad key."""
        if not 0 <= (self.weight if self.weight is not None else -1) <= 1:
            raise ValidationError({"weight": "Must be between 0 and 1."})
        try:
            self.params = rule_params_validate(self.code, self.params)
        except RuleParamsError as exc:
            raise ValidationError(
                {"params": [f"{key}: {text}" for key, text in exc.errors.items()]}
            ) from exc


class DecisionThresholds(models.Model):
    """The risk-score cut-offs for `suspicious` and `fraud` (a single row, pk=1)."""

    suspicious = models.FloatField(default=0.5)
    fraud = models.FloatField(default=0.8)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "decision thresholds"
        verbose_name_plural = "decision thresholds"
        constraints = [
            models.CheckConstraint(
                condition=Q(suspicious__gt=0)
                & Q(suspicious__lt=models.F("fraud"))
                & Q(fraud__lte=1),
                name="thresholds_ordered",
                # Admin shows this (model validation checks constraints), so
                # analysts read the rule, not the constraint's name.
                violation_error_message="Need 0 < suspicious < fraud <= 1.",
            ),
        ]

    def __str__(self) -> str:
        return f"suspicious >= {self.suspicious}, fraud >= {self.fraud}"

    RULE = "0 < suspicious < fraud <= 1"

    @staticmethod
    def ordered(suspicious, fraud) -> bool:
        """Return whether two cut-offs are usable: numbers (not NaN) with
        0 < suspicious < fraud <= 1, as the table's constraint demands (the API
        and a backtest's draft check them before any write)."""
        numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in (suspicious, fraud)
        )
        return numbers and 0 < suspicious < fraud <= 1


class ExchangeRate(models.Model):
    """How many units of a currency one unit of BASE_CURRENCY buys.

    Scorers divide an amount by its currency's rate, so that every amount rule,
    profile statistic and model feature compares like with like. Re-read with
    the rules (DETECTION_CONFIG_REFRESH_SECONDS); a currency without a row is
    refused at the stream's and the API's door.
    """

    currency = models.CharField(
        max_length=3,
        unique=True,
        validators=[
            RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code: three capitals."),
            currency_in_use_validate,
        ],
    )
    # Bounds wide enough for any real pair (IRR per KWD is about 1.4e5, KWD per
    # IRR 7e-6) that still catch a typo like 1e-30, which would make a 10-unit
    # charge read as 1e31 and spoil the card's profile for good.
    units_per_base = models.FloatField(
        help_text="Units of this currency per one unit of BASE_CURRENCY.",
        validators=[MinValueValidator(1e-6), MaxValueValidator(1e7)],
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["currency"]
        constraints = [
            models.CheckConstraint(
                condition=Q(units_per_base__gt=0),
                name="exchange_rate_positive",
                violation_error_message="A rate must be greater than 0.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.currency} {self.units_per_base:g}"

    def clean(self):
        """Refuse a row for the base currency: it is 1 by definition."""
        if self.currency == settings.BASE_CURRENCY:
            raise ValidationError(
                {
                    "currency": (
                        f"{self.currency} is the base currency (BASE_CURRENCY): "
                        "its rate is always 1 and needs no row."
                    )
                }
            )


class UserProfile(models.Model):
    """Durable per-user state, updated in the same transaction as the verdicts."""

    user_id = models.CharField(max_length=64, unique=True)
    txn_count = models.PositiveIntegerField(default=0)
    learned_count = models.PositiveIntegerField(
        default=0,
        help_text=(
            "Transactions the profile learned from: all but those judged fraud, "
            "which count toward velocity but not toward the typical amount, "
            "places, merchants or channels."
        ),
    )
    log_amount_mean = models.FloatField(default=0.0)
    log_amount_m2 = models.FloatField(default=0.0)
    last_epoch = models.FloatField(null=True, blank=True)
    last_latitude = models.FloatField(null=True, blank=True)
    last_longitude = models.FloatField(null=True, blank=True)
    last_located_epoch = models.FloatField(null=True, blank=True)
    last_location = models.CharField(max_length=128, blank=True)
    home_latitude = models.FloatField(null=True, blank=True)
    home_longitude = models.FloatField(null=True, blank=True)
    home_location = models.CharField(max_length=128, blank=True)
    countries = models.JSONField(default=list, blank=True)
    merchants = models.JSONField(default=list, blank=True)
    categories = models.JSONField(default=list, blank=True)
    channels = models.JSONField(
        default=dict, blank=True, help_text="Transactions per channel."
    )
    recent = models.JSONField(
        default=list, blank=True, help_text="[epoch, amount] pairs of the last 24 h."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user_id"]

    def __str__(self) -> str:
        return self.user_id


class ModelVersion(models.Model):
    """A trained model: the anomaly forest, the classifier on labels when there
    were enough, their features and training window."""

    version = models.CharField(max_length=64, unique=True)
    algorithm = models.CharField(max_length=64, default="isolation_forest")
    artifact = models.BinaryField(help_text="skops file (loading runs no code).")
    artifact_sha256 = models.CharField(max_length=64)
    feature_names = models.JSONField(default=list)
    params = models.JSONField(default=dict, blank=True)
    trained_from = models.DateTimeField(null=True, blank=True)
    trained_until = models.DateTimeField(null=True, blank=True)
    sample_count = models.PositiveIntegerField(default=0)
    score_quantiles = models.JSONField(
        default=list, blank=True, help_text="Training anomaly scores at 0.1% steps."
    )
    feature_quantiles = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "Training features at detection.explain's quantile levels: what model "
            "reasons call unusual (empty for models trained before)."
        ),
    )
    classifier_artifact = models.BinaryField(
        blank=True,
        default=b"",
        help_text=(
            "The supervised classifier trained on labels beside the forest (skops "
            "file; empty when there were too few labels: detection.classifier)."
        ),
    )
    classifier_sha256 = models.CharField(max_length=64, blank=True)
    classifier_info = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the classifier learned from, and its held-out precision.",
    )
    trained_at = models.DateTimeField()
    is_active = models.BooleanField(default=False)
    evaluation = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "The retrain's comparison with the model active then, on labelled "
            "transactions, and whether it was activated and why."
        ),
    )

    class Meta:
        ordering = ["-trained_at"]
        constraints = [
            # At most one active model: scorers load "the" active version.
            models.UniqueConstraint(
                fields=["is_active"],
                condition=Q(is_active=True),
                name="model_version_one_active",
            ),
        ]

    def __str__(self) -> str:
        return self.version + (" (active)" if self.is_active else "")


class DeadLetter(models.Model):
    """A record the stream could not score, kept with its error; never dropped."""

    raw_value = models.BinaryField()
    raw_preview = models.TextField(blank=True, help_text="First 2,000 characters.")
    error = models.TextField()
    topic = models.CharField(max_length=255, blank=True)
    partition = models.IntegerField(null=True, blank=True)
    offset = models.BigIntegerField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(
        null=True, blank=True, help_text="When a redrive scored or matched it."
    )
    resolution = models.TextField(
        blank=True, help_text="Outcome of the latest redrive (or its new error)."
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A replayed poison record is stored once: same position, same Kafka
            # timestamp. A different record at a reused position (a topic deleted
            # and made again, the embedded broker restarted) is kept too. A record
            # without a timestamp (message formats before Kafka 0.10) gets the time
            # it was read, so each replay of it is kept again: a copy, never a loss.
            models.UniqueConstraint(
                fields=["topic", "partition", "offset", "received_at"],
                name="dead_letter_record",
            ),
        ]
        indexes = [
            # The letters waiting for someone: counted on every overview load
            # and metrics scrape, listed by the admin's "Unresolved" filter and
            # the redrive, without reading the resolved ones (a producer bug
            # can leave millions, redriven or dismissed since).
            models.Index(
                fields=["id"],
                condition=Q(resolved_at__isnull=True),
                name="dead_letter_unresolved",
            ),
        ]
        # Redrive scores letters into the ledger: more than viewing them, and the
        # admin offers no other change to a letter.
        permissions = [("redrive_deadletter", "Can redrive dead letters")]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}: {self.error[:60]}"


def _webhook_secret() -> str:
    return secrets.token_hex(32)


class AlertWebhook(models.Model):
    """An HTTPS endpoint told of every flagged verdict (signed, retried).

    Verdicts at or above `min_status` are queued as `AlertDelivery` rows in the
    same database transaction that stores them (nothing flagged is lost between
    scoring and alerting); Celery sends them (`detection.alerts`).
    """

    class MinStatus(models.TextChoices):
        FRAUD = "fraud", "fraud only"
        SUSPICIOUS = "suspicious", "suspicious and fraud"

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(
        max_length=500,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Receives a POST of JSON per flagged transaction.",
    )
    secret = models.CharField(
        max_length=128,
        default=_webhook_secret,
        help_text=(
            "Signs each delivery: the X-Fraudsite-Signature header is "
            "t=T,v1=S where T is the Unix time of sending and S the hex "
            "HMAC-SHA256, with this secret, of T, a dot, and the request body."
        ),
    )
    min_status = models.CharField(
        max_length=16, choices=MinStatus.choices, default=MinStatus.FRAUD
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse cloud metadata addresses (link-local 169.254.0.0/16, fe80::/10,
        their IPv4-mapped forms, metadata.google.internal; detection.addresses):
        a webhook there would POST alerts, and the admin's test event would
        probe, where credentials live."""
        from detection.addresses import host_refusal

        refusal = host_refusal(urlsplit(self.url or "").hostname or "")
        if refusal:
            raise ValidationError({"url": f"Not allowed: {refusal}"})


class AlertDelivery(models.Model):
    """One flagged verdict for one webhook: its payload and how sending it went."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "failed (gave up)"

    # The event id receivers deduplicate on (a retry sends the same id).
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(
        AlertWebhook, on_delete=models.CASCADE, related_name="deliveries"
    )
    transaction_id = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "alert deliveries"
        indexes = [
            models.Index(
                fields=["state", "next_attempt_at"], name="alert_delivery_due"
            ),
            # The admin's counts per webhook and state, and its newest-first list.
            models.Index(fields=["webhook", "state"], name="alert_delivery_webhook"),
            models.Index(fields=["-created_at"], name="alert_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.transaction_id} -> {self.webhook_id} ({self.state})"


class ListEntry(models.Model):
    """A card, merchant or country on the block list or the allow list.

    Blocked: every transaction that matches is judged fraud (risk 1), with the
    entry named as its reason. Allowed: judged legit whatever the rules say (their
    reasons and risk are still shown, with a note). Block wins over allow. An
    entry past `expires_at` no longer applies. Scorers pick changes up within
    DETECTION_CONFIG_REFRESH_SECONDS, as rule edits.
    """

    class Kind(models.TextChoices):
        CARD = "card", "card (user_id)"
        MERCHANT = "merchant", "merchant (merchant_id)"
        COUNTRY = "country", "country (ISO 3166-1 alpha-2)"

    class Action(models.TextChoices):
        BLOCK = "block"
        ALLOW = "allow"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.CharField(max_length=64)
    action = models.CharField(max_length=8, choices=Action.choices)
    note = models.CharField(
        max_length=500, help_text="Why: shown in the reason of every verdict it sets."
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty: until removed."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "list entry"
        verbose_name_plural = "block and allow list"
        constraints = [
            # One decision per value: a card cannot be blocked and allowed at once.
            models.UniqueConstraint(fields=["kind", "value"], name="list_entry_value"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.kind} {self.value}"

    def clean(self) -> None:
        """Normalise the value (countries upper case) and refuse empty ones."""
        self.value = (self.value or "").strip()
        if self.kind == self.Kind.COUNTRY:
            self.value = self.value.upper()
            if self.value not in country_codes():
                raise ValidationError(
                    {"value": "A country is its ISO 3166-1 alpha-2 code, e.g. FR."}
                )
        if not self.value:
            raise ValidationError({"value": "Required."})
        if self.kind == self.Kind.CARD and (problem := id_problem(self.value)):
            # As the message parser refuses such a user_id: it could never match.
            raise ValidationError({"value": f"A card is a user_id: {problem}"})


class ListsVersion(models.Model):
    """One row whose number grows with every change of a ListEntry.

    Scorers reload the lists when it moved (detection.lists). A counter, not the
    newest `updated_at`: an edit that commits after a later-stamped one (or comes
    from a host with a slower clock) would not move a maximum of timestamps.
    """

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"lists version {self.version}"


def _lists_version_bump(**kwargs) -> None:
    updated = ListsVersion.objects.filter(pk=1).update(version=models.F("version") + 1)
    if not updated:
        ListsVersion.objects.get_or_create(pk=1, defaults={"version": 1})


models.signals.post_save.connect(_lists_version_bump, sender=ListEntry)
models.signals.post_delete.connect(_lists_version_bump, sender=ListEntry)


def _stale_cutoff():
    from django.utils import timezone

    return timezone.now() - timedelta(seconds=settings.API_BACKTEST_JOB_STALE_SECONDS)


class BacktestJobQuerySet(models.QuerySet):
    def with_queue_activity(self) -> BacktestJobQuerySet:
        """Annotate each job with whether a running job wrote within
        API_BACKTEST_JOB_STALE_SECONDS (`is_stale` of a queued job), in the
        same query: a list of many queued jobs asks it once, not per job."""
        running = BacktestJob.objects.filter(
            status=BacktestJob.Status.RUNNING, updated_at__gte=_stale_cutoff()
        )
        return self.annotate(queue_worked_on=models.Exists(running))


class BacktestJob(models.Model):
    """A backtest of the stored ledger run by a Celery worker (POST
    /api/backtest/jobs): the request, its progress and its answer.

    The worker writes `rows_done` (and so `updated_at`, its heartbeat) at most
    once a second; a queued or running job whose heartbeat is older than
    API_BACKTEST_JOB_STALE_SECONDS is shown as stale (`is_stale`): its worker
    died or none took it, and it will not finish.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    since = models.DateTimeField()
    train_until = models.DateTimeField()
    until = models.DateTimeField()
    draft = models.JSONField(
        null=True, blank=True, help_text="The draft's rule and threshold changes."
    )
    label_maturity_days = models.FloatField(default=0.0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    rows_done = models.BigIntegerField(default=0)
    rows_total = models.BigIntegerField(
        default=0, help_text="Stored transactions in the window when it was asked."
    )
    result = models.JSONField(
        null=True, blank=True, help_text="The answer POST /api/backtest gives."
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(
        auto_now=True, help_text="The worker's latest write (its heartbeat)."
    )

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    objects = BacktestJobQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Backtest {self.pk} ({self.status})"

    @property
    def is_stale(self) -> bool:
        """Return whether it is queued or running without a heartbeat for
        API_BACKTEST_JOB_STALE_SECONDS: it will not finish (start it again).

        A queued job waits for the jobs before it (the backtest worker runs one
        at a time): it is stale only when no running job wrote in that time
        either, that is when no worker is at work on the queue.
        """
        if self.status not in self.ACTIVE or self.updated_at is None:
            return False
        cutoff = _stale_cutoff()
        if self.updated_at >= cutoff:
            return False
        if self.status == self.Status.RUNNING:
            return True
        worked_on = getattr(self, "queue_worked_on", None)  # with_queue_activity
        if worked_on is None:
            worked_on = BacktestJob.objects.filter(
                status=self.Status.RUNNING, updated_at__gte=cutoff
            ).exists()
        return not worked_on
