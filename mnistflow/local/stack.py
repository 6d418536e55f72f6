"""The whole product on one machine: the same handlers and pipeline, an emulator instead of AWS.

- AWS: moto in server mode on 127.0.0.1, with the bucket, table and topic the CDK app defines.
- S3 -> start-run: the bucket notifies a queue (as moto can); `pump()` hands each notification
  to the start-run handler, as Lambda would.
- KFP: a local KFP API on 127.0.0.1 that start-run talks to over HTTP (url mode), executing
  the submitted pipeline spec with kfp.local.
- SageMaker and pipeline events -> track-progress: a watcher reads the emulator's SageMaker
  state and the pipeline's final-state events reach a queue through an EventBridge rule;
  `pump()` hands both to the track-progress handler.
- SNS: the topic has a queue subscribed; `inbox()` returns what would have been emailed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from boto3.dynamodb.types import TypeDeserializer

from mnistflow.local.emulator import AwsEmulator
from mnistflow.local.kfp_api import LocalKfpApi
from mnistflow.local.pipeline_runner import process_environment
from mnistflow.local.watcher import SageMakerWatcher
from pipeline.compile import compile_pipeline
from runflow.contracts import (
    INCOMING_PREFIX,
    PIPELINE_EVENT_DETAIL_TYPE,
    PIPELINE_EVENT_SOURCE,
    RUN_KEY_ATTRIBUTE,
)
from stacks import names as stack_names
from stacks.lambda_environment import (
    kfp_environment,
    start_run_environment,
    track_progress_environment,
)
from stacks.settings import Settings, cdk_json_context

POLL_INTERVAL_SECONDS = 0.2
LAMBDA_TIMEOUT_SECONDS = 60
LOCAL_KFP_TOKEN = "local-kfp-token"  # noqa: S105 (the local KFP API only checks one is sent)
SAGEMAKER_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class LocalNames:
    """The CDK app's names for the data resources, plus what only the local stack has."""

    data_bucket: str
    runs_table: str = stack_names.RUNS_TABLE_NAME
    topic: str = stack_names.NOTIFICATION_TOPIC_NAME
    uploads_queue: str = "mnistflow-local-uploads"
    inbox_queue: str = "mnistflow-local-inbox"
    pipeline_events_queue: str = "mnistflow-local-pipeline-events"
    pipeline_events_rule: str = "mnistflow-local-pipeline-events"
    sagemaker_role: str = "mnistflow-local-sagemaker-execution"
    kfp_token_secret: str = "mnistflow-local-kfp-token"  # noqa: S105 (a name, not a secret)

    @classmethod
    def for_account(cls, account: str, region: str) -> LocalNames:
        return cls(data_bucket=stack_names.data_bucket_name(account, region))


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


@dataclass(frozen=True)
class Email:
    kind: str
    run_key: str
    subject: str
    message: str


@dataclass
class Invocation:
    """One handler call the stack made, for the record (and for tests)."""

    function: str
    event: dict
    result: Any = None
    error: str | None = None
    seconds: float = 0.0


class LocalStack:
    """Starts everything in __init__; `stop()` (or leaving the `with`) ends all of it."""

    def __init__(self, workdir: Path, *, port: int = 0, log_level: str = "WARNING") -> None:
        self.workdir = Path(workdir)
        self.invocations: list[Invocation] = []
        self._stack = contextlib.ExitStack()
        try:
            self.emulator = self._stack.enter_context(AwsEmulator(port=port))
            self.names = LocalNames.for_account(self.account, self.emulator.region)
            role_arn, secret_arn = self._create_resources()
            self.kfp = self._stack.enter_context(
                LocalKfpApi(self.emulator.environment(), self.workdir)
            )
            spec = compile_pipeline(self.workdir / "mnist_pipeline.yaml")
            # Both handlers read their configuration from this process's environment.
            self._stack.enter_context(
                process_environment(
                    {
                        **self._lambda_environment(role_arn, secret_arn, spec),
                        **self.emulator.environment(),
                        "POWERTOOLS_LOG_LEVEL": log_level,
                        "POWERTOOLS_METRICS_DISABLED": "true",
                    }
                )
            )
            from runflow.container import start_new_container

            start_new_container()  # a process may host several stacks, one after another
            self._start_run = _handler("runflow.handlers.start_run")
            self._track_progress = _handler("runflow.handlers.track_progress")
            self.watcher = SageMakerWatcher(
                self.emulator.client("sagemaker"),
                account=self.account,
                region=self.emulator.region,
                deliver=self._deliver_to_track_progress,
            )
        except BaseException:
            self._stack.close()
            raise

    @property
    def account(self) -> str:
        return self.emulator.client("sts").get_caller_identity()["Account"]

    # -- setting up ------------------------------------------------------------------------

    def _lambda_environment(self, role_arn: str, secret_arn: str, spec: Path) -> dict[str, str]:
        """What the CDK app gives the two Lambdas, from cdk.json, with KFP in url mode locally."""
        settings = Settings.from_context(
            {
                **cdk_json_context(),
                "kfp_mode": "url",
                "kfp_url": self.kfp.url,
                "kfp_token_secret_name": self.names.kfp_token_secret,
            }
        )
        start_run = start_run_environment(
            settings,
            kfp_environment=kfp_environment(
                settings, kfp_url=self.kfp.url, token_secret_arn=secret_arn
            ),
            table_name=self.names.runs_table,
            topic_arn=self.topic_arn,
            bucket_name=self.names.data_bucket,
            sagemaker_role_arn=role_arn,
        )
        start_run["PIPELINE_SPEC_PATH"] = str(spec)  # the asset has it at the task root
        track = track_progress_environment(
            settings, table_name=self.names.runs_table, topic_arn=self.topic_arn
        )
        # One process hosts both handlers: they share one environment (and one log service name).
        return {**start_run, **track}

    def _create_resources(self) -> tuple[str, str]:
        names, emu = self.names, self.emulator
        s3 = emu.client("s3")
        s3.create_bucket(Bucket=names.data_bucket)
        s3.put_bucket_versioning(
            Bucket=names.data_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        uploads = self._queue(names.uploads_queue)
        s3.put_bucket_notification_configuration(
            Bucket=names.data_bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": uploads,
                        "Events": ["s3:ObjectCreated:*"],
                        # As the stack's trigger: everything under incoming/, the Lambda checks
                        "Filter": {
                            "Key": {"FilterRules": [{"Name": "prefix", "Value": INCOMING_PREFIX}]}
                        },
                    }
                ]
            },
        )
        emu.client("dynamodb").create_table(
            TableName=names.runs_table,
            KeySchema=[{"AttributeName": RUN_KEY_ATTRIBUTE, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": RUN_KEY_ATTRIBUTE, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sns = emu.client("sns")
        self.topic_arn = sns.create_topic(Name=names.topic)["TopicArn"]
        sns.subscribe(
            TopicArn=self.topic_arn, Protocol="sqs", Endpoint=self._queue(names.inbox_queue)
        )
        events = emu.client("events")
        events.put_rule(
            Name=names.pipeline_events_rule,
            EventPattern=json.dumps(
                {"source": [PIPELINE_EVENT_SOURCE], "detail-type": [PIPELINE_EVENT_DETAIL_TYPE]}
            ),
        )
        events.put_targets(
            Rule=names.pipeline_events_rule,
            Targets=[{"Id": "queue", "Arn": self._queue(names.pipeline_events_queue)}],
        )
        role = emu.client("iam").create_role(
            RoleName=names.sagemaker_role,
            AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST_POLICY),
        )
        secret = emu.client("secretsmanager").create_secret(
            Name=names.kfp_token_secret, SecretString=LOCAL_KFP_TOKEN
        )
        return role["Role"]["Arn"], secret["ARN"]

    def _queue(self, name: str) -> str:
        sqs = self.emulator.client("sqs")
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    # -- using it --------------------------------------------------------------------------

    def upload(self, data_file: Path, key: str | None = None) -> tuple[str, str]:
        """Puts a file under incoming/; returns (key, versionId)."""
        key = key or f"{INCOMING_PREFIX}{data_file.name}"
        with data_file.open("rb") as body:
            put = self.emulator.client("s3").put_object(
                Bucket=self.names.data_bucket, Key=key, Body=body
            )
        return key, put.get("VersionId", "")

    def pump(self) -> int:
        """One round of what AWS would do by itself; returns how many things moved."""
        moved = 0
        for body in self._drain(self.names.uploads_queue):
            self._invoke("start-run", self._start_run, self._with_version_ids(body))
            moved += 1
        moved += self.watcher.poll()
        for body in self._drain(self.names.pipeline_events_queue):
            self._deliver_to_track_progress(body)
            moved += 1
        return moved

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

    def record(self, run_key: str) -> dict | None:
        item = self.emulator.client("dynamodb").get_item(
            TableName=self.names.runs_table,
            Key={RUN_KEY_ATTRIBUTE: {"S": run_key}},
            ConsistentRead=True,
        )
        return _plain(item["Item"]) if "Item" in item else None

    def records(self) -> list[dict]:
        pages = (
            self.emulator.client("dynamodb")
            .get_paginator("scan")
            .paginate(TableName=self.names.runs_table, ConsistentRead=True)
        )
        return [_plain(item) for page in pages for item in page["Items"]]

    def inbox(self) -> list[Email]:
        """Everything published to the topic since the last call."""
        emails = []
        for body in self._drain(self.names.inbox_queue):
            attributes = body.get("MessageAttributes", {})
            emails.append(
                Email(
                    kind=attributes.get("kind", {}).get("Value", ""),
                    run_key=attributes.get("run_key", {}).get("Value", ""),
                    subject=body.get("Subject", ""),
                    message=body.get("Message", ""),
                )
            )
        return emails

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

    def _deliver_to_track_progress(self, event: dict) -> None:
        self._invoke("track-progress", self._track_progress, event)

    def _invoke(self, function: str, handler: Callable, event: dict) -> None:
        call = Invocation(function, event)
        self.invocations.append(call)
        started = time.perf_counter()
        try:
            call.result = handler(event, LambdaContext(function_name=function))
        except Exception as error:  # noqa: BLE001 - Lambda would retry; the record says why
            call.error = f"{type(error).__name__}: {error}"
        finally:
            call.seconds = time.perf_counter() - started

    def _drain(self, queue_name: str) -> Iterator[dict]:
        sqs = self.emulator.client("sqs")
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                yield json.loads(message["Body"])

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _plain(item: dict) -> dict:
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


def _handler(module: str) -> Callable:
    """A Lambda handler, imported (cold start) once this process's environment is set."""
    return importlib.import_module(module).handler
