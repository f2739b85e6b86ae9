"""Routes of local mode (what the balena CLI uses), under /v2/local/."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
