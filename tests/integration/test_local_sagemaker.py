"""The local SageMaker: SageMaker's API on 127.0.0.1 doing the built-in k-means' work, next to
moto, reached as the local stack reaches it."""

from __future__ import annotations

import io
import json
import time

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError

from core.contracts import RUN_KEY_TAG
from mnistflow.local.emulator import SAGEMAKER_ENDPOINT_VARIABLES, AwsEmulator
from mnistflow.local.watcher import SageMakerWatcher
from pipeline.steps.dataset import format_pixels_csv, load_dataset
from pipeline.steps.kmeans_model import read_centroids
from pipeline.steps.recordio import write_dense_tensor
from pipeline.steps.sagemaker_jobs import describe_or_none
from tests.conftest import SAMPLE_DIR

pytestmark = pytest.mark.integration

BUCKET = "mnistflow-local-sagemaker"
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
ROLE = "arn:aws:iam::123456789012:role/mnistflow-local-sagemaker-execution"
DELAY = 0.3
HYPERPARAMETERS = {"k": "10", "feature_dim": "784", "mini_batch_size": "500"}
FINAL = {"Completed", "Failed", "Stopped", "InService"}


@pytest.fixture(scope="module")
def sample():
    path = SAMPLE_DIR / "mnist-sample.pkl.gz"
    return load_dataset(path, source=str(path)).splits


@pytest.fixture(scope="module")
def emulator(sample):
    with AwsEmulator(sagemaker_delay_seconds=DELAY) as emu:
        s3 = emu.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="data/train/train.recordio", Body=_recordio(sample))
        s3.put_object(
            Bucket=BUCKET, Key="data/test/test.csv", Body=format_pixels_csv(sample["test"].x)
        )
        yield emu


@pytest.fixture(scope="module")
def sm(emulator):
    return emulator.client("sagemaker")


@pytest.fixture(scope="module")
def runtime(emulator):
    return emulator.client("sagemaker-runtime")


def _recordio(splits, rows=slice(None)) -> bytes:
    out = io.BytesIO()
    write_dense_tensor(out, splits["train"].x[rows], splits["train"].y[rows].astype(np.float32))
    return out.getvalue()


def _training_request(name: str, *, train: str = "data/train/", **hyperparameters) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {**HYPERPARAMETERS, **hyperparameters},
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "ContentType": "application/x-recordio-protobuf",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{train}"}
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "Tags": [{"Key": RUN_KEY_TAG, "Value": "mnist-000000000001"}],
    }


def _wait(describe, status_field: str, timeout: float = 30.0) -> tuple[dict, list[str]]:
    """Polls until a final status; returns the description and every status seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        description = describe()
        if not seen or seen[-1] != description[status_field]:
            seen.append(description[status_field])
        if description[status_field] in FINAL:
            return description, seen
        time.sleep(0.05)
    raise AssertionError(f"still {seen[-1]} after {timeout} s")


def _train(sm, name: str, **kwargs) -> tuple[dict, list[str]]:
    sm.create_training_job(**_training_request(name, **kwargs))
    return _wait(lambda: sm.describe_training_job(TrainingJobName=name), "TrainingJobStatus")


def _model(sm, name: str, job: dict) -> str:
    sm.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": IMAGE,
            "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"],
        },
        ExecutionRoleArn=ROLE,
    )
    return name


def _endpoint(sm, name: str, model: str) -> dict:
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    return _wait(lambda: sm.describe_endpoint(EndpointName=name), "EndpointStatus")[0]


@pytest.fixture(scope="module")
def trained(sm):
    return _train(sm, "trained")


@pytest.fixture(scope="module")
def model(sm, trained):
    return _model(sm, "model", trained[0])


@pytest.fixture(scope="module")
def transformed(emulator, sm, model):
    sm.create_transform_job(
        TransformJobName="scored",
        ModelName=model,
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,  # several requests for the 1,000 lines
        TransformInput={
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/test/"}
            },
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={
            "S3OutputPath": f"s3://{BUCKET}/scored/",
            "Accept": "application/jsonlines",
            "AssembleWith": "Line",
        },
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    job, seen = _wait(
        lambda: sm.describe_transform_job(TransformJobName="scored"), "TransformJobStatus"
    )
    return job, seen


@pytest.fixture(scope="module")
def endpoint(sm, model):
    return _endpoint(sm, "served", model)


def _test_lines(emulator) -> list[str]:
    body = emulator.client("s3").get_object(Bucket=BUCKET, Key="data/test/test.csv")["Body"]
    return body.read().decode().splitlines()


# -- training --------------------------------------------------------------------------------


def test_a_training_job_runs_in_progress_then_completes_with_a_real_model(emulator, trained):
    job, seen = trained
    # Then the status changed asynchronously, as SageMaker's does
    assert seen == ["InProgress", "Completed"]
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert job["CreationTime"] < job["TrainingStartTime"] < job["TrainingEndTime"]
    assert (job["TrainingStartTime"] - job["CreationTime"]).total_seconds() >= DELAY - 0.01
    # and the model is where SageMaker puts it, in the image's format
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{BUCKET}/models/trained/output/model.tar.gz"
    key = artifact.removeprefix(f"s3://{BUCKET}/")
    body = emulator.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert read_centroids(body).shape == (10, 784)
    assert [m["MetricName"] for m in job["FinalMetricDataList"]] == ["train:msd"]
    assert job["HyperParameters"] == HYPERPARAMETERS
    assert emulator.client("sagemaker").list_tags(ResourceArn=job["TrainingJobArn"])["Tags"] == [
        {"Key": RUN_KEY_TAG, "Value": "mnist-000000000001"}
    ]


def test_billable_and_training_seconds_are_sagemakers_two_figures(sm, trained):
    # On demand they are equal (botocore's DescribeTrainingJob: the spot saving is
    # 1 - billable / training); a managed spot job is accepted, echoed, and equal too: the
    # local stack has no spot market, so no discount and no interruption to model.
    job = trained[0]
    assert job["BillableTimeInSeconds"] == job["TrainingTimeInSeconds"] >= 1
    request = _training_request("spot")
    request["EnableManagedSpotTraining"] = True
    request["StoppingCondition"]["MaxWaitTimeInSeconds"] = 1200
    sm.create_training_job(**request)
    spot, _ = _wait(lambda: sm.describe_training_job(TrainingJobName="spot"), "TrainingJobStatus")
    assert spot["TrainingJobStatus"] == "Completed"
    assert spot["EnableManagedSpotTraining"] is True
    assert spot["StoppingCondition"]["MaxWaitTimeInSeconds"] == 1200
    assert spot["BillableTimeInSeconds"] == spot["TrainingTimeInSeconds"]


@pytest.mark.parametrize(
    ("hyperparameters", "reason"),
    [
        (
            {"foo": "1"},
            "ClientError: Additional hyperparameters are not allowed ('foo' was unexpected) "
            "(caused by ValidationError)",
        ),
        (
            {"k": "ten"},
            "ClientError: The value 'ten' is not valid for the 'k' hyperparameter which expects "
            "one of the following: an integer greater than 0 (caused by ValidationError)",
        ),
    ],
    ids=["unknown-key", "bad-value"],
)
def test_invalid_hyperparameters_end_failed_with_sagemakers_reason(sm, hyperparameters, reason):
    name = f"bad-{next(iter(hyperparameters))}"
    job, seen = _train(sm, name, **hyperparameters)
    assert seen == ["InProgress", "Failed"]
    assert job["FailureReason"] == reason
    assert job["SecondaryStatus"] == "Failed"
    assert "ModelArtifacts" not in job


def test_a_stopped_job_ends_stopped_without_a_model(sm):
    sm.create_training_job(**_training_request("stopped"))
    sm.stop_training_job(TrainingJobName="stopped")
    job, seen = _wait(
        lambda: sm.describe_training_job(TrainingJobName="stopped"), "TrainingJobStatus"
    )
    assert seen == ["Stopping", "Stopped"]
    assert "ModelArtifacts" not in job
    with pytest.raises(ClientError, match="the training job is in status Stopped"):
        sm.stop_training_job(TrainingJobName="stopped")


def test_training_reads_every_object_under_the_channel_prefix(emulator, sample, sm, trained):
    # Given the same records in two shards, one per training instance
    s3 = emulator.client("s3")
    for index, rows in enumerate((slice(0, 1800), slice(1800, None)), start=1):
        s3.put_object(
            Bucket=BUCKET,
            Key=f"data/sharded/train-{index:03d}-of-002.recordio",
            Body=_recordio(sample, rows),
        )
    # When a job trains on the prefix
    job, _ = _train(sm, "sharded", train="data/sharded/")
    # Then it learnt from both: the model is the one trained on all records in one object

    def centroids(description):
        key = description["ModelArtifacts"]["S3ModelArtifacts"].removeprefix(f"s3://{BUCKET}/")
        return read_centroids(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    assert np.array_equal(centroids(job), centroids(trained[0]))


def test_create_refuses_what_sagemaker_refuses_in_its_words(sm, trained):
    with pytest.raises(ClientError) as taken:
        sm.create_training_job(**_training_request("trained"))
    assert taken.value.response["Error"]["Code"] == "ResourceInUse"
    assert "Training job names must be unique" in str(taken.value)
    with pytest.raises(ClientError, match='No S3 objects found under S3 URL "s3://'):
        sm.create_training_job(**_training_request("empty", train="nothing/here/"))
    with pytest.raises(ClientError, match="Member must satisfy regular expression pattern"):
        sm.create_training_job(**_training_request("not_a_name"))
    with pytest.raises(ClientError, match="Could not access model data at s3://"):
        sm.create_model(
            ModelName="no-artifact",
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/missing.tar.gz"},
            ExecutionRoleArn=ROLE,
        )


def test_the_product_finds_nothing_where_there_is_nothing(sm):
    for describe, field in (
        (sm.describe_training_job, "TrainingJobName"),
        (sm.describe_model, "ModelName"),
        (sm.describe_transform_job, "TransformJobName"),
        (sm.describe_endpoint_config, "EndpointConfigName"),
        (sm.describe_endpoint, "EndpointName"),
    ):
        assert describe_or_none(describe, **{field: "mnist-000000000000-none"}) is None


def test_a_call_it_does_not_serve_says_where_to_add_it(sm):
    with pytest.raises(ClientError, match="ListProcessingJobs is not implemented") as refused:
        sm.list_processing_jobs()
    assert refused.value.response["Error"]["Code"] == "UnknownOperationException"


# -- batch transform -------------------------------------------------------------------------


def test_batch_transform_writes_one_answer_per_input_line(emulator, transformed):
    job, seen = transformed
    assert seen == ["InProgress", "Completed"]
    # named after the input file, as SageMaker names it
    listing = emulator.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="scored/")
    assert [o["Key"] for o in listing["Contents"]] == ["scored/test.csv.out"]
    body = emulator.client("s3").get_object(Bucket=BUCKET, Key="scored/test.csv.out")["Body"]
    lines = body.read().decode().splitlines()
    assert len(lines) == len(_test_lines(emulator)) == 1000
    first = json.loads(lines[0])
    assert set(first) == {"closest_cluster", "distance_to_cluster"}
    assert isinstance(first["closest_cluster"], float) and first["closest_cluster"].is_integer()


def test_a_transform_of_rows_the_model_cannot_read_fails_naming_the_file(emulator, sm, model):
    emulator.client("s3").put_object(Bucket=BUCKET, Key="data/short/rows.csv", Body=b"1,2,3\n")
    sm.create_transform_job(
        TransformJobName="short-rows",
        ModelName=model,
        TransformInput={
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/short/"}
            },
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/short/", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    job, _ = _wait(
        lambda: sm.describe_transform_job(TransformJobName="short-rows"), "TransformJobStatus"
    )
    assert job["TransformJobStatus"] == "Failed"
    assert job["FailureReason"] == (
        "ClientError: rows.csv, request 1: the model answered 400: unable to evaluate payload "
        "provided: records have 3 features, the model was trained on 784"
    )


# -- endpoints -------------------------------------------------------------------------------


def test_the_endpoint_answers_the_test_split_as_the_batch_transform_did_line_for_line(
    emulator, runtime, endpoint, transformed
):
    assert endpoint["EndpointStatus"] == "InService"
    body = emulator.client("s3").get_object(Bucket=BUCKET, Key="scored/test.csv.out")["Body"]
    transform_lines = body.read().decode().splitlines()
    test_lines = _test_lines(emulator)
    answered = []
    for start in range(0, len(test_lines), 100):  # requests of 100 images, as predict sends
        answer = runtime.invoke_endpoint(
            EndpointName="served",
            ContentType="text/csv",
            Accept="application/json",
            Body="\n".join(test_lines[start : start + 100]),
        )
        assert answer["ContentType"] == "application/json"
        assert answer["InvokedProductionVariant"] == "AllTraffic"
        answered += json.loads(answer["Body"].read())["predictions"]
    assert [json.dumps(p) for p in answered] == transform_lines


def test_the_endpoint_takes_json_instances_too(emulator, runtime, endpoint):
    rows = [[float(v) for v in line.split(",")] for line in _test_lines(emulator)[:3]]
    as_csv = runtime.invoke_endpoint(
        EndpointName="served", ContentType="text/csv", Body="\n".join(_test_lines(emulator)[:3])
    )
    as_json = runtime.invoke_endpoint(
        EndpointName="served",
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps({"instances": [{"features": row} for row in rows]}),
    )
    predictions = json.loads(as_json["Body"].read())["predictions"]
    assert len(predictions) == 3
    assert predictions == json.loads(as_csv["Body"].read())["predictions"]


def test_a_wrong_feature_count_is_a_4xx_model_error_as_sagemaker_gives(runtime, endpoint):
    with pytest.raises(ClientError) as refused:
        runtime.invoke_endpoint(EndpointName="served", ContentType="text/csv", Body="0.5,0.5,0.5")
    error = refused.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 400
    assert error["OriginalMessage"] == (
        "unable to evaluate payload provided: records have 3 features, the model was trained on 784"
    )
    assert error["Error"]["Message"].startswith("Received client error (400) from primary")


def test_an_endpoint_that_is_not_there_is_a_validation_error(emulator, runtime):
    with pytest.raises(ClientError) as refused:
        runtime.invoke_endpoint(EndpointName="nowhere", ContentType="text/csv", Body="1")
    assert refused.value.response["Error"] == {
        "Code": "ValidationError",
        "Message": f"Endpoint nowhere of account {emulator.sagemaker.account} not found.",
    }


def test_an_update_goes_updating_then_serves_the_new_model(emulator, sm, runtime, trained):
    # Given an endpoint serving one model, and a model trained with more clusters
    first = _model(sm, "before-update", trained[0])
    _endpoint(sm, "updated", first)
    job, _ = _train(sm, "for-update", k="32")
    second = _model(sm, "after-update", job)
    sm.create_endpoint_config(
        EndpointConfigName="updated-config-2",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": second, "InitialInstanceCount": 1}
        ],
    )
    # When the endpoint is updated
    sm.update_endpoint(EndpointName="updated", EndpointConfigName="updated-config-2")
    with pytest.raises(ClientError, match="Cannot update in-progress endpoint"):
        sm.update_endpoint(EndpointName="updated", EndpointConfigName="updated-config-2")
    described, seen = _wait(lambda: sm.describe_endpoint(EndpointName="updated"), "EndpointStatus")
    # Then it was Updating, and now answers with the new model's 32 clusters
    assert seen == ["Updating", "InService"]
    assert described["EndpointConfigName"] == "updated-config-2"
    answer = runtime.invoke_endpoint(
        EndpointName="updated", ContentType="text/csv", Body="\n".join(_test_lines(emulator))
    )
    clusters = {p["closest_cluster"] for p in json.loads(answer["Body"].read())["predictions"]}
    assert max(clusters) > 9


def test_a_deleted_endpoint_goes_deleting_then_away(sm, model):
    _endpoint(sm, "deleted", model)
    sm.delete_endpoint(EndpointName="deleted")
    assert sm.describe_endpoint(EndpointName="deleted")["EndpointStatus"] == "Deleting"
    deadline = time.monotonic() + 10
    while describe_or_none(sm.describe_endpoint, EndpointName="deleted") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)


# -- one owner of SageMaker state --------------------------------------------------------------


def test_every_way_in_reaches_the_same_sagemaker(emulator, trained, monkeypatch):
    environment = emulator.environment()
    # The per-service variables point at the local SageMaker, the rest at moto
    assert {environment[name] for name in SAGEMAKER_ENDPOINT_VARIABLES} == {emulator.sagemaker_url}
    assert environment["AWS_ENDPOINT_URL"] == emulator.endpoint_url != emulator.sagemaker_url
    names = set()
    # boto3 configured by the environment alone, as the pipeline's steps are
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for client in (
        boto3.client("sagemaker"),
        # and a client given moto's URL for everything (`--endpoint-url`, the demo's export)
        boto3.client("sagemaker", endpoint_url=emulator.endpoint_url),
    ):
        jobs = client.list_training_jobs(NameContains="trained")["TrainingJobSummaries"]
        names |= {(job["TrainingJobName"], job["TrainingJobStatus"]) for job in jobs}
    assert names == {("trained", "Completed")}
    runtime = boto3.client("sagemaker-runtime")
    with pytest.raises(ClientError, match="Endpoint nowhere of account"):
        runtime.invoke_endpoint(EndpointName="nowhere", ContentType="text/csv", Body="1")


def test_lists_come_a_page_at_a_time_newest_first(sm, trained):
    first = sm.list_training_jobs(MaxResults=2)
    assert len(first["TrainingJobSummaries"]) == 2 and "NextToken" in first
    everything = first["TrainingJobSummaries"]
    token = first["NextToken"]
    while token:
        page = sm.list_training_jobs(MaxResults=2, NextToken=token)
        everything += page["TrainingJobSummaries"]
        token = page.get("NextToken")
    times = [job["CreationTime"] for job in everything]
    assert times == sorted(times, reverse=True)
    assert "trained" in {job["TrainingJobName"] for job in everything}


def test_the_watcher_sees_each_status_when_it_happens(emulator, sm):
    events: list[dict] = []
    watcher = SageMakerWatcher(
        sm, account="123456789012", region="us-east-1", deliver=events.append
    )
    watcher.poll()
    events.clear()  # what earlier tests left
    sm.create_training_job(**_training_request("watched"))
    watcher.poll()
    assert [e["detail"]["TrainingJobStatus"] for e in events] == ["InProgress"]
    _wait(lambda: sm.describe_training_job(TrainingJobName="watched"), "TrainingJobStatus")
    watcher.poll()
    assert [e["detail"]["TrainingJobStatus"] for e in events] == ["InProgress", "Completed"]
    completed = events[-1]["detail"]
    assert completed["ModelArtifacts"]["S3ModelArtifacts"].endswith("watched/output/model.tar.gz")
    assert all(isinstance(t["StartTime"], int) for t in completed["SecondaryStatusTransitions"])
