from django.apps import AppConfig


class AppsApiConfig(AppConfig):
    name = "apps_api"
    verbose_name = "Applications and services"
