"""Admin: rules and thresholds are editable (validated); the rest is read-only."""

from datetime import UTC

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.db import models
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from detection.alerts import alert_test_send
from detection.classifier import classifier_summary
from detection.models import (
    AlertDelivery,
    AlertWebhook,
    BacktestJob,
    DeadLetter,
    DecisionThresholds,
    ExchangeRate,
    ListEntry,
    ModelVersion,
    Rule,
    UserProfile,
)
from detection.registry import model_active_row, model_load, model_version_activate
from detection.rules import LEARNED_FRAUD, MODEL_ANOMALY, RULE_TYPES
from detection.scoring import scoring_config_current
from detection.services import dead_letters_redrive
from fraudsite.admin_paging import LargeTableAdmin


class ChangeValuesAdmin(admin.ModelAdmin):
    """Record each change in the admin's history with its old and new values.

    Django's history says only "Changed weight."; for the settings that decide
    verdicts (rules, thresholds, exchange rates) an audit needs what it was and
    what it became. The list page's inline edits are recorded the same way.
    """

    def construct_change_message(self, request, form, formsets, add=False):
        if add or not form.changed_data:
            return super().construct_change_message(request, form, formsets, add)
        # The new value as saved: the model's clean() completes and normalises
        # some (a rule's params get their defaults), unlike the form's input.
        changes = [
            f"{form.fields[name].label or name}: "
            f"{form.initial.get(name)!r} \u2192 "
            f"{getattr(form.instance, name, form.cleaned_data.get(name))!r}"
            for name in form.changed_data
        ]
        return "Changed " + "; ".join(changes) + "."


def _minute(moment) -> str:
    """Return a time as "2026-11-30 14:28" in UTC (the list's columns stay narrow)."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _brief(text: str, limit: int = 60):
    """Return text cut to `limit` characters at a word, whole in a tooltip."""
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(limit))


class ReadOnlyAdmin(admin.ModelAdmin):
    """Show rows without letting anyone add, change or delete them.

    Not deleting matters beyond the audit trail: a user's `txn_count` is the
    version consumers check their cached state against, and a deleted profile
    would restart it at 0, where a consumer's stale cache could match it again.
    """

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Rule)
class RuleAdmin(ChangeValuesAdmin):
    list_display = ("code_raw", "name", "enabled", "weight", "params", "updated_at")
    list_editable = ("enabled", "weight")
    readonly_fields = ("updated_at",)
    fields = (
        "code",
        "name",
        "description",
        "enabled",
        "weight",
        "params",
        "updated_at",
    )

    @admin.display(description="Code", ordering="code")
    def code_raw(self, obj):
        """Return the rule code as reasons and filters spell it (amount_spike)."""
        return obj.code

    def get_readonly_fields(self, request, obj=None):
        # The code ties the row to its logic; changing it would swap the rule.
        return ("code_raw", "updated_at") if obj else ("updated_at",)

    def get_fields(self, request, obj=None):
        # An existing rule shows its code as reasons spell it (geo_velocity),
        # not the choice's label (Impossible travel), which is its name.
        fields = super().get_fields(request, obj)
        return [("code_raw" if f == "code" else f) for f in fields] if obj else fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        """Return the form with this rule's parameters explained under Params
        (meaning, range, default), and what its weight does."""
        form = super().get_form(request, obj, change=change, **kwargs)
        rule_type = RULE_TYPES.get(obj.code) if obj is not None else None
        if rule_type is None:
            return form
        if "params" in form.base_fields:
            form.base_fields["params"].help_text = format_html(
                "A JSON object; keys left out take their default.<br>{}",
                format_html_join(
                    mark_safe("<br>"),
                    "<code>{}</code>: {} ({} to {}, default {})",
                    (
                        (key, spec.help, f"{spec.minimum:g}", f"{spec.maximum:g}",
                         f"{spec.default:g}")
                        for key, spec in rule_type.params.items()
                    ),
                ),
            )  # fmt: skip
        if "weight" in form.base_fields and rule_type.code in (
            MODEL_ANOMALY,
            LEARNED_FRAUD,
        ):
            form.base_fields["weight"].help_text = (
                "At most this much risk (0..1), added continuously: the model's "
                "from its floor to its ceiling percentile, the classifier's as "
                "weight x probability; named a reason from its threshold."
            )
        return form

    def has_add_permission(self, request):
        # One row per rule the code implements: once each has its row (the seed
        # migration makes them), "Add" could only fail.
        return super().has_add_permission(request) and (
            Rule.objects.filter(code__in=RULE_TYPES).count() < len(RULE_TYPES)
        )

    def has_delete_permission(self, request, obj=None):
        # A deleted rule silently stops scoring and loses its tuned params;
        # "enabled" switches a rule off and keeps them.
        return False


class ExchangeRateForm(forms.ModelForm):
    """Take a currency code in any letter case (`zwg`), as messages do."""

    class Meta:
        model = ExchangeRate
        fields = ["currency", "units_per_base"]

    def clean_currency(self):
        # Before the model's checks (three capitals, in use, unique, not the base).
        return self.cleaned_data["currency"].upper()


@admin.register(ExchangeRate)
class ExchangeRateAdmin(ChangeValuesAdmin):
    form = ExchangeRateForm
    list_display = ("currency", "units_per_base", "updated_at")
    list_editable = ("units_per_base",)
    search_fields = ("currency",)
    readonly_fields = ("updated_at",)

    def has_delete_permission(self, request, obj=None):
        # Stored transactions in that currency would be trained on unconverted.
        return False


@admin.register(DecisionThresholds)
class DecisionThresholdsAdmin(ChangeValuesAdmin):
    list_display = ("suspicious", "fraud", "updated_at")

    def has_add_permission(self, request):
        return not DecisionThresholds.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = (
        "version",
        "is_active",
        "sample_count",
        "trained_at_brief",
        "trained_until_brief",
        "classifier_brief",
        "activation_brief",
    )
    # The version's own page: what it is and why it was (not) activated first;
    # the percentile tables (a thousand numbers each) summarised, not dumped.
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "version",
                    "is_active",
                    "activation",
                    "classifier",
                    "trained_at",
                    "trained_from",
                    "trained_until",
                    "sample_count",
                )
            },
        ),
        (
            "Details",
            {
                "fields": (
                    "algorithm",
                    "params",
                    "feature_names",
                    "score_percentiles",
                    "evaluation",
                    "artifact_sha256",
                    "classifier_sha256",
                    "classifier_info",
                )
            },
        ),
    )
    # The list shows the gist in a line (the full sentences made it wider than
    # the screen); the version's own page has them whole.
    readonly_fields = ("classifier", "activation", "score_percentiles")
    # No filter sidebar: versions are few, "Is active" is a column, and the
    # sidebar's width pushed the decision column out of view.
    actions = ["activate"]

    def get_queryset(self, request):
        """Leave the model files (a few MB a version) unread: no page shows
        them; Activate reads the one it verifies."""
        return super().get_queryset(request).defer("artifact", "classifier_artifact")

    @admin.action(
        description="Activate: score with the selected version (roll back/forward)",
        permissions=["activate"],
    )
    def activate(self, request, queryset):
        """Make the one selected version active, once it loads and verifies."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        row = queryset.get()
        try:
            model_load(row)  # checksum, features, artifact: refuse a broken one
        except Exception as exc:
            self.message_user(
                request, f"Model {row.version} was not activated: {exc}", messages.ERROR
            )
            return
        previous = model_active_row()
        model_version_activate(version=row.version)
        self.log_change(
            request,
            row,
            f"Activated (was {previous.version if previous else 'no model'}).",
        )
        text = (
            f"Model {row.version} is active; running scorers switch within "
            f"{settings.DETECTION_CONFIG_REFRESH_SECONDS:g} s."
        )
        level = messages.SUCCESS
        if (
            scoring_config_current().learned_fraud_enabled
            and not row.classifier_info
            and previous is not None
            and previous.classifier_info
        ):
            text += (
                " It has no classifier on labels: learned_fraud goes silent "
                f"(it had one in {previous.version})."
            )
            level = messages.WARNING
        self.message_user(request, text, level)

    @admin.display(description="Classifier on labels")
    def classifier(self, obj):
        """Return what the version's classifier learned from, or why it has none
        (the retrain's words: too few mature labels, say)."""
        if obj.classifier_info:
            return classifier_summary(obj.classifier_info)
        return (obj.evaluation or {}).get("classifier") or "none"

    @admin.display(description="Retrain's activation decision")
    def activation(self, obj):
        """Return whether the retrain activated this version, and why."""
        if not obj.evaluation:
            return "-"
        verb = "activated" if obj.evaluation.get("activate") else "not activated"
        return f"{verb}: {obj.evaluation.get('reason', '')}"

    @admin.display(description="Training anomaly scores")
    def score_percentiles(self, obj):
        """Return a few of the stored score percentiles (the thresholds the
        model_anomaly rule reads), instead of all thousand."""
        quantiles = obj.score_quantiles or []
        if len(quantiles) < 2:
            return "-"
        last = len(quantiles) - 1
        picks = (("p1", 0.01), ("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        parts = [f"{name} {quantiles[round(q * last)]:.3f}" for name, q in picks]
        return f"{', '.join(parts)} ({len(quantiles):,} percentiles stored)"

    @admin.display(description="Trained at (UTC)", ordering="trained_at")
    def trained_at_brief(self, obj):
        return _minute(obj.trained_at)

    @admin.display(description="Trained until (UTC)", ordering="trained_until")
    def trained_until_brief(self, obj):
        return _minute(obj.trained_until)

    @admin.display(description="Classifier on labels")
    def classifier_brief(self, obj):
        """Return the classifier's label counts and held-out AP in a line, or
        why it has none, cut short with the whole text on hover."""
        info = obj.classifier_info
        if info:
            text = f"{info['fraud']:,} fraud / {info['legit']:,} legit"
            if info.get("held_out_average_precision") is not None:
                text += f", held-out AP {info['held_out_average_precision']:.2f}"
            return format_html('<span title="{}">{}</span>', self.classifier(obj), text)
        return _brief(self.classifier(obj))

    @admin.display(description="Retrain's activation decision")
    def activation_brief(self, obj):
        """Return the activation decision with its reason cut short."""
        return _brief(self.activation(obj))

    def has_activate_permission(self, request):
        """Return whether the user may switch the scoring model."""
        return request.user.has_perm("detection.change_modelversion")


@admin.register(BacktestJob)
class BacktestJobAdmin(LargeTableAdmin, ReadOnlyAdmin):
    """Backtest jobs (POST /api/backtest/jobs), newest first: read-only, as
    the worker alone writes them; "Stale" marks one that will not finish."""

    list_display = (
        "id",
        "status",
        "stale",
        "progress",
        "requested_by",
        "window",
        "created_at",
        "finished_at",
        "error_brief",
    )
    list_filter = ("status",)
    list_select_related = ("requested_by",)
    readonly_fields = ("stale", "progress")

    def get_queryset(self, request):
        return super().get_queryset(request).with_queue_activity()

    @admin.display(boolean=True, description="Stale")
    def stale(self, obj):
        """Return whether its worker stopped writing (see BacktestJob.is_stale)."""
        return obj.is_stale

    @admin.display(description="Rows done")
    def progress(self, obj):
        """Return "rows done / total (percent)"."""
        percent = 100 * obj.rows_done / obj.rows_total if obj.rows_total else 0
        return f"{obj.rows_done:,} / {obj.rows_total:,} ({percent:.0f}%)"

    @admin.display(description="Window (UTC)")
    def window(self, obj):
        """Return since, train_until and until, to the minute."""
        return (
            f"{_minute(obj.since)} | {_minute(obj.train_until)} | {_minute(obj.until)}"
        )

    @admin.display(description="Error")
    def error_brief(self, obj):
        """Return the start of the error (whole in a tooltip)."""
        return _brief(obj.error)


@admin.register(UserProfile)
class UserProfileAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = (
        "user_id",
        "txn_count",
        "last_location",
        "home_location",
        "updated_at",
    )
    search_fields = ("user_id__exact",)


class DeadLetterResolvedFilter(admin.SimpleListFilter):
    title = "resolved"
    parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return [("no", "Unresolved"), ("yes", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "topic",
        "partition",
        "offset",
        "payload",
        "error",
        "created_at",
        "resolved_at",
        "resolution",
    )
    list_filter = (DeadLetterResolvedFilter, "topic")
    # The raw record's text too: find a letter by its transaction or user id.
    search_fields = ("error", "raw_preview")
    exclude = ("raw_value",)
    actions = ["redrive", "dismiss"]

    def get_queryset(self, request):
        """Leave the raw records (up to the broker's message size each) unread:
        the pages show `raw_preview`; the redrive reads them, in one query."""
        return super().get_queryset(request).defer("raw_value")

    @admin.display(description="Record (start)")
    def payload(self, obj):
        """Return the start of the raw record: its ids, when it is JSON at all."""
        preview = obj.raw_preview
        return preview if len(preview) <= 80 else preview[:79] + "\u2026"

    @admin.action(
        description="Redrive: score (chargebacks: apply) the selected letters again",
        permissions=["redrive"],
    )
    def redrive(self, request, queryset):
        """Decode the selected letters again and score those valid now."""
        report = dead_letters_redrive(
            letters=list(queryset.filter(resolved_at__isnull=True).defer(None)),
            config=scoring_config_current(),
        )
        self.message_user(
            request,
            f"{report.summary()} (see Resolution).",
            messages.WARNING if report.unresolved else messages.SUCCESS,
        )

    def has_redrive_permission(self, request):
        """Return whether the user may redrive (it writes transactions)."""
        return request.user.has_perm("detection.redrive_deadletter")

    @admin.action(
        description="Dismiss: mark the selected letters resolved, not to be scored",
        permissions=["dismiss"],
    )
    def dismiss(self, request, queryset):
        """Resolve letters no fix will make valid (garbage, a test record), so
        that they stop counting as waiting; the record stays, with who did it."""
        now = timezone.now()
        letters = list(queryset.filter(resolved_at__isnull=True))
        for letter in letters:
            letter.resolved_at = now
            letter.resolution = (
                f"Dismissed by {request.user.get_username()}: not to be scored."
            )
        DeadLetter.objects.bulk_update(letters, ["resolved_at", "resolution"])
        for letter in letters:
            self.log_change(request, letter, "Dismissed: not to be scored.")
        self.message_user(
            request,
            f"{len(letters):,} dead letter{'s' if len(letters) != 1 else ''} "
            "dismissed.",
            messages.SUCCESS,
        )

    def has_dismiss_permission(self, request):
        """Return whether the user may resolve letters (Risk admin)."""
        return request.user.has_perm("detection.change_deadletter")


def _deliveries_count(state: str) -> Coalesce:
    """Return the count of a webhook's deliveries in `state`, as a subquery."""
    counted = (
        AlertDelivery.objects.filter(webhook=OuterRef("pk"), state=state)
        .order_by()
        .values("webhook")
        .annotate(count=Count("*"))
        .values("count")
    )
    return Coalesce(Subquery(counted), 0)


@admin.register(AlertWebhook)
class AlertWebhookAdmin(admin.ModelAdmin):
    """Webhooks are deactivated, not deleted: their deliveries stay as a record."""

    list_display = ("name", "url", "min_status", "is_active", "pending", "failed")
    list_editable = ("is_active",)
    readonly_fields = ("created_at",)
    actions = ["send_test"]
    # A URL typed without a scheme means https (Django 6's default).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        """Count each webhook's pending and failed deliveries, each by a
        subquery on the (webhook, state) index: a join and count of all its
        deliveries (millions, kept as the record) grew with every alert."""
        return (
            super()
            .get_queryset(request)
            .annotate(
                pending_count=_deliveries_count(AlertDelivery.State.PENDING),
                failed_count=_deliveries_count(AlertDelivery.State.FAILED),
            )
        )

    @admin.display(description="pending", ordering="pending_count")
    def pending(self, obj):
        return obj.pending_count

    @admin.display(description="failed", ordering="failed_count")
    def failed(self, obj):
        return obj.failed_count

    @admin.action(
        description="Send a test event to the selected webhooks",
        permissions=["change"],
    )
    def send_test(self, request, queryset):
        """POST a signed "webhook.test" event now and report each answer."""
        for webhook in queryset:
            code, error = alert_test_send(webhook)
            if error:
                self.message_user(request, f"{webhook.name}: {error}", messages.ERROR)
            else:
                self.message_user(
                    request, f"{webhook.name}: answered HTTP {code}", messages.SUCCESS
                )


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(LargeTableAdmin):
    """Every queued alert and how sending it went; failed ones can be retried."""

    list_display = (
        "created_at",
        "transaction_id",
        "webhook",
        "state",
        "attempts",
        "last_status_code",
        "error_brief",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("state", "webhook")
    search_fields = ("transaction_id__exact",)
    readonly_fields = [f.name for f in AlertDelivery._meta.fields]
    actions = ["retry_now"]

    @admin.display(description="last error")
    def error_brief(self, obj):
        """Return the start of the last error (the delivery's page has it whole)."""
        return Truncator(obj.last_error).chars(80) or "-"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A record, not a form: every field is read-only, so no Save buttons
        (the change permission is for the Send now action)."""
        extra_context = {
            **(extra_context or {}),
            "title": "Alert delivery",
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(
        description="Send now (failed, or waiting for a retry)",
        permissions=["change"],
    )
    def retry_now(self, request, queryset):
        """Make the selected undelivered ones that already failed once due now:
        failed ones get one more attempt, waiting ones skip the rest of their
        backoff (after a receiver is fixed). Delivery is at least once: one
        being sent at this very moment may go twice, and receivers deduplicate
        on the event id."""
        count = (
            queryset.exclude(state=AlertDelivery.State.DELIVERED)
            .filter(attempts__gt=0)
            .update(state=AlertDelivery.State.PENDING, next_attempt_at=timezone.now())
        )
        self.message_user(
            request, f"{count} deliveries due now; Celery sends them within seconds."
        )


@admin.register(LogEntry)
class AdminChangeLogAdmin(LargeTableAdmin, ReadOnlyAdmin):
    """Every change made in the admin, with its author and time: the audit log of
    rules, thresholds, rates, webhooks, labels and users. Read-only."""

    list_display = ("action_time", "user", "content_type", "object_repr", "change")
    list_filter = ("content_type", "action_flag")
    search_fields = ("object_repr", "change_message", "user__username")
    date_hierarchy = "action_time"

    @admin.display(description="Change")
    def change(self, obj):
        return obj.get_change_message() or obj.get_action_flag_display()


@admin.register(ListEntry)
class ListEntryAdmin(ChangeValuesAdmin):
    """Cards, merchants and countries blocked (fraud) or allowed (legit)."""

    list_display = (
        "kind",
        "value",
        "action",
        "note",
        "expires_at",
        "created_by",
        "created_at",
    )
    # created_by is nullable, which Django's automatic select_related skips.
    list_select_related = ("created_by",)
    list_filter = ("action", "kind")
    search_fields = ("value", "note")
    readonly_fields = ("created_by", "created_at", "updated_at")
    fields = ("kind", "value", "action", "note", "expires_at", *readonly_fields)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class ListEntryForm(form):
            def clean_expires_at(self):
                # As the API: a new expiry in the past would end the entry
                # before it starts (an unchanged old one may stay as it is).
                value = self.cleaned_data.get("expires_at")
                changed = "expires_at" in self.changed_data
                if value is not None and changed and value <= timezone.now():
                    raise forms.ValidationError(
                        "Must be in the future (empty: until removed)."
                    )
                return value

        return ListEntryForm

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
