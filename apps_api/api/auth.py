"""API key authentication for the device API (docs/api.md "API keys")."""

from __future__ import annotations

import re

from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps_api.api.browsers import check_keyless_request
from apps_api.apikeys import ApiAccess, KeyHolder, find_api_key
from apps_api.device_settings import local_mode_active
from apps_api.errors import ActionFailed, DeviceApiError
from hostcfg.identity import current_device_identity

AUTHORIZATION_HEADER = re.compile(r"(?:bearer|apikey) (\w+)", re.IGNORECASE)


def presented_key(request: HttpRequest | Request) -> str:
    """The `apikey` query parameter, else the key of `Authorization: Bearer|ApiKey <key>`."""
    if key := request.GET.get("apikey"):
        return key
    match = AUTHORIZATION_HEADER.fullmatch(request.META.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else ""


class ApiKeyAuthentication(BaseAuthentication):
    """Sets request.auth to an ApiAccess; in local mode (an unmanaged device, or the device
    config SUPERVISOR_LOCAL_MODE) no key is needed."""

    def authenticate(self, request: Request) -> tuple[None, ApiAccess] | None:
        try:
            access = access_for(request)
        except DeviceApiError:
            raise
        except Exception as exc:  # docs/api.md "API keys": an internal failure while checking is 503 text
            raise ActionFailed(f"Unexpected error: {exc}", text=True) from exc
        return None if access is None else (None, access)

    def authenticate_header(self, request: Request) -> str:
        return "ApiKey"


def access_for(request: HttpRequest | Request) -> ApiAccess | None:
    """What the request's key gives access to; None when it has no accepted key. Raises
    DeviceApiError for a browser's request without one."""
    key = presented_key(request)
    stored = find_api_key(key)
    holder = KeyHolder.of(stored)
    if not current_device_identity().managed:
        if stored is None:
            refuse_browser_requests(request)
        return ApiAccess(all_apps=True, key=key, holder=holder)
    if stored is None:
        # A managed device in local mode (SUPERVISOR_LOCAL_MODE) is open too; only
        # requests without a known key pay for reading the target's config.
        if not local_mode_active():
            return None
        refuse_browser_requests(request)
        return ApiAccess(all_apps=True, key=key, holder=holder)
    if stored.is_global:
        return ApiAccess(all_apps=True, key=key, holder=holder)
    app_ids = frozenset(int(s["appId"]) for s in stored.scopes if s.get("type") == "app")
    return ApiAccess(all_apps=False, app_ids=app_ids, key=key, holder=holder)


def refuse_browser_requests(request: HttpRequest | Request) -> None:
    """A request admitted without a key (local mode) must not be a web page's doing."""
    meta = request.META
    sized = str(meta.get("CONTENT_LENGTH") or "").strip() not in ("", "0")
    check_keyless_request(
        method=request.method or "",
        host=meta.get("HTTP_HOST", ""),
        origin=meta.get("HTTP_ORIGIN", ""),
        fetch_site=meta.get("HTTP_SEC_FETCH_SITE", ""),
        content_type=meta.get("CONTENT_TYPE", ""),
        has_body=sized or "HTTP_TRANSFER_ENCODING" in meta,
    )


class HasValidApiKey(BasePermission):
    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.auth, ApiAccess)


def access_of(request: Request) -> ApiAccess:
    """The caller's access, as ApiKeyAuthentication set it (HasValidApiKey guarantees one)."""
    access = request.auth
    assert isinstance(access, ApiAccess)
    return access
