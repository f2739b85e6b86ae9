import signal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from apps_api.cloud.log_upload import CloudLogUploader
from apps_api.logs.collector import POSITIONS_FILE, LogCollector


class Command(BaseCommand):
    help = (
        "Follow the output of supervised containers and publish it to the log streams; "
        "upload the logs to the cloud when the device is managed."
    )

    def handle(self, *args: object, **options: object) -> None:
        collector = LogCollector(positions_path=Path(settings.SUPERVISOR_DATA_DIR) / POSITIONS_FILE)
        uploader = CloudLogUploader()
        uploader.start()
        # What the collector publishes first (the backlog since it last ran) is for the
        # cloud too: the uploader must listen before.
        uploader.ready.wait(10)
        # Both end the collector the same way: what was read is published and the
        # positions saved, so that the next run resumes without a gap or a repeat.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: collector.stop())
        collector.run()
        uploader.stop()
