"""The device API's routes; each view runs on a pool of reused threads (`in_own_thread`):
the actions that wait on the worker on a pool of their own, so that however many of them
wait, reads and the health probes are answered."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.urls import URLPattern
from django.urls import path as django_path

from apps_api.api import audit, v1, v2

# Enough for many requests waiting on tasks at once (each restart or stop waits for its
# container) with reads still answered; threads start only when needed and are reused.
VIEW_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="api-view")
# Restarts, stops, purges, reboots…: each holds its thread until the worker is done; more
# than this many wait for a thread rather than take the readers'.
WAITING_ACTION_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="api-action")
# The health check, which the host's watchdog asks: never behind reads that wait on the cloud
# or the engine.
HEALTH_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="api-health")


# A JSON body of 10 MB (the most a request may carry) can take hundreds of MB once parsed
# (api/json_body.py refuses the worst): bodies over BIG_BODY_BYTES are handled one at a time,
# so that a few at once cannot take the agent's memory. Nothing is refused for it.
BIG_BODY_BYTES = 256 * 1024
_big_bodies = threading.BoundedSemaphore(1)


def one_big_body_at_a_time(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def view_with_bounded_bodies(request: Any, *args: Any, **kwargs: Any) -> Any:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if (length.isdigit() and int(length) > BIG_BODY_BYTES) or "HTTP_TRANSFER_ENCODING" in request.META:
            with _big_bodies:
                return view(request, *args, **kwargs)
        return view(request, *args, **kwargs)

    return view_with_bounded_bodies


def in_own_thread(view: Callable[..., Any], pool: ThreadPoolExecutor = VIEW_THREADS) -> Callable[..., Any]:
    """Run the sync view on `pool` rather than on the thread all thread-sensitive calls
    share (supervisor_site/asgi_handler.py), so that no request waits behind another."""
    run = sync_to_async(one_big_body_at_a_time(view), thread_sensitive=False, executor=pool)

    @functools.wraps(view)  # keeps `cls` and `csrf_exempt`, which DRF and the schema read
    async def view_on_pool(request: Any, *args: Any, **kwargs: Any) -> Any:
        return await run(request, *args, **kwargs)

    return view_on_pool


def path(route: str, view: Callable[..., Any]) -> URLPattern:
    return django_path(route, in_own_thread(audit.audited(view)))


def waiting_path(route: str, view: Callable[..., Any]) -> URLPattern:
    """A route whose action waits on the worker."""
    return django_path(route, in_own_thread(audit.audited(view), WAITING_ACTION_THREADS))


# The polled reads first: Django tries the routes in order.
urlpatterns = [
    path("v1/device", v1.DeviceView.as_view()),
    path("v2/applications/state", v2.ApplicationsStateView.as_view()),
    path("v2/state/status", v2.StateStatusView.as_view()),
    path("v2/version", v2.VersionView.as_view()),
    path("ping", v1.PingView.as_view()),
    django_path("v1/healthy", in_own_thread(audit.audited(v1.HealthyView.as_view()), HEALTH_THREADS)),
    path("metrics", v1.MetricsView.as_view()),
    path("v1/blink", v1.BlinkView.as_view()),
    waiting_path("v1/device/host-config", v1.HostConfigView.as_view()),
    path("v1/regenerate-api-key", v1.RegenerateApiKeyView.as_view()),
    path("v1/update", v1.UpdateView.as_view()),
    waiting_path("v1/reboot", v1.RebootView.as_view()),
    waiting_path("v1/shutdown", v1.ShutdownView.as_view()),
    waiting_path("v1/restart", v1.RestartView.as_view()),
    waiting_path("v1/purge", v1.PurgeView.as_view()),
    path("v1/apps/<str:app_id>", v1.AppView.as_view()),
    waiting_path("v1/apps/<str:app_id>/stop", v1.AppStopView.as_view()),
    waiting_path("v1/apps/<str:app_id>/start", v1.AppStartView.as_view()),
    path("v2/applications/<str:app_id>/state", v2.ApplicationStateView.as_view()),
    waiting_path("v2/applications/<str:app_id>/restart-service", v2.RestartServiceView.as_view()),
    waiting_path("v2/applications/<str:app_id>/stop-service", v2.StopServiceView.as_view()),
    waiting_path("v2/applications/<str:app_id>/start-service", v2.StartServiceView.as_view()),
    waiting_path("v2/applications/<str:app_id>/restart", v2.RestartAppView.as_view()),
    waiting_path("v2/applications/<str:app_id>/purge", v2.PurgeAppView.as_view()),
    path("v2/plan", v2.PlanView.as_view()),
    path("v2/containerId", v2.ContainerIdView.as_view()),
    path("v2/device/name", v2.DeviceNameView.as_view()),
    path("v2/device/tags", v2.DeviceTagsView.as_view()),
    path("v2/device/vpn", v2.DeviceVpnView.as_view()),
    waiting_path("v2/cleanup-volumes", v2.CleanupVolumesView.as_view()),
    path("v2/journal-logs", v2.JournalLogsView.as_view()),
    path("v2/journal", v2.StepJournalView.as_view()),
    path("v2/audit", audit.AuditView.as_view()),
]
