"""The balena-compatible cloud client, and the only module that speaks HTTP to the cloud
(docs/cloud.md): provisioning, the target-state poll, the state and tag reports, and the
log stream.

Every call is synchronous and bounded by the API request timeout (SUPERVISOR_API_REQUEST_TIMEOUT
of the stored target, read at each request); the worker runs them
from the cloud tick (apps_api/tasks.py), so the device API never waits on the cloud.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import select
import socket
import ssl
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from django.conf import settings

from apps_api.backoff import backoff_delay
from apps_api.device_settings import api_request_timeout_seconds
from hostcfg.cloud_trust import cloud_ca_file, cloud_ssl_context
from hostcfg.host_info import os_variant, os_version
from hostcfg.identity import load_device_identity, new_device_secret, read_config_json, update_config_json

logger = logging.getLogger(__name__)

MAX_TARGET_BYTES = 10 * 1024 * 1024


class CloudError(Exception):
    """The cloud did not answer as expected (unreachable, an error status, a bad body);
    `retry_after`: the seconds its `Retry-After` header asked for, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


ERROR_BACKOFF_BASE_SECONDS = 15.0


def retry_delay(failures: int, *, cap: float | None = None, retry_after: float | None = None) -> float:
    """How long to wait after `failures` failures in a row: 15 s doubling each time, at most
    `cap`, and never less than the cloud's Retry-After."""
    delay = backoff_delay(failures, base=ERROR_BACKOFF_BASE_SECONDS, cap=math.inf if cap is None else cap)
    return max(delay, retry_after or 0.0)


@dataclass(frozen=True)
class CloudDevice:
    """What config.json says about this device and its cloud."""

    api_endpoint: str
    uuid: str
    device_api_key: str
    provisioning_key: str
    application_id: str
    device_type: str
    device_id: int | None
    registered_at: str | None
    logs_endpoint: str = ""
    initial_device_name: str = ""

    @property
    def provisioned(self) -> bool:
        return bool(self.registered_at and self.device_id is not None and not self.provisioning_key)


def cloud_device() -> CloudDevice | None:
    """The device as config.json describes it; None when unmanaged (no apiEndpoint)."""

    identity = load_device_identity()
    if not identity.managed:
        return None
    data = read_config_json(identity.config_path)
    device_id = data.get("deviceId")
    return CloudDevice(
        api_endpoint=str(identity.api_endpoint).rstrip("/"),
        uuid=identity.uuid,
        device_api_key=identity.device_api_key,
        provisioning_key=str(data.get("apiKey") or ""),
        application_id=str(data.get("applicationId") or ""),
        device_type=str(data.get("deviceType") or ""),
        device_id=int(device_id) if isinstance(device_id, int | str) and str(device_id).isdigit() else None,
        registered_at=str(data["registered_at"]) if data.get("registered_at") else None,
        logs_endpoint=str(data.get("logsEndpoint") or "").rstrip("/"),
        initial_device_name=str(data.get("initialDeviceName") or ""),
    )


def user_agent() -> str:
    return f"Supervisor/{settings.SUPERVISOR_VERSION} (Linux; {os_version() or 'unknown'}; {os_variant()})"


def _request(
    method: str,
    url: str,
    *,
    key: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    stream: bool = False,
) -> Any:
    import requests  # lazy: ~18 MiB, only on a managed device

    all_headers = {"User-Agent": user_agent(), **(headers or {})}
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    timeout = api_request_timeout_seconds()
    try:
        return requests.request(method, url, json=body, headers=all_headers, timeout=timeout, stream=stream,
                                verify=cloud_ca_file() or True)  # fmt: skip
    except requests.RequestException as exc:
        raise CloudError(f"{method} {url}: {exc}") from exc


# --- provisioning ------------------------------------------------------------------------


def provision() -> bool:
    """Register the device (or take over its existing record with the device key), then
    write deviceId and registered_at to config.json and drop the provisioning key.
    Returns whether the device is provisioned; raises CloudError to be retried later."""
    device = cloud_device()
    if device is None:
        return False
    if device.provisioned:
        return True
    device_id = device.device_id
    if device_id is None and device.registered_at:
        # Registered once, its id since lost: the device key alone finds the record.
        device_id = _find_device_id(device, device.device_api_key)
    if not device.registered_at or device_id is None:
        device_id = _register(device)
    if device.provisioning_key:
        _check_device_key(device, device_id)
    _record_provisioning(device_id)
    logger.info("provisioned as device %s", device_id)
    return True


def _register(device: CloudDevice) -> int:
    if not device.provisioning_key:
        raise CloudError("not provisioned and no provisioning key (apiKey) in config.json")
    body = {"application": device.application_id, "uuid": device.uuid, "device_type": device.device_type,
            "api_key": device.device_api_key}  # fmt: skip
    response = _request(
        "POST", f"{device.api_endpoint}/device/register", key=device.provisioning_key, body=body
    )
    if response.status_code == 201:
        try:
            return int(response.json()["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CloudError(f"registering: unexpected answer ({exc})") from exc
    if response.status_code == 409:  # this uuid exists already: exchange keys
        return _exchange_key(device)
    raise CloudError(f"registering: {response.status_code} {response.text[:200]}")


def _find_device_id(device: CloudDevice, key: str) -> int | None:
    """The id of the device with this uuid as `key` sees it; None when that key sees no
    such device (or is refused: 401). Raises CloudError on anything else."""
    query = quote(f"uuid eq '{device.uuid}'")
    response = _request("GET", f"{device.api_endpoint}/v7/device?$select=id&$filter={query}", key=key)
    if response.status_code == 401:
        return None
    if response.status_code != 200:
        raise CloudError(f"looking the device up: {response.status_code} {response.reason}")
    try:
        found = response.json().get("d") or []
        return int(found[0]["id"]) if found else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CloudError(f"looking the device up: unexpected answer ({exc})") from exc


# What the cloud answers a provisioning key that may not take over a device.
KEY_EXCHANGE_REFUSED = (401, 403, 404)


def _exchange_key(device: CloudDevice) -> int:
    """The device exists: its key works already, or the provisioning key installs it. When
    the provisioning key can neither see it nor take it over, the uuid is another fleet's:
    a new uuid and key are made, to be registered at the next attempt. Any other failure
    (the cloud unwell) raises CloudError and changes nothing."""
    if (device_id := _find_device_id(device, device.device_api_key)) is not None:
        return device_id
    device_id = _find_device_id(device, device.provisioning_key)
    if device_id is not None:
        response = _request(
            "POST",
            f"{device.api_endpoint}/api-key/device/{device_id}/device-key",
            key=device.provisioning_key,
            body={"apiKey": device.device_api_key},
        )
        if response.status_code == 200:
            return device_id
        if response.status_code not in KEY_EXCHANGE_REFUSED:
            raise CloudError(f"exchanging the device key: {response.status_code} {response.reason}")
    _regenerate_identity()
    raise CloudError(
        f"device {device.uuid} exists and its key cannot be exchanged; registering under a new uuid"
    )


def _check_device_key(device: CloudDevice, device_id: int) -> None:
    if _find_device_id(device, device.device_api_key) != device_id:
        _exchange_key(device)


def _regenerate_identity() -> None:
    def regenerate(data: dict[str, Any]) -> None:
        data.update(uuid=new_device_secret(), deviceApiKey=new_device_secret())
        for stale in ("deviceId", "registered_at"):
            data.pop(stale, None)

    update_config_json(Path(settings.SUPERVISOR_CONFIG_JSON), regenerate)


def _record_provisioning(device_id: int) -> None:
    def record(data: dict[str, Any]) -> None:
        data["deviceId"] = device_id
        data.setdefault("registered_at", int(datetime.now(UTC).timestamp() * 1000))
        data.pop("apiKey", None)

    update_config_json(Path(settings.SUPERVISOR_CONFIG_JSON), record)


def cloud_reachable(device: CloudDevice, *, timeout: float) -> bool:
    """Whether a TCP connection to the cloud API's host and port opens."""

    url = urlsplit(device.api_endpoint)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def send_config_variable(device: CloudDevice, name: str, value: str) -> None:
    """Create one of the device's config variables in the cloud."""
    body = {"device": device.device_id, "name": name, "value": value}
    url = f"{device.api_endpoint}/v7/device_config_variable"
    with _request("POST", url, key=device.device_api_key, body=body) as response:
        # 409: it exists already (set by a user, or sent before and the answer lost).
        if not (200 <= response.status_code < 300 or response.status_code == 409):
            raise CloudError(f"config variable {name}: {response.status_code} {response.reason}")


def send_device_name(device: CloudDevice, name: str) -> None:
    url = f"{device.api_endpoint}/v7/device({device.device_id})"
    with _request("PATCH", url, key=device.device_api_key, body={"device_name": name}) as response:
        if not 200 <= response.status_code < 300:
            raise CloudError(f"device name: {response.status_code} {response.reason}")


def fetch_application_uuid(device: CloudDevice, app_id: int) -> str:
    """The uuid of an application known by its id (a v2 apps.json names apps by id). Only
    a provisioned device can ask: a provisioning key may create devices and read nothing
    (open-balena-api src/lib/auth.ts)."""
    if not device.provisioned:
        raise CloudError(f"application {app_id}: the device must be provisioned to look its uuid up")
    url = f"{device.api_endpoint}/v7/application({app_id})?$select=uuid"
    with _request("GET", url, key=device.device_api_key) as response:
        if response.status_code != 200:
            raise CloudError(f"application {app_id}: {response.status_code} {response.reason}")
        try:
            return str(response.json()["d"][0]["uuid"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CloudError(f"application {app_id}: unexpected answer ({exc})") from exc


class PinRefused(CloudError):
    """The cloud refuses the pin itself (400, 404: no such release in the fleet); asking
    again cannot help."""


def pin_device_to_release(device: CloudDevice, release_id: int) -> None:
    """Pin the device to a release; raises PinRefused on a 400 or 404, CloudError unless 2xx."""
    url = f"{device.api_endpoint}/v7/device({device.device_id})"
    body = {"is_pinned_on__release": release_id}
    with _request("PATCH", url, key=device.device_api_key, body=body) as response:
        if not 200 <= response.status_code < 300:
            refused = PinRefused if response.status_code in (400, 404) else CloudError
            raise refused(f"pinning to release {release_id}: {response.status_code} {response.reason}")


# --- target state ------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedTarget:
    document: dict[str, Any] | None
    """None: unchanged since `etag` (304)."""
    etag: str | None


def fetch_target(device: CloudDevice, *, etag: str | None) -> FetchedTarget:
    """GET the v3 target with If-None-Match; raises CloudError on anything but 200 or a 304
    to the ETag sent, and on a body that is not a JSON object or is larger than 10 MB."""
    headers = {"If-None-Match": etag} if etag else {}
    url = f"{device.api_endpoint}/device/v3/{device.uuid}/state"
    # Streamed, so that a huge body is refused before it is all in memory.
    response = _request("GET", url, key=device.device_api_key, headers=headers, stream=True)
    with response:
        if response.status_code == 304:
            if not etag:  # "unchanged" from nothing: the original treats it as a failed poll
                raise CloudError("target state: 304 Not Modified without an ETag asked for")
            return FetchedTarget(None, etag)
        if response.status_code != 200:
            raise CloudError(f"target state: {response.status_code} {response.reason}")
        raw = _read_bounded(response, MAX_TARGET_BYTES)
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise CloudError(f"target state is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CloudError("target state is not a JSON object")
    return FetchedTarget(document, response.headers.get("ETag"))


def _read_bounded(response: Any, limit: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > limit:
            raise CloudError(f"target state larger than {limit // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks)


# --- state report ------------------------------------------------------------------------


def send_state_report(device: CloudDevice, fields: dict[str, Any]) -> None:
    """PATCH the changed fields of this device's state; raises CloudError unless 2xx."""
    url = f"{device.api_endpoint}/device/v3/state"
    with _request("PATCH", url, key=device.device_api_key, body={device.uuid: fields}) as response:
        if 200 <= response.status_code < 300:
            return
        retry_after = response.headers.get("Retry-After", "")
        raise CloudError(
            f"state report: {response.status_code} {response.reason}",
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )


# --- device tags -------------------------------------------------------------------------


def fetch_device_tags(device: CloudDevice) -> list[dict[str, Any]]:
    """The device's tags as the cloud has them: `[{id, name, value}]`."""
    if device.device_id is None:
        raise CloudError("the device is not provisioned yet")
    query = quote(f"device eq {device.device_id}")
    url = f"{device.api_endpoint}/v7/device_tag?$select=id,tag_key,value&$filter={query}"
    with _request("GET", url, key=device.device_api_key) as response:
        if response.status_code != 200:
            raise CloudError(f"device tags: {response.status_code} {response.reason}")
        try:
            rows = response.json()["d"]
            return [{"id": row["id"], "name": row["tag_key"], "value": row["value"]} for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise CloudError(f"device tags: unexpected answer ({exc})") from exc


class TagsRefused(CloudError):
    """The cloud refused the tags themselves (400): sent again as they are, they never pass."""


def send_device_tags(device: CloudDevice, tags: dict[str, str]) -> None:
    """PATCH the tags that changed; raises TagsRefused on a 400, CloudError on any other
    answer but 2xx (with the cloud's Retry-After)."""
    url = f"{device.api_endpoint}/device/v3/tags"
    with _request("PATCH", url, key=device.device_api_key, body={device.uuid: tags}) as response:
        if 200 <= response.status_code < 300:
            return
        refused = TagsRefused if response.status_code == 400 else CloudError
        retry_after = response.headers.get("Retry-After", "")
        raise refused(
            f"device tags report: {response.status_code} {response.reason}",
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )


# --- log stream --------------------------------------------------------------------------


class LogStream:
    """One long-lived `POST /device/v2/<uuid>/log-stream`: a chunked body of gzip NDJSON,
    each write flushed so the cloud can read it at once. The cloud answers only to refuse
    the stream, so any answer (or the connection closing) is an error; `finish()` ends the
    body when the stream has been idle. Raises CloudError on any failure."""

    def __init__(self, device: CloudDevice) -> None:
        self._timeout = api_request_timeout_seconds()
        url = urlsplit(f"{device.logs_endpoint or device.api_endpoint}/device/v2/{device.uuid}/log-stream")
        secure = url.scheme == "https"
        self._connection: http.client.HTTPConnection
        if secure:
            self._connection = http.client.HTTPSConnection(
                url.netloc, timeout=self._timeout, context=cloud_ssl_context()
            )
        else:
            self._connection = http.client.HTTPConnection(url.netloc, timeout=self._timeout)
        self._gzip = zlib.compressobj(wbits=31)  # 31: a gzip header and trailer
        self._sync_flush = zlib.Z_SYNC_FLUSH
        try:
            self._connection.putrequest("POST", url.path, skip_accept_encoding=True)
            for name, value in (
                ("User-Agent", user_agent()),
                ("Authorization", f"Bearer {device.device_api_key}"),
                ("Content-Type", "application/x-ndjson"),
                ("Content-Encoding", "gzip"),
                ("Transfer-Encoding", "chunked"),
            ):
                self._connection.putheader(name, value)
            self._connection.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise CloudError(f"log stream: {exc}") from exc

    def write(self, ndjson: bytes) -> None:
        compressed = self._gzip.compress(ndjson) + self._gzip.flush(self._sync_flush)
        self._send_chunk(compressed)

    def answered(self) -> bool:
        """Whether the cloud answered (or closed the connection): the stream is over."""

        sock = self._connection.sock
        if sock is None:
            return True
        if not select.select([sock], [], [], 0)[0]:
            return False
        # Readable is not answered: TLS 1.3 servers send session tickets after the
        # handshake, which the TLS layer takes in without a byte for us.
        sock.setblocking(False)
        try:
            sock.recv(1)  # b"" when closed, the answer's first byte otherwise
            return True
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self._timeout)

    def finish(self) -> None:
        """End the body (the stream was idle) and read the cloud's answer."""

        self._send_chunk(self._gzip.flush())
        try:
            self._connection.send(b"0\r\n\r\n")
            self._connection.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            raise CloudError(f"log stream: {exc}") from exc
        finally:
            self.close()

    def close(self) -> None:
        self._connection.close()

    def _send_chunk(self, data: bytes) -> None:
        if not data:
            return
        try:
            self._connection.send(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError as exc:
            raise CloudError(f"log stream: {exc}") from exc
