import json
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps_api import actions
from apps_api.apikeys import ApiAccess
from apps_api.apply.single_flight import apply_in_progress
from apps_api.apply_status import read_flags, read_image_progress, read_service_statuses
from apps_api.engine.state import InvalidTargetState
from apps_api.errors import DeviceApiError
from apps_api.target.documents import parse_target
from hostcfg.identity import load_device_identity


class Command(BaseCommand):
    help = "Store a target state (v2 local-mode or v3 cloud JSON) and apply it (--dry-run: show the plan)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="target state JSON file, or - for standard input")
        parser.add_argument("--force", action="store_true", help="override update locks")
        parser.add_argument(
            "--wait", action="store_true", help="follow progress until applied; fail on error"
        )
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="store nothing: print the steps the engine would take first and what holds the others "
            "back (POST /v2/plan's answer)",
        )

    def handle(self, *args: object, **options: object) -> None:
        source = str(options["file"])
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
            document = json.loads(text)
        except (OSError, ValueError) as exc:
            raise CommandError(f"{source}: {exc}") from exc
        if options["dry_run"]:
            self._dry_run(document, force=bool(options["force"]))
            return
        try:
            target = parse_target(document, device_uuid=load_device_identity().uuid)
        except InvalidTargetState as exc:
            raise CommandError(f"Invalid target state. {exc}") from exc
        force = bool(options["force"]) or (isinstance(document, dict) and document.get("force") is True)
        record_id = actions.set_target_state(target, force=force)
        self.stdout.write(f"target #{record_id} stored; applying")
        if options["wait"]:
            self._follow(float(options["timeout"]))  # type: ignore[arg-type]

    def _dry_run(self, document: object, *, force: bool) -> None:
        try:
            answer = actions.plan_target_document(document, access=ApiAccess(all_apps=True), force=force)
        except DeviceApiError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(answer, indent=2))

    def _follow(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flags = read_flags()
            if flags["update_failed"]:
                raise CommandError("apply failed (it is retried in the background; see the step journal)")
            if not apply_in_progress():
                self.stdout.write("\napplied")
                return
            progress = read_image_progress()
            bar = " ".join(f"{ref} [{'#' * (p // 10):<10}] {p}%" for ref, p in sorted(progress.items()))
            statuses = " ".join(
                f"{name}:{status}" for name, status in sorted(read_service_statuses().items())
            )
            self.stdout.write(f"\r{bar} {statuses}".ljust(100)[:200], ending="")
            self.stdout.flush()
            time.sleep(0.2)
        raise CommandError(f"not applied within {timeout:g} s")
