"""ASGI entry point for daphne: HTTP (device API, admin) and, later, websockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from hostcfg.identity import prepare_device_identity  # noqa: E402

# Fails start-up (with the file named) when config.json cannot be read.
prepare_device_identity()

application = ProtocolTypeRouter({"http": ASGIStaticFilesHandler(django_asgi_app)})
