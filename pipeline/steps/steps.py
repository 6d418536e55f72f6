"""What each pipeline step does, given its AWS clients; the KFP components are thin shells.

Data stays in the data bucket under `runs/<run key>/`; steps pass S3 URIs and names between
them, never the data itself.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import ClientError

from core import kfp
from core.contracts import (
    ENDPOINT_CONFIG_SUFFIX,
    ENDPOINT_SUFFIX,
    EVALUATION_EVENT_DETAIL_TYPE,
    EVALUATION_FILE,
    FEATURE_DIM,
    MODEL_SUFFIX,
    PIPELINE_EVENT_DETAIL_TYPE,
    PIPELINE_EVENT_SOURCE,
    RUN_KEY_TAG,
    SERVING_MODELS_PREFIX,
    STEP_FAILURE_DIR,
    TRAINING_JOB_SUFFIX,
    TRANSFORM_JOB_SUFFIX,
    ModelEvaluation,
    PipelineFinalState,
    resource_name,
    run_key_from_name,
    run_prefix,
)
from core.sagemaker_events import TRAINING_JOB, TRANSFORM_JOB
from core.serving import serving_instance_count
from pipeline.steps import champion, endpoint_mode, guardrails, kmeans_model, registry
from pipeline.steps import sagemaker_jobs as jobs
from pipeline.steps.dataset import (
    MAX_DATASET_BYTES,
    PREPROCESS_MEMORY,
    TRAIN_DIR,
    TRANSFORM_INPUT_DIR,
    TRANSFORM_SPLITS,
    DatasetError,
    labels_csv,
    load_dataset,
    memory_bytes,
    with_validation,
    write_run_inputs,
)
from pipeline.steps.evaluate import (
    Evaluation,
    ModelRejected,
    evaluate,
    read_clusters,
    read_labels,
)

TRAINING_VOLUME_GB = 10
# Beyond the job's own MaxRuntimeInSeconds, how long the step waits for SageMaker to report.
TRAINING_WAIT_MARGIN_SECONDS = 900
TRANSFORM_TIMEOUT_SECONDS = 2 * 3600
ENDPOINT_TIMEOUT_SECONDS = 3600
TRANSFORM_MAX_PAYLOAD_MB = 6
RECORDIO_CONTENT_TYPE = "application/x-recordio-protobuf"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key), the key exactly as written: S3 keys may hold any
    UTF-8 character, `#`, `?` and `%` included, which a URL parser would cut or decode."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "s3" or not bucket or not key:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def preprocess(
    s3,
    *,
    dataset_uri: str,
    dataset_version: str,
    run_key: str,
    max_bytes: int = MAX_DATASET_BYTES,
    train_shards: int = 1,
    memory: str = PREPROCESS_MEMORY,
) -> dict:
    """Validates the uploaded dataset version and writes the run's inputs under runs/<key>/.

    It reads exactly the version that started the run (`dataset_version`, the S3 version id;
    empty for an unversioned bucket): a newer upload of the same key never leaks into it.
    `memory` is the step's memory (the pod's limit, a Kubernetes quantity): the load refuses a
    dataset that would need more than it leaves (dataset.MemoryBudget).
    """
    bucket, key = split_s3_uri(dataset_uri)
    version = {"VersionId": dataset_version} if dataset_version else {}
    size = s3.head_object(Bucket=bucket, Key=key, **version)["ContentLength"]
    if size == 0:
        raise DatasetError(f"{dataset_uri}: the file is empty")
    if size > max_bytes:
        raise DatasetError(
            f"{dataset_uri}: {size} bytes is over the limit of {max_bytes} bytes; not read"
        )
    prefix = run_prefix(run_key)
    with tempfile.TemporaryDirectory(prefix="mnist-preprocess-") as work:
        local = Path(work) / "dataset"
        s3.download_file(bucket, key, str(local), ExtraArgs=version)
        dataset = with_validation(
            load_dataset(
                local, source=dataset_uri, max_bytes=max_bytes, memory_limit=memory_bytes(memory)
            )
        )
        written = write_run_inputs(dataset, Path(work) / "out", train_shards=train_shards)
        for relative in written.values():
            s3.upload_file(str(Path(work) / "out" / relative), bucket, prefix + relative)
    base = f"s3://{bucket}/{prefix}"
    return {
        "run_uri": base,
        "train_uri": f"{base}{TRAIN_DIR}",
        "transform_input_uri": f"{base}{TRANSFORM_INPUT_DIR}",
        "labels_uri": f"{base}{Path(written['test_labels']).parent.as_posix()}/",
        "n_train": int(dataset.splits["train"].y.shape[0]),
        "n_test": int(dataset.splits["test"].y.shape[0]),
    }


def train(
    sm,
    *,
    run_key: str,
    role_arn: str,
    image: str,
    train_uri: str,
    run_uri: str,
    instance_type: str,
    instance_count: int,
    k: int,
    mini_batch_size: int,
    max_runtime_seconds: int,
    spot_training: bool = False,
    spot_max_wait_seconds: int | None = None,
    poll_seconds: float | None = None,
    sleep: jobs.Sleep = time.sleep,
) -> dict:
    """Trains the built-in k-means on the RecordIO training data (the seed's hyperparameters).

    With `spot_training`, on managed spot capacity: SageMaker waits up to
    `spot_max_wait_seconds` (>= max_runtime_seconds, botocore's StoppingCondition) for it. No
    CheckpointConfig: it is optional (botocore's CreateTrainingJob), and an interrupted job
    that has none restarts from the beginning, which for this minutes-long job costs less than
    writing checkpoints.
    """
    stopping = {"MaxRuntimeInSeconds": max_runtime_seconds}
    if spot_training:
        wait = spot_max_wait_seconds or max_runtime_seconds
        if wait < max_runtime_seconds:
            raise ValueError(
                f"spot_max_wait_seconds ({wait}) is less than max_runtime_seconds"
                f" ({max_runtime_seconds}): SageMaker requires MaxWaitTimeInSeconds >="
                " MaxRuntimeInSeconds"
            )
        stopping["MaxWaitTimeInSeconds"] = wait
    name = resource_name(run_key, TRAINING_JOB_SUFFIX)
    request = {
        TRAINING_JOB.name_field: name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": role_arn,
        "HyperParameters": {
            "k": str(k),
            "feature_dim": str(FEATURE_DIM),
            "mini_batch_size": str(mini_batch_size),
        },
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "ContentType": RECORDIO_CONTENT_TYPE,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": train_uri,
                        "S3DataDistributionType": "ShardedByS3Key"
                        if instance_count > 1
                        else "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"{run_uri}model/"},
        "ResourceConfig": {
            "InstanceType": instance_type,
            "InstanceCount": instance_count,
            "VolumeSizeInGB": TRAINING_VOLUME_GB,
        },
        "StoppingCondition": stopping,
        "Tags": jobs.run_tags(run_key),
    }
    if spot_training:
        request["EnableManagedSpotTraining"] = True
    done = jobs.ensure_training_job(
        sm,
        request,
        timeout_seconds=max(stopping.values()) + TRAINING_WAIT_MARGIN_SECONDS,
        poll_seconds=poll_seconds,
        sleep=sleep,
    )
    return {"job_name": name, "model_artifacts_uri": done["ModelArtifacts"]["S3ModelArtifacts"]}


def create_model(
    sm, s3, *, run_key: str, role_arn: str, image: str, model_artifacts_uri: str
) -> str:
    """The run's one model, made from its promoted artifact (models/<key>/model.tar.gz).

    Promoted here, before transform and deploy, because the model the endpoint serves is this
    one: SageMaker reads ModelDataUrl whenever it starts an instance (autoscaling, replacing a
    host), so it must name an object that outlives runs/'s expiry; a second, serving-only model
    would be one more resource per run for no gain. Promoted copies of runs that were rejected or
    failed are the cleanup's to delete (they carry the run-key tag).
    """
    name = resource_name(run_key, MODEL_SUFFIX)
    jobs.ensure_model(
        sm,
        {
            "ModelName": name,
            "PrimaryContainer": {
                "Image": image,
                "ModelDataUrl": promote_artifact(
                    s3, run_key=run_key, model_artifacts_uri=model_artifacts_uri
                ),
            },
            "ExecutionRoleArn": role_arn,
            "Tags": jobs.run_tags(run_key),
        },
    )
    return name


def promoted_artifact_uri(bucket: str, run_key: str) -> str:
    return f"s3://{bucket}/{SERVING_MODELS_PREFIX}{run_key}/{kmeans_model.MODEL_ARCHIVE}"


def promote_artifact(s3, *, run_key: str, model_artifacts_uri: str) -> str:
    """Copies the training job's model.tar.gz to models/<key>/ in the same bucket, tagged with
    the run key; a copy that is already there is kept (a retried step)."""
    bucket, key = split_s3_uri(model_artifacts_uri)
    target = promoted_artifact_uri(bucket, run_key)
    _, target_key = split_s3_uri(target)
    s3.copy_object(
        Bucket=bucket,
        Key=target_key,
        CopySource={"Bucket": bucket, "Key": key},
        TaggingDirective="REPLACE",
        Tagging=f"{RUN_KEY_TAG}={run_key}",
        MetadataDirective="COPY",
    )
    return target


def promote_evaluation(s3, *, bucket: str, run_key: str) -> None:
    """Keeps the deployed model's evaluation (its cluster -> digit mapping, which `predict`
    reads) next to its promoted artifact, out of runs/'s expiry."""
    s3.copy_object(
        Bucket=bucket,
        Key=f"{SERVING_MODELS_PREFIX}{run_key}/{EVALUATION_FILE}",
        CopySource={"Bucket": bucket, "Key": f"{run_prefix(run_key)}{EVALUATION_FILE}"},
        TaggingDirective="REPLACE",
        Tagging=f"{RUN_KEY_TAG}={run_key}",
        MetadataDirective="COPY",
    )


def promoted_artifacts(s3, *, bucket: str) -> list[dict]:
    """Every promoted artifact, newest first: {run_key, uri, last_modified} (for the cleanup's
    keep-the-last-N)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=SERVING_MODELS_PREFIX
    ):
        for obj in page.get("Contents", []):
            run_key, _, name = obj["Key"][len(SERVING_MODELS_PREFIX) :].partition("/")
            if run_key_from_name(run_key) == run_key and name == kmeans_model.MODEL_ARCHIVE:
                found.append(
                    {
                        "run_key": run_key,
                        "uri": f"s3://{bucket}/{obj['Key']}",
                        "last_modified": obj["LastModified"],
                    }
                )
    return sorted(found, key=lambda item: item["last_modified"], reverse=True)


def batch_transform(
    sm,
    *,
    run_key: str,
    model_name: str,
    transform_input_uri: str,
    run_uri: str,
    instance_type: str,
    instance_count: int,
    poll_seconds: float | None = None,
    sleep: jobs.Sleep = time.sleep,
) -> str:
    """Scores the unlabelled validation and test splits (one file each, one image a line);
    returns the output prefix, where SageMaker writes <input file name>.out for each."""
    name = resource_name(run_key, TRANSFORM_JOB_SUFFIX)
    output_uri = f"{run_uri}transform-output/"
    jobs.ensure_transform_job(
        sm,
        {
            TRANSFORM_JOB.name_field: name,
            "ModelName": model_name,
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": TRANSFORM_MAX_PAYLOAD_MB,
            "TransformInput": {
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": transform_input_uri}
                },
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            "TransformOutput": {
                "S3OutputPath": output_uri,
                "Accept": "application/jsonlines",
                "AssembleWith": "Line",
            },
            "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
            "Tags": jobs.run_tags(run_key),
        },
        timeout_seconds=TRANSFORM_TIMEOUT_SECONDS,
        poll_seconds=poll_seconds,
        sleep=sleep,
    )
    return output_uri


def endpoint_for(run_key: str, *, endpoint_name: str, per_run_endpoints: bool) -> str:
    """The endpoint a run deploys to: the stable one, or its own `<run key>-endpoint`."""
    if per_run_endpoints or not endpoint_name:
        return resource_name(run_key, ENDPOINT_SUFFIX)
    return endpoint_name


def deploy(
    sm,
    autoscaling=None,
    s3=None,
    *,
    run_key: str,
    model_name: str,
    endpoint_name: str,
    instance_type: str,
    instance_count: int,
    per_run_endpoints: bool = False,
    bake_minutes: int = 0,
    alarm_names: str = "",
    min_instances: int = 1,
    max_instances: int = 1,
    target_invocations: int = 70,
    endpoint_type: str = endpoint_mode.ENDPOINT_TYPE_INSTANCE,
    serverless_memory_mb: int = 2048,
    serverless_max_concurrency: int = 5,
    bucket: str = "",
    before_update: jobs.BeforeUpdate | None = None,
    poll_seconds: float | None = None,
    sleep: jobs.Sleep = time.sleep,
) -> str:
    """Puts the model behind the stable endpoint (or the run's own, with per_run_endpoints).

    The stable endpoint is created by the first run; later runs update it with the guardrails
    (blue/green, `bake_minutes` of baking watched by `alarm_names`, auto-rollback), one at a time.
    `before_update(description)` runs just before each UpdateEndpoint (the integrator's hook for
    re-checking the serving model); it may raise to stop. With an `autoscaling` client a stable
    variant on instances gets target tracking once it is InService (a serverless one scales
    itself). With an `s3` client the run's evaluation is first kept next to its promoted model
    (models/<key>/, in `bucket`). `endpoint_type` serverless: the variant has a ServerlessConfig
    instead of instances; a change of mode goes as endpoint_mode.mode_change says (an instance
    endpoint is deleted and created again as serverless; should that fail, it is created again
    on the config that served). Raises sagemaker_jobs.EndpointRolledBack when SageMaker rolls
    the update back.
    """
    if s3 is not None:
        promote_evaluation(s3, bucket=bucket, run_key=run_key)
    name = endpoint_for(run_key, endpoint_name=endpoint_name, per_run_endpoints=per_run_endpoints)
    stable = name != resource_name(run_key, ENDPOINT_SUFFIX)
    serverless = endpoint_type == endpoint_mode.ENDPOINT_TYPE_SERVERLESS
    if stable and not serverless and min_instances > max_instances:
        raise ValueError(f"endpoint min instances {min_instances} > max {max_instances}")
    count = serving_instance_count(instance_count, min_instances, max_instances, stable=stable)
    config = {
        "EndpointConfigName": resource_name(run_key, ENDPOINT_CONFIG_SUFFIX),
        "ProductionVariants": [
            endpoint_mode.production_variant(
                model_name,
                endpoint_type,
                instance_type=instance_type,
                instance_count=count,
                memory_mb=serverless_memory_mb,
                max_concurrency=serverless_max_concurrency,
            )
        ],
        "Tags": jobs.run_tags(run_key),
    }
    deployment = None
    if stable:
        deployment = guardrails.deployment_config(
            bake_seconds=bake_minutes * 60, alarms=guardrails.alarm_names(alarm_names)
        )
    # Serverless endpoints scale themselves: no scalable target (developer guide, "Serverless
    # Inference": no need "to choose instance types or manage scaling policies").
    scaling = stable and autoscaling is not None
    deregistered = False
    replaced: dict = {}  # the config an endpoint served before it was deleted to change mode

    def _change(description: dict) -> endpoint_mode.ModeChange:
        current = sm.describe_endpoint_config(EndpointConfigName=description["EndpointConfigName"])
        change = endpoint_mode.mode_change(current, endpoint_type)
        if not change.in_place:
            replaced["config"] = description["EndpointConfigName"]
        print(f"endpoint {name}: {change.reason}")
        return change

    def _before_update(description: dict) -> None:
        nonlocal deregistered
        if before_update is not None:
            before_update(description)
        if not scaling or deregistered:
            return
        # Deregister before an instance-type change (SageMaker refuses it on a scalable
        # variant) and before the endpoint goes serverless (its target would be orphaned).
        if serverless or _instance_type_changes(sm, description, instance_type):
            if guardrails.is_scalable_target(autoscaling, name):
                guardrails.deregister(autoscaling, name)
                deregistered = True

    def _scale() -> None:
        guardrails.register(
            autoscaling,
            name,
            min_instances=min_instances,
            max_instances=max_instances,
            target=target_invocations,
        )

    try:
        jobs.ensure_endpoint(
            sm,
            endpoint_name=name,
            config_request=config,
            tags=jobs.run_tags(run_key),
            timeout_seconds=ENDPOINT_TIMEOUT_SECONDS,
            poll_seconds=poll_seconds,
            deployment_config=deployment,
            before_update=_before_update,
            change_of=_change,
            sleep=sleep,
        )
    except jobs.StepFailed as error:
        if not replaced:
            if deregistered:
                _scale_again(name, _scale)
            raise
        # Deleted to change mode, then the new one failed: the old config serves again.
        restored = _restore(
            sm, name, replaced["config"], config["EndpointConfigName"], error, poll_seconds, sleep
        )
        if deregistered:
            _scale_again(name, _scale)
        raise restored from error
    except BaseException:
        if deregistered:  # rolled back or failed: the model still serving scales again
            _scale_again(name, _scale)
        raise
    if scaling and not serverless:
        _scale()
    return name


def _scale_again(name: str, scale) -> None:
    try:
        scale()
    except ClientError as error:  # the deploy's own error is the one to report
        print(f"could not register {name} with autoscaling again: {error}")


def _restore(
    sm,
    name: str,
    old_config: str,
    new_config: str,
    error: Exception,
    poll_seconds: float | None,
    sleep,
) -> jobs.StepFailed:
    """After an endpoint was deleted to change mode and its new one failed: creates it again
    on `old_config` (kept: the retirement keeps the last configs). Returns the error to raise,
    which says what happened and what serves."""
    what = (
        f"endpoint {name}: deleted to change mode, then creating it on the new config failed"
        f" ({error})"
    )
    try:
        existing = jobs.describe_or_none(sm.describe_endpoint, EndpointName=name)
        if existing is not None and existing["EndpointStatus"] != "Failed":
            return jobs.StepFailed(
                f"{what}; it is {existing['EndpointStatus']} on {existing['EndpointConfigName']}:"
                " not touched"
            )
        if existing is not None:
            sm.delete_endpoint(EndpointName=name)
        jobs.ensure_endpoint(
            sm,
            endpoint_name=name,
            config_request={"EndpointConfigName": old_config},
            tags=jobs.run_tags(run_key_from_name(old_config) or old_config),
            timeout_seconds=ENDPOINT_TIMEOUT_SECONDS,
            poll_seconds=poll_seconds,
            sleep=sleep,
        )
        # A retry of the step (KFP retries deploy) does not put the endpoint through it again.
        jobs.mark_rolled_back(sm, new_config, f"creating {name} on it failed: {error}")
    except (ClientError, jobs.StepFailed) as again:
        return jobs.StepFailed(
            f"{what}; creating it again on {old_config} failed too ({again}): NO endpoint"
            f" serves. Fix the cause, then upload again or create {name} on {old_config}"
        )
    return jobs.StepFailed(
        f"{what}; it was created again on {old_config}, which serves again"
        f" ({jobs.serving_run({'EndpointConfigName': old_config})})"
    )


def _instance_type_changes(sm, description: dict, instance_type: str) -> bool:
    current = sm.describe_endpoint_config(EndpointConfigName=description["EndpointConfigName"])
    return any(v.get("InstanceType") != instance_type for v in current["ProductionVariants"])


def evaluate_model(
    s3,
    events,
    *,
    run_key: str,
    run_uri: str,
    transform_output_uri: str,
    model_artifacts_uri: str,
    k: int,
    min_accuracy: float,
    event_bus_name: str,
    sm=None,
    endpoint_name: str = "",
    deploy_tolerance: float = 0.0,
    model_registry: bool = False,
    image: str = "",
) -> tuple[Evaluation, object, champion.Comparison]:
    """Scores the model from the transform's answers for the validation and test images, and the
    serving model on the same test split (champion.compare: not when it failed the gate or no
    endpoint serves); registers the model (model_registry); writes runs/<key>/evaluation.json
    and puts the evaluation event. Returns (evaluation, centroids, comparison). The caller
    raises ModelRejected when it did not pass the gate, or the comparison's rejection when it is
    not better than the serving model (after writing its artifacts)."""

    def text(uri: str) -> str:
        bucket, key = split_s3_uri(uri)
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except ClientError as error:
            raise RuntimeError(f"cannot read {uri}: {error}") from None

    answers = {}
    for split in TRANSFORM_SPLITS:
        labels_uri = f"{run_uri}{labels_csv(split)}"
        labels = read_labels(text(labels_uri), labels_uri)
        output_uri = f"{transform_output_uri}{split}.csv.out"
        answers[split] = (read_clusters(text(output_uri), labels.size, output_uri), labels)
    result = evaluate(*answers["validation"], *answers["test"], k=k, min_accuracy=min_accuracy)
    bucket, model_key = split_s3_uri(model_artifacts_uri)
    model = s3.get_object(Bucket=bucket, Key=model_key)["Body"].read()
    centroids = kmeans_model.read_centroids(model)
    if result.passed and sm is not None:
        comparison = champion.compare(
            sm,
            s3,
            endpoint_name=endpoint_name,
            run_uri=run_uri,
            challenger_accuracy=result.accuracy,
            tolerance=deploy_tolerance,
        )
    else:
        comparison = champion.Comparison(
            endpoint_name,
            result.accuracy,
            deploy_tolerance,
            note="under the gate: not compared with the serving model",
        )
    evaluation_uri = f"{run_uri}{EVALUATION_FILE}"
    bucket, key = split_s3_uri(evaluation_uri)
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(
            {"run_key": run_key, **result.as_json(), "champion": comparison.as_json()}, indent=2
        ).encode(),
        ContentType="application/json",
    )
    if model_registry and sm is not None:
        registry.register_model(
            sm,
            run_key=run_key,
            image=image,
            model_data_url=model_artifacts_uri,
            evaluation_uri=evaluation_uri,
            accuracy=result.accuracy,
            min_accuracy=result.min_accuracy,
            k=k,
            champion_accuracy=comparison.champion_accuracy,
        )
    detail = ModelEvaluation(
        run_key=run_key,
        accuracy=result.accuracy,
        min_accuracy=result.min_accuracy,
        passed=result.passed,
        k=k,
        weakest_digits=result.weakest_digits,
        recall=result.recall,
        evaluation_uri=evaluation_uri,
        champion_accuracy=comparison.champion_accuracy,
        champion_model=comparison.champion_model,
        deploy_tolerance=deploy_tolerance,
        beats_champion=comparison.beats_champion,
        champion_note=comparison.note,
    ).as_detail()
    _put_event(events, EVALUATION_EVENT_DETAIL_TYPE, detail, event_bus_name)
    return result, centroids, comparison


def _put_event(events, detail_type: str, detail: dict, event_bus_name: str) -> None:
    answer = events.put_events(
        Entries=[
            {
                "Source": PIPELINE_EVENT_SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "EventBusName": event_bus_name,
                "Resources": [],
            }
        ]
    )
    if answer.get("FailedEntryCount"):
        raise RuntimeError(f"EventBridge refused the {detail_type} event: {answer['Entries']}")


@contextlib.contextmanager
def failure_marker(s3, *, dataset_uri: str, run_key: str, step: str) -> Iterator[None]:
    """Leaves a failing step's error under runs/<key>/status/ for the exit handler, re-raises.

    KFP tells an exit handler only that a task failed, not why; this is how the reason travels.
    """
    bucket, _ = split_s3_uri(dataset_uri)
    key = f"{run_prefix(run_key)}{STEP_FAILURE_DIR}{step}.json"
    try:
        yield
    except BaseException as error:  # a cancelled step (KeyboardInterrupt) is reported too
        marker = {
            "step": step,
            "error": f"{type(error).__name__}: {error}",
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "model_rejected": isinstance(error, ModelRejected),
        }
        try:
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=json.dumps(marker).encode(),
                ContentType="application/json",
            )
        except ClientError as unwritten:
            print(f"could not leave the failure of {step} for the exit handler: {unwritten}")
        raise
    # A retried step that now succeeded takes back what an earlier attempt left: the exit
    # handler must not report a failure the run recovered from.
    s3.delete_object(Bucket=bucket, Key=key)


def first_failure(s3, *, dataset_uri: str, run_key: str) -> dict | None:
    """The earliest failure a step of this run left behind, if any."""
    bucket, _ = split_s3_uri(dataset_uri)
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{run_prefix(run_key)}{STEP_FAILURE_DIR}")
    markers = [
        json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        for obj in listing.get("Contents", [])
    ]
    return min(markers, key=lambda marker: marker["at"]) if markers else None


def report_final_state(
    s3,
    events,
    *,
    dataset_uri: str,
    run_key: str,
    state: str,
    endpoint_name: str,
    kfp_run: str,
    per_run_endpoints: bool = False,
    event_bus_name: str,
) -> dict:
    """Puts the run's final state on EventBridge, with the failed step and its own error."""
    succeeded = kfp.final_state(state) == kfp.SUCCEEDED
    failure = None if succeeded else first_failure(s3, dataset_uri=dataset_uri, run_key=run_key)
    detail = PipelineFinalState(
        run_key=run_key,
        state=state,
        failed_step=failure["step"] if failure else "",
        error=failure["error"] if failure else "",
        dataset_uri=dataset_uri,
        endpoint_name=endpoint_for(
            run_key, endpoint_name=endpoint_name, per_run_endpoints=per_run_endpoints
        ),
        kfp_run=kfp_run,
        model_rejected=bool(failure and failure.get("model_rejected")),
    ).as_detail()
    _put_event(events, PIPELINE_EVENT_DETAIL_TYPE, detail, event_bus_name)
    return detail
