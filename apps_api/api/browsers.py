"""Requests a browser makes on a web page's behalf, told apart from the device's own
clients. Local mode needs no key, so without this any page a browser on the LAN (or on
the device) opens could reboot or purge the device: by a cross-site form or fetch (the
browser says so in Origin or Sec-Fetch-Site), or through DNS rebinding (the page's own
name is then in Host)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from apps_api.errors import DeviceApiError

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BrowserRequestRefused(DeviceApiError):
    status = 403


class FormBodyRefused(DeviceApiError):
    status = 415


def _name_of(host: str) -> str:
    """`host` without its port; an IPv6 literal keeps its brackets off."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def device_names() -> set[str]:
    """The names a client of the device may call it by (besides its addresses)."""
    names = {"localhost", *settings.SUPERVISOR_API_HOST_NAMES}
    hostnames = {socket.gethostname()}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        hostnames.add((Path(settings.SUPERVISOR_HOST_ROOT) / "etc" / "hostname").read_text().strip())
    for hostname in filter(None, hostnames):
        names |= {hostname, f"{hostname}.local"}
    return {name.lower() for name in names}


def host_allowed(host: str) -> bool:
    """An address, or one of the device's own names: never the name of a rebinding page.
    (No Host at all is no browser's: they always send one.)"""
    name = _name_of(host.strip()).rstrip(".").lower()
    if not name:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name in device_names()
    return True


def check_keyless_request(*, method: str, host: str, origin: str, fetch_site: str, content_type: str,
                          has_body: bool) -> None:  # fmt: skip
    """Raises when a request that came without a key looks like a web page's doing."""
    if not host_allowed(host):
        raise BrowserRequestRefused(f"Forbidden: {host!r} is not a name of this device")
    if fetch_site in ("cross-site", "same-site"):
        raise BrowserRequestRefused("Forbidden: a request from another site")
    if origin and (origin == "null" or urlsplit(origin).netloc.lower() != host.strip().lower()):
        raise BrowserRequestRefused("Forbidden: a request from another origin")
    if method in UNSAFE_METHODS and has_body and content_type.split(";")[0].strip().lower() in FORM_TYPES:
        raise FormBodyRefused("Unsupported media type: send JSON (application/json)")
