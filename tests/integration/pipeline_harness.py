"""Test harness: one dataset through the compiled pipeline alone (no handlers), and take stock.

The pipeline runs under KFP's local runner against the AWS emulator; what it created there is
read back so a person (or a test) can see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core import contracts, endpoint_alarms
from core.contracts import (
    ENDPOINT_SUFFIX,
    INCOMING_PREFIX,
    MODEL_SUFFIX,
    RUN_KEY_TAG,
    TRAINING_JOB_SUFFIX,
    TRANSFORM_JOB_SUFFIX,
    resource_name,
    run_key,
    run_prefix,
)
from mnistflow.local.emulator import AwsEmulator
from mnistflow.local.pipeline_runner import LocalRunResult, run_compiled_pipeline
from mnistflow.local.provision import LocalNames, Provisioned, drain, provision
from pipeline.compile import compile_pipeline

LOCAL_DATA_BUCKET = "mnistflow-local-data"


@dataclass(frozen=True)
class LocalRun:
    run_key: str
    dataset_uri: str
    result: LocalRunResult
    inventory: dict
    final_events: list[dict]
    resources: Provisioned | None = None  # what a further run on the same emulator reuses


def received_pipeline_events(emulator: AwsEmulator, resources: Provisioned) -> list[dict]:
    """The final-state events that reached the queue (each as EventBridge delivered it)."""
    return drain(emulator.client, resources.queue_urls[resources.names.pipeline_events_queue])


def upload_dataset(emulator: AwsEmulator, data_file: Path, bucket: str) -> tuple[str, str, str]:
    """Puts the file under incoming/; returns its S3 URI, version id and the run key."""
    key = f"{INCOMING_PREFIX}{data_file.name}"
    with data_file.open("rb") as body:
        put = emulator.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    version = put.get("VersionId", "")
    return f"s3://{bucket}/{key}", version, run_key(bucket, key, version or put["ETag"].strip('"'))


def take_stock(emulator: AwsEmulator, bucket: str, key: str, endpoint_name: str) -> dict:
    """What the run left in the emulator: its files and its SageMaker resources with their tags."""
    s3, sm = emulator.client("s3"), emulator.client("sagemaker")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=run_prefix(key)).get("Contents", [])
    found: dict = {"objects": {obj["Key"]: obj["Size"] for obj in listing}}
    lookups = {
        "training_job": (sm.describe_training_job, "TrainingJob", TRAINING_JOB_SUFFIX),
        "model": (sm.describe_model, "Model", MODEL_SUFFIX),
        "transform_job": (sm.describe_transform_job, "TransformJob", TRANSFORM_JOB_SUFFIX),
        "endpoint": (sm.describe_endpoint, "Endpoint", None),
    }
    for what, (describe, kind, suffix) in lookups.items():
        name = resource_name(key, suffix) if suffix else endpoint_name
        try:
            description = describe(**{f"{kind}Name": name})
        except sm.exceptions.ClientError:
            found[what] = None
            continue
        tags = sm.list_tags(ResourceArn=description[f"{kind}Arn"])["Tags"]
        description["RunKeyTag"] = next(
            (tag["Value"] for tag in tags if tag["Key"] == RUN_KEY_TAG), None
        )
        found[what] = description
    return found


def run_dataset(
    emulator: AwsEmulator,
    data_file: Path,
    workdir: Path,
    *,
    bucket: str = LOCAL_DATA_BUCKET,
    endpoint_name: str = "",
    echo: bool = False,
    resources: Provisioned | None = None,
    **parameters: object,
) -> LocalRun:
    """Uploads `data_file`, runs the compiled pipeline on it, and takes stock; `resources`: an
    earlier run's, for a second run on the same emulator."""
    resources = resources or provision(
        emulator.client, LocalNames(data_bucket=bucket), kfp_token="unused"
    )
    dataset_uri, version, key = upload_dataset(emulator, data_file, bucket)
    spec = compile_pipeline(workdir / "mnist_pipeline.yaml")
    # The required parameters; the rest take the pipeline's defaults (the schema's).
    result = run_compiled_pipeline(
        spec,
        {
            "dataset_uri": dataset_uri,
            "dataset_version": version,
            "run_key": key,
            "region": emulator.region,
            "sagemaker_role_arn": resources.sagemaker_role_arn,
            "event_bus_name": contracts.PIPELINE_EVENT_BUS,
            "endpoint_alarm_names": endpoint_alarms.alarm_names(endpoint_name)
            if endpoint_name
            else "",
            "endpoint_name": endpoint_name,
            **parameters,
        },
        pipeline_root=workdir / "pipeline-root",
        environment=emulator.environment(),
        echo=echo,
    )
    endpoint = endpoint_name or resource_name(key, ENDPOINT_SUFFIX)
    stock = take_stock(emulator, bucket, key, endpoint)
    events = received_pipeline_events(emulator, resources)
    return LocalRun(key, dataset_uri, result, stock, events, resources)


def model_with_centroids_at(clients: dict, *, bucket: str, role: str, run_key: str, value: float):
    """A run's model, made by the create-model step: k-means centroids all at `value`, so the
    endpoint's answers tell which model serves. `clients`: "sagemaker" and "s3"."""
    import numpy as np

    from core import images
    from pipeline.steps import kmeans_model, steps

    centroids = np.full((10, contracts.FEATURE_DIM), value, dtype=np.float32)
    key = f"runs/{run_key}/model/{run_key}-train/output/model.tar.gz"
    clients["s3"].put_object(Bucket=bucket, Key=key, Body=kmeans_model.write_model(centroids))
    return steps.create_model(
        clients["sagemaker"],
        clients["s3"],
        run_key=run_key,
        role_arn=role,
        image=images.kmeans_image("us-east-1"),
        model_artifacts_uri=f"s3://{bucket}/{key}",
    )
