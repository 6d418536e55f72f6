"""Retiring the product's SageMaker resources (pipeline/steps/retire.py) against the local
SageMaker and moto's S3: what goes, what stays and why, and the faults on the way."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import botocore.session
import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError

from core.contracts import RUN_KEY_TAG, SERVING_MODELS_PREFIX
from lambdas.dal.aws_clients import AwsClients
from lambdas.dal.sagemaker_endpoints import SageMakerEndpoints
from lambdas.logic.ports import SageMakerCallFailed
from mnistflow import cleanup
from mnistflow.local.emulator import EMULATOR_CREDENTIALS, AwsEmulator
from pipeline.steps import retire
from pipeline.steps import sagemaker_jobs as jobs
from pipeline.steps.kmeans_model import write_model

pytestmark = pytest.mark.integration

BUCKET = "mnistflow-retire"
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
ROLE = "arn:aws:iam::123456789012:role/mnistflow-local-sagemaker-execution"
STABLE = "mnist-classifier"
DELAY = 0.1


@pytest.fixture
def emulator():
    with AwsEmulator(sagemaker_delay_seconds=DELAY) as emu:
        emu.client("s3").create_bucket(Bucket=BUCKET)
        yield emu


@pytest.fixture
def sm(emulator):
    return emulator.client("sagemaker")


@pytest.fixture
def s3(emulator):
    return emulator.client("s3")


def _key(n: int) -> str:
    return f"mnist-{n:012x}"


def _model(sm, s3, key: str, *, tagged: bool = True, name: str = "", bucket: str = BUCKET) -> str:
    """A run's promoted artifact and its model, tagged with the run key as the product tags."""
    artifact = f"{SERVING_MODELS_PREFIX}{key}/model.tar.gz"
    tagging = f"{RUN_KEY_TAG}={key}" if tagged else ""
    body = write_model(np.eye(10, 784, dtype=np.float32))
    s3.put_object(Bucket=bucket, Key=artifact, Body=body, Tagging=tagging)
    name = name or f"{key}-model"
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/{artifact}"},
        ExecutionRoleArn=ROLE,
        Tags=jobs.run_tags(key) if tagged else [],
    )
    return name


def _config(sm, key: str, model: str, *, tagged: bool = True, name: str = "") -> dict:
    return {
        "EndpointConfigName": name or f"{key}-epc",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        "Tags": jobs.run_tags(key) if tagged else [],
    }


def _deploy(sm, s3, key: str, endpoint: str = STABLE, bucket: str = BUCKET) -> None:
    """What a run's deploy does: its model and config, the endpoint moved onto them."""
    model = _model(sm, s3, key, bucket=bucket)
    jobs.ensure_endpoint(
        sm,
        endpoint_name=endpoint,
        config_request=_config(sm, key, model),
        tags=jobs.run_tags(key),
        timeout_seconds=30,
        poll_seconds=0.05,
    )


def _names(sm) -> dict[str, set[str]]:
    return {
        "endpoints": {e["EndpointName"] for e in sm.list_endpoints(MaxResults=100)["Endpoints"]},
        "configs": {
            c["EndpointConfigName"]
            for c in sm.list_endpoint_configs(MaxResults=100)["EndpointConfigs"]
        },
        "models": {m["ModelName"] for m in sm.list_models(MaxResults=100)["Models"]},
    }


def _artifacts(s3) -> set[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=SERVING_MODELS_PREFIX)
    return {o["Key"] for o in listing.get("Contents", [])}


def _wait_deleted(sm, endpoint: str) -> None:
    deadline = time.monotonic() + 10
    while jobs.describe_or_none(sm.describe_endpoint, EndpointName=endpoint) is not None:
        assert time.monotonic() < deadline, f"{endpoint} still there"
        time.sleep(0.05)


def test_after_an_update_only_the_kept_configs_stay_and_foreign_resources_are_untouched(sm, s3):
    # Given four runs deployed in turn to the stable endpoint, a per-run endpoint of a fifth,
    # and an mnist- model and config without the product's tag
    for n in range(1, 5):
        _deploy(sm, s3, _key(n))
    _deploy(sm, s3, _key(5), endpoint=f"{_key(5)}-endpoint")
    foreign = _model(sm, s3, _key(9), tagged=False, name="mnist-foreign-model")
    sm.create_endpoint_config(**_config(sm, _key(9), foreign, tagged=False, name="mnist-foreign"))
    # When the post-deploy retirement runs with N = 2
    inv = retire.read_inventory(sm, s3, BUCKET)
    decisions = retire.plan_superseded(inv, endpoint_name=STABLE, keep=2)
    outcomes = retire.carry_out(sm, decisions, s3=s3, bucket=BUCKET)
    # Then runs 1 and 2 lost config, model and artifact; 3 (rollback) and 4 (serving) stay
    gone = {
        (o.decision.resource.kind, o.decision.resource.name)
        for o in outcomes
        if o.result == retire.DELETED
    }
    assert gone == {
        (kind, name)
        for n in (1, 2)
        for kind, name in (
            (retire.CONFIG, f"{_key(n)}-epc"),
            (retire.MODEL, f"{_key(n)}-model"),
            (retire.ARTIFACT, f"{SERVING_MODELS_PREFIX}{_key(n)}/model.tar.gz"),
        )
    }
    names = _names(sm)
    assert names["configs"] == {f"{_key(n)}-epc" for n in (3, 4, 5)} | {"mnist-foreign"}
    assert names["models"] == {f"{_key(n)}-model" for n in (3, 4, 5)} | {"mnist-foreign-model"}
    assert names["endpoints"] == {STABLE, f"{_key(5)}-endpoint"}
    assert _artifacts(s3) == {
        f"{SERVING_MODELS_PREFIX}{_key(n)}/model.tar.gz" for n in (3, 4, 5, 9)
    }
    reasons = {o.decision.resource.name: o.decision.reason for o in outcomes}
    assert reasons[f"{_key(4)}-epc"] == f"in use by endpoint {STABLE}"
    assert reasons[f"{_key(3)}-epc"] == "kept for rollback (2 of 2)"
    assert reasons[f"{_key(5)}-epc"] == f"in use by endpoint {_key(5)}-endpoint"
    assert ("endpoint-config", "mnist-foreign") in inv.not_ours
    assert ("model", "mnist-foreign-model") in inv.not_ours


def _wait_in_service(sm, endpoint: str = STABLE) -> None:
    jobs.wait_for(
        lambda: sm.describe_endpoint(EndpointName=endpoint),
        "EndpointStatus",
        done={"InService"},
        failed={"Failed"},
        what=endpoint,
        timeout_seconds=10,
        poll_seconds=0.05,
    )


def test_configs_made_while_waiting_rank_by_when_they_served_not_when_they_were_made(sm, s3):
    # The reviewer's scenario. Given A serving; B and C making their configs while they wait
    # their turn (a deploy creates its config first); D making its config later but updating
    # first, then retiring with N = 2
    a, b, c, d = (_key(n) for n in (1, 2, 3, 4))
    _deploy(sm, s3, a)
    for key in (b, c):
        sm.create_endpoint_config(**_config(sm, key, _model(sm, s3, key)))
    _deploy(sm, s3, d)
    outcomes = retire.after_deploy(sm, s3, bucket=BUCKET, run_key=d, endpoint_name=STABLE, keep=2)
    # Then A (what served before D: the real rollback target) is kept, and B and C, which never
    # served, keep config, model and artifact: their runs are in flight
    reasons = {o.decision.resource.name: o.decision.reason for o in outcomes}
    assert reasons[f"{a}-epc"] == "kept for rollback (2 of 2)"
    assert reasons[f"{b}-epc"] == reasons[f"{c}-epc"] == retire.NOT_SERVED
    assert {o.result for o in outcomes} == {retire.KEPT}
    assert _names(sm)["models"] == {f"{k}-model" for k in (a, b, c, d)}
    assert _artifacts(s3) == {f"{SERVING_MODELS_PREFIX}{k}/model.tar.gz" for k in (a, b, c, d)}
    # And a rollback now goes back to A, not to C (made after A, never served)
    assert cleanup.rollback(sm, endpoint_name=STABLE).to_config == f"{a}-epc"
    _wait_in_service(sm)
    sm.update_endpoint(EndpointName=STABLE, EndpointConfigName=f"{d}-epc")  # D again
    _wait_in_service(sm)
    # When B's deploy gets its turn, it finds its config and serves; its retirement (N = 2)
    # keeps D (served before B) and retires A with its model and artifact; C is not touched
    jobs.ensure_endpoint(
        sm,
        endpoint_name=STABLE,
        config_request=_config(sm, b, f"{b}-model"),
        tags=jobs.run_tags(b),
        timeout_seconds=30,
        poll_seconds=0.05,
    )
    outcomes = retire.after_deploy(sm, s3, bucket=BUCKET, run_key=b, endpoint_name=STABLE, keep=2)
    gone = {o.decision.resource.name for o in outcomes if o.result == retire.DELETED}
    assert gone == {f"{a}-epc", f"{a}-model", f"{SERVING_MODELS_PREFIX}{a}/model.tar.gz"}
    assert _names(sm)["configs"] == {f"{k}-epc" for k in (b, c, d)}
    # And a rollback from B goes to D, the config that served before it
    assert cleanup.rollback(sm, endpoint_name=STABLE).to_config == f"{d}-epc"


def test_a_rollback_never_goes_to_a_rolled_back_config(sm, s3):
    for n in (1, 2, 3):
        _deploy(sm, s3, _key(n))
    # Given run 2's config tagged rolled back (mnistflow:rolled-back)
    jobs.mark_rolled_back(sm, f"{_key(2)}-epc", "an alarm fired while it baked")
    # Then the retirement does not keep it for rollback, and rollback skips it
    decisions = retire.plan_superseded(retire.read_inventory(sm), endpoint_name=STABLE, keep=2)
    why = {d.resource.name: (d.action, d.reason) for d in decisions}
    assert why[f"{_key(2)}-epc"] == (retire.DELETE, f"rolled back on {STABLE}")
    assert why[f"{_key(1)}-epc"] == (retire.KEEP, "kept for rollback (2 of 2)")
    assert cleanup.rollback(sm, endpoint_name=STABLE).to_config == f"{_key(1)}-epc"


def test_a_failed_run_removes_what_it_created_never_the_stable_endpoint(sm, s3):
    # Given a serving run and a run whose config and model exist but whose deploy failed
    _deploy(sm, s3, _key(1))
    failed = _key(2)
    sm.create_endpoint_config(**_config(sm, failed, _model(sm, s3, failed)))
    # When the failed run retires what it created
    inv = retire.read_inventory(sm, s3, BUCKET)
    outcomes = retire.carry_out(
        sm, retire.plan_run(inv, run_key=failed, endpoint_name=STABLE), s3=s3, bucket=BUCKET
    )
    # Then its config, model and artifact are gone, the serving run's are not
    assert {o.result for o in outcomes} == {retire.DELETED}
    assert len(outcomes) == 3
    names = _names(sm)
    assert names == {
        "endpoints": {STABLE},
        "configs": {f"{_key(1)}-epc"},
        "models": {f"{_key(1)}-model"},
    }
    assert _artifacts(s3) == {f"{SERVING_MODELS_PREFIX}{_key(1)}/model.tar.gz"}


def test_a_failed_run_whose_config_serves_keeps_it_with_the_reason(sm, s3):
    # Given the stable endpoint serving run 1 (say its later step failed)
    _deploy(sm, s3, _key(1))
    # When run 1 is retired as failed
    inv = retire.read_inventory(sm, s3, BUCKET)
    outcomes = retire.carry_out(
        sm, retire.plan_run(inv, run_key=_key(1), endpoint_name=STABLE), s3=s3, bucket=BUCKET
    )
    # Then nothing goes: the endpoint is the stable one, the config is in use, the model named
    why = {o.decision.resource.kind: (o.result, o.decision.reason) for o in outcomes}
    assert why == {
        retire.ENDPOINT: (retire.KEPT, "the stable endpoint: never deleted for a run"),
        retire.CONFIG: (retire.KEPT, f"in use by endpoint {STABLE}"),
        retire.MODEL: (retire.KEPT, f"named by endpoint config {_key(1)}-epc"),
    }
    assert _names(sm)["configs"] == {f"{_key(1)}-epc"}
    assert _artifacts(s3) == {f"{SERVING_MODELS_PREFIX}{_key(1)}/model.tar.gz"}


def test_an_updating_endpoint_keeps_everything(sm, s3):
    # Given three runs on the stable endpoint, the third still moving onto it
    _deploy(sm, s3, _key(1))
    _deploy(sm, s3, _key(2))
    model = _model(sm, s3, _key(3))
    sm.create_endpoint_config(**_config(sm, _key(3), model))
    sm.update_endpoint(EndpointName=STABLE, EndpointConfigName=f"{_key(3)}-epc")
    # When the retirement runs with N = 1 during the update
    inv = retire.read_inventory(sm, s3, BUCKET)
    assert inv.endpoints[STABLE].uses == (f"{_key(2)}-epc", f"{_key(3)}-epc")
    decisions = retire.plan_superseded(inv, endpoint_name=STABLE, keep=1)
    outcomes = retire.carry_out(sm, decisions, s3=s3, bucket=BUCKET)
    # Then nothing is deleted, and it says why
    assert [(o.result, o.decision.reason) for o in outcomes] == [
        (
            retire.KEPT,
            "endpoint is Updating: SageMaker is changing it; retired after its next update",
        )
    ]
    assert len(_names(sm)["configs"]) == 3


def test_a_dry_run_deletes_nothing_and_a_deleted_resource_is_fine(sm, s3):
    for n in (1, 2):
        _deploy(sm, s3, _key(n))
    inv = retire.read_inventory(sm, s3, BUCKET)
    decisions = retire.plan_superseded(inv, endpoint_name=STABLE, keep=1)
    before = _names(sm)
    # A dry run says what would go and deletes nothing
    dry = retire.carry_out(sm, decisions, s3=s3, bucket=BUCKET, dry_run=True)
    assert {o.result for o in dry if o.decision.action == retire.DELETE} == {retire.WOULD_DELETE}
    assert _names(sm) == before
    # Someone deletes run 1's config and model first: the retirement finds them gone, fine
    sm.delete_endpoint_config(EndpointConfigName=f"{_key(1)}-epc")
    sm.delete_model(ModelName=f"{_key(1)}-model")
    outcomes = retire.carry_out(sm, decisions, s3=s3, bucket=BUCKET)
    results = {o.decision.resource.name: o.result for o in outcomes}
    assert results[f"{_key(1)}-epc"] == retire.GONE
    assert results[f"{_key(1)}-model"] == retire.GONE


def test_throttling_is_retried_by_botocore(emulator, s3):
    # Given a client with botocore's standard retries whose first DeleteEndpointConfig is
    # throttled (SageMaker's code ThrottlingException, which botocore/retries/standard.py counts
    # among _THROTTLED_ERROR_CODES)
    sm = emulator.client("sagemaker")
    _deploy(sm, s3, _key(1))
    _deploy(sm, s3, _key(2))
    import boto3

    retrying = boto3.client(
        "sagemaker",
        region_name=emulator.region,
        endpoint_url=emulator.sagemaker_url,
        aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )
    throttled = []

    def throttle_once(request, **_):
        if throttled:
            return None
        throttled.append(request.url)
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        return AWSResponse(
            request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body)
        )

    retrying.meta.events.register("before-send.sagemaker.DeleteEndpointConfig", throttle_once)
    # When the retirement deletes run 1's config through it
    inv = retire.read_inventory(retrying, s3, BUCKET)
    outcomes = retire.carry_out(
        retrying, retire.plan_superseded(inv, endpoint_name=STABLE, keep=1), s3=s3, bucket=BUCKET
    )
    # Then the throttle fired and the retry deleted it
    assert throttled
    assert {o.decision.resource.name: o.result for o in outcomes}[f"{_key(1)}-epc"] == (
        retire.DELETED
    )
    assert _names(sm)["configs"] == {f"{_key(2)}-epc"}


def test_expired_per_run_endpoints_go_with_their_config_and_model(sm, s3):
    _deploy(sm, s3, _key(1), endpoint=f"{_key(1)}-endpoint")
    _deploy(sm, s3, _key(2))
    inv = retire.read_inventory(sm, s3, BUCKET)
    created = inv.endpoints[f"{_key(1)}-endpoint"].created
    # Not yet expired: kept, with its age
    young = retire.plan_expired(inv, ttl_seconds=3600, now=created, stable_endpoint=STABLE)
    assert [(d.action, d.resource.name) for d in young] == [(retire.KEEP, f"{_key(1)}-endpoint")]
    # Past its time to live: the endpoint, its config, model and artifact go; the stable stays
    later = created + timedelta(hours=2)
    outcomes = retire.carry_out(
        sm,
        retire.plan_expired(inv, ttl_seconds=3600, now=later, stable_endpoint=STABLE),
        s3=s3,
        bucket=BUCKET,
    )
    assert {o.result for o in outcomes} == {retire.DELETED} and len(outcomes) == 4
    _wait_deleted(sm, f"{_key(1)}-endpoint")
    assert _names(sm) == {
        "endpoints": {STABLE},
        "configs": {f"{_key(2)}-epc"},
        "models": {f"{_key(2)}-model"},
    }


class _Raw:
    """The raw body botocore reads from an AWSResponse."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


def test_the_watchdogs_adapter_retires_an_expired_per_run_endpoint(emulator, sm, s3):
    # Given a per-run endpoint and the stable one, reached as the watchdog reaches AWS
    _deploy(sm, s3, _key(1), endpoint=f"{_key(1)}-endpoint")
    _deploy(sm, s3, _key(2))
    clients = AwsClients(emulator.region, emulator.environment())
    adapter = SageMakerEndpoints(clients.factory("sagemaker"), clients.factory("s3"), BUCKET)
    # When it is asked two hours later with a time to live of one hour
    looked_at = adapter.retire_expired(3600, time.time() + 2 * 3600)
    # Then the per-run endpoint and what it alone used are gone; the stable endpoint stays
    assert {(r.kind, r.name, r.result) for r in looked_at} == {
        (retire.ENDPOINT, f"{_key(1)}-endpoint", retire.DELETED),
        (retire.CONFIG, f"{_key(1)}-epc", retire.DELETED),
        (retire.MODEL, f"{_key(1)}-model", retire.DELETED),
        (retire.ARTIFACT, f"{SERVING_MODELS_PREFIX}{_key(1)}/model.tar.gz", retire.DELETED),
    }
    _wait_deleted(sm, f"{_key(1)}-endpoint")
    assert _names(sm)["endpoints"] == {STABLE}


def test_the_watchdogs_adapter_says_when_sagemaker_cannot_be_asked():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    clients = AwsClients("us-east-1", {"AWS_ENDPOINT_URL": url, **EMULATOR_CREDENTIALS})
    adapter = SageMakerEndpoints(clients.factory("sagemaker"), clients.factory("s3"), BUCKET)
    with pytest.raises(SageMakerCallFailed, match="EndpointConnectionError"):
        adapter.retire_expired(3600, time.time())


def test_the_local_sagemaker_deletes_and_refuses_as_sagemaker_does(sm, s3):
    # Given run 1 serving on the stable endpoint
    _deploy(sm, s3, _key(1))
    # SageMaker deletes an endpoint config and a model in use: DeleteEndpointConfig and
    # DeleteModel list no error of their own in botocore's model (sagemaker/2017-07-24,
    # operations DeleteEndpointConfig, DeleteModel), and the API reference only warns ("You must
    # not delete an EndpointConfig in use by an endpoint that is live"). So "in use" is the
    # retirement's decision, and the emulator must not refuse either.
    model = botocore.session.get_session().get_service_model("sagemaker")
    for operation in ("DeleteEndpointConfig", "DeleteModel", "DeleteEndpoint"):
        assert model.operation_model(operation).error_shapes == []
    sm.delete_endpoint_config(EndpointConfigName=f"{_key(1)}-epc")
    sm.delete_model(ModelName=f"{_key(1)}-model")
    assert sm.describe_endpoint(EndpointName=STABLE)["EndpointStatus"] == "InService"
    # A resource that is not there: ValidationException, "Could not find endpoint "<arn>"."
    # (SageMaker's words, as reported in aws/amazon-sagemaker-examples#2402)
    for call, what in (
        (lambda: sm.delete_endpoint(EndpointName="mnist-nothing"), 'endpoint "arn:aws:sagemaker:'),
        (lambda: sm.delete_model(ModelName="mnist-nothing"), 'model "arn:aws:sagemaker:'),
        (
            lambda: sm.delete_endpoint_config(EndpointConfigName="mnist-nothing"),
            'endpoint configuration "arn:aws:sagemaker:',
        ),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        error = raised.value.response["Error"]
        assert error["Code"] == "ValidationException"
        assert error["Message"].startswith(f"Could not find {what}")
        assert jobs.is_not_found(raised.value)


def test_a_retirement_that_cannot_reach_sagemaker_does_not_fail_the_deployed_run(monkeypatch):
    # Given the retire step's own code (the KFP component's function), SageMaker unreachable
    from pipeline.components import retire_superseded

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for name in ("AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name, value in EMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # When it runs after a deploy
    report = retire_superseded(
        dataset_uri=f"s3://{BUCKET}/incoming/mnist.npz",
        run_key=_key(1),
        region="us-east-1",
        endpoint_name=STABLE,
        kept_endpoint_configs=2,
    )
    # Then it returns (the run stays deployed) and says what is left to whom
    assert report.startswith("retirement not finished, left for the next run or mnistflow cleanup")
    assert "Could not connect to the endpoint URL" in report
