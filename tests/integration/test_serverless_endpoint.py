"""Serverless endpoints against the local SageMaker and moto (Application Auto Scaling, CloudWatch):
the stable endpoint moved from instances to serverless (deleted and created again under its name),
updated as serverless with the guardrails, moved back to instances in place, and a failed move
that leaves the old config serving. The facts behind each: tests/unit/test_serverless.py."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from core import endpoint_alarms
from core.contracts import RUN_KEY_TAG, STABLE_ENDPOINT_NAME
from mnistflow import cleanup
from mnistflow.local.emulator import AwsEmulator
from pipeline.steps import guardrails, steps
from pipeline.steps import sagemaker_jobs as jobs
from tests.integration.pipeline_harness import model_with_centroids_at

pytestmark = pytest.mark.integration

BUCKET = "mnistflow-serverless-endpoint"
ROLE = "arn:aws:iam::123456789012:role/mnistflow-local-sagemaker-execution"
ENDPOINT = STABLE_ENDPOINT_NAME
POLL = 0.05
ON_INSTANCES_CREATED: list = []  # when the instance endpoint was created


@pytest.fixture(scope="module")
def emulator():
    with AwsEmulator(sagemaker_delay_seconds=0.2, sagemaker_bake_time_scale=0.02) as emu:
        emu.client("s3").create_bucket(Bucket=BUCKET)
        cloudwatch = emu.client("cloudwatch")
        for alarm in endpoint_alarms.ALARMS:
            cloudwatch.put_metric_alarm(**endpoint_alarms.put_metric_alarm_request(alarm, ENDPOINT))
        yield emu


@pytest.fixture(scope="module")
def clients(emulator):
    return {name: emulator.client(name) for name in ("sagemaker", "sagemaker-runtime", "s3")} | {
        "autoscaling": emulator.client("application-autoscaling")
    }


def _model(clients, run_key: str, value: float) -> str:
    return model_with_centroids_at(clients, bucket=BUCKET, role=ROLE, run_key=run_key, value=value)


def _deploy(clients, run_key: str, endpoint_type: str, **extra):
    return steps.deploy(
        clients["sagemaker"],
        clients["autoscaling"],
        run_key=run_key,
        model_name=f"{run_key}-model",
        endpoint_name=ENDPOINT,
        instance_type="ml.m5.large",
        instance_count=1,
        bake_minutes=1,
        alarm_names=endpoint_alarms.alarm_names(ENDPOINT),
        min_instances=1,
        max_instances=2,
        target_invocations=70,
        endpoint_type=endpoint_type,
        serverless_memory_mb=3072,
        serverless_max_concurrency=7,
        poll_seconds=POLL,
        **extra,
    )


def _distance(clients) -> float:
    """Which model serves: an all-ones image is 28 x |1 - value| from every centroid."""
    answer = clients["sagemaker-runtime"].invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="text/csv", Body=",".join(["1"] * 784)
    )
    return json.loads(answer["Body"].read())["predictions"][0]["distance_to_cluster"]


def _scaled(clients) -> bool:
    return guardrails.is_scalable_target(clients["autoscaling"], ENDPOINT)


@pytest.fixture(scope="module")
def on_instances(clients):
    key = "mnist-b00000000001"
    _model(clients, key, 1.0)
    _deploy(clients, key, "instance")
    return key


def test_sagemaker_refuses_an_in_place_update_from_instances_to_serverless(clients, on_instances):
    sm = clients["sagemaker"]
    sm.create_endpoint_config(
        EndpointConfigName="mnist-direct-serverless-epc",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{on_instances}-model",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
            }
        ],
    )
    with pytest.raises(ClientError) as refused:
        sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName="mnist-direct-serverless-epc")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "from instances to serverless" in refused.value.response["Error"]["Message"]
    sm.delete_endpoint_config(EndpointConfigName="mnist-direct-serverless-epc")
    # And the endpoint serves on as it was
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == f"{on_instances}-epc"


def test_a_variant_on_instances_and_serverless_at_once_is_refused(clients, on_instances):
    with pytest.raises(ClientError, match="both a ServerlessConfig and InstanceType"):
        clients["sagemaker"].create_endpoint_config(
            EndpointConfigName="mnist-both-epc",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{on_instances}-model",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                    "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
                }
            ],
        )


@pytest.fixture(scope="module")
def on_serverless(clients, on_instances):
    assert _scaled(clients)  # the instance endpoint was scaling
    key = "mnist-b00000000002"
    _model(clients, key, 2.0)
    ON_INSTANCES_CREATED.append(
        clients["sagemaker"].describe_endpoint(EndpointName=ENDPOINT)["CreationTime"]
    )
    _deploy(clients, key, "serverless")
    return key


def test_going_serverless_re_creates_the_stable_endpoint_under_its_name(
    clients, on_instances, on_serverless
):
    sm = clients["sagemaker"]
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    # Then the endpoint, same name, serves the new model on the serverless config
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == f"{on_serverless}-epc"
    [variant] = described["ProductionVariants"]
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 7}
    assert "CurrentInstanceCount" not in variant
    assert _distance(clients) == pytest.approx(28.0)  # |1 - 2| x 28
    # It is a new endpoint: created after the instance one, its tags name the run that made it
    assert described["CreationTime"] > ON_INSTANCES_CREATED[0]
    tags = sm.list_tags(ResourceArn=described["EndpointArn"])["Tags"]
    assert {"Key": RUN_KEY_TAG, "Value": on_serverless} in tags
    # Its variant is no longer a scalable target (it would be orphaned), and none is made
    assert not _scaled(clients)
    # The old instance config stays for the retirement to decide (kept N, then deleted)
    sm.describe_endpoint_config(EndpointConfigName=f"{on_instances}-epc")


def test_a_serverless_update_goes_through_the_guardrails_in_place(clients, on_serverless):
    key = "mnist-b00000000003"
    _model(clients, key, 3.0)
    created = clients["sagemaker"].describe_endpoint(EndpointName=ENDPOINT)["CreationTime"]
    _deploy(clients, key, "serverless")
    described = clients["sagemaker"].describe_endpoint(EndpointName=ENDPOINT)
    assert described["CreationTime"] == created  # the same endpoint, updated
    assert described["EndpointConfigName"] == f"{key}-epc"
    policy = described["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert _distance(clients) == pytest.approx(56.0)
    assert not _scaled(clients)


def test_back_to_instances_is_an_update_in_place_without_auto_rollback_then_scaling(
    clients, on_serverless
):
    sm = clients["sagemaker"]
    key = "mnist-b00000000004"
    _model(clients, key, 4.0)
    before = sm.describe_endpoint(EndpointName=ENDPOINT)
    _deploy(clients, key, "instance")
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["CreationTime"] == before["CreationTime"]  # updated, not re-created
    assert described["EndpointConfigName"] == f"{key}-epc"
    # No new deployment config: the last one is still the serverless update's
    assert described["LastDeploymentConfig"] == before["LastDeploymentConfig"]
    [variant] = described["ProductionVariants"]
    assert variant["CurrentInstanceCount"] == 1 and "CurrentServerlessConfig" not in variant
    assert _distance(clients) == pytest.approx(84.0)
    assert _scaled(clients)


def test_rollback_to_a_serverless_config_is_refused_with_the_reason(clients, on_serverless):
    # Given the endpoint on instances, and the previous kept config serverless
    sm = clients["sagemaker"]
    serving = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    # When an operator rolls back, Then the CLI refuses before asking SageMaker, saying why
    with pytest.raises(cleanup.CleanupError, match="cannot update an instance endpoint to"):
        cleanup.rollback(sm, endpoint_name=ENDPOINT)
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == serving


def test_a_failed_move_to_serverless_leaves_the_old_config_serving_and_says_so(clients):
    sm, s3 = clients["sagemaker"], clients["s3"]
    serving = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    assert _scaled(clients)
    # Given a model whose artifact is gone by the time the serverless endpoint loads it
    key = "mnist-b00000000005"
    _model(clients, key, 5.0)
    model = sm.describe_model(ModelName=f"{key}-model")["PrimaryContainer"]["ModelDataUrl"]
    bucket, _, artifact = model.removeprefix("s3://").partition("/")
    s3.delete_object(Bucket=bucket, Key=artifact)
    # When the run moves the endpoint to serverless
    with pytest.raises(jobs.StepFailed) as failed:
        _deploy(clients, key, "serverless")
    # Then the step says what happened, and that the old config serves again
    message = str(failed.value)
    assert "deleted to change mode" in message and "ping health check" in message
    assert f"created again on {serving}, which serves again" in message
    described = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == serving
    assert _distance(clients) == pytest.approx(84.0)
    # And the restored instance endpoint scales again, tagged with the run it serves
    assert _scaled(clients)
    tags = sm.list_tags(ResourceArn=described["EndpointArn"])["Tags"]
    assert {"Key": RUN_KEY_TAG, "Value": serving.removesuffix("-epc")} in tags
    # And a retry of the step (KFP retries deploy) does not delete the endpoint again
    with pytest.raises(jobs.EndpointRolledBack, match="not tried again"):
        _deploy(clients, key, "serverless")
    again = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert again["CreationTime"] == described["CreationTime"]
    assert again["EndpointConfigName"] == serving
