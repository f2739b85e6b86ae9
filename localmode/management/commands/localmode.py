"""`manage.py localmode push <dir>` and `manage.py localmode logs`: local mode without the
balena CLI, against the supervisor this project runs (SUPERVISOR_PORT on loopback)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from localmode.cli.logs_client import print_logs
from localmode.cli.push import PushFailed, SupervisorClient, push


class _Raw:
    """The command's stdout without the newline Django's OutputWrapper adds to each write."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command

    def write(self, text: str, /) -> None:
        self.command.stdout.write(text, ending="")

    def flush(self) -> None:
        self.command.stdout.flush()


class Command(BaseCommand):
    help = "Push a compose project to this device in local mode, or print its logs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--address", default=None, help="supervisor API (default: this device's)")
        actions = parser.add_subparsers(dest="action", required=True)
        push = actions.add_parser("push", help="build the project's images, set the target, follow the apply")
        push.add_argument("directory", type=Path, help="a folder with docker-compose.yml (or a Dockerfile)")
        push.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the apply")
        logs = actions.add_parser("logs", help="print the device's logs")
        logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
        logs.add_argument("--service", "-s", default=None, help="only this service's lines")
        logs.add_argument("--system", action="store_true", help="only the supervisor's own lines")

    def handle(self, *args: object, **options: object) -> None:
        address = str(options["address"] or f"http://127.0.0.1:{settings.SUPERVISOR_PORT}")
        if options["action"] == "push":
            self._push(address, Path(str(options["directory"])), float(options["timeout"]))  # type: ignore[arg-type]
        else:
            self._logs(address, options)

    def _push(self, address: str, directory: Path, timeout: float) -> None:
        try:
            push(directory, SupervisorClient(address), out=_Raw(self), timeout=timeout)
        except PushFailed as exc:
            raise CommandError(str(exc)) from exc

    def _logs(self, address: str, options: dict[str, object]) -> None:
        try:
            print_logs(
                address,
                out=_Raw(self),
                follow=bool(options["follow"]),
                service=options["service"] if isinstance(options["service"], str) else None,
                system_only=bool(options["system"]),
            )
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            pass
