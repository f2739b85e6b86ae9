"""Device data kept in SQLite by the host side of the supervisor."""

from __future__ import annotations

from django.db import models


class DeviceTag(models.Model):
    """A device tag as set on the device. An unmanaged device keeps its tags here; a managed
    one also reports them to the cloud, `reported_value` being what the cloud accepted."""

    name = models.CharField(max_length=255, unique=True)
    value = models.TextField(blank=True, default="")
    # null: never accepted, which an accepted empty value must not look like.
    reported_value = models.TextField(  # noqa: DJ001
        null=True, blank=True, help_text="the value the cloud last accepted"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
