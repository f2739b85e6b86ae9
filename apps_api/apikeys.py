"""API keys: the global key, lookup of a presented key, and what a key gives access to."""

from __future__ import annotations

import hmac
import itertools
import threading
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.backends.signals import connection_created
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from apps_api.errors import NotInScope
from apps_api.models import ApiKey
from hostcfg.identity import DeviceIdentity, load_device_identity, new_device_secret

GLOBAL_SCOPES = [{"type": "global"}]


def get_or_create_global_key() -> ApiKey:
    """The global key, created on first use; safe when two processes start at once."""
    lookup = {"app_id": ApiKey.GLOBAL_APP_ID, "service_name": ""}
    existing = ApiKey.objects.filter(**lookup).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return ApiKey.objects.create(**lookup, key=new_device_secret(), scopes=GLOBAL_SCOPES)
    except IntegrityError:
        return ApiKey.objects.get(**lookup)


def find_api_key(presented: str) -> ApiKey | None:
    """The stored key equal to `presented`, compared in constant time against every key."""
    if not presented:
        return None
    found = None
    for candidate in _stored_keys():
        if hmac.compare_digest(candidate.key.encode(), presented.encode()):
            found = candidate
    return found


class _KeyCache(threading.local):
    """The keys as this thread's database connection last read them. Every request
    checks them, so they are read again only when the database changed: SQLite's
    `data_version` moves when another connection (another process) commits, and this
    process's own changes bump `_changes` (signals below). `data_version` means something
    only within one connection, so each new connection is numbered (a new one may get the
    address of the one just closed, and starts at the same `data_version`)."""

    version: tuple[int, int, int] | None = None
    keys: list[ApiKey] = []


_key_cache = _KeyCache()
_changes = itertools.count(1)
_generation = 0
_connection_numbers = itertools.count(1)
CONNECTION_NUMBER = "supervisor_connection_number"


@receiver(connection_created)
def _number_the_connection(connection: Any, **_: object) -> None:
    setattr(connection, CONNECTION_NUMBER, next(_connection_numbers))


def _stored_keys() -> list[ApiKey]:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA data_version")
        (data_version,) = cursor.fetchone()
    version = (getattr(connection, CONNECTION_NUMBER, 0), data_version, _generation)
    if _key_cache.version != version:
        _key_cache.keys = list(ApiKey.objects.only("id", "app_id", "service_name", "key", "scopes"))
        _key_cache.version = version
    return _key_cache.keys


@receiver(post_save, sender=ApiKey)
@receiver(post_delete, sender=ApiKey)
def _forget_cached_keys(**_: object) -> None:
    global _generation
    _generation = next(_changes)


def get_or_create_service_key(app_id: int, service_name: str) -> str:
    """The scoped key of a service labelled io.balena.features.supervisor-api: the same
    key every time, so the service's environment (and container) stays the same."""
    scopes = [{"type": "app", "appId": app_id}]
    existing = ApiKey.objects.filter(app_id=app_id, service_name=service_name).first()
    if existing is not None and existing.scopes == scopes:
        return existing.key
    with transaction.atomic():
        ApiKey.objects.filter(app_id=app_id, service_name=service_name).delete()
        return ApiKey.objects.create(
            app_id=app_id, service_name=service_name, key=new_device_secret(), scopes=scopes
        ).key


def stored_service_key(app_id: int, service_name: str) -> str | None:
    """The service's scoped key if one is stored; creates none (plans that change nothing)."""
    return (
        ApiKey.objects.filter(app_id=app_id, service_name=service_name).values_list("key", flat=True).first()
    )


def revoke_service_keys_except(kept: set[tuple[int, str]]) -> int:
    """Delete the key of every service not in `kept` (app id, service name): it left the
    target, or lost io.balena.features.supervisor-api. Keys without a service (the global
    key) stay. Returns how many were deleted."""
    stale = [key.pk for key in ApiKey.objects.exclude(service_name="").only("pk", "app_id", "service_name")
             if (key.app_id, key.service_name) not in kept]  # fmt: skip
    ApiKey.objects.filter(pk__in=stale).delete()
    return len(stale)


class UnknownApiKey(Exception):
    """The presented key is not a stored key (local mode's empty key included)."""


def regenerate_api_key(presented: str) -> str:
    """Replace the stored key equal to `presented` by a fresh one with the same app,
    service and scopes; the old key stops working at once. Returns the new key."""
    stored = find_api_key(presented)
    if stored is None:
        raise UnknownApiKey("Cannot regenerate an unknown API key")
    stored.key = new_device_secret()
    stored.save(update_fields=["key"])
    return stored.key


@dataclass(frozen=True)
class KeyHolder:
    """Whose key authenticated a request, without the key itself: the global (cloud) key, a
    service's key, or none (local mode). A regenerated key keeps its holder."""

    kind: str  # "global", "service" or "none"
    app_id: int | None = None
    service_name: str = ""

    @classmethod
    def of(cls, stored: ApiKey | None) -> KeyHolder:
        if stored is None:
            return cls(kind="none")
        if stored.is_global:
            return cls(kind="global")
        return cls(kind="service", app_id=stored.app_id, service_name=stored.service_name)

    @property
    def name(self) -> str:
        """A stable name for counting this holder's actions (never the key)."""
        if self.kind == "service":
            return f"service:{self.app_id}:{self.service_name}"
        return self.kind


@dataclass(frozen=True)
class ApiAccess:
    """What the caller may act on: every app, or only the listed app ids."""

    all_apps: bool
    app_ids: frozenset[int] = frozenset()
    key: str = ""
    holder: KeyHolder = KeyHolder(kind="none")

    def allows_app(self, app_id: int) -> bool:
        return self.all_apps or app_id in self.app_ids


def check_scope(access: ApiAccess, app_id: int, *, message: str = "Unauthorized", text: bool = False) -> None:
    """Refuse (NotInScope) an app outside the caller's key."""
    if not access.allows_app(app_id):
        raise NotInScope(message, text=text)


def prepare_device_identity() -> DeviceIdentity:
    """Start-up: make sure config.json and the global API key exist."""
    identity = load_device_identity()
    get_or_create_global_key()
    return identity
