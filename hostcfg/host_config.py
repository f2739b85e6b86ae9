"""Host configuration: the device hostname and the redsocks proxy on the boot partition.

The file logic behind GET/PATCH /v1/device/host-config: validating a PATCH body,
reading what is configured and writing a change. Taking update locks and restarting
the proxy units afterwards are the caller's job.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from hostcfg.atomic_file import remove_file_durably, write_file_atomically
from hostcfg.identity import update_config_json
from hostcfg.values import flag

logger = logging.getLogger(__name__)

T = TypeVar("T")

INVALID_INPUT_PREFIX = "Could not parse host config input to a valid format: "

# One DNS label (RFC 1123): what hostnamectl and mDNS accept without mangling.
HOSTNAME_MAX_LENGTH = 63
PROXY_TYPES = ("socks4", "socks5", "http-connect", "http-relay")
PROXY_DIR = "system-proxy"

# The redsocks keys a user may set, in the order they are written (docs/host.md
# "Hostname and proxy"): this schema order, not the key order of a request body: after a partial
# merge the body's order says nothing about the stored keys, and the file must not
# depend on how a client happened to serialise its JSON.
REDSOCKS_KEYS = ("type", "ip", "port", "login", "password")
_QUOTED_KEYS = frozenset({"login", "password"})
_PROXY_BODY_KEYS = frozenset({*REDSOCKS_KEYS, "dns", "noProxy"})
_BASE_BLOCK = (
    ("log_debug", "off"),
    ("log_info", "on"),
    ("log", "stderr"),
    ("daemon", "off"),
    ("redirector", "iptables"),
)
_REDSOCKS_LISTEN = (("local_ip", "127.0.0.1"), ("local_port", "12345"))
_DNSU2T_LISTEN = (("local_ip", "127.0.0.1"), ("local_port", "53"))

# Characters that would end a redsocks.conf value or statement, or start a new line,
# in a double-quoted login/password. Backslash too: we never write escapes.
_QUOTED_VALUE_FORBIDDEN = frozenset('";{}\\')
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


class HostConfigInvalid(Exception):
    """A PATCH body we refuse; str() is the whole 400 response text and names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{INVALID_INPUT_PREFIX}{field} {problem}")


@dataclass(frozen=True)
class DnsServer:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


DEFAULT_DNS = DnsServer(ip="8.8.8.8", port=53)


@dataclass(frozen=True)
class ProxyPatch:
    """`network.proxy` of a PATCH. A field left None was not given: its stored value stays.

    `dns` is False to remove the DNS forwarder; `clear` is the `proxy: {}` request to
    remove redsocks.conf."""

    type: str | None = None
    ip: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    dns: DnsServer | Literal[False] | None = None
    no_proxy: tuple[str, ...] | None = None
    clear: bool = False

    def redsocks_fields(self) -> dict[str, str]:
        """The redsocks values given, as written to the file (unquoted)."""
        given = {
            "type": self.type,
            "ip": self.ip,
            "port": self.port,
            "login": self.login,
            "password": self.password,
        }
        return {key: str(value) for key, value in given.items() if value is not None}


@dataclass(frozen=True)
class HostConfigPatch:
    """A validated PATCH body; None means "leave as it is"."""

    hostname: str | None
    proxy: ProxyPatch | None
    force: bool


@dataclass(frozen=True)
class HostConfigChange:
    hostname_changed: bool
    proxy_changed: bool


def redsocks_conf_path(boot_root: Path) -> Path:
    return boot_root / PROXY_DIR / "redsocks.conf"


def no_proxy_path(boot_root: Path) -> Path:
    return boot_root / PROXY_DIR / "no_proxy"


def host_hostname_path(host_root: Path) -> Path:
    return host_root / "etc" / "hostname"


# --- validation -------------------------------------------------------------------------


def parse_host_config_patch(body: object) -> HostConfigPatch:
    """Validate a PATCH /v1/device/host-config body without touching any file.

    Raises HostConfigInvalid for anything that is not the documented shape, or whose
    values would not be safe to write into redsocks.conf, no_proxy or /etc/hostname.
    Unknown keys under `proxy` are ignored with a warning."""
    if not isinstance(body, dict):
        raise HostConfigInvalid("body", "must be a JSON object")
    network = body.get("network")
    if not isinstance(network, dict):
        raise HostConfigInvalid("network", "must be an object")
    hostname = _parse_hostname(network["hostname"]) if "hostname" in network else None
    proxy = _parse_proxy(network.get("proxy"))
    # the balena Supervisor API reference, v9, reads `force` at the top level, newer documentation
    # inside `network`: both count.
    force = body.get("force") if "force" in body else network.get("force")
    try:
        forced = flag(force)
    except ValueError as exc:
        raise HostConfigInvalid("force", str(exc)) from exc
    return HostConfigPatch(hostname=hostname, proxy=proxy, force=forced)


def _parse_hostname(value: object) -> str:
    field = "network.hostname"
    if not isinstance(value, str):
        raise HostConfigInvalid(field, "must be a string")
    if value == "":
        return value  # the device's short uuid, filled in when writing
    if len(value) > HOSTNAME_MAX_LENGTH:
        raise HostConfigInvalid(field, f"must be at most {HOSTNAME_MAX_LENGTH} characters")
    if not _HOST_LABEL.fullmatch(value):
        raise HostConfigInvalid(
            field, "may contain only letters, digits and '-', and may not start or end with '-'"
        )
    return value


def _parse_proxy(value: object) -> ProxyPatch | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise HostConfigInvalid("network.proxy", "must be an object or null")
    if not value:
        return ProxyPatch(clear=True)
    unknown = sorted(str(key) for key in value if key not in _PROXY_BODY_KEYS)
    if unknown:
        logger.warning("host-config: ignoring unknown keys under network.proxy: %r", unknown)
    return ProxyPatch(
        type=_optional(value, "type", _parse_proxy_type),
        ip=_optional(value, "ip", _parse_proxy_ip),
        port=_optional(value, "port", _parse_port),
        login=_optional(value, "login", _parse_quoted_value),
        password=_optional(value, "password", _parse_quoted_value),
        dns=_optional(value, "dns", _parse_dns),
        no_proxy=_optional(value, "noProxy", _parse_no_proxy),
    )


def _optional(proxy: dict[Any, Any], key: str, parse: Callable[[object, str], T]) -> T | None:
    if key not in proxy:
        return None
    return parse(proxy[key], f"network.proxy.{key}")


def _parse_proxy_type(value: object, field: str) -> str:
    if value not in PROXY_TYPES:
        raise HostConfigInvalid(field, f"must be one of {', '.join(PROXY_TYPES)}")
    return str(value)


def _parse_proxy_ip(value: object, field: str) -> str:
    if not (isinstance(value, str) and _is_host(value)):
        raise HostConfigInvalid(field, "must be an IPv4 address or a host name")
    return value


def _parse_port(value: object, field: str) -> int:
    # A digit string is tolerated: older clients sent the port as a string.
    if isinstance(value, str) and _PORT.fullmatch(value):
        value = int(value)
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535):
        raise HostConfigInvalid(field, "must be a port number from 1 to 65535")
    return value


def _parse_quoted_value(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise HostConfigInvalid(field, "must be a string")
    if any(not char.isprintable() or char in _QUOTED_VALUE_FORBIDDEN for char in value):
        raise HostConfigInvalid(field, 'may not contain control characters, line breaks or any of " ; { } \\')
    return value


def _parse_dns(value: object, field: str) -> DnsServer | Literal[False]:
    if value is True:
        return DEFAULT_DNS
    if value is False:
        return False
    if isinstance(value, str):
        host, colon, port = value.rpartition(":")
        if colon and _is_host(host) and _PORT.fullmatch(port) and 1 <= int(port) <= 65535:
            return DnsServer(ip=host, port=int(port))
    raise HostConfigInvalid(field, 'must be true, false or "ip:port"')


_NO_PROXY_ENTRY = re.compile(r"[A-Za-z0-9*._\-]+(?:/[0-9]{1,3})?|\[?[0-9A-Fa-f:.]+\]?(?:/[0-9]{1,3})?")


def _parse_no_proxy(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise HostConfigInvalid(field, "must be an array of strings")
    for index, entry in enumerate(value):
        # One entry per line of no_proxy, read by the host OS's proxy script: addresses,
        # networks and host names only, nothing a shell would act on.
        if not (isinstance(entry, str) and _NO_PROXY_ENTRY.fullmatch(entry)):
            raise HostConfigInvalid(
                f"{field}[{index}]",
                "must be an IP address, a network (CIDR) or a host name (*.domain allowed)",
            )
    return tuple(value)


def _is_host(value: str) -> bool:
    """An IPv4 address or a DNS host name (dot-separated RFC 1123 labels)."""
    labels = value.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return False
        return True
    return len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


# --- reading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _StoredProxy:
    """What redsocks.conf configures, as far as the API exposes it."""

    redsocks: dict[str, str]  # REDSOCKS_KEYS present in the file, in that order, unquoted
    dns: DnsServer | None


# A double-quoted string is matched first so that comment markers or braces inside a
# password are kept; comments (C, C++ and shell style) are dropped.
_QUOTED = r'"(?:[^"\\\n]|\\.)*"'
_COMMENT_OR_QUOTED = re.compile(rf"({_QUOTED})|/\*.*?\*/|//[^\n]*|#[^\n]*", re.DOTALL)
_BLOCK = re.compile(rf"([A-Za-z_]\w*)\s*\{{((?:{_QUOTED}|[^{{}}\"])*)\}}")
_STATEMENT = re.compile(rf"([A-Za-z_]\w*)\s*=\s*({_QUOTED}|[^;\"]*?)\s*;")


def parse_redsocks_conf(text: str) -> dict[str, dict[str, str]]:
    """Blocks of a redsocks.conf as {block: {key: value}}, quotes stripped.

    Tolerates hand-written files: any whitespace and comments; what does not look like
    `key = value;` inside `name { }` is skipped. A repeated block or key: the last wins."""
    text = _COMMENT_OR_QUOTED.sub(lambda match: match.group(1) or " ", text)
    blocks: dict[str, dict[str, str]] = {}
    for block in _BLOCK.finditer(text):
        values = blocks.setdefault(block.group(1), {})
        for statement in _STATEMENT.finditer(block.group(2)):
            value = statement.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            values[statement.group(1)] = value
    return blocks


def _read_stored_proxy(boot_root: Path) -> _StoredProxy | None:
    path = redsocks_conf_path(boot_root)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    blocks = parse_redsocks_conf(text)
    # Other keys (a hand-written `on_proxy_fail`, say) are not part of the API and are
    # not carried over when the file is next written.
    redsocks_block = blocks.get("redsocks", {})
    redsocks = {key: redsocks_block[key] for key in REDSOCKS_KEYS if key in redsocks_block}
    dns = None
    dnsu2t = blocks.get("dnsu2t")
    if dnsu2t is not None:
        remote_ip, remote_port = dnsu2t.get("remote_ip"), dnsu2t.get("remote_port", "")
        if remote_ip and _PORT.fullmatch(remote_port):
            dns = DnsServer(ip=remote_ip, port=int(remote_port))
        else:
            logger.warning("%s: dnsu2t block without a usable remote_ip/remote_port; ignored", path)
    return _StoredProxy(redsocks=redsocks, dns=dns)


def _read_no_proxy(boot_root: Path) -> list[str]:
    try:
        text = no_proxy_path(boot_root).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_host_config(*, host_root: Path, boot_root: Path, fallback_hostname: str = "") -> dict[str, Any]:
    """The GET /v1/device/host-config body: `{"network": {"hostname", "proxy"?}}`.

    The hostname is the host's /etc/hostname, or `fallback_hostname` when that file is
    missing or empty. `proxy` is omitted without a redsocks.conf; within it `port` is a
    string as in the balena Supervisor API reference, v9 (docs/host.md "Hostname and proxy"), `dns`
    is "ip:port" when a DNS forwarder is configured, and `noProxy` is omitted when empty."""
    try:
        hostname = host_hostname_path(host_root).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        hostname = ""
    network: dict[str, Any] = {"hostname": hostname or fallback_hostname}
    stored = _read_stored_proxy(boot_root)
    if stored is not None:
        proxy: dict[str, Any] = dict(stored.redsocks)
        if stored.dns is not None:
            proxy["dns"] = str(stored.dns)
        no_proxy = _read_no_proxy(boot_root)
        if no_proxy:
            proxy["noProxy"] = no_proxy
        network["proxy"] = proxy
    return {"network": network}


# --- writing ----------------------------------------------------------------------------


def render_redsocks_conf(redsocks: dict[str, str], dns: DnsServer | None) -> str:
    """redsocks.conf for the given redsocks values (unquoted) and optional DNS forwarder."""
    redsocks_lines = [
        (key, f'"{redsocks[key]}"' if key in _QUOTED_KEYS else redsocks[key])
        for key in REDSOCKS_KEYS
        if key in redsocks
    ]
    blocks = [("base", list(_BASE_BLOCK)), ("redsocks", [*redsocks_lines, *_REDSOCKS_LISTEN])]
    if dns is not None:
        blocks.append(("dnsu2t", [("remote_ip", dns.ip), ("remote_port", str(dns.port)), *_DNSU2T_LISTEN]))
    return "".join(
        f"{name} {{\n" + "".join(f"\t{key} = {value};\n" for key, value in lines) + "}\n\n"
        for name, lines in blocks
    )


def write_host_config(
    patch: HostConfigPatch, *, host_root: Path, boot_root: Path, config_json: Path, uuid: str
) -> HostConfigChange:
    """Apply a validated patch to config.json, /etc/hostname and the proxy files.

    Each file is replaced atomically, and only when its content changes; the result
    says which of hostname and proxy actually changed on disk."""
    hostname_changed = patch.hostname is not None and _write_hostname(
        patch.hostname or uuid[:7], host_root=host_root, config_json=config_json
    )
    proxy_changed = patch.proxy is not None and _write_proxy(patch.proxy, boot_root=boot_root)
    return HostConfigChange(hostname_changed=hostname_changed, proxy_changed=proxy_changed)


def _write_hostname(hostname: str, *, host_root: Path, config_json: Path) -> bool:
    def set_hostname(data: dict[str, Any]) -> None:
        data["hostname"] = hostname

    changed = update_config_json(config_json, set_hostname)
    return _replace_if_different(host_hostname_path(host_root), f"{hostname}\n") or changed


def _write_proxy(proxy: ProxyPatch, *, boot_root: Path) -> bool:
    conf = redsocks_conf_path(boot_root)
    if proxy.clear:
        return remove_file_durably(conf)
    changed = False
    given = proxy.redsocks_fields()
    stored = _read_stored_proxy(boot_root)
    # dns on its own only amends an existing proxy; it never creates one.
    if given or (proxy.dns is not None and stored is not None):
        redsocks = {**(stored.redsocks if stored else {}), **given}
        dns = stored.dns if stored else None
        if proxy.dns is not None:
            dns = proxy.dns or None  # False removes the forwarder
        changed = _replace_if_different(conf, render_redsocks_conf(redsocks, dns))
    if proxy.no_proxy is not None:
        if proxy.no_proxy:
            text = "".join(f"{entry}\n" for entry in proxy.no_proxy)
            changed = _replace_if_different(no_proxy_path(boot_root), text) or changed
        else:
            changed = remove_file_durably(no_proxy_path(boot_root)) or changed
    return changed


def _replace_if_different(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_file_atomically(path, text)
    return True
