"""Admin for inspecting verdicts and their reasons."""

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from transactions.models import Transaction, VerdictTally

RULE_CODES = (
    "amount_spike",
    "large_amount",
    "huge_amount",
    "geo_velocity",
    "high_velocity",
    "model_anomaly",
)


class RuleFiredFilter(admin.SimpleListFilter):
    """Filter transactions by a rule that fired."""

    title = "rule fired"
    parameter_name = "rule"

    def lookups(self, request, model_admin):
        return [(code, code) for code in RULE_CODES]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.with_rule(self.value())
        return queryset


VERDICT_FIELDS = (
    "risk_score",
    "status",
    "reasons_display",
    "notes",
    "model_score",
    "model_version",
    "scored_at",
    "received_at",
    "ingest_source",
)


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    list_display = (
        "transaction_id",
        "user_id",
        "amount",
        "currency",
        "timestamp",
        "location",
        "status",
        "risk_score",
        "reasons_short",
    )
    list_filter = ("status", RuleFiredFilter, "channel", "timestamp")
    # Exact-match search keeps the unique and (user_id, timestamp) indexes usable.
    search_fields = ("=transaction_id", "=user_id")
    # Counting millions of rows per page view would dominate the page time.
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = VERDICT_FIELDS
    fieldsets = (
        (
            "Transaction",
            {
                "fields": (
                    "transaction_id",
                    "user_id",
                    ("amount", "currency"),
                    "timestamp",
                    ("merchant_id", "merchant_category", "channel"),
                    ("location", "country"),
                    ("latitude", "longitude"),
                    "is_fraud",
                )
            },
        ),
        ("Verdict", {"fields": VERDICT_FIELDS}),
    )

    def get_readonly_fields(self, request, obj=None):
        # A stored transaction is evidence: nothing of it is editable.
        if obj is not None:
            return [f.name for f in Transaction._meta.fields] + list(VERDICT_FIELDS)
        return VERDICT_FIELDS

    def has_add_permission(self, request):
        return False

    @admin.display(description="Reasons")
    def reasons_display(self, obj):
        if not obj.reasons:
            return "none"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><strong>{}</strong> ({}): {}</li>",
                (
                    (r.get("label", r.get("code")), r.get("code"), r.get("detail", ""))
                    for r in obj.reasons
                ),
            ),
        )

    @admin.display(description="Reasons")
    def reasons_short(self, obj):
        return ", ".join(r.get("code", "") for r in obj.reasons or []) or "-"


@admin.register(VerdictTally)
class VerdictTallyAdmin(admin.ModelAdmin):
    list_display = ("minute", "total", "legit", "suspicious", "fraud")
    readonly_fields = ("minute", "total", "legit", "suspicious", "fraud")

    def has_add_permission(self, request):
        return False
