"""ASGI entry point for daphne: HTTP (device API, admin) and websockets (the log stream)."""

import gc
import os

from supervisor_site.asgi_handler import get_shared_thread_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")

django_asgi_app = get_shared_thread_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from apps_api.api.hot_reads import answering_hot_reads  # noqa: E402
from apps_api.apikeys import prepare_device_identity  # noqa: E402
from apps_api.metrics import record_request  # noqa: E402
from localmode.consumers import websocket_urlpatterns  # noqa: E402
from supervisor_site.liveness import answering_ping  # noqa: E402

# Fails start-up (with the file named) when config.json cannot be read.
prepare_device_identity()

application = answering_ping(
    answering_hot_reads(
        ProtocolTypeRouter(
            {"http": ASGIStaticFilesHandler(django_asgi_app), "websocket": URLRouter(websocket_urlpatterns)}
        ),
        record_request,
    ),
    record_request,
)

# The URLconf imports every view now rather than on the first request. Then everything
# loaded lives as long as the process: frozen out of the collector's sight, a full
# collection no longer walks Django's and DRF's objects, which stalled requests for
# 40-100 ms about once a second under load (bench/api_load.py: p99 halved).
get_resolver().url_patterns  # noqa: B018
gc.freeze()
