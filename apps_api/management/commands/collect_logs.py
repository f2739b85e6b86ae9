import signal

from django.core.management.base import BaseCommand

from apps_api.log_collector import LogCollector


class Command(BaseCommand):
    help = "Follow the output of supervised containers and publish it to the log streams."

    def handle(self, *args: object, **options: object) -> None:
        collector = LogCollector()
        signal.signal(signal.SIGTERM, lambda *_: collector.stop())
        try:
            collector.run()
        except KeyboardInterrupt:
            collector.stop()
