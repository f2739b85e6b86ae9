"""A release that failed its probation, as every reader of the target sees it: replaced by
the last committed release until the target names another one."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from apps_api.engine.state import TargetState
from apps_api.models import ReleaseTrial
from apps_api.target.store import load_target, store_target
from tests.unit.engine.state_builders import app, svc

pytestmark = pytest.mark.django_db


def target(commit: str, *, image: str) -> TargetState:
    spec = replace(app(svc("web", commit=commit, image=image)), commit=commit)
    return TargetState(name="dev", config={}, apps=(spec,))


def loaded_app_and_document_commit() -> tuple[str | None, str, str, str]:
    loaded = load_target()
    assert loaded is not None
    (spec,) = loaded[0].apps
    return spec.commit, spec.services[0].image, spec.failed_commit, loaded[1].document["apps"][0]["commit"]


def test_a_failed_release_reads_as_the_committed_one_and_the_stored_document_is_untouched() -> None:
    committed = target("c1", image="web:v1").apps[0]
    store_target(target("c2", image="web:v2"))
    ReleaseTrial.objects.create(app_id=1, committed_commit="c1", committed_app=asdict(committed),
                                failed_commit="c2", failed_reason="bad")  # fmt: skip

    assert loaded_app_and_document_commit() == ("c1", "web:v1", "c2", "c2")
    loaded = load_target()
    assert loaded is not None
    assert loaded[0].apps[0].failed_reason == "bad"


def test_a_failed_first_release_stays_as_it_is_marked_failed() -> None:
    store_target(target("c1", image="web:v1"))
    ReleaseTrial.objects.create(app_id=1, failed_commit="c1", failed_reason="bad")

    assert loaded_app_and_document_commit() == ("c1", "web:v1", "c1", "c1")


def test_the_same_release_sent_again_stays_failed() -> None:
    store_target(target("c2", image="web:v2"))
    ReleaseTrial.objects.create(app_id=1, committed_commit="c1", failed_commit="c2", failed_reason="bad")

    store_target(target("c2", image="web:v2"))

    assert ReleaseTrial.objects.get(app_id=1).failed_commit == "c2"


def test_a_new_release_for_the_app_is_tried_and_keeps_the_committed_one() -> None:
    committed = target("c1", image="web:v1").apps[0]
    store_target(target("c2", image="web:v2"))
    ReleaseTrial.objects.create(app_id=1, committed_commit="c1", committed_app=asdict(committed),
                                failed_commit="c2", failed_reason="bad")  # fmt: skip

    store_target(target("c3", image="web:v3"))

    assert loaded_app_and_document_commit() == ("c3", "web:v3", "", "c3")
    assert ReleaseTrial.objects.get(app_id=1).committed_commit == "c1"


def test_an_app_gone_from_the_target_forgets_its_releases() -> None:
    store_target(target("c1", image="web:v1"))
    ReleaseTrial.objects.create(app_id=1, committed_commit="c1")

    store_target(TargetState(name="dev", config={}, apps=()))

    assert not ReleaseTrial.objects.exists()
