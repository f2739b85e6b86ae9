"""Routes of local mode (what the balena CLI uses), under /v2/local/."""

from __future__ import annotations

from django.urls import URLPattern
from django.urls import path as django_path

from apps_api.api.urls import path
from localmode import views
from localmode.log_stream import logs_view

urlpatterns: list[URLPattern] = [
    path("v2/local/target-state", views.LocalTargetStateView.as_view()),
    path("v2/local/device-info", views.DeviceInfoView.as_view()),
    django_path("v2/local/logs", logs_view),  # async: streams without holding a thread
]
