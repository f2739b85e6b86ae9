from django.apps import AppConfig


class LocalmodeConfig(AppConfig):
    name = "localmode"
    verbose_name = "Local mode"
