"""Which container events a user is told of: exits and restarts the supervisor did not ask
for. Events are given in the order the engine sends them (checked against a real engine
in tests/integration/test_log_streams.py)."""

from __future__ import annotations

from apps_api.logs.service_exits import ServiceExits

ID = "c0ffee" * 10 + "abcd"


def announced(*events: str) -> list[str]:
    lines: list[str] = []
    exits = ServiceExits(
        announce=lines.append, describe=lambda container_id, _: f"main sha256:{container_id[:4]}"
    )
    for action in events:
        exits.observe(action, ID, {"io.balena.supervised": "true"})
    return lines


def test_an_exit_on_its_own_is_announced_with_the_service_and_image() -> None:
    assert announced("start", "die") == ["Service exited 'main sha256:c0ff'"]


def test_the_restart_policy_starting_it_again_is_announced_after_the_exit() -> None:
    assert announced("start", "die", "start", "die", "start") == [
        "Service exited 'main sha256:c0ff'",
        "Restarting service 'main sha256:c0ff'",
        "Service exited 'main sha256:c0ff'",
        "Restarting service 'main sha256:c0ff'",
    ]


def test_a_stop_the_supervisor_asks_for_is_not_announced() -> None:
    # The engine's stop: the stop signal, then SIGKILL after the grace period.
    assert announced("start", "kill", "kill", "die") == []


def test_a_forced_removal_is_not_announced() -> None:
    assert announced("start", "kill", "die", "destroy") == []


def test_starting_a_stopped_service_again_is_not_a_restart() -> None:
    assert announced("start", "kill", "die", "start") == []


def test_an_exit_after_a_stop_and_a_start_is_announced() -> None:
    assert announced("start", "kill", "die", "start", "die") == ["Service exited 'main sha256:c0ff'"]


def test_a_removed_container_is_forgotten() -> None:
    assert announced("start", "die", "destroy", "start") == ["Service exited 'main sha256:c0ff'"]


def crashes(*events: tuple[str, dict[str, str]]) -> list[str]:
    """The exit codes the journal is told of (`exited`), for events with attributes."""
    told: list[str] = []
    exits = ServiceExits(
        announce=lambda line: None,
        describe=lambda container_id, _: "main",
        exited=lambda container_id, attributes: told.append(attributes.get("exitCode", "")),
    )
    for action, attributes in events:
        exits.observe(action, ID, attributes)
    return told


def test_the_journal_is_told_of_each_unrequested_exit_with_its_code_and_not_of_stops() -> None:
    assert crashes(("start", {}), ("die", {"exitCode": "3"}), ("start", {}), ("die", {"exitCode": "1"})) == [
        "3",
        "1",
    ]
    assert crashes(("start", {}), ("kill", {"signal": "15"}), ("die", {"exitCode": "143"})) == []
