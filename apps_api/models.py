"""What the supervisor keeps in SQLite about applications and API access."""

from __future__ import annotations

from django.db import models


class ApiKey(models.Model):
    """A key that authenticates calls to the device API.

    The global (cloud) key has app_id 0 and no service; a service key belongs to one
    (app_id, service_name) and is scoped to that app.
    """

    GLOBAL_APP_ID = 0

    app_id = models.PositiveBigIntegerField(default=GLOBAL_APP_ID)
    service_name = models.CharField(max_length=255, blank=True, default="")
    key = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app_id", "service_name"], name="one_key_per_service"),
        ]
        verbose_name = "API key"

    def __str__(self) -> str:
        if self.app_id == self.GLOBAL_APP_ID:
            return "global key"
        return f"key of app {self.app_id} service {self.service_name}"

    @property
    def is_global(self) -> bool:
        return any(scope.get("type") == "global" for scope in self.scopes)
