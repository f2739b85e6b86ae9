"""The Django admin shows the device identity to a maintainer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command

from apps_api.admin_login import ADMIN_LOGIN_FAILURES
from apps_api.apikeys import get_or_create_global_key
from apps_api.redis_store import ADMIN_LOGIN_FAILURES_PREFIX, redis_client
from hostcfg.identity import load_device_identity
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.integration.conftest import StartWeb, manage


@pytest.mark.django_db(transaction=True)
def test_createsuperuser_then_admin_home_shows_device_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "maintainer-pass-1")
    call_command("createsuperuser", "--noinput", "--username=maintainer", "--email=m@example.com")
    client = Client()
    assert client.login(username="maintainer", password="maintainer-pass-1")  # over HTTP, to the agent

    page = client.get("/admin/")

    identity = load_device_identity()
    assert page.status_code == 200
    html = page.content.decode()
    assert "Device identity" in html
    assert identity.uuid in html
    assert identity.device_api_key not in html, "secrets are masked"
    assert get_or_create_global_key().key[-4:] in html


@pytest.mark.django_db(transaction=True)
def test_admin_requires_login() -> None:
    response = Client().get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db(transaction=True)
def test_admin_shows_the_stored_target_and_the_step_journal(admin_client: Client) -> None:
    from apps_api.models import App, StepRecord
    from apps_api.target.documents import parse_target
    from apps_api.target.store import store_target

    document = {"local": {"name": "d", "config": {}, "apps": {"7": {"name": "shown-app", "commit": "abc",
                "releaseId": 3, "services": {"1": {"serviceName": "shown-service", "imageId": 1,
                "image": "local/busybox", "environment": {}, "labels": {}}},
                "volumes": {"shown-volume": {}}, "networks": {"shown-network": {}}}}}}  # fmt: skip
    store_target(parse_target(document, device_uuid="unused"))
    StepRecord.objects.create(kind="start", app_id=7, service_name="shown-service", reason="not running",
                              succeeded=True, duration_ms=12)  # fmt: skip

    app_page = admin_client.get("/admin/apps_api/app/").content.decode()
    assert "shown-app" in app_page
    detail = admin_client.get(f"/admin/apps_api/app/{App.objects.get(app_id=7).pk}/change/").content.decode()
    for shown in ("shown-service", "shown-volume", "shown-network"):
        assert shown in detail
    journal = admin_client.get("/admin/apps_api/steprecord/").content.decode()
    assert "shown-service" in journal
    assert "not running" in journal


@pytest.mark.django_db(transaction=True)
def test_the_api_key_list_cannot_be_filtered_by_the_key(admin_client: Client) -> None:
    key = get_or_create_global_key().key
    listing = admin_client.get("/admin/apps_api/apikey/")
    assert listing.status_code == 200
    # Each answer to ?key__startswith= would tell one more character of the key.
    for lookup in ("key__startswith", "key", "key__contains"):
        probe = admin_client.get(f"/admin/apps_api/apikey/?{lookup}={key[:3]}")
        assert probe.status_code == 400, lookup
        assert key[-4:].encode() not in probe.content


def test_the_admin_home_names_what_is_unhealthy(start_web: StartWeb) -> None:
    web = start_web(wait=False, DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert wait_until(web.answers, 60), web.output()
    maintainer = {**web.env, "DJANGO_SUPERUSER_PASSWORD": "maintainer-pass-1"}
    created = manage(maintainer, "createsuperuser", "--noinput", "--username=m", "--email=m@example.com")
    assert created.returncode == 0, created.stderr
    client = Client(web.base_url)
    assert client.login(username="m", password="maintainer-pass-1")
    html = client.get("/admin/").content.decode()
    assert "Health" in html
    assert "docker:" in html


@pytest.mark.parametrize("weak", ["12345678", "password", "short1!"])
def test_a_weak_admin_password_is_refused(weak: str) -> None:
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        validate_password(weak)


@pytest.mark.django_db(transaction=True)
def test_the_step_journal_shows_causes_and_filters_by_app_and_service(
    admin_client: Client, redis_server: str
) -> None:
    from apps_api.engine.causes import crash_cause
    from apps_api.service_changes import record

    record(kind="kill", app_id=7, service_name="web", reason="env changed: TOKEN (changed)", cause=None)
    record(kind="crash", app_id=8, service_name="db", reason="crash: exit code 3", cause=crash_cause(3))

    page = admin_client.get("/admin/apps_api/steprecord/?app_id=8").content.decode()
    assert "crash: exit code 3" in page
    assert "TOKEN" not in page
    by_service = admin_client.get("/admin/apps_api/steprecord/?service_name=web").content.decode()
    assert "env changed: TOKEN (changed)" in by_service
    assert "exit code" not in by_service


@pytest.mark.django_db(transaction=True)
def test_every_admin_page_answers_a_maintainer_without_a_server_error(admin_client: Client) -> None:
    """Each admin route, through the agent: index, each app, each model's list, add, change,
    history and delete pages (of a real row where there is one), the maintainer's own pages."""
    from django.contrib import admin
    from django.contrib.auth.models import User
    from django.contrib.contenttypes.models import ContentType
    from django.urls import reverse

    from apps_api.apikeys import get_or_create_global_key

    get_or_create_global_key()
    urls = [reverse("admin:index"), "/admin/nowhere/", reverse("admin:password_change"),
            reverse("admin:password_change_done"), reverse("admin:jsi18n"),
            reverse("admin:autocomplete") + "?app_label=auth&model_name=user&field_name=groups"]  # fmt: skip
    for model in admin.site._registry:
        meta = model._meta
        name = f"admin:{meta.app_label}_{meta.model_name}"
        urls += [reverse("admin:app_list", args=[meta.app_label]), reverse(f"{name}_changelist"),
                 reverse(f"{name}_add")]  # fmt: skip
        row = model.objects.order_by("pk").first()
        pk = str(row.pk) if row is not None else "1"
        urls += [reverse(f"{name}_{page}", args=[pk]) for page in ("change", "history", "delete")]
        urls.append(f"/admin/{meta.app_label}/{meta.model_name}/{pk}/")  # redirects to the change page
        if row is not None:
            content_type = ContentType.objects.get_for_model(model)
            urls.append(reverse("admin:view_on_site", args=[content_type.pk, pk]))
    admin_user = User.objects.get(username="admin")
    urls.append(reverse("admin:auth_user_password_change", args=[admin_user.pk]))
    answers = {url: admin_client.get(url).status_code for url in urls}

    assert {url: status for url, status in answers.items() if status >= 500} == {}
    assert answers[reverse("admin:index")] == 200
    token = admin_client.session.cookies.get("csrftoken")
    logout = admin_client.post(reverse("admin:logout"), {"csrfmiddlewaretoken": token},
                               HTTP_REFERER=admin_client.base_url + "/admin/")  # fmt: skip
    assert logout.status_code == 200
    assert admin_client.get(reverse("admin:index")).status_code == 302, "signed out"


@pytest.fixture
def login_failures_cleared() -> Iterator[None]:
    yield
    store = redis_client()
    for key in store.scan_iter(f"{ADMIN_LOGIN_FAILURES_PREFIX}*"):
        store.delete(key)


@pytest.mark.django_db(transaction=True)
def test_failed_admin_logins_are_throttled_per_address_and_user(login_failures_cleared: None) -> None:
    """App containers reach the admin's address: they may not guess passwords without end
    (security review, L14)."""
    from django.contrib.auth.models import User

    User.objects.create_superuser("keeper", "k@example.com", "the-right-password-1")
    client = Client()
    for _ in range(ADMIN_LOGIN_FAILURES):
        assert not client.login(username="keeper", password="a-guess")
    refused = client.post("/admin/login/", {"username": "keeper", "password": "the-right-password-1"})
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.content.decode()
    assert int(refused["Retry-After"]) > 0
    assert Client().get("/admin/").status_code == 302, "nobody was let in"


@pytest.mark.django_db(transaction=True)
def test_the_apply_page_needs_the_right_to_read_the_step_journal() -> None:
    from django.contrib.auth.models import Permission, User

    clerk = User.objects.create_user("clerk", password="clerk-pass-1", is_staff=True)
    client = Client()
    assert client.login(username="clerk", password="clerk-pass-1")
    assert client.get("/admin/apply/").status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_steprecord"))
    assert client.get("/admin/apply/").status_code == 200
