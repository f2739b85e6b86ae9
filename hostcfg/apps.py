from django.apps import AppConfig


class HostcfgConfig(AppConfig):
    name = "hostcfg"
    verbose_name = "Host and device configuration"
