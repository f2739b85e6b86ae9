"""Device tags: kept on the device; a managed device also reports the ones that changed to
the cloud (apps_api/cloud/report.py) and reads them back from it."""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction

from hostcfg.models import DeviceTag


class TagsInvalid(ValueError):
    """A tags body that is not a flat object of strings (answered 400)."""


INVALID_TAGS_BODY = "Invalid tags body, must be an object like `{[tagKey: string]: string}`"
WHITESPACE = re.compile(r"\s")
RESERVED_TAG_PREFIXES = ("io.balena.", "io.resin.")
MAX_TAG_VALUE_CHARS = 10_000


def list_tags() -> list[dict[str, Any]]:
    return [{"id": tag.pk, "name": tag.name, "value": tag.value} for tag in DeviceTag.objects.all()]


def validate_tags(body: object) -> dict[str, str]:
    if hasattr(body, "dict") and callable(body.dict):  # a form body: one value per key
        body = body.dict()
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        raise TagsInvalid(INVALID_TAGS_BODY)
    if any(not isinstance(k, str) or not k or len(k) > 255 or WHITESPACE.search(k) for k in body):
        raise TagsInvalid("Tag keys cannot contain whitespace")
    # What the balena API refuses for the whole report, so that one such tag would stop every
    # later tag from reaching the cloud: refused here, naming it.
    for key, value in body.items():
        if key.startswith(RESERVED_TAG_PREFIXES):
            raise TagsInvalid(f"Tag '{key}': keys starting with io.balena. or io.resin. are reserved")
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise TagsInvalid(f"Tag '{key}': the value is longer than {MAX_TAG_VALUE_CHARS} characters")
    return dict(body)


@transaction.atomic
def set_tags(tags: dict[str, str]) -> None:
    """Set each given tag to its value; other tags are left as they are."""
    for name, value in tags.items():
        DeviceTag.objects.update_or_create(name=name, defaults={"value": value})


def unreported_tags() -> dict[str, str]:
    """The tags whose value the cloud has not accepted yet."""
    return {tag.name: tag.value for tag in DeviceTag.objects.all() if tag.reported_value != tag.value}


@transaction.atomic
def mark_reported(tags: dict[str, str]) -> None:
    """The cloud accepted these values (a tag changed again meanwhile stays unreported)."""
    for name, value in tags.items():
        DeviceTag.objects.filter(name=name, value=value).update(reported_value=value)
