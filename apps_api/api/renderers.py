"""Renderers and negotiation for the endpoints that answer plain text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return str(data).encode(self.charset)


class FirstRendererNegotiation(BaseContentNegotiation):
    """The device API answers in its documented format whatever the client's Accept says."""

    def select_parser(self, request, parsers):  # type: ignore[no-untyped-def]
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):  # type: ignore[no-untyped-def]
        renderer = renderers[0]
        return renderer, renderer.media_type
