"""Admin for inspecting verdicts and their reasons."""

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Exists, OuterRef, Prefetch, Q
from django.utils.html import format_html, format_html_join

from detection.lists import LIST_ALLOW_CODE, LIST_BLOCK_CODE
from detection.rules import RULE_TYPES
from detection.services import transaction_label
from fraudsite.admin_paging import LargeTableAdmin
from transactions.models import LABEL_SHOWN_FIELDS, Label, Transaction, VerdictTally

# Every rule the scorer knows, and the block and allow lists.
RULE_CODES = (*RULE_TYPES, LIST_BLOCK_CODE, LIST_ALLOW_CODE)


class RuleFiredFilter(admin.SimpleListFilter):
    """Filter transactions by a rule that fired."""

    title = "rule fired"
    parameter_name = "rule"

    def lookups(self, request, model_admin):
        return [(code, code) for code in RULE_CODES]

    def queryset(self, request, queryset):
        if self.value():
            if self.value() not in RULE_CODES:
                # A hand-edited address: admin says "incorrect lookup".
                raise IncorrectLookupParameters(f"No rule {self.value()!r}.")
            return queryset.with_rule(self.value())
        return queryset


class LatestLabelFilter(admin.SimpleListFilter):
    """Filter transactions by their latest label, as the API's `label` does:
    not labelled (with status suspicious, the review queue), fraud or legit.

    Fraud and legit are read from the labels, a small share of the ledger, and
    their transactions fetched by primary key: the API's annotation of each
    transaction's latest label would read the ledger through until a page of
    labelled ones is found. Not labelled reads newest first and stops at a page
    (most transactions have no label), probing the labels' index per row.
    """

    title = "latest label"
    parameter_name = "label"

    def lookups(self, request, model_admin):
        return [
            ("none", "Not labelled"),
            ("fraud", "Confirmed fraud"),
            ("legit", "Legitimate"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == "none":
            return queryset.exclude(
                Exists(Label.objects.filter(transaction=OuterRef("pk")))
            )
        if value not in ("fraud", "legit"):
            raise IncorrectLookupParameters(f"No label {value!r}.")
        later = Label.objects.filter(transaction=OuterRef("transaction")).filter(
            Q(created_at__gt=OuterRef("created_at"))
            | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id"))
        )
        latest = Label.objects.filter(is_fraud=(value == "fraud")).exclude(
            Exists(later)
        )
        return queryset.filter(pk__in=latest.values("transaction"))


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


class LabelInline(admin.TabularInline):
    """The label history of a transaction, newest first (read only here)."""

    model = Label
    fields = LABEL_SHOWN_FIELDS
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Transaction)
class TransactionAdmin(LargeTableAdmin):
    inlines = (LabelInline,)
    list_display = (
        "transaction_id",
        "user_id",
        "amount_shown",
        "currency",
        "timestamp",
        "location",
        "status",
        "risk_score",
        "reasons_short",
        "label_latest",
    )
    list_filter = (
        "status",
        LatestLabelFilter,
        RuleFiredFilter,
        "channel",
        "timestamp",
    )
    # Exact-match search (an id as written) keeps the unique and (user_id,
    # timestamp) indexes usable. Not "=field": admin makes that iexact, a LIKE
    # on SQLite and UPPER() on PostgreSQL, which scan the ledger. merchant_id
    # has no index: searching it would read the whole ledger.
    search_fields = ("transaction_id__exact", "user_id__exact")
    search_help_text = (
        "A whole transaction id or user (card) id, exactly as stored, capitals "
        "included. Parts of ids, places and merchants are not searched: that "
        "would read the whole ledger (the dashboard's transaction list filters "
        "by merchant)."
    )
    list_per_page = 50
    readonly_fields = VERDICT_FIELDS
    fieldsets = (
        (
            "Transaction",
            {
                "fields": (
                    "transaction_id",
                    "user_id",
                    ("amount_shown", "currency"),
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
            return [
                *(f.name for f in Transaction._meta.fields),
                "amount_shown",
                *VERDICT_FIELDS,
            ]
        return VERDICT_FIELDS

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Evidence, counted in the verdict tallies and labelled: never deleted here.
        return False

    @admin.display(description="Amount", ordering="amount")
    def amount_shown(self, obj):
        # With its currency's decimals (12.50 USD, 100 JPY), not the column's 3.
        return obj.amount_shown

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

    @admin.display(description="Label")
    def label_latest(self, obj):
        labels = getattr(obj, "labels_latest_first", None)
        latest = labels[0] if labels else None
        if latest is None:
            return "-"
        return f"{'fraud' if latest.is_fraud else 'legit'} ({latest.source})"

    def get_queryset(self, request):
        # One prefetch query per changelist page instead of one per row.
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch(
                    "labels",
                    queryset=Label.objects.latest_first(),
                    to_attr="labels_latest_first",
                )
            )
        )


@admin.register(VerdictTally)
class VerdictTallyAdmin(LargeTableAdmin):
    list_display = ("minute", "total", "legit", "suspicious", "fraud")
    readonly_fields = ("minute", "total", "legit", "suspicious", "fraud")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # The stream maintains the tallies; the dashboard's totals come from them.
        return False


@admin.register(Label)
class LabelAdmin(LargeTableAdmin):
    list_display = (
        "transaction",
        "is_fraud",
        "source",
        "created_by",
        "created_at",
        "note",
        "reference",
    )
    list_filter = ("source", "is_fraud", "created_at")
    # Exact matches, as written: a transaction id or a chargeback reference.
    # Labels are a small share of the ledger; the search scans them.
    search_fields = ("transaction__transaction_id__exact", "reference__exact")
    list_select_related = ("transaction", "created_by")
    raw_id_fields = ("transaction",)
    # The reference is the chargeback feed's idempotency key (detection.chargebacks);
    # the source is "analyst" for every label made here: chargebacks come from the
    # feed, and one typed in would count as the card network's word.
    readonly_fields = ("source", "created_by", "created_at", "reference", "reported_at")

    def has_change_permission(self, request, obj=None):
        # Labels are appended, never edited or deleted: a correction is a new
        # label (the latest wins), and the history stays for audit and training.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        """Record the label as the API does (a legitimate fraud verdict teaches
        the card's profile), attributed to the signed-in user."""
        label = transaction_label(
            record=obj.transaction,
            is_fraud=obj.is_fraud,
            source=Label.Source.ANALYST,
            note=obj.note,
            created_by=obj.created_by or request.user,
        )
        obj.pk, obj.created_by, obj.created_at = (
            label.pk,
            label.created_by,
            label.created_at,
        )
