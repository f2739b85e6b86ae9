"""The log collector, the host units' logs and the cloud log uploader, run together: as
threads of the agent process, or alone as `manage.py collect_logs`."""

from __future__ import annotations

import threading
from pathlib import Path

from apps_api.cloud.log_upload import CloudLogUploader
from apps_api.logs.collector import POSITIONS_FILE, LogCollector
from apps_api.logs.host_units import CURSOR_FILE, HostUnitLogs
from apps_api.watched_threads import spawn

UPLOADER_READY_SECONDS = 10
STOP_SECONDS = 5


class LogCollection:
    """Follows every supervised container's output and the host units' journal into the
    log streams, and uploads it to the cloud when the device is managed."""

    def __init__(self, data_dir: Path) -> None:
        self.collector = LogCollector(positions_path=data_dir / POSITIONS_FILE)
        self.host_units = HostUnitLogs(cursor_path=data_dir / CURSOR_FILE)
        self.uploader = CloudLogUploader()
        self._collected = threading.Event()

    def start(self) -> None:
        """Start the threads, each under watch: the uploader's two, the host units'
        follower, and the collector with its publisher."""
        self.uploader.start()
        self.collector.start_publisher()
        spawn("host-unit-logs", self.host_units.run, stopped=self.host_units.stopped)
        spawn("log-collector", self._collect, stopped=self.collector.stopped)

    def _collect(self) -> None:
        # What the collector publishes first (the backlog since it last ran) is for the
        # cloud too: the uploader must listen before.
        self.uploader.ready.wait(UPLOADER_READY_SECONDS)
        try:
            self.collector.run()
        finally:
            if self.collector.stopped():
                self._collected.set()

    def run(self) -> None:
        """Collect until `stop()` (for `manage.py collect_logs`): what was read is
        published and the positions saved, so that the next run resumes without a gap or
        a repeat."""
        self.start()
        # Not one long wait: a stop during the collector thread's restart delay ends it
        # without a run to set `_collected`.
        while not self._collected.wait(1.0) and not self.collector.stopped():
            pass
        self._collected.wait(STOP_SECONDS)
        self.host_units.stop()
        self.uploader.stop()

    def stop(self) -> None:
        self.collector.stop()
        self._collected.wait(STOP_SECONDS)
        self.host_units.stop()
        self.uploader.stop()
