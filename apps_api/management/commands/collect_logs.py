import signal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from apps_api.logs.collection import LogCollection


class Command(BaseCommand):
    help = (
        "Follow the output of supervised containers and publish it to the log streams; "
        "upload the logs to the cloud when the device is managed. (The agent runs this "
        "inside its worker process; the command is for tests and development.)"
    )

    def handle(self, *args: object, **options: object) -> None:
        collection = LogCollection(Path(settings.SUPERVISOR_DATA_DIR))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: collection.collector.stop())
        collection.run()
