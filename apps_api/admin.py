"""Read-mostly admin pages for debugging the device's state."""

from django.contrib import admin

from apps_api.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "app_id", "service_name", "masked_key", "created_at")
    readonly_fields = ("app_id", "service_name", "masked_key", "scopes", "created_at")
    exclude = ("key",)

    @admin.display(description="key")
    def masked_key(self, obj: ApiKey) -> str:
        return f"…{obj.key[-4:]}"

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
