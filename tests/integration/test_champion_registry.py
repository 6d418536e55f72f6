"""Champion/challenger and the model registry against the local SageMaker (next to moto's S3):
the serving model read back through DescribeEndpoint -> EndpointConfig -> Model -> its artifact,
scored on the challenger's own test split; each evaluated model registered once, then settled.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError

from core.contracts import (
    EVALUATION_FILE,
    MODEL_PACKAGE_GROUP,
    NOT_BETTER_THAN_SERVING,
    RUN_KEY_TAG,
    run_prefix,
)
from mnistflow.local.emulator import AwsEmulator
from pipeline.steps import champion, registry, steps
from pipeline.steps.dataset import load_dataset, with_validation
from pipeline.steps.evaluate import ModelRejected, NotBetterThanServing
from pipeline.steps.kmeans_model import closest_clusters, write_model
from tests.conftest import SAMPLE_DIR

pytestmark = pytest.mark.integration

BUCKET = "mnistflow-champion"
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
ROLE = "arn:aws:iam::123456789012:role/mnistflow-local-sagemaker-execution"
ENDPOINT = "mnist-classifier"
TOLERANCE = 0.01


class EventsRecorder:
    """Stands in for EventBridge's PutEvents: keeps each entry's detail."""

    def __init__(self) -> None:
        self.details: list[dict] = []

    def put_events(self, Entries):  # noqa: N803 - boto3's parameter name
        self.details += [json.loads(entry["Detail"]) for entry in Entries]
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"} for _ in Entries]}


@pytest.fixture(scope="module")
def dataset():
    path = SAMPLE_DIR / "mnist-sample.pkl.gz"
    return with_validation(load_dataset(path, source=str(path))).splits


@pytest.fixture(scope="module")
def world():
    with AwsEmulator(sagemaker_delay_seconds=0.05) as emulator:
        s3 = emulator.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        sm = emulator.client("sagemaker")
        sm.create_model_package_group(ModelPackageGroupName=MODEL_PACKAGE_GROUP)
        yield emulator, s3, sm


def _class_means(split) -> np.ndarray:
    """A good model: each digit's mean image (k=10)."""
    return np.stack([split.x[split.y == d].mean(axis=0) for d in range(10)]).astype(np.float32)


def _poor(split, k: int = 10, seed: int = 3) -> np.ndarray:
    """A poor model: k images taken at random as centroids."""
    rows = np.random.default_rng(seed).choice(split.y.size, size=k, replace=False)
    return split.x[rows].astype(np.float32)


def _artifact(s3, name: str, centroids: np.ndarray) -> str:
    key = f"models/{name}/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=write_model(centroids))
    return f"s3://{BUCKET}/{key}"


def _serve(sm, s3, name: str, centroids: np.ndarray) -> str:
    """Puts `centroids` behind the endpoint (created, or updated in place) as model `name`."""
    url = _artifact(s3, name, centroids)
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": url},
        ExecutionRoleArn=ROLE,
    )
    config = f"{name}-epc"
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    try:
        sm.describe_endpoint(EndpointName=ENDPOINT)
        sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=config)
    except ClientError:
        sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=config)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = sm.describe_endpoint(EndpointName=ENDPOINT)
        if answer["EndpointStatus"] == "InService" and answer["EndpointConfigName"] == config:
            return url
        time.sleep(0.05)
    raise AssertionError(f"{ENDPOINT} not serving {config}")


def _run(s3, dataset, run_key: str, centroids: np.ndarray) -> dict:
    """A run up to evaluate: preprocess's files, the model artifact, the transform's answers."""
    upload = f"incoming/{run_key}.pkl.gz"
    s3.upload_file(str(SAMPLE_DIR / "mnist-sample.pkl.gz"), BUCKET, upload)
    prep = steps.preprocess(
        s3, dataset_uri=f"s3://{BUCKET}/{upload}", dataset_version="", run_key=run_key
    )
    model_uri = _artifact(s3, run_key, centroids)
    out = f"{prep['run_uri']}transform-output/"
    for split in ("validation", "test"):
        clusters, distances = closest_clusters(centroids, dataset[split].x)
        lines = "".join(
            json.dumps({"closest_cluster": int(c), "distance_to_cluster": float(d)}) + "\n"
            for c, d in zip(clusters, distances, strict=True)
        )
        bucket, key = steps.split_s3_uri(f"{out}{split}.csv.out")
        s3.put_object(Bucket=bucket, Key=key, Body=lines.encode())
    return {"run_uri": prep["run_uri"], "transform_output_uri": out, "model_uri": model_uri}


def _evaluate(sm, s3, run_key, run, *, k=10, min_accuracy=0.3, registry_on=True, events=None):
    events = events or EventsRecorder()
    result, _, comparison = steps.evaluate_model(
        s3,
        events,
        run_key=run_key,
        run_uri=run["run_uri"],
        transform_output_uri=run["transform_output_uri"],
        model_artifacts_uri=run["model_uri"],
        k=k,
        min_accuracy=min_accuracy,
        event_bus_name="bus",
        sm=sm,
        endpoint_name=ENDPOINT,
        deploy_tolerance=TOLERANCE,
        model_registry=registry_on,
        image=IMAGE,
    )
    return result, comparison, events.details[-1]


def _by_hand(centroids: np.ndarray, dataset) -> float:
    """Test accuracy computed from scratch: nearest centroid by norm, each cluster named after
    its majority digit on validation (ties: the smaller digit), unnamed clusters wrong."""

    def nearest(x):
        return [int(np.argmin(np.linalg.norm(centroids - row, axis=1))) for row in x]

    votes: dict[int, Counter] = {}
    for cluster, label in zip(
        nearest(dataset["validation"].x), dataset["validation"].y, strict=True
    ):
        votes.setdefault(cluster, Counter())[int(label)] += 1
    names = {c: min(v.items(), key=lambda kv: (-kv[1], kv[0]))[0] for c, v in votes.items()}
    test = dataset["test"]
    right = sum(names.get(c) == int(y) for c, y in zip(nearest(test.x), test.y, strict=True))
    return right / test.y.size


def _packages(sm) -> list[dict]:
    return sm.list_model_packages(
        ModelPackageGroupName=MODEL_PACKAGE_GROUP, ModelPackageType="Versioned", MaxResults=100
    )["ModelPackageSummaryList"]


def _delete_endpoint(sm) -> None:
    try:
        sm.delete_endpoint(EndpointName=ENDPOINT)
    except ClientError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            sm.describe_endpoint(EndpointName=ENDPOINT)
        except ClientError:
            return
        time.sleep(0.05)


# -- the registry API of the local SageMaker --------------------------------------------------


def test_the_local_registry_versions_lists_and_approves_as_sagemaker_documents(world):
    _, _, sm = world
    group = "mnist-registry-api"
    arn = sm.create_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:123456789012:model-package-group/{group}"
    spec = {"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://b/m.tar.gz"}]}
    arns = [
        sm.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"run {n}",
            InferenceSpecification=spec,
            **({"ModelApprovalStatus": "Approved"} if n == 3 else {}),
        )["ModelPackageArn"]
        for n in (1, 2, 3)
    ]
    # Versions from 1 in the group's ARN space (developer guide: model-package/<group>/<version>)
    assert arns == [
        f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/{n}" for n in (1, 2, 3)
    ]
    described = sm.describe_model_package(ModelPackageName=arns[0])
    assert described["ModelPackageVersion"] == 1
    assert described["ModelApprovalStatus"] == "PendingManualApproval"  # the default
    assert described["ModelPackageStatus"] == "Completed"
    # Newest first by default; ascending on request; filtered by approval status
    listed = sm.list_model_packages(ModelPackageGroupName=group, ModelPackageType="Versioned")
    assert [p["ModelPackageVersion"] for p in listed["ModelPackageSummaryList"]] == [3, 2, 1]
    ascending = sm.list_model_packages(
        ModelPackageGroupName=group, ModelPackageType="Versioned", SortOrder="Ascending"
    )
    assert [p["ModelPackageVersion"] for p in ascending["ModelPackageSummaryList"]] == [1, 2, 3]
    approved = sm.list_model_packages(
        ModelPackageGroupName=group, ModelPackageType="Versioned", ModelApprovalStatus="Approved"
    )
    assert [p["ModelPackageArn"] for p in approved["ModelPackageSummaryList"]] == [arns[2]]
    # Unversioned is the default type (API reference, ListModelPackages): none are here
    assert sm.list_model_packages()["ModelPackageSummaryList"] == []
    # UpdateModelPackage moves a version to any of the three statuses
    for status in ("Rejected", "Approved", "PendingManualApproval"):
        sm.update_model_package(ModelPackageArn=arns[0], ModelApprovalStatus=status)
        assert sm.describe_model_package(ModelPackageName=arns[0])["ModelApprovalStatus"] == status
    # A status outside the enum is refused, as the service refuses it
    with pytest.raises(ClientError) as refused:
        sm.update_model_package(ModelPackageArn=arns[0], ModelApprovalStatus="Deployed")
    assert "Member must satisfy enum value set" in str(refused.value)
    # A group that does not exist: a clear error, nothing registered
    with pytest.raises(ClientError) as unknown:
        sm.create_model_package(ModelPackageGroupName="mnist-nope", InferenceSpecification=spec)
    assert unknown.value.response["Error"]["Code"] == "ValidationException"
    assert "mnist-nope does not exist" in unknown.value.response["Error"]["Message"]
    # The same ClientToken is the same request: the same version, no new one
    first = sm.create_model_package(
        ModelPackageGroupName=group, InferenceSpecification=spec, ClientToken="tok-1"
    )
    again = sm.create_model_package(
        ModelPackageGroupName=group, InferenceSpecification=spec, ClientToken="tok-1"
    )
    assert first["ModelPackageArn"] == again["ModelPackageArn"]
    assert first["ModelPackageArn"].endswith("/4")


# -- champion/challenger ----------------------------------------------------------------------


def test_the_first_model_has_nothing_to_compare_with_and_is_registered_once(world, dataset):
    _, s3, sm = world
    _delete_endpoint(sm)
    key = "mnist-00000000000a"
    run = _run(s3, dataset, key, _class_means(dataset["train"]))
    result, comparison, event = _evaluate(sm, s3, key, run)
    assert result.passed and not comparison.compared and comparison.beats_champion
    assert comparison.note == f"no endpoint {ENDPOINT} yet: this is its first model"
    assert event["champion_accuracy"] is None and event["beats_champion"] is True
    assert event["champion_note"] == comparison.note
    written = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{run_prefix(key)}{EVALUATION_FILE}")["Body"].read()
    )
    assert written["champion"]["compared"] is False
    # Registered: the image and the model data, evaluation.json as its statistics, metadata, tag
    [summary] = [p for p in _packages(sm) if p["ModelPackageDescription"].startswith(key)]
    package = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["InferenceSpecification"]["Containers"] == [
        {"Image": IMAGE, "ModelDataUrl": run["model_uri"]}
    ]
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"] == {
        "ContentType": "application/json",
        "S3Uri": f"{run['run_uri']}{EVALUATION_FILE}",
    }
    assert package["CustomerMetadataProperties"]["run_key"] == key
    assert package["CustomerMetadataProperties"]["accuracy"] == f"{result.accuracy:.4f}"
    tags = sm.list_tags(ResourceArn=summary["ModelPackageArn"])["Tags"]
    assert {"Key": RUN_KEY_TAG, "Value": key} in tags
    # A retried evaluate finds its version and registers nothing more
    _evaluate(sm, s3, key, run)
    assert len([p for p in _packages(sm) if p["ModelPackageDescription"].startswith(key)]) == 1


def test_a_worse_challenger_is_rejected_with_both_figures(world, dataset):
    _, s3, sm = world
    good = _class_means(dataset["train"])
    _serve(sm, s3, "mnist-00000000000b-model", good)
    key = "mnist-00000000000c"
    poor = _poor(dataset["train"])
    run = _run(s3, dataset, key, poor)
    result, comparison, event = _evaluate(sm, s3, key, run, min_accuracy=0.1)
    # The champion scored on the challenger's split, as computed from scratch here
    assert comparison.champion_accuracy == pytest.approx(_by_hand(good, dataset), abs=1e-12)
    assert result.accuracy == pytest.approx(_by_hand(poor, dataset), abs=1e-12)
    assert result.accuracy < comparison.champion_accuracy - TOLERANCE
    assert result.passed and not comparison.beats_champion
    assert event["beats_champion"] is False
    assert event["champion_accuracy"] == comparison.champion_accuracy
    assert event["champion_model"] == "mnist-00000000000b-model"
    assert event["deploy_tolerance"] == TOLERANCE
    rejection = comparison.rejection()
    assert isinstance(rejection, ModelRejected)  # the run ends MODEL_REJECTED
    assert NOT_BETTER_THAN_SERVING in str(rejection)
    assert f"{result.accuracy:.4f}" in str(rejection)
    assert f"{comparison.champion_accuracy:.4f}" in str(rejection)


def test_a_model_under_the_gate_is_not_compared_but_registered(world, dataset):
    _, s3, sm = world
    key = "mnist-00000000000d"
    run = _run(s3, dataset, key, _poor(dataset["train"], seed=5))
    result, comparison, event = _evaluate(sm, s3, key, run, min_accuracy=0.99)
    assert not result.passed and not comparison.compared
    assert comparison.note == "under the gate: not compared with the serving model"
    assert [p for p in _packages(sm) if p["ModelPackageDescription"].startswith(key)]


def test_the_registry_off_registers_nothing(world, dataset):
    _, s3, sm = world
    key = "mnist-00000000000e"
    run = _run(s3, dataset, key, _class_means(dataset["train"]))
    _evaluate(sm, s3, key, run, registry_on=False)
    assert not [p for p in _packages(sm) if p["ModelPackageDescription"].startswith(key)]
    assert registry.settle_registration(sm, run_key=key, succeeded=True) is None


def test_a_champion_whose_artifact_is_gone_counts_as_none_and_says_so(world, dataset):
    _, s3, sm = world
    url = _serve(sm, s3, "mnist-00000000000f-model", _class_means(dataset["train"]))
    bucket, artifact = steps.split_s3_uri(url)
    s3.delete_object(Bucket=bucket, Key=artifact)
    key = "mnist-000000000010"
    run = _run(s3, dataset, key, _poor(dataset["train"]))
    _, comparison, event = _evaluate(sm, s3, key, run, min_accuracy=0.1)
    assert not comparison.compared and comparison.beats_champion
    assert f"the serving model's artifact {url} is gone (NoSuchKey)" in comparison.note
    assert event["champion_model"] == "mnist-00000000000f-model"
    written = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{run_prefix(key)}{EVALUATION_FILE}")["Body"].read()
    )
    assert "is gone (NoSuchKey)" in written["champion"]["note"]
    # An artifact that is there but is not a k-means model: the same, saying so
    s3.put_object(Bucket=bucket, Key=artifact, Body=b"not a model")
    _, unreadable, _ = _evaluate(sm, s3, key, run, min_accuracy=0.1)
    assert not unreadable.compared and unreadable.beats_champion
    assert f"the serving model's artifact {url} is not a k-means model" in unreadable.note


def test_the_recheck_refuses_a_challenger_overtaken_since_its_evaluation(world, dataset):
    _, s3, sm = world
    train = dataset["train"]
    _serve(sm, s3, "mnist-000000000011-model", _poor(train, seed=7))
    key = "mnist-000000000012"
    run = _run(s3, dataset, key, _poor(train, k=40, seed=11))
    result, comparison, _ = _evaluate(sm, s3, key, run, k=40, min_accuracy=0.1)
    assert comparison.compared and comparison.beats_champion
    check = {"endpoint_name": ENDPOINT, "run_uri": run["run_uri"], "run_key": key}
    # Nothing changed since: the champion evaluate scored is not scored again
    same = champion.ensure_still_better(sm, s3, **check, tolerance=TOLERANCE)
    assert same.champion_accuracy == comparison.champion_accuracy
    assert same.note.endswith("the champion evaluate compared with, unchanged")
    # Another run deployed a better model meanwhile: this one must not replace it
    better = _class_means(train)
    _serve(sm, s3, "mnist-000000000013-model", better)
    with pytest.raises(NotBetterThanServing) as refused:
        champion.ensure_still_better(sm, s3, **check, tolerance=TOLERANCE)
    assert refused.value.champion_accuracy == pytest.approx(_by_hand(better, dataset), abs=1e-12)
    assert refused.value.accuracy == result.accuracy
    assert NOT_BETTER_THAN_SERVING in str(refused.value)
    written = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{run_prefix(key)}{EVALUATION_FILE}")["Body"].read()
    )
    assert written["recheck"]["beats_champion"] is False
    # A generous tolerance lets it through; its own model serving (a retried deploy) passes
    assert champion.ensure_still_better(sm, s3, **check, tolerance=1.0).beats_champion
    _serve(sm, s3, f"{key}-model", _poor(train, k=40, seed=11))
    assert (
        "this run's own model"
        in champion.ensure_still_better(sm, s3, **check, tolerance=TOLERANCE).note
    )


# -- settling, faults -------------------------------------------------------------------------


def test_settle_approves_a_deployed_run_and_rejects_the_rest(world, dataset):
    _, s3, sm = world
    for key, succeeded, status in (
        ("mnist-000000000020", True, "Approved"),
        ("mnist-000000000021", False, "Rejected"),
    ):
        run = _run(s3, dataset, key, _class_means(dataset["train"]))
        _delete_endpoint(sm)
        _evaluate(sm, s3, key, run)
        assert registry.settle_registration(sm, run_key=key, succeeded=succeeded) == status
        found = registry.find_package(sm, run_key=key)
        assert found["ModelApprovalStatus"] == status
        # The exit handler may run again (a retried report): the same answer, no change
        assert registry.settle_registration(sm, run_key=key, succeeded=succeeded) == status
    # A run that failed before evaluate has no version: nothing to settle
    assert registry.settle_registration(sm, run_key="mnist-0000000000ff", succeeded=False) is None
    # No group at all (a misconfigured stack): the exit handler goes on, nothing raised
    assert (
        registry.settle_registration(
            sm, run_key="mnist-000000000020", succeeded=True, group="mnist-missing"
        )
        is None
    )


def test_settle_with_sagemaker_out_of_reach_leaves_the_version_and_raises_nothing():
    # Given SageMaker out of reach (nothing listens on the port: botocore's own error, not a
    # ClientError), When the exit handler settles, Then it goes on to report the final state
    import boto3
    from botocore.config import Config

    unreachable = boto3.client(
        "sagemaker",
        region_name="eu-west-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    assert (
        registry.settle_registration(unreachable, run_key="mnist-000000000040", succeeded=True)
        is None
    )


def test_a_throttled_registration_is_retried_by_botocore_and_registers_once(world, dataset):
    emulator, s3, _ = world
    sm = _standard_retries(emulator)  # as the evaluate step makes its client
    attempts: list[str] = []

    def throttle_first(request, **_):
        attempts.append(request.url)
        if len(attempts) == 1:  # SageMaker's throttling answer, once
            body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
            return AWSResponse(request.url, 400, {}, _Raw(body.encode()))
        return None

    sm.meta.events.register("before-send.sagemaker.CreateModelPackage", throttle_first)
    key = "mnist-000000000030"
    run = _run(s3, dataset, key, _class_means(dataset["train"]))
    _delete_endpoint(sm)
    _evaluate(sm, s3, key, run)
    assert len(attempts) == 2  # one throttled, one retried by botocore
    assert len([p for p in _packages(sm) if p["ModelPackageDescription"].startswith(key)]) == 1


class _Raw:
    """A response body as botocore's AWSResponse reads it."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_):
        yield self._data


def _standard_retries(emulator):
    import boto3

    from mnistflow.local.emulator import EMULATOR_CREDENTIALS

    return boto3.client(
        "sagemaker",
        region_name=emulator.region,
        endpoint_url=emulator.sagemaker_url,
        aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )
