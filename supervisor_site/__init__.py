"""Project wiring: settings, URL root, ASGI router and the Celery app."""

from supervisor_site.celery import app as celery_app

__all__ = ["celery_app"]
