"""The certificate authorities the agent trusts for the cloud: the system's, plus the private
root CA of an openBalena install, which config.json names as `balenaRootCA` (base64 PEM) and
balenaOS adds to the trust of the original supervisor.

Used by every HTTPS request to the cloud: the API (provisioning, target, reports, tags), the
log stream, and the registries and their token realms.
"""

from __future__ import annotations

import base64
import binascii
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
    content = f"{_system_bundle().rstrip()}\n{pem.strip()}\n"
    try:
        current = bundle.read_text(errors="replace")
    except OSError:
        current = ""
    if current != content:
        write_file_atomically(bundle, content, mode=0o600)
    return str(bundle)


def cloud_ssl_context() -> ssl.SSLContext | None:
    """An SSL context trusting the bundle above; None without a private root CA."""
    cafile = cloud_ca_file()
    return ssl.create_default_context(cafile=cafile) if cafile else None
