"""The project as a Django app: loading it makes the Celery app the current one."""

from django.apps import AppConfig

# Every Django process sends tasks: the Celery app, configured from the settings, must be the
# current one before the first task is sent (importing the package alone does not load it).
from supervisor_site.celery import app as celery_app


class SupervisorSiteConfig(AppConfig):
    name = "supervisor_site"
    verbose_name = "Supervisor"
    celery_app = celery_app
