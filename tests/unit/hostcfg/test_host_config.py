"""Host configuration: what PATCH writes to disk and GET reads back (/v1/device/host-config)."""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hostcfg.host_config import (
    HostConfigChange,
    HostConfigInvalid,
    parse_host_config_patch,
    read_host_config,
    write_host_config,
)

UUID = "0123abcdef456789aaaabbbbccccdddd"

BASE_BLOCK = (
    "base {\n"
    "\tlog_debug = off;\n"
    "\tlog_info = on;\n"
    "\tlog = stderr;\n"
    "\tdaemon = off;\n"
    "\tredirector = iptables;\n"
    "}\n"
    "\n"
)


@dataclass(frozen=True)
class Device:
    root: Path

    @property
    def host_root(self) -> Path:
        return self.root / "host"

    @property
    def boot_root(self) -> Path:
        return self.root / "boot"

    @property
    def config_json(self) -> Path:
        return self.boot_root / "config.json"

    @property
    def redsocks_conf(self) -> Path:
        return self.boot_root / "system-proxy" / "redsocks.conf"

    @property
    def no_proxy(self) -> Path:
        return self.boot_root / "system-proxy" / "no_proxy"

    @property
    def etc_hostname(self) -> Path:
        return self.host_root / "etc" / "hostname"

    def patch(self, body: object) -> HostConfigChange:
        """What the view does: validate, then write."""
        return write_host_config(
            parse_host_config_patch(body),
            host_root=self.host_root,
            boot_root=self.boot_root,
            config_json=self.config_json,
            uuid=UUID,
        )

    def get(self) -> dict[str, Any]:
        return read_host_config(host_root=self.host_root, boot_root=self.boot_root, fallback_hostname="fb")

    def files(self) -> dict[str, bytes]:
        return {
            str(path.relative_to(self.root)): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }


@pytest.fixture
def device(tmp_path: Path) -> Device:
    device = Device(tmp_path)
    device.config_json.parent.mkdir(parents=True)
    device.config_json.write_text(json.dumps({"uuid": UUID, "deviceApiKey": "key"}))
    device.etc_hostname.parent.mkdir(parents=True)
    device.etc_hostname.write_text("balena\n")
    return device


def proxy_body(**proxy: object) -> dict[str, Any]:
    return {"network": {"proxy": proxy}}


FULL_PROXY: dict[str, object] = {
    "type": "socks5",
    "ip": "10.0.0.1",
    "port": 8123,
    "login": "user",
    "password": "secret pass",
    "dns": True,
    "noProxy": ["152.10.30.4", "253.1.1.0/16"],
}

FULL_REDSOCKS_CONF = BASE_BLOCK + (
    "redsocks {\n"
    "\ttype = socks5;\n"
    "\tip = 10.0.0.1;\n"
    "\tport = 8123;\n"
    '\tlogin = "user";\n'
    '\tpassword = "secret pass";\n'
    "\tlocal_ip = 127.0.0.1;\n"
    "\tlocal_port = 12345;\n"
    "}\n"
    "\n"
    "dnsu2t {\n"
    "\tremote_ip = 8.8.8.8;\n"
    "\tremote_port = 53;\n"
    "\tlocal_ip = 127.0.0.1;\n"
    "\tlocal_port = 53;\n"
    "}\n"
    "\n"
)


# --- the files written ------------------------------------------------------------------


def test_full_proxy_writes_the_spec_layout(device: Device) -> None:
    change = device.patch(proxy_body(**FULL_PROXY))

    assert change == HostConfigChange(hostname_changed=False, proxy_changed=True)
    assert device.redsocks_conf.read_text() == FULL_REDSOCKS_CONF
    assert device.no_proxy.read_text() == "152.10.30.4\n253.1.1.0/16\n"


def test_proxy_without_credentials_or_dns_has_no_dnsu2t_block(device: Device) -> None:
    device.patch(proxy_body(type="http-connect", ip="proxy.example.com", port="3128"))

    assert device.redsocks_conf.read_text() == BASE_BLOCK + (
        "redsocks {\n"
        "\ttype = http-connect;\n"
        "\tip = proxy.example.com;\n"
        "\tport = 3128;\n"
        "\tlocal_ip = 127.0.0.1;\n"
        "\tlocal_port = 12345;\n"
        "}\n"
        "\n"
    )
    assert not device.no_proxy.exists()


def test_key_order_of_the_body_does_not_change_the_file(device: Device) -> None:
    device.patch(proxy_body(**dict(reversed(FULL_PROXY.items()))))

    assert device.redsocks_conf.read_text() == FULL_REDSOCKS_CONF


def test_files_are_replaced_whole_world_readable_and_without_leftovers(device: Device) -> None:
    device.patch({"network": {"hostname": "first", "proxy": FULL_PROXY}})
    device.patch({"network": {"hostname": "second", "proxy": {"port": 1080, "noProxy": ["10.0.0.0/8"]}}})

    assert sorted(p.name for p in device.redsocks_conf.parent.iterdir()) == ["no_proxy", "redsocks.conf"]
    assert sorted(p.name for p in device.etc_hostname.parent.iterdir()) == ["hostname"]
    for path in (device.redsocks_conf, device.no_proxy, device.etc_hostname):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(device.config_json.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_whole(device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    device.patch(proxy_body(**FULL_PROXY))

    def crash(*args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        device.patch(proxy_body(port=1))

    assert device.redsocks_conf.read_text() == FULL_REDSOCKS_CONF
    assert sorted(p.name for p in device.redsocks_conf.parent.iterdir()) == ["no_proxy", "redsocks.conf"]


# --- GET --------------------------------------------------------------------------------


def test_get_returns_what_was_patched(device: Device) -> None:
    device.patch({"network": {"hostname": "kiosk-7", "proxy": FULL_PROXY}})
    device.etc_hostname.write_text("kiosk-7\n")  # the OS applies config.json's hostname

    assert device.get() == {
        "network": {
            "hostname": "kiosk-7",
            "proxy": {
                "type": "socks5",
                "ip": "10.0.0.1",
                "port": "8123",
                "login": "user",
                "password": "secret pass",
                "dns": "8.8.8.8:53",
                "noProxy": ["152.10.30.4", "253.1.1.0/16"],
            },
        }
    }


def test_get_without_redsocks_conf_omits_proxy_even_with_no_proxy_file(device: Device) -> None:
    device.no_proxy.parent.mkdir(parents=True)
    device.no_proxy.write_text("10.0.0.0/8\n")

    assert device.get() == {"network": {"hostname": "balena"}}


def test_get_omits_empty_no_proxy(device: Device) -> None:
    device.patch(proxy_body(type="socks4", ip="10.0.0.1", port=1080))

    assert device.get()["network"]["proxy"] == {"type": "socks4", "ip": "10.0.0.1", "port": "1080"}


def test_get_falls_back_when_etc_hostname_is_missing(device: Device) -> None:
    device.etc_hostname.unlink()

    assert device.get() == {"network": {"hostname": "fb"}}


HAND_WRITTEN = """\
// written by hand
base { log_debug = on; log_info = on; log = "file:/tmp/x"; daemon = on; redirector = iptables; }

redsocks {
    local_ip   =   0.0.0.0 ;
    local_port = 12345;
    ip = 192.168.1.5;   # the office proxy
    port = 1080;
    type = socks5;
    login = "bob";
    password = "p#ss//w{o}rd";
    on_proxy_fail = close;
}
/* no DNS forwarder
dnsu2t { remote_ip = 1.1.1.1; remote_port = 53; }
*/
"""


def test_get_reads_a_hand_written_file(device: Device) -> None:
    device.redsocks_conf.parent.mkdir(parents=True)
    device.redsocks_conf.write_text(HAND_WRITTEN)

    assert device.get()["network"]["proxy"] == {
        "type": "socks5",
        "ip": "192.168.1.5",
        "port": "1080",
        "login": "bob",
        "password": "p#ss//w{o}rd",
    }


def test_patching_a_hand_written_file_rewrites_it_in_the_spec_layout(device: Device) -> None:
    device.redsocks_conf.parent.mkdir(parents=True)
    device.redsocks_conf.write_text(HAND_WRITTEN)

    device.patch(proxy_body(login="alice", password="pw"))

    assert device.redsocks_conf.read_text() == BASE_BLOCK + (
        "redsocks {\n"
        "\ttype = socks5;\n"
        "\tip = 192.168.1.5;\n"
        "\tport = 1080;\n"
        '\tlogin = "alice";\n'
        '\tpassword = "pw";\n'
        "\tlocal_ip = 127.0.0.1;\n"
        "\tlocal_port = 12345;\n"
        "}\n"
        "\n"
    )


# --- merge semantics --------------------------------------------------------------------


def test_given_fields_are_merged_over_the_stored_proxy(device: Device) -> None:
    device.patch(proxy_body(**FULL_PROXY))

    change = device.patch(proxy_body(type="http-relay", port=3128))

    assert change.proxy_changed
    assert device.redsocks_conf.read_text() == FULL_REDSOCKS_CONF.replace("socks5", "http-relay").replace(
        "8123", "3128"
    )
    assert device.no_proxy.read_text() == "152.10.30.4\n253.1.1.0/16\n"


def test_empty_proxy_object_removes_redsocks_conf_and_keeps_no_proxy(device: Device) -> None:
    device.patch(proxy_body(**FULL_PROXY))

    change = device.patch(proxy_body())

    assert change.proxy_changed
    assert not device.redsocks_conf.exists()
    assert device.no_proxy.read_text() == "152.10.30.4\n253.1.1.0/16\n"
    assert "proxy" not in device.get()["network"]


def test_null_or_absent_proxy_changes_nothing(device: Device) -> None:
    device.patch(proxy_body(**FULL_PROXY))
    before = device.files()

    assert device.patch({"network": {"proxy": None}}) == HostConfigChange(False, False)
    assert device.patch({"network": {}}) == HostConfigChange(False, False)
    assert device.files() == before


def test_no_proxy_alone_updates_no_proxy_and_keeps_redsocks_conf(device: Device) -> None:
    device.patch(proxy_body(**FULL_PROXY))

    device.patch(proxy_body(noProxy=["192.168.0.0/16"]))

    assert device.redsocks_conf.read_text() == FULL_REDSOCKS_CONF
    assert device.no_proxy.read_text() == "192.168.0.0/16\n"


def test_empty_no_proxy_deletes_the_file_and_absent_leaves_it(device: Device) -> None:
    device.patch(proxy_body(**FULL_PROXY))

    device.patch(proxy_body(port=1))
    assert device.no_proxy.read_text() == "152.10.30.4\n253.1.1.0/16\n"

    device.patch(proxy_body(noProxy=[]))
    assert not device.no_proxy.exists()
    assert "noProxy" not in device.get()["network"]["proxy"]


@pytest.mark.parametrize(
    ("dns", "dnsu2t"),
    [
        (True, ("8.8.8.8", "53")),
        ("1.1.1.1:5353", ("1.1.1.1", "5353")),
        ("dns.example.com:53", ("dns.example.com", "53")),
        (False, None),
    ],
)
def test_dns_setting_controls_the_dnsu2t_block(
    device: Device, dns: object, dnsu2t: tuple[str, str] | None
) -> None:
    device.patch(proxy_body(type="socks5", ip="10.0.0.1", port=1080, dns="9.9.9.9:53"))

    device.patch(proxy_body(dns=dns))

    text = device.redsocks_conf.read_text()
    proxy = device.get()["network"]["proxy"]
    if dnsu2t is None:
        assert "dnsu2t" not in text
        assert "dns" not in proxy
    else:
        ip, port = dnsu2t
        assert text.endswith(
            "dnsu2t {\n"
            f"\tremote_ip = {ip};\n"
            f"\tremote_port = {port};\n"
            "\tlocal_ip = 127.0.0.1;\n"
            "\tlocal_port = 53;\n"
            "}\n"
            "\n"
        )
        assert proxy["dns"] == f"{ip}:{port}"


def test_dns_alone_without_a_stored_proxy_writes_nothing(device: Device) -> None:
    before = device.files()

    assert device.patch(proxy_body(dns=True)) == HostConfigChange(False, False)
    assert device.files() == before


def test_unchanged_values_report_no_change(device: Device) -> None:
    body = {"network": {"hostname": "same", "proxy": FULL_PROXY}}
    device.patch(body)

    assert device.patch(body) == HostConfigChange(hostname_changed=False, proxy_changed=False)


def test_unknown_proxy_keys_are_ignored_with_a_warning(
    device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hostcfg.host_config"):
        device.patch(proxy_body(type="socks5", ip="10.0.0.1", port=1080, local_port=1, colour="red"))

    assert "local_port = 12345;" in device.redsocks_conf.read_text()
    assert "colour" in caplog.text
    assert "local_port" in caplog.text


# --- hostname ---------------------------------------------------------------------------


def test_hostname_goes_to_config_json_and_etc_hostname(device: Device) -> None:
    change = device.patch({"network": {"hostname": "kiosk-7"}})

    assert change == HostConfigChange(hostname_changed=True, proxy_changed=False)
    assert json.loads(device.config_json.read_text()) == {
        "uuid": UUID,
        "deviceApiKey": "key",
        "hostname": "kiosk-7",
    }
    assert device.etc_hostname.read_text() == "kiosk-7\n"


def test_empty_hostname_becomes_the_short_uuid(device: Device) -> None:
    device.patch({"network": {"hostname": ""}})

    assert json.loads(device.config_json.read_text())["hostname"] == "0123abc"
    assert device.etc_hostname.read_text() == "0123abc\n"


def test_hostname_of_63_characters_is_accepted(device: Device) -> None:
    device.patch({"network": {"hostname": "a" * 63}})

    assert device.etc_hostname.read_text() == "a" * 63 + "\n"


@pytest.mark.parametrize(("force", "forced"), [(True, True), ("true", True), (None, False), (False, False)])
def test_force_is_read_at_the_top_level(force: object, forced: bool) -> None:
    assert parse_host_config_patch({"network": {}, "force": force}).force is forced


# --- bad input: 400, naming the field, and nothing written ------------------------------

BAD_BODIES: list[tuple[str, object, str]] = [
    ("not an object", ["network"], "body"),
    ("no network", {"hostname": "x"}, "network"),
    ("network not an object", {"network": "x"}, "network"),
    ("hostname not a string", {"network": {"hostname": 7}}, "network.hostname"),
    ("hostname null", {"network": {"hostname": None}}, "network.hostname"),
    ("hostname too long", {"network": {"hostname": "a" * 64}}, "network.hostname"),
    ("hostname with newline", {"network": {"hostname": "evil\nhost"}}, "network.hostname"),
    ("hostname with trailing newline", {"network": {"hostname": "host\n"}}, "network.hostname"),
    ("hostname with dot", {"network": {"hostname": "a.b"}}, "network.hostname"),
    ("hostname with underscore", {"network": {"hostname": "a_b"}}, "network.hostname"),
    ("hostname with semicolon", {"network": {"hostname": "a;b"}}, "network.hostname"),
    ("hostname starting with hyphen", {"network": {"hostname": "-ab"}}, "network.hostname"),
    ("hostname non-ascii", {"network": {"hostname": "café"}}, "network.hostname"),
    ("proxy not an object", {"network": {"proxy": "socks5://x"}}, "network.proxy"),
    ("type unknown", proxy_body(type="socks6"), "network.proxy.type"),
    ("type not a string", proxy_body(type=5), "network.proxy.type"),
    ("ip with newline", proxy_body(ip="10.0.0.1;\n\tport = 1"), "network.proxy.ip"),
    ("ip with brace", proxy_body(ip="10.0.0.1}"), "network.proxy.ip"),
    ("ip not an address", proxy_body(ip="300.1.1.1"), "network.proxy.ip"),
    ("ip not a string", proxy_body(ip=10), "network.proxy.ip"),
    ("port zero", proxy_body(port=0), "network.proxy.port"),
    ("port too big", proxy_body(port=65536), "network.proxy.port"),
    ("port negative", proxy_body(port=-1), "network.proxy.port"),
    ("port boolean", proxy_body(port=True), "network.proxy.port"),
    ("port float", proxy_body(port=80.5), "network.proxy.port"),
    ("port text", proxy_body(port="80; daemon = on"), "network.proxy.port"),
    ("login with quote", proxy_body(login='bob"; daemon = on; x = "'), "network.proxy.login"),
    ("login with semicolon", proxy_body(login="bob;"), "network.proxy.login"),
    ("login with newline", proxy_body(login="bob\n"), "network.proxy.login"),
    ("login not a string", proxy_body(login=1), "network.proxy.login"),
    ("password with brace", proxy_body(password="}"), "network.proxy.password"),
    ("password with backslash", proxy_body(password="a\\"), "network.proxy.password"),
    ("password with tab", proxy_body(password="a\tb"), "network.proxy.password"),
    ("dns number", proxy_body(dns=53), "network.proxy.dns"),
    ("dns without port", proxy_body(dns="1.1.1.1"), "network.proxy.dns"),
    ("dns port out of range", proxy_body(dns="1.1.1.1:70000"), "network.proxy.dns"),
    ("dns port zero", proxy_body(dns="1.1.1.1:0"), "network.proxy.dns"),
    ("dns bad address", proxy_body(dns="1.1.1:53"), "network.proxy.dns"),
    ("dns with semicolon", proxy_body(dns="1.1.1.1;:53"), "network.proxy.dns"),
    ("dns with newline", proxy_body(dns="1.1.1.1:53\n"), "network.proxy.dns"),
    ("noProxy not an array", proxy_body(noProxy="10.0.0.1"), "network.proxy.noProxy"),
    ("noProxy entry not a string", proxy_body(noProxy=["10.0.0.1", 5]), "network.proxy.noProxy[1]"),
    ("noProxy entry with space", proxy_body(noProxy=["10.0.0.1 10.0.0.2"]), "network.proxy.noProxy[0]"),
    ("noProxy entry with newline", proxy_body(noProxy=["a", "b\nc"]), "network.proxy.noProxy[1]"),
    ("noProxy entry with control", proxy_body(noProxy=["a\x00"]), "network.proxy.noProxy[0]"),
    ("noProxy entry empty", proxy_body(noProxy=[""]), "network.proxy.noProxy[0]"),
    ("noProxy entry a shell command", proxy_body(noProxy=["$(reboot)"]), "network.proxy.noProxy[0]"),
    ("noProxy entry with a pipe", proxy_body(noProxy=["a|b"]), "network.proxy.noProxy[0]"),
    ("noProxy entry with a backquote", proxy_body(noProxy=["`id`"]), "network.proxy.noProxy[0]"),
    ("force not a flag", {"network": {"hostname": "x"}, "force": "maybe"}, "force"),
]


@pytest.mark.parametrize(("body", "field"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
    device: Device, body: object, field: str
) -> None:
    device.patch({"network": {"hostname": "before", "proxy": FULL_PROXY}})
    before = device.files()

    with pytest.raises(HostConfigInvalid) as error:
        device.patch(body)

    message = str(error.value)
    assert message.startswith(f"Could not parse host config input to a valid format: {field} ")
    assert error.value.field == field
    assert device.files() == before


def test_a_bad_field_refuses_the_whole_patch(device: Device) -> None:
    before = device.files()

    with pytest.raises(HostConfigInvalid, match=r"network\.proxy\.port"):
        device.patch({"network": {"hostname": "fine", "proxy": {"type": "socks5", "port": 0}}})

    assert device.files() == before
