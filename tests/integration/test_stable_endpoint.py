"""The stable endpoint against the local SageMaker and moto (CloudWatch alarms, Application Auto
Scaling): created by the first run, updated by the next with the deployment guardrails, rolled
back when an alarm fires while the new model bakes, one update at a time when runs finish
together, and scaled by target tracking."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import botocore.session
import pytest
from botocore.exceptions import ClientError

from core import endpoint_alarms
from core.contracts import RUN_KEY_TAG, SERVED_AT_TAG, STABLE_ENDPOINT_NAME
from mnistflow.local.emulator import AwsEmulator
from pipeline.steps import guardrails, steps
from pipeline.steps import sagemaker_jobs as jobs
from tests.integration.pipeline_harness import model_with_centroids_at

pytestmark = pytest.mark.integration

BUCKET = "mnistflow-stable-endpoint"
ROLE = "arn:aws:iam::123456789012:role/mnistflow-local-sagemaker-execution"
ENDPOINT = STABLE_ENDPOINT_NAME
# The baking period: 1 minute, lasting 60 x 0.02 = 1.2 s on this emulator.
BAKE_MINUTES = 1
TIME_SCALE = 0.02
POLL = 0.05


@pytest.fixture(scope="module")
def emulator():
    with AwsEmulator(sagemaker_delay_seconds=0.2, sagemaker_bake_time_scale=TIME_SCALE) as emu:
        emu.client("s3").create_bucket(Bucket=BUCKET)
        cloudwatch = emu.client("cloudwatch")
        for alarm in endpoint_alarms.ALARMS:
            cloudwatch.put_metric_alarm(**endpoint_alarms.put_metric_alarm_request(alarm, ENDPOINT))
        yield emu


@pytest.fixture(scope="module")
def clients(emulator):
    return {
        name: emulator.client(name)
        for name in ("sagemaker", "sagemaker-runtime", "s3", "cloudwatch")
    } | {"autoscaling": emulator.client("application-autoscaling")}


def _model(clients, run_key: str, value: float) -> str:
    return model_with_centroids_at(clients, bucket=BUCKET, role=ROLE, run_key=run_key, value=value)


def _deploy(clients, run_key: str, *, instance_type="ml.m5.large", before_update=None):
    return steps.deploy(
        clients["sagemaker"],
        clients["autoscaling"],
        run_key=run_key,
        model_name=f"{run_key}-model",
        endpoint_name=ENDPOINT,
        instance_type=instance_type,
        instance_count=1,
        bake_minutes=BAKE_MINUTES,
        alarm_names=endpoint_alarms.alarm_names(ENDPOINT),
        min_instances=1,
        max_instances=2,
        target_invocations=70,
        before_update=before_update,
        poll_seconds=POLL,
    )


def _distance(clients) -> float:
    """Which model serves: an all-ones image is 28 x |1 - value| from every centroid."""
    answer = clients["sagemaker-runtime"].invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="text/csv", Body=",".join(["1"] * 784)
    )
    return json.loads(answer["Body"].read())["predictions"][0]["distance_to_cluster"]


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@contextlib.contextmanager
def _alarm_while_baking(clients, alarm: str):
    """Sets `alarm` to ALARM once the update under way is baking; back to OK at the end."""
    sm, cloudwatch = clients["sagemaker"], clients["cloudwatch"]

    def baking():
        pending = sm.describe_endpoint(EndpointName=ENDPOINT).get("PendingDeploymentSummary")
        variants = (pending or {}).get("ProductionVariants", [])
        return any(v["VariantStatus"][0]["Status"] == "Baking" for v in variants)

    def fire():
        _wait_until(baking)
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")

    firing = threading.Thread(target=fire)
    firing.start()
    try:
        yield
    finally:
        firing.join()
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="test over")


@pytest.fixture(scope="module")
def first(clients):
    key = "mnist-a00000000001"
    _model(clients, key, 1.0)
    _deploy(clients, key)
    return key


def test_the_first_run_creates_the_stable_endpoint_tagged_with_its_run(clients, first):
    sm = clients["sagemaker"]
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == f"{first}-epc"
    tags = sm.list_tags(ResourceArn=described["EndpointArn"])["Tags"]
    assert {"Key": RUN_KEY_TAG, "Value": first} in tags
    # Its model is made from the promoted artifact, outside runs/
    model = sm.describe_model(ModelName=f"{first}-model")
    assert model["PrimaryContainer"]["ModelDataUrl"] == (
        f"s3://{BUCKET}/models/{first}/model.tar.gz"
    )
    assert _distance(clients) == pytest.approx(0.0, abs=1e-3)  # value 1.0 serves


def test_the_stable_variant_scales_by_target_tracking(clients, first):
    autoscaling = clients["autoscaling"]
    [target] = autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[f"endpoint/{ENDPOINT}/variant/AllTraffic"]
    )["ScalableTargets"]
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
    [policy] = autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=f"endpoint/{ENDPOINT}/variant/AllTraffic"
    )["ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 70.0
    assert config["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }


def test_a_later_run_updates_it_in_place_with_the_guardrails(clients, first):
    sm = clients["sagemaker"]
    key = "mnist-b00000000002"
    _model(clients, key, 2.0)
    seen = []
    _deploy(clients, key, before_update=lambda d: seen.append(d["EndpointConfigName"]))
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == (
        "InService",
        f"{key}-epc",
    )
    policy = described["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TerminationWaitInSeconds"] == BAKE_MINUTES * 60
    assert policy["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert seen == [f"{first}-epc"]  # the champion's re-check saw what served before
    # The endpoint keeps the tags of the run that created it
    tags = sm.list_tags(ResourceArn=described["EndpointArn"])["Tags"]
    assert {"Key": RUN_KEY_TAG, "Value": first} in tags


def test_an_alarm_during_the_baking_period_rolls_back_and_the_old_model_keeps_serving(
    clients, first
):
    sm = clients["sagemaker"]
    serving = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    before = _distance(clients)
    key = "mnist-c00000000003"
    _model(clients, key, 3.0)
    alarm = endpoint_alarms.ERRORS.name(ENDPOINT)
    with pytest.raises(jobs.EndpointRolledBack) as failed, _alarm_while_baking(clients, alarm):
        _deploy(clients, key)
    # The step's error says what happened and who keeps serving
    message = str(failed.value)
    assert f"{key}-epc was rolled back; {serving.removesuffix('-epc')}" in message
    assert "keeps serving" in message and alarm in message
    # SageMaker: InService on the old config, the rollback's reason, nothing pending
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == serving
    assert alarm in described["FailureReason"]
    assert "PendingDeploymentSummary" not in described
    assert _distance(clients) == pytest.approx(before)
    # A retried step does not put the same model through the guardrails again
    updates = []
    with pytest.raises(jobs.EndpointRolledBack, match="earlier attempt"):
        _deploy(clients, key, before_update=updates.append)
    assert updates == []


def test_two_runs_finishing_together_update_one_after_the_other(clients, first):
    sm = clients["sagemaker"]
    keys = ["mnist-d00000000004", "mnist-e00000000005"]
    for value, key in enumerate(keys, start=4):
        _model(clients, key, float(value))
    refused = []
    real_update = sm.update_endpoint

    def counting_update(**request):
        try:
            return real_update(**request)
        except ClientError as error:
            refused.append(error.response["Error"]["Message"])
            raise

    sm.update_endpoint = counting_update
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(keys))

    def run(key):
        first_look = []

        def both_saw_it_in_service(_description):
            # The two runs' first UpdateEndpoint calls go out together, both having seen the
            # endpoint InService: SageMaker takes one and refuses the other.
            if not first_look:
                first_look.append(True)
                barrier.wait(10)

        try:
            _deploy(clients, key, before_update=both_saw_it_in_service)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(key,)) for key in keys]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        del sm.update_endpoint
    # Both deployed, one after the other: the endpoint ends on the later one, InService
    assert errors == []
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] in {f"{key}-epc" for key in keys}
    # SageMaker refused the second update for being in progress; the step waited and tried again
    assert len(refused) == 1
    assert refused[0].startswith("Cannot update in-progress endpoint")


def test_a_new_instance_type_is_deregistered_from_autoscaling_first_as_sagemaker_requires(
    clients, first
):
    sm, autoscaling = clients["sagemaker"], clients["autoscaling"]
    key = "mnist-f00000000006"
    _model(clients, key, 6.0)
    # SageMaker refuses to change a scalable variant's instance type (the emulator does too)
    sm.create_endpoint_config(
        EndpointConfigName="mnist-f00000000006-direct-epc",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{key}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.c5.large",
            }
        ],
    )
    assert guardrails.is_scalable_target(autoscaling, ENDPOINT)
    with pytest.raises(ClientError, match="registered with autoscaling"):
        sm.update_endpoint(
            EndpointName=ENDPOINT, EndpointConfigName="mnist-f00000000006-direct-epc"
        )
    # The deploy step deregisters it, updates, and registers it again
    _deploy(clients, key, instance_type="ml.c5.large")
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointConfigName"] == f"{key}-epc"
    assert guardrails.is_scalable_target(autoscaling, ENDPOINT)


def test_a_rolled_back_instance_type_change_leaves_the_old_fleet_scaling(clients, first):
    sm, autoscaling = clients["sagemaker"], clients["autoscaling"]
    serving = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    key = "mnist-a10000000007"
    _model(clients, key, 7.0)
    # When an update that had to deregister the variant is rolled back by the latency alarm
    alarm = endpoint_alarms.LATENCY.name(ENDPOINT)
    with pytest.raises(jobs.EndpointRolledBack), _alarm_while_baking(clients, alarm):
        _deploy(clients, key, instance_type="ml.m5.xlarge")
    # Then the old config serves and its variant is a scalable target again
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == serving
    assert guardrails.is_scalable_target(autoscaling, ENDPOINT)


def test_a_failed_stable_endpoint_is_deleted_and_created_again_by_the_next_deploy(capsys):
    # botocore's sagemaker model, DescribeEndpointOutput.EndpointStatus, pins what may be done
    status_doc = (
        botocore.session.get_session()
        .get_service_model("sagemaker")
        .operation_model("DescribeEndpoint")
        .output_shape.members["EndpointStatus"]
        .documentation
    )
    assert "is the only operation that can be performed on a failed endpoint" in status_doc
    assert "DeleteEndpoint</a> is the only operation" in status_doc
    with AwsEmulator(sagemaker_delay_seconds=0.2, sagemaker_bake_time_scale=TIME_SCALE) as emu:
        emu.client("s3").create_bucket(Bucket=BUCKET)
        for alarm in endpoint_alarms.ALARMS:
            emu.client("cloudwatch").put_metric_alarm(
                **endpoint_alarms.put_metric_alarm_request(alarm, ENDPOINT)
            )
        clients = {name: emu.client(name) for name in ("sagemaker", "sagemaker-runtime", "s3")}
        clients["autoscaling"] = emu.client("application-autoscaling")
        sm = clients["sagemaker"]
        # Given a first run whose CreateEndpoint fails (its artifact went missing meanwhile)
        broken = "mnist-f00000000001"
        _model(clients, broken, 1.0)
        clients["s3"].delete_object(Bucket=BUCKET, Key=f"models/{broken}/model.tar.gz")
        with pytest.raises(jobs.StepFailed, match="ended Failed"):
            _deploy(clients, broken)
        assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "Failed"
        # And SageMaker refuses to update it
        with pytest.raises(ClientError):
            sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=f"{broken}-epc")
        capsys.readouterr()
        # When the next run deploys
        key = "mnist-f00000000002"
        _model(clients, key, 2.0)
        _deploy(clients, key)
        # Then the endpoint was deleted and created on its config, serving its model; it says so
        described = sm.describe_endpoint(EndpointName=ENDPOINT)
        assert (described["EndpointStatus"], described["EndpointConfigName"]) == (
            "InService",
            f"{key}-epc",
        )
        tags = sm.list_tags(ResourceArn=described["EndpointArn"])["Tags"]
        assert {"Key": RUN_KEY_TAG, "Value": key} in tags
        out = capsys.readouterr().out
        assert f"endpoint {ENDPOINT} is Failed on {broken}-epc (" in out
        assert f"deleting it and creating it again on {key}-epc" in out
        answer = sm.describe_endpoint_config(EndpointConfigName=f"{key}-epc")
        config_tags = sm.list_tags(ResourceArn=answer["EndpointConfigArn"])["Tags"]
        assert any(t["Key"] == SERVED_AT_TAG for t in config_tags)  # it served
        assert _distance(clients) == pytest.approx(28.0, abs=1e-3)  # value 2.0 serves
