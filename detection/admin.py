"""Admin: rules and thresholds are editable (validated); the rest is read-only."""

from django.contrib import admin

from detection.models import (
    DeadLetter,
    DecisionThresholds,
    ModelVersion,
    Rule,
    UserProfile,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Show rows without letting anyone add or change them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "enabled", "weight", "params", "updated_at")
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

    def get_readonly_fields(self, request, obj=None):
        # The code ties the row to its logic; changing it would swap the rule.
        return ("code", "updated_at") if obj else ("updated_at",)


@admin.register(DecisionThresholds)
class DecisionThresholdsAdmin(admin.ModelAdmin):
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
        "trained_at",
        "trained_until",
    )
    exclude = ("artifact",)
    list_filter = ("is_active",)


@admin.register(UserProfile)
class UserProfileAdmin(ReadOnlyAdmin):
    list_display = (
        "user_id",
        "txn_count",
        "last_location",
        "home_location",
        "updated_at",
    )
    search_fields = ("=user_id",)
    show_full_result_count = False


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("id", "topic", "partition", "offset", "error", "created_at")
    list_filter = ("topic",)
    search_fields = ("error",)
    exclude = ("raw_value",)
