"""The whole product on one machine: the same handlers and pipeline, an emulator instead of AWS.

- AWS: moto in server mode on 127.0.0.1, provisioned with the stack's names (`provision`);
  SageMaker: the emulator's local SageMaker, which trains, scores and serves k-means for real
  (`mnistflow.local.sagemaker`; the steps reach it through `emulator.environment()`).
- S3 -> start-run: the bucket notifies a queue (as moto can); `pump()` hands each notification
  to the start-run handler, as Lambda would.
- KFP: a local KFP API on 127.0.0.1 that start-run talks to over HTTP (url mode); its executor
  runs the submitted pipeline spec with kfp.local.
- SageMaker and pipeline events -> track-progress: a watcher reads the emulator's SageMaker
  state, and the pipeline's final-state events reach a queue through an EventBridge rule;
  `pump()` hands both to the track-progress handler.
- Run slots: "a slot is free" goes to the run-slots queue (with its dead-letter queue, as the
  stack's); `pump()` hands up to 10 messages at a time to start-run, as Lambda's SQS event
  source mapping does: deleted when the handler returns, visible again at once when it fails.
- SNS: the topic has a queue subscribed; `inbox()` returns what would have been emailed.
- Lambda's asynchronous invocation: an event that fails is run again with the same request id,
  up to contracts.LAMBDA_ASYNC_ATTEMPTS times, then its invocation record goes to the
  function's failure queue (`failed_events(function)`), as the stack's destinations do.
- The stuck-run watchdog runs every WATCHDOG_EVERY_SECONDS of pumping (`run_watchdog()` at
  will, with a clock of the caller's).

Each function is built by its own factory from its own environment mapping (what the CDK stack
would give it, from cdk.json, plus what the Lambda runtime sets), so the two keep their own
settings in this one process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from core import contracts, endpoint_alarms, kfp, lambda_destinations
from core.settings import CDK_JSON, cdk_json_context, environment, read_context
from lambdas.composition import start_run_handler, track_progress_handler, watchdog_handler
from lambdas.dal.runs_table import RunsTableReader
from lambdas.observability import logger
from mnistflow.local.emulator import AwsEmulator
from mnistflow.local.kfp_api import LocalKfpApi
from mnistflow.local.pipeline_runner import as_current_backend, process_environment
from mnistflow.local.provision import Email, LocalNames, drain, provision, read_inbox
from mnistflow.local.run_executor import LocalRunExecutor
from mnistflow.local.watcher import SageMakerWatcher
from pipeline.compile import compile_pipeline

POLL_INTERVAL_SECONDS = 0.2
LAMBDA_TIMEOUT_SECONDS = 60
FUNCTION_LOG_FILE = "functions.log"  # in the stack's work folder
LOCAL_KFP_TOKEN = "local-kfp-token"  # noqa: S105 (the local KFP API checks it is sent)
# What a shell or a notebook needs to use a running local stack (`demo --keep-running` prints
# them; the README's five lines and notebooks/walkthrough.ipynb read them), besides boto3's own
# AWS_ENDPOINT_URL, region and credentials.
KFP_URL_VARIABLE = "MNISTFLOW_KFP_URL"
KFP_TOKEN_VARIABLE = "MNISTFLOW_KFP_TOKEN"  # noqa: S105 (a variable's name)
BUCKET_VARIABLE = "MNISTFLOW_BUCKET"
# The local KFP API runs each step with kfp.local's subprocess runner, in this Python: the image
# start-run names is recorded with the run (tests read it) but not pulled.
LOCAL_STEP_IMAGE = "mnistflow-step-python:local"
# The watchdog's schedule, on this machine (the stack's is every few minutes).
WATCHDOG_EVERY_SECONDS = 30.0
# The stable endpoint's baking period (deploy_bake_minutes, 5 by default) lasts this many times
# its length here: 5 minutes bake in 3 seconds.
LOCAL_BAKE_TIME_SCALE = 0.01
# The local stack's host settings (not a function's): no CloudWatch metrics to print.
HOST_ENVIRONMENT = {"POWERTOOLS_METRICS_DISABLED": "true"}


@dataclass
class LambdaContext:
    """What a handler reads from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    _deadline: float = field(default_factory=lambda: time.monotonic() + LAMBDA_TIMEOUT_SECONDS)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    """One handler call the stack made, for the record (and for tests)."""

    function: str
    event: dict
    result: Any = None
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1


def function_environments(
    context: dict[str, Any], values: dict[str, Any], runtime: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Each function's environment, as the CDK stack builds it from the same context, plus what
    the Lambda runtime sets (`runtime`: region, credentials, the emulator's endpoint)."""
    settings = read_context(context)
    return {
        function: {**environment(function, {**settings, **values}), **runtime}
        for function in contracts.FUNCTIONS
    }


class LocalStack:
    """Starts everything in __init__; `stop()` (or leaving the `with`) ends all of it."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        log_level: str = "WARNING",
        kfp_backend_version: str = kfp.MIN_BACKEND_VERSION,
        log_path: Path | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """`context`: CDK context keys set over cdk.json's (e.g. max_concurrent_runs)."""
        self.workdir = Path(workdir)
        self.invocations: list[Invocation] = []
        self._stack = contextlib.ExitStack()
        try:
            self.emulator = self._stack.enter_context(
                AwsEmulator(port=port, sagemaker_bake_time_scale=LOCAL_BAKE_TIME_SCALE)
            )
            self.names = LocalNames.for_account(self.account, self.emulator.region)
            self.resources = provision(self.emulator.client, self.names, kfp_token=LOCAL_KFP_TOKEN)
            self.kfp = self._stack.enter_context(
                LocalKfpApi(
                    executor=LocalRunExecutor(self.emulator.environment(), self.workdir),
                    accept_token=LOCAL_KFP_TOKEN,
                    backend_version=kfp_backend_version,
                )
            )
            spec = compile_pipeline(self.workdir / contracts.PIPELINE_SPEC_FILE)
            self._stack.enter_context(process_environment(HOST_ENVIRONMENT))
            self._stack.callback(logger.setLevel, logger.log_level)
            logger.setLevel(log_level)
            # The functions' logs, metrics (EMF) and library warnings go to a file, as Lambda
            # sends them to CloudWatch, not among the product's own output.
            self.log_path = log_path or self.workdir / FUNCTION_LOG_FILE
            self._log = self._stack.enter_context(self.log_path.open("w", encoding="utf-8"))
            handler = logger.registered_handler
            if isinstance(handler, logging.StreamHandler):
                self._stack.callback(handler.setStream, handler.setStream(self._log))
            context = {
                **cdk_json_context(CDK_JSON),
                "kfp_mode": contracts.KFP_MODE_URL,  # there is no cluster here
                "eks_cluster_name": "",
                "kfp_url": self.kfp.url,
                "kfp_token_secret_name": self.names.kfp_token_secret,
                **(context or {}),
            }
            # The stable endpoint's rollback alarms, as the stack makes them.
            stable_endpoint = read_context(context).endpoint_name
            cloudwatch = self.emulator.client("cloudwatch")
            for alarm in endpoint_alarms.ALARMS:
                cloudwatch.put_metric_alarm(
                    **endpoint_alarms.put_metric_alarm_request(alarm, stable_endpoint)
                )
            environments = function_environments(
                context,
                {
                    "runs_table_name": self.names.runs_table,
                    "notification_topic_arn": self.resources.topic_arn,
                    "data_bucket_name": self.names.data_bucket,
                    "kfp_token_secret_arn": self.resources.kfp_token_secret_arn,
                    "pipeline_spec_path": str(spec),
                    "step_image_uri": LOCAL_STEP_IMAGE,
                    "sagemaker_role_arn": self.resources.sagemaker_role_arn,
                    "event_bus_name": contracts.PIPELINE_EVENT_BUS,
                    "run_slots_queue_url": self.resources.queue_urls[self.names.run_slots_queue],
                    "endpoint_alarm_names": endpoint_alarms.alarm_names(stable_endpoint),
                },
                self.emulator.environment(),
            )
            self.environments = environments
            self._start_run = start_run_handler(environments[contracts.START_RUN])
            self._track_progress = track_progress_handler(environments[contracts.TRACK_PROGRESS])
            self._watchdog_environment = environments[contracts.WATCHDOG]
            self._watchdog = watchdog_handler(self._watchdog_environment)
            self._watchdog_due = time.monotonic() + WATCHDOG_EVERY_SECONDS
            self.watcher = SageMakerWatcher(
                self.emulator.client("sagemaker"),
                account=self.account,
                region=self.emulator.region,
                deliver=self._deliver_to_track_progress,
            )
            self.runs = RunsTableReader(
                self.names.runs_table, lambda: self.emulator.client("dynamodb")
            )
        except BaseException:
            self._stack.close()
            raise

    @property
    def account(self) -> str:
        return self.emulator.client("sts").get_caller_identity()["Account"]

    # -- using it --------------------------------------------------------------------------

    def upload(
        self, data_file: Path, key: str | None = None, metadata: dict[str, str] | None = None
    ) -> tuple[str, str]:
        """Puts a file under incoming/ (with S3 user metadata: per-upload run settings);
        returns (key, versionId)."""
        key = key or f"{contracts.INCOMING_PREFIX}{data_file.name}"
        with data_file.open("rb") as body:
            put = self.emulator.client("s3").put_object(
                Bucket=self.names.data_bucket, Key=key, Body=body, Metadata=metadata or {}
            )
        return key, put.get("VersionId", "")

    def pump(self) -> int:
        """One round of what AWS would do by itself; returns how many things moved."""
        moved = 0
        for body in self._drain(self.names.uploads_queue):
            self._invoke(contracts.START_RUN, self._start_run, self._with_version_ids(body))
            moved += 1
        moved += self._pump_run_slots()
        moved += self.watcher.poll()
        for body in self._drain(self.names.pipeline_events_queue):
            self._deliver_to_track_progress(as_current_backend(body))
            moved += 1
        if time.monotonic() >= self._watchdog_due:
            self._watchdog_due = time.monotonic() + WATCHDOG_EVERY_SECONDS
            self.run_watchdog()
        return moved

    def run_watchdog(self, clock: Callable[[], float] | None = None) -> Any:
        """One watchdog pass (with `clock`, a handler built on that clock, e.g. hours later)."""
        handler = self._watchdog
        if clock is not None:
            handler = watchdog_handler(self._watchdog_environment, clock=clock)
        call = self._invoke(contracts.WATCHDOG, handler, {"source": "local.schedule"})
        return call.result

    def invoke(self, function: str, event: Any) -> str | None:
        """A synchronous invocation (Lambda's RequestResponse): None when the handler returned,
        else its error; no retries. What `mnistflow redrive` does with the deployed functions."""
        handlers = {
            contracts.START_RUN: self._start_run,
            contracts.TRACK_PROGRESS: self._track_progress,
            contracts.WATCHDOG: self._watchdog,
        }
        try:
            with self._function_output():
                handlers[function](event, LambdaContext(function_name=function))
        except Exception as error:  # noqa: BLE001 - reported, as Lambda reports a function error
            return f"{type(error).__name__}: {error}"
        return None

    def redrive_targets(self) -> list[Any]:
        """The failure queues `mnistflow redrive` reads, with the functions they belong to."""
        from mnistflow.redrive import Target

        queues = dict(self.names.failure_queues)
        return [
            Target(function, function, self.resources.queue_urls[queues[function]])
            for function in contracts.REDRIVEN
        ]

    def failed_events(self, function: str) -> list[dict]:
        """What the function's failure queue holds (read and removed)."""
        return self._drain(dict(self.names.failure_queues)[function])

    def run_until(
        self, done: Callable[[], bool], timeout_seconds: float, on_round: Callable[[], None] = None
    ) -> bool:
        """Pumps until `done()` or the deadline; True when done."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            self.pump()
            if on_round:
                on_round()
            if done():
                return True
            time.sleep(POLL_INTERVAL_SECONDS)
        return False

    def connection(self) -> dict[str, str]:
        """The environment that points the KFP SDK, boto3 and the CLI at this stack."""
        emulator = self.emulator.environment()
        return {
            KFP_URL_VARIABLE: self.kfp.url,
            KFP_TOKEN_VARIABLE: LOCAL_KFP_TOKEN,
            BUCKET_VARIABLE: self.names.data_bucket,
            **{
                name: emulator[name]
                for name in (
                    "AWS_ENDPOINT_URL",
                    "AWS_DEFAULT_REGION",
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                )
            },
        }

    def inbox(self) -> list[Email]:
        """Everything published to the topic since the last call."""
        return read_inbox(self.emulator.client, self.resources)

    # -- plumbing ----------------------------------------------------------------------------

    def _with_version_ids(self, notification: dict) -> dict:
        """Adds the `versionId` that AWS puts in notifications of a versioned bucket, and moto
        leaves out: the version whose ETag the record carries."""
        s3 = self.emulator.client("s3")
        for record in notification.get("Records", []):
            obj = record["s3"]["object"]
            if "versionId" in obj:
                continue
            key = unquote_plus(obj["key"])
            versions = s3.list_object_versions(
                Bucket=record["s3"]["bucket"]["name"], Prefix=key
            ).get("Versions", [])
            matching = [
                v["VersionId"]
                for v in versions
                if v["Key"] == key and v["ETag"].strip('"') == obj.get("eTag")
            ]
            if matching:
                obj["versionId"] = matching[0]
        return notification

    def _pump_run_slots(self) -> int:
        """One batch from the run-slots queue to start-run, as Lambda's SQS event source
        mapping delivers it (an event of up to 10 records, eventSource aws:sqs)."""
        sqs = self.emulator.client("sqs")
        url = self.resources.queue_urls[self.names.run_slots_queue]
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return 0
        arn = f"arn:aws:sqs:{self.emulator.region}:{self.account}:{self.names.run_slots_queue}"
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {},
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": self.emulator.region,
                }
                for m in messages
            ]
        }
        call = Invocation(contracts.START_RUN, event)
        self.invocations.append(call)
        started = time.perf_counter()
        try:
            with self._function_output():
                call.result = self._start_run(
                    event, LambdaContext(function_name=contracts.START_RUN)
                )
        except Exception as error:  # noqa: BLE001 - a function error: SQS delivers it again
            call.error = f"{type(error).__name__}: {error}"
            for m in messages:
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
        else:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        call.seconds = time.perf_counter() - started
        return len(messages)

    def _deliver_to_track_progress(self, event: dict) -> None:
        self._invoke(contracts.TRACK_PROGRESS, self._track_progress, event)

    def _invoke(self, function: str, handler: Callable, event: dict) -> Invocation:
        """As Lambda runs an asynchronous event: retried with the same request id, then its
        invocation record goes to the function's failure queue (no waits between attempts)."""
        call = Invocation(function, event)
        self.invocations.append(call)
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        for attempt in range(1, contracts.LAMBDA_ASYNC_ATTEMPTS + 1):
            call.attempts = attempt
            try:
                context = LambdaContext(function_name=function, aws_request_id=request_id)
                with self._function_output():
                    call.result = handler(event, context)
                call.error = None
                break
            except Exception as error:  # noqa: BLE001 - a function error, as Lambda sees it
                call.error = f"{type(error).__name__}: {error}"
                last = error
        else:
            self._send_to_failure_queue(function, event, request_id, last)
        call.seconds = time.perf_counter() - started
        return call

    @contextlib.contextmanager
    def _function_output(self) -> Iterator[None]:
        """While a function runs: its prints (Powertools' EMF metrics) and its warnings go to
        the log file."""

        def to_log(message, category, filename, lineno, file=None, line=None) -> None:
            self._log.write(warnings.formatwarning(message, category, filename, lineno, line))

        try:
            with contextlib.redirect_stdout(self._log), warnings.catch_warnings():
                warnings.showwarning = to_log
                yield
        finally:
            self._log.flush()

    def _send_to_failure_queue(
        self, function: str, event: dict, request_id: str, error: Exception
    ) -> None:
        record = lambda_destinations.invocation_record(
            event,
            request_id=request_id,
            function_arn=f"arn:aws:lambda:{self.emulator.region}:{self.account}:function:{function}",
            attempts=contracts.LAMBDA_ASYNC_ATTEMPTS,
            error_type=type(error).__name__,
            error_message=str(error),
            timestamp=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        queue = self.resources.queue_urls[dict(self.names.failure_queues)[function]]
        self.emulator.client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps(record))

    def _drain(self, queue_name: str) -> list[dict]:
        return drain(self.emulator.client, self.resources.queue_urls[queue_name])

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
