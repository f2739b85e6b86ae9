"""The planner, situation by situation: given current and target, the next round's steps."""

from __future__ import annotations

import dataclasses

import pytest

from apps_api.engine.planner import HeldStep, explain, plan
from apps_api.engine.state import CurrentState, NetworkSpec, Step, VolumeSpec, normalise_image_ref
from tests.unit.engine.state_builders import (
    CONFIG,
    LOCAL,
    app,
    container,
    network,
    settled,
    svc,
    volume,
    with_images,
)


def kinds(steps: list[Step]) -> list[tuple[str, str | None]]:
    return sorted((step.kind, step.service_name) for step in steps)


def only(steps: list[Step]) -> Step:
    assert len(steps) == 1, kinds(steps)
    return steps[0]


# --- fresh installs ---------------------------------------------------------------------


def test_nothing_current_nothing_target_is_no_steps() -> None:
    assert plan(CurrentState(), [], locks_held=(), config=CONFIG) == []


def test_fresh_app_creates_its_default_network_before_starting() -> None:
    target = app(svc("main"))
    current = CurrentState(images=with_images("img-main"))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("createNetwork", None)]


def test_fresh_app_starts_without_taking_a_lock_once_the_network_exists() -> None:
    target = app(svc("a"), svc("b"))
    current = CurrentState(networks=(network(target),), images=with_images("img-a", "img-b"))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("start", "a"), ("start", "b")]


def test_fresh_app_with_missing_image_fetches_while_creating_the_network() -> None:
    target = app(svc("main"))
    steps = plan(CurrentState(), [target], locks_held=(), config=CONFIG)
    assert kinds(steps) == [("createNetwork", None), ("fetch", "main")]
    assert next(s for s in steps if s.kind == "fetch").image == "img-main:latest"


def test_image_being_downloaded_gives_noop_not_a_second_fetch() -> None:
    target = app(svc("main"))
    current = CurrentState(networks=(network(target),), downloading=frozenset({"img-main:latest"}))
    assert [s.kind for s in plan(current, [target], locks_held=(), config=CONFIG)] == ["noop"]


def test_two_services_sharing_an_image_fetch_it_once() -> None:
    target = app(svc("a", image="shared"), svc("b", image="shared"))
    current = CurrentState(networks=(network(target),))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("fetch", "a")]


def test_start_waits_until_every_image_of_the_app_is_present() -> None:
    target = app(svc("a"), svc("b"))
    current = CurrentState(networks=(network(target),), images=with_images("img-a"))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("fetch", "b")]


def test_host_networking_service_does_not_wait_for_the_app_network() -> None:
    target = app(svc("main", composition={"network_mode": "host"}))
    current = CurrentState(images=with_images("img-main"))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [
        ("createNetwork", None),
        ("start", "main"),
    ]


# --- settled ------------------------------------------------------------------------------


def test_settled_app_needs_nothing() -> None:
    target = app(svc("a"), svc("b"))
    assert plan(settled(target), [target], locks_held=(), config=CONFIG) == []


def test_settled_app_releases_a_lock_still_held() -> None:
    target = app(svc("a"))
    steps = plan(settled(target), [target], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("releaseLock", None)]
    assert steps[0].app_id == 1


def test_exited_container_is_left_to_its_restart_policy() -> None:
    target = app(svc("a"))
    current = settled(target, services=(container(target, target.services[0], status="exited"),))
    assert plan(current, [target], locks_held=(), config=CONFIG) == []


# --- changes and strategies --------------------------------------------------------------


def test_environment_change_takes_the_lock_first_naming_every_service() -> None:
    old = app(svc("a"), svc("b"))
    new = app(svc("a", environment={"X": "1"}), svc("b"))
    step = only(plan(settled(old), [new], locks_held=(), config=CONFIG))
    assert (step.kind, step.app_id, step.services) == ("takeLock", 1, ("a", "b"))


def test_environment_change_with_lock_kills_only_the_changed_service() -> None:
    old = app(svc("a"), svc("b"))
    new = app(svc("a", environment={"X": "1"}), svc("b"))
    steps = plan(settled(old), [new], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("kill", "a")]
    assert steps[0].reason == "env changed: X (added)"


REBOOT_FIRST = {"io.balena.update.requires-reboot": "true"}


def test_a_service_that_requires_a_reboot_is_installed_like_any_other() -> None:
    target = app(svc("driver", labels=REBOOT_FIRST))
    current = CurrentState(networks=(network(target),), images=with_images("img-driver"))
    step = only(plan(current, [target], locks_held=(), config=CONFIG))
    assert (step.kind, step.service_name, step.current) == ("start", "driver", None)


def test_an_installed_service_that_requires_a_reboot_waits_for_it() -> None:
    target = app(svc("driver", labels=REBOOT_FIRST))
    current = settled(target, services=(container(target, target.services[0], status="created"),))
    waiting = dataclasses.replace(CONFIG, reboot_pending=True)
    assert plan(current, [target], locks_held=(), config=waiting) == []
    assert kinds(plan(current, [target], locks_held={1}, config=CONFIG)) == [("start", "driver")]


def test_a_rejected_release_leaves_the_running_one_untouched() -> None:
    old = app(svc("a"), svc("b"))
    new = dataclasses.replace(app(svc("a", image="img-new"), svc("c")), rejected="service 'c' requires …")
    assert plan(settled(old), [new], locks_held=(), config=CONFIG) == []


def test_a_rejected_release_gives_back_a_lock_it_was_holding() -> None:
    old = app(svc("a"))
    new = dataclasses.replace(app(svc("a", image="img-new")), rejected="service 'a' requires …")
    assert kinds(plan(settled(old), [new], locks_held={1}, config=CONFIG)) == [("releaseLock", None)]


def test_killed_service_is_started_again_with_the_new_configuration() -> None:
    old = app(svc("a"), svc("b"))
    new = app(svc("a", environment={"X": "1"}), svc("b"))
    current = settled(old, services=(container(old, old.services[1]),))
    steps = plan(current, [new], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("start", "a")]
    assert steps[0].target == new.services[0]


def test_download_then_kill_fetches_without_taking_the_lock() -> None:
    old = app(svc("a", image="img:v1"))
    new = app(svc("a", image="img:v2"))
    assert kinds(plan(settled(old), [new], locks_held=(), config=CONFIG)) == [("fetch", "a")]


def test_download_then_kill_waits_for_every_image_of_the_app_before_killing() -> None:
    old = app(svc("a", image="a:v1"), svc("b", image="b:v1"))
    new = app(svc("a", image="a:v2"), svc("b", image="b:v2"))
    current = settled(old, images={**settled(old).images, **with_images("a:v2")})
    assert kinds(plan(current, [new], locks_held={1}, config=CONFIG)) == [("fetch", "b")]


def test_download_then_kill_kills_once_images_are_present() -> None:
    old = app(svc("a", image="a:v1"))
    new = app(svc("a", image="a:v2"))
    current = settled(old, images=with_images("a:v1", "a:v2"))
    assert kinds(plan(current, [new], locks_held={1}, config=CONFIG)) == [("kill", "a")]


@pytest.mark.parametrize("strategy", ["kill-then-download", "delete-then-download"])
def test_kill_first_strategies_take_the_lock_before_downloading(strategy: str) -> None:
    old = app(svc("a", image="a:v1", strategy=strategy))
    new = app(svc("a", image="a:v2", strategy=strategy))
    assert kinds(plan(settled(old), [new], locks_held=(), config=CONFIG)) == [("takeLock", None)]


@pytest.mark.parametrize("strategy", ["kill-then-download", "delete-then-download"])
def test_kill_first_strategies_kill_before_fetching(strategy: str) -> None:
    old = app(svc("a", image="a:v1", strategy=strategy))
    new = app(svc("a", image="a:v2", strategy=strategy))
    steps = plan(settled(old), [new], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("kill", "a")]
    assert steps[0].target is not None
    assert steps[0].target.update_strategy == strategy


@pytest.mark.parametrize("strategy", ["kill-then-download", "delete-then-download"])
def test_kill_first_strategies_fetch_after_the_kill(strategy: str) -> None:
    new = app(svc("a", image="a:v2", strategy=strategy))
    current = CurrentState(networks=(network(new),), images=with_images("a:v1"))
    assert kinds(plan(current, [new], locks_held={1}, config=CONFIG)) == [("fetch", "a")]


def test_hand_over_fetches_first() -> None:
    old = app(svc("a", image="a:v1", strategy="hand-over"))
    new = app(svc("a", image="a:v2", strategy="hand-over"))
    assert kinds(plan(settled(old), [new], locks_held=(), config=CONFIG)) == [("fetch", "a")]


def test_hand_over_emits_one_handover_step_when_the_image_is_present() -> None:
    old = app(svc("a", image="a:v1", strategy="hand-over"))
    new = app(
        svc("a", image="a:v2", strategy="hand-over", labels={"io.balena.update.handover-timeout": "5000"})
    )
    current = settled(old, images=with_images("a:v1", "a:v2"))
    step = only(plan(current, [new], locks_held={1}, config=CONFIG))
    assert step.kind == "handover"
    assert step.current == current.services[0]
    assert step.target is not None
    assert step.target.handover_timeout_ms == 5000


def test_hand_over_is_lock_gated() -> None:
    old = app(svc("a", image="a:v1", strategy="hand-over"))
    new = app(svc("a", image="a:v2", strategy="hand-over"))
    current = settled(old, images=with_images("a:v1", "a:v2"))
    assert kinds(plan(current, [new], locks_held=(), config=CONFIG)) == [("takeLock", None)]


def test_unknown_strategy_behaves_as_download_then_kill() -> None:
    old = app(svc("a", image="a:v1", strategy="yolo"))
    new = app(svc("a", image="a:v2", strategy="yolo"))
    assert kinds(plan(settled(old), [new], locks_held={1}, config=CONFIG)) == [("fetch", "a")]


def test_same_image_name_with_new_content_replaces_the_container() -> None:
    target = app(svc("main", image="local_image_main:latest"))
    current = settled(target, images={"local_image_main:latest": "sha256:rebuilt"})
    steps = plan(current, [target], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("kill", "main")]
    assert steps[0].reason == "image changed: local_image_main:latest (new content)"


def test_release_only_change_updates_metadata_without_restart() -> None:
    old = app(svc("a", commit="c1", release=1))
    new = app(svc("a", commit="c2", release=2))
    steps = plan(settled(old), [new], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("updateMetadata", "a")]


def test_release_only_change_takes_the_lock_first() -> None:
    old = app(svc("a", commit="c1", release=1))
    new = app(svc("a", commit="c2", release=2))
    assert kinds(plan(settled(old), [new], locks_held=(), config=CONFIG)) == [("takeLock", None)]


def test_one_take_lock_per_app_however_many_steps_it_gates() -> None:
    old = app(svc("a"), svc("b"), svc("c"))
    new = app(svc("a", environment={"V": "2"}), svc("b", environment={"V": "2"}), svc("c", commit="c9"))
    assert kinds(plan(settled(old), [new], locks_held=(), config=CONFIG)) == [("takeLock", None)]


# --- running flag -------------------------------------------------------------------------


def test_running_false_stops_a_running_container() -> None:
    old = app(svc("a"))
    new = app(svc("a", running=False))
    current = settled(old, services=(container(new, new.services[0]),))
    assert kinds(plan(current, [new], locks_held={1}, config=CONFIG)) == [("stop", "a")]


def test_running_false_leaves_an_exited_container_alone() -> None:
    new = app(svc("a", running=False))
    current = settled(new, services=(container(new, new.services[0], status="exited"),))
    assert plan(current, [new], locks_held=(), config=CONFIG) == []


def test_installed_container_is_started() -> None:
    target = app(svc("a"), svc("b"))
    current = settled(target, services=(container(target, target.services[0], status="created"),
                                        container(target, target.services[1])))  # fmt: skip
    assert kinds(plan(current, [target], locks_held={1}, config=CONFIG)) == [("start", "a")]


# --- containers that disappeared, died or doubled -----------------------------------------


def test_container_removed_behind_our_back_is_recreated_under_the_lock() -> None:
    target = app(svc("a"), svc("b"))
    current = settled(target, services=(container(target, target.services[1]),))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("takeLock", None)]
    assert kinds(plan(current, [target], locks_held={1}, config=CONFIG)) == [("start", "a")]


def test_only_container_removed_behind_our_back_is_recreated_at_once() -> None:
    target = app(svc("a"))
    current = settled(target, services=())
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("start", "a")]


def test_dead_container_is_removed_without_a_lock_before_its_replacement_starts() -> None:
    target = app(svc("a"))
    current = settled(target, services=(container(target, target.services[0], status="dead"),))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("remove", "a")]


def test_duplicate_containers_keep_the_newest() -> None:
    target = app(svc("a"))
    older = container(target, target.services[0], created="2026-01-01T00:00:00Z")
    newer = container(target, target.services[0], created="2026-02-01T00:00:00Z")
    steps = plan(settled(target, services=(older, newer)), [target], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("kill", "a")]
    assert steps[0].current == older


# --- depends_on ----------------------------------------------------------------------------


def test_dependent_waits_for_its_dependency_to_run() -> None:
    target = app(svc("db"), svc("web", depends_on=("db",)))
    current = CurrentState(networks=(network(target),), images=with_images("img-db", "img-web"))
    assert kinds(plan(current, [target], locks_held=(), config=CONFIG)) == [("start", "db")]


def test_dependent_starts_once_its_dependency_runs() -> None:
    target = app(svc("db"), svc("web", depends_on=("db",)))
    current = settled(target, services=(container(target, target.services[0]),))
    assert kinds(plan(current, [target], locks_held={1}, config=CONFIG)) == [("start", "web")]


def test_dependent_waits_while_its_dependency_is_being_replaced() -> None:
    old = app(svc("db"), svc("web", depends_on=("db",)))
    new = app(svc("db", environment={"V": "2"}), svc("web", depends_on=("db",)))
    current = settled(old, services=(container(old, old.services[0]),))
    assert kinds(plan(current, [new], locks_held={1}, config=CONFIG)) == [("kill", "db")]


def test_dependent_waits_for_an_exited_dependency() -> None:
    target = app(svc("db"), svc("web", depends_on=("db",)))
    current = settled(target, services=(container(target, target.services[0], status="exited"),))
    assert plan(current, [target], locks_held={1}, config=CONFIG) == [
        Step("releaseLock", app_id=1, reason="target reached")
    ]


# --- services and apps leaving the target ---------------------------------------------------


def test_service_removed_from_target_is_killed_under_the_lock() -> None:
    old = app(svc("a"), svc("b"))
    new = app(svc("a"))
    assert kinds(plan(settled(old), [new], locks_held=(), config=CONFIG)) == [("takeLock", None)]
    assert kinds(plan(settled(old), [new], locks_held={1}, config=CONFIG)) == [("kill", "b")]


def test_app_removed_from_target_takes_the_lock_on_its_services() -> None:
    old = app(svc("a"), svc("b"))
    step = only(plan(settled(old), [], locks_held=(), config=CONFIG))
    assert (step.kind, step.services) == ("takeLock", ("a", "b"))


def test_app_removed_from_target_kills_all_its_containers() -> None:
    old = app(svc("a"), svc("b"))
    assert kinds(plan(settled(old), [], locks_held={1}, config=CONFIG)) == [("kill", "a"), ("kill", "b")]


def test_removed_app_loses_networks_but_keeps_volumes_then_releases_the_lock() -> None:
    old = app(svc("a"), volumes=[VolumeSpec("data")])
    current = settled(old, services=())
    steps = plan(current, [], locks_held={1}, config=CONFIG)
    assert sorted(s.kind for s in steps) == ["releaseLock", "removeNetwork"]


def test_removed_app_with_only_volumes_left_needs_nothing() -> None:
    old = app(svc("a"), volumes=[VolumeSpec("data")])
    current = CurrentState(volumes=(volume(old, "data"),))
    assert plan(current, [], locks_held=(), config=CONFIG) == []


def test_app_with_no_release_removes_its_services() -> None:
    old = app(svc("a"))
    assert kinds(plan(settled(old), [app()], locks_held={1}, config=CONFIG)) == [("kill", "a")]


def test_two_apps_are_planned_independently() -> None:
    first = app(svc("a"), app_id=1)
    second_old = app(svc("b"), app_id=2)
    second_new = app(svc("b", environment={"X": "y"}), app_id=2)
    current = CurrentState(
        services=settled(first).services + settled(second_old).services,
        networks=settled(first).networks + settled(second_old).networks,
        images={**settled(first).images, **settled(second_old).images},
    )
    steps = plan(current, [first, second_new], locks_held={1}, config=CONFIG)
    assert [(s.kind, s.app_id) for s in steps] == [("releaseLock", 1), ("takeLock", 2)]


# --- volumes and networks --------------------------------------------------------------------


def test_new_volume_is_created_before_its_service_starts() -> None:
    target = app(svc("a", composition={"volumes": [{"type": "volume", "source": "data", "target": "/data"}]}),
                 volumes=[VolumeSpec("data")])  # fmt: skip
    current = CurrentState(networks=(network(target),), images=with_images("img-a"))
    steps = plan(current, [target], locks_held=(), config=CONFIG)
    assert kinds(steps) == [("createVolume", None)]
    assert steps[0].volume == VolumeSpec("data")


def test_changed_volume_definition_never_removes_the_volume() -> None:
    old_volume, new_volume = VolumeSpec("data"), VolumeSpec("data", labels={"new": "label"})
    target = app(svc("a"), volumes=[new_volume])
    current = settled(target, volumes=(volume(target, "data", old_volume),))
    assert plan(current, [target], locks_held=(), config=CONFIG) == []


def test_volume_dropped_from_a_remaining_app_is_kept() -> None:
    target = app(svc("a"))
    current = settled(target, volumes=(volume(target, "old-data"),))
    assert plan(current, [target], locks_held=(), config=CONFIG) == []


def test_changed_network_first_kills_the_services_on_it() -> None:
    old = app(
        svc("a", composition={"networks": {"backend": {"aliases": []}}}), networks=[NetworkSpec("backend")]
    )
    new = dataclasses.replace(old, networks=(NetworkSpec("backend", internal=True),))
    steps = plan(settled(old), [new], locks_held={1}, config=CONFIG)
    assert kinds(steps) == [("kill", "a")]
    assert steps[0].reason == "network changed: backend"


def test_changed_network_without_containers_is_removed_then_created() -> None:
    old = app(
        svc("a", composition={"networks": {"backend": {"aliases": []}}}), networks=[NetworkSpec("backend")]
    )
    new = dataclasses.replace(old, networks=(NetworkSpec("backend", internal=True),))
    current = settled(old, services=())
    steps = plan(current, [new], locks_held={1}, config=CONFIG)
    assert [s.kind for s in steps] == ["removeNetwork"]
    assert steps[0].current_network is not None
    assert steps[0].current_network.name == "backend"


def test_network_no_longer_in_target_is_removed_when_unused() -> None:
    target = app(svc("a"))
    current = settled(target, networks=(network(target), network(target, "legacy")))
    steps = plan(current, [target], locks_held=(), config=CONFIG)
    assert [(s.kind, s.current_network.name if s.current_network else None) for s in steps] == [
        ("removeNetwork", "legacy")
    ]


# --- images -----------------------------------------------------------------------------------


def test_unused_managed_image_is_removed_once_settled() -> None:
    target = app(svc("a", image="a:v2"))
    current = settled(
        target, images=with_images("a:v1", "a:v2"), managed_images=frozenset({"a:v1:latest", "a:v2"})
    )
    current = dataclasses.replace(current, managed_images=frozenset({"a:v1", "a:v2"}))
    assert [(s.kind, s.image) for s in plan(current, [target], locks_held=(), config=CONFIG)] == [
        ("removeImage", "a:v1")
    ]


def test_local_mode_keeps_unused_images() -> None:
    target = app(svc("a", image="a:v2"))
    current = settled(target, images=with_images("a:v1", "a:v2"), managed_images=frozenset({"a:v1"}))
    assert plan(current, [target], locks_held=(), config=LOCAL) == []


def test_previous_release_image_on_hold_is_kept_while_the_new_release_is_on_probation() -> None:
    target = app(svc("a", image="a:v2"))
    current = settled(target, images=with_images("a:v1", "a:v2"), managed_images=frozenset({"a:v1"}))
    on_hold = dataclasses.replace(CONFIG, images_on_hold=frozenset({"a:v1"}))
    assert plan(current, [target], locks_held=(), config=on_hold) == []


def test_images_not_fetched_by_the_supervisor_are_never_removed() -> None:
    target = app(svc("a"))
    current = settled(target, images={**settled(target).images, "someone-elses:latest": "sha256:x"})
    assert plan(current, [target], locks_held=(), config=CONFIG) == []


def test_image_of_a_container_still_running_is_kept() -> None:
    old = app(svc("a", image="a:v1"))
    new = app(svc("a", image="a:v2"))
    current = settled(old, images=with_images("a:v1"), managed_images=frozenset({"a:v1"}))
    assert kinds(plan(current, [new], locks_held=(), config=CONFIG)) == [("fetch", "a")]


def test_managed_image_already_gone_from_the_engine_is_not_removed_again() -> None:
    target = app(svc("a", image="a:v2"))
    current = settled(target, managed_images=frozenset({"a:v1:latest"}))
    assert plan(current, [target], locks_held=(), config=CONFIG) == []


def test_replacement_ready_to_start_is_started_by_the_kill_itself() -> None:
    old = app(svc("a"), svc("b"))
    new = app(svc("a", environment={"X": "1"}), svc("b"))
    step = only(plan(settled(old), [new], locks_held={1}, config=CONFIG))
    assert (step.kind, step.then_start, step.target) == ("kill", True, new.services[0])


def test_replacement_waiting_for_a_recreated_network_is_started_next_round() -> None:
    old = app(
        svc("a", composition={"networks": {"backend": {"aliases": []}}}), networks=[NetworkSpec("backend")]
    )
    new = dataclasses.replace(old, networks=(NetworkSpec("backend", internal=True),))
    assert only(plan(settled(old), [new], locks_held={1}, config=CONFIG)).then_start is False


def test_replacement_whose_dependency_is_replaced_too_waits_for_it() -> None:
    old = app(svc("db"), svc("web", depends_on=("db",)))
    new = app(svc("db", environment={"V": "2"}), svc("web", depends_on=("db",), environment={"V": "2"}))
    steps = {s.service_name: s for s in plan(settled(old), [new], locks_held={1}, config=CONFIG)}
    assert steps["db"].then_start is True
    assert steps["web"].then_start is False


def test_kill_then_download_with_the_image_missing_only_kills() -> None:
    old = app(svc("a", image="a:v1", strategy="kill-then-download"))
    new = app(svc("a", image="a:v2", strategy="kill-then-download"))
    assert only(plan(settled(old), [new], locks_held={1}, config=CONFIG)).then_start is False


def test_delete_then_download_never_starts_from_the_kill() -> None:
    old = app(svc("a", strategy="delete-then-download"))
    new = app(svc("a", strategy="delete-then-download", environment={"X": "1"}))
    assert only(plan(settled(old), [new], locks_held={1}, config=CONFIG)).then_start is False


def test_kill_then_download_with_the_image_present_starts_from_the_kill() -> None:
    old = app(svc("a", strategy="kill-then-download"))
    new = app(svc("a", strategy="kill-then-download", environment={"X": "1"}))
    step = only(plan(settled(old), [new], locks_held={1}, config=CONFIG))
    assert (step.kind, step.then_start, step.app) == ("kill", True, new)


@pytest.mark.parametrize(
    ("written", "listed"),
    [
        ("redis", "redis:latest"),
        ("docker.io/library/redis", "redis:latest"),
        ("index.docker.io/library/redis:7", "redis:7"),
        ("docker.io/balena/app:1", "balena/app:1"),
        ("library/redis", "redis:latest"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("registry.example/app:v1@sha256:abc", "registry.example/app@sha256:abc"),
    ],
)
def test_image_references_are_normalised_as_the_engine_lists_them(written: str, listed: str) -> None:
    assert normalise_image_ref(written) == listed


def test_lock_files_left_by_a_killed_worker_are_released_once_the_app_is_settled() -> None:
    target = app(svc("a"))
    steps = plan(settled(target), [target], locks_held=(), config=CONFIG, leftover_locks={1, 9})
    assert [(s.kind, s.app_id) for s in steps] == [("releaseLock", 1), ("releaseLock", 9)]


def test_lock_files_left_behind_wait_while_the_app_still_has_work() -> None:
    old = app(svc("a"))
    new = app(svc("a", environment={"X": "1"}))
    assert kinds(plan(settled(old), [new], locks_held=(), config=CONFIG, leftover_locks={1})) == [
        ("takeLock", None)
    ]


@pytest.mark.parametrize(
    ("label", "expected_ms"),
    [("5000", 5000), ("\u00b2", 60_000), ("1e3", 60_000), ("", 60_000), ("9" * 30, 60_000),
     ("999999999", 3_600_000)],
)  # fmt: skip
def test_a_handover_timeout_label_is_ascii_digits_and_at_most_an_hour(label: str, expected_ms: int) -> None:
    service = svc("a", strategy="hand-over", labels={"io.balena.update.handover-timeout": label})
    assert service.handover_timeout_ms == expected_ms


def test_a_network_of_another_app_uuid_with_this_app_id_is_replaced_not_taken_for_ours() -> None:
    """A device moved from the cloud to local mode: the cloud release's `<uuid>_default` has
    app id 1, like the local app's `1_default` (maintainability review, issue 26). Taken for
    ours, `1_default` was never made and every start failed with `network not found`."""
    target = dataclasses.replace(app(svc("main")), app_uuid="1")
    cloud_release = dataclasses.replace(app(svc("main")), app_uuid="2a3d0000000000000000000000000000")
    current = CurrentState(networks=(network(cloud_release),), images=with_images("img-main"))

    steps = plan(current, [target], locks_held=(), config=CONFIG)

    assert [(s.kind, s.current_network.docker_name if s.current_network else s.network and s.network.name)
            for s in steps] == [("removeNetwork", "2a3d0000000000000000000000000000_default"),
                                ("createNetwork", "default")]  # fmt: skip


@pytest.mark.parametrize("case", ["network not in target", "app removed from target"])
def test_a_network_the_engine_refuses_to_remove_is_held_back_with_the_engines_words(case: str) -> None:
    settled_app = settled(app(svc("main")))
    back = network(app(svc("main"), networks=[NetworkSpec("back")]), "back", NetworkSpec("back"))
    current = dataclasses.replace(settled_app, networks=(*settled_app.networks, back))
    if case == "app removed from target":
        current = CurrentState(networks=(back,))  # its containers are gone already
    refusal = "error while removing network: network 1_back id 5f has active endpoints"
    config = dataclasses.replace(CONFIG, refused_removals={back.docker_name: refusal})
    target = [app(svc("main"))] if case == "network not in target" else []

    explained = explain(current, target, locks_held={1}, config=config)

    assert ("removeNetwork", back.docker_name) not in [
        (s.kind, s.current_network.docker_name) for s in explained.steps if s.current_network
    ]
    assert [h for h in explained.held if h.cause == "refused"] == [
        HeldStep("removeNetwork", 1, None, "refused", held_by="network back", detail=refusal)
    ]
    # Without the refusal the same plan removes it.
    removed = [s.current_network.docker_name for s in plan(current, target, locks_held={1}, config=CONFIG)
               if s.kind == "removeNetwork" and s.current_network]  # fmt: skip
    assert back.docker_name in removed
