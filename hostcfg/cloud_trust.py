"""The certificate authorities the agent trusts for the cloud: the system's, plus the private
root CA of an openBalena install, which config.json names as `balenaRootCA` (base64 PEM) and
balenaOS adds to the trust of the original supervisor.

Used by every HTTPS request to the cloud: the API (provisioning, target, reports, tags), the
log stream, and the registries and their token realms.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import ssl
from pathlib import Path

from django.conf import settings

from hostcfg.atomic_file import write_file_atomically
from hostcfg.identity import DeviceConfigError, read_config_json

logger = logging.getLogger(__name__)

BUNDLE_NAME = "cloud-ca-bundle.pem"
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def private_root_ca() -> str | None:
    """The PEM text of config.json's `balenaRootCA`; None when there is none or it is not a
    base64 PEM certificate (logged: the system's CAs alone are then trusted)."""
    try:
        encoded = read_config_json(Path(settings.SUPERVISOR_CONFIG_JSON)).get("balenaRootCA")
    except DeviceConfigError:
        return None
    if not encoded:
        return None
    try:
        pem = base64.b64decode(str(encoded), validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        pem = ""
    if PEM_CERTIFICATE not in pem:
        logger.warning("config.json balenaRootCA is not a base64 PEM certificate; it is not trusted")
        return None
    return pem


def _system_bundle() -> str:
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file():
        return Path(cafile).read_text(errors="replace")
    import certifi  # the bundle requests would use; lazy, as the cloud client is

    return Path(certifi.where()).read_text(errors="replace")


def cloud_ca_file() -> str | None:
    """A CA bundle of the system's CAs and the private root CA, kept in the data dir; None
    without a private root CA (the system's defaults apply)."""
    pem = private_root_ca()
    if pem is None:
        return None
    bundle = Path(settings.SUPERVISOR_DATA_DIR) / BUNDLE_NAME
    if not bundle.is_file():
        _write_bundle.cache_clear()
    _write_bundle(str(bundle), pem)
    return str(bundle)


# Every cloud request asks for the bundle, and the system's part is some 200 KB: it is read
# and written once per root CA, and an SSL context made once per root CA.
@functools.lru_cache(maxsize=1)
def _write_bundle(path: str, pem: str) -> None:
    content = f"{_system_bundle().rstrip()}\n{pem.strip()}\n"
    try:
        current = Path(path).read_text(errors="replace")
    except OSError:
        current = ""
    if current != content:
        write_file_atomically(Path(path), content, mode=0o600)


def cloud_ssl_context() -> ssl.SSLContext | None:
    """An SSL context trusting the bundle above; None without a private root CA."""
    pem = private_root_ca()
    if pem is None:
        return None
    return _ssl_context(str(cloud_ca_file()), pem)


@functools.lru_cache(maxsize=1)
def _ssl_context(cafile: str, pem: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)
