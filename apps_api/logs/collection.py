"""The log collector, the host units' logs and the cloud log uploader, run together: as
threads of the agent's worker process, or alone as `manage.py collect_logs`."""

from __future__ import annotations

import threading
from pathlib import Path

from apps_api.cloud.log_upload import CloudLogUploader
from apps_api.logs.collector import POSITIONS_FILE, LogCollector
from apps_api.logs.host_units import CURSOR_FILE, HostUnitLogs

UPLOADER_READY_SECONDS = 10
STOP_SECONDS = 5


class LogCollection:
    """Follows every supervised container's output and the host units' journal into the
    log streams, and uploads it to the cloud when the device is managed."""

    def __init__(self, data_dir: Path) -> None:
        self.collector = LogCollector(positions_path=data_dir / POSITIONS_FILE)
        self.host_units = HostUnitLogs(cursor_path=data_dir / CURSOR_FILE)
        self.uploader = CloudLogUploader()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Collect until `stop()`; what was read is published and the positions saved, so
        that the next run resumes without a gap or a repeat."""
        self.uploader.start()
        # What the collector publishes first (the backlog since it last ran) is for the
        # cloud too: the uploader must listen before.
        self.uploader.ready.wait(UPLOADER_READY_SECONDS)
        host_units = threading.Thread(target=self.host_units.run, name="host-unit-logs", daemon=True)
        host_units.start()
        try:
            self.collector.run()
        finally:
            self.host_units.stop()
            host_units.join(STOP_SECONDS)
            self.uploader.stop()

    def start(self) -> None:
        """Run in a thread of this process."""
        self._thread = threading.Thread(target=self.run, name="log-collection", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.collector.stop()
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
