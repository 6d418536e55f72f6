"""SageMaker resources of one run: find-or-create by name, wait for a final state, stop on cancel.

Every function takes a SageMaker client, so the same code runs on the cluster, under kfp.local
against an emulator, and in tests. A retried step finds the resource its first attempt created
(names come from the run key) instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from core.contracts import (
    COST_TAGS,
    ROLLED_BACK_ERROR,
    ROLLED_BACK_TAG,
    RUN_KEY_TAG,
    SAGEMAKER_POLL_SECONDS_VARIABLE,
    SERVED_AT_TAG,
    run_key_from_name,
)
from core.sagemaker_events import ENDPOINT, TRAINING_JOB, TRANSFORM_JOB, SageMakerResource

if TYPE_CHECKING:  # the Lambda asset ships this module without endpoint_mode
    from pipeline.steps.endpoint_mode import ModeChange

DEFAULT_POLL_SECONDS = 30.0
# SageMaker names of resources that do not exist come back as a ValidationException.
_NOT_FOUND_MARKERS = ("could not find", "not found", "does not exist")


Sleep = Callable[[float], None]


def configured_poll_seconds() -> float:
    """The pause between two describes: the environment's (the local stack sets it), else 30 s.

    A value that is not a positive number is ignored: a step never polls in a tight loop.
    """
    raw = os.environ.get(SAGEMAKER_POLL_SECONDS_VARIABLE, "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_POLL_SECONDS
    return value if 0 < value <= DEFAULT_POLL_SECONDS else DEFAULT_POLL_SECONDS


class StepFailed(RuntimeError):
    """A SageMaker resource ended in a failed state; the message carries SageMaker's reason."""


def run_tags(run_key: str) -> list[dict[str, str]]:
    """The tags of every resource a run creates: its run key and the cost-allocation tags."""
    cost = [{"Key": key, "Value": value} for key, value in COST_TAGS.items()]
    return [{"Key": RUN_KEY_TAG, "Value": run_key}, *cost]


def is_not_found(error: ClientError) -> bool:
    """SageMaker's answer for a resource it does not have (to a describe, a delete, ListTags)."""
    err = error.response.get("Error", {})
    message = str(err.get("Message", "")).lower()
    return err.get("Code") in ("ValidationException", "ResourceNotFound") and any(
        marker in message for marker in _NOT_FOUND_MARKERS
    )


def describe_or_none(describe: Callable[..., dict], **name: str) -> dict | None:
    """The description of a resource, or None when SageMaker says it does not exist."""
    try:
        return describe(**name)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def wait_for(
    describe: Callable[[], dict],
    status_field: str,
    *,
    done: frozenset[str],
    failed: frozenset[str],
    what: str,
    timeout_seconds: float,
    poll_seconds: float | None = None,
    sleep: Sleep = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Polls `describe` until the status is final; raises StepFailed with SageMaker's reason."""
    if poll_seconds is None:
        poll_seconds = configured_poll_seconds()
    deadline = clock() + timeout_seconds
    while True:
        description = describe()
        status = description[status_field]
        if status in done:
            return description
        if status in failed:
            reason = description.get("FailureReason") or "no reason given"
            raise StepFailed(f"{what} ended {status}: {reason}")
        if clock() >= deadline:
            raise StepFailed(f"{what} still {status} after {timeout_seconds:.0f} s")
        sleep(poll_seconds)


@contextlib.contextmanager
def stop_on_cancel(stop: Callable[[], Any]) -> Iterator[None]:
    """While inside, a SIGTERM or SIGINT (KFP cancelling the step) first stops the SageMaker job."""

    def _cancel(signum, _frame):
        with contextlib.suppress(ClientError):  # already finished or never started: nothing to stop
            stop()
        raise KeyboardInterrupt(f"step cancelled by signal {signum}; SageMaker job stop requested")

    previous = {sig: signal.signal(sig, _cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ensure_job(
    sm,
    kind: SageMakerResource,
    request: dict,
    *,
    timeout_seconds: float,
    poll_seconds: float | None,
    sleep: Sleep,
) -> dict:
    """Creates the job named in `request` unless it exists, then waits for it to finish."""
    name_field, status_field, method = kind.name_field, kind.status_field, kind.operation_suffix
    what = method.replace("_", " ")
    name = request[name_field]
    describe = getattr(sm, f"describe_{method}")
    existing = describe_or_none(describe, **{name_field: name})
    if existing is not None and existing[status_field] in kind.failed:
        raise StepFailed(
            f"{what} {name} ended {existing[status_field]}: "
            f"{existing.get('FailureReason') or 'no reason given'}"
        )
    if existing is None:
        getattr(sm, f"create_{method}")(**request)
    stop = getattr(sm, f"stop_{method}")
    with stop_on_cancel(lambda: stop(**{name_field: name})):
        return wait_for(
            lambda: describe(**{name_field: name}),
            status_field,
            done=kind.done,
            failed=kind.failed,
            what=f"{what} {name}",
            timeout_seconds=timeout_seconds,
            poll_seconds=poll_seconds,
            sleep=sleep,
        )


def ensure_training_job(
    sm,
    request: dict,
    *,
    timeout_seconds: float,
    poll_seconds: float | None,
    sleep: Sleep = time.sleep,
) -> dict:
    return _ensure_job(
        sm,
        TRAINING_JOB,
        request,
        timeout_seconds=timeout_seconds,
        poll_seconds=poll_seconds,
        sleep=sleep,
    )


def ensure_model(sm, request: dict) -> dict:
    """Creates the model named in `request` unless it exists (models are ready at once)."""
    name = request["ModelName"]
    existing = describe_or_none(sm.describe_model, ModelName=name)
    if existing is None:
        sm.create_model(**request)
        existing = sm.describe_model(ModelName=name)
    return existing


def ensure_transform_job(
    sm,
    request: dict,
    *,
    timeout_seconds: float,
    poll_seconds: float | None,
    sleep: Sleep = time.sleep,
) -> dict:
    return _ensure_job(
        sm,
        TRANSFORM_JOB,
        request,
        timeout_seconds=timeout_seconds,
        poll_seconds=poll_seconds,
        sleep=sleep,
    )


# SageMaker refuses UpdateEndpoint (and CreateEndpoint of a name it has) while the endpoint is
# Creating/Updating (ValidationException "Cannot update in-progress endpoint"): the step waits and
# tries again, so two runs that finish together take turns.
_BUSY_MARKERS = ("in-progress endpoint", "cannot create already existing endpoint")
# Statuses an endpoint passes through on its own: a deploy waits them out before an update.
_TRANSIENT = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
# Statuses that end a deploy: the endpoint is broken or going away (UpdateRollbackFailed: the
# update failed and so did its rollback).
_ENDED = ENDPOINT.failed - _TRANSIENT
DELETING = "Deleting"
# botocore's sagemaker model, DescribeEndpointOutput.EndpointStatus: "Failed: Endpoint could not
# be created, updated, or re-scaled. [...] DeleteEndpoint is the only operation that can be
# performed on a failed endpoint." A deploy that finds the endpoint Failed deletes it and
# creates it on its own config. (UpdateRollbackFailed: "in service with a mix of the old and new
# endpoint configurations", remedied by hand per the Rolling Deployments guide: not touched.)
FAILED = "Failed"
# A run's endpoint config whose update SageMaker rolled back carries contracts.ROLLED_BACK_TAG: a
# retried deploy step (KFP retries it) does not put the same model through the guardrails again.

BeforeUpdate = Callable[[dict], None]
# Given the endpoint as it stands, how to move it to the new config (endpoint_mode.ModeChange).
ChangeOf = Callable[[dict], "ModeChange"]


class EndpointRolledBack(StepFailed):
    """SageMaker rolled the update back (an alarm fired while baking): the old model serves."""


def _busy(error: ClientError) -> bool:
    err = error.response.get("Error", {})
    message = str(err.get("Message", "")).lower()
    return err.get("Code") == "ValidationException" and any(m in message for m in _BUSY_MARKERS)


def wait_settled(
    sm,
    endpoint_name: str,
    *,
    deadline: float,
    poll_seconds: float,
    sleep: Sleep,
    clock: Callable[[], float],
) -> dict:
    """Describes the endpoint until it is no longer Creating/Updating/RollingBack."""
    while True:
        description = sm.describe_endpoint(EndpointName=endpoint_name)
        if description[ENDPOINT.status_field] not in _TRANSIENT:
            return description
        if clock() >= deadline:
            raise StepFailed(
                f"endpoint {endpoint_name} still {description[ENDPOINT.status_field]}: gave up"
                " waiting for it to be InService"
            )
        sleep(poll_seconds)


def wait_gone(
    sm,
    endpoint_name: str,
    *,
    deadline: float,
    poll_seconds: float,
    sleep: Sleep,
    clock: Callable[[], float],
) -> None:
    """Describes the endpoint until it is no longer Deleting (DeleteEndpoint is asynchronous)."""
    while True:
        description = describe_or_none(sm.describe_endpoint, EndpointName=endpoint_name)
        if description is None:
            return
        if description[ENDPOINT.status_field] != DELETING:
            return  # gone, and already created again (by another run): the caller looks again
        if clock() >= deadline:
            raise StepFailed(f"endpoint {endpoint_name} still Deleting: gave up waiting")
        sleep(poll_seconds)


def serving_run(description: dict) -> str:
    """Who serves: the endpoint config's run key (`<run key>-epc`), else the config's name."""
    config = description.get("EndpointConfigName", "")
    return run_key_from_name(config) or config or "(unknown)"


def ensure_endpoint(
    sm,
    *,
    endpoint_name: str,
    config_request: dict,
    tags: list[dict[str, str]],
    timeout_seconds: float,
    poll_seconds: float | None,
    deployment_config: dict | None = None,
    before_update: BeforeUpdate | None = None,
    change_of: ChangeOf | None = None,
    sleep: Sleep = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Puts the endpoint on the endpoint config in `config_request`: create, update, or keep.

    An update waits for the endpoint to be InService first (another run's update may be under
    way) and uses `deployment_config` (guardrails). `before_update(description)` is called with
    the endpoint as it stands just before each UpdateEndpoint (or replacement); it may raise to
    stop the deploy. `change_of(description)` says how to move between modes (instance,
    serverless): in place with the guardrails, in place without them, or not in place: the
    endpoint is deleted, and created again on the new config once it is gone.
    Raises EndpointRolledBack when SageMaker rolls the update back; the old model keeps serving.
    The tags go on a new endpoint only: an updated endpoint keeps those of the run that made it.
    """
    if poll_seconds is None:
        poll_seconds = configured_poll_seconds()
    deadline = clock() + timeout_seconds
    config_name = config_request["EndpointConfigName"]
    config = describe_or_none(sm.describe_endpoint_config, EndpointConfigName=config_name)
    if config is None:
        sm.create_endpoint_config(**config_request)
        config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    config_tags = sm.list_tags(ResourceArn=config["EndpointConfigArn"]).get("Tags", [])
    _refuse_rolled_back(config, config_tags, endpoint_name)
    waits = {"deadline": deadline, "poll_seconds": poll_seconds, "sleep": sleep, "clock": clock}
    while True:
        existing = describe_or_none(sm.describe_endpoint, EndpointName=endpoint_name)
        try:
            if existing is not None and existing[ENDPOINT.status_field] == FAILED:
                print(
                    f"endpoint {endpoint_name} is Failed on {existing['EndpointConfigName']}"
                    f" ({existing.get('FailureReason') or 'no reason given'}): SageMaker allows"
                    f" only deleting it; deleting it and creating it again on {config_name}"
                )
                try:
                    sm.delete_endpoint(EndpointName=endpoint_name)
                except ClientError:
                    again = describe_or_none(sm.describe_endpoint, EndpointName=endpoint_name)
                    if again is not None and again[ENDPOINT.status_field] == FAILED:
                        raise
                    # another run found it Failed too and deleted it first: wait for that
                wait_gone(sm, endpoint_name, **waits)
                continue
            if existing is None:
                extra = {"DeploymentConfig": deployment_config} if deployment_config else {}
                sm.create_endpoint(
                    EndpointName=endpoint_name, EndpointConfigName=config_name, Tags=tags, **extra
                )
            elif config_name not in (existing["EndpointConfigName"], _pending(existing)):
                if existing[ENDPOINT.status_field] in _TRANSIENT:
                    wait_settled(sm, endpoint_name, **waits)
                    continue
                if existing[ENDPOINT.status_field] == DELETING:  # another run is replacing it
                    wait_gone(sm, endpoint_name, **waits)
                    continue
                if before_update is not None:
                    before_update(existing)
                change = change_of(existing) if change_of is not None else None
                if change is not None and not change.in_place:
                    sm.delete_endpoint(EndpointName=endpoint_name)
                    wait_gone(sm, endpoint_name, **waits)
                    continue  # then created on the new config
                guarded = deployment_config and (change is None or change.guarded)
                extra = {"DeploymentConfig": deployment_config} if guarded else {}
                sm.update_endpoint(
                    EndpointName=endpoint_name, EndpointConfigName=config_name, **extra
                )
            break
        except ClientError as error:
            if not _busy(error):
                raise
            if clock() >= deadline:
                raise StepFailed(f"endpoint {endpoint_name} stayed busy: {error}") from None
            sleep(poll_seconds)  # another run got there first: wait for its turn
    # Creating or updating an endpoint cannot be stopped half way, so there is no stop_on_cancel.
    description = _wait_deployed(sm, endpoint_name, config_name, **waits)
    if not any(tag.get("Key") == SERVED_AT_TAG for tag in config_tags):  # a retry keeps the first
        mark_served(sm, config["EndpointConfigArn"])
    return description


def mark_served(sm, config_arn: str) -> None:
    """Tags the endpoint config with when it began to serve (SERVED_AT_TAG): retiring and
    rollback go by the order configs served in, not the order they were created in."""
    served_at = datetime.now(UTC).isoformat(timespec="microseconds")
    sm.add_tags(ResourceArn=config_arn, Tags=[{"Key": SERVED_AT_TAG, "Value": served_at}])


def _pending(description: dict) -> str:
    return (description.get("PendingDeploymentSummary") or {}).get("EndpointConfigName", "")


def _wait_deployed(
    sm,
    endpoint_name: str,
    config_name: str,
    *,
    deadline: float,
    poll_seconds: float,
    sleep: Sleep,
    clock: Callable[[], float],
) -> dict:
    """Waits until the endpoint serves `config_name` (InService); raises EndpointRolledBack when
    the deployment ended and the endpoint is on another config (SageMaker rolled it back)."""
    what = f"endpoint {endpoint_name}"
    while True:
        description = sm.describe_endpoint(EndpointName=endpoint_name)
        status = description[ENDPOINT.status_field]
        reason = description.get("FailureReason") or "no reason given"
        ours = description["EndpointConfigName"] == config_name
        if status in _ENDED:
            raise StepFailed(f"{what} ended {status}: {reason}")
        if ours and status in ("InService", "Updating"):
            # InService on our config; or Updating on it: a later run's update has begun, so
            # ours finished first.
            return description
        pending = _pending(description)
        if not ours and pending != config_name and (status == "InService" or pending):
            # Neither serving nor pending (the endpoint is InService on another config, or
            # another run's update is under way): the deployment ended without ours.
            mark_rolled_back(sm, config_name, reason)
            raise EndpointRolledBack(
                f"{what}: the update to {config_name} {ROLLED_BACK_ERROR} "
                f"{serving_run(description)} (endpoint config {description['EndpointConfigName']})"
                f" keeps serving. SageMaker: {reason}"
            )
        if clock() >= deadline:
            raise StepFailed(f"{what} still {status}: gave up waiting for {config_name}")
        sleep(poll_seconds)


def mark_rolled_back(sm, config_name: str, reason: str) -> None:
    """Tags the endpoint config: a retried deploy step does not try it again."""
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    sm.add_tags(
        ResourceArn=config["EndpointConfigArn"],
        Tags=[{"Key": ROLLED_BACK_TAG, "Value": reason[:256] or "rolled back"}],
    )


def _refuse_rolled_back(config: dict, tags: list[dict], endpoint_name: str) -> None:
    for tag in tags:
        if tag.get("Key") == ROLLED_BACK_TAG:
            raise EndpointRolledBack(
                f"endpoint {endpoint_name}: the update to {config['EndpointConfigName']} was "
                f"rolled back by an earlier attempt of this step; not tried again. SageMaker: "
                f"{tag.get('Value', '')}"
            )
