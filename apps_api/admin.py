"""Read-mostly admin pages for debugging the device's state."""

from django.contrib import admin

from apps_api.models import (
    ActionRecord,
    ApiKey,
    App,
    Image,
    Network,
    ReleaseTrial,
    Service,
    StepRecord,
    TargetRecord,
    Volume,
)


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

    def lookup_allowed(self, lookup, value, request=None) -> bool:  # type: ignore[no-untyped-def]
        # A filter on the key (?key__startswith=…) would tell it, a character at a time.
        return not lookup.startswith("key") and super().lookup_allowed(lookup, value, request)


class ReadOnlyAdmin(admin.ModelAdmin):
    """State is changed by targets and the engine, never by hand in the admin."""

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


class ServiceInline(ReadOnlyInline):
    model = Service
    fields = readonly_fields = ("service_name", "service_id", "image_id", "image", "running")


class NetworkInline(ReadOnlyInline):
    model = Network
    fields = readonly_fields = ("name", "config")


class VolumeInline(ReadOnlyInline):
    model = Volume
    fields = readonly_fields = ("name", "config")


@admin.register(App)
class AppAdmin(ReadOnlyAdmin):
    list_display = ("app_id", "name", "uuid", "commit", "release_id", "source")
    inlines = [ServiceInline, NetworkInline, VolumeInline]


@admin.register(Service)
class ServiceAdmin(ReadOnlyAdmin):
    list_display = ("service_name", "app", "image", "service_id", "image_id", "running")
    list_filter = ("app",)


@admin.register(Network)
class NetworkAdmin(ReadOnlyAdmin):
    list_display = ("name", "app")


@admin.register(Volume)
class VolumeAdmin(ReadOnlyAdmin):
    list_display = ("name", "app")


@admin.register(Image)
class ImageAdmin(ReadOnlyAdmin):
    list_display = ("reference", "docker_id", "fetched_at")


@admin.register(TargetRecord)
class TargetRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "source", "force", "created_at")


@admin.register(StepRecord)
class StepRecordAdmin(ReadOnlyAdmin):
    """The journal: what was done to each service and why (causes never hold env values)."""

    list_display = (
        "created_at",
        "kind",
        "app_id",
        "service_name",
        "reason",
        "succeeded",
        "duration_ms",
        "error",
    )
    list_filter = ("kind", "succeeded", "app_id", "service_name")
    search_fields = ("reason", "service_name")
    readonly_fields = ("cause",)


@admin.register(ReleaseTrial)
class ReleaseTrialAdmin(ReadOnlyAdmin):
    list_display = ("app_id", "committed_commit", "trial_commit", "failed_commit", "failed_reason")


@admin.register(ActionRecord)
class ActionRecordAdmin(ReadOnlyAdmin):
    """The audit log of device API actions; pruned by itself (apps_api/audit.py)."""

    list_display = (
        "created_at",
        "key_kind",
        "app_id",
        "service_name",
        "method",
        "path",
        "status_code",
        "result",
    )
    list_filter = ("key_kind", "status_code", "method")
    search_fields = ("path", "result", "service_name")
