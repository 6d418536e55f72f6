"""The retirement's decisions (pipeline/steps/retire.py) on inventories built by hand: what is
in use, what is kept for rollback, what a run in flight keeps."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import botocore.session
from botocore.exceptions import ClientError

from core.contracts import SERVING_MODELS_PREFIX
from pipeline.steps import retire
from pipeline.steps.retire import ARTIFACT, CONFIG, DELETE, ENDPOINT, KEEP, MODEL, Resource

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STABLE = "mnist-classifier"


def _key(n: int) -> str:
    return f"mnist-{n:012x}"


def _run(inv: retire.Inventory, n: int, *, minutes: int | None = None, served: bool = True) -> None:
    """Run n's config, model and promoted artifact, made at T0 + n (or `minutes`) minutes; its
    config served from then on unless `served` is false (its run is in flight)."""
    key, at = _key(n), T0 + timedelta(minutes=n if minutes is None else minutes)
    artifact = f"{SERVING_MODELS_PREFIX}{key}/model.tar.gz"
    inv.artifacts[artifact] = Resource(ARTIFACT, artifact, key, at, f"s3://b/{artifact}")
    inv.models[f"{key}-model"] = Resource(
        MODEL, f"{key}-model", key, at, uses=(f"s3://b/{artifact}",)
    )
    inv.configs[f"{key}-epc"] = Resource(
        CONFIG,
        f"{key}-epc",
        key,
        at,
        uses=(f"{key}-model",),
        served_at=at.isoformat() if served else "",
    )


def _endpoint(inv, name: str, n: int, status: str = "InService", pending: int | None = None):
    uses = (f"{_key(n)}-epc",) + ((f"{_key(pending)}-epc",) if pending else ())
    inv.endpoints[name] = Resource(ENDPOINT, name, _key(n), T0, status=status, uses=uses)


def _plan(decisions) -> dict[tuple[str, str], str]:
    return {(d.resource.kind, d.resource.name): d.action for d in decisions}


def test_keep_counts_the_serving_config_and_configs_that_never_served_are_left_alone():
    # Given runs 1-4 on the stable endpoint (4 serving) and run 5 made after it (in flight)
    inv = retire.Inventory()
    for n in range(1, 6):
        _run(inv, n, served=n != 5)
    _endpoint(inv, STABLE, 4)
    # When N = 2
    plan = _plan(retire.plan_superseded(inv, endpoint_name=STABLE, keep=2))
    # Then 4 (serving) and 3 stay, 1 and 2 go with model and artifact, 5 is not touched
    assert plan[(CONFIG, f"{_key(4)}-epc")] == KEEP
    assert plan[(CONFIG, f"{_key(3)}-epc")] == KEEP
    assert plan[(CONFIG, f"{_key(5)}-epc")] == KEEP
    for n in (1, 2):
        assert plan[(CONFIG, f"{_key(n)}-epc")] == DELETE
        assert plan[(MODEL, f"{_key(n)}-model")] == DELETE
        assert plan[(ARTIFACT, f"{SERVING_MODELS_PREFIX}{_key(n)}/model.tar.gz")] == DELETE
    assert (MODEL, f"{_key(5)}-model") not in plan


def test_keep_one_leaves_nothing_older():
    inv = retire.Inventory()
    for n in (1, 2):
        _run(inv, n)
    _endpoint(inv, STABLE, 2)
    plan = _plan(retire.plan_superseded(inv, endpoint_name=STABLE, keep=1))
    assert plan[(CONFIG, f"{_key(1)}-epc")] == DELETE
    assert plan[(CONFIG, f"{_key(2)}-epc")] == KEEP


def test_a_model_another_kept_config_names_stays():
    # Given run 2's config naming run 1's model too (a config made on an older model)
    inv = retire.Inventory()
    for n in (1, 2, 3):
        _run(inv, n)
    inv.configs[f"{_key(2)}-epc"] = replace_uses(inv.configs[f"{_key(2)}-epc"], f"{_key(1)}-model")
    _endpoint(inv, STABLE, 3)
    decisions = retire.plan_superseded(inv, endpoint_name=STABLE, keep=2)
    plan = _plan(decisions)
    assert plan[(CONFIG, f"{_key(1)}-epc")] == DELETE
    assert plan[(MODEL, f"{_key(1)}-model")] == KEEP
    why = {d.resource.name: d.reason for d in decisions}
    assert why[f"{_key(1)}-model"] == f"named by endpoint config {_key(2)}-epc"


def replace_uses(resource: Resource, model: str) -> Resource:
    return replace(resource, uses=(model,))


def test_configs_rank_by_when_they_served_not_when_they_were_created():
    # The reviewer's order: A serves; B and C make their configs while waiting their turn; D
    # makes its config last but updates first (so A served at 1, D at 6; B and C never served)
    inv = retire.Inventory()
    for n, made in ((1, 1), (2, 2), (3, 3), (4, 5)):
        _run(inv, n, minutes=made, served=n in (1, 4))
    inv.configs[f"{_key(4)}-epc"] = replace(
        inv.configs[f"{_key(4)}-epc"], served_at=(T0 + timedelta(minutes=6)).isoformat()
    )
    _endpoint(inv, STABLE, 4)
    decisions = retire.plan_superseded(inv, endpoint_name=STABLE, keep=2)
    plan = _plan(decisions)
    why = {d.resource.name: d.reason for d in decisions}
    # Then A is the one kept for rollback; B and C (in flight) and their models are not touched
    assert why[f"{_key(1)}-epc"] == "kept for rollback (2 of 2)"
    assert why[f"{_key(2)}-epc"] == why[f"{_key(3)}-epc"] == retire.NOT_SERVED
    assert {a for k, a in plan.items() if k[0] != ENDPOINT} == {KEEP}
    # And with N = 1, A goes; B and C still stay
    plan = _plan(retire.plan_superseded(inv, endpoint_name=STABLE, keep=1))
    assert plan[(CONFIG, f"{_key(1)}-epc")] == DELETE
    assert plan[(CONFIG, f"{_key(2)}-epc")] == plan[(CONFIG, f"{_key(3)}-epc")] == KEEP


def test_a_rolled_back_config_is_never_kept_for_rollback():
    inv = retire.Inventory()
    for n in (1, 2, 3):
        _run(inv, n)
    inv.configs[f"{_key(2)}-epc"] = replace(inv.configs[f"{_key(2)}-epc"], rolled_back=True)
    _endpoint(inv, STABLE, 3)
    decisions = retire.plan_superseded(inv, endpoint_name=STABLE, keep=2)
    plan = _plan(decisions)
    assert plan[(CONFIG, f"{_key(2)}-epc")] == DELETE
    assert plan[(CONFIG, f"{_key(1)}-epc")] == KEEP  # the one kept for rollback


def test_a_failed_run_never_deletes_the_stable_endpoint_nor_a_config_it_is_moving_to():
    # Given the stable endpoint, tagged with run 2, updating from run 1's config to run 2's
    inv = retire.Inventory()
    for n in (1, 2):
        _run(inv, n)
    _endpoint(inv, STABLE, 1, status="Updating", pending=2)
    inv.endpoints[STABLE] = Resource(
        ENDPOINT, STABLE, _key(2), T0, status="Updating", uses=inv.endpoints[STABLE].uses
    )
    plan = _plan(retire.plan_run(inv, run_key=_key(2), endpoint_name=STABLE))
    assert plan == {
        (ENDPOINT, STABLE): KEEP,
        (CONFIG, f"{_key(2)}-epc"): KEEP,
        (MODEL, f"{_key(2)}-model"): KEEP,
    }


def test_a_failed_run_with_a_per_run_endpoint_deletes_it_and_what_it_used():
    inv = retire.Inventory()
    _run(inv, 1)
    _endpoint(inv, f"{_key(1)}-endpoint", 1)
    plan = _plan(retire.plan_run(inv, run_key=_key(1), endpoint_name=STABLE))
    assert set(plan.values()) == {DELETE} and len(plan) == 4


def test_a_rejected_run_without_a_config_deletes_its_model_and_artifact():
    inv = retire.Inventory()
    _run(inv, 1)
    del inv.configs[f"{_key(1)}-epc"]
    plan = _plan(retire.plan_run(inv, run_key=_key(1), endpoint_name=STABLE))
    assert plan == {
        (MODEL, f"{_key(1)}-model"): DELETE,
        (ARTIFACT, f"{SERVING_MODELS_PREFIX}{_key(1)}/model.tar.gz"): DELETE,
    }


def test_cleanup_keeps_runs_in_flight_and_foreign_names():
    inv = retire.Inventory()
    for n in (1, 2, 3):
        _run(inv, n)
    del inv.configs[f"{_key(3)}-epc"]  # run 3: model made, not deployed yet
    _endpoint(inv, STABLE, 2)
    inv.not_ours.append((MODEL, "mnist-not-ours"))
    decisions = retire.plan_cleanup(
        inv,
        endpoint_name=STABLE,
        keep=2,
        ttl_seconds=3600,
        now=T0,
        runs_in_flight=[_key(3)],
    )
    plan = _plan(decisions)
    assert plan[(MODEL, f"{_key(3)}-model")] == KEEP
    assert plan[(MODEL, "mnist-not-ours")] == KEEP
    assert plan[(CONFIG, f"{_key(1)}-epc")] == KEEP  # kept for rollback (2 of 2)
    assert plan[(ENDPOINT, STABLE)] == KEEP
    # and without the run in flight, its model is a leftover
    plan = _plan(retire.plan_cleanup(inv, endpoint_name=STABLE, keep=2, ttl_seconds=3600, now=T0))
    assert plan[(MODEL, f"{_key(3)}-model")] == DELETE


def test_an_endpoint_that_is_changing_keeps_everything():
    inv = retire.Inventory()
    for n in (1, 2, 3):
        _run(inv, n)
    _endpoint(inv, STABLE, 2, status="Updating", pending=3)
    decisions = retire.plan_superseded(inv, endpoint_name=STABLE, keep=1)
    assert [(d.action, d.resource.name) for d in decisions] == [(KEEP, STABLE)]
    cleanup = retire.plan_cleanup(inv, endpoint_name=STABLE, keep=1, ttl_seconds=3600, now=T0)
    assert {d.action for d in cleanup} == {KEEP}


class _RefusingSageMaker:
    """A SageMaker client whose deletes answer as the caller says (after botocore's retries)."""

    def __init__(self, code: str, message: str) -> None:
        self.error = ClientError({"Error": {"Code": code, "Message": message}}, "DeleteModel")

    def delete_model(self, **_):
        raise self.error


def test_a_refusal_is_reported_with_sagemakers_words_and_not_found_is_fine():
    model = Resource(MODEL, f"{_key(1)}-model", _key(1), T0)
    decision = retire.Decision(model, DELETE, "its run failed")
    refused = retire.carry_out(
        _RefusingSageMaker("AccessDeniedException", "not authorized"), [decision]
    )
    assert [(o.result, o.detail) for o in refused] == [
        (retire.REFUSED, "AccessDeniedException: not authorized")
    ]
    gone = retire.carry_out(
        _RefusingSageMaker("ValidationException", 'Could not find model "arn:..."'), [decision]
    )
    assert [o.result for o in gone] == [retire.GONE]


def test_the_changing_statuses_are_sagemakers_endpoint_statuses():
    # botocore's sagemaker model, shape EndpointStatus
    model = botocore.session.get_session().get_service_model("sagemaker")
    assert retire.CHANGING_STATUSES <= set(model.shape_for("EndpointStatus").enum)
