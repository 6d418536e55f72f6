"""The pipeline's KFP v2 components: thin shells that build AWS clients and call
`pipeline.steps`.

Each component is a lightweight Python component with the steps' package (`pipeline.steps`) and
the shared core (`core`) embedded as they are in the repository (KFP's `embedded_artifact_path`,
which puts them first on the step's import path), so the same code runs on the cluster and under
`kfp.local`. AWS clients honour AWS_ENDPOINT_URL, which is how the local stack reaches its
emulator.

No `from __future__ import annotations` here: KFP reads the annotations as real types.
"""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from kfp import dsl

from core.contracts import STEP_IMAGE_PLACEHOLDER

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the steps import, as paths relative to the repository root: the packages are copied as
# they are (their parent package's __init__ included, so `pipeline.steps` resolves).
EMBEDDED_PACKAGES = ("core", "pipeline/steps")

# The steps' image (pipeline/image/Dockerfile) has kfp, boto3 and numpy baked in: nothing is
# installed when a step starts. Start-run names the real image when it submits a run.
BASE_IMAGE = STEP_IMAGE_PLACEHOLDER


@functools.cache
def embedded_runtime_dir() -> str:
    """The packages the steps import, copied as they are (sources only), for embedding."""
    staged = Path(tempfile.mkdtemp(prefix="mnist-steps-"))
    atexit.register(shutil.rmtree, staged, ignore_errors=True)
    for package in EMBEDDED_PACKAGES:
        for source in sorted((REPO_ROOT / package).glob("*.*")):  # modules and their data
            target = staged / package / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        parent = Path(package).parent
        if parent != Path("."):
            shutil.copyfile(REPO_ROOT / parent / "__init__.py", staged / parent / "__init__.py")
    return str(staged)


def _component(func):
    return dsl.component(
        func,
        base_image=BASE_IMAGE,
        install_kfp_package=False,
        embedded_artifact_path=embedded_runtime_dir(),
    )


# The functions below run inside the step's container: everything they use is imported inside.


def preprocess(
    dataset_uri: str,
    dataset_version: str,
    run_key: str,
    region: str,
    max_bytes: int,
    train_instance_count: int,
    memory: str,
) -> NamedTuple(
    "PreprocessOutputs",
    [
        ("run_uri", str),
        ("train_uri", str),
        ("transform_input_uri", str),
        ("labels_uri", str),
        ("n_train", int),
        ("n_test", int),
    ],
):
    """Validate the uploaded dataset; write RecordIO training data, the test CSV and labels."""
    from collections import namedtuple

    import boto3

    from core import contracts
    from pipeline.steps import steps

    s3 = boto3.client("s3", region_name=region)
    with steps.failure_marker(
        s3, dataset_uri=dataset_uri, run_key=run_key, step=contracts.STEP_PREPROCESS
    ):
        out = steps.preprocess(
            s3,
            dataset_uri=dataset_uri,
            dataset_version=dataset_version,
            run_key=run_key,
            max_bytes=max_bytes,
            train_shards=train_instance_count,  # one object per training instance
            memory=memory,  # the pod's memory limit, which the load stays under
        )
    fields = ["run_uri", "train_uri", "transform_input_uri", "labels_uri", "n_train", "n_test"]
    return namedtuple("PreprocessOutputs", fields)(*(out[name] for name in fields))


def train(
    dataset_uri: str,
    run_key: str,
    region: str,
    role_arn: str,
    training_image: str,
    train_uri: str,
    run_uri: str,
    instance_type: str,
    instance_count: int,
    k: int,
    mini_batch_size: int,
    max_runtime_seconds: int,
    spot_training: bool,
    spot_max_wait_seconds: int,
) -> NamedTuple("TrainOutputs", [("job_name", str), ("model_artifacts_uri", str), ("image", str)]):
    """Train SageMaker's built-in k-means and wait for the job; fail with its FailureReason."""
    from collections import namedtuple

    import boto3

    from core import contracts, images
    from pipeline.steps import steps

    s3 = boto3.client("s3", region_name=region)
    with steps.failure_marker(
        s3, dataset_uri=dataset_uri, run_key=run_key, step=contracts.STEP_TRAINING
    ):
        image = images.kmeans_image(region, training_image)
        out = steps.train(
            boto3.client("sagemaker", region_name=region),
            run_key=run_key,
            role_arn=role_arn,
            image=image,
            train_uri=train_uri,
            run_uri=run_uri,
            instance_type=instance_type,
            instance_count=instance_count,
            k=k,
            mini_batch_size=mini_batch_size,
            max_runtime_seconds=max_runtime_seconds,
            spot_training=spot_training,
            spot_max_wait_seconds=spot_max_wait_seconds,
        )
    outputs = namedtuple("TrainOutputs", ["job_name", "model_artifacts_uri", "image"])
    return outputs(out["job_name"], out["model_artifacts_uri"], image)


def create_model(
    dataset_uri: str, run_key: str, region: str, role_arn: str, image: str, model_artifacts_uri: str
) -> str:
    """Promote the training job's artifact to models/<key>/ and create the model from it."""
    import boto3

    from core import contracts
    from pipeline.steps import steps

    s3 = boto3.client("s3", region_name=region)
    with steps.failure_marker(
        s3, dataset_uri=dataset_uri, run_key=run_key, step=contracts.STEP_MODEL
    ):
        return steps.create_model(
            boto3.client("sagemaker", region_name=region),
            s3,
            run_key=run_key,
            role_arn=role_arn,
            image=image,
            model_artifacts_uri=model_artifacts_uri,
        )


def batch_transform(
    dataset_uri: str,
    run_key: str,
    region: str,
    model_name: str,
    transform_input_uri: str,
    run_uri: str,
    instance_type: str,
    instance_count: int,
) -> str:
    """Score the validation and test splits with a batch transform (text/csv, by line)."""
    import boto3

    from core import contracts
    from pipeline.steps import steps

    s3 = boto3.client("s3", region_name=region)
    with steps.failure_marker(
        s3, dataset_uri=dataset_uri, run_key=run_key, step=contracts.STEP_TRANSFORM
    ):
        return steps.batch_transform(
            boto3.client("sagemaker", region_name=region),
            run_key=run_key,
            model_name=model_name,
            transform_input_uri=transform_input_uri,
            run_uri=run_uri,
            instance_type=instance_type,
            instance_count=instance_count,
        )


def evaluate(
    dataset_uri: str,
    run_key: str,
    region: str,
    run_uri: str,
    transform_output_uri: str,
    model_artifacts_uri: str,
    k: int,
    min_accuracy: float,
    event_bus_name: str,
    endpoint_name: str,
    per_run_endpoints: bool,
    deploy_tolerance: float,
    model_registry: bool,
    image: str,
    metrics: dsl.Output[dsl.Metrics],
    classification: dsl.Output[dsl.ClassificationMetrics],
    centroids: dsl.Output[dsl.HTML],
) -> float:
    """Score the model on held-out digits, and the serving model on the same test split; register
    it; below min_accuracy, or not better than the serving model, stop the run before deploy."""
    import boto3
    from botocore.config import Config

    from core import contracts
    from pipeline.steps import steps
    from pipeline.steps.evaluate import ModelRejected, centroids_html

    s3 = boto3.client("s3", region_name=region)
    with steps.failure_marker(
        s3, dataset_uri=dataset_uri, run_key=run_key, step=contracts.STEP_EVALUATE
    ):
        # Standard retries: a throttled registry or describe call is retried with backoff.
        sagemaker = boto3.client(
            "sagemaker", region_name=region, config=Config(retries={"mode": "standard"})
        )
        result, model_centroids, comparison = steps.evaluate_model(
            s3,
            boto3.client("events", region_name=region),
            run_key=run_key,
            run_uri=run_uri,
            transform_output_uri=transform_output_uri,
            model_artifacts_uri=model_artifacts_uri,
            k=k,
            min_accuracy=min_accuracy,
            event_bus_name=event_bus_name,
            sm=sagemaker,
            # per-run endpoints: no model serves in the stable endpoint's place, nothing to beat
            endpoint_name="" if per_run_endpoints else endpoint_name,
            deploy_tolerance=deploy_tolerance,
            model_registry=model_registry,
            image=image,
        )
        # What KFP's UI shows for the run: the numbers, the confusion matrix, the centroids.
        metrics.log_metric("accuracy", result.accuracy)
        metrics.log_metric("min_accuracy", result.min_accuracy)
        if comparison.champion_accuracy is not None:
            metrics.log_metric("champion_accuracy", comparison.champion_accuracy)
        for digit, recall in result.recall.items():
            metrics.log_metric(f"recall_{digit}", recall)
        classification.log_confusion_matrix(
            [str(digit) for digit in range(contracts.NUM_CLASSES)], result.confusion
        )
        with open(centroids.path, "w", encoding="utf-8") as page:
            page.write(centroids_html(model_centroids, result.mapping, result.accuracy))
        if not result.passed:
            raise ModelRejected(result.accuracy, result.min_accuracy)
        if not comparison.beats_champion:
            raise comparison.rejection()
        return result.accuracy


def deploy(
    dataset_uri: str,
    run_key: str,
    region: str,
    model_name: str,
    endpoint_name: str,
    instance_type: str,
    instance_count: int,
    per_run_endpoints: bool,
    bake_minutes: int,
    alarm_names: str,
    min_instances: int,
    max_instances: int,
    target_invocations: int,
    run_uri: str,
    deploy_tolerance: float,
    endpoint_type: str = "instance",
    serverless_memory_mb: int = 2048,
    serverless_max_concurrency: int = 5,
) -> str:
    """Create the endpoint, or update the stable one with guardrails; wait until it serves.

    Just before each update of the stable endpoint the model is compared again with what serves
    at that moment (another run may have deployed since this one was evaluated): not better
    any more, the run ends MODEL_REJECTED and the endpoint is left as it is."""
    import boto3

    from core import contracts
    from pipeline.steps import champion, steps

    s3 = boto3.client("s3", region_name=region)
    sm = boto3.client("sagemaker", region_name=region)

    def still_better(_description: dict) -> None:
        champion.ensure_still_better(
            sm,
            s3,
            endpoint_name=endpoint_name,
            run_uri=run_uri,
            run_key=run_key,
            tolerance=deploy_tolerance,
        )

    with steps.failure_marker(
        s3, dataset_uri=dataset_uri, run_key=run_key, step=contracts.STEP_ENDPOINT
    ):
        return steps.deploy(
            sm,
            boto3.client("application-autoscaling", region_name=region),
            s3,
            run_key=run_key,
            bucket=steps.split_s3_uri(dataset_uri)[0],
            model_name=model_name,
            endpoint_name=endpoint_name,
            instance_type=instance_type,
            instance_count=instance_count,
            per_run_endpoints=per_run_endpoints,
            bake_minutes=bake_minutes,
            alarm_names=alarm_names,
            min_instances=min_instances,
            max_instances=max_instances,
            target_invocations=target_invocations,
            endpoint_type=endpoint_type,
            serverless_memory_mb=serverless_memory_mb,
            serverless_max_concurrency=serverless_max_concurrency,
            before_update=None if per_run_endpoints else still_better,
        )


def retire_superseded(
    dataset_uri: str, run_key: str, region: str, endpoint_name: str, kept_endpoint_configs: int
) -> str:
    """After an update of the stable endpoint: delete the endpoint configs, models and promoted
    artifacts it no longer needs, but the last kept_endpoint_configs (for rollback).

    The deploy has already succeeded: a retirement that cannot finish does not fail the run. It
    says why in its output and the log; the next run's retirement, or `mnistflow cleanup`,
    finishes it."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from pipeline.steps import retire, steps

    bucket, _ = steps.split_s3_uri(dataset_uri)
    try:
        outcomes = retire.after_deploy(
            boto3.client("sagemaker", region_name=region),
            boto3.client("s3", region_name=region),
            bucket=bucket,
            run_key=run_key,
            endpoint_name=endpoint_name,
            keep=kept_endpoint_configs,
        )
    except (BotoCoreError, ClientError) as error:
        report = f"retirement not finished, left for the next run or mnistflow cleanup: {error}"
    else:
        report = "\n".join(o.line() for o in outcomes) or "nothing to retire"
    print(report)
    return report


def report_final_state(
    dataset_uri: str,
    run_key: str,
    region: str,
    endpoint_name: str,
    per_run_endpoints: bool,
    event_bus_name: str,
    status: dsl.PipelineTaskFinalStatus,
) -> str:
    """Exit handler: whatever happened, put one final-state event for the run on EventBridge."""
    import json

    import boto3

    from core import kfp
    from pipeline.steps import registry, retire, steps

    # The run's model version (if any): Approved when the run succeeded, else Rejected.
    registry.settle_registration(
        boto3.client("sagemaker", region_name=region),
        run_key=run_key,
        succeeded=kfp.final_state(status.state) == kfp.SUCCEEDED,
    )
    detail = steps.report_final_state(
        boto3.client("s3", region_name=region),
        boto3.client("events", region_name=region),
        dataset_uri=dataset_uri,
        run_key=run_key,
        state=status.state,
        endpoint_name=endpoint_name,
        per_run_endpoints=per_run_endpoints,
        kfp_run=status.pipeline_job_resource_name,
        event_bus_name=event_bus_name,
    )
    retire.after_run(  # a run that did not succeed deletes what it created (event sent first)
        boto3.client("sagemaker", region_name=region),
        boto3.client("s3", region_name=region),
        state=status.state,
        run_key=run_key,
        dataset_uri=dataset_uri,
        endpoint_name=endpoint_name,
    )
    return json.dumps(detail)


STEP_FUNCTIONS = (
    preprocess,
    train,
    create_model,
    batch_transform,
    evaluate,
    deploy,
    retire_superseded,
    report_final_state,
)


@functools.cache
def components() -> dict[str, dsl.base_component.BaseComponent]:
    """The KFP components, by function name (built once: embedding archives the runtime)."""
    return {func.__name__: _component(func) for func in STEP_FUNCTIONS}
