"""The admin's live page of the apply (/admin/apply/): the plan against the stored target,
each service's status and download progress, the last failed step and what holds each
held-back step. It reloads itself every few seconds; it only reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from apps_api.apply.planning import explain_stored_target, held_document, step_document
from apps_api.apply_status import read_progress
from apps_api.engine.state import CurrentService, normalise_image_ref
from apps_api.models import StepRecord
from apps_api.target.store import load_target

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 2


@dataclass(frozen=True)
class ServiceRow:
    app_id: int
    service_name: str
    image: str
    container: str
    """Docker's state of the service's newest container; "" without one."""
    status: str
    """What the apply is doing with it now (Downloading, Installing, Stopping…)."""
    download_percent: int | None


def apply_page(request: HttpRequest) -> HttpResponse:
    """The page; behind the admin's login (wrapped by `admin.site.admin_view`)."""
    context = {**admin.site.each_context(request), "title": "Apply", **apply_page_context()}
    return TemplateResponse(request, "admin/apply_page.html", context)


def apply_page_context() -> dict[str, Any]:
    """What the page shows; a plan that cannot be made (Docker unreachable…) is named as such."""
    progress = read_progress()
    context: dict[str, Any] = {
        "refresh_seconds": REFRESH_SECONDS,
        "flags": progress.flags,
        "last_error": StepRecord.objects.filter(succeeded=False).order_by("-id").first(),
        "plan_error": "",
        "steps": [],
        "held_back": [],
        "services": [],
    }
    try:
        explained = explain_stored_target()
    except Exception as exc:  # the page still shows the rest, with the reason
        logger.warning("admin apply page: no plan: %s", exc)
        context["plan_error"] = f"{type(exc).__name__}: {exc}"
        return context
    context["steps"] = [step_document(s) for s in explained.plan.steps]
    context["held_back"] = [held_document(h) for h in explained.plan.held]
    newest: dict[tuple[int, str], CurrentService] = {}
    for container in sorted(explained.current.services, key=lambda s: s.created_at):
        newest[(container.app_id, container.service_name)] = container
    loaded = load_target()
    apps = loaded[0].apps if loaded else ()
    context["services"] = [
        ServiceRow(
            app_id=app.app_id,
            service_name=service.service_name,
            image=service.image,
            container=c.status if (c := newest.get((app.app_id, service.service_name))) else "",
            status=progress.service_statuses.get(f"{app.app_id}/{service.service_name}", ""),
            download_percent=progress.image_progress.get(normalise_image_ref(service.image)),
        )
        for app in apps
        for service in app.services
    ]
    return context
