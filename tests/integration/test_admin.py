"""The Django admin shows the device identity to a maintainer."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

from apps_api.apikeys import get_or_create_global_key
from hostcfg.identity import load_device_identity


@pytest.mark.django_db
def test_createsuperuser_then_admin_home_shows_device_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "maintainer-pass-1")
    call_command("createsuperuser", "--noinput", "--username=maintainer", "--email=m@example.com")
    client = Client()
    assert client.login(username="maintainer", password="maintainer-pass-1")

    page = client.get("/admin/")

    identity = load_device_identity()
    assert page.status_code == 200
    html = page.content.decode()
    assert "Device identity" in html
    assert identity.uuid in html
    assert identity.device_api_key not in html, "secrets are masked"
    assert get_or_create_global_key().key[-4:] in html


@pytest.mark.django_db
def test_admin_requires_login() -> None:
    response = Client().get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
