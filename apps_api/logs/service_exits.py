"""`Service exited` and `Restarting service`: what a user is told when a service's
container ends, or is started again, without the supervisor having asked for it."""

from __future__ import annotations

from collections.abc import Callable

# The original's wording (docs/logs.md "System messages"), followed by `'<service> <image id>'`.
SERVICE_EXITED = "Service exited"
SERVICE_RESTARTING = "Restarting service"


class ServiceExits:
    """Turns a supervised container's engine events (`kill`, `die`, `start`, `destroy`,
    in the engine's order) into system log lines.

    A `die` is announced unless a `kill` came since the container last started: every
    stop the supervisor performs (a kill or stop step, stop-service, reboot, local mode)
    is the engine's stop or a forced removal, which send `kill` before the container
    dies, and is announced by the supervisor itself (`Killing service …`). A stop asked
    at the engine's command line is treated alike. A `start` after an announced exit,
    the restart policy's, is announced as a restart; a start after a stop is not.
    """

    def __init__(
        self,
        *,
        announce: Callable[[str], None],
        describe: Callable[[str, dict[str, str]], str],
        exited: Callable[[str, dict[str, str]], None] = lambda container_id, attributes: None,
    ) -> None:
        """`announce(message)` publishes a system line; `describe(container id,
        event attributes)` is the `<service> <image id>` a line names; `exited(container
        id, die event attributes)` is told of each exit announced (the journal's crashes)."""
        self._announce = announce
        self._describe = describe
        self._exited_callback = exited
        self._stopping: set[str] = set()
        self._exited: set[str] = set()

    def observe(self, action: str, container_id: str, attributes: dict[str, str]) -> None:
        """One event of a supervised container."""
        if action == "kill":
            self._stopping.add(container_id)
        elif action == "die":
            if container_id in self._stopping:
                self._stopping.discard(container_id)
                return
            self._exited.add(container_id)
            self._announce(f"{SERVICE_EXITED} '{self._describe(container_id, attributes)}'")
            self._exited_callback(container_id, attributes)
        elif action == "start":
            self._stopping.discard(container_id)
            if container_id in self._exited:
                self._exited.discard(container_id)
                self._announce(f"{SERVICE_RESTARTING} '{self._describe(container_id, attributes)}'")
        elif action == "destroy":
            self._stopping.discard(container_id)
            self._exited.discard(container_id)
