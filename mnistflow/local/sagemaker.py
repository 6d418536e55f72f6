"""A local SageMaker: the SageMaker and SageMaker Runtime APIs on 127.0.0.1, doing the work of
the built-in k-means image (training, batch transform, endpoints).

It owns all SageMaker state of the local stack. moto (which answers every other AWS call) has a
SageMaker of its own that finishes jobs at once and answers endpoints with canned responses;
nothing reaches it: clients find this server through boto3's per-service endpoint variables
(`AWS_ENDPOINT_URL_SAGEMAKER`, `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`; botocore 1.43
`configprovider.EndpointConfigProvider`: a service's own variable comes before
`AWS_ENDPOINT_URL`), and the emulator hands requests signed for SageMaker that arrive at moto's
port to this server's WSGI application (`mnistflow.local.emulator`). One view of each job.

The API: awsJson1_1 (`POST /` with `X-Amz-Target: SageMaker.<Operation>`) for SageMaker, and
rest-json `POST /endpoints/<name>/invocations` for InvokeEndpoint, on the same port. Requests
are checked against botocore's service model (patterns, lengths, enums, ranges: what the
service checks and the client does not), answers have the model's shapes, and errors read as
SageMaker's do (`{"__type": "ValidationException", "message": ...}`, HTTP 400). The messages
are SageMaker's where they are known (see each); the rest follow their style.

What it does (the k-means image's work in `mnistflow.local.kmeans` and `kmeans_serving`):

- Training jobs: InProgress (Starting, Downloading, Training, Uploading), then Completed,
  Failed (with FailureReason) or Stopped, from a worker thread. The `train` channel is every
  object under its S3 prefix (RecordIO-protobuf or CSV); the model goes to
  `<S3OutputPath>/<job name>/output/model.tar.gz`, as SageMaker puts it.
- Models: a name for an image and an artifact (checked to exist, as SageMaker checks).
- Batch transform: each object under the input prefix, split by line (or RecordIO record),
  sent to the model in requests of at most MaxPayloadInMB, answers written to
  `<S3OutputPath>/<object name>.out` (SageMaker developer guide, "Batch transform": "an output
  file with the same name and the .out file extension"), joined by newlines with
  AssembleWith=Line.
- The model registry: model package groups and their versioned model packages (ARNs
  `model-package/<group>/<version>`, versions from 1, never reused), ModelApprovalStatus
  PendingManualApproval unless the create names another, UpdateModelPackage to any of the
  three values, ListModelPackages filtered and sorted as documented.
- Endpoints: Creating, then InService serving the model (or Failed); UpdateEndpoint moves to
  Updating and serves the old model until the new one is in; DeleteEndpoint goes Deleting.
  A variant runs on instances or serverless (ServerlessConfig); an update from instances to
  serverless is refused, as SageMaker refuses it.

Not emulated: instances and their counts (one process does the work of all), network and KMS
settings, metrics in CloudWatch, logs, warm pools, spot, checkpoints, tuning jobs, data
capture, multi-model and multi-variant endpoints, images other than k-means.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
import numpy as np
from botocore import xform_name
from werkzeug.wrappers import Request, Response

from core import images
from mnistflow.local import kmeans, kmeans_serving, recordio
from mnistflow.local.loopback import LoopbackServer
from pipeline.steps import kmeans_model

DEFAULT_DELAY_SECONDS = 0.5  # how long a job stays InProgress (an endpoint Creating) at least
PAGE_SIZE = 10  # List* without MaxResults (the service model: "This value defaults to 10")
INVOKE_MAX_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload limit (6 MB)
MEGABYTE = 1024 * 1024
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."
_INVOCATIONS = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_MODEL = botocore.session.get_session().get_service_model("sagemaker")

# SageMaker's status messages for training's secondary statuses (as DescribeTrainingJob shows).
_MESSAGES = {
    "Starting": "Launching requested ML instances",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job stopped: it exceeded MaxRuntimeInSeconds",
}


class ApiError(Exception):
    """An error answer of the API: its code (botocore's exception name), message and status."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message)
        self.code, self.status, self.fields = code, status, fields


def _validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(value: datetime) -> float:
    return round(value.timestamp(), 3)


def _split_s3(uri: str) -> tuple[str, str]:
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise _validation(f"{uri} is not an s3:// URI")
    return bucket, key


def _join_s3(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *parts])


# -- request checks from the service model ----------------------------------------------------


@functools.cache
def _pattern(text: str) -> re.Pattern | None:
    try:
        return re.compile(text)
    except re.error:  # Java-only syntax (\p{L}): not checked here
        return None


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _check(shape, value: Any, path: str, errors: list[str]) -> None:
    """What the service checks beyond botocore's client-side validation, in its wording."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _check(member, value[name], f"{path}.{_camel(name)}".lstrip("."), errors)
    elif kind == "list" and isinstance(value, list):
        for index, item in enumerate(value, start=1):
            _check(shape.member, item, f"{path}.{index}.member", errors)
        _length(shape, len(value), value, path, errors)
    elif kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            _check(shape.value, item, f"{path}.{key}", errors)
    elif kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"enum value set: [{', '.join(shape.enum)}]"
            )
        pattern = shape.metadata.get("pattern")
        if pattern and (compiled := _pattern(pattern)) and not compiled.fullmatch(value):
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"regular expression pattern: {pattern}"
            )
        _length(shape, len(value), value, path, errors)
    elif kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and value < low:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value greater than or equal to {low}"
            )
        if high is not None and value > high:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value less than or equal to {high}"
            )


def _length(shape, length: int, value: Any, path: str, errors: list[str]) -> None:
    high = shape.metadata.get("max")
    if high is not None and length > high:
        errors.append(
            f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have length "
            f"less than or equal to {high}"
        )


def check_request(operation: str, request: dict) -> None:
    errors: list[str] = []
    _check(_MODEL.operation_model(operation).input_shape, request, "", errors)
    if errors:
        count = len(errors)
        raise _validation(
            f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(errors)
        )


# -- resources --------------------------------------------------------------------------------


class _Job:
    """A training or transform job: its request, its state, and its worker's stop signal."""

    def __init__(self, request: dict, arn: str) -> None:
        self.request = request
        self.arn = arn
        self.created = self.modified = _now()
        self.status = "InProgress"
        self.failure_reason = ""
        self.started: datetime | None = None
        self.ended: datetime | None = None
        self.stop = threading.Event()
        self.stop_reason = "Stopped"
        # training only
        self.secondary = "Starting"
        self.transitions: list[dict] = []
        self.artifacts = ""
        self.metrics: dict[str, float] = {}


class _Endpoint:
    def __init__(self, name: str, arn: str, config: str) -> None:
        self.name, self.arn = name, arn
        self.config = config  # the config it serves (or will serve, while Creating)
        self.status = "Creating"
        self.failure_reason = ""
        self.created = self.modified = _now()
        self.serving: dict | None = None  # the loaded model, its variant and image
        self.deployment_config: dict | None = None  # CreateEndpoint's, kept for updates
        self.last_deployment_config: dict | None = None  # the last update's (DescribeEndpoint)
        self.pending: dict | None = None  # the update under way: config, start, variant status


class LocalSageMaker:
    """The server; `stop()` ends it and every job still running."""

    def __init__(
        self,
        s3_client: Any,
        *,
        account: str,
        region: str,
        port: int = 0,
        delay_seconds: float = DEFAULT_DELAY_SECONDS,
        seed: int = kmeans.DEFAULT_SEED,
        cloudwatch_client: Any = None,
        autoscaling_client: Any = None,
        bake_time_scale: float = 1.0,
    ) -> None:
        self._s3 = s3_client
        # The deployment guardrails read the rollback alarms here; autoscaling's registered
        # targets decide whether an update may change a variant's instance type.
        self._cloudwatch = cloudwatch_client
        self._autoscaling = autoscaling_client
        self.account, self.region = account, region
        self.delay_seconds = delay_seconds
        # A baking period (TerminationWaitInSeconds) lasts this many times its seconds here: the
        # local stack bakes minutes in seconds.
        self.bake_time_scale = bake_time_scale
        self.seed = seed
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._workers: list[threading.Thread] = []
        self._training: dict[str, _Job] = {}
        self._transform: dict[str, _Job] = {}
        self._models: dict[str, dict] = {}
        self._configs: dict[str, dict] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._package_groups: dict[str, dict] = {}  # by name
        self._packages: dict[str, dict] = {}  # versioned model packages, by ARN
        self._package_tokens: dict[str, str] = {}  # CreateModelPackage's ClientToken -> ARN
        self._server = LoopbackServer(self.wsgi_app, port=port, name="local-sagemaker")
        self.endpoint_url = self._server.url

    @classmethod
    def for_emulator(cls, endpoint_url: str, region: str, credentials: dict[str, str], **kw):
        """A stand-in that reads and writes the emulator's S3 at `endpoint_url`."""
        session = boto3.session.Session(
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            region_name=region,
        )
        s3 = session.client("s3", endpoint_url=endpoint_url)
        account = session.client("sts", endpoint_url=endpoint_url).get_caller_identity()["Account"]
        return cls(
            s3,
            account=account,
            region=region,
            cloudwatch_client=session.client("cloudwatch", endpoint_url=endpoint_url),
            autoscaling_client=session.client("application-autoscaling", endpoint_url=endpoint_url),
            **kw,
        )

    def stop(self) -> None:
        self._closing.set()
        with self._lock:
            for job in [*self._training.values(), *self._transform.values()]:
                job.stop.set()
            workers = list(self._workers)
        for worker in workers:
            worker.join(10)
        self._server.stop()

    def __enter__(self) -> LocalSageMaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ---------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        try:
            if match := _INVOCATIONS.match(request.path):
                response = self._invoke_endpoint(request, match["name"])
            else:
                response = self._json_api(request)
        except ApiError as error:
            response = self._error(error, rest=bool(_INVOCATIONS.match(request.path)))
        except Exception as error:  # noqa: BLE001 - a bug here answers as SageMaker's 500 does
            failure = ApiError("InternalFailure", f"{type(error).__name__}: {error}", status=500)
            response = self._error(failure, rest=bool(_INVOCATIONS.match(request.path)))
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response(environ, start_response)

    def _json_api(self, request: Request) -> Response:
        target = request.headers.get("X-Amz-Target", "")
        if request.method != "POST" or not target.startswith(TARGET_PREFIX):
            raise ApiError("UnknownOperationException", "Unknown operation", status=404)
        operation = target.removeprefix(TARGET_PREFIX)
        handler = getattr(self, f"_op_{xform_name(operation)}", None)
        if handler is None:
            raise ApiError(
                "UnknownOperationException",
                f"{operation} is not implemented by the local SageMaker (mnistflow.local."
                f"sagemaker): add it there",
            )
        try:
            body = json.loads(request.get_data() or b"{}")
        except ValueError:
            raise ApiError("SerializationException", "the request body is not JSON") from None
        check_request(operation, body)
        with self._lock:  # answered as it stands: a worker may change it right after
            answer = json.dumps(handler(body), default=_epoch)
        return Response(answer, status=200, content_type=JSON_CONTENT_TYPE)

    def _error(self, error: ApiError, *, rest: bool) -> Response:
        body = {"__type": error.code, "message": str(error), **error.fields}
        response = Response(json.dumps(body), status=error.status, content_type=JSON_CONTENT_TYPE)
        if rest:  # rest-json: the code travels in a header too
            response.headers["x-amzn-ErrorType"] = error.code
        return response

    # -- names, tags, lists -------------------------------------------------------------------

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def _tag(self, arn: str, tags: list[dict] | None) -> None:
        self._tags.setdefault(arn, {}).update({t["Key"]: t["Value"] for t in tags or []})

    def _known_arns(self) -> set[str]:
        return {
            *(job.arn for job in self._training.values()),
            *(job.arn for job in self._transform.values()),
            *(m["ModelArn"] for m in self._models.values()),
            *(c["EndpointConfigArn"] for c in self._configs.values()),
            *(e.arn for e in self._endpoints.values()),
            *(g["ModelPackageGroupArn"] for g in self._package_groups.values()),
            *self._packages,
        }

    def _op_add_tags(self, body: dict) -> dict:
        if body["ResourceArn"] not in self._known_arns():
            raise _validation(f"Could not find resource {body['ResourceArn']}.")
        self._tag(body["ResourceArn"], body["Tags"])
        return {"Tags": body["Tags"]}

    def _op_list_tags(self, body: dict) -> dict:
        if body["ResourceArn"] not in self._known_arns():
            raise _validation(f"Could not find resource {body['ResourceArn']}.")
        tags = self._tags.get(body["ResourceArn"], {})
        return {"Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}

    def _op_delete_tags(self, body: dict) -> dict:
        if body["ResourceArn"] not in self._known_arns():
            raise _validation(f"Could not find resource {body['ResourceArn']}.")
        tags = self._tags.get(body["ResourceArn"], {})
        for key in body["TagKeys"]:
            tags.pop(key, None)
        return {}

    @staticmethod
    def _page(body: dict, rows: list[dict], key: str, name_field: str) -> dict:
        """Filters (name, status, times), sorts (CreationTime descending unless asked) and
        pages (PAGE_SIZE, NextToken) summaries, as every List* call does."""
        if text := body.get("NameContains"):
            rows = [r for r in rows if text.lower() in r[name_field].lower()]
        if status := body.get("StatusEquals"):
            rows = [r for r in rows if r.get("_status") == status]
        for field, test in (
            ("CreationTimeAfter", lambda r, t: r["CreationTime"] > t),
            ("CreationTimeBefore", lambda r, t: r["CreationTime"] < t),
            ("LastModifiedTimeAfter", lambda r, t: r.get("LastModifiedTime", t) > t),
            ("LastModifiedTimeBefore", lambda r, t: r.get("LastModifiedTime", t) < t),
        ):
            if field in body:
                moment = datetime.fromtimestamp(float(body[field]), UTC)
                rows = [r for r in rows if test(r, moment)]
        sort_by = body.get("SortBy", "CreationTime")
        sort_key = {
            "Name": name_field,
            "CreationTime": "CreationTime",
            "Status": "_status",
            "_order": "_order",
        }.get(sort_by, "CreationTime")
        rows.sort(
            key=lambda r: r[sort_key], reverse=body.get("SortOrder", "Descending") != "Ascending"
        )
        start = 0
        if token := body.get("NextToken"):
            try:
                start = int(base64.b64decode(token).decode())
            except ValueError:
                raise _validation("Invalid pagination token") from None
        size = body.get("MaxResults", PAGE_SIZE)
        page = [
            {k: v for k, v in r.items() if not k.startswith("_")}
            for r in rows[start : start + size]
        ]
        answer: dict = {key: page}
        if start + size < len(rows):
            answer["NextToken"] = base64.b64encode(str(start + size).encode()).decode()
        return answer

    # -- training jobs ------------------------------------------------------------------------

    def _op_create_training_job(self, body: dict) -> dict:
        name = body["TrainingJobName"]
        arn = self._arn("training-job", name)
        if name in self._training:
            # SageMaker's words (ResourceInUse, as boto3 reports it)
            raise ApiError(
                "ResourceInUse",
                f"Training job names must be unique within an AWS account and region, and a "
                f"training job with this name already exists ({arn})",
            )
        channels = body.get("InputDataConfig", [])
        for channel in channels:
            source = channel.get("DataSource", {}).get("S3DataSource")
            if source is None:
                raise _validation("the local SageMaker reads S3 data sources only")
            self._require_objects(source["S3Uri"], body["RoleArn"])
        request = {
            **body,
            "AlgorithmSpecification": {
                "EnableSageMakerMetricsTimeSeries": False,
                **body.get("AlgorithmSpecification", {}),
            },
            "InputDataConfig": [
                {"CompressionType": "None", "RecordWrapperType": "None", **c} for c in channels
            ],
            "OutputDataConfig": {"KmsKeyId": "", **body["OutputDataConfig"]},
        }
        request.pop("Tags", None)
        job = _Job(request, arn)
        self._transition(job, "Starting")
        self._training[name] = job
        self._tag(arn, body.get("Tags"))
        self._start(self._run_training, job)
        return {"TrainingJobArn": arn}

    def _require_objects(self, uri: str, role: str) -> list[str]:
        """The keys under an S3 prefix; SageMaker refuses a job whose prefix holds none, in
        these words (ValidationException at create time)."""
        bucket, prefix = _split_s3(uri)
        keys = self._keys(bucket, prefix)
        if not keys:
            raise _validation(
                f'No S3 objects found under S3 URL "{uri}" given in input data source. Please '
                f"ensure that the bucket exists in the selected region ({self.region}), that "
                f'objects exist under that S3 prefix, and that the role "{role}" has '
                f'"s3:ListBucket" permissions on bucket "{bucket}".'
            )
        return keys

    def _keys(self, bucket: str, prefix: str) -> list[str]:
        keys = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        except self._s3.exceptions.NoSuchBucket:
            return []
        return sorted(keys)

    def _transition(self, job: _Job, secondary: str, message: str = "") -> None:
        moment = _now()
        if job.transitions:
            job.transitions[-1]["EndTime"] = moment
        job.transitions.append(
            {
                "Status": secondary,
                "StartTime": moment,
                "StatusMessage": message or _MESSAGES[secondary],
            }
        )
        job.secondary, job.modified = secondary, moment

    def _op_describe_training_job(self, body: dict) -> dict:
        job = self._training.get(body["TrainingJobName"])
        if job is None:  # SageMaker's answer for a training job it does not have
            raise _validation("Requested resource not found.")
        answer = {
            **job.request,
            "TrainingJobArn": job.arn,
            "TrainingJobStatus": job.status,
            "SecondaryStatus": job.secondary,
            "CreationTime": job.created,
            "LastModifiedTime": job.modified,
            "SecondaryStatusTransitions": job.transitions,
        }
        answer.setdefault("EnableNetworkIsolation", False)
        answer.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
        if job.failure_reason:
            answer["FailureReason"] = job.failure_reason
        if job.started:
            answer["TrainingStartTime"] = job.started
        if job.ended:
            answer["TrainingEndTime"] = job.ended
            # SageMaker's two figures (botocore's DescribeTrainingJob): TrainingTimeInSeconds,
            # the time the job trained, and BillableTimeInSeconds, the time billed; a managed
            # spot job's saving is 1 - billable / training. On demand they are equal; here a
            # spot job is equal too, honestly: the local stack has no spot market, so no
            # discount and no interruption to model (the email shows a 0% saving).
            seconds = max(1, round((job.ended - (job.started or job.created)).total_seconds()))
            answer["TrainingTimeInSeconds"] = answer["BillableTimeInSeconds"] = seconds
        if job.artifacts:
            answer["ModelArtifacts"] = {"S3ModelArtifacts": job.artifacts}
        if job.metrics:
            answer["FinalMetricDataList"] = [
                {"MetricName": name, "Value": value, "Timestamp": job.ended or job.modified}
                for name, value in job.metrics.items()
            ]
        return answer

    def _op_list_training_jobs(self, body: dict) -> dict:
        rows = [
            {
                "TrainingJobName": name,
                "TrainingJobArn": job.arn,
                "CreationTime": job.created,
                "LastModifiedTime": job.modified,
                "TrainingJobStatus": job.status,
                "_status": job.status,
                **({"TrainingEndTime": job.ended} if job.ended else {}),
            }
            for name, job in self._training.items()
        ]
        return self._page(body, rows, "TrainingJobSummaries", "TrainingJobName")

    def _op_stop_training_job(self, body: dict) -> dict:
        job = self._training.get(body["TrainingJobName"])
        if job is None:
            raise _validation("Requested resource not found.")
        if job.status != "InProgress":  # SageMaker's words
            raise _validation(
                f"The request was rejected because the training job is in status {job.status}."
            )
        job.status = "Stopping"
        self._transition(job, "Stopping")
        job.stop.set()
        return {}

    # -- the workers --------------------------------------------------------------------------

    def _start(self, work: Callable[[Any], None], subject: Any) -> None:
        worker = threading.Thread(target=work, args=(subject,), daemon=True, name="sagemaker-job")
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _settle(self, stop: threading.Event) -> bool:
        """The status's minimum duration; True when stopped meanwhile."""
        return stop.wait(self.delay_seconds) or self._closing.is_set()

    def _wind_down(self, job: _Job) -> None:
        """A stop takes a while, as the instances' does: Stopping for the delay, at least."""
        if job.status == "Stopping":
            self._closing.wait(self.delay_seconds)

    def _finish(self, job: _Job, status: str, secondary: str | None, reason: str = "") -> None:
        with self._lock:
            job.status = status
            job.failure_reason = reason
            job.ended = _now()
            if secondary:
                self._transition(job, secondary, reason if status == "Failed" else "")
            job.modified = job.ended

    def _run_training(self, job: _Job) -> None:
        request = job.request
        limit = request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        deadline = job.created.timestamp() + limit if limit else None

        def check() -> None:
            if job.stop.is_set() or self._closing.is_set():
                raise kmeans.TrainingStopped
            if deadline is not None and _now().timestamp() > deadline:
                job.stop_reason = "MaxRuntimeExceeded"
                raise kmeans.TrainingStopped

        try:
            if self._settle(job.stop):
                raise kmeans.TrainingStopped
            with self._lock:
                job.started = _now()
                self._transition(job, "Downloading")
            channels = {c["ChannelName"]: c for c in request.get("InputDataConfig", [])}
            raw = {name: self._download(channel) for name, channel in channels.items()}
            check()
            with self._lock:
                self._transition(job, "Training")
            trained = self._train(request, channels, raw, check)
            check()
            with self._lock:
                self._transition(job, "Uploading")
            name = request["TrainingJobName"]
            output = _join_s3(request["OutputDataConfig"]["S3OutputPath"], name, "output")
            artifact = _join_s3(output, kmeans_model.MODEL_ARCHIVE)
            bucket, key = _split_s3(artifact)
            self._s3.put_object(
                Bucket=bucket, Key=key, Body=kmeans_model.write_model(trained.centroids)
            )
            with self._lock:
                job.artifacts = artifact
                job.metrics = trained.metrics
            self._finish(job, "Completed", "Completed")
        except kmeans.TrainingStopped:
            self._wind_down(job)
            self._finish(job, "Stopped", job.stop_reason)
        except kmeans.AlgorithmInputError as error:
            self._finish(job, "Failed", "Failed", error.failure_reason)
        except Exception as error:  # noqa: BLE001 - the job fails, as an algorithm error would
            self._finish(
                job, "Failed", "Failed", f"AlgorithmError: {type(error).__name__}: {error}"
            )

    def _download(self, channel: dict) -> list[bytes]:
        source = channel["DataSource"]["S3DataSource"]
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise kmeans.AlgorithmInputError(
                f"the local SageMaker reads S3Prefix data only, not {source['S3DataType']}",
                caused_by="ValueError",
            )
        bucket, prefix = _split_s3(source["S3Uri"])
        # Every object under the prefix: with ShardedByS3Key each instance would get some of
        # them, and together they train one model; here one process does the work of all.
        blobs = [
            self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            for key in self._keys(bucket, prefix)
        ]
        if channel.get("CompressionType") == "Gzip":
            blobs = [gzip.decompress(blob) for blob in blobs]
        return blobs

    def _train(
        self, request: dict, channels: dict, raw: dict[str, list[bytes]], check: Callable
    ) -> kmeans.Trained:
        image = request["AlgorithmSpecification"].get("TrainingImage", "")
        _require_kmeans(image)
        hp = kmeans.parse_hyperparameters(request.get("HyperParameters", {}))
        unexpected = sorted(set(channels) - {"train", "test"})
        if "train" not in channels or unexpected:
            raise kmeans.AlgorithmInputError(
                "Unable to initialize the algorithm. Failed to validate input data "
                f"configuration: k-means takes a 'train' channel and an optional 'test' channel "
                f"(got {', '.join(sorted(channels))})"
            )
        data = {
            name: _records(name, channels[name], raw[name], hp.feature_dim) for name in channels
        }
        trained = kmeans.train(data["train"], hp, seed=self.seed, check=check)
        if "test" in data and len(data["test"]):
            closest = kmeans_model.closest_clusters(trained.centroids, data["test"])[1]
            squared = closest.astype(float) ** 2
            scores = {"msd": float(squared.mean()), "ssd": float(squared.sum())}
            trained.metrics.update({f"test:{m}": scores[m] for m in hp.eval_metrics})
        return trained

    # -- models and endpoint configs ----------------------------------------------------------

    def _op_create_model(self, body: dict) -> dict:
        name = body["ModelName"]
        arn = self._arn("model", name)
        if name in self._models:
            raise _validation(f'Cannot create already existing model "{arn}".')
        container = body.get("PrimaryContainer")
        if container is None:
            raise _validation("the local SageMaker serves models with a PrimaryContainer only")
        if url := container.get("ModelDataUrl"):
            bucket, key = _split_s3(url)
            try:
                self._s3.head_object(Bucket=bucket, Key=key)
            except self._s3.exceptions.ClientError:  # SageMaker's words
                raise _validation(
                    f"Could not access model data at {url}. Please ensure that the role "
                    f'"{body.get("ExecutionRoleArn", "")}" exists and that its trust relationship '
                    'policy allows the action "sts:AssumeRole" for the service principal '
                    '"sagemaker.amazonaws.com". Also ensure that the role has "s3:GetObject" '
                    f"permissions and that the object is located in {self.region}."
                ) from None
        self._models[name] = {
            **{k: v for k, v in body.items() if k != "Tags"},
            "ModelArn": arn,
            "CreationTime": _now(),
            "EnableNetworkIsolation": body.get("EnableNetworkIsolation", False),
        }
        self._tag(arn, body.get("Tags"))
        return {"ModelArn": arn}

    def _model(self, name: str) -> dict:
        model = self._models.get(name)
        if model is None:  # SageMaker's words
            raise _validation(f'Could not find model "{self._arn("model", name)}".')
        return model

    def _op_describe_model(self, body: dict) -> dict:
        return self._model(body["ModelName"])

    def _op_delete_model(self, body: dict) -> dict:
        model = self._model(body["ModelName"])
        del self._models[body["ModelName"]]
        self._tags.pop(model["ModelArn"], None)
        return {}

    def _op_list_models(self, body: dict) -> dict:
        rows = [
            {
                "ModelName": m["ModelName"],
                "ModelArn": m["ModelArn"],
                "CreationTime": m["CreationTime"],
            }
            for m in self._models.values()
        ]
        return self._page(body, rows, "Models", "ModelName")

    def _op_create_endpoint_config(self, body: dict) -> dict:
        name = body["EndpointConfigName"]
        arn = self._arn("endpoint-config", name)
        if name in self._configs:  # SageMaker's words
            raise _validation(f'Cannot create already existing endpoint configuration "{arn}".')
        for variant in body["ProductionVariants"]:
            self._model(variant["ModelName"])
        _check_variants(body["ProductionVariants"])
        self._configs[name] = {
            **{k: v for k, v in body.items() if k != "Tags"},
            "EndpointConfigArn": arn,
            "CreationTime": _now(),
        }
        self._tag(arn, body.get("Tags"))
        return {"EndpointConfigArn": arn}

    def _config(self, name: str) -> dict:
        config = self._configs.get(name)
        if config is None:  # SageMaker's words
            raise _validation(
                f'Could not find endpoint configuration "{self._arn("endpoint-config", name)}".'
            )
        return config

    def _op_describe_endpoint_config(self, body: dict) -> dict:
        return self._config(body["EndpointConfigName"])

    def _op_delete_endpoint_config(self, body: dict) -> dict:
        config = self._config(body["EndpointConfigName"])
        del self._configs[body["EndpointConfigName"]]
        self._tags.pop(config["EndpointConfigArn"], None)
        return {}

    def _op_list_endpoint_configs(self, body: dict) -> dict:
        rows = [
            {
                "EndpointConfigName": c["EndpointConfigName"],
                "EndpointConfigArn": c["EndpointConfigArn"],
                "CreationTime": c["CreationTime"],
            }
            for c in self._configs.values()
        ]
        return self._page(body, rows, "EndpointConfigs", "EndpointConfigName")

    # -- the model registry: model package groups and versioned model packages ----------------
    # SageMaker developer guide, "Model Registry Models, Model Versions, and Model Groups":
    # versions start at 1 and grow by one with each package added to a group; a versioned
    # package's ARN is arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>.

    def _op_create_model_package_group(self, body: dict) -> dict:
        name = body["ModelPackageGroupName"]
        arn = self._arn("model-package-group", name)
        if name in self._package_groups:
            raise _validation(f"Model Package Group already exists: {arn}")
        self._package_groups[name] = {
            "ModelPackageGroupName": name,
            "ModelPackageGroupArn": arn,
            "ModelPackageGroupDescription": body.get("ModelPackageGroupDescription", ""),
            "CreationTime": _now(),
            "ModelPackageGroupStatus": "Completed",
            "_next_version": 1,
        }
        self._tag(arn, body.get("Tags"))
        return {"ModelPackageGroupArn": arn}

    def _package_group(self, name_or_arn: str) -> dict:
        name = name_or_arn.rsplit("/", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn
        group = next(
            (g for key, g in self._package_groups.items() if key.lower() == name.lower()), None
        )
        if group is None:
            raise _validation(f"Model Package Group {name} does not exist.")
        return group

    def _op_describe_model_package_group(self, body: dict) -> dict:
        group = self._package_group(body["ModelPackageGroupName"])
        return {k: v for k, v in group.items() if not k.startswith("_")}

    def _op_list_model_package_groups(self, body: dict) -> dict:
        rows = [
            {
                "ModelPackageGroupName": g["ModelPackageGroupName"],
                "ModelPackageGroupArn": g["ModelPackageGroupArn"],
                "ModelPackageGroupDescription": g["ModelPackageGroupDescription"],
                "CreationTime": g["CreationTime"],
                "ModelPackageGroupStatus": g["ModelPackageGroupStatus"],
            }
            for g in self._package_groups.values()
        ]
        return self._page(body, rows, "ModelPackageGroupSummaryList", "ModelPackageGroupName")

    def _op_create_model_package(self, body: dict) -> dict:
        if token := body.get("ClientToken"):
            if token in self._package_tokens:  # the same request again: the same version
                return {"ModelPackageArn": self._package_tokens[token]}
        if "ModelPackageGroupName" not in body:
            raise _validation(
                "the local SageMaker registers versioned model packages only: give"
                " ModelPackageGroupName"
            )
        if "ModelPackageName" in body:  # the API reference: not applicable to versioned models
            raise _validation("ModelPackageName cannot be specified for a versioned model package")
        group = self._package_group(body["ModelPackageGroupName"])
        if "InferenceSpecification" not in body:
            raise _validation("InferenceSpecification is required for a model package")
        version = group["_next_version"]
        group["_next_version"] += 1
        name = group["ModelPackageGroupName"]
        arn = self._arn("model-package", f"{name}/{version}")
        moment = _now()
        self._packages[arn] = {
            **{k: v for k, v in body.items() if k not in ("Tags", "ClientToken")},
            "ModelPackageGroupName": name,
            "ModelPackageName": name,
            "ModelPackageVersion": version,
            "ModelPackageArn": arn,
            "CreationTime": moment,
            "LastModifiedTime": moment,
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "ModelApprovalStatus": body.get("ModelApprovalStatus", "PendingManualApproval"),
            "CertifyForMarketplace": body.get("CertifyForMarketplace", False),
        }
        if token := body.get("ClientToken"):
            self._package_tokens[token] = arn
        self._tag(arn, body.get("Tags"))
        return {"ModelPackageArn": arn}

    def _package(self, name: str) -> dict:
        package = self._packages.get(name) or next(
            (p for arn, p in self._packages.items() if arn.lower() == name.lower()), None
        )
        if package is None:
            raise _validation(f"ModelPackage {name} does not exist.")
        return package

    def _op_describe_model_package(self, body: dict) -> dict:
        return self._package(body["ModelPackageName"])

    def _op_update_model_package(self, body: dict) -> dict:
        package = self._package(body["ModelPackageArn"])
        if status := body.get("ModelApprovalStatus"):
            package["ModelApprovalStatus"] = status
        if "ApprovalDescription" in body:
            package["ApprovalDescription"] = body["ApprovalDescription"]
        metadata = {
            **package.get("CustomerMetadataProperties", {}),
            **body.get("CustomerMetadataProperties", {}),
        }
        for key in body.get("CustomerMetadataPropertiesToRemove", []):
            metadata.pop(key, None)
        if metadata:
            package["CustomerMetadataProperties"] = metadata
        package["LastModifiedTime"] = _now()
        return {"ModelPackageArn": package["ModelPackageArn"]}

    def _op_delete_model_package(self, body: dict) -> dict:
        package = self._package(body["ModelPackageName"])
        del self._packages[package["ModelPackageArn"]]
        self._tags.pop(package["ModelPackageArn"], None)
        return {}

    def _op_list_model_packages(self, body: dict) -> dict:
        """ListModelPackages: ModelPackageType filters versioned from unversioned (the API
        reference: UNVERSIONED by default; this server holds versioned packages only, which a
        group filter asks for, as AWS's registry examples list a group's versions);
        ModelPackageGroupName, ModelApprovalStatus, NameContains and the creation times
        filter; SortBy Name or CreationTime (default), descending by default."""
        kind = body.get("ModelPackageType")
        if kind == "Unversioned" or (kind is None and "ModelPackageGroupName" not in body):
            return {"ModelPackageSummaryList": []}
        packages = list(self._packages.values())
        if group := body.get("ModelPackageGroupName"):
            name = group.rsplit("/", 1)[-1] if group.startswith("arn:") else group
            packages = [p for p in packages if p["ModelPackageGroupName"].lower() == name.lower()]
        if status := body.get("ModelApprovalStatus"):
            packages = [p for p in packages if p["ModelApprovalStatus"] == status]
        rows = [
            {
                key: p[key]
                for key in (
                    "ModelPackageName",
                    "ModelPackageGroupName",
                    "ModelPackageVersion",
                    "ModelPackageArn",
                    "ModelPackageDescription",
                    "CreationTime",
                    "ModelPackageStatus",
                    "ModelApprovalStatus",
                )
                if key in p
            }
            for p in sorted(packages, key=lambda p: p["ModelPackageVersion"])
        ]
        if body.get("SortBy", "CreationTime") == "CreationTime":
            # Versions of one group are created in version order; within one clock tick the
            # version decides (the later version is the newer).
            for row in rows:
                row["_order"] = (row["CreationTime"], row["ModelPackageVersion"])
            body = {**body, "SortBy": "_order"}
        return self._page(body, rows, "ModelPackageSummaryList", "ModelPackageName")

    # -- endpoints ----------------------------------------------------------------------------

    def _endpoint(self, name: str) -> _Endpoint:
        endpoint = self._endpoints.get(name)
        if endpoint is None:  # SageMaker's words
            raise _validation(f'Could not find endpoint "{self._arn("endpoint", name)}".')
        return endpoint

    def _op_create_endpoint(self, body: dict) -> dict:
        name = body["EndpointName"]
        arn = self._arn("endpoint", name)
        if name in self._endpoints:  # SageMaker's words
            raise _validation(f'Cannot create already existing endpoint "{arn}".')
        self._config(body["EndpointConfigName"])
        self._check_deployment_config(body.get("DeploymentConfig"))
        endpoint = _Endpoint(name, arn, body["EndpointConfigName"])
        endpoint.deployment_config = body.get("DeploymentConfig")
        self._endpoints[name] = endpoint
        self._tag(arn, body.get("Tags"))
        self._start(self._deploy, (endpoint, body["EndpointConfigName"]))
        return {"EndpointArn": arn}

    def _op_update_endpoint(self, body: dict) -> dict:
        endpoint = self._endpoint(body["EndpointName"])
        self._config(body["EndpointConfigName"])
        if endpoint.status != "InService":
            raise _validation(
                f'Cannot update in-progress endpoint "{endpoint.arn}".'
                if endpoint.status in ("Creating", "Updating", "SystemUpdating")
                else f'Cannot update endpoint "{endpoint.arn}" in status {endpoint.status}.'
            )
        deployment = body.get("DeploymentConfig")
        if deployment is None and body.get("RetainDeploymentConfig"):
            deployment = endpoint.deployment_config
        self._check_deployment_config(deployment)
        self._check_mode_change(endpoint, self._config(body["EndpointConfigName"]))
        self._check_autoscaling(endpoint, self._config(body["EndpointConfigName"]))
        endpoint.status, endpoint.modified = "Updating", _now()
        endpoint.failure_reason = ""
        endpoint.pending = {
            "EndpointConfigName": body["EndpointConfigName"],
            "StartTime": endpoint.modified,
            "deployment": deployment,
        }
        self._start(self._deploy, (endpoint, body["EndpointConfigName"]))
        return {"EndpointArn": endpoint.arn}

    def _check_deployment_config(self, deployment: dict | None) -> None:
        """What the local SageMaker does of a DeploymentConfig: blue/green with ALL_AT_ONCE
        traffic shifting, a baking period and auto-rollback on CloudWatch alarms."""
        if not deployment:
            return
        if "RollingUpdatePolicy" in deployment:
            raise _validation("the local SageMaker does blue/green updates only (no rolling)")
        policy = deployment.get("BlueGreenUpdatePolicy")
        if policy is not None:
            routing = policy.get("TrafficRoutingConfiguration")
            # botocore's model: TrafficRoutingConfiguration is required, and in it Type and
            # WaitIntervalInSeconds (the client checks; a raw request may not have).
            if not routing or "Type" not in routing or "WaitIntervalInSeconds" not in routing:
                raise _validation(
                    "BlueGreenUpdatePolicy.TrafficRoutingConfiguration needs Type and "
                    "WaitIntervalInSeconds"
                )
            if routing["Type"] != "ALL_AT_ONCE":
                raise _validation(
                    f"the local SageMaker shifts traffic ALL_AT_ONCE only, not {routing['Type']}"
                )
        alarms = deployment.get("AutoRollbackConfiguration", {}).get("Alarms", [])
        if alarms and self._cloudwatch is None:
            raise _validation("this local SageMaker has no CloudWatch to read rollback alarms")

    def _check_mode_change(self, endpoint: _Endpoint, config: dict) -> None:
        """SageMaker refuses to update an instance endpoint to serverless with a ValidationError
        (developer guide, "Serverless Inference", Feature exclusions); serverless to instances
        is allowed. The message is the local SageMaker's own: the guide gives none."""
        current = self._configs.get(endpoint.config, {}).get("ProductionVariants", [])
        if not current or any("ServerlessConfig" in v for v in current):
            return
        if any("ServerlessConfig" in v for v in config["ProductionVariants"]):
            raise _validation(
                f'Cannot update endpoint "{endpoint.arn}" from instances to serverless: an '
                "instance-based endpoint cannot be converted to a serverless endpoint"
            )

    def _check_autoscaling(self, endpoint: _Endpoint, config: dict) -> None:
        """SageMaker refuses an update that changes the instance type of a variant registered
        with autoscaling (developer guide, "Update endpoints that use auto scaling"); a new
        model on the same instance type is allowed."""
        if self._autoscaling is None or endpoint.serving is None:
            return
        current = self._configs.get(endpoint.config, {}).get("ProductionVariants", [])
        types = {v["VariantName"]: v.get("InstanceType") for v in current}
        for variant in config["ProductionVariants"]:
            name = variant["VariantName"]
            if name not in types or types[name] == variant.get("InstanceType"):
                continue
            targets = self._autoscaling.describe_scalable_targets(
                ServiceNamespace="sagemaker",
                ResourceIds=[f"endpoint/{endpoint.name}/variant/{name}"],
                ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            )["ScalableTargets"]
            if targets:  # the local SageMaker's words
                raise _validation(
                    f"The variant {name} of endpoint {endpoint.name} is registered with "
                    "autoscaling: deregister it (DeregisterScalableTarget) before changing its "
                    "instance type"
                )

    def _op_describe_endpoint(self, body: dict) -> dict:
        endpoint = self._endpoint(body["EndpointName"])
        answer = {
            "EndpointName": endpoint.name,
            "EndpointArn": endpoint.arn,
            "EndpointConfigName": endpoint.config,
            "EndpointStatus": endpoint.status,
            "CreationTime": endpoint.created,
            "LastModifiedTime": endpoint.modified,
        }
        if endpoint.serving:
            serving = endpoint.serving
            answer["ProductionVariants"] = [
                {
                    "VariantName": serving["variant"],
                    "DeployedImages": [
                        {
                            "SpecifiedImage": serving["image"],
                            "ResolvedImage": serving["image"],
                            "ResolutionTime": serving["resolved"],
                        }
                    ],
                    "CurrentWeight": serving["weight"],
                    "DesiredWeight": serving["weight"],
                    # botocore's ProductionVariantSummary: a serverless variant has its
                    # Current/DesiredServerlessConfig, an instance variant its counts.
                    **(
                        {
                            "CurrentServerlessConfig": serving["serverless"],
                            "DesiredServerlessConfig": serving["serverless"],
                        }
                        if serving.get("serverless")
                        else {
                            "CurrentInstanceCount": serving["instances"],
                            "DesiredInstanceCount": serving["instances"],
                        }
                    ),
                }
            ]
        if endpoint.failure_reason:
            answer["FailureReason"] = endpoint.failure_reason
        if endpoint.last_deployment_config:
            answer["LastDeploymentConfig"] = endpoint.last_deployment_config
        if endpoint.pending:
            pending = endpoint.pending
            summary = {
                "EndpointConfigName": pending["EndpointConfigName"],
                "StartTime": pending["StartTime"],
            }
            if pending.get("variant_status"):
                summary["ProductionVariants"] = [
                    {
                        "VariantName": pending.get("variant", "AllTraffic"),
                        "VariantStatus": [pending["variant_status"]],
                    }
                ]
            answer["PendingDeploymentSummary"] = summary
        return answer

    def _op_delete_endpoint(self, body: dict) -> dict:
        endpoint = self._endpoint(body["EndpointName"])
        endpoint.status, endpoint.modified = "Deleting", _now()
        self._start(self._remove_endpoint, endpoint)
        return {}

    def _op_list_endpoints(self, body: dict) -> dict:
        rows = [
            {
                "EndpointName": e.name,
                "EndpointArn": e.arn,
                "CreationTime": e.created,
                "LastModifiedTime": e.modified,
                "EndpointStatus": e.status,
                "_status": e.status,
            }
            for e in self._endpoints.values()
        ]
        return self._page(body, rows, "Endpoints", "EndpointName")

    def _remove_endpoint(self, endpoint: _Endpoint) -> None:
        self._settle(threading.Event())
        with self._lock:
            if self._endpoints.get(endpoint.name) is endpoint:
                del self._endpoints[endpoint.name]
                self._tags.pop(endpoint.arn, None)

    def _deploy(self, subject: tuple[_Endpoint, str]) -> None:
        """Loads the config's model behind the endpoint: Creating/Updating -> InService; a
        failed create ends Failed, a failed update goes back InService on the old model with
        the reason (as SageMaker does)."""
        endpoint, config_name = subject
        if self._settle(threading.Event()):
            return
        with self._lock:
            variants = self._configs.get(config_name, {}).get("ProductionVariants", [])
        variant_name = variants[0]["VariantName"] if variants else "AllTraffic"
        try:
            with self._lock:
                if len(variants) != 1:
                    raise ValueError("the local SageMaker serves one production variant")
                [variant] = variants
                model = self._model(variant["ModelName"])
            container = model["PrimaryContainer"]
            image = container.get("Image", "")
            centroids = self._load_model(container)
            serving = {
                "variant": variant["VariantName"],
                "image": image,
                "centroids": centroids,
                "resolved": _now(),
                "weight": float(variant.get("InitialVariantWeight", 1.0)),
                "instances": int(variant.get("InitialInstanceCount", 1)),
                "serverless": variant.get("ServerlessConfig"),
            }
        except Exception as error:  # noqa: BLE001 - the endpoint fails, as a bad container does
            reason = (  # SageMaker's words, then what went wrong here
                f"The primary container for production variant {variant_name} did not pass the "
                f"ping health check. ({error})"
            )
            serving = None
        with self._lock:
            pending = endpoint.pending
            deployment = (pending or {}).get("deployment")
        if serving is not None and deployment:
            reason = self._bake(endpoint, serving, deployment)
            if reason:
                serving = None
        with self._lock:
            if self._endpoints.get(endpoint.name) is not endpoint or endpoint.status == "Deleting":
                return
            endpoint.pending = None
            if serving is None:
                endpoint.failure_reason = reason
                endpoint.status = "InService" if endpoint.serving else "Failed"
            else:
                endpoint.serving, endpoint.config = serving, config_name
                endpoint.status = "InService"
                if deployment:
                    endpoint.last_deployment_config = deployment
            endpoint.modified = _now()

    def _bake(self, endpoint: _Endpoint, green: dict, deployment: dict) -> str:
        """Blue/green, all at once: the new model takes all of the traffic and bakes for
        TerminationWaitInSeconds (scaled by `bake_time_scale`) while the rollback alarms are
        read; an alarm in ALARM rolls the traffic back to the old model (RollingBack). Returns
        the rollback's reason, or "" when the new model stays."""
        policy = deployment.get("BlueGreenUpdatePolicy", {})
        alarms = [
            a["AlarmName"]
            for a in deployment.get("AutoRollbackConfiguration", {}).get("Alarms", [])
        ]
        bake = policy.get("TerminationWaitInSeconds", 0) * self.bake_time_scale
        blue = endpoint.serving
        with self._lock:
            endpoint.serving = green  # all at once: the green fleet serves while it bakes
            endpoint.pending["variant"] = green["variant"]
            endpoint.pending["variant_status"] = {
                "Status": "Baking",
                "StatusMessage": (  # the words of the events' example (EventBridge page)
                    f"Baking for {policy.get('TerminationWaitInSeconds', 0)} seconds "
                    f"(TerminationWaitInSeconds) with traffic enabled on full capacity of "
                    f"{green['instances']} instance(s)."
                ),
                "StartTime": _now(),
            }
        deadline = _now().timestamp() + bake
        step = max(min(self.delay_seconds, bake / 5), 0.01)
        while True:
            fired = self._alarms_in_alarm(alarms)
            if fired:
                break
            if _now().timestamp() >= deadline or self._closing.wait(step):
                return ""
        with self._lock:  # RollingBack: the traffic goes back to the blue fleet
            endpoint.status, endpoint.modified = "RollingBack", _now()
            endpoint.serving = blue
        self._settle(threading.Event())
        # Not SageMaker's verified wording: what the local SageMaker says of a rollback.
        return (
            f"Deployment was rolled back: CloudWatch alarm(s) {', '.join(fired)} went into "
            f"ALARM during the baking period"
        )

    def _alarms_in_alarm(self, names: list[str]) -> list[str]:
        if not names:
            return []
        alarms = self._cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", [])
        return sorted(a["AlarmName"] for a in alarms if a.get("StateValue") == "ALARM")

    def _load_model(self, container: dict) -> Any:
        _require_kmeans(container.get("Image", ""))
        bucket, key = _split_s3(container["ModelDataUrl"])
        return kmeans_model.read_centroids(
            self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        )

    def _invoke_endpoint(self, request: Request, name: str) -> Response:
        with self._lock:
            endpoint = self._endpoints.get(name)
            serving = endpoint.serving if endpoint and endpoint.status != "Deleting" else None
        if serving is None:  # SageMaker Runtime's words
            raise ApiError(
                "ValidationError", f"Endpoint {name} of account {self.account} not found."
            )
        body = request.get_data()
        if len(body) > INVOKE_MAX_BYTES:
            raise ApiError(
                "ValidationError",
                f"Request payload of {len(body)} bytes is over the {INVOKE_MAX_BYTES} byte limit",
            )
        try:
            answer, content_type = kmeans_serving.invoke(
                serving["centroids"],
                body,
                request.headers.get("Content-Type"),
                request.headers.get("Accept"),
            )
        except kmeans_serving.ModelError as error:  # SageMaker Runtime's wrapping of it
            raise ApiError(
                "ModelError",
                f'Received client error ({error.status}) from primary with message "{error}".',
                status=424,
                OriginalStatusCode=error.status,
                OriginalMessage=str(error),
                LogStreamArn=(
                    f"arn:aws:logs:{self.region}:{self.account}:log-group:"
                    f"/aws/sagemaker/Endpoints/{name}"
                ),
            ) from None
        response = Response(answer, status=200, content_type=content_type)
        response.headers["x-Amzn-Invoked-Production-Variant"] = serving["variant"]
        return response

    # -- batch transform ----------------------------------------------------------------------

    def _op_create_transform_job(self, body: dict) -> dict:
        name = body["TransformJobName"]
        arn = self._arn("transform-job", name)
        if name in self._transform:
            raise ApiError(
                "ResourceInUse",
                f"Transform job names must be unique within an AWS account and region, and a "
                f"transform job with this name already exists ({arn})",
            )
        self._model(body["ModelName"])
        source = body["TransformInput"]["DataSource"]["S3DataSource"]
        self._require_objects(
            source["S3Uri"], self._models[body["ModelName"]].get("ExecutionRoleArn", "")
        )
        request = {
            **{k: v for k, v in body.items() if k != "Tags"},
            "TransformInput": {
                "CompressionType": "None",
                "SplitType": "None",
                **body["TransformInput"],
            },
        }
        job = _Job(request, arn)
        self._transform[name] = job
        self._tag(arn, body.get("Tags"))
        self._start(self._run_transform, job)
        return {"TransformJobArn": arn}

    def _op_describe_transform_job(self, body: dict) -> dict:
        job = self._transform.get(body["TransformJobName"])
        if job is None:  # not verified against SageMaker's wording
            raise _validation(f"Could not find requested job with name {body['TransformJobName']}")
        answer = {
            **job.request,
            "TransformJobArn": job.arn,
            "TransformJobStatus": job.status,
            "CreationTime": job.created,
        }
        if job.failure_reason:
            answer["FailureReason"] = job.failure_reason
        if job.started:
            answer["TransformStartTime"] = job.started
        if job.ended:
            answer["TransformEndTime"] = job.ended
        return answer

    def _op_list_transform_jobs(self, body: dict) -> dict:
        rows = [
            {
                "TransformJobName": name,
                "TransformJobArn": job.arn,
                "CreationTime": job.created,
                "LastModifiedTime": job.modified,
                "TransformJobStatus": job.status,
                "_status": job.status,
                **({"TransformEndTime": job.ended} if job.ended else {}),
                **({"FailureReason": job.failure_reason} if job.failure_reason else {}),
            }
            for name, job in self._transform.items()
        ]
        return self._page(body, rows, "TransformJobSummaries", "TransformJobName")

    def _op_stop_transform_job(self, body: dict) -> dict:
        job = self._transform.get(body["TransformJobName"])
        if job is None:
            raise _validation(f"Could not find requested job with name {body['TransformJobName']}")
        if job.status == "InProgress":
            job.status, job.modified = "Stopping", _now()
            job.stop.set()
        return {}

    def _run_transform(self, job: _Job) -> None:
        request = job.request
        try:
            if self._settle(job.stop):
                raise kmeans.TrainingStopped
            with self._lock:
                job.started = _now()
                model = self._model(request["ModelName"])
            centroids = self._load_model(model["PrimaryContainer"])
            source = request["TransformInput"]["DataSource"]["S3DataSource"]
            if source.get("S3DataType", "S3Prefix") != "S3Prefix":
                raise kmeans.AlgorithmInputError(
                    f"the local SageMaker reads S3Prefix data only, not {source['S3DataType']}",
                    caused_by="ValueError",
                )
            bucket, prefix = _split_s3(source["S3Uri"])
            folder = prefix[: prefix.rfind("/") + 1]  # outputs keep the names below it
            for key in self._keys(bucket, prefix):
                if job.stop.is_set() or self._closing.is_set():
                    raise kmeans.TrainingStopped
                data = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                output = self._transform_object(request, centroids, key, data)
                target = _join_s3(
                    request["TransformOutput"]["S3OutputPath"], key[len(folder) :] + ".out"
                )
                out_bucket, out_key = _split_s3(target)
                self._s3.put_object(Bucket=out_bucket, Key=out_key, Body=output)
            self._finish(job, "Completed", None)
        except kmeans.TrainingStopped:
            self._wind_down(job)
            self._finish(job, "Stopped", None)
        except (kmeans.AlgorithmInputError, kmeans_serving.ModelError) as error:
            reason = (
                error.failure_reason
                if isinstance(error, kmeans.AlgorithmInputError)
                else f"ClientError: {error}"
            )
            self._finish(job, "Failed", None, reason)
        except Exception as error:  # noqa: BLE001 - the job fails, as a platform error would
            self._finish(job, "Failed", None, f"AlgorithmError: {type(error).__name__}: {error}")

    def _transform_object(self, request: dict, centroids: Any, key: str, data: bytes) -> bytes:
        """One input object through the model, as batch transform sends it: split into records,
        packed into requests of at most MaxPayloadInMB, answers assembled."""
        transform_input, output = request["TransformInput"], request["TransformOutput"]
        if transform_input.get("CompressionType") == "Gzip":
            data = gzip.decompress(data)
        split = transform_input.get("SplitType", "None")
        if split == "Line":
            records = [line.encode() for line in data.decode("utf-8").splitlines()]
            joiner = b"\n"
        elif split == "RecordIO":
            records = [recordio.frame(payload) for payload in recordio.split_records(data)]
            joiner = b""
        elif split == "None":
            records, joiner = [data], b""
        else:
            raise kmeans.AlgorithmInputError(
                f"the local SageMaker does not split {split} input", caused_by="ValueError"
            )
        limit = int(request.get("MaxPayloadInMB", 6)) * MEGABYTE
        batches: list[list[bytes]] = []
        if request.get("BatchStrategy", "MultiRecord") == "SingleRecord" or split == "None":
            batches = [[record] for record in records]
        else:
            size = 0
            for record in records:
                if batches and size + len(joiner) + len(record) <= limit:
                    batches[-1].append(record)
                    size += len(joiner) + len(record)
                else:
                    batches.append([record])
                    size = len(record)
        answers = []
        for number, batch in enumerate(batches, start=1):
            body = joiner.join(batch)
            if limit and len(body) > limit:
                raise kmeans_serving.ModelError(
                    413, f"{key}: a record of {len(body)} bytes is over MaxPayloadInMB"
                )
            try:
                answer, _ = kmeans_serving.invoke(
                    centroids, body, transform_input.get("ContentType"), output.get("Accept")
                )
            except kmeans_serving.ModelError as error:
                raise kmeans_serving.ModelError(
                    error.status,
                    f"{key.rsplit('/', 1)[-1]}, request {number}: the model answered "
                    f"{error.status}: {error}",
                ) from None
            answers.append(answer)
        if output.get("AssembleWith", "None") == "Line":
            return b"".join(answer + b"\n" for answer in answers)
        return b"".join(answers)


def _check_variants(variants: list[dict]) -> None:
    """A variant is on instances (InstanceType) or serverless (ServerlessConfig, "instead of an
    instance-based endpoint configuration": botocore's ProductionVariant), not both; a serverless
    endpoint has one variant (developer guide, "Serverless Inference", Feature exclusions:
    "multiple production variants"). The messages are the local SageMaker's own."""
    for variant in variants:
        serverless = "ServerlessConfig" in variant
        instances = "InstanceType" in variant or "InitialInstanceCount" in variant
        if serverless and instances:
            raise _validation(
                f"Production variant {variant['VariantName']} has both a ServerlessConfig and "
                "InstanceType/InitialInstanceCount: give one or the other"
            )
    if len(variants) > 1 and any("ServerlessConfig" in v for v in variants):
        raise _validation("A serverless endpoint configuration has one production variant")


def _require_kmeans(image: str) -> None:
    match = images.ECR_IMAGE.fullmatch(image)
    if not match or match["repository"] != images.kmeans_repository():
        raise kmeans.AlgorithmInputError(
            f"the local SageMaker runs the built-in k-means image only, not {image or '(none)'}",
            caused_by="ValueError",
        )


def _records(name: str, channel: dict, blobs: list[bytes], feature_dim: int) -> np.ndarray:
    """A channel's records as one (records, feature_dim) array; the image's words on failure."""
    content_type, _ = kmeans_serving.media_type(
        channel.get("ContentType") or kmeans_serving.RECORDIO
    )
    parts = []
    try:
        for blob in blobs:
            if content_type == kmeans_serving.RECORDIO:
                parts.append(recordio.read_features(blob, feature_dim))
            elif content_type == kmeans_serving.CSV:
                rows = kmeans_serving.parse_request(blob, kmeans_serving.CSV)
                if rows.size and rows.shape[1] != feature_dim:
                    raise recordio.RecordIOError(
                        f"rows of {rows.shape[1]} values, feature_dim is {feature_dim}"
                    )
                parts.append(rows.reshape(-1, feature_dim))
            else:
                raise kmeans.AlgorithmInputError(
                    f"Content type {content_type} is not supported for the '{name}' channel: "
                    f"use {kmeans_serving.RECORDIO} or {kmeans_serving.CSV}",
                    caused_by="ValueError",
                )
    except (recordio.RecordIOError, kmeans_serving.ModelError, UnicodeDecodeError) as error:
        # The first-party algorithms' words for unreadable data (convert_to_customer_data_errors)
        raise kmeans.AlgorithmInputError(
            f"Unable to read data channel '{name}'. Requested content-type is '{content_type}'. "
            f"Please verify the data matches the requested content-type. ({error})",
            caused_by=type(error).__name__,
        ) from None
    return np.concatenate(parts) if parts else np.empty((0, feature_dim), dtype=np.float32)
