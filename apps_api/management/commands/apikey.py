from django.core.management.base import BaseCommand, CommandError

from apps_api.apikeys import get_or_create_global_key, prepare_device_identity
from hostcfg.identity import DeviceConfigError


class Command(BaseCommand):
    help = "Print the global API key (created with the device identity if missing)."

    def handle(self, *args: object, **options: object) -> None:
        try:
            prepare_device_identity()
        except DeviceConfigError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(get_or_create_global_key().key)
