"""Device data kept in SQLite by the host side of the supervisor."""

from __future__ import annotations

from django.db import models


class DeviceTag(models.Model):
    """A device tag; kept here when the device is unmanaged (the cloud keeps them otherwise)."""

    name = models.CharField(max_length=255, unique=True)
    value = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
